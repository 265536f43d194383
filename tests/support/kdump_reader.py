"""A minimal reader of kdump-compressed files, independent of the writer, for tests.

Parses what crash and libkdumpfile parse (header version 6): the disk dump
header, the sub-header, the notes, the 1st bitmap and the page descriptors,
and decompresses pages by their descriptor's flag. ``unflatten`` turns
makedumpfile's flattened stream back into the dump, as ``makedumpfile -R``.
Layouts are spelled out here on purpose, not imported from the library: an
oracle that shared the writer's layouts would agree with any mistake in them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

PAGE = 4096
HEADER64 = struct.Struct("<8sI390s22sIIIIIIIIII")
HEADER32 = struct.Struct("<8sI390s10sIIIIIIIIII")
SUB64 = struct.Struct("<QIIQQQQQQQQQQQ")
SUB32 = struct.Struct("<IIIIIQIQIQIQQQ")
DESC = struct.Struct("<QIIQ")
ZLIB, LZO, SNAPPY, ZSTD = 0x1, 0x2, 0x4, 0x20


class Header(NamedTuple):
    """struct disk_dump_header (timestamp with its leading padding, unparsed)."""

    signature: bytes
    header_version: int
    utsname: bytes
    timestamp: bytes
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int


class SubHeader(NamedTuple):
    """struct kdump_sub_header."""

    phys_base: int
    dump_level: int
    split: int
    start_pfn: int
    end_pfn: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    size_note: int
    offset_eraseinfo: int
    size_eraseinfo: int
    start_pfn_64: int
    end_pfn_64: int
    max_mapnr_64: int


def _decompress(flags: int, data: bytes) -> bytes:
    if flags & ZLIB:
        return zlib.decompress(data)
    if flags & LZO:
        import lzallright  # a core dependency; python-lzo is optional

        return lzallright.LZOCompressor.decompress(data, output_size_hint=PAGE)
    if flags & SNAPPY:
        import cramjam

        return bytes(cramjam.snappy.decompress_raw(data))
    if flags & ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=PAGE)
    return data


@dataclass
class Kdump:
    """A parsed kdump-compressed file (the whole file in memory: tests only)."""

    data: bytes
    header: Header
    sub: SubHeader
    bits64: bool

    @classmethod
    def parse(cls, data: bytes, *, bits64: bool = True) -> Kdump:
        header = Header._make((HEADER64 if bits64 else HEADER32).unpack_from(data, 0))
        assert header.signature == b"KDUMP   ", header.signature
        sub = SubHeader._make((SUB64 if bits64 else SUB32).unpack_from(data, header.block_size))
        return cls(data, header, sub, bits64)

    # header fields
    @property
    def version(self) -> int:
        return self.header.header_version

    @property
    def machine(self) -> bytes:
        return self.header.utsname[4 * 65 : 5 * 65].rstrip(b"\0")

    @property
    def status(self) -> int:
        return self.header.status

    @property
    def block_size(self) -> int:
        return self.header.block_size

    @property
    def sub_hdr_size(self) -> int:
        return self.header.sub_hdr_size

    @property
    def bitmap_blocks(self) -> int:
        return self.header.bitmap_blocks

    @property
    def nr_cpus(self) -> int:
        return self.header.nr_cpus

    # sub-header fields
    @property
    def phys_base(self) -> int:
        return self.sub.phys_base

    @property
    def dump_level(self) -> int:
        return self.sub.dump_level

    @property
    def vmcoreinfo(self) -> bytes:
        offset, size = self.sub.offset_vmcoreinfo, self.sub.size_vmcoreinfo
        return self.data[offset : offset + size]

    @property
    def notes(self) -> bytes:
        offset, size = self.sub.offset_note, self.sub.size_note
        return self.data[offset : offset + size]

    @property
    def max_mapnr(self) -> int:
        return self.sub.max_mapnr_64

    # bitmaps and pages
    @property
    def bitmap_size(self) -> int:
        return self.bitmap_blocks * self.block_size // 2

    @property
    def bitmap_offset(self) -> int:
        return (1 + self.sub_hdr_size) * self.block_size

    def bitmaps(self) -> tuple[bytes, bytes]:
        at, n = self.bitmap_offset, self.bitmap_size
        return self.data[at : at + n], self.data[at + n : at + 2 * n]

    def pfns(self) -> list[int]:
        """Page frames whose bit is set in the 1st bitmap, in order."""
        bitmap = self.bitmaps()[0]
        return [
            i for i in range(min(len(bitmap) * 8, self.max_mapnr)) if bitmap[i // 8] >> (i % 8) & 1
        ]

    def descriptors(self) -> dict[int, tuple[int, int, int, int]]:
        """pfn -> (offset, size, flags, page_flags)."""
        at = self.bitmap_offset + 2 * self.bitmap_size
        return {
            pfn: DESC.unpack_from(self.data, at + i * DESC.size)
            for i, pfn in enumerate(self.pfns())
        }

    def pages(self) -> dict[int, bytes]:
        """pfn -> the page's bytes."""
        out = {}
        for pfn, (offset, size, flags, _) in self.descriptors().items():
            page = _decompress(flags, self.data[offset : offset + size])
            assert len(page) == PAGE, (pfn, flags, len(page))
            out[pfn] = page
        return out


MDF_HEADER = struct.Struct(">16sqq")
MDF_DATA = struct.Struct(">qq")


def unflatten(stream: bytes) -> bytes:
    """makedumpfile's flattened stream -> the dump (as ``makedumpfile -R``)."""
    signature, kind, version = MDF_HEADER.unpack_from(stream, 0)
    assert signature.rstrip(b"\0") == b"makedumpfile" and (kind, version) == (1, 1)
    out = bytearray()
    pos = 4096
    while True:
        offset, size = MDF_DATA.unpack_from(stream, pos)
        pos += MDF_DATA.size
        if offset == -1 and size == -1:
            break
        assert offset >= 0 and size >= 0 and pos + size <= len(stream)
        if len(out) < offset + size:
            out.extend(bytes(offset + size - len(out)))
        out[offset : offset + size] = stream[pos : pos + size]
        pos += size
    assert pos == len(stream), "data after the end marker"
    return bytes(out)
