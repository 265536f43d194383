"""The guest's virtual memory map, walked from its page tables (``--paging``).

What QMP ``dump-guest-memory`` with ``paging: true`` computes
(``qemu_get_guest_memory_mapping`` in system/memory_mapping.c and the walks
of target/i386/arch_memory_mapping.c): starting with the first vCPU whose
CR0.PG is set, every vCPU with paging enabled has its page tables walked
from its CR3, in the vCPU's own mode -- 4-level or 5-level (LA57) IA-32e
paging, PAE, or 32-bit paging (with 4 MiB pages when CR4.PSE is set).
Each present leaf maps a 4 KiB, 2 MiB, 1 GiB (or 4 MiB) page; a page whose
physical start is not guest RAM is left out, as QEMU leaves out I/O. If no
vCPU has paging enabled, guest RAM is mapped at virtual = physical.

Where we differ from QEMU, on purpose:

* Virtual addresses are canonical: QEMU puts 0xffff (0x7f << 57 with LA57)
  above every address, so the user half comes out as 0xffff0000_xxxxxxxx;
  we sign-extend bit 47 (bit 56).
* Physical addresses are bits 51:12 of an entry; QEMU also keeps bits 52-62
  (software-available and protection-key bits), which makes such a page
  look like I/O to it and drops it.
* Mappings are merged canonically: the result is the set of (virtual page,
  physical page) pairs, as runs contiguous in both, whatever the order the
  vCPUs' walks found them in. QEMU merges in walk order, which can leave
  overlapping or adjacent pieces of one run apart.
* The A20 mask is not applied (A20 is always on in long mode).

The tables are guest data, so the walk is bounded: each (table, level,
virtual base) is walked at most once, at most :data:`MAX_TABLES` tables are
read, and at most :data:`MAX_MAPPINGS` separate mappings are kept. A
hostile or corrupt set of tables (cycles, every entry pointing to one
table) ends in :class:`PagingLimitError`, never in a loop or a memory blow-up.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qemu_vmcore.errors import MissingMemoryError, VmcoreError
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.qemu.x86 import X86State

#: Page tables read in one walk (all vCPUs together): 65536 tables of 512
#: entries map 128 GiB in 4 KiB pages.
MAX_TABLES = 1 << 16
#: Separate mappings kept (each becomes a PT_LOAD of 56 bytes).
MAX_MAPPINGS = 1 << 18

PTE_PRESENT = 1
PTE_PSE = 1 << 7
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
PAGE_4K = 1 << 12
PAGE_4M = 1 << 22


class PagingLimitError(VmcoreError):
    """The guest's page tables are too large, or corrupt, to walk."""


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


class _Walk:
    """One walk over all vCPUs; collects mappings merged in walk order."""

    def __init__(self, memory: GuestPhysicalMemory, ram: RamIndex) -> None:
        self._memory = memory
        self._ram = ram
        self._seen: set[tuple[str, int, int, int]] = set()
        self._tables = 0
        self._sign_bit: int | None = None
        self.found: list[list[int]] = []  # [vaddr, paddr, size], in walk order

    # -- reading tables --------------------------------------------------------

    def _entries(self, table: int, count: int, width: int) -> list[tuple[int, int]]:
        """``(index, entry)`` of the present entries of the table at ``table``.

        A table that is not in guest RAM (or not in the core) has no entries.
        """
        self._tables += 1
        if self._tables > MAX_TABLES:
            raise PagingLimitError(
                f"the guest's page tables need more than {MAX_TABLES} table reads "
                "(corrupt, cyclic or huge); --paging refused",
                hint="dump without --paging",
            )
        try:
            raw = self._memory.read(table, count * width)
        except MissingMemoryError:
            return []
        values = struct.unpack(f"<{count}{'Q' if width == 8 else 'I'}", raw)
        return [(i, e) for i, e in enumerate(values) if e & PTE_PRESENT]

    def _first_visit(self, kind: str, table: int, level: int, vbase: int) -> bool:
        key = (kind, table, level, vbase)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    # -- collecting leaves -----------------------------------------------------

    def _canonical(self, vaddr: int) -> int:
        bit = self._sign_bit
        if bit is not None and vaddr & (1 << bit):
            return vaddr | ((1 << 64) - (1 << bit))
        return vaddr

    def _add(self, vaddr: int, paddr: int, size: int) -> None:
        vaddr = self._canonical(vaddr)
        if self.found:
            last = self.found[-1]
            if last[0] + last[2] == vaddr and last[1] + last[2] == paddr:
                last[2] += size
                return
        if len(self.found) >= MAX_MAPPINGS:
            raise PagingLimitError(
                f"the guest's page tables map more than {MAX_MAPPINGS} separate ranges; "
                "--paging refused",
                hint="dump without --paging",
            )
        self.found.append([vaddr, paddr, size])

    def _large_page(self, vaddr: int, paddr: int, size: int) -> None:
        # QEMU checks only where a large page starts (cpu_physical_memory_is_io).
        if self._ram.contains(paddr):
            self._add(vaddr, paddr, size)

    def _small_pages(self, vbase: int, entries: list[tuple[int, int]], mask: int) -> None:
        """Leaf 4 KiB entries of one table, as runs contiguous in both spaces."""
        run: list[int] | None = None  # [first index, paddr, pages]
        for i, e in entries:
            paddr = e & mask
            if run is not None and i == run[0] + run[2] and paddr == run[1] + run[2] * PAGE_4K:
                run[2] += 1
                continue
            if run is not None:
                self._run(vbase, run)
            run = [i, paddr, 1]
        if run is not None:
            self._run(vbase, run)

    def _run(self, vbase: int, run: list[int]) -> None:
        first, paddr, pages = run
        vaddr = vbase | (first << 12)
        for lo, hi in self._ram.clip(paddr, paddr + pages * PAGE_4K):
            self._add(vaddr + (lo - paddr), lo, hi - lo)

    # -- the walks -------------------------------------------------------------

    def ia32e(self, cr3: int, la57: bool) -> None:
        """IA-32e paging, 4-level or 5-level."""
        levels = 5 if la57 else 4
        self._sign_bit = 56 if la57 else 47
        self._table64("ia32e", cr3 & ADDR_MASK, levels, 0)

    def pae(self, cr3: int) -> None:
        """PAE paging: four PDPT entries, then 2 MiB or 4 KiB pages."""
        self._sign_bit = None
        for i, e in self._entries(cr3 & ~0x1F & 0xFFFF_FFFF, 4, 8):
            vbase = i << 30
            if self._first_visit("pae", e & ADDR_MASK, 2, vbase):
                self._table64("pae", e & ADDR_MASK, 2, vbase)

    def _table64(self, kind: str, table: int, level: int, vbase: int) -> None:
        shift = 12 + 9 * (level - 1)
        entries = self._entries(table, 512, 8)
        if level == 1:
            self._small_pages(vbase, entries, ADDR_MASK)
            return
        for i, e in entries:
            vaddr = vbase | (i << shift)
            # PS means a page at the PDPT (1 GiB) and PD (2 MiB) levels only.
            if level in (2, 3) and e & PTE_PSE:
                size = 1 << shift
                self._large_page(vaddr, e & ADDR_MASK & ~(size - 1), size)
                continue
            below = e & ADDR_MASK
            if self._first_visit(kind, below, level - 1, vaddr):
                self._table64(kind, below, level - 1, vaddr)

    def legacy32(self, cr3: int, pse: bool) -> None:
        """32-bit paging: 1024-entry tables, 4 MiB pages with CR4.PSE (and PSE-36)."""
        self._sign_bit = None
        for i, e in self._entries(cr3 & 0xFFFF_F000, 1024, 4):
            vaddr = i << 22
            if pse and e & PTE_PSE:
                high = (e & 0x1FE000) << 19  # bits 39:32 of the address are bits 20:13
                self._large_page(vaddr, (e & 0xFFC0_0000) | high, PAGE_4M)
                continue
            table = e & 0xFFFF_F000
            if self._first_visit("legacy32", table, 1, vaddr):
                self._small_pages(vaddr, self._entries(table, 1024, 4), 0xFFFF_F000)


def walk_vcpu(walk: _Walk, s: X86State) -> None:
    """Walk one vCPU's tables in its own paging mode (nothing if paging is off)."""
    cr0, cr3, cr4 = s.cr[0], s.cr[3], s.cr[4]
    if not cr0 & CR0_PG:
        return
    if cr4 & CR4_PAE:
        if s.long_mode:
            walk.ia32e(cr3, bool(cr4 & CR4_LA57))
        else:
            walk.pae(cr3)
    else:
        walk.legacy32(cr3, bool(cr4 & CR4_PSE))


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


def guest_mappings(
    memory: GuestPhysicalMemory, vcpus: Sequence[X86State], ram: Sequence[GuestRange]
) -> list[Mapping]:
    """The guest's virtual memory map, as QEMU's paging dump finds it.

    :param ram: all guest RAM ranges: a page is kept when it starts in one.
    :raises PagingLimitError: the tables are too large or corrupt to walk.
    """
    if not any(s.cr[0] & CR0_PG for s in vcpus):
        return [Mapping(r.gpa, r.gpa, r.size) for r in ram]
    walk = _Walk(memory, RamIndex(ram))
    for s in vcpus:
        walk_vcpu(walk, s)
    return merge(walk.found)


def filter_mappings(mappings: Sequence[Mapping], begin: int, end: int) -> list[Mapping]:
    """``mappings`` clipped to guest-physical ``[begin, end)``, as QEMU's
    memory_mapping_filter clips them for ``begin``/``length``."""
    out = []
    for m in mappings:
        lo, hi = max(m.paddr, begin), min(m.end, end)
        if lo < hi:
            out.append(Mapping(lo, m.vaddr + (lo - m.paddr), hi - lo))
    return out
