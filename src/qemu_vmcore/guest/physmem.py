"""The guest-physical address space (gpa), stacked on the host core (hva).

Like a volatility3 layer, it translates its addresses into the layer below:
each :class:`~qemu_vmcore.qemu.memory.GuestRange` maps ``[gpa, end)`` onto
host addresses, and the host core says which of those bytes it holds.
Writers use only this object: ``ranges()``, ``pieces()``, ``read()`` and
``copy_to()``; they never see drgn, gdb or QEMU.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qemu_vmcore.errors import MissingMemoryError, OutputError
from qemu_vmcore.hostcore import Extent, ExtentKind, HostCore
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.sparse import write_sparse

#: Bytes read and written per step: large enough to be cheap, small enough
#: that memory stays flat, progress moves and Ctrl-C is seen promptly.
COPY_CHUNK = 8 << 20

Progress = Callable[[int], None]


class PieceKind(enum.Enum):
    """What the core holds for a piece of guest RAM."""

    DATA = "data"  # bytes in the core file (file holes read as zeros)
    # Anonymous RAM that QEMU let the kernel dump but of which the kernel
    # wrote nothing: a private anonymous mapping never written to has no
    # anon_vma, and vma_dump_size() skips it. Its bytes are zeros.
    UNTOUCHED = "never touched"
    NOT_DUMPED = ExtentKind.NOT_DUMPED.value
    TRUNCATED = ExtentKind.TRUNCATED.value
    UNMAPPED = ExtentKind.UNMAPPED.value

    @property
    def present(self) -> bool:
        """Whether the piece's bytes are known (data, or known zeros)."""
        return self in (PieceKind.DATA, PieceKind.UNTOUCHED)


@dataclass(frozen=True)
class Piece:
    """Part of a guest range, all of one :class:`PieceKind`.

    :param gpa: first guest-physical address.
    :param size: length in bytes.
    :param file_offset: where the bytes are in the core file (DATA only).
    """

    gpa: int
    size: int
    kind: PieceKind
    file_offset: int | None

    @property
    def end(self) -> int:
        """First address after the piece (exclusive)."""
        return self.gpa + self.size


class GuestPhysicalMemory:
    """Guest RAM as QEMU's memory map describes it, backed by the host core."""

    def __init__(self, ranges: list[GuestRange], host: HostCore) -> None:
        self._ranges = list(ranges)
        self._host = host
        self._pieces = {r: self._translate(r) for r in self._ranges}

    def ranges(self) -> list[GuestRange]:
        """The guest RAM ranges, in gpa order, as QEMU would dump them."""
        return list(self._ranges)

    def pieces(self, r: GuestRange) -> list[Piece]:
        """``r`` split by what the core holds, in gpa order, covering it exactly."""
        return self._pieces[r]

    def _translate(self, r: GuestRange) -> list[Piece]:
        return [
            Piece(r.gpa + (e.hva - r.hva), e.size, self._kind(r, e), e.file_offset)
            for e in self._host.extents(r.hva, r.size)
        ]

    def _kind(self, r: GuestRange, e: Extent) -> PieceKind:
        if e.kind is ExtentKind.NOT_DUMPED and r.dumpable and self._host.mapping_at(e.hva) is None:
            return PieceKind.UNTOUCHED
        return PieceKind[e.kind.name]

    def coverage(self, r: GuestRange) -> str:
        """``yes``, ``no`` or ``partial``: does the core hold ``r``'s bytes?"""
        present = {p.kind.present for p in self._pieces[r]}
        if present == {True}:
            return "yes"
        return "no" if True not in present else "partial"

    def missing(self) -> list[Piece]:
        """Every piece of guest RAM whose bytes the core does not hold."""
        return [p for r in self._ranges for p in self._pieces[r] if not p.kind.present]

    def data_spans(self) -> Iterator[tuple[int, int, int]]:
        """``(gpa, file_offset, size)`` of every run of guest RAM the core holds as data.

        Holes and missing pieces are left out: scanning these spans visits
        every non-zero byte of guest RAM in the core.
        """
        for r in self._ranges:
            for p in self._pieces[r]:
                if p.kind is PieceKind.DATA:
                    for off, size in data_runs(self._host.fd, p.file_offset, p.size):
                        yield p.gpa + (off - p.file_offset), off, size

    def read(self, gpa: int, size: int) -> bytes:
        """``size`` bytes of guest RAM at ``gpa``; zeros where the core has a
        hole or the RAM was never touched.

        :raises MissingMemoryError: part of the range is not guest RAM or its
            bytes are not in the core.
        """
        out = bytearray()
        pos, end = gpa, gpa + size
        for p in (p for r in self._ranges for p in self._pieces[r]):
            if p.end <= pos or p.gpa >= end:
                continue
            if p.gpa > pos:
                break
            stop = min(end, p.end)
            if p.kind is PieceKind.DATA:
                out += os.pread(self._host.fd, stop - pos, p.file_offset + (pos - p.gpa))
            elif p.kind is PieceKind.UNTOUCHED:
                out += bytes(stop - pos)
            else:
                raise MissingMemoryError(
                    f"guest-physical {pos:#x} is {p.kind.value} in the core", gpa=pos
                )
            pos = stop
        if pos < end or len(out) != size:
            raise MissingMemoryError(f"guest-physical {pos:#x} is not guest RAM", gpa=pos)
        return bytes(out)

    def copy_to(self, fd: int, placements: list[tuple[GuestRange, int]], progress: Progress):
        """Write each ``(range, out_offset)`` into ``fd``, sparsely and in parallel.

        Holes in the core, and pieces the core lacks, are skipped: the caller
        sized ``fd`` beforehand, so they read back as zeros and cost no disk.
        ``progress`` is called (from worker threads too) with each number of
        guest bytes dealt with.
        """
        jobs: list[CopyJob] = []
        for r, out_offset in placements:
            for p in self._pieces[r]:
                dst = out_offset + (p.gpa - r.gpa)
                if p.kind is PieceKind.DATA:
                    for off, size in data_runs(self._host.fd, p.file_offset, p.size):
                        jobs.append(CopyJob(off, dst + (off - p.file_offset), size))
        skipped = sum(r.size for r, _ in placements) - sum(j.size for j in jobs)
        progress(skipped)
        run_copies(self._host.fd, fd, jobs, progress)


@dataclass(frozen=True)
class CopyJob:
    """Copy ``size`` bytes from core offset ``src`` to output offset ``dst``."""

    src: int
    dst: int
    size: int


def data_runs(fd: int, offset: int, size: int) -> list[tuple[int, int]]:
    """``(offset, size)`` of each data run of ``fd`` within ``[offset, offset + size)``.

    SEEK_DATA/SEEK_HOLE find what the file system holds; what lies between is
    a hole, which the output keeps as a hole, so untouched guest RAM costs
    neither disk nor time.
    """
    runs = []
    pos, end = offset, offset + size
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: only a hole remains
                raise
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        runs.append((data, hole - data))
        pos = hole
    return runs


def run_copies(src: int, dst: int, jobs: list[CopyJob], progress: Progress) -> None:
    """Run copy jobs in order, reusing one buffer (memory stays flat)."""
    buf = bytearray(COPY_CHUNK)
    for j in jobs:
        copy_range(src, j.src, dst, j.dst, j.size, progress, buf)


def copy_range(
    src: int,
    src_off: int,
    dst: int,
    dst_off: int,
    size: int,
    progress: Progress,
    buf: bytearray | None = None,
) -> None:
    """Copy ``size`` bytes through ``buf``, leaving all-zero pages as holes.

    Guest RAM the guest zeroed (a freshly allocated page, an init_on_alloc
    kernel) is data in the core but zeros in the guest; writing it sparsely
    keeps the vmcore at the size of the guest's non-zero pages. Measured on
    the rig this costs about as much as copy_file_range, which cannot skip
    zeros, and saves up to a third of the disk.
    """
    buf = buf if buf is not None else bytearray(min(size, COPY_CHUNK))
    view = memoryview(buf)
    done = 0
    while done < size:
        n = min(len(buf), size - done)
        got = os.preadv(src, [view[:n]], src_off + done)
        if got == 0:
            raise MissingMemoryError(
                f"the core file ended early at offset {src_off + done:#x}; was it truncated?"
            )
        try:
            write_sparse(dst, dst_off + done, buf, got)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise OutputError(f"cannot write the vmcore: {e.strerror}") from None
            raise
        done += got
        progress(got)
