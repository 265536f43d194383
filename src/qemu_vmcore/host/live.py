"""A live (or hung) QEMU process as a host layer: the same shape as a core.

:class:`LiveProcess` is a :class:`~qemu_vmcore.host.core.HostCore` whose
"file" is ``/proc/PID/mem``: each mapping of ``/proc/PID/maps`` is a
segment whose file offset is its own host address, so the guest layer and
the writers read guest RAM from it as they read a core, unchanged.
``/proc/PID/pagemap`` says which pages of private anonymous memory (plain
guest RAM) the process never touched (neither present nor swapped, or only
read, so mapped to the kernel's zero page: host/zeropage.py): those are
:attr:`~ExtentKind.UNTOUCHED` extents, holes in the output, never read.

**Freezing.** While it is read, every thread of the process is stopped with
ptrace: ``PTRACE_SEIZE`` then ``PTRACE_INTERRUPT`` of each thread (new
threads are looked for until none appears), so QEMU's structures and guest
RAM are one consistent snapshot. SIGSTOP was not chosen: it is seen by
QEMU's parent (libvirt waits for it), it cannot tell "stopped by us" from
"stopped before", and if we died the process would stay stopped. With
ptrace, ``PTRACE_DETACH`` puts each thread back exactly as it was: a
running thread runs on; a thread that was in group stop (SIGSTOP, a hung
QEMU someone stopped) re-enters it (the kernel keeps the group stop across
the trace, ``__ptrace_unlink``); a signal that arrived while frozen is
handed back on detach. If we are killed outright (SIGKILL), the kernel
detaches the same way. The process is never sent a signal.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from qemu_vmcore.errors import MissingMemoryError, NotQemuError, ProcessError
from qemu_vmcore.host.core import (
    CoreSegment,
    Extent,
    ExtentKind,
    FileMapping,
    HostCore,
    ProcessInfo,
    _append,
)
from qemu_vmcore.host.zeropage import ZeroFrames, find_zero_frames, without_zero_pages
from qemu_vmcore.layouts import elf as E

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000

PAGE = 4096
#: Addresses of pagemap looked at per read (8 bytes of pagemap per page).
PAGEMAP_SPAN = 1 << 30
#: Pagemap bits 63 (present) and 62 (swapped), in an entry's top byte.
_TOUCHED = bytes(1 if b & 0xC0 else 0 for b in range(256))
#: Where Yama keeps its ptrace policy (a test hook may point elsewhere).
PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
#: Signals held off while threads are detached: a Ctrl-C must not leave some frozen.
_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
         signal.SIGALRM}  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def _ptrace(request: int, tid: int, data: int = 0) -> None:
    if _libc.ptrace(request, tid, None, ctypes.c_void_p(data)) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# -- facts about the process, from /proc ----------------------------------------


def proc_dir(pid: int) -> Path:
    return Path(f"/proc/{pid}")


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in (proc_dir(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def tracer_of(pid: int) -> int:
    """The pid tracing ``pid`` (TracerPid), 0 when none."""
    try:
        return int(_status(pid).get("TracerPid", "0"))
    except (OSError, ValueError):
        return 0


def _comm(pid: int) -> str:
    try:
        return (proc_dir(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def executable_link(pid: int) -> tuple[str | None, bool]:
    """``(path, deleted)``: where /proc/PID/exe points, and whether that file
    was replaced or removed since the process started (`` (deleted)``)."""
    try:
        target = os.readlink(proc_dir(pid) / "exe")
    except OSError:
        return None, False
    if target.endswith(" (deleted)"):
        return target[: -len(" (deleted)")], True
    return target, False


def process_exists(pid: int) -> bool:
    try:
        os.stat(proc_dir(pid))
    except FileNotFoundError:
        return False
    return True


def ptrace_scope(path: str = PTRACE_SCOPE) -> int | None:
    """kernel.yama.ptrace_scope, or None without Yama."""
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def permission_error(pid: int, what: str, scope: int | None, euid: int) -> ProcessError:
    """Why we may not read or trace ``pid``, and how to allow it, in one line."""
    if scope == 3:
        return ProcessError(
            f"cannot {what} process {pid}: kernel.yama.ptrace_scope is 3 (no process may be "
            "traced, not even by root)",
            hint="it cannot be lowered until the next boot (gdb and gcore are refused too); "
            "use QMP dump-guest-memory if QEMU still answers",
            pid=pid,
        )
    if scope in (1, 2) and euid != 0:
        rule = "only a parent may trace" if scope == 1 else "only root (CAP_SYS_PTRACE) may trace"
        return ProcessError(
            f"cannot {what} process {pid}: kernel.yama.ptrace_scope is {scope} ({rule})",
            hint="run as root, or allow it with `sysctl kernel.yama.ptrace_scope=0`",
            pid=pid,
        )
    return ProcessError(
        f"cannot {what} process {pid}: permission denied (it is not yours, or not dumpable)",
        hint="run as root (or as the user QEMU runs as)",
        pid=pid,
    )


def _no_such_process(pid: int) -> ProcessError:
    return ProcessError(f"no such process: {pid}", pid=pid)


def check_qemu_process(pid: int, *, named: bool) -> None:
    """Refuse a pid that is no process, or (unless the executable was ``named``) no QEMU.

    Nothing is done to the process.
    """
    if pid <= 0 or not process_exists(pid):
        raise _no_such_process(pid)
    exe, _ = executable_link(pid)
    comm = _comm(pid)
    if exe is None and not process_exists(pid):
        raise _no_such_process(pid)
    if named:
        return
    if exe is None:
        if os.geteuid() != 0:  # /proc/PID/exe of another user's process
            raise permission_error(pid, "read", ptrace_scope(), os.geteuid())
        raise NotQemuError(f"process {pid} ({comm}) has no executable: a kernel thread?", pid=pid)
    if "qemu" not in os.path.basename(exe).lower() and "qemu" not in comm.lower():
        raise NotQemuError(
            f"process {pid} is {exe} ({comm}), not QEMU",
            hint="if this is a renamed QEMU, name its executable with --qemu",
            pid=pid,
        )


# -- freezing -----------------------------------------------------------------


def _tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(proc_dir(pid) / "task"))
    except FileNotFoundError:
        return []


class Freezer:
    """Every thread of ``pid`` stopped by ptrace (seize + interrupt) until :meth:`thaw`.

    :raises ProcessError: the process is gone, already traced, or may not be traced.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        #: tid -> the signal to hand back on detach (0: none).
        self.threads: dict[int, int] = {}
        try:
            self._freeze()
        except BaseException:
            self.thaw()
            raise

    def _freeze(self) -> None:
        seen: set[int] = set()
        while True:
            new = [t for t in _tids(self.pid) if t not in seen]
            if not new:
                break
            for tid in new:
                seen.add(tid)
                try:
                    _ptrace(PTRACE_SEIZE, tid)
                except OSError as e:
                    if e.errno == errno.ESRCH:
                        continue  # that thread exited
                    raise self._seize_error(e) from None
                self.threads[tid] = 0
                try:
                    _ptrace(PTRACE_INTERRUPT, tid)
                except OSError as e:
                    if e.errno != errno.ESRCH:
                        raise
                self._wait_stop(tid)
        if not self.threads:
            raise _no_such_process(self.pid)

    def _wait_stop(self, tid: int) -> None:
        """Wait for ``tid``'s stop; a signal it stopped for is kept for the detach."""
        while True:
            try:
                _, status = os.waitpid(tid, WALL)
            except ChildProcessError:
                self.threads.pop(tid, None)  # gone (killed while we waited)
                return
            except InterruptedError:
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.threads.pop(tid, None)
                return
            if os.WIFSTOPPED(status):
                sig = os.WSTOPSIG(status)
                if status >> 16 != PTRACE_EVENT_STOP and sig not in (0, signal.SIGTRAP):
                    self.threads[tid] = sig  # a signal-delivery stop: deliver it later
                return

    def _seize_error(self, e: OSError) -> ProcessError:
        pid = self.pid
        if e.errno == errno.EPERM:
            tracer = tracer_of(pid)
            if tracer and tracer != os.getpid():
                name = _comm(tracer)
                return ProcessError(
                    f"process {pid} is already traced by process {tracer} ({name})",
                    hint="detach that debugger first; inside gdb -p use qemu-vmcore's "
                    "dump-guest-memory command (source $(qemu-vmcore gdb-script))",
                    pid=pid,
                    tracer=tracer,
                )
            return permission_error(pid, "trace", ptrace_scope(), os.geteuid())
        return ProcessError(f"cannot freeze process {pid}: {e.strerror}", pid=pid)

    def thaw(self) -> None:
        """Detach every thread: each goes back to what it was doing (idempotent)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            while self.threads:
                tid, sig = self.threads.popitem()
                try:
                    _ptrace(PTRACE_DETACH, tid, sig)
                except OSError:
                    _reap(tid)  # killed while frozen: nothing to restore
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _reap(tid: int, timeout: float = 2.0) -> None:
    """Collect a traced thread that died: until its tracer waits for it, the
    kernel keeps it, and with it the process's exit from its parent's wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(tid, WALL | os.WNOHANG)[0] == tid:
                return
        except (ChildProcessError, InterruptedError):
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _state(pid: int) -> str | None:
    try:
        stat = (proc_dir(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


# -- the host layer --------------------------------------------------------------


@dataclass(frozen=True)
class _Map:
    hva: int
    end: int
    perms: str
    offset: int
    path: str

    @property
    def anonymous_private(self) -> bool:
        """Plain private anonymous memory: a page never touched is zeros, not a file's."""
        return self.perms[3] == "p" and (not self.path or self.path in ("[heap]", "[stack]"))


def parse_maps(text: str) -> list[_Map]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        path = parts[5] if len(parts) > 5 else ""
        out.append(_Map(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), path))
    return out


#: Mappings /proc/PID/mem cannot read, or beyond off_t: never segments.
_SKIP = ("[vsyscall]", "[vvar]", "[vvar_vclock]")


@dataclass
class LiveProcess(HostCore):
    """A running (or stopped) process read through /proc/PID/mem. Close to thaw it."""

    pid: int = 0
    freezer: Freezer | None = None
    deleted_executable: bool = False
    _maps: list[_Map] = field(default_factory=list, repr=False)
    _pagemap: int = -1
    #: The kernel's zero pages (host/zeropage.py): pages mapped to them are untouched.
    _zero: ZeroFrames | None = None
    _exe: str | None = None

    @property
    def live(self) -> bool:
        return True

    @property
    def truncated(self) -> bool:
        return False

    @property
    def expected_size(self) -> int:
        return 0

    @property
    def executable(self) -> str | None:
        return self._exe

    def extents(self, hva: int, size: int) -> list[Extent]:
        out: list[Extent] = []
        for ext in super().extents(hva, size):
            if ext.kind is not ExtentKind.DATA or not self._anonymous(ext.hva):
                _append(out, ext)
                continue
            for lo, hi, touched in self._touched_runs(ext.hva, ext.end):
                kind = ExtentKind.DATA if touched else ExtentKind.UNTOUCHED
                _append(out, Extent(lo, hi - lo, kind, lo if touched else None))
        return out

    def _anonymous(self, hva: int) -> bool:
        m = next((m for m in self._maps if m.hva <= hva < m.end), None)
        return m is not None and m.anonymous_private

    def _touched_runs(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """``(lo, hi, touched)`` runs of ``[start, end)`` by pagemap (page-aligned inside)."""
        runs: list[tuple[int, int, bool]] = []
        first = start - start % PAGE
        pos = first
        while pos < end:
            stop = min(end, pos + PAGEMAP_SPAN)
            pages = -(-(stop - pos) // PAGE)
            raw = os.pread(self._pagemap, pages * 8, pos // PAGE * 8)
            if len(raw) != pages * 8:
                raise MissingMemoryError(f"process {self.pid}: short read of its pagemap")
            flags = raw[7::8].translate(_TOUCHED)
            if self._zero is not None:  # zero-page mappings read as zeros: not touched
                flags = without_zero_pages(flags, raw, self._zero)
            i = 0
            while i < pages:
                want = flags[i]
                j = flags.find(b"\x00" if want else b"\x01", i)
                j = pages if j < 0 else j
                lo, hi = max(start, pos + i * PAGE), min(stop, pos + j * PAGE)
                if runs and runs[-1][2] == bool(want) and runs[-1][1] == lo:
                    runs[-1] = (runs[-1][0], hi, bool(want))
                else:
                    runs.append((lo, hi, bool(want)))
                i = j
            pos = stop
        return runs

    def read(self, hva: int, size: int) -> bytes:
        parts = []
        for ext in self.extents(hva, size):
            if ext.kind is ExtentKind.UNTOUCHED:
                parts.append(bytes(ext.size))
                continue
            if ext.kind is not ExtentKind.DATA:
                raise MissingMemoryError(
                    f"host address {ext.hva:#x} (+{ext.size:#x}) is not mapped in process "
                    f"{self.pid}",
                    hva=ext.hva,
                    size=ext.size,
                    kind=ext.kind,
                )
            try:
                data = os.pread(self.fd, ext.size, ext.hva)
            except OSError as e:
                raise MissingMemoryError(
                    f"process {self.pid}: cannot read host address {ext.hva:#x}: {e.strerror}"
                ) from None
            if len(data) != ext.size:
                raise MissingMemoryError(f"process {self.pid}: short read at {ext.hva:#x}")
            parts.append(data)
        return b"".join(parts)

    def unsaved_file_ranges(self, path: str) -> list[FileMapping]:
        return []  # a live process has all of its mappings' bytes

    def alive(self) -> bool:
        """Whether the process still runs (a zombie has no memory left to read)."""
        return _state(self.pid) not in ("Z", "X", None)

    def close(self) -> None:
        try:
            if self.freezer is not None:
                self.freezer.thaw()
        finally:
            if self._pagemap >= 0:
                os.close(self._pagemap)
                self._pagemap = -1
            super().close()


def _open_proc(pid: int, name: str) -> int:
    try:
        return os.open(proc_dir(pid) / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _no_such_process(pid) from None
    except PermissionError:
        raise permission_error(pid, "read", ptrace_scope(), os.geteuid()) from None


def open_process(pid: int, *, freeze: bool = True) -> LiveProcess:
    """Open process ``pid`` as a host layer, frozen (``freeze``) until closed.

    With ``freeze`` False the caller vouches that it is stopped (gdb attached).

    :raises ProcessError: no such process, not allowed, already traced.
    """
    fd = _open_proc(pid, "mem")
    pagemap = -1
    freezer = None
    try:
        pagemap = _open_proc(pid, "pagemap")
        if freeze:
            freezer = Freezer(pid)
        try:
            maps = parse_maps((proc_dir(pid) / "maps").read_text())
            auxv_raw = (proc_dir(pid) / "auxv").read_bytes()
            status = _status(pid)
            cmdline = (proc_dir(pid) / "cmdline").read_bytes()
        except FileNotFoundError:
            raise _no_such_process(pid) from None
        except PermissionError:
            raise permission_error(pid, "read", ptrace_scope(), os.geteuid()) from None
        exe, deleted = executable_link(pid)
        segments = []
        mappings = []
        for m in maps:
            if m.path in _SKIP or m.end > 1 << 63:
                continue
            flags = (E.PF_R if m.perms[0] == "r" else 0) | (E.PF_W if m.perms[1] == "w" else 0)
            flags |= E.PF_X if m.perms[2] == "x" else 0
            segments.append(CoreSegment(m.hva, m.end, m.hva, m.end - m.hva, flags))
            if m.path.startswith("/"):
                mappings.append(FileMapping(m.hva, m.end, m.offset, m.path))
        auxv: dict[int, int] = {}
        whole = len(auxv_raw) // 16 * 16
        for k in range(0, whole, 16):
            key = int.from_bytes(auxv_raw[k : k + 8], "little")
            if key == E.AT_NULL:
                break
            auxv.setdefault(key, int.from_bytes(auxv_raw[k + 8 : k + 16], "little"))
        uid = int(status.get("Uid", "0").split()[0])
        args = cmdline.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:80]
        host = LiveProcess(
            path=proc_dir(pid),
            fd=fd,
            file_size=1 << 63,
            segments=segments,
            mappings=mappings,
            process=ProcessInfo(pid=pid, uid=uid, fname=_comm(pid)[:15], args=args),
            auxv=auxv,
            pid=pid,
            freezer=freezer,
            deleted_executable=deleted,
            _maps=maps,
            _pagemap=pagemap,
            _zero=find_zero_frames(),
            # A replaced executable is still there as /proc/PID/exe: read that.
            _exe=f"/proc/{pid}/exe" if deleted else exe,
        )
    except BaseException:
        if freezer is not None:
            freezer.thaw()
        if pagemap >= 0:
            os.close(pagemap)
        os.close(fd)
        raise
    return host
