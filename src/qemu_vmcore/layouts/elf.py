"""ELF on-disk layouts and constants, declared once (as pyelftools declares them).

Each struct is a :class:`~qemu_vmcore.layouts.cstruct.Layout` with named
fields; :func:`for_class` picks those of an ELF class and byte order. Today
the host is x86_64 and every guest written is x86_64 or i386, all
little-endian; the big-endian layouts are declared (and tested) for the
guests that come next. Logic elsewhere never spells a format or reads a
field by position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from qemu_vmcore.layouts.cstruct import ByteOrder, Field, Layout

ELFMAG = b"\x7fELF"
EI_CLASS = 4  # e_ident[EI_CLASS]: ELFCLASS32 / ELFCLASS64
EI_DATA = 5  # e_ident[EI_DATA]: ELFDATA2LSB / ELFDATA2MSB
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
EV_CURRENT = 1

ET_EXEC = 2
ET_DYN = 3
ET_CORE = 4

EM_386 = 3
EM_X86_64 = 62
EM_AARCH64 = 183

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

PT_NULL = 0
PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_NOTE = 4
PT_PHDR = 6

# p_flags
PF_X = 1
PF_W = 2
PF_R = 4

# Auxiliary vector types (a_type), include/uapi/linux/auxvec.h.
AT_PHNUM = 5
AT_PAGESZ = 6

# -- records ------------------------------------------------------------------
# Field names are the C names without their struct's prefix (e_, p_, sh_, n_,
# a_, pr_): ``phdr.filesz`` is p_filesz. Defaults are zero so that a record
# can be built from only the fields that matter.


class Ehdr(NamedTuple):
    """Elf32_Ehdr / Elf64_Ehdr."""

    ident: bytes = b""
    type: int = 0
    machine: int = 0
    version: int = 0
    entry: int = 0
    phoff: int = 0
    shoff: int = 0
    flags: int = 0
    ehsize: int = 0
    phentsize: int = 0
    phnum: int = 0
    shentsize: int = 0
    shnum: int = 0
    shstrndx: int = 0


class Phdr(NamedTuple):
    """Elf32_Phdr / Elf64_Phdr, in Elf64_Phdr's field order."""

    type: int = 0
    flags: int = 0
    offset: int = 0
    vaddr: int = 0
    paddr: int = 0
    filesz: int = 0
    memsz: int = 0
    align: int = 0


class Shdr(NamedTuple):
    """Elf32_Shdr / Elf64_Shdr."""

    name: int = 0
    type: int = 0
    flags: int = 0
    addr: int = 0
    offset: int = 0
    size: int = 0
    link: int = 0
    info: int = 0
    addralign: int = 0
    entsize: int = 0


class Nhdr(NamedTuple):
    """Elf32_Nhdr / Elf64_Nhdr (the same: three 32-bit words)."""

    namesz: int = 0
    descsz: int = 0
    type: int = 0


class Auxv(NamedTuple):
    """Elf32_auxv_t / Elf64_auxv_t: one NT_AUXV entry."""

    type: int = 0
    val: int = 0


class NtFileHeader(NamedTuple):
    """The head of an NT_FILE desc (fs/binfmt_elf.c fill_files_note())."""

    count: int = 0
    page_size: int = 0  # the unit of file_ofs


class NtFileEntry(NamedTuple):
    """One NT_FILE mapping: [start, end) mapped from file_ofs * page_size."""

    start: int = 0
    end: int = 0
    file_ofs: int = 0


class Prpsinfo(NamedTuple):
    """struct elf_prpsinfo (include/linux/elfcore.h)."""

    state: bytes = b"\0"
    sname: bytes = b"\0"
    zomb: bytes = b"\0"
    nice: bytes = b"\0"
    flag: int = 0
    uid: int = 0
    gid: int = 0
    pid: int = 0
    ppid: int = 0
    pgrp: int = 0
    sid: int = 0
    fname: bytes = b""
    psargs: bytes = b""


@dataclass(frozen=True)
class ElfLayouts:
    """The layouts of one ELF class and byte order (see :func:`for_class`)."""

    elfclass: int  # ELFCLASS32 / ELFCLASS64
    data: int  # ELFDATA2LSB / ELFDATA2MSB
    ehdr: Layout[Ehdr]
    phdr: Layout[Phdr]
    shdr: Layout[Shdr]
    nhdr: Layout[Nhdr]
    auxv: Layout[Auxv]
    nt_file_header: Layout[NtFileHeader]
    nt_file_entry: Layout[NtFileEntry]
    prpsinfo: Layout[Prpsinfo]

    @property
    def byteorder(self) -> ByteOrder:
        """``"<"`` or ``">"``, as ``struct`` spells it."""
        return "<" if self.data == ELFDATA2LSB else ">"

    @property
    def word_size(self) -> int:
        """Bytes in a C ``long`` (and a pointer) of this class: 4 or 8."""
        return 8 if self.elfclass == ELFCLASS64 else 4

    def ident(self) -> bytes:
        """e_ident for a SysV file of this class and byte order."""
        return ident(self.elfclass, self.data)


def _layouts(elfclass: int, data: int) -> ElfLayouts:
    bo: ByteOrder = "<" if data == ELFDATA2LSB else ">"
    bits = 64 if elfclass == ELFCLASS64 else 32
    w = "Q" if bits == 64 else "I"  # Elf_Addr, Elf_Off, Elf64_Xword; and C long
    if bits == 64:
        phdr_fields = [("type", "I"), ("flags", "I"), ("offset", "Q"), ("vaddr", "Q"),
                       ("paddr", "Q"), ("filesz", "Q"), ("memsz", "Q"), ("align", "Q")]  # fmt: skip
        # struct elf_prpsinfo: 4 chars, then pr_flag (unsigned long) aligned to 8.
        flag: list[Field] = [(None, "4x"), ("flag", "Q")]
    else:
        # Elf32_Phdr moves p_flags after p_memsz (for alignment in Elf64_Phdr).
        phdr_fields = [("type", "I"), ("offset", "I"), ("vaddr", "I"), ("paddr", "I"),
                       ("filesz", "I"), ("memsz", "I"), ("flags", "I"), ("align", "I")]  # fmt: skip
        # The asm-generic 32-bit elf_prpsinfo (32-bit uid/gid). i386 differs:
        # 16-bit __kernel_uid_t; nothing reads a 32-bit one today.
        flag = [("flag", "I")]
    return ElfLayouts(
        elfclass,
        data,
        ehdr=Layout(
            f"Elf{bits}_Ehdr",
            Ehdr,
            bo,
            [
                ("ident", "16s"),
                ("type", "H"),
                ("machine", "H"),
                ("version", "I"),
                ("entry", w),
                ("phoff", w),
                ("shoff", w),
                ("flags", "I"),
                ("ehsize", "H"),
                ("phentsize", "H"),
                ("phnum", "H"),
                ("shentsize", "H"),
                ("shnum", "H"),
                ("shstrndx", "H"),
            ],
        ),  # fmt: skip
        phdr=Layout(f"Elf{bits}_Phdr", Phdr, bo, phdr_fields),
        shdr=Layout(
            f"Elf{bits}_Shdr",
            Shdr,
            bo,
            [
                ("name", "I"),
                ("type", "I"),
                ("flags", w),
                ("addr", w),
                ("offset", w),
                ("size", w),
                ("link", "I"),
                ("info", "I"),
                ("addralign", w),
                ("entsize", w),
            ],
        ),  # fmt: skip
        nhdr=Layout(f"Elf{bits}_Nhdr", Nhdr, bo, [("namesz", "I"), ("descsz", "I"), ("type", "I")]),
        auxv=Layout(f"Elf{bits}_auxv_t", Auxv, bo, [("type", w), ("val", w)]),
        nt_file_header=Layout(
            "NT_FILE header", NtFileHeader, bo, [("count", w), ("page_size", w)]
        ),  # fmt: skip
        nt_file_entry=Layout(
            "NT_FILE entry", NtFileEntry, bo, [("start", w), ("end", w), ("file_ofs", w)]
        ),  # fmt: skip
        prpsinfo=Layout(
            "elf_prpsinfo",
            Prpsinfo,
            bo,
            [
                ("state", "c"),
                ("sname", "c"),
                ("zomb", "c"),
                ("nice", "c"),
                *flag,
                ("uid", "I"),
                ("gid", "I"),
                ("pid", "i"),
                ("ppid", "i"),
                ("pgrp", "i"),
                ("sid", "i"),
                ("fname", "16s"),
                ("psargs", "80s"),
            ],
        ),  # fmt: skip
    )


_BY_CLASS = {
    (c, d): _layouts(c, d) for c in (ELFCLASS32, ELFCLASS64) for d in (ELFDATA2LSB, ELFDATA2MSB)
}


def for_class(elfclass: int, data: int = ELFDATA2LSB) -> ElfLayouts:
    """The ELF layouts for ``elfclass`` (ELFCLASS32/64) and ``data``
    (ELFDATA2LSB/MSB): the one chooser the ELF and kdump writers share."""
    try:
        return _BY_CLASS[elfclass, data]
    except KeyError:
        raise ValueError(f"no ELF layouts for class {elfclass}, data {data}") from None


#: The host's: a QEMU process core is x86_64, so ELF64 little-endian.
ELF64LE = for_class(ELFCLASS64, ELFDATA2LSB)
#: An i386 guest's ELF32 vmcore.
ELF32LE = for_class(ELFCLASS32, ELFDATA2LSB)


def ident(elfclass: int, data: int = ELFDATA2LSB) -> bytes:
    """e_ident for a SysV file of ``elfclass`` and byte order ``data``."""
    return ELFMAG + bytes([elfclass, data, EV_CURRENT]) + bytes(9)


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def note_bytes(
    name: bytes, note_type: int, desc: bytes, *, nhdr: Layout[Nhdr] = ELF64LE.nhdr
) -> bytes:
    """One ELF note: header, NUL-terminated name, desc, each padded to 4 bytes.

    Linux and QEMU pad to 4 bytes in ELF64 files too (the gABI's 8 is not used).
    ``nhdr`` gives the byte order (little-endian unless told).
    """
    namez = name + b"\0"
    return (
        nhdr.pack(namesz=len(namez), descsz=len(desc), type=note_type)
        + namez.ljust(align_up(len(namez), 4), b"\0")
        + desc.ljust(align_up(len(desc), 4), b"\0")
    )


class Note(NamedTuple):
    name: bytes
    type: int
    desc: bytes
    offset: int  # of the note header, relative to the buffer parsed


def iter_notes(
    buf: bytes, *, limit: int = 1 << 16, nhdr: Layout[Nhdr] = ELF64LE.nhdr
) -> Iterator[Note]:
    """Yield the notes in ``buf`` (a PT_NOTE segment's bytes).

    Stops at the first malformed note (sizes running past the buffer) and after
    ``limit`` notes, so a corrupt segment can neither loop nor overrun.
    """
    pos = 0
    for _ in range(limit):
        if pos + nhdr.size > len(buf):
            return
        h = nhdr.unpack_from(buf, pos)
        name_at = pos + nhdr.size
        desc_at = name_at + align_up(h.namesz, 4)
        end = desc_at + align_up(h.descsz, 4)
        if desc_at + h.descsz > len(buf):
            return
        name = bytes(buf[name_at : name_at + h.namesz]).rstrip(b"\0")
        yield Note(name, h.type, bytes(buf[desc_at : desc_at + h.descsz]), pos)
        pos = end


def malformed_note(
    buf: bytes, *, limit: int = 1 << 16, nhdr: Layout[Nhdr] = ELF64LE.nhdr
) -> tuple[int, str] | None:
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
        if pos + nhdr.size > len(buf):
            if not any(buf[pos:]):
                return None
            return pos, f"{len(buf) - pos} bytes after the last note, too few for a note header"
        h = nhdr.unpack_from(buf, pos)
        desc_at = pos + nhdr.size + align_up(h.namesz, 4)
        if desc_at + h.descsz > len(buf):
            return pos, (
                f"note type {h.type:#x} with namesz {h.namesz} and descsz {h.descsz} runs "
                f"{desc_at + h.descsz - len(buf):,} bytes past the end of the notes"
            )
        pos = desc_at + align_up(h.descsz, 4)
    return None


# -- x86 vCPU notes, laid out as QEMU's target/i386/arch_dump.c lays them out --

_X86_64_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs",
)  # fmt: skip


class X86_64Prstatus(NamedTuple):
    """x86_64_elf_prstatus: pr_pid and x86_64_user_regs_struct (the rest is zero)."""

    pid: int = 0
    r15: int = 0
    r14: int = 0
    r13: int = 0
    r12: int = 0
    rbp: int = 0
    rbx: int = 0
    r11: int = 0
    r10: int = 0
    r9: int = 0
    r8: int = 0
    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    orig_rax: int = 0
    rip: int = 0
    cs: int = 0
    eflags: int = 0
    rsp: int = 0
    ss: int = 0
    fs_base: int = 0
    gs_base: int = 0
    ds: int = 0
    es: int = 0
    fs: int = 0
    gs: int = 0


#: pad1[32], pid, pad2[76], the 27 registers, pad3[8].
X86_64_PRSTATUS = Layout("x86_64_elf_prstatus", X86_64Prstatus, "<", [
    (None, "32x"), ("pid", "I"), (None, "76x"), *((r, "Q") for r in _X86_64_REGS), (None, "8x"),
])  # fmt: skip


class I386Prstatus(NamedTuple):
    """x86_elf_prstatus: pr_pid and x86_user_regs_struct (the rest is zero)."""

    pid: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0
    esi: int = 0
    edi: int = 0
    ebp: int = 0
    eax: int = 0
    ds: int = 0
    es: int = 0
    fs: int = 0
    gs: int = 0
    orig_eax: int = 0
    eip: int = 0
    cs: int = 0
    eflags: int = 0
    esp: int = 0
    ss: int = 0


#: pad1[24], pid, pad2[44], the registers (each 16-bit selector followed by
#: its 16-bit __ds, __es ... padding, which QEMU leaves zero), pad3[4].
I386_PRSTATUS = Layout("x86_elf_prstatus", I386Prstatus, "<", [
    (None, "24x"), ("pid", "I"), (None, "44x"),
    ("ebx", "I"), ("ecx", "I"), ("edx", "I"), ("esi", "I"), ("edi", "I"), ("ebp", "I"),
    ("eax", "I"),
    ("ds", "H"), (None, "2x"), ("es", "H"), (None, "2x"), ("fs", "H"), (None, "2x"),
    ("gs", "H"), (None, "2x"),
    ("orig_eax", "I"), ("eip", "I"), ("cs", "H"), (None, "2x"), ("eflags", "I"), ("esp", "I"),
    ("ss", "H"), (None, "2x"), (None, "4x"),
])  # fmt: skip


class QemuCpuSegment(NamedTuple):
    """QEMUCPUSegment (target/i386/arch_dump.c)."""

    selector: int = 0
    limit: int = 0
    flags: int = 0
    base: int = 0


QEMU_CPU_SEGMENT = Layout("QEMUCPUSegment", QemuCpuSegment, "<", [
    ("selector", "I"), ("limit", "I"), ("flags", "I"), (None, "4x"), ("base", "Q"),
])  # fmt: skip


class QemuCpuStateHead(NamedTuple):
    """QEMUCPUState up to its segments: version, size and the general registers."""

    version: int = 0
    size: int = 0
    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0


class QemuCpuStateTail(NamedTuple):
    """QEMUCPUState after its segments: cr[5] and kernel_gs_base."""

    cr0: int = 0
    cr1: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    kernel_gs_base: int = 0


#: QEMUCPUState is QEMU_CPU_STATE_HEAD, then the 10 segments (cs, ds, es, fs,
#: gs, ss, ldt, tr, gdt, idt) as QEMU_CPU_SEGMENT, then QEMU_CPU_STATE_TAIL.
QEMU_CPU_STATE_HEAD = Layout("QEMUCPUState (head)", QemuCpuStateHead, "<",
                             [(n, "I" if n in ("version", "size") else "Q")
                              for n in QemuCpuStateHead._fields])  # fmt: skip
QEMU_CPU_STATE_TAIL = Layout("QEMUCPUState (tail)", QemuCpuStateTail, "<",
                             [(n, "Q") for n in QemuCpuStateTail._fields])  # fmt: skip
QEMU_CPU_STATE_SEGMENTS = 10
#: sizeof(QEMUCPUState), in bytes.
QEMU_CPU_STATE_SIZE = (
    QEMU_CPU_STATE_HEAD.size
    + QEMU_CPU_STATE_SEGMENTS * QEMU_CPU_SEGMENT.size
    + QEMU_CPU_STATE_TAIL.size
)
QEMUCPUSTATE_VERSION = 1
