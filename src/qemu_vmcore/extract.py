"""Extraction: what goes into the vmcore, and writing it.

The plan is decided from the opened core (guest ranges, ELF class, notes)
before any output exists, so every refusal happens before a byte is written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from qemu_vmcore.errors import CoreFileError, MissingMemoryError, VmcoreError
from qemu_vmcore.guest.physmem import BackingUse, Piece, PieceKind
from qemu_vmcore.guest.vmcoreinfo import START_KERNEL_MAP, VmcoreInfo
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.plan import DumpOptions, select_ranges
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.source import QemuCore
from qemu_vmcore.writers.copy import Progress
from qemu_vmcore.writers.elf import ELF32, ELF64, ElfImage, VirtualLoad, build_image, write_elf
from qemu_vmcore.writers.notes import vcpu_notes
from qemu_vmcore.writers.output import atomic_output, check_target

#: What the kernel's absence of bytes most likely means, for error messages.
_CAUSES = {
    PieceKind.NOT_DUMPED: (
        "QEMU ran with dump-guest-core=off, or the RAM is file-backed shared memory "
        "that the kernel's coredump_filter left out"
    ),
    PieceKind.TRUNCATED: "the core file is truncated",
    PieceKind.UNMAPPED: "QEMU's RAMBlock points outside every mapping in the core",
}
#: The same for RAM of a shared file mapping (Piece.path set).
_FILE_CAUSE = (
    "it is shared file-backed RAM, which the kernel's coredump_filter leaves out of cores, "
    "and its backing file {path} {problem}"
)


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract` wrote.

    :param missing: guest pieces the core lacked, written as zeros
        (only with ``allow_missing``).
    :param backing: guest RAM read from backing files instead of the core.
    """

    output: Path
    file_size: int
    ram_bytes: int
    ranges: int
    missing: list[Piece]
    seconds: float
    vmcoreinfo: VmcoreInfo | None = None
    format: str = "elf"
    backing: tuple[BackingUse, ...] = ()
    #: Disagreements in QEMU's state accepted with ``--accept-inconsistent``
    #: (see qemu/crosscheck.py), one line each.
    inconsistencies: tuple[str, ...] = ()


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
    # The note is guest data: an address past 2**64 fits no p_vaddr.
    if stext is None or not START_KERNEL_MAP <= stext < 1 << 64:
        return None
    image_size = info.number("KERNEL_IMAGE_SIZE") or (1 << 30)
    size = image_size - (stext - START_KERNEL_MAP)
    gpa = info.kernel_image_pa(stext)
    if size <= 0 or not any(r.gpa <= gpa < r.end for r in ranges):
        return None
    return VirtualLoad(vaddr=stext, gpa=gpa, size=size)


def describe_missing(
    pieces: list[Piece], *, limit: int = 4, problems: dict[str, str] | None = None
) -> str:
    """One line naming the missing guest ranges and the likely cause.

    :param problems: why each backing file (by path) could not be read.
    """
    shown = ", ".join(f"{p.gpa:#x}-{p.end:#x} ({p.kind.value})" for p in pieces[:limit])
    more = f" and {len(pieces) - limit} more" if len(pieces) > limit else ""
    total = sum(p.size for p in pieces)
    causes = "; or ".join(dict.fromkeys(_cause(p, problems or {}) for p in pieces))
    return (
        f"{total:,} bytes of guest RAM are not in the core: {shown}{more}. Likely cause: {causes}"
    )


def _cause(p: Piece, problems: dict[str, str]) -> str:
    if p.path is not None and p.kind is PieceKind.NOT_DUMPED:
        return _FILE_CAUSE.format(path=p.path, problem=problems.get(p.path, "cannot be read"))
    return _CAUSES[p.kind]


def missing_hint(missing: list[Piece], problems: dict[str, str]) -> str:
    """What to do about guest RAM the core lacks."""
    off = [path for path, why in problems.items() if "turned off" in why]
    if any(p.path in off for p in missing):
        return "drop --no-backing-files to read it from there, or --allow-missing writes zeros"
    return "--allow-missing writes zeros there instead"


def extract(
    qc: QemuCore,
    output: Path,
    *,
    force: bool = False,
    allow_missing: bool = False,
    vmcoreinfo: bool = True,
    progress: Progress = lambda n: None,
    options: DumpOptions | None = None,
) -> ExtractResult:
    """Write the vmcore of ``qc``'s guest to ``output`` (ELF unless ``options`` say otherwise).

    :param vmcoreinfo: add the guest's VMCOREINFO note (and a kernel-text
        PT_LOAD) when one is found; False skips the search.
    :param options: format, paging and begin/length (see :mod:`qemu_vmcore.plan`).
    :raises MissingMemoryError: guest RAM is absent from the core and
        ``allow_missing`` is false.
    :raises OutputError: the output cannot be created or written.
    """
    started = time.monotonic()
    options = options or DumpOptions()
    options.check()
    inputs = (qc.host.path,)  # never replaced by the vmcore, even with force
    check_target(output, force=force, inputs=inputs)
    ranges = select_ranges(qc.ranges, options)
    # A filter dumps parts of the ranges: the same core, seen through clipped ranges.
    memory = qc.memory if ranges is qc.ranges else qc.memory.with_ranges(ranges)
    missing = memory.missing()
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
            describe_missing(missing, problems=memory.backing_problems),
            hint=missing_hint(missing, memory.backing_problems),
            missing=missing,
        )
    elfclass, machine = qc.elf_arch()
    notes = vcpu_notes(qc.vcpus, elfclass=elfclass)
    info = qc.vmcoreinfo().chosen if vmcoreinfo else None
    if info is not None:
        notes += info.note
    if options.kdump:
        from qemu_vmcore.writers import kdump

        layout, method = kdump_layout(qc, ranges, notes, info, elfclass, options)
        with atomic_output(output, force=force, inputs=inputs) as fd:
            kdump.write_kdump(fd, layout, memory, method, flattened=options.flattened,
                              threads=options.thread_count(), progress=progress)  # fmt: skip
            file_size = os.fstat(fd).st_size
    else:
        image = elf_image(qc, ranges, notes, info, options)
        with atomic_output(output, force=force, inputs=inputs) as fd:
            write_elf(fd, image, memory, progress)
        file_size = image.file_size
    return ExtractResult(
        output=output,
        file_size=file_size,
        ram_bytes=sum(r.size for r in ranges),
        ranges=len(ranges),
        missing=missing,
        seconds=time.monotonic() - started,
        vmcoreinfo=info,
        format=options.format,
        backing=tuple(memory.backing_uses()),
        inconsistencies=tuple(p.message for p in qc.inconsistencies),
    )


def elf_image(
    qc: QemuCore,
    ranges: list[GuestRange],
    notes: bytes,
    info: VmcoreInfo | None,
    options: DumpOptions,
) -> ElfImage:
    """The ELF vmcore's layout: PT_LOADs of the ranges, or with ``paging``
    of the guest's virtual mappings (QEMU's paging dump)."""
    elfclass, machine = qc.elf_arch()
    elf = ELF64 if elfclass == E.ELFCLASS64 else ELF32
    mappings, loads = None, []
    if options.paging:
        from qemu_vmcore.arch.x86 import paging as x86_paging

        mappings = x86_paging.guest_mappings(qc.memory, qc.vcpus, qc.ranges)
        if options.filtered:
            mappings = x86_paging.filter_mappings(mappings, options.begin, options.end)
    elif info is not None and machine == E.EM_X86_64:
        text = kernel_text_load(info, ranges)
        loads = [text] if text else []
    return build_image(
        ranges,
        notes or minimal_notes(),
        elf=elf,
        machine=machine,
        virtual_loads=loads,
        mappings=mappings,
    )


def kdump_layout(
    qc: QemuCore,
    ranges: list[GuestRange],
    notes: bytes,
    info: VmcoreInfo | None,
    elfclass: int,
    options: DumpOptions,
):
    """The kdump-compressed file's layout and compression method."""
    from qemu_vmcore.writers import kdump
    from qemu_vmcore.writers.compress import METHODS, compressor

    if not ranges:
        raise VmcoreError("the guest has no RAM to dump")
    method = METHODS[options.compression]
    compressor(method)  # refuse now, before any output, if its library is missing
    _, machine = qc.elf_arch()
    layout = kdump.build_layout(
        qc.ranges,
        kdump.page_runs(ranges),
        notes,
        flag=method.flag,
        elfclass64=elfclass == E.ELFCLASS64,
        machine=b"x86_64" if machine == E.EM_X86_64 else b"i686",
        nr_cpus=len(qc.vcpus),
        phys_base=info.phys_base if info is not None else 0,
        vmcoreinfo_note=info.note if info is not None else None,
    )
    return layout, method
