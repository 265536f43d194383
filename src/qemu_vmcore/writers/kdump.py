"""The kdump-compressed (diskdump) writer: what QMP ``dump-guest-memory``
writes with the ``kdump-*`` formats, plus zstd (see :mod:`qemu_vmcore.layouts.kdump`).

As QEMU's create_kdump_vmcore(): header version 6 and dump level 1; one bit
per page frame up to ``max_mapnr`` (the end of the last guest range), set
for every page of guest RAM; one page descriptor per set bit; all zero
pages share one descriptor, pointing to one zero page at the start of the
page data; a page that does not shrink when compressed is stored as is.
The vCPU notes and VMCOREINFO follow the sub-header, which points at
VMCOREINFO's text; ``phys_base`` comes from VMCOREINFO.

Pages are compressed in threads (the compressors release the GIL), a chunk
of :data:`CHUNK_PAGES` pages per task, with at most a few chunks per thread
in flight, so memory stays flat whatever the guest's size. Results are
written in page order. Guest RAM the core holds as holes, or never touched,
is known to be zero without being read.

The output is either the dump itself (``raw``; written with pwrite) or
makedumpfile's flattened stream of ``(offset, size, bytes)`` records,
which ``makedumpfile -R`` turns back into the dump.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from qemu_vmcore.fileio import pwrite_all, write_all
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts import kdump as K
from qemu_vmcore.layouts.cstruct import Layout
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.writers.compress import Method, compressor
from qemu_vmcore.writers.copy import Progress

PAGE = K.PAGE_SIZE
CHUNK_PAGES = 256  # 1 MiB of guest RAM per compression task
IN_FLIGHT_PER_THREAD = 3
MAX_IN_FLIGHT = 64  # chunks read or compressed but not written: at most ~128 MiB
BITMAP_PIECE = 1 << 20  # bitmap bytes built and written at a time
DESC_FLUSH = 1 << 20
DATA_FLUSH = 4 << 20
ZERO_PAGE = bytes(PAGE)
ZERO_CHUNK = bytes(CHUNK_PAGES * PAGE)
U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class PageRun:
    """Page frames ``[start, end)`` (exclusive) of guest RAM."""

    start: int
    end: int

    @property
    def pages(self) -> int:
        return self.end - self.start


def page_runs(ranges: Sequence[GuestRange]) -> list[PageRun]:
    """The page frames holding guest RAM, as runs in pfn order.

    A page only partly in guest RAM is in (QEMU's get_next_page() fills the
    rest with zeros); ranges sharing a page share its frame.
    """
    runs: list[PageRun] = []
    for r in sorted(ranges, key=lambda r: r.gpa):
        start, end = r.gpa // PAGE, -(-r.end // PAGE)
        if runs and start <= runs[-1].end:
            runs[-1] = PageRun(runs[-1].start, max(end, runs[-1].end))
        else:
            runs.append(PageRun(start, end))
    return runs


@dataclass(frozen=True)
class KdumpLayout:
    """Where everything goes in a kdump-compressed file.

    :param head: the disk dump header (block 0).
    :param sub: the sub-header and the notes (from block 1).
    :param bitmap_offset: file offset of the 1st bitmap; the 2nd follows it.
    :param bitmap_size: bytes in one bitmap (block aligned).
    :param desc_offset: file offset of the first page descriptor.
    :param data_offset: file offset of the page data (the shared zero page).
    :param page_desc: the page descriptor's layout (the guest's byte order).
    """

    head: bytes
    sub: bytes
    bitmap_offset: int
    bitmap_size: int
    desc_offset: int
    data_offset: int
    runs: tuple[PageRun, ...]
    flag: int
    page_desc: Layout[K.PageDesc] = K.for_class(E.ELFCLASS64).page_desc

    @property
    def pages(self) -> int:
        """Pages in the dump: bits set, and page descriptors."""
        return sum(r.pages for r in self.runs)


def build_layout(
    all_ranges: Sequence[GuestRange],
    runs: Sequence[PageRun],
    notes: bytes,
    *,
    flag: int,
    elf: E.ElfLayouts = E.ELF64LE,
    machine: bytes = K.UTS_MACHINE,
    nr_cpus: int = 0,
    phys_base: int = 0,
    vmcoreinfo_note: bytes | None = None,
) -> KdumpLayout:
    """Lay out a dump of the pages ``runs`` of a guest whose RAM is ``all_ranges``.

    :param notes: the notes blob; ``vmcoreinfo_note``, when given, is its tail.
    :param elf: the guest's ELF class and byte order: they decide the headers'
        longs (and so their layouts) and the byte order of every field.
    :param flag: the compression flag (DUMP_DH_COMPRESSED_*) for the header.
    :param machine: utsname.machine (QEMU 10.0 writes "Unknown"; makedumpfile,
        and crash when it checks, use the guest's: x86_64 or i686).
    """
    kd = K.for_class(elf.elfclass, elf.data)
    header, sub_header = kd.disk_dump_header, kd.kdump_sub_header
    max_mapnr = max(-(-r.end // PAGE) for r in all_ranges)
    bitmap_size = E.align_up(-(-max_mapnr // 8), PAGE)
    sub_blocks = -(-(sub_header.size + len(notes)) // PAGE)
    bitmap_blocks = 2 * bitmap_size // PAGE
    # The timestamp, total_ram_blocks, device_blocks, written_blocks and
    # current_cpu stay zero, as QEMU leaves them.
    head = header.pack(
        signature=K.KDUMP_SIGNATURE,
        header_version=K.HEADER_VERSION,
        utsname=K.utsname(machine),
        status=flag,
        block_size=PAGE,
        sub_hdr_size=sub_blocks,
        bitmap_blocks=bitmap_blocks,
        max_mapnr=min(max_mapnr, U32),  # obsolete since version 6; max_mapnr_64 has it
        nr_cpus=nr_cpus,
    )
    offset_note = K.DISKDUMP_HEADER_BLOCKS * PAGE + sub_header.size
    vmci_offset = vmci_size = 0
    if vmcoreinfo_note:
        nhdr = elf.nhdr.unpack_from(vmcoreinfo_note)
        note_at = offset_note + len(notes) - len(vmcoreinfo_note)
        vmci_offset = note_at + elf.nhdr.size + E.align_up(nhdr.namesz, 4)
        vmci_size = nhdr.descsz
    phys_base &= (1 << 8 * elf.word_size) - 1
    # split, the start and end pfns and the erase info stay zero (no split dump).
    sub = sub_header.pack(
        phys_base=phys_base,
        dump_level=K.DUMP_LEVEL,
        offset_vmcoreinfo=vmci_offset,
        size_vmcoreinfo=vmci_size,
        offset_note=offset_note,
        size_note=len(notes),
        max_mapnr_64=max_mapnr,
    )
    bitmap_offset = (K.DISKDUMP_HEADER_BLOCKS + sub_blocks) * PAGE
    desc_offset = bitmap_offset + 2 * bitmap_size
    pages = sum(r.pages for r in runs)
    return KdumpLayout(
        head=head,
        sub=sub + notes,
        bitmap_offset=bitmap_offset,
        bitmap_size=bitmap_size,
        desc_offset=desc_offset,
        data_offset=desc_offset + pages * kd.page_desc.size,
        runs=tuple(runs),
        flag=flag,
        page_desc=kd.page_desc,
    )


def bitmap_pieces(runs: Sequence[PageRun]) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, bytes)`` of the bitmap's non-zero parts, in order.

    Bit ``pfn % 8`` of byte ``pfn // 8`` is set for each page in ``runs``;
    at most :data:`BITMAP_PIECE` bytes are built at a time.
    """
    bits_per_piece = BITMAP_PIECE * 8
    piece_index, buf = -1, bytearray()
    for run in runs:
        pfn = run.start
        while pfn < run.end:
            index = pfn // bits_per_piece
            if index != piece_index:
                if buf:
                    yield from _trimmed(piece_index * BITMAP_PIECE, buf)
                piece_index, buf = index, bytearray(BITMAP_PIECE)
            stop = min(run.end, (index + 1) * bits_per_piece)
            _set_bits(buf, pfn - index * bits_per_piece, stop - index * bits_per_piece)
            pfn = stop
    if buf:
        yield from _trimmed(piece_index * BITMAP_PIECE, buf)


def _set_bits(buf: bytearray, start: int, end: int) -> None:
    while start < end and start % 8:
        buf[start // 8] |= 1 << (start % 8)
        start += 1
    full = (end - start) // 8
    buf[start // 8 : start // 8 + full] = b"\xff" * full
    start += full * 8
    while start < end:
        buf[start // 8] |= 1 << (start % 8)
        start += 1


def _trimmed(offset: int, buf: bytearray) -> Iterator[tuple[int, bytes]]:
    stripped = buf.lstrip(b"\0")
    if stripped:
        lead = len(buf) - len(stripped)
        yield offset + lead, bytes(stripped.rstrip(b"\0"))


# -- output ---------------------------------------------------------------------


class RawSink:
    """The dump itself: each piece written at its offset."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def start(self) -> None:
        pass

    def write(self, offset: int, data: bytes) -> None:
        pwrite_all(self.fd, data, offset)

    def finish(self, size: int) -> None:
        os.ftruncate(self.fd, size)  # the bitmaps' zero tails may never be written


class FlatSink(RawSink):
    """makedumpfile's flattened format: a header, then ``(offset, size)`` records."""

    def start(self) -> None:
        head = K.MDF_HEADER.pack(
            signature=K.MAKEDUMPFILE_SIGNATURE,
            type=K.TYPE_FLAT_HEADER,
            version=K.VERSION_FLAT_HEADER,
        )
        self._append(head.ljust(K.MAX_SIZE_MDF_HEADER, b"\0"))

    def write(self, offset: int, data: bytes) -> None:
        if data:
            self._append(K.MDF_DATA_HEADER.pack(offset=offset, buf_size=len(data)))
            self._append(data)

    def finish(self, size: int) -> None:
        end = K.END_FLAG_FLAT_HEADER
        self._append(K.MDF_DATA_HEADER.pack(offset=end, buf_size=end))

    def _append(self, data: bytes) -> None:
        write_all(self.fd, data)


# -- pages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Pages ``[pfn, pfn + pages)``; ``spans`` are the ``(gpa, size)`` runs
    in it that may hold non-zero bytes (none: the chunk is all zeros)."""

    pfn: int
    pages: int
    spans: tuple[tuple[int, int], ...]


class _Spans:
    """A cursor over ``(gpa, size)`` spans in gpa order."""

    def __init__(self, spans: Iterator[tuple[int, int]]) -> None:
        self._it = iter(spans)
        self.current = next(self._it, None)

    def skip_before(self, gpa: int) -> None:
        """Drop the spans that end at or before ``gpa``."""
        while self.current is not None and sum(self.current) <= gpa:
            self.current = next(self._it, None)

    def take(self, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
        """The parts of the spans inside ``[lo, hi)``; spans ending there are used up."""
        out = []
        while self.current is not None and self.current[0] < hi:
            gpa, size = self.current
            start, end = max(gpa, lo), min(gpa + size, hi)
            if start < end:
                out.append((start, end - start))
            if gpa + size > hi:
                break
            self.current = next(self._it, None)
        return tuple(out)


def chunks(runs: Sequence[PageRun], spans: Iterator[tuple[int, int]]) -> Iterator[Chunk]:
    """Split ``runs`` into chunks of at most :data:`CHUNK_PAGES` pages with
    data, and zero chunks of any length between them.

    :param spans: ``(gpa, size)`` of the data in guest RAM, in gpa order.
    """
    cursor = _Spans(spans)
    for run in runs:
        pfn = run.start
        while pfn < run.end:
            lo = pfn * PAGE
            cursor.skip_before(lo)
            span = cursor.current
            if span is None or span[0] >= run.end * PAGE:
                yield Chunk(pfn, run.end - pfn, ())
                break
            first_data = span[0] // PAGE
            if first_data > pfn:
                yield Chunk(pfn, first_data - pfn, ())
                pfn = first_data
                continue
            stop = min(run.end, pfn + CHUNK_PAGES)
            yield Chunk(pfn, stop - pfn, cursor.take(lo, stop * PAGE))
            pfn = stop


class _Compressed:
    """One chunk's result: per page None (zero) or (size, flags), and the data."""

    __slots__ = ("pages", "entries", "data")

    def __init__(self, pages: int, entries: list | None, data: bytes) -> None:
        self.pages = pages
        self.entries = entries  # None: every page is zero
        self.data = data

    def result(self) -> _Compressed:
        return self


#: After this many pages in a row that compression did not shrink, pages are
#: stored raw untried, but for every RAW_PROBE-th (see _Compressor).
RAW_RUN = 4
RAW_PROBE = 8


class _Compressor:
    """Compresses chunks, one compress function per thread."""

    def __init__(self, memory: GuestPhysicalMemory, method: Method) -> None:
        self._memory = memory
        self._method = method
        self._local = threading.local()
        compressor(method)  # fail early, in the caller's thread, if the library is missing

    def __call__(self, chunk: Chunk) -> _Compressed:
        compress = getattr(self._local, "compress", None)
        if compress is None:
            compress = self._local.compress = compressor(self._method)
        data = self._read(chunk)
        n = chunk.pages
        if data == (ZERO_CHUNK if n == CHUNK_PAGES else bytes(n * PAGE)):
            return _Compressed(n, None, b"")
        flag, entries, out = self._method.flag, [], []
        # Pages that would not shrink are stored raw, as QEMU and makedumpfile
        # do. Random or compressed data comes in runs (a file's pages), so
        # (where the method allows it) after RAW_RUN pages in a row that did
        # not shrink, only every RAW_PROBE-th page is tried until one shrinks
        # again: the rest of the run costs no compression attempt.
        skip = RAW_RUN if self._method.skip_raw_runs else n + 1
        raw_run = 0
        for i in range(0, n * PAGE, PAGE):
            if data.startswith(ZERO_PAGE, i):  # compares in place, no slice
                entries.append(None)
                continue
            page = data[i : i + PAGE]
            tried = raw_run < skip or (raw_run - skip) % RAW_PROBE == 0
            packed = compress(page) if tried else page  # untried: stored raw below
            if len(packed) < PAGE:
                raw_run = 0
                entries.append((len(packed), flag))
                out.append(packed)
            else:
                raw_run += 1
                entries.append((PAGE, 0))
                out.append(page)
        return _Compressed(n, entries, b"".join(out))

    def _read(self, chunk: Chunk) -> bytes:
        base, size = chunk.pfn * PAGE, chunk.pages * PAGE
        if len(chunk.spans) == 1 and chunk.spans[0] == (base, size):
            return self._memory.read(base, size)
        buf = bytearray(size)
        for gpa, n in chunk.spans:
            buf[gpa - base : gpa - base + n] = self._memory.read(gpa, n)
        return bytes(buf)


class _PageWriter:
    """Writes descriptors and page data in page order, in bounded buffers."""

    def __init__(self, sink: RawSink, layout: KdumpLayout) -> None:
        self._sink = sink
        self._desc_at = layout.desc_offset
        self._descs = bytearray()
        self._data_at = layout.data_offset
        self._data = bytearray(ZERO_PAGE)  # the page every zero page points at
        self._desc = layout.page_desc
        self._zero_desc = self._desc.pack(offset=layout.data_offset, size=PAGE)
        self.next_data = layout.data_offset + PAGE

    def add(self, result: _Compressed) -> None:
        if result.entries is None:
            self._zeros(result.pages)
            return
        pack, offset = self._desc.pack, self.next_data
        descs = self._descs
        for e in result.entries:
            if e is None:
                descs += self._zero_desc
            else:
                size, flags = e
                descs += pack(offset=offset, size=size, flags=flags)
                offset += size
        self.next_data = offset
        self._data += result.data
        self._flush(final=False)

    def _zeros(self, pages: int) -> None:
        step = DESC_FLUSH // self._desc.size
        while pages:
            n = min(pages, step)
            self._descs += self._zero_desc * n
            pages -= n
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if self._descs and (final or len(self._descs) >= DESC_FLUSH):
            self._sink.write(self._desc_at, bytes(self._descs))
            self._desc_at += len(self._descs)
            self._descs.clear()
        if self._data and (final or len(self._data) >= DATA_FLUSH):
            self._sink.write(self._data_at, bytes(self._data))
            self._data_at += len(self._data)
            self._data.clear()

    def finish(self) -> int:
        """Flush everything; returns the file size."""
        self._flush(final=True)
        return self.next_data


def write_kdump(
    fd: int,
    layout: KdumpLayout,
    memory: GuestPhysicalMemory,
    method: Method,
    *,
    flattened: bool = False,
    threads: int = 1,
    progress: Progress = lambda n: None,
) -> int:
    """Write the dump ``layout`` describes to ``fd`` (a new, empty file or a pipe).

    :param memory: the guest RAM to dump (already filtered); its data spans
        tell which parts need reading at all.
    :returns: the size of the dump (of the reassembled dump, if flattened).
    """
    sink: RawSink = FlatSink(fd) if flattened else RawSink(fd)
    sink.start()
    sink.write(0, layout.head)
    sink.write(K.DISKDUMP_HEADER_BLOCKS * PAGE, layout.sub)
    for offset, piece in bitmap_pieces(layout.runs):
        sink.write(layout.bitmap_offset + offset, piece)
        sink.write(layout.bitmap_offset + layout.bitmap_size + offset, piece)
    pages = _PageWriter(sink, layout)
    compress_pages(layout, memory, method, pages.add, threads=threads, progress=progress)
    size = pages.finish()
    sink.finish(size)
    return size


def compress_pages(
    layout: KdumpLayout,
    memory: GuestPhysicalMemory,
    method: Method,
    emit: Callable[[_Compressed], None],
    *,
    threads: int = 1,
    progress: Progress = lambda n: None,
) -> None:
    """Every page of ``layout``, compressed as the dump stores it: ``emit``
    gets each chunk's result (``pages``; ``entries``, per page None for a
    zero page or ``(size, flags)``; ``data``) in page order. The writer
    writes them; a served view (writers/view.py) keeps only the sizes.
    """
    spans = ((gpa, size) for gpa, _, size in memory.data_spans())
    work = _Compressor(memory, method)
    _run_pipeline(chunks(layout.runs, spans), work, emit, threads, progress)


def _run_pipeline(
    items: Iterator[Chunk],
    work: Callable[[Chunk], _Compressed],
    emit: Callable[[_Compressed], None],
    threads: int,
    progress: Progress,
) -> None:
    """``emit(work(chunk))`` for each chunk, in order, ``threads`` at a time.

    At most ``IN_FLIGHT_PER_THREAD * threads`` chunks (and never more than
    :data:`MAX_IN_FLIGHT`) are read or compressed but not yet written. Zero
    chunks need no work and skip the pool.
    """
    limit = min(max(1, threads) * IN_FLIGHT_PER_THREAD, MAX_IN_FLIGHT)
    queue: deque[Future | _Compressed] = deque()

    def retire() -> None:
        done = queue.popleft().result()
        emit(done)
        progress(done.pages * PAGE)

    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="kdump") as pool:
        try:
            for chunk in items:
                if chunk.spans:
                    queue.append(pool.submit(work, chunk))
                else:
                    queue.append(_Compressed(chunk.pages, None, b""))
                while len(queue) > limit or (queue and _ready(queue[0])):
                    retire()
            while queue:
                retire()
        except BaseException:
            for f in queue:
                if isinstance(f, Future):
                    f.cancel()
            raise


def _ready(item: Future | _Compressed) -> bool:
    return not isinstance(item, Future) or item.done()
