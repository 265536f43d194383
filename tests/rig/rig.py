"""Test rig: real QEMU process cores with a matching reference guest dump.

A *case* is made by booting a small Linux guest (Debian cloud kernel plus a
busybox initramfs, see guest.sh and init) under QEMU/TCG, waiting for it to
print RIG-READY, pausing it, having QEMU write the guest memory over QMP
(``dump-guest-memory``, ELF, paging off: the reference) and finally killing
QEMU with SIGABRT so that the kernel writes QEMU's process core. In a *panic*
case the guest panics (sysrq 'c') after RIG-READY and is paused in panic().

The guest's debug vmlinux (for crash and drgn) is ``vmlinux()``.

Cases are cached in ``$RIG_CACHE/cases/<name>/``; ``ensure_case`` makes one
only when it is missing or stale. Only the standard library is used, so that
pytest tests can import this module after putting tests/rig on sys.path.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CaseSpec",
    "Case",
    "RigError",
    "QMPError",
    "QMP",
    "STANDARD_CASES",
    "RIG_DIR",
    "rig_cache",
    "guest_dir",
    "cases_dir",
    "case_dir",
    "qemu_dir",
    "qemu_binary",
    "qemu_src",
    "qemu_stamp",
    "wait_for_qemu_build",
    "ensure_guest",
    "vmlinux",
    "cached_case",
    "ensure_case",
    "qemu_argv",
]

RIG_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE = "/var/cache/qemu-vmcore-rig"
# Bump when the way cases are made or what meta.json holds changes: cached
# cases with another format are made again.
CASE_FORMAT = 1


class RigError(RuntimeError):
    """A case could not be made (missing build, guest never ready, ...)."""


class QMPError(RigError):
    """QEMU answered a QMP command with an error."""


# --------------------------------------------------------------------------
# specs and cases


@dataclass(frozen=True)
class CaseSpec:
    name: str  # e.g. "q72-pc-512"; also the directory name under cases/
    qemu: str  # "7.2" or "10.0" (short names from common.sh)
    machine: str = "pc"  # "pc" or "q35"
    mem_mib: int = 512
    smp: int = 1
    fill_mib: int = 0  # MiB of random data the guest puts into a tmpfs
    panic: bool = False  # the guest panics (sysrq 'c') after RIG-READY
    dump_guest_core: bool = True  # -machine ...,dump-guest-core=on|off
    vmcoreinfo_device: bool = True  # -device vmcoreinfo
    reference: bool = True  # make the QMP reference dump
    extra_args: tuple[str, ...] = ()  # extra QEMU args (dimms etc.)

    def as_dict(self) -> dict[str, Any]:
        """The spec as it is stored in meta.json (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def matches(self, stored: Any) -> bool:
        """Whether `stored` (a spec from meta.json) describes this spec.

        A field added to CaseSpec after a case was made is missing from its
        stored spec; the case was made with that field's default, so it still
        matches a spec that has the default."""
        if not isinstance(stored, dict):
            return False
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        missing = {k: v for k, v in defaults.items() if k not in stored}
        return {**json.loads(json.dumps(missing)), **stored} == self.as_dict()


@dataclass
class Case:
    """A finished, cached case."""

    spec: CaseSpec
    dir: Path
    core: Path  # QEMU's process core
    reference: Path | None  # QMP dump-guest-memory ELF (format elf, paging false)
    qemu_binary: Path
    qemu_src: Path  # $RIG_CACHE/qemu-<v>/src
    meta: dict  # contents of meta.json

    @property
    def marker(self) -> str:
        """The unique string the guest wrote to its kernel log."""
        return self.meta["marker"]

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"


STANDARD_CASES: dict[str, CaseSpec] = {
    s.name: s
    for s in (
        CaseSpec("q72-pc-512", qemu="7.2", machine="pc", mem_mib=512, smp=1),
        CaseSpec("q10-q35-512", qemu="10.0", machine="q35", mem_mib=512, smp=2, fill_mib=256),
        # 4608 MiB on q35: 2 GiB below 4 GiB, 2.5 GiB above.
        CaseSpec("q10-q35-4608", qemu="10.0", machine="q35", mem_mib=4608, smp=1, fill_mib=64),
        CaseSpec(
            "q72-pc-nodump",
            qemu="7.2",
            machine="pc",
            mem_mib=512,
            dump_guest_core=False,
            reference=False,
        ),
        # The guest panics (sysrq 'c') and QEMU is stopped in panic().
        CaseSpec("q10-q35-panic", qemu="10.0", machine="q35", mem_mib=512, smp=2, panic=True),
        CaseSpec("q72-pc-panic", qemu="7.2", machine="pc", mem_mib=512, smp=2, panic=True),
        CaseSpec("q72-pc-smp2", qemu="7.2", machine="pc", mem_mib=512, smp=2, fill_mib=32),
        # No -device vmcoreinfo: QEMU's own dump then has no VMCOREINFO note.
        CaseSpec(
            "q10-q35-novmci",
            qemu="10.0",
            machine="q35",
            mem_mib=512,
            smp=2,
            vmcoreinfo_device=False,
        ),
    )
}


# --------------------------------------------------------------------------
# paths


def rig_cache() -> Path:
    """The rig's cache directory (same rule as common.sh)."""
    return Path(os.environ.get("QEMU_VMCORE_RIG_CACHE") or DEFAULT_CACHE)


def guest_dir() -> Path:
    return rig_cache() / "guest"


def cases_dir() -> Path:
    return rig_cache() / "cases"


def case_dir(name: str) -> Path:
    return cases_dir() / name


def qemu_dir(version: str) -> Path:
    return rig_cache() / f"qemu-{version}"


def qemu_binary(version: str) -> Path:
    return qemu_dir(version) / "build" / "qemu-system-x86_64"


def qemu_src(version: str) -> Path:
    return qemu_dir(version) / "src"


def qemu_stamp(version: str) -> str | None:
    """The Debian version of a finished QEMU build, None if not built (yet)."""
    try:
        return (qemu_dir(version) / "stamp").read_text().strip()
    except FileNotFoundError:
        return None


def wait_for_qemu_build(version: str, timeout: float) -> str:
    """Wait until build-qemu.sh has finished QEMU `version`; returns the stamp."""
    deadline = time.monotonic() + timeout
    while True:
        stamp = qemu_stamp(version)
        if stamp is not None and qemu_binary(version).is_file():
            return stamp
        if time.monotonic() >= deadline:
            raise RigError(
                f"QEMU {version} not built after {timeout:.0f} s "
                f"({qemu_dir(version)}/stamp missing)"
            )
        time.sleep(10)


def _check_qemu_build(version: str) -> str:
    stamp = qemu_stamp(version)
    binary = qemu_binary(version)
    if stamp is None or not binary.is_file():
        raise RigError(
            f"QEMU {version} is not built: {qemu_dir(version)}/stamp or {binary} missing; "
            f"run tests/rig/build-qemu.sh {version}"
        )
    return stamp


# --------------------------------------------------------------------------
# guest


def _read(path: Path) -> str:
    return path.read_text().strip()


def ensure_guest() -> dict[str, str]:
    """Run guest.sh (idempotent) and describe the guest it left in the cache."""
    env = dict(os.environ, QEMU_VMCORE_RIG_CACHE=str(rig_cache()))
    res = subprocess.run(
        ["bash", str(RIG_DIR / "guest.sh")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if res.returncode != 0:
        raise RigError(f"guest.sh failed ({res.returncode}):\n{res.stdout[-4000:]}")
    return _guest_info()


def vmlinux() -> Path:
    """The guest kernel's debug vmlinux (runs guest.sh first; idempotent)."""
    ensure_guest()
    return guest_dir() / "vmlinux"


def _guest_info() -> dict[str, str]:
    g = guest_dir()
    return {
        "kernel_version": _read(g / "kernel-version"),
        "kernel_package": _read(g / "kernel-package"),
        "initramfs_inputs": _read(g / "initramfs.inputs"),
    }


# --------------------------------------------------------------------------
# QMP


class QMP:
    """A minimal synchronous QMP client over a unix socket."""

    def __init__(self, path: Path | str, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._rfile = self.sock.makefile("rb")
        self._id = 0
        self.events: list[dict] = []
        self.greeting = self._recv()
        if "QMP" not in self.greeting:
            raise RigError(f"unexpected QMP greeting: {self.greeting!r}")
        self.execute("qmp_capabilities")

    def _recv(self) -> dict:
        line = self._rfile.readline()
        if not line:
            raise RigError("QMP connection closed by QEMU")
        return json.loads(line)

    def execute(
        self, command: str, arguments: dict | None = None, timeout: float | None = None
    ) -> Any:
        self._id += 1
        msg: dict[str, Any] = {"execute": command, "id": self._id}
        if arguments:
            msg["arguments"] = arguments
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                resp = self._recv()
                if "event" in resp:
                    self.events.append(resp)
                    continue
                if resp.get("id") != self._id:
                    continue
                if "error" in resp:
                    err = resp["error"]
                    raise QMPError(f"QMP {command} failed: {err.get('class')}: {err.get('desc')}")
                return resp.get("return")
        finally:
            self.sock.settimeout(old)

    def close(self) -> None:
        try:
            self._rfile.close()
        finally:
            self.sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# cases


def qemu_argv(spec: CaseSpec, dir: Path, marker: str) -> list[str]:
    """The QEMU command line for a case (absolute paths; cwd is `dir`)."""
    g = guest_dir()
    argv = [
        str(qemu_binary(spec.qemu)),
        "-L",
        "/usr/share/seabios",
        "-L",
        "/usr/share/qemu",
        "-machine",
        f"{spec.machine},dump-guest-core={'on' if spec.dump_guest_core else 'off'}",
        "-accel",
        "tcg",
        "-m",
        str(spec.mem_mib),
        "-smp",
        str(spec.smp),
        "-kernel",
        str(g / "vmlinuz"),
        "-initrd",
        str(g / "initramfs.cpio.gz"),
        "-append",
        f"console=ttyS0 panic=0 rig.marker={marker} rig.fill={spec.fill_mib}"
        + (" rig.panic=1" if spec.panic else ""),
        "-display",
        "none",
        "-nodefaults",
        "-serial",
        f"file:{dir / 'serial.log'}",
        "-qmp",
        f"unix:{dir / 'qmp.sock'},server=on,wait=off",
        "-no-reboot",
    ]
    if spec.vmcoreinfo_device:
        argv += ["-device", "vmcoreinfo"]
    argv += list(spec.extra_args)
    return argv


@contextmanager
def _case_lock(name: str) -> Iterator[None]:
    cases_dir().mkdir(parents=True, exist_ok=True)
    with open(cases_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _case_from_meta(spec: CaseSpec, d: Path, meta: dict) -> Case:
    return Case(
        spec=spec,
        dir=d,
        core=d / "core",
        reference=(d / "reference.elf") if spec.reference else None,
        qemu_binary=qemu_binary(spec.qemu),
        qemu_src=qemu_src(spec.qemu),
        meta=meta,
    )


def _valid_cached(spec: CaseSpec, guest: dict[str, str], stamp: str) -> Case | None:
    d = case_dir(spec.name)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    if (
        meta.get("case_format") != CASE_FORMAT
        or not spec.matches(meta.get("spec"))
        or meta.get("qemu_version_stamp") != stamp
        or meta.get("kernel_version") != guest["kernel_version"]
        or meta.get("initramfs_inputs") != guest["initramfs_inputs"]
    ):
        return None
    case = _case_from_meta(spec, d, meta)
    if not case.core.is_file() or case.core.stat().st_size != meta["core"]["size"]:
        return None
    if case.reference is not None and (
        not case.reference.is_file() or case.reference.stat().st_size != meta["reference"]["size"]
    ):
        return None
    return case


def cached_case(spec: CaseSpec) -> Case | None:
    """The cached case for `spec` if it is there and up to date, else None.

    Makes nothing (but does not run guest.sh either, so a changed init script
    is only noticed by ensure_case)."""
    stamp = qemu_stamp(spec.qemu)
    if stamp is None:
        return None
    try:
        guest = _guest_info()
    except FileNotFoundError:
        return None
    return _valid_cached(spec, guest, stamp)


def ensure_case(spec: CaseSpec, force: bool = False) -> Case:
    """Return the case for `spec`, making it if missing or stale (or `force`)."""
    guest = ensure_guest()
    stamp = _check_qemu_build(spec.qemu)
    with _case_lock(spec.name):
        if not force:
            case = _valid_cached(spec, guest, stamp)
            if case is not None:
                return case
        return _make_case(spec, guest, stamp)


def _file_sizes(p: Path) -> dict[str, int]:
    st = p.stat()
    return {"size": st.st_size, "disk_bytes": st.st_blocks * 512}


def _tail(p: Path, n: int = 40) -> str:
    try:
        lines = p.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no file)"
    return "\n".join(lines[-n:])


def _check_core_pattern() -> str:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern or "%" in pattern:
        raise RigError(
            f"kernel.core_pattern is {pattern!r}; the rig needs a plain file name "
            "such as 'core' (sysctl -w kernel.core_pattern=core)"
        )
    return pattern


def _preexec() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


# What the guest's console shows once it panicked: panic()'s first line, and
# the last one it prints before it spins (panic=0: no reboot).
PANIC_LINES = ("Kernel panic - not syncing", "sysrq triggered crash")
PANIC_END_LINE = "---[ end Kernel panic"


def _wait_for_panic(serial: Path, proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """Wait until the guest's console shows its panic, then ~1 s more.

    Returns what meta.json records under "panic"; ``seen`` is False if no
    panic line appeared within `timeout` seconds (the case is still made)."""
    t0 = time.monotonic()
    t_seen: float | None = None
    ended = False
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        text = serial.read_text(errors="replace")
        if t_seen is None and any(p in text for p in PANIC_LINES):
            t_seen = time.monotonic()
        ended = PANIC_END_LINE in text
        # panic() prints its end line after stopping the other CPUs; give it
        # a few seconds once the first line is there.
        if ended or (t_seen is not None and time.monotonic() - t_seen > 10.0):
            break
        time.sleep(0.25)
    seen = t_seen is not None
    if proc.poll() is not None:
        raise RigError(f"QEMU exited ({proc.returncode}) after the guest's panic\n{_tail(serial)}")
    if seen:
        time.sleep(1.0)  # let the last console output and the CPUs settle
    lines = [
        ln.strip()
        for ln in serial.read_text(errors="replace").splitlines()
        if any(p in ln for p in PANIC_LINES)
    ]
    return {
        "seen": seen,
        "end_line_seen": ended,
        "message": lines[0] if lines else None,
        "wait_seconds": round(time.monotonic() - t0, 3),
    }


def _make_case(spec: CaseSpec, guest: dict[str, str], stamp: str) -> Case:
    pattern = _check_core_pattern()
    d = case_dir(spec.name)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    # reference (~RAM size) plus a core of up to RAM size plus QEMU itself
    need = (spec.mem_mib * (2 if spec.reference else 1) + 1024) << 20
    free = shutil.disk_usage(d).free
    if free < need:
        raise RigError(
            f"not enough disk for case {spec.name}: {free >> 20} MiB free, ~{need >> 20} MiB needed"
        )

    marker = f"{spec.name}-{uuid.uuid4().hex[:12]}"
    argv = qemu_argv(spec, d, marker)
    serial = d / "serial.log"
    qmp_sock = d / "qmp.sock"
    ready_timeout = 120.0 + spec.fill_mib / 10.0 + spec.mem_mib / 100.0
    dump_timeout = 300.0 + spec.mem_mib / 20.0
    exit_timeout = 300.0 + spec.mem_mib / 20.0

    t0 = time.monotonic()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    qemu_log = open(d / "qemu.log", "wb")
    proc = subprocess.Popen(
        argv,
        cwd=d,
        stdin=subprocess.DEVNULL,
        stdout=qemu_log,
        stderr=subprocess.STDOUT,
        preexec_fn=_preexec,
        start_new_session=True,
    )
    qemu_log.close()
    qmp: QMP | None = None
    aborted = False
    try:
        # 1. wait for the guest
        while True:
            if serial.exists() and b"RIG-READY" in serial.read_bytes():
                break
            if proc.poll() is not None:
                raise RigError(
                    f"QEMU exited ({proc.returncode}) before RIG-READY\n"
                    f"qemu.log:\n{_tail(d / 'qemu.log')}\nserial.log:\n{_tail(serial)}"
                )
            if time.monotonic() - t0 > ready_timeout:
                raise RigError(
                    f"guest not ready after {ready_timeout:.0f} s\nserial.log:\n{_tail(serial)}"
                )
            time.sleep(0.25)
        t_ready = time.monotonic()
        panic_info = _wait_for_panic(serial, proc, timeout=60.0) if spec.panic else None
        serial_text = serial.read_text(errors="replace")
        if "RIG-ERROR" in serial_text:
            raise RigError(f"guest reported an error\nserial.log:\n{_tail(serial)}")

        # 2. QMP: pause, reference dump
        qmp = QMP(qmp_sock)
        qmp_info: dict[str, Any] = {"greeting": qmp.greeting}
        qmp_info["version"] = qmp.execute("query-version")
        qmp_info["status_before_stop"] = qmp.execute("query-status")
        qmp.execute("stop")
        qmp_info["status"] = qmp.execute("query-status")
        qmp_info["dump_capability"] = qmp.execute("query-dump-guest-memory-capability")
        dump_seconds = None
        if spec.reference:
            t = time.monotonic()
            qmp.execute(
                "dump-guest-memory",
                {"paging": False, "protocol": f"file:{d / 'reference.elf'}", "format": "elf"},
                timeout=dump_timeout,
            )
            dump_seconds = time.monotonic() - t
            qmp_info["query_dump"] = qmp.execute("query-dump")
        qmp_info["events"] = qmp.events
        qmp.close()
        qmp = None

        # 3. SIGABRT -> process core
        core = d / "core"
        t = time.monotonic()
        aborted = True
        proc.send_signal(signal.SIGABRT)
        try:
            rc = proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            raise RigError(f"QEMU did not exit within {exit_timeout:.0f} s of SIGABRT") from None
        abort_seconds = time.monotonic() - t
        if rc != -signal.SIGABRT:
            raise RigError(
                f"QEMU ended with {rc}, not by SIGABRT\nqemu.log:\n{_tail(d / 'qemu.log')}"
            )
        if not core.exists():
            alt = d / f"{pattern}.{proc.pid}"
            if alt.exists():
                alt.rename(core)
            else:
                raise RigError(
                    f"no core file in {d} after SIGABRT (core_pattern={pattern!r}, "
                    f"check RLIMIT_CORE and kernel.core_pattern)"
                )
        with open(core, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise RigError(f"{core} is not an ELF file")
    except BaseException:
        if qmp is not None:
            qmp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not aborted and (d / "core").exists():
            (d / "core").unlink()
        raise
    finally:
        if qmp_sock.exists():
            qmp_sock.unlink()

    meta: dict[str, Any] = {
        "case_format": CASE_FORMAT,
        "spec": spec.as_dict(),
        "name": spec.name,
        "marker": marker,
        "qemu_version": spec.qemu,
        "qemu_version_stamp": stamp,
        "qemu_binary": str(qemu_binary(spec.qemu)),
        "qemu_src": str(qemu_src(spec.qemu)),
        "qemu_argv": argv,
        "pid": proc.pid,
        "exit_signal": "SIGABRT",
        "kernel_version": guest["kernel_version"],
        "kernel_package": guest["kernel_package"],
        "initramfs_inputs": guest["initramfs_inputs"],
        "qmp": qmp_info,
        "panic": panic_info,
        "timings": {
            "boot_seconds": round(t_ready - t0, 3),
            "qmp_dump_seconds": None if dump_seconds is None else round(dump_seconds, 3),
            "abort_seconds": round(abort_seconds, 3),
            "total_seconds": round(time.monotonic() - t0, 3),
        },
        "core": {"path": "core", **_file_sizes(d / "core")},
        "reference": (
            {"path": "reference.elf", **_file_sizes(d / "reference.elf")}
            if spec.reference
            else None
        ),
        "created": created,
        "host": {"kernel": platform.release(), "core_pattern": pattern},
    }
    tmp = d / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, d / "meta.json")
    return _case_from_meta(spec, d, meta)
