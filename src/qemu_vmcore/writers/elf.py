"""The ELF vmcore writer (what QMP ``dump-guest-memory`` with format elf writes).

File layout::

    Elf{32,64}_Ehdr                        offset 0
    Elf_Phdr PT_NOTE, then one PT_LOAD per guest range   offset 64 (ELF64)
    [Elf_Shdr 0, only when PT_LOADs overflow e_phnum: PN_XNUM]
    notes
    padding to a page boundary
    guest RAM, range after range

Program headers come straight after the ELF header because makedumpfile
1.7.2 reads them at offset 64 whatever e_phoff says (see DESIGN.md). Guest RAM
starts page-aligned so that holes in the core map onto holes in the output.
For paging=false QEMU writes p_vaddr = p_paddr; so do we.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from qemu_vmcore import elfdefs as E
from qemu_vmcore.guest.physmem import GuestPhysicalMemory, Progress
from qemu_vmcore.qemu.memory import GuestRange

PAGE_SIZE = 4096


@dataclass(frozen=True)
class ElfClass:
    """The per-class structures: ELF64 for x86_64 guests, ELF32 for i386."""

    elfclass: int
    ehdr: object
    phdr: object
    shdr: object

    def pack_phdr(self, p: E.Phdr) -> bytes:
        if self.elfclass == E.ELFCLASS64:
            return self.phdr.pack(*p)
        # Elf32_Phdr orders its fields differently: flags come after memsz.
        return self.phdr.pack(
            p.type, p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.flags, p.align
        )


ELF64 = ElfClass(E.ELFCLASS64, E.EHDR64, E.PHDR64, E.SHDR64)
ELF32 = ElfClass(E.ELFCLASS32, E.EHDR32, E.PHDR32, E.SHDR32)


@dataclass(frozen=True)
class Placement:
    """Where one guest range's bytes go in the output file."""

    range: GuestRange
    file_offset: int


@dataclass(frozen=True)
class VirtualLoad:
    """An extra PT_LOAD giving guest RAM a virtual address, as kexec's
    /proc/vmcore gives the kernel text one.

    Its file bytes are those already written for ``[gpa, gpa + size)``; the
    range must lie inside one guest range.
    """

    vaddr: int
    gpa: int
    size: int


@dataclass(frozen=True)
class ElfImage:
    """Everything but the guest RAM, plus where that RAM goes.

    :param head: bytes for offset 0 (headers and notes).
    :param placements: each guest range and its file offset.
    :param file_size: total output size in bytes.
    """

    head: bytes
    placements: list[Placement]
    file_size: int


def build_image(
    ranges: Sequence[GuestRange],
    notes: bytes,
    *,
    elf: ElfClass = ELF64,
    machine: int = E.EM_X86_64,
    virtual_loads: Sequence[VirtualLoad] = (),
) -> ElfImage:
    """Lay out an ELF vmcore holding ``ranges``, the ``notes`` blob and
    ``virtual_loads`` (placed after the RAM PT_LOADs)."""
    phnum = 1 + len(ranges) + len(virtual_loads)
    xnum = phnum >= E.PN_XNUM
    phoff = elf.ehdr.size
    shoff = phoff + phnum * elf.phdr.size if xnum else 0
    notes_offset = phoff + phnum * elf.phdr.size + (elf.shdr.size if xnum else 0)
    data_offset = E.align_up(notes_offset + len(notes), PAGE_SIZE)

    placements, phdrs = [], [E.Phdr(E.PT_NOTE, 0, notes_offset, 0, 0, len(notes), len(notes), 0)]
    offset = data_offset
    for r in ranges:
        placements.append(Placement(r, offset))
        phdrs.append(E.Phdr(E.PT_LOAD, 0, offset, r.gpa, r.gpa, r.size, r.size, 0))
        offset += r.size
    for v in virtual_loads:
        place = next(p for p in placements if p.range.gpa <= v.gpa < p.range.end)
        size = min(v.size, place.range.end - v.gpa)
        at = place.file_offset + (v.gpa - place.range.gpa)
        phdrs.append(E.Phdr(E.PT_LOAD, 0, at, v.vaddr, v.gpa, size, size, 0))

    ehdr = elf.ehdr.pack(
        E.ident(elf.elfclass),
        E.ET_CORE,
        machine,
        E.EV_CURRENT,
        0,  # e_entry
        phoff,
        shoff,
        0,  # e_flags
        elf.ehdr.size,
        elf.phdr.size,
        E.PN_XNUM if xnum else phnum,
        elf.shdr.size if xnum else 0,
        1 if xnum else 0,
        0,  # e_shstrndx (SHN_UNDEF)
    )
    head = bytearray(ehdr)
    head += b"".join(elf.pack_phdr(p) for p in phdrs)
    if xnum:
        # Section 0 carries the real phnum in sh_info (ELF gABI, "Extended numbering").
        head += elf.shdr.pack(0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
    head += notes
    return ElfImage(bytes(head), placements, offset)


def write_elf(fd: int, image: ElfImage, memory: GuestPhysicalMemory, progress: Progress) -> None:
    """Write ``image`` to ``fd`` (a new, empty file), copying guest RAM sparsely."""
    os.ftruncate(fd, image.file_size)
    _pwrite_all(fd, image.head, 0)
    memory.copy_to(fd, [(p.range, p.file_offset) for p in image.placements], progress)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
