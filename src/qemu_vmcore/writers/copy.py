"""The copy engine: guest RAM from where the guest layer says it is into the output.

The guest layer (:meth:`~qemu_vmcore.guest.physmem.GuestPhysicalMemory.mapping`)
answers only *where* the bytes are, as :class:`~qemu_vmcore.guest.physmem.Span`
runs ``(output offset, source fd, source offset, size)`` with the holes left
out, as volatility3's ``DataLayerInterface.mapping()`` does. This module
moves those bytes: each span becomes a :class:`CopyJob`, run in order through
copy_file_range or, for large dumps, a zero-page scan that leaves zero pages
as holes. A short source and a full destination become our errors here,
where the output is known, not in the guest layer.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from qemu_vmcore.errors import MissingMemoryError, OutputError
from qemu_vmcore.fileio import CHUNK, copy_in_kernel, copy_sparse
from qemu_vmcore.guest.physmem import Span

#: Called with each number of guest bytes dealt with (copied or skipped).
Progress = Callable[[int], None]


@dataclass(frozen=True)
class CopyJob:
    """Copy ``size`` bytes from offset ``src`` of file ``fd`` to output offset ``dst``."""

    fd: int
    src: int
    dst: int
    size: int


def copy_spans(dst: int, spans: Iterable[Span], total: int, progress: Progress) -> None:
    """Copy every span into ``dst`` at its offset, sparsely.

    What the spans leave out (holes in the core, pieces it lacks) is not
    written: the caller sized ``dst`` beforehand, so it reads back as zeros
    and costs no disk. ``total`` is the guest bytes the spans were taken
    from; the part of it no span covers is reported to ``progress`` first.
    """
    jobs = [CopyJob(s.fd, s.offset, s.at, s.size) for s in spans]
    progress(total - sum(j.size for j in jobs))
    run_copies(dst, jobs, progress)


#: From this much data on, zero pages are looked for and left as holes.
#: Finding them costs about 0.3 s of CPU per GB more than copy_file_range:
#: below this size that would be a third of the whole run (measured 0.25 s
#: against 0.40 s on the 512 MiB rig case) for a few MB of disk; above it,
#: disk is what matters (3/10 of the 4608 MiB case's data is zero pages) and
#: the copy runs at cp --sparse=always's speed.
ZERO_SCAN_FROM = 1 << 30


def run_copies(dst: int, jobs: list[CopyJob], progress: Progress) -> None:
    """Run copy jobs in order, through one reused buffer (memory stays flat)."""
    if sum(j.size for j in jobs) < ZERO_SCAN_FROM:
        for j in jobs:
            copy_whole(j.fd, j.src, dst, j.dst, j.size, progress)
        return
    buf = bytearray(CHUNK)
    for j in jobs:
        copy_range(j.fd, j.src, dst, j.dst, j.size, progress, buf)


@contextmanager
def _copy_errors() -> Iterator[None]:
    """Map a short source and a full destination to our errors."""
    try:
        yield
    except EOFError as e:
        raise MissingMemoryError(
            f"the core file ended early at offset {e.args[0]:#x}; was it truncated?"
        ) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OutputError(f"cannot write the vmcore: {e.strerror}") from None
        raise


def copy_whole(
    src: int, src_off: int, dst: int, dst_off: int, size: int, progress: Progress
) -> None:
    """Copy ``size`` bytes in the kernel (copy_file_range), zero pages included."""
    with _copy_errors():
        copy_in_kernel(src, src_off, dst, dst_off, size, progress)


def copy_range(
    src: int,
    src_off: int,
    dst: int,
    dst_off: int,
    size: int,
    progress: Progress,
    buf: bytearray | None = None,
) -> None:
    """Copy ``size`` bytes of ``src``, leaving all-zero pages as holes.

    Guest RAM the guest zeroed (a freshly allocated page, an init_on_alloc
    kernel) is data in the core but zeros in the guest; copying it sparsely
    keeps the vmcore at the size of the guest's non-zero pages (a third
    smaller on the 4608 MiB rig case).
    """
    with _copy_errors():
        copy_sparse(src, src_off, dst, dst_off, size, progress, buf or bytearray(CHUNK))
