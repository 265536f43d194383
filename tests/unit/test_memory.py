"""qemu.memory.join_sections (QEMU's guest_phys_blocks rules) and arch.x86.cpu.dump_arch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qemu_vmcore.arch.x86.cpu import dump_arch
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange, join_sections

MB = 1 << 20
GB = 1 << 30
RAM_MR = 0xAAAA_0000
ROM_MR = 0xBBBB_0000


def sec(gpa, size, hva, mr=RAM_MR, block="pc.ram", region="ram-below-4g"):
    return GuestRange(gpa, gpa + size, hva, block, region, mr)


def spans(ranges):
    return [(r.gpa, r.end, r.hva) for r in ranges]


def test_empty():
    assert join_sections([]) == []


def test_contiguous_in_gpa_and_hva_with_the_same_mr_are_joined():
    out = join_sections(
        [sec(0, 0xA0000, 0x7F00_0000_0000), sec(0xA0000, 0x60000, 0x7F00_000A_0000, region="x")]
    )
    assert out == [GuestRange(0, 0x100000, 0x7F00_0000_0000, "pc.ram", "ram-below-4g", RAM_MR)]


def test_three_way_join_keeps_the_first_sections_names():
    out = join_sections(
        [
            sec(0, MB, 0x1000_0000, block="a", region="r1"),
            sec(MB, MB, 0x1000_0000 + MB, block="b", region="r2"),
            sec(2 * MB, MB, 0x1000_0000 + 2 * MB, block="c", region="r3"),
        ]
    )
    assert len(out) == 1
    assert (out[0].gpa, out[0].end, out[0].size) == (0, 3 * MB, 3 * MB)
    assert (out[0].block, out[0].region) == ("a", "r1")


def test_gap_in_gpa_is_not_joined():
    out = join_sections([sec(0, MB, 0x1000_0000), sec(MB + 0x1000, MB, 0x1000_0000 + MB)])
    assert spans(out) == [(0, MB, 0x1000_0000), (MB + 0x1000, 2 * MB + 0x1000, 0x1000_0000 + MB)]


def test_gap_in_hva_is_not_joined():
    # Like pc.ram below and above the PCI hole: gpa-contiguous only by accident here,
    # but the host addresses jump.
    out = join_sections([sec(0, MB, 0x1000_0000), sec(MB, MB, 0x1000_0000 + 2 * MB)])
    assert spans(out) == [(0, MB, 0x1000_0000), (MB, 2 * MB, 0x1000_0000 + 2 * MB)]


def test_hva_going_backwards_is_not_joined():
    out = join_sections([sec(0, MB, 0x2000_0000), sec(MB, MB, 0x2000_0000 - MB)])
    assert len(out) == 2


def test_different_memory_region_is_not_joined():
    out = join_sections(
        [sec(0, 0xC0000, 0x1000_0000), sec(0xC0000, 0x40000, 0x1000_C0000, mr=ROM_MR)]
    )
    assert [(r.gpa, r.end, r.mr) for r in out] == [(0, 0xC0000, RAM_MR), (0xC0000, MB, ROM_MR)]


def test_join_resumes_after_an_unjoinable_section():
    out = join_sections(
        [
            sec(0, MB, 0x1000_0000),
            sec(MB, MB, 0x9000_0000, mr=ROM_MR),
            sec(2 * MB, MB, 0x9000_0000 + MB, mr=ROM_MR),
            sec(3 * MB, MB, 0x1000_0000 + 3 * MB),  # hva continues the *first*, but not prev
        ]
    )
    assert spans(out) == [
        (0, MB, 0x1000_0000),
        (MB, 3 * MB, 0x9000_0000),
        (3 * MB, 4 * MB, 0x1000_0000 + 3 * MB),
    ]


@pytest.mark.parametrize(
    "sections",
    [
        [sec(0, 2 * MB, 0x1000_0000), sec(MB, MB, 0x2000_0000)],  # overlap
        [sec(MB, MB, 0x1000_0000), sec(0, MB, 0x2000_0000)],  # unsorted
        [sec(0, MB, 0x1000_0000), sec(0, MB, 0x1000_0000)],  # duplicate
        [sec(0, MB, 0x1000_0000), sec(MB, MB, 0x1000_0000 + MB), sec(MB + 1, 1, 0)],
    ],
)
def test_overlapping_or_unsorted_sections_raise(sections):
    with pytest.raises(QemuStateError, match="overlap or are unsorted") as info:
        join_sections(sections)
    assert f"{sections[-1].gpa:#x}" in info.value.message


def test_guest_range_size():
    assert GuestRange(4 * GB, 6 * GB, 0, "b", "r", 0).size == 2 * GB


# -- property: the join is exact and maximal ------------------------------------------------


@st.composite
def sorted_sections(draw):
    """Sorted, non-overlapping sections that are often joinable with their predecessor."""
    out = []
    gpa, hva = draw(st.integers(0, 1 << 40)), draw(st.integers(1 << 20, 1 << 46))
    for _ in range(draw(st.integers(0, 12))):
        gpa += draw(st.sampled_from([0, 0, 0, 0x1000, 0x7FFF000]))
        size = draw(st.integers(1, 1 << 24))
        hva = draw(st.one_of(st.just(hva), st.integers(1 << 20, 1 << 46)))
        mr = draw(st.sampled_from([RAM_MR, RAM_MR, ROM_MR]))
        out.append(sec(gpa, size, hva, mr=mr, block=f"b{len(out)}"))
        gpa, hva = gpa + size, hva + size
    return out


def _union(intervals):
    merged = []
    for a, b in sorted(intervals):
        if merged and merged[-1][1] >= a:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


@given(sorted_sections())
def test_join_is_exact_and_maximal(sections):
    out = join_sections(sections)
    # Same guest-physical coverage, and the outputs are sorted and disjoint.
    assert _union([(r.gpa, r.end) for r in out]) == _union(
        [(s.gpa, s.gpa + s.size) for s in sections]
    )
    assert sum(r.size for r in out) == sum(s.size for s in sections)
    assert all(a.end <= b.gpa for a, b in zip(out, out[1:], strict=False))
    # Every section sits in exactly one output, translated the same way, same mr.
    for s in sections:
        (r,) = [r for r in out if r.gpa <= s.gpa and s.gpa + s.size <= r.end]
        assert r.hva + (s.gpa - r.gpa) == s.hva
        assert r.mr == s.mr
    # Each output starts at a section and keeps that section's names.
    starts = {s.gpa: s for s in sections}
    for r in out:
        assert (r.block, r.region) == (starts[r.gpa].block, starts[r.gpa].region)
    # No two consecutive outputs could have been joined.
    for a, b in zip(out, out[1:], strict=False):
        assert not (a.end == b.gpa and a.hva + a.size == b.hva and a.mr == b.mr), (a, b)


@given(sorted_sections(), st.randoms(use_true_random=False))
def test_any_reordering_raises(sections, rnd):
    shuffled = list(sections)
    rnd.shuffle(shuffled)
    if shuffled == sections:
        assert len(join_sections(shuffled)) <= len(sections)
    else:
        with pytest.raises(QemuStateError):
            join_sections(shuffled)


# -- dump_arch: QEMU's cpu_get_dump_info ---------------------------------------------------


def rng(gpa, end):
    return GuestRange(gpa, end, 0x7F00_0000_0000, "pc.ram", "pc.ram", RAM_MR)


BELOW_4G = [rng(0, 0xA0000), rng(0x100000, 0x8000_0000)]
ABOVE_4G = [rng(0, 0x8000_0000), rng(4 * GB, 6 * GB)]


@pytest.mark.parametrize(
    ("long_mode", "ranges", "expected"),
    [
        (True, BELOW_4G, (E.ELFCLASS64, E.EM_X86_64)),
        (True, ABOVE_4G, (E.ELFCLASS64, E.EM_X86_64)),
        (True, [], (E.ELFCLASS64, E.EM_X86_64)),
        (False, BELOW_4G, (E.ELFCLASS32, E.EM_386)),
        (False, ABOVE_4G, (E.ELFCLASS64, E.EM_386)),
        (None, BELOW_4G, (E.ELFCLASS32, E.EM_386)),  # no vCPU at all
        (None, [], (E.ELFCLASS32, E.EM_386)),
        (None, ABOVE_4G, (E.ELFCLASS64, E.EM_386)),
        # target_end > UINT_MAX decides, with target_end exclusive:
        (False, [rng(0, 0xFFFF_FFFF)], (E.ELFCLASS32, E.EM_386)),
        (False, [rng(0, 0x1_0000_0000)], (E.ELFCLASS64, E.EM_386)),
        (False, [rng(0xFFFF_F000, 0x1_0000_0000)], (E.ELFCLASS64, E.EM_386)),
    ],
)
def test_dump_arch(long_mode, ranges, expected):
    assert dump_arch(long_mode, ranges) == expected
