"""arch.aarch64.paging: VMSAv8-64 stage-1 walks over crafted (and hostile) guest tables.

The tables are built in a sparse guest-physical memory (:class:`SparseMemory`)
with the level shifts written out as the Arm ARM tabulates them
(:data:`LEVEL_SHIFT`), not computed as the walker computes them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.guestsynth import guest_ram

from qemu_vmcore.arch.aarch64 import paging as M
from qemu_vmcore.arch.aarch64.paging import (
    AArch64PageTables,
    Mapping,
    PagingLimitError,
    TranslationConfigError,
    VaRange,
    guest_mappings,
    kernel_page_tables,
)
from qemu_vmcore.errors import MissingMemoryError, VmcoreError
from qemu_vmcore.guest import paging as seam
from qemu_vmcore.qemu.memory import GuestRange

U64 = struct.Struct("<Q")
K, M64 = 1 << 10, (1 << 64) - 1
G = 1 << 30

# -- descriptors (Arm ARM D8.3), with the attribute bits Linux sets -------------------------

VALID, TABLE_BIT = 1 << 0, 1 << 1
AF = 1 << 10
SH_INNER = 0b11 << 8  # bits 9:8 are SH without DS (OA bits 51:50 with DS)
NG = 1 << 11
DBM = 1 << 51
CONT = 1 << 52
PXN, UXN = 1 << 53, 1 << 54
SW_DIRTY, SW_SPECIAL = 1 << 55, 1 << 56  # software bits
GP = 1 << 50  # BTI guarded page: never an address bit
NSTABLE, APTABLE, UXNTABLE, PXNTABLE = 1 << 63, 0b11 << 61, 1 << 60, 1 << 59
ATTRS = AF | SH_INNER | NG | DBM | PXN | UXN | SW_DIRTY | 0b100  # AttrIndx 1, Linux-ish
ATTRS_DS = AF | NG | DBM | PXN | UXN | SW_DIRTY | GP | 0b100  # no SH: those bits are OA
TABLE = VALID | TABLE_BIT | PXNTABLE | UXNTABLE
PAGE = VALID | TABLE_BIT | ATTRS
BLOCK = VALID | ATTRS

#: The bits of address a level resolves, by granule: its lowest bit (its shift).
LEVEL_SHIFT = {
    12: {-1: 48, 0: 39, 1: 30, 2: 21, 3: 12},
    14: {0: 47, 1: 36, 2: 25, 3: 14},
    16: {1: 42, 2: 29, 3: 16},
}

# -- TCR_EL1, SCTLR_EL1 (the encodings written out) -----------------------------------------

TG0 = {12: 0b00, 16: 0b01, 14: 0b10}
TG1 = {14: 0b01, 12: 0b10, 16: 0b11}
IPS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5, 52: 6}
EPD0, EPD1 = 1 << 7, 1 << 23
TBI0, TBI1 = 1 << 37, 1 << 38
DS = 1 << 59
A1 = 1 << 22
SCTLR_M = 1
SCTLR_RES1 = 0x30D0_0800 | 1 << 2 | 1 << 12  # C, I and the RES1 bits, as Linux sets them


def tcr(
    granule: int = 12,
    va_bits: int = 48,
    *,
    granule1: int | None = None,
    va_bits1: int | None = None,
    pa_bits: int = 48,
    flags: int = 0,
) -> int:
    """A TCR_EL1 with both ranges alike unless told (``granule``: its bits)."""
    g1 = granule if granule1 is None else granule1
    v1 = va_bits if va_bits1 is None else va_bits1
    return (
        (64 - va_bits)
        | TG0[granule] << 14
        | (64 - v1) << 16
        | TG1[g1] << 30
        | IPS[pa_bits] << 32
        | flags
    )


#: TCR_EL1 as Linux 6.1 sets it for VA_BITS=48, 4 KiB (T0SZ=T1SZ=16, inner
#: shareable write-back walks, ASID in TTBR1, 16-bit ASIDs, TBI0, HA/HD).
LINUX_TCR = (
    16 | 1 << 8 | 1 << 10 | 3 << 12 | 0 << 14  # T0SZ, IRGN0, ORGN0, SH0, TG0 = 4K
    | 16 << 16 | A1 | 1 << 24 | 1 << 26 | 3 << 28 | 0b10 << 30  # T1SZ, A1, ..., TG1 = 4K
    | IPS[40] << 32 | 1 << 36 | TBI0 | 1 << 39 | 1 << 40  # IPS, AS, TBI0, HA, HD
)  # fmt: skip


# -- a sparse guest-physical memory -----------------------------------------------------------


class SparseMemory:
    """Guest RAM ``[start, end)`` ranges, zeros until written, in 4 KiB pages.

    A read that is not all inside one range raises MissingMemoryError, as
    GuestPhysicalMemory's does; ``reads`` counts them.
    """

    def __init__(self, *ranges: tuple[int, int]) -> None:
        self.ranges = sorted(ranges)
        self.pages: dict[int, bytearray] = {}
        self.reads = 0

    def _check(self, gpa: int, size: int) -> None:
        if not any(start <= gpa and gpa + size <= end for start, end in self.ranges):
            raise MissingMemoryError(f"guest-physical {gpa:#x} (+{size}) is not RAM")

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        for k, byte in enumerate(data):
            a = gpa + k
            self.pages.setdefault(a >> 12, bytearray(4096))[a & 0xFFF] = byte

    def put64(self, gpa: int, value: int) -> None:
        self.write(gpa, U64.pack(value & M64))

    def read(self, gpa: int, size: int) -> bytes:
        self.reads += 1
        self._check(gpa, size)
        out = bytearray()
        a, end = gpa, gpa + size
        while a < end:
            n = min(end, (a | 0xFFF) + 1) - a
            page = self.pages.get(a >> 12)
            out += page[a & 0xFFF : (a & 0xFFF) + n] if page else bytes(n)
            a += n
        return bytes(out)

    def guest_ranges(self) -> list[GuestRange]:
        return [GuestRange(s, e, 0, "mach-virt.ram", "ram", 1) for s, e in self.ranges]


@dataclass(frozen=True)
class Vcpu:
    """The EL1 registers the walk reads (the state class is arch/aarch64/cpu.py's)."""

    ttbr0: int = 0
    ttbr1: int = 0
    tcr: int = 0
    sctlr: int = SCTLR_RES1 | SCTLR_M
    index: int = 0


class Tables:
    """Descriptor tables of one range, built from the root down on demand, in
    tables of a granule from ``at`` on (the root first).

    Indices are taken from an address's low ``va_bits``: the tables serve the
    lower and the upper range alike.

    :param oa: how a descriptor holds a physical address (the 52-bit forms
        move its high bits); ``decode`` reads it back.
    """

    def __init__(
        self,
        mem: SparseMemory,
        granule: int,
        va_bits: int,
        at: int,
        *,
        oa: Callable[[int], int] = lambda pa: pa,
        decode: Callable[[int], int] | None = None,
    ) -> None:
        self.mem, self.granule, self.va_bits = mem, granule, va_bits
        self.levels = sorted(lv for lv, s in LEVEL_SHIFT[granule].items() if s < va_bits)
        self.next = at
        self.oa = oa
        self.decode = decode or (lambda d: d & ((1 << 48) - 1) & ~((1 << granule) - 1))
        self.root = self.new_table()

    def new_table(self) -> int:
        at = self.next
        self.next += 1 << self.granule
        return at

    def index(self, vaddr: int, level: int) -> int:
        shift = LEVEL_SHIFT[self.granule][level]
        bits = min(self.granule - 3, self.va_bits - shift)
        return (vaddr >> shift) & ((1 << bits) - 1)

    def slot(self, vaddr: int, level: int) -> int:
        """Where the entry for ``vaddr`` at ``level`` is, making tables above it."""
        table = self.root
        for lv in self.levels:
            at = table + 8 * self.index(vaddr, lv)
            if lv == level:
                return at
            (desc,) = U64.unpack(self.mem.read(at, 8))
            if not desc & VALID:
                below = self.new_table()
                self.mem.put64(at, self.oa(below) | TABLE)
                table = below
            else:
                table = self.decode(desc)
        raise AssertionError(level)

    def map(self, vaddr: int, paddr: int, level: int = 3, flags: int | None = None) -> None:
        """A page (level 3) or block descriptor mapping ``vaddr`` to ``paddr``."""
        if flags is None:
            flags = PAGE if level == 3 else BLOCK
        self.mem.put64(self.slot(vaddr, level), self.oa(paddr) | flags)

    def put(self, vaddr: int, level: int, desc: int) -> None:
        """Any descriptor at ``vaddr``'s entry of ``level``."""
        self.mem.put64(self.slot(vaddr, level), desc)


RAM = (0x4000_0000, 0x4000_0000 + 4 * G)  # QEMU virt's RAM at 1 GiB, 4 GiB of it
TABLES_AT = 0x4800_0000


def ram_and_tables(granule: int = 12, va_bits: int = 48, **kw) -> tuple[SparseMemory, Tables]:
    mem = SparseMemory(RAM)
    return mem, Tables(mem, granule, va_bits, TABLES_AT, **kw)


def walker(t: Tables, *, upper: bool = False, **kw) -> AArch64PageTables:
    """From the registers, with ``t`` as the range ``upper`` picks; the other range off."""
    flags = kw.pop("flags", 0) | (EPD0 if upper else EPD1)
    regs = tcr(t.granule, t.va_bits, flags=flags, **kw)
    ttbr = t.root | 0x2A << 48 | 1  # an ASID and CnP: not address bits
    got = AArch64PageTables.from_registers(0 if upper else ttbr, ttbr if upper else 0, regs, 1)
    assert got is not None
    return got


def top(va_bits: int) -> int:
    return M64 & ~((1 << va_bits) - 1)


# -- the four-level 4 KiB walk, by hand ---------------------------------------------------------


def test_4k_48bit_pages_2m_and_1g_blocks():
    mem = SparseMemory(RAM)
    l0, l1, l2, l3 = (TABLES_AT + k * 4096 for k in range(4))
    # VA 0x0000_0080_4060_3123: L0 index 1, L1 index 1, L2 index 2, L3 index 3.
    mem.put64(l0 + 8 * 1, l1 | TABLE)
    mem.put64(l1 + 8 * 1, l2 | TABLE)
    mem.put64(l2 + 8 * 2, l3 | TABLE)
    mem.put64(l3 + 8 * 3, 0x4123_4000 | PAGE)
    mem.put64(l1 + 8 * 5, 0x1_4000_0000 | BLOCK)  # 1 GiB at L1 index 5
    mem.put64(l2 + 8 * 7, 0x4160_0000 | BLOCK | 0x1F_F000)  # 2 MiB; bits 20:12 are RES0
    t = AArch64PageTables.from_registers(l0, 0, tcr(12, 48, flags=EPD1), SCTLR_M)
    assert t is not None
    va = 1 << 39 | 1 << 30 | 2 << 21 | 3 << 12
    assert t.translate(mem, va | 0x123) == 0x4123_4123
    assert t.translate(mem, va + 0x1000) is None  # L3 index 4: invalid
    assert t.translate(mem, 1 << 39 | 5 << 30 | 0x2345_6789) == 0x1_6345_6789
    assert t.translate(mem, 1 << 39 | 1 << 30 | 7 << 21 | 0x1_2345) == 0x4161_2345
    assert t.translate(mem, 2 << 39) is None  # L0 index 2: invalid
    assert mem.reads > 0


@pytest.mark.parametrize(
    ("granule", "va_bits", "levels"),
    [
        (12, 48, [0, 1, 2, 3]),
        (12, 39, [1, 2, 3]),
        (12, 42, [0, 1, 2, 3]),  # level 0 of 8 entries
        (12, 36, [1, 2, 3]),  # level 1 of 64 entries
        (14, 47, [1, 2, 3]),  # level 1 of 2048 entries
        (14, 48, [0, 1, 2, 3]),  # level 0 of 2 entries
        (14, 36, [2, 3]),
        (16, 42, [2, 3]),  # level 2 of 8192 entries
        (16, 48, [1, 2, 3]),  # level 1 of 64 entries
        (16, 39, [2, 3]),
        (12, 25, [2, 3]),  # small (FEAT_TTST) ranges
        (16, 17, [3]),  # level 3 only, 2 entries
    ],
)
def test_granules_and_sizes(granule, va_bits, levels):
    mem, t = ram_and_tables(granule, va_bits)
    assert t.levels == levels
    page = 1 << granule
    pages = sorted({0, 1, (1 << (va_bits - granule)) - 1})  # first, second, last page
    for k, p in enumerate(pages):
        t.map(p * page, 0x5000_0000 + k * page)
    blocks = [lv for lv in levels if lv == 2 or (lv == 1 and granule == 12)]
    for lv in blocks:  # one block per level where blocks may be, past the pages
        size = 1 << LEVEL_SHIFT[granule][lv]
        t.map(size * 2, 0x1_0000_0000, lv)
    for upper in (False, True):
        w = walker(t, upper=upper)
        base = top(va_bits) if upper else 0
        for k, p in enumerate(pages):
            assert w.translate(mem, base | p * page | 0x7) == 0x5000_0000 + k * page + 7
        for lv in blocks:
            size = 1 << LEVEL_SHIFT[granule][lv]
            assert w.translate(mem, base | (size * 2 + size - 1)) == 0x1_0000_0000 + size - 1
        if 1 << (va_bits - granule) > 3:
            assert w.translate(mem, base | 2 * page) is None
        # The other range is off (EPD), and nothing past the range's size.
        assert w.translate(mem, (base ^ M64) & ~(page - 1)) is None
        assert w.translate(mem, base ^ (1 << va_bits)) is None
        r = w.upper if upper else w.lower
        assert r.start_level == levels[0]


@pytest.mark.parametrize(
    ("granule", "level", "ok"),
    [(12, 0, False), (12, 1, True), (12, 2, True), (14, 0, False), (14, 1, False),
     (14, 2, True), (16, 1, False), (16, 2, True)],
)  # fmt: skip
def test_blocks_only_where_the_granule_allows_them(granule, level, ok):
    mem, t = ram_and_tables(granule, 48)
    va = 1 << LEVEL_SHIFT[granule][level]  # index 1 at the level, 0 above it
    t.map(va, 0x1_0000_0000, level)
    assert walker(t).translate(mem, va | 0x42) == (0x1_0000_0042 if ok else None)


def test_invalid_descriptors():
    mem, t = ram_and_tables()
    t.map(0x1000, 0x5000_0000, flags=VALID | ATTRS)  # 0b01 at level 3: reserved
    t.map(0x2000, 0x5000_0000, flags=TABLE_BIT | ATTRS)  # bit 0 clear
    t.map(0x3000, 0x5000_0000)
    t.put(1 << 30, 1, 0x5000_0000 | TABLE_BIT | 0xFFF << 52)  # an invalid L1 entry, junk bits
    w = walker(t)
    assert w.translate(mem, 0x1000) is None
    assert w.translate(mem, 0x2000) is None
    assert w.translate(mem, 0x3000) == 0x5000_0000
    assert w.translate(mem, 1 << 30) is None


def test_attribute_bits_are_not_address_bits():
    mem, t = ram_and_tables()
    # Every attribute and software bit, and bits 50:48 (GP, then RES0 without DS).
    everything = PAGE | 0x3FF << 2 | 0xFFF << 52 | DBM | 0x7 << 48
    t.map(0x1000, 0x5000_0000, flags=everything)
    l2, l3 = t.new_table(), t.new_table()
    t.put(1 << 30, 1, l2 | TABLE | 0x3FF << 2 | 0x1F << 59 | 0x7 << 48)  # a table's too
    mem.put64(l2, l3 | TABLE | 0x3FF << 2)
    mem.put64(l3 + 8 * 5, 0x6000_0000 | PAGE)
    w = walker(t, pa_bits=40)
    assert w.translate(mem, 0x1000) == 0x5000_0000
    assert w.translate(mem, (1 << 30) | 0x5123) == 0x6000_0123


def test_64k_bits_15_12_are_address_bits_only_with_a_52bit_ips():
    mem, t = ram_and_tables(16, 48)
    t.map(0x1_0000, 0x5000_0000, flags=PAGE | 0x3000)  # with LPA: PA bits 49:48
    t.map(1 << 42, 0x400_0000_0000, 1)  # a 4 TiB block: only with FEAT_LPA
    w48, w52 = walker(t, pa_bits=48), walker(t, pa_bits=52)
    assert (w48.lower.lpa, w52.lower.lpa) == (False, True)
    assert w48.translate(mem, 0x1_0123) == 0x5000_0123
    assert w52.translate(mem, 0x1_0123) == 0x3_0000_5000_0123
    assert w48.translate(mem, 1 << 42 | 0x1234) is None
    assert w52.translate(mem, 1 << 42 | 0x1234) == 0x400_0000_1234


def test_output_address_past_ips_is_not_mapped():
    mem, t = ram_and_tables()
    t.map(0x1000, 1 << 40)  # PA bit 40: past a 40-bit IPS
    t.map(0x2000, (1 << 40) - 4096)
    t.put(1 << 30, 1, (1 << 44) | TABLE)  # a table past it
    assert walker(t, pa_bits=40).translate(mem, 0x1000) is None
    assert walker(t, pa_bits=40).translate(mem, 0x2000) == (1 << 40) - 4096
    assert walker(t, pa_bits=44).translate(mem, 0x1000) == 1 << 40
    assert walker(t, pa_bits=48).translate(mem, (1 << 30) | 0x1000) is None  # not in RAM
    # 52 bits asked of a 4 KiB range without DS: 48 (QEMU: !ds && !64K caps it).
    assert walker(t, pa_bits=52).lower.pa_bits == 48
    # A root past the PA size: the whole range faults.
    high = AArch64PageTables.from_registers(1 << 41, 0, tcr(pa_bits=40), 1)
    assert high is not None and high.lower is None


def test_table_not_in_memory():
    mem, t = ram_and_tables()
    t.put(0, 0, 0x2000_0000 | TABLE)  # below RAM
    t.put(1 << 39, 0, (RAM[1] - 4096) | TABLE)
    t.put(1 << 39 | 1 << 30, 1, RAM[1] | TABLE)  # just past RAM
    w = walker(t)
    assert w.translate(mem, 0x1234) is None
    assert w.translate(mem, 1 << 39 | 1 << 30) is None
    outside = AArch64PageTables.from_registers(0x1000, 0, tcr(flags=EPD1), 1)
    assert outside.translate(mem, 0) is None
    assert guest_mappings(mem, [Vcpu(ttbr0=0x1000, tcr=tcr(flags=EPD1))], mem.guest_ranges()) == []


def test_works_through_guest_physical_memory():
    """The real reader (a synthetic QEMU core): guest RAM from 0, 64 KiB of it."""
    ram = bytearray(64 * K)
    root, l1, l2, l3 = 0x1000, 0x2000, 0x3000, 0x4000
    for table, index, value in (
        (root, 0, l1 | TABLE), (l1, 0, l2 | TABLE), (l2, 0, l3 | TABLE),
        (l3, 5, 0xA000 | PAGE), (l2, 1, 0x20_0000 | BLOCK), (l1, 1, 0x8000_0000 | TABLE),
    ):  # fmt: skip
        ram[table + 8 * index : table + 8 * index + 8] = U64.pack(value)
    with guest_ram(ram) as (mem, _):
        t = AArch64PageTables.from_registers(root, 0, tcr(flags=EPD1), 1)
        assert t.translate(mem, 0x5ABC) == 0xAABC
        assert t.translate(mem, 0x20_0000) == 0x20_0000  # a block outside RAM: still its PA
        assert t.translate(mem, 1 << 30) is None  # a table outside RAM
        ranges = [GuestRange(0, len(ram), 0, "ram", "ram", 1)]
        got = guest_mappings(mem, [Vcpu(ttbr0=root, tcr=tcr(flags=EPD1))], ranges)
        assert got == [Mapping(0xA000, 0x5000, 4096)]  # the block is not RAM: left out


# -- the two ranges, TBI, EPD, the MMU ----------------------------------------------------------


def two_ranges(granule=12, va0=48, va1=48):
    mem = SparseMemory(RAM)
    lo = Tables(mem, granule, va0, TABLES_AT)
    hi = Tables(mem, granule, va1, TABLES_AT + 64 * (1 << granule))
    lo.map(0x40_0000, 0x5000_0000)
    hi.map(0x40_0000, 0x6000_0000)
    return mem, lo, hi


def test_ttbr1_for_bit_55_and_the_gap_between_the_ranges():
    mem, lo, hi = two_ranges(va0=48, va1=39)
    t = AArch64PageTables.from_registers(lo.root, hi.root, tcr(va_bits=48, va_bits1=39), 1)
    assert t.translate(mem, 0x40_0123) == 0x5000_0123
    assert t.translate(mem, top(39) | 0x40_0123) == 0x6000_0123
    # Only the range's size is translated, the rest must copy bit 55.
    assert t.translate(mem, top(48) | 0x40_0000) is None  # upper, but not a 39-bit address
    assert t.translate(mem, 1 << 48 | 0x40_0000) is None  # lower, bit 48 set
    assert t.translate(mem, 1 << 63 | 0x40_0000) is None  # bit 63 set, bit 55 clear: lower
    assert t.translate(mem, (top(39) & ~(1 << 63)) | 0x40_0000) is None
    assert t.translate(mem, 1 << 64) is None and t.translate(mem, -1) is None


@pytest.mark.parametrize("granule", [12, 14, 16])
def test_tg0_and_tg1_encodings_differ(granule):
    mem, lo, hi = two_ranges(granule)
    t = AArch64PageTables.from_registers(lo.root, hi.root, tcr(granule), 1)
    assert t.lower.granule_bits == t.upper.granule_bits == granule
    assert t.translate(mem, 0x40_0000) == 0x5000_0000
    assert t.translate(mem, top(48) | 0x40_0000) == 0x6000_0000


def test_reserved_granule_encoding_is_4k_as_in_qemu():
    regs = tcr() | 0b11 << 14 | 0b00 << 30  # TG0 = 0b11, TG1 = 0b00: reserved
    t = AArch64PageTables.from_registers(0x1000, 0x2000, regs, 1)
    assert t.lower.granule_bits == t.upper.granule_bits == 12


def test_tbi_ignores_the_top_byte():
    mem, lo, hi = two_ranges()
    plain = AArch64PageTables.from_registers(lo.root, hi.root, tcr(), 1)
    tagged = AArch64PageTables.from_registers(lo.root, hi.root, tcr(flags=TBI0 | TBI1), 1)
    for vaddr, pa in ((0x5A00_0000_0040_0000, 0x5000_0000), (0xFF00_0000_0040_0000, 0x5000_0000),
                      (0x12FF_0000_0040_0000, 0x6000_0000), (0xF4FF_0000_0040_0000, 0x6000_0000),
                      (0x0AFE_0000_0040_0000, None), (0xFF7F_0000_0040_0000, None)):  # fmt: skip
        assert plain.translate(mem, vaddr) is None
        # Bit 55 still picks the range; with TBI, only bits 55:48 must copy it.
        assert tagged.translate(mem, vaddr) == pa, hex(vaddr)
    only0 = AArch64PageTables.from_registers(lo.root, hi.root, tcr(flags=TBI0), 1)
    assert only0.translate(mem, 0x5A00_0000_0040_0000) == 0x5000_0000
    assert only0.translate(mem, 0xF4FF_0000_0040_0000) is None


def test_epd_disables_a_range():
    mem, lo, hi = two_ranges()
    t = AArch64PageTables.from_registers(lo.root, hi.root, tcr(flags=EPD0), 1)
    assert t.lower is None and t.translate(mem, 0x40_0000) is None
    assert t.translate(mem, top(48) | 0x40_0000) == 0x6000_0000
    t = AArch64PageTables.from_registers(lo.root, hi.root, tcr(flags=EPD1), 1)
    assert t.upper is None and t.translate(mem, top(48) | 0x40_0000) is None
    assert t.translate(mem, 0x40_0000) == 0x5000_0000
    vcpu = Vcpu(lo.root, hi.root, tcr(flags=EPD0 | EPD1))
    assert guest_mappings(mem, [vcpu], mem.guest_ranges()) == []  # the MMU is on: no identity


def test_mmu_off_means_no_tables():
    assert AArch64PageTables.from_registers(0x1000, 0x2000, tcr(), SCTLR_RES1) is None
    mem, lo, hi = two_ranges()
    off = Vcpu(lo.root, hi.root, tcr(), sctlr=SCTLR_RES1)
    ranges = [GuestRange(0x4000_0000, 0x8000_0000, 0, "a", "a", 1),
              GuestRange(0x1_0000_0000, 0x1_4000_0000, 0, "b", "b", 2)]  # fmt: skip
    identity = [Mapping(r.gpa, r.gpa, r.size) for r in ranges]
    assert guest_mappings(mem, [off, off], ranges) == identity
    assert guest_mappings(mem, [], ranges) == identity
    assert kernel_page_tables([off]) == ()
    # One vCPU with the MMU on is enough for the walk.
    on = Vcpu(lo.root, hi.root, tcr(), index=1)
    assert guest_mappings(mem, [off, on], ranges) == [
        Mapping(0x5000_0000, 0x40_0000, 4096),
        Mapping(0x6000_0000, top(48) | 0x40_0000, 4096),
    ]


def test_txsz_out_of_range_faults_the_range():
    for granule, tsz in ((12, 49), (12, 15), (12, 12), (14, 15), (16, 48), (16, 11), (16, 63)):
        regs = (tcr(granule) & ~0x3F) | tsz
        t = AArch64PageTables.from_registers(0x4800_0000, 0x4800_0000, regs, 1)
        assert t.lower is None and t.upper is not None, (granule, tsz)
    for granule, tsz in ((12, 16), (12, 48), (14, 17), (16, 47), (16, 12)):
        regs = (tcr(granule) & ~0x3F) | tsz
        assert AArch64PageTables.from_registers(0, 0, regs, 1).lower is not None, (granule, tsz)


def test_ttbr_baddr():
    # ASID (63:48) and CnP (bit 0) are not address bits; nor those below the
    # root table's size (a 39-bit 4K root is 4 KiB; a 48-bit 16K root, 16 bytes).
    t = AArch64PageTables.from_registers(0xABCD_0000_4800_0FFF, 0, tcr(12, 39), 1)
    assert t.lower.root == 0x4800_0000
    t = AArch64PageTables.from_registers(0xABCD_0000_4800_0FF1, 0, tcr(14, 48), 1)
    assert t.lower.root == 0x4800_0FF0
    # In the 52-bit forms, bits 5:2 are PA bits 51:48 and the root is 64-byte aligned.
    t = AArch64PageTables.from_registers(0x0000_0000_4800_0FFF, 0, tcr(14, 48, flags=DS,
                                         pa_bits=52), 1)  # fmt: skip
    assert t.lower.root == 0xF_0000_4800_0FC0
    t = AArch64PageTables.from_registers(0x0000_0000_4800_0024, 0, tcr(16, 48, pa_bits=52), 1)
    assert t.lower.root == 0x9_0000_4800_0000


# -- 52 bits ---------------------------------------------------------------------------------

HIGH_RAM = (1 << 50, (1 << 50) + 4 * G)  # RAM above 48 bits of PA
PA_HIGH = 0xF << 48 | 0x1234_0000  # bits 51:48 set


def lpa2_oa(pa: int) -> int:
    """A physical address as an LPA2 descriptor holds it (51:50 in bits 9:8)."""
    return (pa & ((1 << 50) - 1)) | ((pa >> 50) & 3) << 8


def lpa2_decode(desc: int) -> int:
    return desc & ((1 << 50) - 1) & ~0xFFF | ((desc >> 8) & 3) << 50


def lpa_oa(pa: int) -> int:
    """A physical address as a 64 KiB FEAT_LPA descriptor holds it (51:48 in 15:12)."""
    return (pa & ((1 << 48) - 1)) | ((pa >> 48) & 0xF) << 12


def lpa_decode(desc: int) -> int:
    return desc & ((1 << 48) - 1) & ~0xFFFF | ((desc >> 12) & 0xF) << 48


def test_64k_52bit_va_and_pa():
    mem = SparseMemory(RAM, HIGH_RAM, (PA_HIGH & ~0xFFFF_FFFF, (PA_HIGH & ~0xFFFF_FFFF) + G))
    t = Tables(mem, 16, 52, (1 << 50) + 0x100_0000, oa=lpa_oa, decode=lpa_decode)
    assert t.levels == [1, 2, 3]  # level 1 of 1024 entries
    t.map(0x7_F000_0000_0000, PA_HIGH & ~0xFFFF)  # a VA bit past 48
    t.map(5 << 42, 3 << 42, 1, flags=BLOCK | 0xF000)  # a 4 TiB block: FEAT_LPA allows it
    t.map(1 << 29, 1 << 29, 2)
    ttbr = (t.root & ((1 << 48) - 1)) | (t.root >> 48) << 2  # BADDR 51:48 in bits 5:2
    regs = tcr(16, 52, pa_bits=52, flags=EPD1)
    w = AArch64PageTables.from_registers(ttbr, 0, regs, 1)
    assert (w.lower.va_bits, w.lower.pa_bits, w.lower.lpa, w.lower.root) == (52, 52, True, t.root)
    assert w.translate(mem, 0x7_F000_0000_0000 | 0xABC) == PA_HIGH & ~0xFFFF | 0xABC
    assert w.translate(mem, 5 << 42 | 0x123_4567) == (0xF << 48 | 3 << 42) + 0x123_4567
    assert w.translate(mem, 1 << 29 | 0x10) == 1 << 29 | 0x10
    # With a 48-bit IPS, TTBR bits 5:2 are not address bits (and the root is not RAM).
    w48 = AArch64PageTables.from_registers(ttbr, 0, tcr(16, 52, flags=EPD1), 1)
    assert w48.lower.root == t.root & ((1 << 48) - 1)
    assert w48.translate(mem, 0x7_F000_0000_0000) is None
    # 52-bit VA with 64K (FEAT_LVA) also through kernel(), on the upper range.
    k = AArch64PageTables.kernel(t.root, 52, 65536)
    assert k.upper.lpa and k.upper.start_level == 1
    assert k.translate(mem, top(52) | 0x7_F000_0000_0000) == PA_HIGH & ~0xFFFF


@pytest.mark.parametrize("granule", [12, 14])
def test_lpa2_ds(granule):
    mem = SparseMemory(RAM, HIGH_RAM, (PA_HIGH & ~0xFFFF_FFFF, (PA_HIGH & ~0xFFFF_FFFF) + G))
    t = Tables(mem, granule, 52, (1 << 50) + 0x100_0000, oa=lpa2_oa, decode=lpa2_decode)
    assert t.levels == ([-1, 0, 1, 2, 3] if granule == 12 else [0, 1, 2, 3])
    t.map(0xA_BCDE_F000_0000, PA_HIGH & ~((1 << granule) - 1), flags=PAGE & ~SH_INNER | GP)
    big = t.levels[1]  # a block at level 0 (4K, 512 GiB) or 1 (16K, 64 GiB): DS allows it
    size = 1 << LEVEL_SHIFT[granule][big]
    t.map(3 * size, 1 << 50, big, flags=BLOCK & ~SH_INNER)
    ttbr = (t.root & ((1 << 48) - 1)) | (t.root >> 48) << 2
    regs = tcr(granule, 52, pa_bits=52, flags=DS | EPD0)
    w = AArch64PageTables.from_registers(0, ttbr, regs, 1)
    r = w.upper
    assert (r.ds, r.va_bits, r.pa_bits, r.start_level, r.root) == (
        True,
        52,
        52,
        t.levels[0],
        t.root,
    )
    va = top(52) | 0xA_BCDE_F000_0000 | 0x123
    assert w.translate(mem, va) == PA_HIGH & ~((1 << granule) - 1) | 0x123
    assert w.translate(mem, top(52) | 3 * size + 0x42) == (1 << 50) + 0x42
    # With DS and a 48-bit IPS, the descriptors keep the LPA2 format and a PA past
    # 48 bits faults, like the root does here.
    assert AArch64PageTables.from_registers(0, ttbr, tcr(granule, 52, flags=DS), 1).upper is None
    low = Tables(mem, granule, 52, 0x4900_0000, oa=lpa2_oa, decode=lpa2_decode)
    low.map(0x1000_0000, 0x5000_0000, flags=PAGE & ~SH_INNER)
    low.map(0x2000_0000, 1 << 50, flags=PAGE & ~SH_INNER)
    w48 = AArch64PageTables.from_registers(0, low.root, tcr(granule, 52, flags=DS), 1)
    assert w48.upper.pa_bits == 48 and w48.upper.ds
    assert w48.translate(mem, top(52) | 0x1000_0000) == 0x5000_0000
    assert w48.translate(mem, top(52) | 0x2000_0000) is None
    # SH bits in an LPA2 descriptor are PA bits 51:50: past 48 bits, a fault.
    low.map(0x3000_0000, 0x5000_0000, flags=PAGE)
    assert w48.translate(mem, top(52) | 0x3000_0000) is None


def test_ds_is_res0_with_64k():
    t = AArch64PageTables.from_registers(0x4800_0000, 0, tcr(16, 48, flags=DS), 1)
    assert not t.lower.ds and not t.lower.lpa


def test_kernel_tables_and_refusals():
    k = AArch64PageTables.kernel(0x4100_0000, 48, 4096)
    assert k.lower is None
    assert (k.upper.va_bits, k.upper.granule_bits, k.upper.pa_bits, k.upper.ds) == (
        48,
        12,
        48,
        False,
    )
    assert AArch64PageTables.kernel(0x4100_0000, 39, 4096).upper.start_level == 1
    assert AArch64PageTables.kernel(0x4100_0000, 47, 16384).upper.start_level == 1
    assert AArch64PageTables.kernel(0x4100_0000, 42, 65536).upper.start_level == 2
    assert AArch64PageTables.kernel(0x4100_0000, 52, 4096).upper.ds
    assert AArch64PageTables.kernel(0x4100_0000, 48, 4096, pa_bits=52).upper.ds
    assert AArch64PageTables.kernel(0x4100_0000, 48, 65536).upper.lpa
    refused = [
        ((0x4100_0000, 48, 8192), "aarch64 page size 8192 is not supported"),
        ((0x4100_0000, 53, 4096), "aarch64 4K granule: 53-bit VA is not supported"),
        ((0x4100_0000, 52, 4096, 48), "4K granule: 52-bit VA is not supported without TCR_EL1.DS"),
        ((0x4100_0000, 15, 16384), "aarch64 16K granule: 15-bit VA is not supported"),
        ((0x4100_0000, 16, 65536), "aarch64 64K granule: 16-bit VA is not supported"),
        ((0x4100_0000, 48, 4096, 50), "aarch64 4K granule: 50-bit PA is not supported"),
        ((0x4100_0800, 48, 4096), "root table 0x41000800 is not an aligned 48-bit"),
        ((1 << 48, 48, 4096), "is not an aligned 48-bit physical address"),
        ((-4096, 48, 4096), "is not an aligned"),
    ]
    for args, message in refused:
        root, va_bits, size, *pa = args
        with pytest.raises(TranslationConfigError, match=message) as info:
            AArch64PageTables.kernel(root, va_bits, size, pa_bits=pa[0] if pa else None)
        assert isinstance(info.value, VmcoreError)
    with pytest.raises(TranslationConfigError, match="DS .* 4 and 16 KiB only"):
        VaRange(True, 0, 16, 48, ds=True)
    with pytest.raises(TranslationConfigError, match="FEAT_LPA's descriptor format"):
        VaRange(True, 0, 12, 48, 52, lpa=True)
    with pytest.raises(TranslationConfigError, match="granule of 2\\*\\*13"):
        VaRange(True, 0, 13, 48)
    # A 16 KiB 48-bit root is 16 bytes, aligned to 16; in the 52-bit forms to 64.
    assert VaRange(True, 0x4800_0010, 14, 48).root_table_bytes == 16
    with pytest.raises(TranslationConfigError, match="root table 0x48000010 is not an aligned"):
        VaRange(True, 0x4800_0010, 14, 48, 52, ds=True)


def test_from_registers_never_raises_on_any_values():
    for regs in (M64, 0, 0x5555_5555_5555_5555, 0xAAAA_AAAA_AAAA_AAAA, LINUX_TCR | DS):
        for ttbr in (M64, 0, 0x1234_5678_9ABC_DEF0):
            AArch64PageTables.from_registers(ttbr, ttbr, regs, 1)


# -- Linux's arm64 layout ---------------------------------------------------------------------

PAGE_OFFSET = 0xFFFF_0000_0000_0000  # VA_BITS=48: the linear map
KIMAGE_VADDR = 0xFFFF_8000_0800_0000  # MODULES_END: the kernel image without KASLR
PHYS_OFFSET = 0x4000_0000  # memstart_addr on QEMU virt
KERNEL_PA = 0x4020_0000  # where the image was loaded
SWAPPER_PG_DIR = 0x41A0_0000  # swapper_pg_dir, inside the image
USER_PGD = 0x4B00_0000


def linux_guest() -> tuple[SparseMemory, Tables, Tables]:
    """VA_BITS=48, 4 KiB: swapper_pg_dir maps the first GiB of RAM linearly (2 MiB
    blocks, the first 2 MiB in pages as for a NO_BLOCK_MAPPINGS region) and
    the image (4 MiB: 2 MiB of pages, then a 2 MiB block); a process maps two
    pages at 0xaaaa_c000_0000."""
    mem = SparseMemory((PHYS_OFFSET, PHYS_OFFSET + G))
    k = Tables(mem, 12, 48, SWAPPER_PG_DIR)  # the tables below it follow it
    for off in range(0, 2 << 20, 4096):
        k.map(PAGE_OFFSET + off, PHYS_OFFSET + off)
    for off in range(2 << 20, G, 2 << 20):
        k.map(PAGE_OFFSET + off, PHYS_OFFSET + off, 2)
    for off in range(0, 2 << 20, 4096):
        k.map(KIMAGE_VADDR + off, KERNEL_PA + off, flags=PAGE & ~PXN)
    k.map(KIMAGE_VADDR + (2 << 20), KERNEL_PA + (2 << 20), 2)
    u = Tables(mem, 12, 48, USER_PGD)
    u.map(0xAAAA_C000_0000, 0x5000_0000, flags=PAGE & ~UXN | 1 << 6)
    u.map(0xAAAA_C000_1000, 0x5000_1000)
    return mem, k, u


def test_linux_layout():
    mem, k, u = linux_guest()
    ttbr1 = SWAPPER_PG_DIR | 0x2A << 48 | 1  # ASID 42 (TCR.A1), CnP
    cpu = AArch64PageTables.from_registers(USER_PGD, ttbr1, LINUX_TCR, SCTLR_RES1 | SCTLR_M)
    kern = AArch64PageTables.kernel(SWAPPER_PG_DIR, 48, 4096)
    expected = {
        PAGE_OFFSET: PHYS_OFFSET,
        PAGE_OFFSET + 0x1F_FFFF: PHYS_OFFSET + 0x1F_FFFF,
        PAGE_OFFSET + 0x1234_5678: 0x5234_5678,
        PAGE_OFFSET + G - 1: PHYS_OFFSET + G - 1,
        PAGE_OFFSET + G: None,  # past the RAM the linear map maps
        KIMAGE_VADDR: KERNEL_PA,
        KIMAGE_VADDR + 0x1234: KERNEL_PA + 0x1234,
        KIMAGE_VADDR + 0x1F_FFFF: KERNEL_PA + 0x1F_FFFF,
        KIMAGE_VADDR + 0x20_0000: KERNEL_PA + 0x20_0000,
        KIMAGE_VADDR + 0x3F_FFFF: KERNEL_PA + 0x3F_FFFF,
        KIMAGE_VADDR + 0x40_0000: None,
        0xFFFF_7FFF_FFFF_F000: None,
        0xFFFF_FFFF_FFFF_F000: None,
    }
    for vaddr, pa in expected.items():
        assert cpu.translate(mem, vaddr) == pa, hex(vaddr)
        assert kern.translate(mem, vaddr) == pa, hex(vaddr)
    assert cpu.translate(mem, 0xAAAA_C000_1234) == 0x5000_1234
    assert cpu.translate(mem, 0x0B00_AAAA_C000_0010) == 0x5000_0010  # TBI0: a tagged pointer
    assert kern.translate(mem, 0xAAAA_C000_1234) is None  # the kernel's lower range: none
    assert cpu.translate(mem, 0x0000_AAAA_C000_2000) is None

    got = guest_mappings(mem, [Vcpu(USER_PGD, ttbr1, LINUX_TCR)], mem.guest_ranges())
    assert got == [
        Mapping(PHYS_OFFSET, PAGE_OFFSET, G),
        Mapping(KERNEL_PA, KIMAGE_VADDR, 4 << 20),  # pages and the block: one run
        Mapping(0x5000_0000, 0xAAAA_C000_0000, 2 * 4096),
    ]
    # Every kernel address in the map translates as it says, both ways.
    for m in got:
        for off in (0, m.size // 3 & ~7, m.size - 1):
            assert cpu.translate(mem, m.vaddr + off) == m.paddr + off


def test_kernel_page_tables_dedupes_and_finds_swapper_under_kpti():
    mem, k, u = linux_guest()
    ttbr1 = SWAPPER_PG_DIR | 0x2A << 48
    tramp = (SWAPPER_PG_DIR - 2 * 4096) | 0x2B << 48  # at EL0: tramp_pg_dir, odd ASID
    states = [
        Vcpu(USER_PGD, ttbr1, LINUX_TCR, index=0),
        Vcpu(0, ttbr1 | 1, LINUX_TCR, index=1),  # another ASID, CnP: the same tables
        Vcpu(0, ttbr1, LINUX_TCR, sctlr=SCTLR_RES1, index=2),  # MMU off
        Vcpu(0, ttbr1 + 4096, LINUX_TCR | EPD1, index=3),  # EPD1: no upper range
        Vcpu(USER_PGD, tramp, LINUX_TCR, index=4),
    ]
    roots = kernel_page_tables(states)
    assert [t.upper.root for t in roots] == [
        SWAPPER_PG_DIR,
        SWAPPER_PG_DIR - 2 * 4096,
        SWAPPER_PG_DIR - 4096,  # Linux before 5.13 without SW PAN: one page between
    ]
    assert all(t.lower is None for t in roots)
    assert roots[0].translate(mem, KIMAGE_VADDR) == KERNEL_PA
    assert roots[1].translate(mem, KIMAGE_VADDR) is None  # the trampoline's table (empty here)
    only_kpti = kernel_page_tables([states[4]])
    assert any(t.translate(mem, KIMAGE_VADDR) == KERNEL_PA for t in only_kpti)
    assert kernel_page_tables([]) == ()


# -- guest_mappings -------------------------------------------------------------------------------


def test_mappings_merge_runs_and_drop_what_is_not_ram():
    mem = SparseMemory((0x4000_0000, 0x4800_0000 + (1 << 20)), (0x5FF0_0000, 0x6010_0000))
    t = Tables(mem, 12, 48, 0x4800_0000)
    for i in range(4):  # four contiguous pages: one run
        t.map(0x10_0000 + i * 4096, 0x4000_0000 + i * 4096)
    t.map(0x10_4000, 0x5000_0000)  # a hole between the RAM ranges: dropped
    t.map(0x10_5000, 0x4000_5000)  # the same offset, after the hole: a run of its own
    t.map(0x1F_F000, 0x4100_0000)  # the last entry of one L3 table...
    t.map(0x20_0000, 0x4100_1000)  # ...runs on into the next one's first
    t.map(0x40_0000, 0x5FE0_0000, 2)  # a 2 MiB block: its second MiB is RAM
    t.map(1 << 30, 0x8000_0000, 1)  # a 1 GiB block outside RAM: dropped
    t.map(0x60_0000, 0x4000_0000)  # the same physical page again, elsewhere
    vcpu = Vcpu(t.root, 0, tcr(flags=EPD1))
    got = guest_mappings(mem, [vcpu], mem.guest_ranges())
    assert got == [
        Mapping(0x4000_0000, 0x10_0000, 4 * 4096),
        Mapping(0x4000_0000, 0x60_0000, 4096),
        Mapping(0x4000_5000, 0x10_5000, 4096),
        Mapping(0x4100_0000, 0x1F_F000, 2 * 4096),
        Mapping(0x5FF0_0000, 0x50_0000, 1 << 20),  # clipped to RAM
    ]


def test_mappings_of_both_ranges_every_vcpu_once():
    mem, lo, hi = two_ranges(16, 42, 48)
    hi.map(1 << 42, 0x4000_0000, 1, flags=BLOCK)  # no level-1 blocks with 64K: invalid
    hi.map(3 << 29, 0x6000_0000, 2)  # a 512 MiB block
    regs = tcr(16, 42, va_bits1=48)
    a = Vcpu(lo.root, hi.root, regs)
    b = Vcpu(0x4F00_0000, hi.root | 0x7 << 48, regs, index=1)  # another process, same kernel
    c = Vcpu(lo.root, hi.root, regs | EPD0, index=2)
    expected = [
        Mapping(0x5000_0000, 0x40_0000, 1 << 16),
        Mapping(0x6000_0000, top(48) | 0x40_0000, 1 << 16),
        Mapping(0x6000_0000, top(48) | 3 << 29, 1 << 29),
    ]
    assert guest_mappings(mem, [a], mem.guest_ranges()) == expected
    assert guest_mappings(mem, [c, a, b, a], mem.guest_ranges()) == expected
    mem.reads = 0
    guest_mappings(mem, [a, a, a, b], mem.guest_ranges())
    once = mem.reads
    mem.reads = 0
    guest_mappings(mem, [a, b], mem.guest_ranges())
    assert mem.reads == once  # a vCPU sharing every table costs no read


def test_the_same_tables_read_another_way_are_walked_again():
    # Two vCPUs on one root: 4 KiB with 40 and 42 bits of VA (a level 0 of 2 and
    # of 8 entries), and 42 bits with a 40-bit IPS, which faults the page past it.
    mem, t = ram_and_tables(12, 42)
    t.map(0x1000, 0x5000_0000)
    t.map(5 << 39, 0x5000_1000)  # level-0 index 5: only a 42-bit range has it
    t.map(0x2000, 0x1_0000_0000 << 8)  # PA bit 40
    ranges = [*mem.guest_ranges(), GuestRange(1 << 40, (1 << 40) + G, 0, "hi", "hi", 2)]
    small = Vcpu(t.root, 0, tcr(12, 40, flags=EPD1))
    narrow = Vcpu(t.root, 0, tcr(12, 42, pa_bits=40, flags=EPD1), index=1)
    wide = Vcpu(t.root, 0, tcr(12, 42, flags=EPD1), index=2)
    one = Mapping(0x5000_0000, 0x1000, 4096)
    assert guest_mappings(mem, [small], ranges) == [one, Mapping(1 << 40, 0x2000, 4096)]
    assert guest_mappings(mem, [narrow], ranges) == [one, Mapping(0x5000_1000, 5 << 39, 4096)]
    assert guest_mappings(mem, [small, narrow], ranges) == [
        one,
        Mapping(0x5000_1000, 5 << 39, 4096),
        Mapping(1 << 40, 0x2000, 4096),
    ]
    assert guest_mappings(mem, [narrow, wide], ranges) == guest_mappings(mem, [wide], ranges)
    assert guest_mappings(mem, [small, wide], ranges) == guest_mappings(mem, [wide], ranges)
    assert len(guest_mappings(mem, [wide], ranges)) == 3


def test_the_64k_table_budget_counts_in_4k():
    mem, t = ram_and_tables(16, 42)
    t.put(0, 2, t.root | TABLE)  # the root as its own level-3 table: 1 + 1 reads of 64 KiB
    vcpu = Vcpu(t.root, 0, tcr(16, 42, flags=EPD1))
    mem.reads = 0
    got = guest_mappings(mem, [vcpu], mem.guest_ranges())
    assert got == [Mapping(TABLES_AT, 0, 1 << 16)] and mem.reads == 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M, "MAX_TABLES", 31)  # two 64 KiB tables are 32 of 4 KiB
        with pytest.raises(PagingLimitError, match="more than 31 table reads"):
            guest_mappings(mem, [vcpu], mem.guest_ranges())


# -- hostile tables ------------------------------------------------------------------------------


def self_referencing(granule: int, va_bits: int) -> tuple[SparseMemory, int]:
    """A root whose every entry points at itself, as a table at every level
    (and, read at the last level, as a page)."""
    mem = SparseMemory(RAM)
    root = TABLES_AT
    mem.write(root, U64.pack(root | TABLE) * (1 << (granule - 3)))
    return mem, root


@pytest.mark.parametrize(("granule", "va_bits"), [(12, 48), (14, 48), (16, 48), (16, 42)])
def test_self_referencing_tables(monkeypatch, granule, va_bits):
    mem, root = self_referencing(granule, va_bits)
    t = AArch64PageTables.from_registers(root, root, tcr(granule, va_bits), 1)
    mem.reads = 0
    assert t.translate(mem, 0x1234) == root | 0x1234 & ((1 << granule) - 1)
    assert mem.reads == len([s for s in LEVEL_SHIFT[granule].values() if s < va_bits])
    monkeypatch.setattr(M, "MAX_TABLES", 2000)
    vcpu = Vcpu(root, root, tcr(granule, va_bits))
    start = time.monotonic()
    # Read as pages, every entry maps the root: not a run, so either bound may end it.
    with pytest.raises(PagingLimitError, match="more than (2000 table reads|262144 sep)") as info:
        guest_mappings(mem, [vcpu], mem.guest_ranges())
    assert "--paging" in info.value.hint
    assert time.monotonic() - start < 10


def fan_in(contiguous: bool) -> SparseMemory:
    """Every entry of every level points at the one table of the level below."""
    mem = SparseMemory(RAM)
    l0, l1, l2, l3 = (TABLES_AT + k * 4096 for k in range(4))
    mem.write(l0, U64.pack(l1 | TABLE) * 512)
    mem.write(l1, U64.pack(l2 | TABLE) * 512)
    mem.write(l2, U64.pack(l3 | TABLE) * 512)
    step = [(i if contiguous else (i % 2) * 7) * 4096 for i in range(512)]
    mem.write(l3, b"".join(U64.pack((0x5000_0000 + s) | PAGE) for s in step))
    return mem


def test_fan_in_tables_end_in_a_clear_error(monkeypatch):
    vcpu = Vcpu(TABLES_AT, 0, tcr(flags=EPD1))
    monkeypatch.setattr(M, "MAX_TABLES", 5000)
    with pytest.raises(PagingLimitError, match="more than 5000 table reads"):
        guest_mappings(fan_in(True), [vcpu], [GuestRange(*RAM, 0, "r", "r", 1)])
    monkeypatch.setattr(M, "MAX_MAPPINGS", 1000)
    with pytest.raises(PagingLimitError, match="more than 1000 separate ranges"):
        guest_mappings(fan_in(False), [vcpu], [GuestRange(*RAM, 0, "r", "r", 1)])


def test_one_loop_at_the_default_bounds_is_a_small_result():
    mem = SparseMemory(RAM)
    mem.put64(TABLES_AT, TABLES_AT | TABLE)  # entry 0 points back at its own table
    start = time.monotonic()
    got = guest_mappings(mem, [Vcpu(TABLES_AT, TABLES_AT, tcr())], mem.guest_ranges())
    assert got == [Mapping(TABLES_AT, 0, 4096), Mapping(TABLES_AT, top(48), 4096)]
    assert time.monotonic() - start < 2


# -- the shared walk pieces are one code ---------------------------------------------------------


def test_x86_and_aarch64_share_the_walk_pieces():
    from qemu_vmcore.arch.x86 import paging as x86

    for name in ("MAX_TABLES", "MAX_MAPPINGS", "PagingLimitError", "RamIndex", "merge",
                 "filter_mappings", "read_entries", "Mapping"):  # fmt: skip
        assert getattr(x86, name) is getattr(seam, name), name
    assert M.PagingLimitError is seam.PagingLimitError
    assert issubclass(M._Walk, seam.MappingCollector) and issubclass(
        x86._Walk, seam.MappingCollector
    )


# -- against an independent reading (hypothesis) --------------------------------------------------

HYP_TABLES = 6


def reference_translate(read64, g: int, va_bits: int, root: int, vaddr: int, upper: bool,
                        pa_bits: int = 48) -> int | None:  # fmt: skip
    """The Arm ARM's walk for 48-bit PAs without DS, written from its tables."""
    want = top(va_bits) if upper else 0
    if vaddr & top(va_bits) != want or (vaddr >> 55 & 1) != upper:
        return None
    levels = sorted((lv, s) for lv, s in LEVEL_SHIFT[g].items() if s < va_bits)
    table = root
    for n, (lv, shift) in enumerate(levels):
        bits = min(g - 3, va_bits - shift)
        desc = read64(table + 8 * ((vaddr >> shift) & ((1 << bits) - 1)))
        if desc is None or not desc & 1:
            return None
        out = desc & ((1 << 48) - 1) & ~((1 << g) - 1)
        if out >> pa_bits:
            return None
        last = n == len(levels) - 1
        if desc & 2 and not last:
            table = out
            continue
        if desc & 2 and last:
            return out | (vaddr & ((1 << g) - 1))
        if last or not (lv == 2 or (lv == 1 and g == 12)):
            return None  # the reserved level 3 encoding, or a block where none may be
        return (out & ~((1 << shift) - 1)) | (vaddr & ((1 << shift) - 1))
    raise AssertionError


def reference_mappings(read_table, g: int, va_bits: int, root: int, upper: bool, ram) -> list:
    """Every leaf of every path, naively (fine for a handful of valid entries)."""
    levels = sorted((lv, s) for lv, s in LEVEL_SHIFT[g].items() if s < va_bits)
    out = []

    def walk(table, n, vbase):
        lv, shift = levels[n]
        bits = min(g - 3, va_bits - shift)
        descs = read_table(table, 1 << bits)
        for i, desc in enumerate(descs):
            if not desc & 1:
                continue
            v = vbase | i << shift
            pa = desc & ((1 << 48) - 1) & ~((1 << g) - 1)
            last = n == len(levels) - 1
            if desc & 2 and not last:
                walk(pa, n + 1, v)
            elif (desc & 2 and last) or (not last and (lv == 2 or (lv == 1 and g == 12))):
                size = 1 << shift
                pa &= ~(size - 1)
                for start, end in ram:
                    lo, hi = max(start, pa), min(end, pa + size)
                    if lo < hi:
                        out.append((v + lo - pa, lo, hi - lo))

    walk(root, 0, top(va_bits) if upper else 0)
    return out


def hyp_desc(g: int):
    """Descriptors pointing into (and past) the tables, of every type, or any 64 bits."""
    return st.one_of(
        st.integers(0, M64),
        st.builds(
            lambda page, kind, attrs, extra: page << g | kind | attrs | extra,
            st.integers(0, HYP_TABLES + 3),
            st.sampled_from([0, 1, 2, 3, 3, 3, 1]),
            st.sampled_from([0, ATTRS, AF, TABLE & ~3]),
            st.sampled_from([0, 0, 0x7 << (g - 3), 1 << 40, 1 << 47]),
        ),
    )


def hyp_chain(g: int):
    """One entry per level along one address: ``(index, target, kind, attrs)``,
    the target a table (or page) of the tables, or past them."""
    return st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 511, 2047, 8191]),
            st.integers(0, HYP_TABLES + 2),
            st.sampled_from([3, 3, 3, 1, 1, 2, 0]),  # table/page, block, reserved, invalid
            st.sampled_from([0, ATTRS, AF | NG, 1 << 40, 0x7 << (g - 3)]),
        ),
        min_size=4,
        max_size=4,
    )


hyp_case = st.sampled_from([(12, 48), (12, 39), (14, 47), (14, 48), (16, 42), (16, 48)]).flatmap(
    lambda gv: st.tuples(
        st.just(gv),
        st.lists(
            st.tuples(st.integers(0, HYP_TABLES - 1), st.integers(0, 40), hyp_desc(gv[0])),
            max_size=12,
        ),
        hyp_chain(gv[0]),
        st.integers(0, (1 << 16) - 1),
        st.booleans(),
    )
)


def hyp_memory(g: int, writes, chain, va_bits: int, upper: bool):
    """The tables (root at 0) with ``chain`` written along one address, then
    ``writes`` anywhere; returns ``(mem, ram, that address)``."""
    ram = [(0, (HYP_TABLES + 1) << g)]
    mem = SparseMemory(*ram)
    shifts = [sh for _, sh in sorted(LEVEL_SHIFT[g].items()) if sh < va_bits]
    vaddr, table = top(va_bits) if upper else 0, 0
    for (index, target, kind, attrs), shift in zip(chain, shifts, strict=False):
        index &= (1 << min(g - 3, va_bits - shift)) - 1
        vaddr |= index << shift
        if table > HYP_TABLES:
            break
        mem.put64((table << g) + 8 * index, target << g | kind | attrs)
        table = target
    for table, index, value in writes:
        # Low indices, and the last ones, of each table (entries a 64 KiB table has).
        index = index if index < 20 else (1 << (g - 3)) - (index - 19)
        mem.put64((table << g) + 8 * index, value)
    return mem, ram, vaddr


def reader(mem: SparseMemory):
    def read64(at):
        try:
            return U64.unpack(mem.read(at, 8))[0]
        except MissingMemoryError:
            return None

    return read64


def table_reader(mem: SparseMemory):
    def read_table(at, count):
        try:
            return struct.unpack(f"<{count}Q", mem.read(at, 8 * count))
        except MissingMemoryError:
            return ()  # a table not in memory has no entries

    return read_table


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hyp_case)
def test_translate_matches_an_independent_reading(case):
    (g, va_bits), writes, chain, offset, upper = case
    mem, _, vaddr = hyp_memory(g, writes, chain, va_bits, upper)
    vaddr |= offset & ((1 << g) - 1)
    flags = EPD0 if upper else EPD1
    t = AArch64PageTables.from_registers(0, 0, tcr(g, va_bits, flags=flags), 1)
    assert t.translate(mem, vaddr) == reference_translate(reader(mem), g, va_bits, 0, vaddr, upper)
    # Whatever the bits above the range, only a canonical address translates.
    assert t.translate(mem, vaddr ^ (1 << 63)) is None
    assert t.translate(mem, vaddr ^ (1 << 55)) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hyp_case)
def test_mappings_match_an_independent_reading_and_translate(case):
    (g, va_bits), writes, chain, _, upper = case
    mem, ram, _ = hyp_memory(g, writes, chain, va_bits, upper)
    ranges = [GuestRange(s, e, 0, "r", "r", 1) for s, e in ram]
    flags = EPD0 if upper else EPD1
    vcpu = Vcpu(0, 0, tcr(g, va_bits, flags=flags))
    got = guest_mappings(mem, [vcpu], ranges)
    leaves = reference_mappings(table_reader(mem), g, va_bits, 0, upper, ram)
    assert got == seam.merge(leaves)
    # One walk reaches each virtual page once: nothing overlaps, nothing is lost.
    assert sum(m.size for m in got) == sum(size for _, _, size in leaves)
    t = AArch64PageTables.from_registers(0, 0, vcpu.tcr, 1)
    for m in got:
        for off in (0, m.size // 2, m.size - 1):
            assert t.translate(mem, m.vaddr + off) == m.paddr + off


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(
    st.binary(min_size=4096, max_size=4096),
    st.integers(0, M64),
    st.integers(0, M64),
    st.lists(st.integers(0, M64), min_size=1, max_size=8),
)
def test_hostile_registers_and_tables_never_break_the_walk(noise, regs, ttbr, vaddrs):
    mem = SparseMemory((0, 8 * 4096))
    for k in range(8):
        mem.write(k * 4096, noise[k * 512 :] + noise[: k * 512])
    t = AArch64PageTables.from_registers(ttbr & 0x7FFF, ttbr >> 17 & 0x7FFF, regs, 1)
    for v in vaddrs:
        got = t.translate(mem, v)
        assert got is None or 0 <= got < 1 << 52
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M, "MAX_TABLES", 300)
        mp.setattr(M, "MAX_MAPPINGS", 300)
        vcpu = Vcpu(ttbr & 0x7FFF, ttbr >> 17 & 0x7FFF, regs)
        try:
            got = guest_mappings(mem, [vcpu], mem.guest_ranges())
        except PagingLimitError:
            return
    assert got == seam.merge([(m.vaddr, m.paddr, m.size) for m in got])
    for m in got:
        assert 0 <= m.vaddr < 1 << 64 and m.size > 0 and m.end <= 8 * 4096
