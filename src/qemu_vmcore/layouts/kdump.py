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

import struct

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

#: DiskDumpHeader64: signature, header_version, utsname (6 x 65), timestamp[22]
#: (a 64-bit struct timeval, padded), status, block_size, sub_hdr_size,
#: bitmap_blocks, max_mapnr, total_ram_blocks, device_blocks, written_blocks,
#: current_cpu, nr_cpus.
DISKDUMP_HEADER64 = struct.Struct("<8sI390s22s10I")
#: DiskDumpHeader32: the same with timestamp[10] (a 32-bit struct timeval).
DISKDUMP_HEADER32 = struct.Struct("<8sI390s10s10I")
#: KdumpSubHeader64: phys_base, dump_level, split, start_pfn, end_pfn,
#: offset_vmcoreinfo, size_vmcoreinfo, offset_note, note_size,
#: offset_eraseinfo, size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64.
KDUMP_SUB_HEADER64 = struct.Struct("<QIIQQQQQQQQQQQ")
#: KdumpSubHeader32 (packed): the same fields, several of them 32-bit.
KDUMP_SUB_HEADER32 = struct.Struct("<IIIIIQIQIQIQQQ")
#: PageDescriptor: offset of the page data, its size, flags, page_flags.
PAGE_DESC = struct.Struct("<QIIQ")

MAKEDUMPFILE_SIGNATURE = b"makedumpfile"
MAX_SIZE_MDF_HEADER = 4096  # the flattened file's header, zero padded
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
#: MakedumpfileHeader: signature[16], type, version (big-endian int64s).
MDF_HEADER = struct.Struct(">16sqq")
#: MakedumpfileDataHeader: offset and size of the data that follows.
MDF_DATA_HEADER = struct.Struct(">qq")
END_FLAG_FLAT_HEADER = -1


def header_structs(elfclass64: bool) -> tuple[struct.Struct, struct.Struct]:
    """(DiskDumpHeader, KdumpSubHeader) for a 64-bit or 32-bit dump."""
    if elfclass64:
        return DISKDUMP_HEADER64, KDUMP_SUB_HEADER64
    return DISKDUMP_HEADER32, KDUMP_SUB_HEADER32


def utsname(machine: bytes = UTS_MACHINE) -> bytes:
    """A new_utsname with only ``machine`` set, as QEMU fills it."""
    fields = [b""] * 6
    fields[4] = machine
    return b"".join(f.ljust(UTS_FIELD_LEN, b"\0") for f in fields)
