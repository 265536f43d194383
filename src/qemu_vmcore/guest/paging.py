"""What the guest layer asks of an architecture's page tables: the seam.

The guest modules that follow kernel virtual addresses (VMCOREINFO
confirmation, printk) take a :class:`PageTables` object instead of walking
tables themselves, and the ELF writer takes :class:`Mapping` runs for
``--paging``; the engine builds both from the room of the guest's
architecture (:mod:`qemu_vmcore.arch.x86.paging`,
:mod:`qemu_vmcore.arch.aarch64.paging`).

Here too is what the architectures' walks of the whole map share and no
architecture changes: the bounds (:data:`MAX_TABLES`, :data:`MAX_MAPPINGS`,
:class:`PagingLimitError`), reading a table, which addresses are guest RAM
(:class:`RamIndex`), collecting and merging leaves (:class:`MappingCollector`,
:func:`merge`) and clipping the result (:func:`filter_mappings`). Nothing here
knows an architecture's tables.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from qemu_vmcore.errors import MissingMemoryError, VmcoreError
from qemu_vmcore.qemu.memory import GuestRange


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

    def text_load(self, mem: PhysicalReader) -> Mapping | None:
        """The kernel text's mapping from SYMBOL(_stext) on, as kexec's
        /proc/vmcore has a PT_LOAD of it; None when the note lacks _stext.

        :param mem: guest-physical memory, where the arch must read the
            kernel's own tables to find the image's end.
        """
        ...


# -- what every architecture's walk of the whole map shares (``--paging``) --------------

#: Page tables read in one walk of the whole map (all vCPUs together), counted
#: in 4 KiB: 65536 tables of 512 entries map 128 GiB in 4 KiB pages. A larger
#: table (aarch64's 16 KiB and 64 KiB granules) counts once per 4 KiB, so the
#: bound is on the bytes read, whatever the granule.
MAX_TABLES = 1 << 16
#: Separate mappings kept (each becomes a PT_LOAD of 56 bytes).
MAX_MAPPINGS = 1 << 18

#: The unit :data:`MAX_TABLES` counts in (bytes).
TABLE_UNIT = 1 << 12


class PagingLimitError(VmcoreError):
    """The guest's page tables are too large, or corrupt, to walk."""


def read_entries(mem: PhysicalReader, addr: int, count: int, width: int) -> tuple[int, ...] | None:
    """``count`` little-endian entries of ``width`` bytes (4 or 8) at ``addr``;
    None when they are not in memory.

    ``count`` is a table's size at most (never a guest-chosen number).
    """
    try:
        raw = mem.read(addr, count * width)
    except MissingMemoryError:
        return None
    return struct.unpack(f"<{count}{'Q' if width == 8 else 'I'}", raw)


class RamIndex:
    """Which guest-physical addresses are guest RAM (the ``ranges``)."""

    def __init__(self, ranges: Sequence[GuestRange]) -> None:
        spans = sorted((r.gpa, r.end) for r in ranges)
        self._starts = [s for s, _ in spans]
        self._spans = spans

    def contains(self, gpa: int) -> bool:
        i = bisect.bisect_right(self._starts, gpa) - 1
        return i >= 0 and gpa < self._spans[i][1]

    def clip(self, gpa: int, end: int) -> Iterable[tuple[int, int]]:
        """The parts of ``[gpa, end)`` that are guest RAM, as ``(start, end)``."""
        i = max(0, bisect.bisect_right(self._starts, gpa) - 1)
        for start, stop in self._spans[i:]:
            if start >= end:
                break
            lo, hi = max(start, gpa), min(stop, end)
            if lo < hi:
                yield lo, hi


class MappingCollector:
    """One bounded walk of the whole map over all vCPUs: the part no
    architecture changes.

    An architecture's walker reads each table through :meth:`read_table`,
    asks :meth:`first_visit` before it descends into a table, and hands the
    leaves it finds to :meth:`add`, :meth:`leaf_at_start`, :meth:`leaf_clipped`
    or :meth:`pages`, with virtual addresses already canonical. The leaves are
    merged in walk order as they come (most are runs of the one before);
    :func:`merge` makes the result canonical.

    :param max_tables: table reads allowed, in 4 KiB (:data:`MAX_TABLES`).
    :param max_mappings: separate mappings kept (:data:`MAX_MAPPINGS`).
    """

    def __init__(
        self,
        memory: PhysicalReader,
        ram: RamIndex,
        *,
        max_tables: int = MAX_TABLES,
        max_mappings: int = MAX_MAPPINGS,
    ) -> None:
        self.memory = memory
        self.ram = ram
        self.max_tables = max_tables
        self.max_mappings = max_mappings
        self._seen: set[Hashable] = set()
        self._tables = 0  # in TABLE_UNITs
        self.found: list[list[int]] = []  # [vaddr, paddr, size], in walk order

    def read_table(self, table: int, count: int, width: int = 8) -> tuple[int, ...] | None:
        """The ``count`` entries of ``width`` bytes of the table at ``table``
        (None when it is not in memory), charged to the budget.

        :raises PagingLimitError: past ``max_tables`` reads of 4 KiB.
        """
        self._tables += max(1, count * width // TABLE_UNIT)
        if self._tables > self.max_tables:
            raise PagingLimitError(
                f"the guest's page tables need more than {self.max_tables} table reads "
                "(corrupt, cyclic or huge); --paging refused",
                hint="dump without --paging",
            )
        return read_entries(self.memory, table, count, width)

    def first_visit(self, key: Hashable) -> bool:
        """True the first time a walker asks about ``key`` (a table, the level
        and virtual base it is walked at, and whatever else changes how its
        entries read); False after. This is what keeps cycles finite."""
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def add(self, vaddr: int, paddr: int, size: int) -> None:
        """Keep virtual ``[vaddr, vaddr + size)`` -> physical ``paddr`` as is.

        :raises PagingLimitError: past ``max_mappings`` separate mappings.
        """
        if self.found:
            last = self.found[-1]
            if last[0] + last[2] == vaddr and last[1] + last[2] == paddr:
                last[2] += size
                return
        if len(self.found) >= self.max_mappings:
            raise PagingLimitError(
                f"the guest's page tables map more than {self.max_mappings} separate ranges; "
                "--paging refused",
                hint="dump without --paging",
            )
        self.found.append([vaddr, paddr, size])

    def leaf_at_start(self, vaddr: int, paddr: int, size: int) -> None:
        """A leaf kept whole when its first byte is guest RAM, as QEMU keeps
        an x86 large page (it checks only where the page starts:
        cpu_physical_memory_is_io)."""
        if self.ram.contains(paddr):
            self.add(vaddr, paddr, size)

    def leaf_clipped(self, vaddr: int, paddr: int, size: int) -> None:
        """A leaf's parts that are guest RAM (none, some, or all of it)."""
        for lo, hi in self.ram.clip(paddr, paddr + size):
            self.add(vaddr + (lo - paddr), lo, hi - lo)

    def pages(self, vbase: int, leaves: Iterable[tuple[int, int]], page_size: int) -> None:
        """The leaf entries of one last-level table, clipped to guest RAM.

        :param vbase: the virtual address the table's entry 0 maps.
        :param leaves: ``(index, physical page)`` in index order.
        :param page_size: bytes each entry maps.
        """
        run: list[int] | None = None  # [first index, paddr, pages]
        for i, paddr in leaves:
            if run is not None and i == run[0] + run[2] and paddr == run[1] + run[2] * page_size:
                run[2] += 1
                continue
            if run is not None:
                self.leaf_clipped(vbase + run[0] * page_size, run[1], run[2] * page_size)
            run = [i, paddr, 1]
        if run is not None:
            self.leaf_clipped(vbase + run[0] * page_size, run[1], run[2] * page_size)

    def mappings(self) -> list[Mapping]:
        """What the walk found, canonical (:func:`merge`)."""
        return merge(self.found)


def merge(found: Iterable[Sequence[int]]) -> list[Mapping]:
    """The canonical form of ``(vaddr, paddr, size)`` triples.

    The same set of (virtual, physical) page pairs, as maximal runs
    contiguous in both address spaces, sorted by physical then virtual
    address. Duplicates and overlaps (the same kernel tables seen through
    two vCPUs) collapse into one.
    """
    by_delta = sorted(((v - p) % (1 << 64), v, p, n) for v, p, n in found)
    out: list[list[int]] = []  # [delta, vaddr, paddr, size]
    for delta, v, p, n in by_delta:
        if out and out[-1][0] == delta and v <= out[-1][1] + out[-1][3]:
            last = out[-1]
            last[3] = max(last[3], v + n - last[1])
        else:
            out.append([delta, v, p, n])
    return sorted(Mapping(p, v, n) for _, v, p, n in out)


def identity_mappings(ram: Sequence[GuestRange]) -> list[Mapping]:
    """Guest RAM at virtual = physical: the map when no vCPU translates
    (as QEMU's paging dump makes it then)."""
    return [Mapping(r.gpa, r.gpa, r.size) for r in ram]


def filter_mappings(mappings: Sequence[Mapping], begin: int, end: int) -> list[Mapping]:
    """``mappings`` clipped to guest-physical ``[begin, end)``, as QEMU's
    memory_mapping_filter clips them for ``begin``/``length``."""
    out = []
    for m in mappings:
        lo, hi = max(m.paddr, begin), min(m.end, end)
        if lo < hi:
            out.append(Mapping(lo, m.vaddr + (lo - m.paddr), hi - lo))
    return out
