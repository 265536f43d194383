"""drgn on the guest kernel, straight from the QEMU core: :func:`guest_program`.

No vmcore is written or served. drgn's Program gets:

- **guest-physical memory** as physical memory segments, one per piece of
  guest RAM whose bytes the core (or a backing file) holds, each read with
  one ``pread`` (:meth:`~qemu_vmcore.guest.physmem.GuestPhysicalMemory.readers`).
  drgn walks the guest's page tables over them for virtual addresses, as
  for any vmcore; RAM the core lacks is absent, so reading it is a
  ``drgn.FaultError`` (never invented zeros);
- the **VMCOREINFO** that :func:`qemu_vmcore.extract.prepare` found and
  verified, the one ``extract`` writes;
- the **vCPUs' registers**. drgn's custom-kernel target
  (``Program.set_linux_kernel_custom``) has no way to take them: a Linux
  program's on-CPU tasks get their registers only from NT_PRSTATUS notes
  of a core dump (with a PID of CPU + 1, as QEMU's dump writes them; or
  from the kernel's own ``crash_notes`` when VMCOREINFO has CRASHTIME, kdump's
  case), and no API adds a thread or its registers. So by default the
  program is opened with ``Program.set_core_dump`` on an in-memory ELF core
  (a memfd of a few KiB) holding only the headers and the notes the vmcore
  would hold (each vCPU's NT_PRSTATUS and QEMU note, VMCOREINFO) and no
  PT_LOAD, then given the physical segments above. Then ``prog.crashed_thread()``
  and ``prog.thread(tid).stack_trace()`` of a task running on a vCPU unwind
  from that vCPU's registers, as on the extracted vmcore. With
  ``registers=False`` the program is drgn's custom kernel proper: the same
  memory and VMCOREINFO, but a running task's stack trace fails
  ("registers for CPU N were not saved"), and a sleeping task's unwinds
  from its saved context either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.extract import Prepared, prepare
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.plan import DumpOptions
from qemu_vmcore.source import QemuCore, open_qemu_core
from qemu_vmcore.writers.elf import build_image

if TYPE_CHECKING:
    import drgn

#: The key of ``prog.config`` that keeps the opened core alive with the program.
CONFIG_KEY = "qemu_vmcore.core"


def prepare_guest(qc: QemuCore) -> Prepared:
    """What the program is made of: :func:`~qemu_vmcore.extract.prepare`'s
    decision for an ELF vmcore of all guest RAM (missing RAM allowed: it
    faults), which nothing writes.

    :raises VmcoreError: no VMCOREINFO (drgn cannot find the kernel without it).
    """
    prepared = prepare(qc, None, allow_missing=True, options=DumpOptions())
    if prepared.vmcoreinfo is None:
        search = qc.vmcoreinfo()
        raise VmcoreError(
            f"no VMCOREINFO found in guest RAM ({search.device_state}): drgn cannot find "
            "the guest kernel without it",
            hint="a guest without a Linux kernel (or one older than 2.6.24) has none",
        )
    return prepared


#: drgn's architecture for the e_machine of each 64-bit guest we dump.
_DRGN_ARCH = {E.EM_X86_64: "X86_64", E.EM_AARCH64: "AARCH64"}


def _platform(machine: int, elfclass: int) -> drgn.Platform:
    import drgn

    name = _DRGN_ARCH.get(machine)
    if name is not None and elfclass == E.ELFCLASS64:
        return drgn.Platform(
            getattr(drgn.Architecture, name),
            drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
        )
    raise VmcoreError(
        f"drgn reads 64-bit x86 and aarch64 guest kernels here; this guest's vmcore is "
        f"e_machine {machine} (ELF class {elfclass}): an x86 guest whose first vCPU is not "
        "in long mode",
        hint="extract writes its vmcore, for crash",
    )


def _head(prepared: Prepared) -> tuple[int, int, bytes]:
    """(e_machine, ELF class, the notes) of the vmcore ``prepared`` decided."""
    assert prepared.image is not None
    head = prepared.image.head
    elfclass = head[E.EI_CLASS]
    elf = E.for_class(elfclass, E.ELFDATA2LSB)
    ehdr = elf.ehdr.unpack_from(head)
    note = elf.phdr.unpack_from(head, ehdr.phoff)
    assert note.type == E.PT_NOTE
    return ehdr.machine, elfclass, head[note.offset : note.offset + note.filesz]


def vmcoreinfo_text(note: bytes) -> bytes:
    """The text of a VMCOREINFO ELF note (its descriptor)."""
    nhdr = E.ELF64LE.nhdr.unpack_from(note)
    start = E.ELF64LE.nhdr.size + E.align_up(nhdr.namesz, 4)
    return note[start : start + nhdr.descsz]


def program_of(prepared: Prepared, *, registers: bool = True) -> drgn.Program:
    """A drgn Program on the guest kernel of ``prepared`` (:func:`prepare_guest`),
    without debug info yet (:func:`load_symbols`)."""
    import drgn

    machine, elfclass, notes = _head(prepared)
    platform = _platform(machine, elfclass)
    assert prepared.vmcoreinfo is not None
    if registers:
        prog = drgn.Program(platform)
        elf = E.for_class(elfclass, E.ELFDATA2LSB)
        core = build_image([], notes, elf=elf, machine=machine)  # headers and notes only
        fd = os.memfd_create("qemu-vmcore-notes", os.MFD_CLOEXEC)
        try:
            os.write(fd, core.head)
        except BaseException:
            os.close(fd)
            raise
        prog.set_core_dump(fd)  # drgn owns the descriptor from here on
    else:
        text = vmcoreinfo_text(prepared.vmcoreinfo.note)
        prog = drgn.Program(platform, vmcoreinfo=text)
        prog.set_linux_kernel_custom(text, False)
    # The whole guest, as drgn sees a vmcore's: not the ranges a filter kept.
    for gpa, size, read in prepared.qc.memory.readers():
        prog.add_memory_segment(gpa, size, _segment_reader(read, drgn.FaultError), True)
    prog.config[CONFIG_KEY] = prepared.qc
    return prog


def _segment_reader(read, fault):
    """drgn's read_fn ``(address, count, offset, physical)`` over ``read(offset, count)``."""

    def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
        try:
            return read(offset, count)
        except (VmcoreError, OSError) as e:
            raise fault(getattr(e, "message", None) or str(e), address) from None

    return read_fn


def load_symbols(
    prog: drgn.Program,
    vmlinux: Iterable[str | os.PathLike[str]] = (),
    *,
    default_symbols: bool = True,
    release: str | None = None,
) -> None:
    """Load the guest kernel's debug info: the files ``vmlinux`` (a vmlinux,
    kernel modules' debug files) and, with ``default_symbols``, what drgn's
    finders find for the guest's kernel and modules (``/usr/lib/debug``,
    ``/lib/modules/RELEASE``, debuginfod), as ``drgn -s`` does.

    :raises VmcoreError: the guest kernel (vmlinux) is still without debug info.
    """
    import drgn

    paths = [os.fspath(p) for p in vmlinux]
    for p in paths:
        if not os.path.isfile(p):
            what = "no such file" if not os.path.exists(p) else "not a file"
            raise VmcoreError(f"{p}: {what} (named with -s as the guest's vmlinux)")
    try:
        prog.load_debug_info(paths, default=default_symbols, main=bool(paths) or default_symbols)
    except drgn.MissingDebugInfoError:
        pass  # modules without debug info are drgn's warnings; the kernel is ours to check
    try:
        main = prog.main_module()
    except LookupError:
        main = None
    if main is None or main.wants_debug_file():
        rel = release or "of the guest"
        given = f" ({', '.join(paths)} is not its vmlinux: another build?)" if paths else ""
        raise VmcoreError(
            f"no debug info for the guest kernel {rel} found{given}",
            hint=f"name the guest's vmlinux with -s VMLINUX (Debian: the package "
            f"linux-image-{release or 'RELEASE'}-dbg has /usr/lib/debug/boot/vmlinux-"
            f"{release or 'RELEASE'})",
        )


def guest_program(
    core: QemuCore | str | os.PathLike[str],
    vmlinux: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (),
    *,
    default_symbols: bool = True,
    registers: bool = True,
    qemu: Path | None = None,
    debug_file: Path | None = None,
    backing_files: bool = True,
    strict: bool = True,
) -> drgn.Program:
    """A :class:`drgn.Program` on the guest kernel in a QEMU process core, with no vmcore.

    >>> import qemu_vmcore
    >>> prog = qemu_vmcore.guest_program("core.12345", vmlinux="vmlinux-6.1.0-27-amd64")
    >>> prog["init_uts_ns"].name.release.string_()
    b'6.1.0-27-amd64'

    :param core: an opened :class:`~qemu_vmcore.source.QemuCore`, or the path
        of an uncompressed core (for a compressed one, open it with
        ``qemu_vmcore.source.core_file`` and ``open_qemu_core``). The core
        stays open as long as the program lives (``prog.config`` holds it).
    :param vmlinux: the guest kernel's vmlinux (or several debug files).
    :param default_symbols: also let drgn's finders look for debug info.
    :param registers: give drgn the vCPUs' registers (see the module's text).
    :param qemu, debug_file, backing_files, strict: as for
        :func:`~qemu_vmcore.source.open_qemu_core`, when ``core`` is a path.
    :raises VmcoreError: the core is no usable QEMU core, has no VMCOREINFO,
        or no debug info for its kernel is found.
    """
    if isinstance(vmlinux, (str, os.PathLike)):
        vmlinux = [vmlinux]
    qc = core
    if not isinstance(qc, QemuCore):
        qc = open_qemu_core(core, qemu=qemu, debug_file=debug_file,
                            backing_files=backing_files, strict=strict)  # fmt: skip
    try:
        prepared = prepare_guest(qc)
        prog = program_of(prepared, registers=registers)
        load_symbols(prog, vmlinux, default_symbols=default_symbols,
                     release=prepared.vmcoreinfo.osrelease)  # fmt: skip
    except BaseException:
        if qc is not core:
            qc.close()
        raise
    return prog
