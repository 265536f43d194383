"""The I/O ground floor: writing all of a buffer, and copying data sparsely.

:func:`pwrite_all` (and :func:`write_all` for streams) is the one place that
loops on short writes; every writer goes through it. The copies turn
all-zero blocks into holes, not written bytes, wherever we copy into a file
whose unwritten parts read as zeros (the vmcore, a decompressed core): a
zero block costs neither disk nor the write. Blocks are 4 KiB, the page and
file-system block size.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

BLOCK = 4096
_ZERO = bytes(BLOCK)
#: The copy buffer: small enough to stay in the CPU cache between being read,
#: searched for zero blocks and written (8 MiB measured up to twice as slow).
CHUNK = 1 << 20
#: Bytes per copy_file_range call: progress moves and Ctrl-C is seen promptly.
STEP = 64 << 20


def nonzero_runs(buf: bytes | bytearray, size: int) -> list[tuple[int, int]]:
    """``(a, b)`` of each run of ``buf[:size]`` that is not whole zero blocks.

    One C ``startswith`` per 4 KiB block, comparing in place: it stops at the
    first non-zero byte, so a block of data costs a few bytes' compare, and
    zero-rich data (which defeats a substring search) costs no more. A final
    partial block of zeros counts as zero.
    """
    runs = []
    start = None  # first byte of the current non-zero run
    is_zero = buf.startswith
    whole = size - size % BLOCK
    for pos in range(0, whole, BLOCK):
        if is_zero(_ZERO, pos, pos + BLOCK):
            if start is not None:
                runs.append((start, pos))
                start = None
        elif start is None:
            start = pos
    if whole < size and not is_zero(_ZERO[: size - whole], whole, size):
        start = whole if start is None else start
        runs.append((start, size))
    elif start is not None:
        runs.append((start, whole))
    return runs


def write_sparse(fd: int, offset: int, buf: bytes | bytearray, size: int) -> int:
    """Write ``buf[:size]`` at ``offset`` in ``fd``, skipping all-zero 4 KiB blocks.

    ``offset`` should be block-aligned for the skipped blocks to be real
    holes. Returns the number of bytes written.
    """
    view = memoryview(buf)
    written = 0
    for a, b in nonzero_runs(buf, size):
        written += pwrite_all(fd, view[a:b], offset + a)
    return written


def copy_sparse(
    src: int,
    src_off: int,
    dst: int,
    dst_off: int,
    size: int,
    progress: Callable[[int], None],
    buf: bytearray,
) -> None:
    """Copy ``size`` bytes from ``src`` to ``dst`` through ``buf``, sparsely.

    ``buf`` is small (1 MiB) on purpose: it is still in the CPU cache when it
    is searched for zero blocks and written out.
    """
    view = memoryview(buf)
    done = 0
    while done < size:
        got = os.preadv(src, [view[: min(len(buf), size - done)]], src_off + done)
        if got == 0:
            raise EOFError(src_off + done)
        for a, b in nonzero_runs(buf, got):
            pwrite_all(dst, view[a:b], dst_off + done + a)
        done += got
        progress(got)


def copy_in_kernel(
    src: int, src_off: int, dst: int, dst_off: int, size: int, progress: Callable[[int], None]
) -> None:
    """Copy ``size`` bytes with copy_file_range (pread/pwrite where unsupported)."""
    done = 0
    use_cfr = True
    buf = None
    while done < size:
        n = min(STEP, size - done)
        try:
            if use_cfr:
                got = os.copy_file_range(src, dst, n, src_off + done, dst_off + done)
            else:
                buf = buf or bytearray(CHUNK)
                got = os.preadv(src, [memoryview(buf)[: min(n, CHUNK)]], src_off + done)
                pwrite_all(dst, memoryview(buf)[:got], dst_off + done)
        except OSError as e:
            if use_cfr and e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                use_cfr = False
                continue
            raise
        if got == 0:
            raise EOFError(src_off + done)
        done += got
        progress(got)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset`` in ``fd``; returns its length.

    pwrite() may write less than asked (a signal, a file-size limit, some
    network file systems); the rest is written until none is left.
    """
    view = memoryview(data)
    total = len(view)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    return total


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` at ``fd``'s position (a pipe or stream), looping
    on short writes as :func:`pwrite_all` does."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
