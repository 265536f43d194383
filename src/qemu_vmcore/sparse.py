"""Writing data sparsely: all-zero blocks become holes, not written bytes.

Used wherever we copy bytes into a file whose unwritten parts read as zeros
(the vmcore, a decompressed core): a zero block costs neither disk nor the
write. Blocks are 4 KiB, the page and file-system block size.
"""

from __future__ import annotations

import os

BLOCK = 4096
_ZERO = bytes(BLOCK)


def write_sparse(fd: int, offset: int, buf: bytes | bytearray, size: int) -> int:
    """Write ``buf[:size]`` at ``offset`` in ``fd``, skipping all-zero 4 KiB blocks.

    Blocks are counted from ``buf``'s start, so ``offset`` should be
    block-aligned for the skipped blocks to be real holes. Returns the number
    of bytes written.

    The search runs in C: ``find`` looks for a block's worth of zeros (on
    non-zero data it skips ahead a block at a time), and only where it finds
    one does Python look at block boundaries. So the cost follows the number
    of zero runs, not of blocks.
    """
    view = memoryview(buf)
    written = 0
    data_start = 0  # start of the data not yet written
    search = 0
    while True:
        z = buf.find(_ZERO, search, size)
        if z < 0:
            break
        first = -(-z // BLOCK) * BLOCK  # the first whole block in the zero run
        end = first
        while end + BLOCK <= size and buf.startswith(_ZERO, end, end + BLOCK):
            end += BLOCK
        if end == first:  # zeros, but no whole aligned block of them
            search = first if first > z else z + 1
            continue
        if first > data_start:
            written += _pwrite_all(fd, view[data_start:first], offset + data_start)
        data_start = search = end
    tail_start = data_start
    if size - tail_start < BLOCK and buf.startswith(_ZERO[: size - tail_start], tail_start, size):
        return written  # a final partial block of zeros
    if size > tail_start:
        written += _pwrite_all(fd, view[tail_start:size], offset + tail_start)
    return written


def _pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    total = len(view)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    return total
