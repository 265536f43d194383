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

    ``offset`` should be block-aligned for the holes to be real holes.
    Returns the number of bytes actually written.
    """
    view = memoryview(buf)
    written = 0
    start = None  # first byte of the current run of non-zero blocks
    for pos in range(0, size, BLOCK):
        end = min(pos + BLOCK, size)
        # startswith compares in C without copying a slice out of buf.
        zero = buf.startswith(_ZERO[: end - pos], pos, end)
        if zero and start is not None:
            written += _pwrite_all(fd, view[start:pos], offset + start)
            start = None
        elif not zero and start is None:
            start = pos
    if start is not None:
        written += _pwrite_all(fd, view[start:size], offset + start)
    return written


def _pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    total = len(view)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    return total
