"""x86 page tables: the one walker, for one address or the whole map.

Every paging mode the vCPUs can be in is one :class:`Mode` (entry width,
levels, where large pages are): 4-level and 5-level (LA57) IA-32e paging,
PAE, 32-bit paging with and without CR4.PSE; with CR0.PG clear (real mode,
protected mode without paging) there are no tables. Reading a table and
decoding an entry are shared by the two uses:

* :func:`translate` (:class:`X86PageTables`): one virtual address, at most
  one entry read per level, for VMCOREINFO confirmation and printk.
* :func:`guest_mappings`: the guest's virtual memory map (``--paging``),
  described below.

The constants (PTE_*, CR0_PG, CR4_*) are defined here once; what the walk
of the whole map shares with other architectures (its bounds, the RAM index,
collecting and merging leaves) is :mod:`qemu_vmcore.guest.paging`'s, and
imported from here too.

The guest's virtual memory map, walked from its page tables (``--paging``):

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

from collections.abc import Sequence
from dataclasses import dataclass

from qemu_vmcore.arch.x86.cpu import X86State
from qemu_vmcore.guest.paging import (
    MAX_MAPPINGS,
    MAX_TABLES,
    Mapping,
    MappingCollector,
    PagingLimitError,
    PhysicalReader,
    RamIndex,
    filter_mappings,
    identity_mappings,
    merge,
    read_entries,
)
from qemu_vmcore.qemu.memory import GuestRange

__all__ = [
    "MAX_MAPPINGS",
    "MAX_TABLES",
    "Mapping",
    "Mode",
    "PagingLimitError",
    "RamIndex",
    "X86PageTables",
    "filter_mappings",
    "guest_mappings",
    "kernel_page_tables",
    "merge",
    "read_entries",
    "translate",
    "vcpu_mode",
]

PTE_PRESENT = 1
PTE_PSE = 1 << 7  # a large page at PDPT (1 GiB) or PD (2 MiB / 4 MiB) level
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 of a 64-bit entry
ADDR_MASK_32 = 0xFFFF_F000  # bits 31:12 of a 32-bit entry
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
PAGE_SHIFT = 12
PAGE_4K = 1 << 12
PAGE_4M = 1 << 22
#: With page-table isolation, the user PGD is the kernel's + 4 KiB.
PTI_USER_PGD = 1 << 12


@dataclass(frozen=True)
class Mode:
    """One x86 paging mode: how its tables are laid out and decoded.

    :param kind: the walk's name for the tables (4- and 5-level share one:
        a table seen in either is the same table).
    :param levels: table levels, the root's being ``levels``.
    :param width: bytes per entry (8, or 4 for 32-bit paging).
    :param index_bits: bits of the address per level below the root.
    :param root_entries: entries in the root table (4 for PAE's PDPT).
    :param root_mask: the bits of CR3 that address the root table.
    :param large_levels: levels at which PS makes an entry a page.
    :param sign_bit: the bit virtual addresses are sign-extended from.
    """

    kind: str
    levels: int
    width: int
    index_bits: int
    root_entries: int
    root_mask: int
    large_levels: tuple[int, ...]
    sign_bit: int | None

    def shift(self, level: int) -> int:
        """The low bit of the address an entry at ``level`` indexes."""
        return PAGE_SHIFT + self.index_bits * (level - 1)

    def entries(self, level: int) -> int:
        return self.root_entries if level == self.levels else 1 << self.index_bits

    @property
    def addr_mask(self) -> int:
        """The bits of an entry that address a table or a 4 KiB page."""
        return ADDR_MASK if self.width == 8 else ADDR_MASK_32

    def large_page(self, entry: int, level: int) -> int | None:
        """The physical start of the page ``entry`` maps at ``level``, if it is a large page."""
        if level not in self.large_levels or not entry & PTE_PSE:
            return None
        if self.width == 4:  # PSE-36: bits 39:32 of the address are bits 20:13
            return (entry & 0xFFC0_0000) | ((entry & 0x1FE000) << 19)
        return entry & ADDR_MASK & ~((1 << self.shift(level)) - 1)


IA32E_4 = Mode("ia32e", 4, 8, 9, 512, ADDR_MASK, (2, 3), 47)
IA32E_5 = Mode("ia32e", 5, 8, 9, 512, ADDR_MASK, (2, 3), 56)
PAE = Mode("pae", 3, 8, 9, 4, ~0x1F & 0xFFFF_FFFF, (2,), None)
LEGACY32 = Mode("legacy32", 2, 4, 10, 1024, ADDR_MASK_32, (), None)
LEGACY32_PSE = Mode("legacy32", 2, 4, 10, 1024, ADDR_MASK_32, (2,), None)


def vcpu_mode(s: X86State) -> Mode | None:
    """The paging mode of a vCPU (None: CR0.PG clear, no tables)."""
    cr0, cr4 = s.cr[0], s.cr[4]
    if not cr0 & CR0_PG:
        return None
    if cr4 & CR4_PAE:
        if s.long_mode:
            return IA32E_5 if cr4 & CR4_LA57 else IA32E_4
        return PAE
    return LEGACY32_PSE if cr4 & CR4_PSE else LEGACY32


def translate(
    mem: PhysicalReader, root: int, vaddr: int, *, la57: bool = False, mode: Mode | None = None
) -> int | None:
    """The guest-physical address of ``vaddr`` under the tables at ``root`` (CR3).

    ``mode`` defaults to IA-32e paging, 5-level with ``la57``. Returns None
    when the address is not mapped or a table is not in memory. A walk is at
    most ``levels`` reads of one entry each.
    """
    mode = mode or (IA32E_5 if la57 else IA32E_4)
    table = root & mode.root_mask
    for level in range(mode.levels, 0, -1):
        shift = mode.shift(level)
        index = (vaddr >> shift) & (mode.entries(level) - 1)
        got = read_entries(mem, table + mode.width * index, 1, mode.width)
        if got is None or not got[0] & PTE_PRESENT:
            return None
        (entry,) = got
        base = mode.large_page(entry, level)
        if base is not None:
            return base | (vaddr & ((1 << shift) - 1))
        table = entry & mode.addr_mask
    return table | (vaddr & 0xFFF)


@dataclass(frozen=True)
class X86PageTables:
    """One set of x86 page tables: a root (CR3) and its mode (the seam's
    :class:`~qemu_vmcore.guest.paging.PageTables`)."""

    root: int
    mode: Mode = IA32E_4

    @classmethod
    def ia32e(cls, root: int, la57: bool) -> X86PageTables:
        return cls(root, IA32E_5 if la57 else IA32E_4)

    def translate(self, mem: PhysicalReader, vaddr: int) -> int | None:
        return translate(mem, self.root, vaddr, mode=self.mode)


def kernel_page_tables(states: Sequence[X86State]) -> tuple[X86PageTables, ...]:
    """Each long-mode vCPU's kernel page tables, deduplicated, in vCPU order.

    A vCPU stopped in user mode under PTI runs on the user PGD, which maps
    little of the kernel; its kernel PGD is the same address with bit 12 clear.
    """
    roots: dict[X86PageTables, None] = {}
    for s in states:
        if s.long_mode:
            la57 = bool(s.cr[4] & CR4_LA57)
            roots[X86PageTables.ia32e(s.cr[3], la57)] = None
            roots[X86PageTables.ia32e(s.cr[3] & ~PTI_USER_PGD, la57)] = None
    return tuple(roots)


class _Walk(MappingCollector):
    """One walk over all vCPUs, in each vCPU's own mode (the collecting and
    the bounds are :class:`~qemu_vmcore.guest.paging.MappingCollector`'s)."""

    def _entries(self, table: int, count: int, width: int) -> list[tuple[int, int]]:
        """``(index, entry)`` of the present entries of the table at ``table``.

        A table that is not in guest RAM (or not in the core) has no entries.
        """
        values = self.read_table(table, count, width)
        if values is None:
            return []
        return [(i, e) for i, e in enumerate(values) if e & PTE_PRESENT]

    @staticmethod
    def _canonical(mode: Mode, vaddr: int) -> int:
        bit = mode.sign_bit
        if bit is not None and vaddr & (1 << bit):
            return vaddr | ((1 << 64) - (1 << bit))
        return vaddr

    # -- the walk --------------------------------------------------------------

    def tables(self, mode: Mode, cr3: int) -> None:
        """Walk the tables at ``cr3`` in ``mode``, from the root down.

        The root is read once per call; each table below it at most once
        per (kind, table, level, virtual base) over the whole walk.
        """
        self._table(mode, cr3 & mode.root_mask, mode.levels, 0)

    def _table(self, mode: Mode, table: int, level: int, vbase: int) -> None:
        shift = mode.shift(level)
        entries = self._entries(table, mode.entries(level), mode.width)
        if level == 1:
            mask = mode.addr_mask
            self.pages(vbase, ((i, e & mask) for i, e in entries), PAGE_4K)
            return
        for i, e in entries:
            # Canonical from the root down: the sign bit is one of the root's
            # index bits, and the levels below only add lower bits.
            vaddr = self._canonical(mode, vbase | (i << shift))
            base = mode.large_page(e, level)
            if base is not None:
                self.leaf_at_start(vaddr, base, 1 << shift)
                continue
            below = e & mode.addr_mask
            if self.first_visit((mode.kind, below, level - 1, vaddr)):
                self._table(mode, below, level - 1, vaddr)


def walk_vcpu(walk: _Walk, s: X86State) -> None:
    """Walk one vCPU's tables in its own paging mode (nothing if paging is off)."""
    mode = vcpu_mode(s)
    if mode is not None:
        walk.tables(mode, s.cr[3])


def guest_mappings(
    memory: PhysicalReader, vcpus: Sequence[X86State], ram: Sequence[GuestRange]
) -> list[Mapping]:
    """The guest's virtual memory map, as QEMU's paging dump finds it.

    :param ram: all guest RAM ranges: a page is kept when it starts in one.
    :raises PagingLimitError: the tables are too large or corrupt to walk.
    """
    if not any(s.cr[0] & CR0_PG for s in vcpus):
        return identity_mappings(ram)
    # The bounds are read here, at call time, so that they can be lowered
    # through this module (the tests and the fuzzer do).
    walk = _Walk(memory, RamIndex(ram), max_tables=MAX_TABLES, max_mappings=MAX_MAPPINGS)
    for s in vcpus:
        walk_vcpu(walk, s)
    return walk.mappings()
