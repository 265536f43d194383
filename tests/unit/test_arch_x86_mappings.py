"""arch.x86.paging guest_mappings(): the paging walk over crafted (and hostile) tables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.guestsynth import PAGE, U64, guest_ram, leaf_entries, put32, put64
from support.guestsynth import vcpu_state as vcpu

from qemu_vmcore.arch.x86 import paging as M
from qemu_vmcore.arch.x86.paging import Mapping, PagingLimitError
from qemu_vmcore.qemu.memory import GuestRange

P, RW, US, PS = 1, 2, 4, 1 << 7
NX = 1 << 63
PKEY = 0xA << 59
AVAIL = 1 << 52  # software-available bit: not an address bit
PAT_LARGE = 1 << 12
F = P | RW | US
CR0_PE_PG = 1 | 1 << 31
CR4_PSE, CR4_PAE, CR4_LA57 = 1 << 4, 1 << 5, 1 << 12
KERNEL = 0xFFFF_0000_0000_0000
G = 1 << 30

RAM_PAGES = 32
ROOT, PDPT, PD, PT, PT2 = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000
PML5 = 0x6000
# "Guest RAM" for the is-it-I/O check: the tables' 128 KiB, then 1 MiB-4 GiB.
RAM = [
    GuestRange(0, RAM_PAGES * PAGE, 0, "pc.ram", "ram", 1),
    GuestRange(1 << 20, 4 * G, 0, "pc.ram", "ram", 1),
]
HOLE = 0x80000  # not RAM: between the two


def e64(ram, table, index, value):
    put64(ram, table + 8 * index, value)


def walk(ram, *vcpus, ranges=RAM):
    with guest_ram(ram) as (mem, _):
        return M.guest_mappings(mem, list(vcpus), ranges)


def ia32e_tables() -> bytearray:
    ram = bytearray(RAM_PAGES * PAGE)
    e64(ram, ROOT, 0, PDPT | F)  # user half
    e64(ram, ROOT, 300, PDPT | F | NX)  # kernel half: the same PDPT
    e64(ram, PDPT, 1, 2 * G | F | PS | PAT_LARGE)  # 1 GiB page
    e64(ram, PDPT, 2, PD | F)
    e64(ram, PD, 0, 0xA0_0000 | F | PS | PKEY)  # 2 MiB page
    e64(ram, PD, 1, PT | F)
    e64(ram, PT, 0, 0x40_0000 | F | NX)  # three 4 KiB pages, contiguous
    e64(ram, PT, 1, 0x40_1000 | F | AVAIL)
    e64(ram, PT, 2, 0x40_2000 | F)
    e64(ram, PT, 3, 0x90_0000 | RW)  # not present
    e64(ram, PT, 4, HOLE | F)  # not RAM: left out, as QEMU leaves out I/O
    e64(ram, PT, 5, 0x50_0000 | F)
    e64(ram, PT, 511, 0x60_0000 | F)  # runs on into PT2's first entry
    e64(ram, PD, 2, PT2 | F)
    e64(ram, PT2, 0, 0x60_1000 | F)
    return ram


def va(i4, i3, i2=0, i1=0, sign=False):
    return (KERNEL if sign else 0) | i4 << 39 | i3 << 30 | i2 << 21 | i1 << 12


def expected_ia32e(i4, sign):
    return [
        Mapping(0xA0_0000, va(i4, 2, 0, 0, sign), 2 << 20),
        Mapping(0x40_0000, va(i4, 2, 1, 0, sign), 3 * PAGE),
        Mapping(0x50_0000, va(i4, 2, 1, 5, sign), PAGE),
        Mapping(0x60_0000, va(i4, 2, 1, 511, sign), 2 * PAGE),
        Mapping(2 * G, va(i4, 1, 0, 0, sign), G),
    ]


def test_four_levels_4k_2m_1g_and_canonical_addresses():
    got = walk(ia32e_tables(), vcpu(ROOT))
    assert got == sorted(expected_ia32e(0, False) + expected_ia32e(300, True))


def test_five_levels():
    ram = ia32e_tables()
    e64(ram, PML5, 1, ROOT | F)
    e64(ram, PML5, 300, ROOT | F)
    got = walk(ram, vcpu(PML5, cr4=CR4_PAE | CR4_LA57))
    sign57 = (1 << 64) - (1 << 57)  # bits 63:57 copy bit 56
    expected = []
    for i5, top in ((1, 0), (300, sign57)):
        for i4 in (0, 300):
            for m in expected_ia32e(i4, False):
                expected.append(Mapping(m.paddr, top | i5 << 48 | m.vaddr, m.size))
    assert got == sorted(expected)


def test_cr3_flag_bits_are_not_address_bits():
    assert walk(ia32e_tables(), vcpu(ROOT | 0x123 | 1 << 63)) == walk(ia32e_tables(), vcpu(ROOT))


def test_pae():
    ram = bytearray(RAM_PAGES * PAGE)
    pdpt = 0x7020  # 32-byte aligned, not page aligned
    put64(ram, pdpt + 8 * 1, PD | P)
    put64(ram, pdpt + 8 * 3, PD | P)
    e64(ram, PD, 0, 0x20_0000 | F | PS)
    e64(ram, PD, 1, PT | F)
    e64(ram, PT, 7, 0x40_0000 | F | NX)
    got = walk(ram, vcpu(pdpt, cr4=CR4_PAE, long_mode=False))
    assert got == [
        Mapping(0x20_0000, 1 << 30, 2 << 20),
        Mapping(0x20_0000, 3 << 30, 2 << 20),
        Mapping(0x40_0000, 1 << 30 | 1 << 21 | 7 << 12, PAGE),
        Mapping(0x40_0000, 3 << 30 | 1 << 21 | 7 << 12, PAGE),
    ]


@pytest.mark.parametrize("pse", [True, False])
def test_32bit_paging(pse):
    ram = bytearray(RAM_PAGES * PAGE)
    put32(ram, ROOT + 4 * 1, 0x0040_0000 | F | PS)  # a 4 MiB page with CR4.PSE
    put32(ram, ROOT + 4 * 2, 0x0040_0000 | F | PS | 0x2000)  # PSE-36: bit 13 is address bit 32
    put32(ram, ROOT + 4 * 3, PT | F)
    put32(ram, PT + 4 * 0, 0x10_0000 | F)
    put32(ram, PT + 4 * 1, 0x10_1000 | F)
    put32(ram, PT + 4 * 1023, 0x20_0000 | F)
    ranges = [*RAM, GuestRange(4 * G, 5 * G, 0, "hi", "hi", 2)]
    got = walk(ram, vcpu(ROOT, cr4=CR4_PSE if pse else 0, long_mode=False), ranges=ranges)
    small = [Mapping(0x10_0000, 3 << 22, 2 * PAGE), Mapping(0x20_0000, 3 << 22 | 1023 << 12, PAGE)]
    large = [Mapping(0x40_0000, 1 << 22, 4 << 20), Mapping(1 << 32 | 0x40_0000, 2 << 22, 4 << 20)]
    # Without CR4.PSE the PS bit means nothing: entries 1 and 2 point at page
    # tables, here outside the guest's RAM, so empty.
    assert got == sorted(small + large if pse else small)


def test_no_vcpu_with_paging_maps_ram_at_its_physical_address():
    ram = ia32e_tables()
    assert walk(ram, vcpu(ROOT, cr0=1)) == [Mapping(r.gpa, r.gpa, r.size) for r in RAM]
    assert walk(ram) == [Mapping(r.gpa, r.gpa, r.size) for r in RAM]


def test_vcpus_without_paging_are_skipped_and_shared_tables_counted_once():
    ram = ia32e_tables()
    one = walk(ram, vcpu(ROOT))
    assert walk(ram, vcpu(0, cr0=1), vcpu(ROOT, index=1), vcpu(ROOT, index=2)) == one


def test_self_referencing_tables_terminate():
    ram = bytearray(RAM_PAGES * PAGE)
    e64(ram, ROOT, 511, ROOT | F)  # the recursive slot
    e64(ram, ROOT, 0, PDPT | F)
    e64(ram, PDPT, 0, PD | F)
    e64(ram, PD, 0, PD | F)  # a PD pointing at itself
    got = walk(ram, vcpu(ROOT))
    # Each table, read as a page through the recursive slot, is a mapping of its own.
    assert Mapping(ROOT, KERNEL | 511 << 39 | 511 << 30 | 511 << 21 | 511 << 12, PAGE) in got
    assert Mapping(PD, 0, PAGE) in got


def hostile(contiguous: bool) -> bytearray:
    ram = bytearray(RAM_PAGES * PAGE)
    for i in range(512):  # every entry of every level points at the next table
        e64(ram, ROOT, i, PDPT | F)
        e64(ram, PDPT, i, PD | F)
        e64(ram, PD, i, PT | F)
        step = i if contiguous else (i % 2) * 7  # 2 MiB runs, or never contiguous
        e64(ram, PT, i, (0x10_0000 + step * PAGE) | F)
    return ram


def test_hostile_tables_end_in_a_clear_error(monkeypatch):
    monkeypatch.setattr(M, "MAX_TABLES", 5000)
    with pytest.raises(PagingLimitError, match="more than 5000 table reads"):
        walk(hostile(contiguous=True), vcpu(ROOT))
    monkeypatch.setattr(M, "MAX_MAPPINGS", 1000)
    with pytest.raises(PagingLimitError, match="more than 1000 separate ranges") as info:
        walk(hostile(contiguous=False), vcpu(ROOT))
    assert "--paging" in info.value.hint


def test_merge_is_canonical():
    pairs = [
        (0x1000, 0x5000, 0x1000),
        (0x2000, 0x6000, 0x1000),  # continues the first
        (0x1000, 0x5000, 0x2000),  # overlaps both
        (0x9000, 0x5000, 0x1000),  # the same physical page elsewhere
        (0x3000, 0x7000, 0x1000),
    ]
    assert M.merge(pairs) == [Mapping(0x5000, 0x1000, 0x3000), Mapping(0x5000, 0x9000, 0x1000)]
    assert M.merge(reversed(pairs)) == M.merge(pairs)


def test_filter_clips_by_physical_address():
    maps = [Mapping(0x1000, 0xA000, 0x4000), Mapping(0x8000, 0xB000, 0x1000)]
    assert M.filter_mappings(maps, 0x2000, 0x3000) == [Mapping(0x2000, 0xB000, 0x1000)]
    assert M.filter_mappings(maps, 0, 1 << 40) == maps
    assert M.filter_mappings(maps, 0x5000, 0x8000) == []


# -- against an independent walk (hypothesis) ------------------------------------------

HYP_PAGES = 6
ADDR = 0x000F_FFFF_FFFF_F000


def reference(ram: bytes, root: int, ranges) -> set[tuple[int, int, int]]:
    """Every leaf of a 4-level walk, naively (fine for a handful of entries)."""

    def is_ram(a):
        return any(r.gpa <= a < r.end for r in ranges)

    out = set()

    def table(at, level, vbase, depth):
        for i in range(512):
            if at + 8 * i + 8 > len(ram):
                return
            (e,) = U64.unpack_from(ram, at + 8 * i)
            if not e & P:
                continue
            shift = 12 + 9 * (level - 1)
            v = vbase | i << shift
            if level == 1 or (level in (2, 3) and e & PS):
                size = 1 << shift
                pa = e & ADDR & ~(size - 1)
                if is_ram(pa):
                    out.add((v | KERNEL if v >> 47 & 1 else v, pa, size))
            else:
                table(e & ADDR, level - 1, v, depth + 1)

    table(root & ADDR, 4, 0, 0)
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, HYP_PAGES - 1), st.integers(0, 511), leaf_entries(HYP_PAGES)),
        max_size=14,
    )
)
def test_walk_matches_an_independent_reading(writes):
    ram = bytearray(HYP_PAGES * PAGE)
    for page, index, value in writes:
        put64(ram, page * PAGE + 8 * index, value)
    ranges = [GuestRange(0, (HYP_PAGES + 20) * PAGE, 0, "r", "r", 1)]
    leaves = reference(bytes(ram), 0, ranges)
    got = walk(ram, vcpu(0), ranges=ranges)
    assert got == M.merge(leaves)
    # One walk reaches each virtual page once: nothing overlaps, nothing is lost.
    assert sum(m.size for m in got) == sum(size for _, _, size in leaves)
