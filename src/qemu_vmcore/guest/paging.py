"""What the guest layer asks of an architecture's page tables: the seam.

The guest modules that follow kernel virtual addresses (VMCOREINFO
confirmation, printk) take a :class:`PageTables` object instead of walking
tables themselves, and the ELF writer takes :class:`Mapping` runs for
``--paging``; the engine builds both from the room of the guest's
architecture (:mod:`qemu_vmcore.arch.x86.paging`). Nothing here knows x86.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class PhysicalReader(Protocol):
    """Guest-physical memory as a walker reads it (``GuestPhysicalMemory``).

    ``read`` raises :class:`~qemu_vmcore.errors.MissingMemoryError` where
    the bytes are not guest RAM or not in the core.
    """

    def read(self, gpa: int, size: int) -> bytes: ...


class PageTables(Protocol):
    """One set of guest page tables (a root and the mode it is walked in)."""

    def translate(self, mem: PhysicalReader, vaddr: int) -> int | None:
        """The guest-physical address of ``vaddr``; None when it is not mapped
        or a table is not in memory."""
        ...


@dataclass(frozen=True, order=True)
class Mapping:
    """Guest virtual ``[vaddr, vaddr + size)`` maps guest-physical ``[paddr, paddr + size)``.

    Ordered by physical address, as QEMU orders its PT_LOADs.
    """

    paddr: int
    vaddr: int
    size: int

    @property
    def end(self) -> int:
        """First physical address after the mapping (exclusive)."""
        return self.paddr + self.size
