"""What the guest layer asks of an architecture's page tables: the seam.

The guest modules that follow kernel virtual addresses (VMCOREINFO
confirmation, printk) take a :class:`PageTables` object instead of walking
tables themselves, and the ELF writer takes :class:`Mapping` runs for
``--paging``; the engine builds both from the room of the guest's
architecture (:mod:`qemu_vmcore.arch.x86.paging`). Nothing here knows x86.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class KernelLayout(Protocol):
    """The guest kernel's virtual layout, as its VMCOREINFO describes it.

    Built by the room of the guest's arch (``GuestArch.kernel_layout``) from
    one VMCOREINFO, which may be a candidate not yet believed: every number
    here is the note's own.
    """

    #: The kernel's own page tables (x86_64 init_top_pgt, arm64
    #: swapper_pg_dir); None when the note names none.
    tables: PageTables | None
    #: The kdump header's ``phys_base``, as makedumpfile writes it for the
    #: arch (x86_64: NUMBER(phys_base); arm64: NUMBER(PHYS_OFFSET)).
    phys_base: int

    def image_pa(self, vaddr: int) -> int | None:
        """``__pa_symbol(vaddr)``: the guest-physical address of a kernel-image
        virtual address; None when ``vaddr`` is outside the image mapping."""
        ...

    def text_load(self) -> Mapping | None:
        """The kernel text's mapping from SYMBOL(_stext) on, as kexec's
        /proc/vmcore has a PT_LOAD of it; None when the note lacks _stext."""
        ...


def filter_mappings(mappings: Sequence[Mapping], begin: int, end: int) -> list[Mapping]:
    """``mappings`` clipped to guest-physical ``[begin, end)``, as QEMU's
    memory_mapping_filter clips them for ``begin``/``length``."""
    out = []
    for m in mappings:
        lo, hi = max(m.paddr, begin), min(m.end, end)
        if lo < hi:
            out.append(Mapping(lo, m.vaddr + (lo - m.paddr), hi - lo))
    return out
