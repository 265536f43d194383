"""host.zeropage: which pagemap entries map the kernel's zero pages."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qemu_vmcore.host import zeropage
from qemu_vmcore.host.zeropage import PRESENT, SWAPPED, ZeroFrames, zero_mask

Z, H = 0x3928, 0x1FE400  # a zero page's frame, a huge zero page's first (512-aligned)
FRAMES = ZeroFrames(Z, H)


def entry(pfn: int, flags: int = PRESENT) -> int:
    return flags | pfn


def raw(entries: list[int]) -> bytes:
    return b"".join(e.to_bytes(8, "little") for e in entries)


def test_the_zero_pages_and_nothing_else():
    soft_dirty, file_page, exclusive = 1 << 55, 1 << 61, 1 << 56
    entries = [
        entry(Z),
        entry(Z, PRESENT | soft_dirty),
        entry(H),
        entry(H + 511, PRESENT | file_page | exclusive),  # how a huge zero page reads
        entry(H + 512),  # the next frame: a real page
        entry(H - 1),
        entry(Z + 1),
        0,  # never touched
        entry(Z, SWAPPED),  # a swap entry's offset, not a frame
        entry(Z | 1 << 40),
    ]
    assert list(zero_mask(raw(entries), FRAMES)) == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert list(zero_mask(raw(entries), ZeroFrames(Z))) == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert zero_mask(b"", FRAMES) == b""


@given(
    st.lists(
        st.one_of(
            st.integers(0, (1 << 64) - 1),
            st.builds(entry, st.sampled_from([Z, H, H + 7, H + 511, H + 512, Z ^ 1])),
            st.builds(lambda p, f: f | p, st.sampled_from([Z, H + 3]),
                      st.integers(0, 0x1FF).map(lambda b: b << 55)),
        ),
        max_size=300,
    )
)  # fmt: skip
def test_same_as_one_entry_at_a_time(entries):
    assert list(zero_mask(raw(entries), FRAMES)) == [int(FRAMES.covers(e)) for e in entries]
    touched = bytes(1 if e & (PRESENT | SWAPPED) else 0 for e in entries)
    kept = zeropage.without_zero_pages(touched, raw(entries), FRAMES)
    assert list(kept) == [t and not FRAMES.covers(e) for t, e in zip(touched, entries, strict=True)]


@pytest.mark.skipif(os.geteuid() != 0, reason="frame numbers in pagemap are root's")
def test_found_on_this_host():
    frames = zeropage.find_zero_frames()
    assert frames is not None and frames.pfn > 0
    assert frames.huge_pfn is None or frames.huge_pfn % 512 == 0
