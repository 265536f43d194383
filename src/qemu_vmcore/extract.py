"""Extraction in two steps: :func:`prepare` decides the vmcore, :func:`write` writes it.

Everything is decided from the opened core (guest ranges, ELF class, notes,
the layout, what is missing) before any output exists, so every refusal
happens before a byte is written, and both front ends (the CLI and the gdb
command) show the same warnings from the same :class:`Prepared` data.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from qemu_vmcore.arch import DumpArch
from qemu_vmcore.errors import CoreFileError, MissingMemoryError, VmcoreError
from qemu_vmcore.guest.paging import KernelLayout, PhysicalReader, filter_mappings
from qemu_vmcore.guest.physmem import BackingUse, GuestPhysicalMemory, Piece, PieceKind
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts.kdump import PAGE_SIZE as K_PAGE_SIZE
from qemu_vmcore.plan import DumpOptions, select_ranges
from qemu_vmcore.qemu.memory import GuestRange, MapSource
from qemu_vmcore.source import QemuCore
from qemu_vmcore.writers.copy import Progress
from qemu_vmcore.writers.elf import ElfImage, VirtualLoad, build_image, write_elf
from qemu_vmcore.writers.output import atomic_output, check_target

#: Refuse an output before the slow part (opening the core); prepare() checks again.
check_output = check_target

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
    #: ``tcg``, ``kvm``...: with an accelerator the registers may be stale.
    accelerator: str = "tcg"
    #: Whether the VMCOREINFO search stopped at its candidate limit.
    vmcoreinfo_capped: bool = False
    #: Where the guest-physical map came from (qemu.memory.MapSource).
    map_source: MapSource | None = None


def minimal_notes() -> bytes:
    """A single empty note, so that consumers' ELF note parsers accept the file.

    Used only when there is nothing else to say: no vCPU and no VMCOREINFO
    (QEMU's gdb script writes the same placeholder).
    """
    return E.note_bytes(b"NONE", 0, b"EMPTY")


def kernel_text_load(
    layout: KernelLayout | None, ranges: list[GuestRange], mem: PhysicalReader
) -> VirtualLoad | None:
    """A PT_LOAD mapping the kernel image's virtual addresses, as kexec writes one.

    vmcore-dmesg and makedumpfile translate SYMBOL() addresses through PT_LOAD
    virtual addresses; with paging=false QEMU writes none, so they find no
    kernel symbol in QEMU's own dump (tests/e2e/test_e2e_consumers.py runs
    them on ours). It starts at SYMBOL(_stext) and runs as far as the arch's
    kernel layout says (``KernelLayout.text_load``), when it starts in RAM.
    """
    text = layout.text_load(mem) if layout is not None else None
    # The note is guest data: an address past 2**64 fits no p_vaddr.
    if text is None or text.size <= 0 or not 0 <= text.vaddr < text.vaddr + text.size <= 1 << 64:
        return None
    if not any(r.gpa <= text.paddr < r.end for r in ranges):
        return None
    return VirtualLoad(vaddr=text.vaddr, gpa=text.paddr, size=text.size)


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


@dataclass
class Prepared:
    """A vmcore decided but not yet written: every check passed, nothing created.

    Built by :func:`prepare`; :func:`write` writes it. Between the two, a
    front end shows the warnings (:func:`qemu_vmcore.report.prepared_dict`
    and :func:`qemu_vmcore.report.warning_lines`) and starts its progress
    display for ``total`` bytes.

    :param total: bytes of guest RAM the write goes through (progress units).
    :param missing: guest pieces the core lacks, to be written as zeros.
    :param backing: guest RAM that will be read from backing files.
    """

    qc: QemuCore
    #: None: decided to be served (``mount``) or read (``drgn``), not written.
    output: Path | None
    force: bool
    options: DumpOptions
    ranges: list[GuestRange]
    memory: GuestPhysicalMemory
    missing: list[Piece]
    backing: tuple[BackingUse, ...]
    vmcoreinfo: VmcoreInfo | None
    #: Whether the VMCOREINFO search stopped at its candidate limit.
    vmcoreinfo_capped: bool
    total: int
    image: ElfImage | None = None
    kdump: tuple | None = None  # (layout, method) for the kdump formats

    @property
    def accelerator(self) -> str:
        return self.qc.accelerator

    @property
    def map_source(self) -> MapSource:
        return self.qc.map_source

    @property
    def inconsistencies(self) -> tuple[str, ...]:
        """Disagreements accepted with ``--accept-inconsistent``, one line each."""
        return tuple(i.message for i in self.qc.inconsistencies)


def prepare(
    qc: QemuCore,
    output: Path | None,
    *,
    force: bool = False,
    allow_missing: bool = False,
    vmcoreinfo: bool = True,
    options: DumpOptions | None = None,
) -> Prepared:
    """Decide the vmcore of ``qc``'s guest, making every check once; write nothing.

    :param vmcoreinfo: add the guest's VMCOREINFO note (and a kernel-text
        PT_LOAD) when one is found; False skips the search.
    :param options: format, paging and begin/length (see :mod:`qemu_vmcore.plan`).
    :param output: None for a vmcore that is never written (writers/view.py
        serves it; guest_program reads its notes).
    :raises MissingMemoryError: guest RAM is absent from the core and
        ``allow_missing`` is false.
    :raises OutputError: ``output`` cannot be the vmcore (see ``check_target``).
    """
    options = options or DumpOptions()
    options.check()
    if output is not None:
        check_target(output, force=force, inputs=(qc.host.path,))
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
    arch = qc.dump_arch  # decided once, for the notes and the layout
    notes = qc.arch.vcpu_notes(qc.vcpus, arch)
    search = qc.vmcoreinfo() if vmcoreinfo else None
    info = search.chosen if search is not None else None
    if info is not None:
        notes += info.note
    prepared = Prepared(
        qc=qc,
        output=output,
        force=force,
        options=options,
        ranges=ranges,
        memory=memory,
        missing=missing,
        backing=tuple(memory.backing_uses()),
        vmcoreinfo=info,
        vmcoreinfo_capped=bool(search and search.capped),
        total=sum(r.size for r in ranges),
    )
    if options.kdump:
        prepared.kdump = kdump_layout(qc, ranges, notes, info, arch, options)
    else:
        prepared.image = elf_image(qc, ranges, notes, info, arch, options)
    return prepared


def write(prepared: Prepared, progress: Progress = lambda n: None) -> ExtractResult:
    """Write what :func:`prepare` decided; the file appears whole, or not at all.

    :param progress: called with each number of guest bytes dealt with
        (``prepared.total`` in all).
    :raises OutputError: the output cannot be created or written.
    """
    started = time.monotonic()
    p, qc = prepared, prepared.qc
    assert p.output is not None, "prepared with no output: serve it (writers/view.py)"
    inputs = (qc.host.path,)  # never replaced by the vmcore, even with force
    if p.kdump is not None:
        from qemu_vmcore.writers import kdump

        layout, method = p.kdump
        with atomic_output(p.output, force=p.force, inputs=inputs) as fd:
            kdump.write_kdump(fd, layout, p.memory, method, flattened=p.options.flattened,
                              threads=p.options.thread_count(), progress=progress)  # fmt: skip
            file_size = os.fstat(fd).st_size
    else:
        assert p.image is not None
        with atomic_output(p.output, force=p.force, inputs=inputs) as fd:
            write_elf(fd, p.image, p.memory, progress)
        file_size = p.image.file_size
    return ExtractResult(
        output=p.output,
        file_size=file_size,
        ram_bytes=p.total,
        ranges=len(p.ranges),
        missing=p.missing,
        seconds=time.monotonic() - started,
        vmcoreinfo=p.vmcoreinfo,
        format=p.options.format,
        backing=p.backing,
        inconsistencies=p.inconsistencies,
        accelerator=p.accelerator,
        vmcoreinfo_capped=p.vmcoreinfo_capped,
        map_source=p.map_source,
    )


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
    """:func:`prepare` and :func:`write` in one: the vmcore of ``qc``'s guest at ``output``."""
    prepared = prepare(qc, output, force=force, allow_missing=allow_missing,
                       vmcoreinfo=vmcoreinfo, options=options)  # fmt: skip
    return write(prepared, progress)


def extract_in_gdb(core: Path, output: Path, **options: object) -> dict:
    """The CLI's ``extract --backend gdb``: the gdb command run in ``gdb -batch``;
    what it wrote, as :func:`qemu_vmcore.report.extract_dict` data.

    :param options: the fields of :class:`qemu_vmcore.debugger.gdb_batch.GdbExtract`.
    """
    # Imported here: only this path needs it, and extract's start-up does not.
    from qemu_vmcore.debugger import gdb_batch

    return gdb_batch.extract_in_gdb(gdb_batch.GdbExtract(core=core, output=output, **options))


def gdb_script_path() -> Path:
    """The gdb command script to ``source`` in gdb (``qemu-vmcore gdb-script``)."""
    from qemu_vmcore.debugger.gdb_batch import script_path

    return script_path()


def elf_image(
    qc: QemuCore,
    ranges: list[GuestRange],
    notes: bytes,
    info: VmcoreInfo | None,
    arch: DumpArch,
    options: DumpOptions,
) -> ElfImage:
    """The ELF vmcore's layout: PT_LOADs of the ranges, or with ``paging``
    of the guest's virtual mappings (QEMU's paging dump).

    :param arch: from ``QemuCore.dump_arch``.
    """
    elf = E.for_class(arch.elfclass, arch.byteorder)
    mappings, loads = None, []
    if options.paging:
        mappings = qc.arch.guest_mappings(qc.memory, qc.vcpus, qc.ranges)
        if options.filtered:
            mappings = filter_mappings(mappings, options.begin, options.end)
    elif info is not None and arch.kernel_layout_known:
        text = kernel_text_load(qc.arch.kernel_layout(info), ranges, qc.memory)
        loads = [text] if text else []
    return build_image(
        ranges,
        notes or minimal_notes(),
        elf=elf,
        machine=arch.machine,
        virtual_loads=loads,
        mappings=mappings,
    )


def kdump_layout(
    qc: QemuCore,
    ranges: list[GuestRange],
    notes: bytes,
    info: VmcoreInfo | None,
    arch: DumpArch,
    options: DumpOptions,
):
    """The kdump-compressed file's layout and compression method.

    :param arch: from ``QemuCore.dump_arch``.
    """
    from qemu_vmcore.writers import kdump
    from qemu_vmcore.writers.compress import METHODS, compressor

    if not ranges:
        raise VmcoreError("the guest has no RAM to dump")
    method = METHODS[options.compression]
    compressor(method)  # refuse now, before any output, if its library is missing
    page = info.fields.get("PAGESIZE") if info is not None else None
    if page is not None and page != str(K_PAGE_SIZE):
        # makedumpfile's block size is the kernel's page size; ours is 4 KiB.
        raise VmcoreError(
            f"the guest kernel uses {page}-byte pages (VMCOREINFO PAGESIZE), but the kdump "
            f"formats are written with {K_PAGE_SIZE}-byte blocks",
            hint="--format elf writes this guest's vmcore",
        )
    kernel = qc.arch.kernel_layout(info) if info is not None else None
    layout = kdump.build_layout(
        qc.ranges,
        kdump.page_runs(ranges),
        notes,
        flag=method.flag,
        elf=E.for_class(arch.elfclass, arch.byteorder),
        machine=arch.uts_machine,
        nr_cpus=len(qc.vcpus),
        phys_base=kernel.phys_base if kernel is not None else 0,
        vmcoreinfo_note=info.note if info is not None else None,
    )
    return layout, method
