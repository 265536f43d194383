"""Extraction: what goes into the vmcore, and writing it.

The plan is decided from the opened core (guest ranges, ELF class, notes)
before any output exists, so every refusal happens before a byte is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from qemu_vmcore import elfdefs as E
from qemu_vmcore.errors import CoreFileError, MissingMemoryError
from qemu_vmcore.guest.physmem import Piece, PieceKind, Progress
from qemu_vmcore.guest.vmcoreinfo import START_KERNEL_MAP, VmcoreInfo
from qemu_vmcore.output import atomic_output, check_target
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.source import QemuCore
from qemu_vmcore.writers.elf import ELF32, ELF64, VirtualLoad, build_image, write_elf
from qemu_vmcore.writers.notes import vcpu_notes

#: What the kernel's absence of bytes most likely means, for error messages.
_CAUSES = {
    PieceKind.NOT_DUMPED: (
        "QEMU ran with dump-guest-core=off, or the RAM is file-backed shared memory "
        "that the kernel's coredump_filter left out"
    ),
    PieceKind.TRUNCATED: "the core file is truncated",
    PieceKind.UNMAPPED: "QEMU's RAMBlock points outside every mapping in the core",
}


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract` wrote.

    :param missing: guest pieces the core lacked, written as zeros
        (only with ``allow_missing``).
    """

    output: Path
    file_size: int
    ram_bytes: int
    ranges: int
    missing: list[Piece]
    seconds: float
    vmcoreinfo: VmcoreInfo | None = None


def minimal_notes() -> bytes:
    """A single empty note, so that consumers' ELF note parsers accept the file.

    Used only when there is nothing else to say: no vCPU and no VMCOREINFO
    (QEMU's gdb script writes the same placeholder).
    """
    return E.note_bytes(b"NONE", 0, b"EMPTY")


def kernel_text_load(info: VmcoreInfo, ranges: list[GuestRange]) -> VirtualLoad | None:
    """A PT_LOAD mapping the kernel image's virtual addresses, as kexec writes one.

    vmcore-dmesg and makedumpfile translate SYMBOL() addresses through PT_LOAD
    virtual addresses; with paging=false QEMU writes none (DESIGN.md, "What
    the consumers need"). It starts at SYMBOL(_stext) and runs to the end of
    the kernel image mapping (NUMBER(KERNEL_IMAGE_SIZE)), clipped to its RAM.
    """
    stext = info.symbol("_stext")
    if stext is None or stext < START_KERNEL_MAP:
        return None
    image_size = info.number("KERNEL_IMAGE_SIZE") or (1 << 30)
    size = image_size - (stext - START_KERNEL_MAP)
    gpa = info.kernel_image_pa(stext)
    if size <= 0 or not any(r.gpa <= gpa < r.end for r in ranges):
        return None
    return VirtualLoad(vaddr=stext, gpa=gpa, size=size)


def describe_missing(pieces: list[Piece], *, limit: int = 4) -> str:
    """One line naming the missing guest ranges and the likely cause."""
    shown = ", ".join(f"{p.gpa:#x}-{p.end:#x} ({p.kind.value})" for p in pieces[:limit])
    more = f" and {len(pieces) - limit} more" if len(pieces) > limit else ""
    total = sum(p.size for p in pieces)
    causes = "; or ".join(dict.fromkeys(_CAUSES[p.kind] for p in pieces))
    return (
        f"{total:,} bytes of guest RAM are not in the core: {shown}{more}. Likely cause: {causes}"
    )


def extract(
    qc: QemuCore,
    output: Path,
    *,
    force: bool = False,
    allow_missing: bool = False,
    vmcoreinfo: bool = True,
    progress: Progress = lambda n: None,
) -> ExtractResult:
    """Write the ELF vmcore of ``qc``'s guest to ``output``.

    :param vmcoreinfo: add the guest's VMCOREINFO note (and a kernel-text
        PT_LOAD) when one is found; False skips the search.
    :raises MissingMemoryError: guest RAM is absent from the core and
        ``allow_missing`` is false.
    :raises OutputError: the output cannot be created or written.
    """
    started = time.monotonic()
    check_target(output, force=force)
    missing = qc.memory.missing()
    if qc.host.truncated and not allow_missing:
        host = qc.host
        lost = describe_missing(missing) if missing else "all guest RAM is still present"
        raise CoreFileError(
            f"{host.path}: truncated core ({host.file_size:,} of {host.expected_size:,} "
            f"bytes): {lost}",
            hint="--allow-missing extracts what is there",
            path=host.path,
        )
    if missing and not allow_missing:
        raise MissingMemoryError(
            describe_missing(missing),
            hint="--allow-missing writes zeros there instead",
            missing=missing,
        )
    elfclass, machine = qc.elf_arch()
    elf = ELF64 if elfclass == E.ELFCLASS64 else ELF32
    notes = vcpu_notes(qc.vcpus, elfclass=elfclass)
    info = qc.vmcoreinfo().chosen if vmcoreinfo else None
    loads = []
    if info is not None:
        notes += info.note
        text = kernel_text_load(info, qc.ranges) if machine == E.EM_X86_64 else None
        loads = [text] if text else []
    image = build_image(
        qc.ranges, notes or minimal_notes(), elf=elf, machine=machine, virtual_loads=loads
    )
    with atomic_output(output, force=force) as fd:
        write_elf(fd, image, qc.memory, progress)
    return ExtractResult(
        output=output,
        file_size=image.file_size,
        ram_bytes=qc.ram_total,
        ranges=len(qc.ranges),
        missing=missing,
        seconds=time.monotonic() - started,
        vmcoreinfo=info,
    )
