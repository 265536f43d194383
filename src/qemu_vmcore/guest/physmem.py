"""The guest-physical address space (gpa), stacked on the host core (hva).

Like a volatility3 layer, it translates its addresses into the layer below:
each :class:`~qemu_vmcore.qemu.memory.GuestRange` maps ``[gpa, end)`` onto
host addresses, and the host core says which of those bytes it holds.
Writers use only this object: ``ranges()``, ``pieces()``, ``read()``, and
``mapping()``, which says where the bytes of guest RAM are (the file and
offset of every run of data, holes left out) for the writers' copy engine
(:mod:`qemu_vmcore.writers.copy`) to move; this layer knows nothing of
output files. They never see drgn, gdb or QEMU.

Shared file-backed guest RAM that the core lacks is read from its backing
file, when that still exists (see :mod:`qemu_vmcore.guest.backing`).
"""

from __future__ import annotations

import bisect
import enum
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from qemu_vmcore.errors import MissingMemoryError
from qemu_vmcore.guest.backing import BackingFiles, file_spans
from qemu_vmcore.host.core import ExtentKind, FileMapping, HostCore
from qemu_vmcore.qemu.memory import GuestRange


class Span(NamedTuple):
    """``size`` bytes at ``at`` (a gpa, or an output offset) are at
    ``offset`` in the open file ``fd`` (the core, or a backing file)."""

    at: int
    fd: int
    offset: int
    size: int


class PieceKind(enum.Enum):
    """What the core holds for a piece of guest RAM."""

    DATA = "data"  # bytes in the core file (file holes read as zeros)
    # Anonymous RAM that QEMU let the kernel dump but of which the kernel
    # wrote nothing: a private anonymous mapping never written to has no
    # anon_vma, and vma_dump_size() skips it. Its bytes are zeros.
    UNTOUCHED = "never touched"
    # Shared file-backed RAM the core left out, read from its backing file.
    BACKING_FILE = "backing file"
    NOT_DUMPED = ExtentKind.NOT_DUMPED.value
    TRUNCATED = ExtentKind.TRUNCATED.value
    UNMAPPED = ExtentKind.UNMAPPED.value

    @property
    def present(self) -> bool:
        """Whether the piece's bytes are known (data, known zeros, or a backing file)."""
        return self in (PieceKind.DATA, PieceKind.UNTOUCHED, PieceKind.BACKING_FILE)


@dataclass(frozen=True)
class Piece:
    """Part of a guest range, all of one :class:`PieceKind`.

    :param gpa: first guest-physical address.
    :param size: length in bytes.
    :param file_offset: where the bytes are in the core file (DATA), or in
        the backing file (BACKING_FILE).
    :param path: the file QEMU mapped shared for this RAM, as NT_FILE names
        it (BACKING_FILE, and NOT_DUMPED pieces of shared file mappings).
    """

    gpa: int
    size: int
    kind: PieceKind
    file_offset: int | None
    path: str | None = None

    @property
    def end(self) -> int:
        """First address after the piece (exclusive)."""
        return self.gpa + self.size


@dataclass(frozen=True)
class BackingUse:
    """Guest RAM read from one backing file: ``pieces``, in gpa order."""

    path: str
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.pieces)


class GuestPhysicalMemory:
    """Guest RAM as QEMU's memory map describes it, backed by the host core.

    :param backing_files: read shared file-backed RAM the core lacks from
        its backing file (False: such RAM is missing). Close when done.
    """

    def __init__(
        self,
        ranges: list[GuestRange],
        host: HostCore,
        *,
        backing_files: bool = True,
        _backing: BackingFiles | None = None,
    ) -> None:
        self._ranges = list(ranges)
        self._host = host
        self._backing = _backing or BackingFiles(enabled=backing_files)
        #: Why a backing file (by NT_FILE path) could not be read.
        self.backing_problems: dict[str, str] = {}
        self._pieces = {r: self._translate(r) for r in self._ranges}

    def with_ranges(self, ranges: list[GuestRange]) -> GuestPhysicalMemory:
        """The same memory seen through other ranges (e.g. clipped by a filter).

        It shares this one's backing files: closing this one closes them.
        """
        return GuestPhysicalMemory(ranges, self._host, _backing=self._backing)

    def close(self) -> None:
        """Close the backing files (the host core is its owner's to close)."""
        self._backing.close()

    def ranges(self) -> list[GuestRange]:
        """The guest RAM ranges, in gpa order, as QEMU would dump them."""
        return list(self._ranges)

    def pieces(self, r: GuestRange) -> list[Piece]:
        """``r`` split by what the core holds, in gpa order, covering it exactly."""
        return self._pieces[r]

    def _translate(self, r: GuestRange) -> list[Piece]:
        out = []
        for e in self._host.extents(r.hva, r.size):
            if e.kind is ExtentKind.NOT_DUMPED:
                spans = file_spans(self._host.mappings, e.hva, e.size)
                out += [self._not_dumped(r, s.hva, s.size, s.mapping) for s in spans]
            else:
                out.append(self._piece(r, e.hva, e.size, PieceKind[e.kind.name], e.file_offset))
        return out

    def _piece(self, r: GuestRange, hva: int, size: int, kind: PieceKind, *args) -> Piece:
        return Piece(r.gpa + (hva - r.hva), size, kind, *args)

    def _not_dumped(self, r: GuestRange, hva: int, size: int, mapping: FileMapping | None) -> Piece:
        """What bytes the core left out are: zeros, a backing file's, or missing."""
        if mapping is None:
            kind = PieceKind.UNTOUCHED if r.dumpable else PieceKind.NOT_DUMPED
            return self._piece(r, hva, size, kind, None)
        if not r.shared:  # a private mapping's written pages are not in its file
            return self._piece(r, hva, size, PieceKind.NOT_DUMPED, None)
        offset = mapping.file_offset + (hva - mapping.hva)
        problem = self._backing.problem(mapping.path, offset, size)
        if problem is None:
            return self._piece(r, hva, size, PieceKind.BACKING_FILE, offset, mapping.path)
        self.backing_problems.setdefault(mapping.path, problem)
        return self._piece(r, hva, size, PieceKind.NOT_DUMPED, None, mapping.path)

    def coverage(self, r: GuestRange) -> str:
        """``yes``, ``no`` or ``partial``: does the core hold ``r``'s bytes?
        ``backing file`` when all of them are there, some from a backing file."""
        present = {p.kind.present for p in self._pieces[r]}
        if present == {True}:
            if any(p.kind is PieceKind.BACKING_FILE for p in self._pieces[r]):
                return "backing file"
            return "yes"
        return "no" if True not in present else "partial"

    def backing_file(self, r: GuestRange) -> str | None:
        """The backing file some of ``r`` is read from, if any."""
        return next((p.path for p in self._pieces[r] if p.kind is PieceKind.BACKING_FILE), None)

    def backing_uses(self) -> list[BackingUse]:
        """The guest RAM read from backing files, per file."""
        by_path: dict[str, list[Piece]] = {}
        for r in self._ranges:
            for p in self._pieces[r]:
                if p.kind is PieceKind.BACKING_FILE and p.path is not None:
                    by_path.setdefault(p.path, []).append(p)
        return [BackingUse(path, tuple(pieces)) for path, pieces in by_path.items()]

    def missing(self) -> list[Piece]:
        """Every piece of guest RAM whose bytes the core does not hold."""
        return [p for r in self._ranges for p in self._pieces[r] if not p.kind.present]

    def data_spans(self) -> Iterator[tuple[int, int, int]]:
        """``(gpa, file_offset, size)`` of every run of guest RAM held as data.

        Holes and missing pieces are left out: scanning these spans visits
        every non-zero byte of guest RAM. ``file_offset`` is in the core, or
        in a backing file: :meth:`file_spans` says which.
        """
        for gpa, _, offset, size in self.file_spans():
            yield gpa, offset, size

    def file_spans(self) -> Iterator[Span]:
        """``(gpa, fd, file_offset, size)`` of every run of guest RAM held as
        data, in the core (``fd`` is the core's) or in a backing file."""
        return self.mapping((r, r.gpa) for r in self._ranges)

    def mapping(self, placements: Iterable[tuple[GuestRange, int]]) -> Iterator[Span]:
        """Where the bytes of each ``(range, out_offset)`` are: a :class:`Span`
        ``(out_offset + offset in the range, fd, file_offset, size)`` per run
        of data, in order.

        Holes in the core, untouched RAM and pieces the core lacks are left
        out (their bytes are zeros, or missing, which the caller decided
        about beforehand), as volatility3's ``DataLayerInterface.mapping()``
        leaves out what a layer does not hold.
        """
        for r, out_offset in placements:
            for p in self._pieces[r]:
                fd = self._source_fd(p)
                if fd is not None:
                    dst = out_offset + (p.gpa - r.gpa)
                    for off, size in data_runs(fd, p.file_offset, p.size):
                        yield Span(dst + (off - p.file_offset), fd, off, size)

    def _source_fd(self, p: Piece) -> int | None:
        """The file holding ``p``'s bytes at ``p.file_offset``, if any."""
        if p.kind is PieceKind.DATA:
            return self._host.fd
        if p.kind is PieceKind.BACKING_FILE and p.path is not None:
            return self._backing.fd(p.path)
        return None

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
            fd = self._source_fd(p)
            if fd is not None:
                offset = p.file_offset + (pos - p.gpa)
                data = os.pread(fd, stop - pos, offset)
                if len(data) != stop - pos:  # the file shrank after it was opened
                    where = "the core" if fd == self._host.fd else p.path
                    raise MissingMemoryError(
                        f"{where} ended early at offset {offset + len(data):#x}, reading "
                        f"guest-physical {pos:#x}; was it truncated?",
                        gpa=pos,
                    )
                out += data
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

    # -- random access, for a vmcore served rather than written (writers/view.py) --

    @cached_property
    def _by_gpa(self) -> tuple[list[int], list[Piece]]:
        """Every piece of every range in gpa order, and their starts (for bisect)."""
        pieces = sorted((p for r in self._ranges for p in self._pieces[r]), key=lambda p: p.gpa)
        return [p.gpa for p in pieces], pieces

    def _pieces_from(self, gpa: int, end: int) -> Iterator[tuple[Piece, int, int]]:
        """``(piece, lo, hi)``: the part ``[lo, hi)`` of each piece inside ``[gpa, end)``."""
        starts, pieces = self._by_gpa
        i = max(bisect.bisect_right(starts, gpa) - 1, 0)
        while i < len(pieces) and pieces[i].gpa < end:
            p = pieces[i]
            i += 1
            lo, hi = max(gpa, p.gpa), min(end, p.end)
            if lo < hi:
                yield p, lo, hi

    def read_present(self, gpa: int, size: int) -> bytes:
        """``size`` bytes at ``gpa`` as a vmcore written from this memory holds
        them: the bytes of every run :meth:`mapping` names, zeros everywhere
        else (holes, untouched RAM, RAM the core lacks, addresses that are no
        guest RAM). Never refuses an address, unlike :meth:`read`.

        :raises MissingMemoryError: the core (or a backing file) shrank since it was opened.
        """
        out = bytearray(size)
        for p, lo, hi in self._pieces_from(gpa, gpa + size):
            fd = self._source_fd(p)
            if fd is None:
                continue
            offset = p.file_offset + (lo - p.gpa)
            data = os.pread(fd, hi - lo, offset)
            if len(data) != hi - lo:
                where = "the core" if fd == self._host.fd else p.path
                raise MissingMemoryError(
                    f"{where} ended early at offset {offset + len(data):#x}, reading "
                    f"guest-physical {lo:#x}; was it truncated?",
                    gpa=lo,
                )
            out[lo - gpa : hi - gpa] = data
        return bytes(out)

    def readers(self) -> Iterator[tuple[int, int, Callable[[int, int], bytes]]]:
        """``(gpa, size, read)`` for each piece whose bytes are known, in gpa
        order: ``read(offset, count)`` gives ``count`` bytes at ``gpa + offset``
        (zeros for untouched RAM). Pieces the core lacks have none. What a
        debugger's memory segments are made of (qemu_vmcore/program.py).
        """
        for p in self._by_gpa[1]:
            fd = self._source_fd(p)
            if fd is not None:
                yield p.gpa, p.size, self._file_reader(p, fd)
            elif p.kind is PieceKind.UNTOUCHED:
                yield p.gpa, p.size, lambda offset, count: bytes(count)

    def _file_reader(self, p: Piece, fd: int) -> Callable[[int, int], bytes]:
        base, pread = p.file_offset, os.pread

        def read(offset: int, count: int) -> bytes:
            data = pread(fd, count, base + offset)
            if len(data) != count:
                where = "the core" if fd == self._host.fd else p.path
                raise MissingMemoryError(
                    f"{where} ended early at offset {base + offset + len(data):#x}, reading "
                    f"guest-physical {p.gpa + offset:#x}; was it truncated?",
                    gpa=p.gpa + offset,
                )
            return data

        return read

    def next_data(self, gpa: int, end: int) -> tuple[int, int] | None:
        """The first run ``[start, stop)`` of data at or after ``gpa`` and before
        ``end``, as :meth:`mapping` finds runs (SEEK_DATA/SEEK_HOLE in the file
        holding the bytes), or None: what a served vmcore answers SEEK_DATA
        with, one run at a time, without walking the whole core first.
        """
        for p, lo, hi in self._pieces_from(gpa, end):
            fd = self._source_fd(p)
            if fd is None:
                continue
            src, src_end = p.file_offset + (lo - p.gpa), p.file_offset + (hi - p.gpa)
            try:
                data = os.lseek(fd, src, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.EINVAL:
                    # /proc/PID/mem knows no holes: the piece is data (host/live.py
                    # made the pages the process never touched pieces of their own).
                    return lo, hi
                if e.errno != errno.ENXIO:  # ENXIO: only a hole remains in that file
                    raise
                continue
            if data >= src_end:
                continue
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), src_end)
            return lo + (data - src), lo + (hole - src)
        return None


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
            if e.errno == errno.EINVAL and pos == offset:
                # /proc/PID/mem knows no holes (host/live.py found them already).
                return [(offset, size)]
            if e.errno != errno.ENXIO:  # ENXIO: only a hole remains
                raise
            break
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        runs.append((data, hole - data))
        pos = hole
    return runs
