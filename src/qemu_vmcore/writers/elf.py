"""The ELF vmcore writer (what QMP ``dump-guest-memory`` with format elf writes).

File layout::

    Elf{32,64}_Ehdr                        offset 0
    Elf_Phdr PT_NOTE, then one PT_LOAD per guest range   offset 64 (ELF64)
    [Elf_Shdr 0, only when PT_LOADs overflow e_phnum: PN_XNUM]
    notes
    padding to a page boundary
    guest RAM, range after range

Program headers come straight after the ELF header because makedumpfile
1.7.2 reads them at offset 64 whatever e_phoff says. Guest RAM
starts page-aligned so that holes in the core map onto holes in the output.
For paging=false QEMU writes p_vaddr = p_paddr; so do we.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass

from qemu_vmcore.fileio import pwrite_all
from qemu_vmcore.guest.paging import Mapping
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.writers.copy import Progress, copy_spans

PAGE_SIZE = 4096


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
    elf: E.ElfLayouts = E.ELF64LE,
    machine: int = E.EM_X86_64,
    virtual_loads: Sequence[VirtualLoad] = (),
    mappings: Sequence[Mapping] | None = None,
) -> ElfImage:
    """Lay out an ELF vmcore holding ``ranges``, the ``notes`` blob and
    ``virtual_loads`` (placed after the RAM PT_LOADs).

    With ``mappings`` (paging), the PT_LOADs are the mappings instead of the
    ranges, as QEMU writes them with paging: each points at the RAM of the
    range holding its first physical address, its file size clipped to that
    range (0 when its start is in none); the RAM is laid out all the same.
    """
    if mappings is not None:
        mappings = _fitting(mappings, elf)
    phnum = 1 + (len(ranges) if mappings is None else len(mappings)) + len(virtual_loads)
    xnum = phnum >= E.PN_XNUM
    phoff = elf.ehdr.size
    shoff = phoff + phnum * elf.phdr.size if xnum else 0
    notes_offset = phoff + phnum * elf.phdr.size + (elf.shdr.size if xnum else 0)
    data_offset = E.align_up(notes_offset + len(notes), PAGE_SIZE)

    placements, offset = [], data_offset
    for r in ranges:
        placements.append(Placement(r, offset))
        offset += r.size
    if mappings is None:
        loads = [E.Phdr(type=E.PT_LOAD, offset=p.file_offset, vaddr=p.range.gpa,
                        paddr=p.range.gpa, filesz=p.range.size, memsz=p.range.size)
                 for p in placements]  # fmt: skip
    else:
        loads = _mapping_loads(placements, mappings)
    for v in virtual_loads:
        place = next(p for p in placements if p.range.gpa <= v.gpa < p.range.end)
        size = min(v.size, place.range.end - v.gpa)
        at = place.file_offset + (v.gpa - place.range.gpa)
        loads.append(E.Phdr(type=E.PT_LOAD, offset=at, vaddr=v.vaddr, paddr=v.gpa,
                            filesz=size, memsz=size))  # fmt: skip
    note = E.Phdr(type=E.PT_NOTE, offset=notes_offset, filesz=len(notes), memsz=len(notes))
    phdrs = [note, *loads]

    # e_entry, e_flags and e_shstrndx (SHN_UNDEF) stay zero, as QEMU writes them.
    ehdr = elf.ehdr.pack(
        ident=elf.ident(),
        type=E.ET_CORE,
        machine=machine,
        version=E.EV_CURRENT,
        phoff=phoff,
        shoff=shoff,
        ehsize=elf.ehdr.size,
        phentsize=elf.phdr.size,
        phnum=E.PN_XNUM if xnum else phnum,
        shentsize=elf.shdr.size if xnum else 0,
        shnum=1 if xnum else 0,
    )
    head = bytearray(ehdr)
    head += b"".join(elf.phdr.pack(p) for p in phdrs)
    if xnum:
        # Section 0 carries the real phnum in sh_info (ELF gABI, "Extended numbering").
        head += elf.shdr.pack(info=phnum)
    head += notes
    return ElfImage(bytes(head), placements, offset)


def _fitting(mappings: Sequence[Mapping], elf: E.ElfLayouts) -> list[Mapping]:
    """The mappings an ELF file of class ``elf`` can hold (ELF32: below 4 GiB)."""
    if elf.elfclass == E.ELFCLASS64:
        return list(mappings)
    return [m for m in mappings if m.vaddr + m.size <= 1 << 32 and m.end <= 1 << 32]


def _mapping_loads(placements: Sequence[Placement], mappings: Sequence[Mapping]) -> list[E.Phdr]:
    """One PT_LOAD per mapping, by QEMU's get_offset_range() rules."""
    starts = [p.range.gpa for p in placements]
    loads = []
    for m in mappings:
        i = bisect.bisect_right(starts, m.paddr) - 1
        offset = filesz = 0
        if i >= 0 and m.paddr < placements[i].range.end:
            place = placements[i]
            offset = place.file_offset + (m.paddr - place.range.gpa)
            filesz = min(m.size, place.range.end - m.paddr)
        loads.append(E.Phdr(type=E.PT_LOAD, offset=offset, vaddr=m.vaddr, paddr=m.paddr,
                            filesz=filesz, memsz=m.size))  # fmt: skip
    return loads


def write_elf(fd: int, image: ElfImage, memory: GuestPhysicalMemory, progress: Progress) -> None:
    """Write ``image`` to ``fd`` (a new, empty file), copying guest RAM sparsely."""
    os.ftruncate(fd, image.file_size)
    pwrite_all(fd, image.head, 0)
    placements = [(p.range, p.file_offset) for p in image.placements]
    total = sum(p.range.size for p in image.placements)
    copy_spans(fd, memory.mapping(placements), total, progress)
