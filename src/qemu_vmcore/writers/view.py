"""The vmcore that :func:`qemu_vmcore.extract.prepare` decided, served instead of written.

A :class:`VmcoreView` answers what a reader of the file asks: its ``size``,
``read(offset, size)`` and where its data is (``data_ranges()``, for
SEEK_DATA/SEEK_HOLE and the block count). It is built from the very layout
objects :func:`qemu_vmcore.extract.write` writes (the ELF image; the kdump
layout and compression method), so each byte is the byte ``extract`` would
write, with nothing on disk:

- **ELF** (:class:`ElfView`): the headers and notes (``ElfImage.head``) from
  memory; guest RAM read from the core on demand
  (:meth:`~qemu_vmcore.guest.physmem.GuestPhysicalMemory.read_present`: the
  bytes of each run the writer copies, zeros elsewhere, as the written file
  holds them); its data runs are the core's, found with SEEK_DATA one run
  at a time. Opening costs nothing in the guest's size.
- **kdump** (:class:`KdumpView`, the raw file): a page's offset depends on the
  compressed size of every page before it, so opening one makes one pass
  over guest RAM first (:func:`scan_kdump`), compressing it as the writer does
  (:func:`qemu_vmcore.writers.kdump.compress_pages`) and keeping only each
  page's stored size (2 bytes a page: 8 MiB for a 16 GiB guest). A read
  compresses its pages again (the compressors are deterministic: same
  library, same parameters, same bytes) and checks each against the size
  the pass recorded; headers, bitmaps and page descriptors are computed
  from the layout. The flattened format is a stream, not a file to seek in,
  and is not served.

Everything here is safe to call from several threads.
"""

from __future__ import annotations

import bisect
import errno
import os
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.layouts import kdump as K
from qemu_vmcore.writers.compress import Method, compressor
from qemu_vmcore.writers.copy import Progress
from qemu_vmcore.writers.elf import ElfImage
from qemu_vmcore.writers.kdump import (
    KdumpLayout,
    _Compressed,
    _set_bits,
    compress_pages,
)

PAGE = K.PAGE_SIZE
#: Compressed kdump pages kept for reads that come back (at most 4 MiB).
PAGE_CACHE = 1024


class ViewError(VmcoreError):
    """A served vmcore's bytes can no longer be produced (the core changed under it)."""


@dataclass(frozen=True)
class _Section:
    """``[start, end)`` of the file: ``read(lo, hi)`` gives its bytes there,
    ``data(lo, hi)`` the ``(start, end)`` runs of data in ``[lo, hi)``."""

    start: int
    end: int
    read: Callable[[int, int], bytes]
    data: Callable[[int, int], Iterator[tuple[int, int]]]


def _all_data(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    yield lo, hi


def _const(start: int, blob: bytes) -> _Section:
    return _Section(start, start + len(blob), lambda lo, hi: blob[lo - start : hi - start],
                    _all_data)  # fmt: skip


class VmcoreView:
    """A read-only vmcore file: ``size`` bytes, of which ``data_ranges()`` hold data.

    Bytes outside every section read as zeros (the holes ``extract`` leaves).
    """

    def __init__(self, size: int, sections: Sequence[_Section], format: str) -> None:
        self.size = size
        self.format = format
        self._sections = sorted((s for s in sections if s.start < s.end), key=lambda s: s.start)
        self._starts = [s.start for s in self._sections]
        self._allocated: int | None = None

    def _from(self, offset: int) -> int:
        """Index of the first section ending after ``offset``."""
        i = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while i < len(self._sections) and self._sections[i].end <= offset:
            i += 1
        return i

    def read(self, offset: int, size: int) -> bytes:
        """The file's bytes ``[offset, offset + size)``, short only at its end."""
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        for s in self._sections[self._from(offset) :]:
            if s.start >= end:
                break
            lo, hi = max(offset, s.start), min(end, s.end)
            if lo < hi:
                out[lo - offset : hi - offset] = s.read(lo, hi)
        return bytes(out)

    def data_ranges(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """``(offset, size)`` of each run of data at or after ``start``, in order,
        adjacent runs merged; the rest of the file is holes."""
        run: list[int] | None = None
        for s in self._sections[self._from(start) :]:
            for lo, hi in s.data(max(start, s.start), s.end):
                if lo >= hi:
                    continue
                if run is not None and lo == run[1]:
                    run[1] = hi
                    continue
                if run is not None:
                    yield run[0], run[1] - run[0]
                run = [lo, hi]
        if run is not None:
            yield run[0], run[1] - run[0]

    def seek_data(self, offset: int) -> int:
        """``lseek(SEEK_DATA)``: the first data at or after ``offset``.

        :raises OSError: ENXIO when only holes remain.
        """
        if 0 <= offset < self.size:
            for lo, _ in self.data_ranges(offset):
                return max(lo, offset)
        raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))

    def seek_hole(self, offset: int) -> int:
        """``lseek(SEEK_HOLE)``: the first hole at or after ``offset`` (the end
        of the file counts as one).

        :raises OSError: ENXIO past the end.
        """
        if not 0 <= offset < self.size:
            raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))
        for lo, n in self.data_ranges(offset):
            return offset if lo > offset else lo + n
        return offset  # in the holes that run to the end

    def allocated(self) -> int:
        """Bytes of data in the file (the block count's source); one walk, then cached."""
        if self._allocated is None:
            self._allocated = sum(n for _, n in self.data_ranges())
        return self._allocated


# -- ELF -------------------------------------------------------------------------


class ElfView(VmcoreView):
    """The ELF vmcore of ``image`` over ``memory``, as :func:`~qemu_vmcore.writers.elf.write_elf`
    writes it: the head at 0, each range's RAM at its placement, zeros elsewhere."""

    def __init__(self, image: ElfImage, memory: GuestPhysicalMemory) -> None:
        sections = [_const(0, image.head)]
        for p in image.placements:
            sections.append(_ram_section(memory, p.file_offset, p.range.gpa, p.range.size))
        super().__init__(image.file_size, sections, "elf")


def _ram_section(memory: GuestPhysicalMemory, at: int, gpa: int, size: int) -> _Section:
    delta = gpa - at  # file offset -> guest-physical address

    def read(lo: int, hi: int) -> bytes:
        return memory.read_present(lo + delta, hi - lo)

    def data(lo: int, hi: int) -> Iterator[tuple[int, int]]:
        pos, end = lo + delta, hi + delta
        while pos < end:
            run = memory.next_data(pos, end)
            if run is None:
                return
            yield run[0] - delta, run[1] - delta
            pos = run[1]

    return _Section(at, at + size, read, data)


# -- kdump -----------------------------------------------------------------------


class _PageSizes:
    """What the one pass over guest RAM keeps: each page's stored size.

    Pages are numbered as their descriptors are (the layout's runs, in
    order). Per chunk of the writer's pipeline: its first page, the file
    offset its data starts at, and where its pages' sizes start in
    ``sizes`` (-1: a chunk of zero pages, which holds no sizes). A size is
    0 for a zero page (the shared descriptor), PAGE for a page stored as is,
    else the compressed size.
    """

    def __init__(self, first_data: int) -> None:
        self.chunk_first = array("Q")
        self.chunk_data = array("Q")
        self.chunk_sizes = array("q")
        self.sizes = array("H")
        self.pages = 0
        self.end = first_data  # the next page's data offset, then the file size
        # Data chunks only, for finding the page at a data offset.
        self.data_chunk_offset = array("Q")
        self.data_chunk = array("Q")

    def add(self, result: _Compressed) -> None:
        index = len(self.chunk_first)
        self.chunk_first.append(self.pages)
        self.chunk_data.append(self.end)
        if result.entries is None:
            self.chunk_sizes.append(-1)
        else:
            self.chunk_sizes.append(len(self.sizes))
            self.data_chunk_offset.append(self.end)
            self.data_chunk.append(index)
            for e in result.entries:
                size = 0 if e is None else e[0]
                self.sizes.append(size)
                self.end += size
        self.pages += result.pages

    def chunk_of(self, page: int) -> int:
        return bisect.bisect_right(self.chunk_first, page) - 1

    def memory_bytes(self) -> int:
        arrays = (self.chunk_first, self.chunk_data, self.chunk_sizes, self.sizes,
                  self.data_chunk_offset, self.data_chunk)  # fmt: skip
        return sum(a.itemsize * len(a) for a in arrays)


class KdumpView(VmcoreView):
    """The raw kdump-compressed file of ``layout``, as
    :func:`~qemu_vmcore.writers.kdump.write_kdump` writes it, from the page
    sizes of one pass (:func:`scan_kdump`)."""

    def __init__(self, layout: KdumpLayout, memory: GuestPhysicalMemory, method: Method,
                 sizes: _PageSizes) -> None:  # fmt: skip
        self._layout, self._memory, self._method, self._sizes = layout, memory, method, sizes
        self._desc = layout.page_desc
        self._zero_desc = self._desc.pack(offset=layout.data_offset, size=PAGE)
        self._run_first = array("Q")
        first = 0
        for r in layout.runs:
            self._run_first.append(first)
            first += r.pages
        self._local = threading.local()
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        lay = layout
        bitmaps = [
            _Section(at, at + lay.bitmap_size, self._bitmap_reader(at), self._bitmap_data(at))
            for at in (lay.bitmap_offset, lay.bitmap_offset + lay.bitmap_size)
        ]
        sections = [
            _const(0, lay.head),
            _const(K.DISKDUMP_HEADER_BLOCKS * PAGE, lay.sub),
            *bitmaps,
            _Section(lay.desc_offset, lay.data_offset, self._read_descs, _all_data),
            _const(lay.data_offset, bytes(PAGE)),  # the page every zero page points at
            _Section(lay.data_offset + PAGE, sizes.end, self._read_data, _all_data),
        ]
        super().__init__(sizes.end, sections, "kdump")

    @property
    def index_bytes(self) -> int:
        """Memory the page index takes."""
        return self._sizes.memory_bytes()

    # bitmaps: bit pfn % 8 of byte pfn // 8 set for each page in the runs

    def _bitmap_reader(self, at: int) -> Callable[[int, int], bytes]:
        runs = self._layout.runs
        starts = [r.start for r in runs]

        def read(lo: int, hi: int) -> bytes:
            first, last = (lo - at) * 8, (hi - at) * 8  # pfns
            buf = bytearray(hi - lo)
            for r in runs[max(bisect.bisect_right(starts, first) - 1, 0) :]:
                if r.start >= last:
                    break
                a, b = max(r.start, first), min(r.end, last)
                if a < b:
                    _set_bits(buf, a - first, b - first)
            return bytes(buf)

        return read

    def _bitmap_data(self, at: int) -> Callable[[int, int], Iterator[tuple[int, int]]]:
        runs = self._layout.runs

        def data(lo: int, hi: int) -> Iterator[tuple[int, int]]:
            for r in runs:
                a, b = at + r.start // 8, at + -(-r.end // 8)
                a, b = max(a, lo), min(b, hi)
                if a < b:
                    yield a, b

        return data

    # page descriptors

    def _read_descs(self, lo: int, hi: int) -> bytes:
        dsize = self._desc.size
        first = (lo - self._layout.desc_offset) // dsize
        last = -(-(hi - self._layout.desc_offset) // dsize)
        blob = self._descs(first, last)
        skip = lo - (self._layout.desc_offset + first * dsize)
        return blob[skip : skip + hi - lo]

    def _descs(self, first: int, last: int) -> bytes:
        """Page descriptors ``[first, last)``, packed as the writer packs them."""
        s, out = self._sizes, bytearray()
        pack, flag = self._desc.pack, self._method.flag
        page = first
        c = s.chunk_of(page)
        while page < last:
            chunk_end = s.chunk_first[c + 1] if c + 1 < len(s.chunk_first) else s.pages
            stop = min(last, chunk_end)
            base = s.chunk_sizes[c]
            if base < 0:
                out += self._zero_desc * (stop - page)
            else:
                k = base + page - s.chunk_first[c]
                offset = s.chunk_data[c] + sum(s.sizes[base:k])
                for size in s.sizes[k : base + stop - s.chunk_first[c]]:
                    if size == 0:
                        out += self._zero_desc
                    else:
                        out += pack(offset=offset, size=size, flags=flag if size < PAGE else 0)
                        offset += size
            page, c = stop, c + 1
        return bytes(out)

    # page data

    def _read_data(self, lo: int, hi: int) -> bytes:
        s = self._sizes
        i = bisect.bisect_right(s.data_chunk_offset, lo) - 1
        out = bytearray()
        pos = lo
        while pos < hi and i < len(s.data_chunk):
            c = s.data_chunk[i]
            base, offset = s.chunk_sizes[c], s.chunk_data[c]
            chunk_end = s.chunk_first[c + 1] if c + 1 < len(s.chunk_first) else s.pages
            for k in range(chunk_end - s.chunk_first[c]):
                size = s.sizes[base + k]
                if offset + size > pos and size:
                    data = self._page(s.chunk_first[c] + k, size)
                    out += data[pos - offset : hi - offset]
                    pos = min(hi, offset + size)
                    if pos >= hi:
                        break
                offset += size
            i += 1
        if len(out) != hi - lo:
            raise ViewError(f"kdump data at {lo:#x}-{hi:#x} is outside the pages of the index")
        return bytes(out)

    def _pfn(self, page: int) -> int:
        r = bisect.bisect_right(self._run_first, page) - 1
        return self._layout.runs[r].start + (page - self._run_first[r])

    def _page(self, page: int, size: int) -> bytes:
        """Page ``page`` as the dump stores it (``size`` bytes): compressed again."""
        with self._lock:
            cached = self._cache.get(page)
            if cached is not None:
                self._cache.move_to_end(page)
                return cached
        pfn = self._pfn(page)
        raw = self._memory.read_present(pfn * PAGE, PAGE)
        if size == PAGE:
            data = raw
        else:
            compress = getattr(self._local, "compress", None)
            if compress is None:
                compress = self._local.compress = compressor(self._method)
            data = compress(raw)
        if len(data) != size:
            raise ViewError(
                f"page frame {pfn:#x} compressed to {len(data)} bytes now, {size} when the "
                f"file was laid out: guest RAM changed under the mount (a backing file?)"
            )
        with self._lock:
            self._cache[page] = data
            if len(self._cache) > PAGE_CACHE:
                self._cache.popitem(last=False)
        return data


def scan_kdump(
    layout: KdumpLayout,
    memory: GuestPhysicalMemory,
    method: Method,
    *,
    threads: int = 1,
    progress: Progress = lambda n: None,
) -> KdumpView:
    """Compress every page once, as the writer does, to learn where each one goes."""
    sizes = _PageSizes(layout.data_offset + PAGE)
    compress_pages(layout, memory, method, sizes.add, threads=threads, progress=progress)
    return KdumpView(layout, memory, method, sizes)
