"""arch.x86.paging translate(): page-table walks over crafted (and hostile) guest tables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.guestsynth import (
    PAGE,
    CountingMemory,
    guest_ram,
    pt_vaddrs,
    pt_writes,
    put64,
    random_ram,
    reference_walk,
    va,
)

from qemu_vmcore.arch.x86.paging import translate
from qemu_vmcore.errors import MissingMemoryError

P, RW, US, ACCESSED, DIRTY, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
PAT_LARGE = 1 << 12  # the PAT bit of a 2 MiB / 1 GiB entry: not an address bit
NX = 1 << 63
PKEY = 0xA << 59  # protection key bits 62:59
FLAGS = P | RW | US | ACCESSED | DIRTY

RAM_PAGES = 16
PML5, PML4, PDPT, PD, PT = 0x5000, 0x1000, 0x2000, 0x3000, 0x4000
PAGE_4K = 0x7000
PAGE_2M = 0x4060_0000
PAGE_1G = 0x1_C000_0000
OUTSIDE = 0x8000_0000  # a table pointer beyond the 64 KiB of RAM


def entry(ram: bytearray, table: int, index: int, value: int) -> None:
    put64(ram, table + 8 * index, value)


def tables() -> bytearray:
    ram = bytearray(RAM_PAGES * PAGE)
    entry(ram, PML5, 7, PML4 | FLAGS)
    entry(ram, PML5, 511, PML5 | FLAGS)  # self-reference
    entry(ram, PML4, 1, PDPT | FLAGS | NX)
    entry(ram, PML4, 2, OUTSIDE | FLAGS)
    entry(ram, PML4, 3, PDPT | RW)  # not present
    entry(ram, PML4, 511, PML4 | FLAGS)  # the recursive slot
    entry(ram, PDPT, 2, PD | FLAGS)
    entry(ram, PDPT, 6, PAGE_1G | FLAGS | PS | PAT_LARGE | NX)
    entry(ram, PDPT, 10, OUTSIDE | FLAGS)
    entry(ram, PD, 3, PT | FLAGS)
    entry(ram, PD, 5, PAGE_2M | FLAGS | PS | PAT_LARGE | PKEY)
    entry(ram, PD, 6, PD | FLAGS)  # points back at its own table (a loop)
    entry(ram, PT, 4, PAGE_4K | FLAGS | NX | PKEY)
    entry(ram, PT, 7, PAGE_4K | FLAGS | PS)  # bit 7 of a PTE is PAT, not a large page
    entry(ram, PT, 8, PAGE_4K | RW)  # not present
    entry(ram, PT, 9, (1 << 52) - PAGE | FLAGS)  # the highest 4 KiB frame
    return ram


@pytest.fixture(scope="module")
def mem():
    with guest_ram(tables()) as (m, _):
        yield m


@pytest.mark.parametrize(
    "vaddr, expected",
    [
        (va(1, 2, 3, 4, 0xABC), PAGE_4K | 0xABC),
        (va(1, 2, 3, 4), PAGE_4K),
        (va(1, 2, 3, 7, 0x10), PAGE_4K | 0x10),
        (va(1, 2, 5, 0x1FF, 0xFFF), PAGE_2M + 0x1F_FFFF),
        (va(1, 2, 5, 0x12, 0x345), PAGE_2M + 0x12345),
        (va(1, 6, 0, 0), PAGE_1G),
        (va(1, 6, 0x1AB, 0x1CD, 0xEF1), PAGE_1G + (0x1AB << 21 | 0x1CD << 12 | 0xEF1)),
        (va(1, 2, 3, 9, 0x7), (1 << 52) - PAGE + 7),
    ],
)
def test_maps_4k_2m_and_1g_pages(mem, vaddr, expected):
    assert translate(mem, PML4, vaddr) == expected


def test_flag_bits_of_cr3_and_entries_are_not_address_bits(mem):
    # CR3: PCID in bits 11:0 and the no-flush bit 63.
    assert translate(mem, PML4 | 0x123 | 1 << 63, va(1, 2, 3, 4, 5)) == PAGE_4K | 5
    # The upper half (sign-extension bits 63:48) is ignored by a 4-level walk.
    assert translate(mem, PML4, 0xFFFF_0000_0000_0000 | va(1, 2, 3, 4, 5)) == PAGE_4K | 5


@pytest.mark.parametrize(
    "vaddr",
    [
        va(0, 0, 0, 0),  # PML4 entry empty
        va(3, 2, 3, 4),  # PML4 entry not present (RW only)
        va(1, 0, 0, 0),  # PDPT entry empty
        va(1, 2, 0, 0),  # PD entry empty
        va(1, 2, 3, 0),  # PTE empty
        va(1, 2, 3, 8),  # PTE not present (RW only)
    ],
)
def test_non_present_entries_are_unmapped(mem, vaddr):
    assert translate(mem, PML4, vaddr) is None


@pytest.mark.parametrize(
    "root, vaddr",
    [
        (PML4, va(2, 0, 0, 0)),  # PML4 entry points outside RAM
        (PML4, va(1, 10, 0, 0)),  # PDPT entry points outside RAM
        (OUTSIDE, va(1, 2, 3, 4)),  # CR3 outside RAM
        (1 << 51, va(1, 2, 3, 4)),  # CR3 at the top of the address space
        (RAM_PAGES * PAGE, 0),  # CR3 just past the end of RAM
    ],
)
def test_tables_outside_ram_are_unmapped(mem, root, vaddr):
    assert translate(mem, root, vaddr) is None


def test_la57_walks_five_levels(mem):
    counting = CountingMemory(mem)
    assert translate(counting, PML5, va(1, 2, 3, 4, 0xABC, i5=7), la57=True) == PAGE_4K | 0xABC
    assert counting.reads == 5
    assert translate(mem, PML5, va(1, 2, 5, 0, 0x42, i5=7), la57=True) == PAGE_2M + 0x42
    assert translate(mem, PML5, va(1, 6, 0, 0, 0, i5=7), la57=True) == PAGE_1G
    assert translate(mem, PML5, va(1, 2, 3, 4, i5=6), la57=True) is None  # PML5 entry empty
    # The same address walked with 4 levels ignores bits 56:48.
    assert translate(mem, PML4, va(1, 2, 3, 4, 0xABC, i5=7)) == PAGE_4K | 0xABC


def test_self_referencing_tables_terminate(mem):
    # The recursive slot: all indices 511 reach the PML4 itself, as a page.
    counting = CountingMemory(mem)
    assert translate(counting, PML4, va(511, 511, 511, 511, 0x18)) == PML4 | 0x18
    assert counting.reads == 4
    counting = CountingMemory(mem)
    assert translate(counting, PML5, va(511, 511, 511, 511, 8, i5=511), la57=True) == PML5 | 8
    assert counting.reads == 5
    # A PD entry pointing back at the PD: the "PT" is the PD, its entry 3 the PT.
    assert translate(mem, PML4, va(1, 2, 6, 3, 0x20)) == PT | 0x20
    # ... and an entry there that is a large-page entry is just a frame at level 1.
    assert translate(mem, PML4, va(1, 2, 6, 5, 0x20)) == PAGE_2M | PAT_LARGE | 0x20


def test_reads_are_the_only_access_and_missing_memory_is_caught(mem):
    class Missing:
        reads = 0

        def read(self, gpa, size):
            self.reads += 1
            raise MissingMemoryError("not dumped", gpa=gpa)

    missing = Missing()
    assert translate(missing, PML4, va(1, 2, 3, 4)) is None
    assert missing.reads == 1


# -- properties (hypothesis) -----------------------------------------------------------

HYP_PAGES = 8


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    pt_writes(HYP_PAGES),
    st.one_of(st.integers(0, HYP_PAGES + 1).map(lambda p: p * PAGE), st.integers(0, (1 << 64) - 1)),
    st.lists(pt_vaddrs, min_size=1, max_size=8),
    st.booleans(),
)
def test_random_tables_never_raise(seed, table_writes, root, addresses, la57):
    ram = random_ram(seed, HYP_PAGES)
    for page, index, value in table_writes:
        entry(ram, page * PAGE, index, value)
    with guest_ram(ram) as (mem, _):
        for vaddr in addresses:
            counting = CountingMemory(mem)
            pa = translate(counting, root, vaddr, la57=la57)
            assert counting.reads <= (5 if la57 else 4)
            assert pa is None or (isinstance(pa, int) and 0 <= pa < 1 << 52)
            if pa is not None:
                assert pa & 0xFFF == vaddr & 0xFFF
            assert pa == reference_walk(bytes(ram), root, vaddr, 5 if la57 else 4)
