"""The kernel's shared zero pages, as ``/proc/PID/pagemap`` shows them.

A read of anonymous memory that was never written maps the shared zero page
(or, in a transparent-huge-page region, the huge zero page) instead of
allocating. pagemap then calls the page present. QMP's own dump, a gdb
script or a migration reads all of guest RAM, so after any of them every
page of a 16 GiB guest looks touched, and ``extract --pid`` would read
16 GiB of zeros to find the 2 GiB the guest wrote (measured: 3.5 s instead
of 1.4 s). Those entries carry the zero page's frame number: found here by
mapping one page (and one huge page) of our own and reading it, they mark
pages that read as zeros without being read.

Frame numbers are visible to root only (CAP_SYS_ADMIN; others read 0), and
a kernel may not use a huge zero page (``use_zero_page`` 0, THP off); what
cannot be found is simply not used: those pages are then read, as before.
"""

from __future__ import annotations

import functools
import mmap
import os
from dataclasses import dataclass

PAGE = 4096
HUGE = 2 << 20
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63
SWAPPED = 1 << 62


@dataclass(frozen=True)
class ZeroFrames:
    """The zero page's frame number and the huge zero page's first (or None)."""

    pfn: int
    huge_pfn: int | None = None

    def covers(self, entry: int) -> bool:
        """Whether a pagemap entry maps a zero page (the reference for :func:`zero_mask`)."""
        if entry & (PRESENT | SWAPPED) != PRESENT:
            return False
        pfn = entry & PFN_MASK
        if pfn == self.pfn:
            return True
        return self.huge_pfn is not None and self.huge_pfn <= pfn < self.huge_pfn + HUGE // PAGE


def _own_pfn(address: int) -> int:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8, address // PAGE * 8)
    finally:
        os.close(fd)
    entry = int.from_bytes(raw, "little") if len(raw) == 8 else 0
    return entry & PFN_MASK if entry & PRESENT else 0


def find_zero_frames() -> ZeroFrames | None:
    """Map a page and a huge page of our own, read them, and see which frames
    they got; None when the frame numbers are hidden (not root)."""
    try:
        small = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        big = mmap.mmap(-1, 2 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:
        return None
    try:
        small[0]  # a read fault: the zero page
        pfn = _own_pfn(_address(small))
        if not pfn:
            return None
        return ZeroFrames(pfn, _huge_zero_pfn(big, pfn))
    finally:
        small.close()
        big.close()


def _huge_zero_pfn(big: mmap.mmap, small_pfn: int) -> int | None:
    """The huge zero page's first frame, read through a 2 MiB-aligned
    MADV_HUGEPAGE page of ``big``; None where the kernel maps none."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None:
        return None
    base = _address(big)
    aligned = -(-base // HUGE) * HUGE
    try:
        big.madvise(advice, aligned - base, HUGE)
    except OSError:  # THP off ("never"), or no madvise here
        return None
    big[aligned - base]  # a read fault: the huge zero page, if the kernel uses one
    got = _own_pfn(aligned)
    # The huge zero page is 2 MiB-aligned and is not the small one.
    return got if got and got != small_pfn and got % (HUGE // PAGE) == 0 else None


def _address(m: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(m))


@functools.cache
def _plane_tables(want: int, low_any_bits: int) -> tuple[bytes, ...]:
    """Per byte k of an entry, a table: 1 where that byte fits an entry of
    frame ``want`` (its lowest ``low_any_bits`` frame bits free), else 0."""
    tables = []
    for k in range(8):
        if k < 7:
            # Bits 8k..8k+7 of the frame number (bit 55, soft-dirty, is free).
            keep = 0xFF if k < 6 else 0x7F
            free = (1 << max(0, min(8, low_any_bits - 8 * k))) - 1
            keep &= ~free
            byte = (want >> (8 * k)) & keep
            tables.append(bytes(1 if b & keep == byte else 0 for b in range(256)))
        else:  # bits 56-63: present, not swapped (a huge zero page reads as a file page)
            tables.append(bytes(1 if b & 0xC0 == 0x80 else 0 for b in range(256)))
    return tuple(tables)


def _zero_bits(raw: bytes, frames: ZeroFrames) -> int:
    """Byte i of the result (little-endian) is 1 where entry i of ``raw`` maps
    a zero page. Computed on the eight byte planes of the entries
    (``raw[k::8]``) with translate tables, the planes combined as big
    integers: no Python loop runs per page (a 16 GiB guest has 4 million)."""
    n = len(raw) // 8
    combined = 0
    for want, free in ((frames.pfn, 0), (frames.huge_pfn, 9)):
        if want is None:
            continue
        hit = -1  # all ones
        for k, table in enumerate(_plane_tables(want, free)):
            hit &= int.from_bytes(raw[k : n * 8 : 8].translate(table), "little")
        combined |= hit
    return combined


def zero_mask(raw: bytes, frames: ZeroFrames) -> bytes:
    """One byte per pagemap entry of ``raw``: 1 where it maps a zero page."""
    return _zero_bits(raw, frames).to_bytes(len(raw) // 8, "little")


def without_zero_pages(touched: bytes, raw: bytes, frames: ZeroFrames) -> bytes:
    """``touched`` (one 0/1 byte per entry of ``raw``) with the entries that
    map a zero page set to 0: those pages read as zeros and need no reading."""
    kept = int.from_bytes(touched, "little") & ~_zero_bits(raw, frames)
    return kept.to_bytes(len(touched), "little")
