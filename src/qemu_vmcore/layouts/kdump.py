"""kdump-compressed ("diskdump") and makedumpfile flattened layouts, declared once.

The kdump-compressed format, header version 6, as QEMU's dump.c writes it
(include/system/dump.h) and makedumpfile, crash and libkdumpfile read it::

    block 0       DiskDumpHeader{32,64}
    block 1 ...   KdumpSubHeader{32,64}, then the ELF notes (vCPUs, VMCOREINFO)
    ...           1st bitmap, 2nd bitmap (block aligned; identical at dump level 1)
    ...           one PageDescriptor per page whose bit is set, in pfn order
    ...           page data: first one zero page shared by every zero page, then
                  each page, compressed or (if that does not shrink it) as is

Block size is the guest page size (4096). All kdump fields are little-endian
(the guest's byte order); the flattened format's record headers are
big-endian, as makedumpfile writes them whatever the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts.cstruct import Field, Layout

PAGE_SIZE = 4096
KDUMP_SIGNATURE = b"KDUMP   "
HEADER_VERSION = 6
DUMP_LEVEL = 1  # only zero pages may be excluded; QEMU's choice too
DISKDUMP_HEADER_BLOCKS = 1
#: utsname.machine in the header, for an x86_64 guest (i686 for an i386 one).
#: QEMU 7.2 writes "x86_64" for every guest, 10.0 "Unknown" (dump.c no longer
#: sees the target's ELF_MACHINE_UNAME); makedumpfile writes the guest's.
UTS_MACHINE = b"x86_64"
UTS_FIELD_LEN = 65

# Page descriptor and header status flags (makedumpfile's diskdump_mod.h).
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_ZSTD = 0x20


class DiskDumpHeader(NamedTuple):
    """struct disk_dump_header (makedumpfile's diskdump_mod.h).

    ``timestamp`` is a struct timeval: tv_sec and tv_usec are C longs.
    """

    signature: bytes = b""
    header_version: int = 0
    utsname: bytes = b""  # struct new_utsname: 6 fields of 65 bytes
    timestamp_sec: int = 0
    timestamp_usec: int = 0
    status: int = 0
    block_size: int = 0
    sub_hdr_size: int = 0  # in blocks
    bitmap_blocks: int = 0
    max_mapnr: int = 0  # obsolete since version 6: see max_mapnr_64
    total_ram_blocks: int = 0
    device_blocks: int = 0
    written_blocks: int = 0
    current_cpu: int = 0
    nr_cpus: int = 0


class KdumpSubHeader(NamedTuple):
    """struct kdump_sub_header (diskdump_mod.h), header version 6."""

    phys_base: int = 0
    dump_level: int = 0
    split: int = 0
    start_pfn: int = 0
    end_pfn: int = 0
    offset_vmcoreinfo: int = 0
    size_vmcoreinfo: int = 0
    offset_note: int = 0
    size_note: int = 0
    offset_eraseinfo: int = 0
    size_eraseinfo: int = 0
    start_pfn_64: int = 0
    end_pfn_64: int = 0
    max_mapnr_64: int = 0


class PageDesc(NamedTuple):
    """struct page_desc: where one dumped page's data is, and how it is stored."""

    offset: int = 0  # off_t, from the start of the file
    size: int = 0  # bytes stored
    flags: int = 0  # DUMP_DH_COMPRESSED_* or 0 (stored as is)
    page_flags: int = 0


class MakedumpfileHeader(NamedTuple):
    """struct makedumpfile_header: the flattened stream's first bytes."""

    signature: bytes = b""
    type: int = 0
    version: int = 0


class MakedumpfileDataHeader(NamedTuple):
    """struct makedumpfile_data_header: offset and size of the data that follows."""

    offset: int = 0
    buf_size: int = 0


@dataclass(frozen=True)
class KdumpLayouts:
    """The kdump layouts of one ELF class and byte order (see :func:`for_class`)."""

    disk_dump_header: Layout[DiskDumpHeader]
    kdump_sub_header: Layout[KdumpSubHeader]
    page_desc: Layout[PageDesc]


def _layouts(elf: E.ElfLayouts) -> KdumpLayouts:
    bo = elf.byteorder
    if elf.word_size == 8:
        # utsname ends at 402; timeval (two longs) is aligned to 8.
        timeval: list[Field] = [(None, "6x"), ("timestamp_sec", "q"), ("timestamp_usec", "q")]
        # Every long and off_t is 8 bytes; dump_level and split pack into one.
        sub: list[Field] = [
            ("phys_base", "Q"), ("dump_level", "I"), ("split", "I"), ("start_pfn", "Q"),
            ("end_pfn", "Q"), ("offset_vmcoreinfo", "Q"), ("size_vmcoreinfo", "Q"),
            ("offset_note", "Q"), ("size_note", "Q"), ("offset_eraseinfo", "Q"),
            ("size_eraseinfo", "Q"),
        ]  # fmt: skip
    else:
        timeval = [(None, "2x"), ("timestamp_sec", "i"), ("timestamp_usec", "i")]
        # longs are 4 bytes, off_t 8, aligned to 4 as on i386 (no padding).
        sub = [
            ("phys_base", "I"), ("dump_level", "I"), ("split", "I"), ("start_pfn", "I"),
            ("end_pfn", "I"), ("offset_vmcoreinfo", "Q"), ("size_vmcoreinfo", "I"),
            ("offset_note", "Q"), ("size_note", "I"), ("offset_eraseinfo", "Q"),
            ("size_eraseinfo", "I"),
        ]  # fmt: skip
    bits = elf.word_size * 8
    return KdumpLayouts(
        disk_dump_header=Layout(
            f"disk_dump_header ({bits}-bit)",
            DiskDumpHeader,
            bo,
            [
                ("signature", "8s"),
                ("header_version", "I"),
                ("utsname", "390s"),
                *timeval,
                ("status", "I"),
                ("block_size", "I"),
                ("sub_hdr_size", "I"),
                ("bitmap_blocks", "I"),
                ("max_mapnr", "I"),
                ("total_ram_blocks", "I"),
                ("device_blocks", "I"),
                ("written_blocks", "I"),
                ("current_cpu", "I"),
                ("nr_cpus", "I"),
            ],
        ),  # fmt: skip
        kdump_sub_header=Layout(
            f"kdump_sub_header ({bits}-bit)",
            KdumpSubHeader,
            bo,
            [
                *sub,
                ("start_pfn_64", "Q"),
                ("end_pfn_64", "Q"),
                ("max_mapnr_64", "Q"),
            ],
        ),  # fmt: skip
        page_desc=Layout(
            "page_desc",
            PageDesc,
            bo,
            [
                ("offset", "Q"),
                ("size", "I"),
                ("flags", "I"),
                ("page_flags", "Q"),
            ],
        ),  # fmt: skip
    )


_BY_CLASS = {
    (c, d): _layouts(E.for_class(c, d))
    for c in (E.ELFCLASS32, E.ELFCLASS64)
    for d in (E.ELFDATA2LSB, E.ELFDATA2MSB)
}


def for_class(elfclass: int, data: int = E.ELFDATA2LSB) -> KdumpLayouts:
    """The kdump layouts for a guest of ``elfclass`` and byte order ``data``.

    Chosen by the same (ELF class, ELF data) key as
    :func:`qemu_vmcore.layouts.elf.for_class`, since the headers' longs and
    timeval are the guest's.
    """
    E.for_class(elfclass, data)  # the same ValueError for an unknown class
    return _BY_CLASS[elfclass, data]


MAKEDUMPFILE_SIGNATURE = b"makedumpfile"
MAX_SIZE_MDF_HEADER = 4096  # the flattened file's header, zero padded
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
# The flattened format's headers are big-endian whatever the dump's byte order.
MDF_HEADER = Layout("makedumpfile_header", MakedumpfileHeader, ">", [
    ("signature", "16s"), ("type", "q"), ("version", "q"),
])  # fmt: skip
MDF_DATA_HEADER = Layout("makedumpfile_data_header", MakedumpfileDataHeader, ">", [
    ("offset", "q"), ("buf_size", "q"),
])  # fmt: skip
END_FLAG_FLAT_HEADER = -1


def utsname(machine: bytes = UTS_MACHINE) -> bytes:
    """A new_utsname with only ``machine`` set, as QEMU fills it."""
    fields = [b""] * 6
    fields[4] = machine
    return b"".join(f.ljust(UTS_FIELD_LEN, b"\0") for f in fields)
