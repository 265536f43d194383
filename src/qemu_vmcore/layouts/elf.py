"""ELF on-disk layouts and constants, declared once (as pyelftools declares them).

Everything is little-endian: the host is x86_64 and so is every guest we write.
Logic elsewhere uses these ``struct.Struct`` objects and never spells formats.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ELFMAG = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1

ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4

EM_386 = 3
EM_X86_64 = 62

PT_LOAD = 1
PT_NOTE = 4

PN_XNUM = 0xFFFF  # e_phnum escape: the real count is in section 0's sh_info

NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_AUXV = 6
NT_FILE = 0x46494C45
NT_GNU_BUILD_ID = 3

AT_NULL = 0
AT_PHDR = 3
AT_ENTRY = 9
AT_EXECFN = 31

# Elf64_Ehdr without e_ident (16 bytes, handled separately).
EHDR64 = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR64 = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
SHDR64 = struct.Struct("<IIQQQQIIQQ")
EHDR32 = struct.Struct("<16sHHIIIIIHHHHHH")
PHDR32 = struct.Struct("<IIIIIIII")  # type, offset, vaddr, paddr, filesz, memsz, flags, align
SHDR32 = struct.Struct("<IIIIIIIIII")
NHDR = struct.Struct("<III")  # namesz, descsz, type (same for ELF32 and ELF64 on Linux)

AUXV64 = struct.Struct("<QQ")
NT_FILE_HEADER = struct.Struct("<QQ")  # count, page_size
NT_FILE_ENTRY = struct.Struct("<QQQ")  # start, end, file offset in pages

# struct elf_prpsinfo for x86_64 (include/uapi/linux/elfcore.h).
PRPSINFO64 = struct.Struct("<cccc4xQIIiiii16s80s")


class Ehdr(NamedTuple):
    ident: bytes
    type: int
    machine: int
    version: int
    entry: int
    phoff: int
    shoff: int
    flags: int
    ehsize: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int


class Phdr(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


def ident(elfclass: int) -> bytes:
    """e_ident for a little-endian SysV file of ``elfclass``."""
    return ELFMAG + bytes([elfclass, ELFDATA2LSB, EV_CURRENT]) + bytes(9)


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def note_bytes(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note: header, NUL-terminated name, desc, each padded to 4 bytes.

    Linux and QEMU pad to 4 bytes in ELF64 files too (the gABI's 8 is not used).
    """
    namez = name + b"\0"
    return (
        NHDR.pack(len(namez), len(desc), note_type)
        + namez.ljust(align_up(len(namez), 4), b"\0")
        + desc.ljust(align_up(len(desc), 4), b"\0")
    )


class Note(NamedTuple):
    name: bytes
    type: int
    desc: bytes
    offset: int  # of the note header, relative to the buffer parsed


def iter_notes(buf: bytes, *, limit: int = 1 << 16):
    """Yield the notes in ``buf`` (a PT_NOTE segment's bytes).

    Stops at the first malformed note (sizes running past the buffer) and after
    ``limit`` notes, so a corrupt segment can neither loop nor overrun.
    """
    pos = 0
    for _ in range(limit):
        if pos + NHDR.size > len(buf):
            return
        namesz, descsz, ntype = NHDR.unpack_from(buf, pos)
        name_at = pos + NHDR.size
        desc_at = name_at + align_up(namesz, 4)
        end = desc_at + align_up(descsz, 4)
        if desc_at + descsz > len(buf):
            return
        name = bytes(buf[name_at : name_at + namesz]).rstrip(b"\0")
        yield Note(name, ntype, bytes(buf[desc_at : desc_at + descsz]), pos)
        pos = end


def malformed_note(buf: bytes, *, limit: int = 1 << 16) -> tuple[int, str] | None:
    """Where and why the notes in ``buf`` fail to fill it, or None when they do.

    Linux and gdb write a PT_NOTE segment as notes end to end, to its last
    byte. :func:`iter_notes` stops quietly at the first note whose sizes run
    past the buffer; this says so: ``(offset of that note, description)``.
    Trailing zero bytes (padding) are allowed, as is stopping after
    ``limit`` notes.
    """
    pos = 0
    for _ in range(limit):
        if pos >= len(buf):
            return None
        # (Zeros parse as empty notes; only where parsing fails are the
        # remaining bytes looked at, once, to tell padding from garbage.)
        if pos + NHDR.size > len(buf):
            if not any(buf[pos:]):
                return None
            return pos, f"{len(buf) - pos} bytes after the last note, too few for a note header"
        namesz, descsz, ntype = NHDR.unpack_from(buf, pos)
        desc_at = pos + NHDR.size + align_up(namesz, 4)
        if desc_at + descsz > len(buf):
            return pos, (
                f"note type {ntype:#x} with namesz {namesz} and descsz {descsz} runs "
                f"{desc_at + descsz - len(buf):,} bytes past the end of the notes"
            )
        pos = desc_at + align_up(descsz, 4)
    return None


# -- x86 vCPU notes, laid out as QEMU's target/i386/arch_dump.c lays them out --

#: x86_64_elf_prstatus: pad1[32], pid, pad2[76], 27 user_regs (r15 ... gs), pad3[8].
X86_64_PRSTATUS = struct.Struct("<32xI76x27Q8x")
#: x86_elf_prstatus: pad1[24], pid, pad2[44], x86_user_regs_struct, pad3[4].
#: regs: ebx ecx edx esi edi ebp eax; ds __ds es __es fs __fs gs __gs;
#: orig_eax eip; cs __cs; eflags esp; ss __ss.
I386_PRSTATUS = struct.Struct("<24xI44x7I8HII2HII2H4x")
#: QEMUCPUSegment: selector, limit, flags, pad, base.
QEMU_CPU_SEGMENT = struct.Struct("<IIIIQ")
#: QEMUCPUState: version, size, rax..r15, rip, rflags, 10 segments, cr[5], kernel_gs_base.
QEMU_CPU_STATE = struct.Struct("<II18Q" + "IIIIQ" * 10 + "5QQ")
QEMUCPUSTATE_VERSION = 1
