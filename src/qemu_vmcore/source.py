"""Opening a QEMU core: the host core, QEMU's state in it, and the guest memory.

This is where the layers are stacked: host/ -> debugger/ -> qemu/ (and the
guest's arch/ room) -> guest/. Everything above (extract, report, the front
ends) starts here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from qemu_vmcore import arch as arches
from qemu_vmcore.arch import DumpArch, GuestArch, VcpuState
from qemu_vmcore.debugger import Debugger
from qemu_vmcore.errors import CoreFileError, NotQemuError, QemuStateError, VmcoreError
from qemu_vmcore.guest import vmcoreinfo
from qemu_vmcore.guest.paging import PageTables
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.host.core import HostCore, open_core
from qemu_vmcore.qemu import crosscheck, devices, memory, state, versions
from qemu_vmcore.qemu.memory import GuestRange


@dataclass
class QemuCore:
    """An opened QEMU core. Close it (or use ``with``) when done."""

    host: HostCore
    dbg: Debugger
    ranges: list[GuestRange]
    memory: GuestPhysicalMemory
    #: The room of the guest's architecture (from the QEMU binary's target).
    arch: GuestArch
    vcpus: list[VcpuState]
    executable: Path | None
    notices: list[str] = field(default_factory=list)
    #: Where QEMU's state disagrees with independent facts (see
    #: qemu/crosscheck.py); only non-empty when opened with ``strict=False``.
    inconsistencies: list[crosscheck.Inconsistency] = field(default_factory=list)
    _vmcoreinfo: vmcoreinfo.Search | None = field(default=None, repr=False)
    #: Where ``ranges`` came from: QEMU's FlatView, or (a cut core) its
    #: MemoryRegion tree rendered by QEMU's rules.
    map_source: memory.MapSource = memory.FLATVIEW_SOURCE

    # Facts only ``info`` shows are computed on first use, keeping them (and
    # pyelftools) out of extract's start-up.

    @cached_property
    def qemu_version(self) -> str | None:
        """QEMU's version string, from the executable that made the core."""
        from qemu_vmcore.host.executable import read_qemu_version

        return read_qemu_version(self.executable) if self.executable else None

    def vmcoreinfo(self) -> vmcoreinfo.Search:
        """Find the guest kernel's VMCOREINFO (device first, then a RAM scan); cached."""
        if self._vmcoreinfo is None:
            state, device = devices.vmcoreinfo_device(self.dbg)
            self._vmcoreinfo = vmcoreinfo.find(
                self.memory, self.host.fd, device, state, self.vcpu_page_tables(),
                layout_of=self.arch.kernel_layout,
            )  # fmt: skip
        return self._vmcoreinfo

    def dmesg(self, lost: list[int] | None = None) -> Iterator[bytes]:
        """The guest kernel's log, one record per line as vmcore-dmesg prints it.

        :param lost: collects the ids of records that lie in guest RAM the
            core lacks (a cut core), which are skipped; None: they raise.
        :raises VmcoreError: no VMCOREINFO (the log cannot be located), or a
            log ring that does not hold together.
        """
        from qemu_vmcore.guest import printk

        search = self.vmcoreinfo()
        if search.chosen is None:
            # Why the device's note, or the best candidate, was turned down:
            # on a cut core, typically RAM past the cut.
            why = f"; {search.rejected[0]}" if search.rejected else ""
            raise VmcoreError(
                f"no VMCOREINFO found in guest RAM ({search.device_state}{why}); "
                "the guest kernel's log cannot be located"
            )
        layout = self.arch.kernel_layout(search.chosen)
        return printk.records(self.memory, search.chosen, layout, lost=lost)

    def vcpu_page_tables(self) -> tuple[PageTables, ...]:
        """The kernel page tables the vCPUs run on, for confirming VMCOREINFO."""
        return self.arch.vcpu_page_tables(self.vcpus)

    @cached_property
    def machine(self) -> str:
        """The machine type, e.g. ``pc-q35-10.0 (q35)``."""
        return state.machine_type(self.dbg)

    @cached_property
    def accelerator(self) -> str:
        """``tcg``, ``kvm``, ..."""
        return state.accelerator(self.dbg)

    @property
    def ram_total(self) -> int:
        """Bytes of guest RAM in the map (what a dump holds)."""
        return sum(r.size for r in self.ranges)

    @property
    def vcpu_count(self) -> int:
        return len(self.vcpus)

    @cached_property
    def dump_arch(self) -> DumpArch:
        """The ELF class, machine and byte order QEMU's own dump would pick."""
        return self.arch.dump_arch(self.vcpus, self.ranges)

    def close(self) -> None:
        self.memory.close()
        self.host.close()

    def __enter__(self) -> QemuCore:
        return self

    def __exit__(self, kind: object, e: BaseException | None, tb: object) -> None:
        self.close()
        gone = _process_gone(self.host, e) if e is not None else None
        if gone is not None:  # a live process died while it was read
            raise gone from None


def _looks_like_qemu(host: HostCore) -> bool:
    names = [os.path.basename(host.executable or "")]
    if host.process:
        names.append(host.process.fname)
    return any("qemu" in n.lower() for n in names)


def _program_name(host: HostCore) -> str:
    exe = host.executable or (host.process.fname if host.process else "an unknown program")
    pid = f" (pid {host.process.pid})" if host.process else ""
    return f"{exe}{pid}"


def open_qemu_core(
    path: str | os.PathLike[str],
    *,
    qemu: Path | None = None,
    debug_file: Path | None = None,
    backend: str = "drgn",
    backing_files: bool = True,
    strict: bool = True,
    profile: Path | None = None,
) -> QemuCore:
    """Open the core of a QEMU process and rebuild its guest's memory map.

    :param profile: a QEMU profile to read QEMU's state through instead of
        its debug info (by default one for the core's build-id is looked for
        in the profile directories, unless ``qemu`` or ``debug_file`` is given).

    :param backing_files: read shared file-backed guest RAM the core lacks
        from its backing file (see :mod:`qemu_vmcore.guest.backing`).
    :param strict: refuse when QEMU's state disagrees with independent facts
        (:mod:`qemu_vmcore.qemu.crosscheck`); with False such disagreements
        that still allow a vmcore are kept in ``inconsistencies`` instead.
    :raises VmcoreError: (a subclass) for every problem with the input.
    """
    return _open_host(open_core(path), qemu=qemu, debug_file=debug_file, backend=backend,
                      backing_files=backing_files, strict=strict, profile=profile)  # fmt: skip


def open_qemu_process(
    pid: int,
    *,
    qemu: Path | None = None,
    debug_file: Path | None = None,
    backend: str = "drgn",
    strict: bool = True,
    freeze: bool = True,
) -> QemuCore:
    """Open the live (or hung) QEMU process ``pid``, frozen until the result is closed.

    The host layer is :class:`qemu_vmcore.host.live.LiveProcess`: guest RAM is
    read from /proc/PID/mem, and the process is left as it was found when it
    is closed, on every path (see host/live.py). An error raised while it is
    open, once the process has died, becomes "exited while it was read".

    :param freeze: False when the caller keeps it stopped (a gdb attached to it).
    :raises VmcoreError: no such process, not QEMU, not allowed, already traced.
    """
    from qemu_vmcore.host import live

    named = qemu is not None or debug_file is not None
    live.check_qemu_process(pid, named=named)
    host = live.open_process(pid, freeze=freeze)
    if qemu is None and debug_file is None and host.deleted_executable:
        qemu = Path(f"/proc/{pid}/exe")  # replaced on disk: the file it runs is still here
    try:
        qc = _open_host(host, qemu=qemu, debug_file=debug_file, backend=backend,
                        backing_files=False, strict=strict)  # fmt: skip
    except BaseException as e:
        gone = _process_gone(host, e)
        if gone is not None:
            raise gone from None
        raise
    return qc


def _process_gone(host: HostCore, e: BaseException) -> VmcoreError | None:
    """The error to raise instead of ``e`` when the live process died under us."""
    from qemu_vmcore.errors import ProcessError

    if not getattr(host, "live", False) or isinstance(e, (KeyboardInterrupt, ProcessError)):
        return None
    if not isinstance(e, (VmcoreError, OSError, EOFError)) or host.alive():  # type: ignore[attr-defined]
        return None
    pid = host.pid  # type: ignore[attr-defined]
    return ProcessError(f"process {pid} exited while it was read; no output written", pid=pid)


def open_qemu_core_in_gdb(
    core_path: str | None = None, *, backing_files: bool = True, strict: bool = True
) -> QemuCore:
    """Open the QEMU core that the gdb we run in has open (the gdb command's source).

    The core is opened once, here: the executable gdb loaded is compared
    with the one the core names on that same parse. A program gdb loaded
    under another path counts as named explicitly, as ``--qemu`` does on the
    command line (so a renamed QEMU is accepted).

    :raises VmcoreError: gdb is attached to a live process, has no core, or
        the core is not a readable QEMU core.
    """
    import gdb

    host = open_core(core_path or core_in_gdb())
    loaded = gdb.current_progspace().filename
    given = None
    if loaded and not (
        host.executable is not None
        and os.path.realpath(host.executable) == os.path.realpath(loaded)
    ):
        given = Path(loaded)
    return _open_host(host, qemu=given, debug_file=None, backend="gdb",
                      backing_files=backing_files, strict=strict)  # fmt: skip


def live_pid_in_gdb() -> int | None:
    """The pid of the live process gdb is attached to (``gdb -p PID``), or None.

    gdb keeps it stopped (all-stop mode) while our command runs, so it is read
    without freezing it again: QEMU's structures through gdb, guest RAM from
    /proc/PID/mem (see :func:`open_qemu_process`).
    """
    from qemu_vmcore.debugger.gdb_backend import target_kind

    kind, pid = target_kind()
    return pid if kind == "native" and pid else None


def core_in_gdb() -> str:
    """The path of the QEMU core gdb has open.

    :raises VmcoreError: gdb is attached to a live process, or has no core.
    """
    from qemu_vmcore.debugger.gdb_backend import core_file_path, target_kind

    kind, pid = target_kind()
    path = core_file_path() if kind in ("core", "unknown") else None
    if path is None and (kind == "native" or (kind not in ("core", "none") and pid)):
        raise VmcoreError(
            f"gdb is attached to a live process (pid {pid}); this command reads a QEMU core",
            hint="on a live QEMU use QMP/HMP dump-guest-memory; or write a core with "
            "`gcore FILE`, then run this command in `gdb QEMU FILE`",
            pid=pid,
        )
    if path is None:
        what = "no core file" if kind in ("none", "core", "unknown") else f"gdb's target is {kind}"
        raise VmcoreError(
            f"{what}: open the QEMU core first",
            hint="gdb qemu-system-x86_64 CORE, or `core-file CORE` at the (gdb) prompt",
        )
    return path


@contextmanager
def core_file(
    path: Path | None,
    *,
    coredump: str | None = None,
    tmpdir: Path | None = None,
    progress: Callable[[int, str], AbstractContextManager[Callable[[int], None]]] | None = None,
) -> Iterator[Path]:
    """The core to read: ``path``, or the one coredumpctl finds for ``coredump``;
    a compressed core is decompressed (into an unnamed file in ``tmpdir``) for
    as long as the context lasts.

    :param progress: ``progress(total_bytes, label)`` gives a context yielding
        ``advance(nbytes)``, for the decompression (a progress bar).
    """
    from qemu_vmcore.host import compressed

    if (path is None) == (coredump is None):
        raise VmcoreError("name a core file, or --coredump MATCH (one of the two)")
    if coredump is not None:
        from qemu_vmcore.host.coredump import find_core

        path = find_core(coredump)
    assert path is not None
    fmt = compressed.detect(path)
    if fmt is None:
        yield path
        return
    with ExitStack() as stack:
        size = path.stat().st_size
        bar = progress(size, "decompressing") if progress else nullcontext(lambda n: None)
        with bar as advance:
            plain = stack.enter_context(
                compressed.decompressed(path, fmt, tmpdir=tmpdir, progress=advance)
            )
        yield plain


def _open_host(
    host: HostCore,
    *,
    qemu: Path | None,
    debug_file: Path | None,
    backend: str,
    backing_files: bool,
    strict: bool,
    profile: Path | None = None,
) -> QemuCore:
    """:func:`_open` on an opened host core, which it closes on failure."""
    try:
        return _open(
            host,
            qemu=qemu,
            debug_file=debug_file,
            backend=backend,
            backing_files=backing_files,
            strict=strict,
            profile=profile,
        )
    except QemuStateError as e:
        host.close()
        if host.truncated:
            raise CoreFileError(
                f"{host.path}: truncated core ({host.file_size:,} of {host.expected_size:,} "
                f"bytes); QEMU's state is unreadable: {e.message}",
                path=host.path,
            ) from None
        raise
    except BaseException:
        host.close()
        raise


def _open(
    host: HostCore,
    *,
    qemu: Path | None,
    debug_file: Path | None,
    backend: str,
    backing_files: bool = True,
    strict: bool = True,
    profile: Path | None = None,
) -> QemuCore:
    if backend not in ("drgn", "gdb"):
        raise VmcoreError(f"unknown backend {backend!r}")
    explicit = qemu is not None or debug_file is not None
    if profile is None and not explicit and backend == "drgn":
        from qemu_vmcore.debugger.profile_backend import find_profile

        profile = find_profile(host.executable_build_id())
    explicit = explicit or profile is not None
    if not explicit and not _looks_like_qemu(host):
        raise NotQemuError(
            f"{host.path}: a core of {_program_name(host)}, not of QEMU",
            hint="if this is a renamed QEMU, name its executable with --qemu",
        )
    if backend == "gdb":  # inside gdb, on the program and core gdb has open
        from qemu_vmcore.debugger.gdb_backend import open_gdb as open_debugger
    elif profile is not None:  # no DWARF: the types and symbols of a profile
        from qemu_vmcore.debugger.profile_backend import open_profile

        open_debugger = functools.partial(open_profile, path=profile)
    else:
        from qemu_vmcore.debugger.drgn_backend import open_drgn as open_debugger
    dbg = open_debugger(host, qemu=qemu, debug_file=debug_file,
                        first_lookups=versions.FIRST_LOOKUPS)  # fmt: skip
    if not dbg.has_variable(versions.ADDRESS_SPACE_MEMORY):
        raise NotQemuError(f"{host.path}: {_program_name(host)} is not a QEMU system emulator")
    guest_arch = arches.detect(dbg)
    ranges, map_source = _guest_map(dbg, host)
    crosscheck.require_ram(ranges)
    cpus = state.vcpus(dbg)
    indices = [int(cpu.member("cpu_index")) for cpu in cpus]
    problems = crosscheck.check(dbg, ranges, indices, host.segments)
    fatal = [p for p in problems if p.fatal or strict]
    if fatal:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise QemuStateError(
            f"{fatal[0]}{more}",
            hint=None if fatal[0].fatal else _ACCEPT_HINT,
            inconsistencies=problems,
        )
    qc = QemuCore(
        host=host,
        dbg=dbg,
        ranges=ranges,
        memory=GuestPhysicalMemory(ranges, host, backing_files=backing_files),
        arch=guest_arch,
        vcpus=guest_arch.read_vcpus(dbg, cpus),
        executable=dbg.executable,
        inconsistencies=problems,
        map_source=map_source,
    )
    _check_machine_ram_present(qc, strict)
    return qc


def _guest_map(dbg: Debugger, host: HostCore) -> tuple[list[GuestRange], memory.MapSource]:
    """The guest RAM ranges, from the FlatView; on a cut core whose FlatView
    lies past the cut, from the MemoryRegion tree instead (qemu/render.py).

    Only a *cut* core falls back, and only for a FlatView that cannot be
    read: a FlatView that reads as nonsense in a whole core is corruption,
    and a map rebuilt around it could be plausible and wrong.
    """
    from qemu_vmcore.qemu import render

    try:
        return memory.guest_ram(dbg), memory.FLATVIEW_SOURCE
    except QemuStateError as e:
        if not _cut_off(host, e.context.get("address")):
            raise
        flat_error = e
    try:
        ranges = memory.join_sections(memory.ram_sections(dbg, render.rendered_ranges(dbg)))
    except QemuStateError as e:
        raise QemuStateError(
            f"{flat_error.message}; nor could the map be rendered from the MemoryRegion "
            f"tree: {e.message}"
        ) from None
    why = f"the FlatView lies past the cut ({flat_error.message})"
    return ranges, memory.MapSource(
        memory.REGION_TREE, f"{versions.ADDRESS_SPACE_MEMORY}.root", why
    )


def _cut_off(host: HostCore, address: object) -> bool:
    """Whether a failed read at ``address`` failed because the core is cut there."""
    from qemu_vmcore.host.core import ExtentKind

    if not host.truncated or not isinstance(address, int) or not 0 <= address < 1 << 64:
        return False
    return host.extents(address, 1)[0].kind is ExtentKind.TRUNCATED


_ACCEPT_HINT = "--accept-inconsistent writes the vmcore anyway, with a warning"


def _check_machine_ram_present(qc: QemuCore, strict: bool) -> None:
    """The machine's RAM cannot be wholly "never touched" once the guest has
    left real mode: firmware or a kernel got there by writing to it. (Before
    that, as in a QEMU started with -S, untouched RAM is real.) A core whose
    RAM segment claims no bytes (its p_filesz zeroed) would otherwise become
    a vmcore of zeros."""
    from qemu_vmcore.guest.physmem import PieceKind

    ran = [v for v in qc.vcpus if v.ran]
    if not ran:
        return
    block = crosscheck.machine_ram_block(state.machine(qc.dbg))
    main = [r for r in qc.ranges if r.block == block]
    if not main or any(
        p.kind is not PieceKind.UNTOUCHED for r in main for p in qc.memory.pieces(r)
    ):
        return
    problem = crosscheck.Inconsistency(
        f"the core holds not one byte of the machine's RAM {main[0].block!r} "
        f"({sum(r.size for r in main):#x} bytes), yet QEMU says the guest could dump it "
        f"and vCPU {ran[0].index} runs in {ran[0].mode} mode, which a guest reaches only "
        "by writing to its RAM: the core's program headers are corrupt"
    )
    if strict:
        raise QemuStateError(problem.message, hint=_ACCEPT_HINT)
    qc.inconsistencies.append(problem)
