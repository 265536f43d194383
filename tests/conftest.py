"""Shared fixtures: the rig's cases (real QEMU cores) and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "rig"))
sys.path.insert(0, str(HERE))
# The synthetic-core builders (synth, guestsynth) serve the robustness tests too.
sys.path.insert(0, str(HERE / "unit"))

import rig  # noqa: E402


@pytest.fixture(scope="session")
def rig_case():
    """``rig_case(name)`` returns the cached rig case, making it on first use."""
    made: dict[str, rig.Case] = {}

    def get(name: str) -> rig.Case:
        if name not in made:
            try:
                made[name] = rig.ensure_case(rig.STANDARD_CASES[name])
            except rig.RigUnavailable as e:  # e.g. KVM does not boot the guest here
                pytest.skip(f"{name}: {e}")
        return made[name]

    return get


@pytest.fixture(scope="session")
def sleep_core(tmp_path_factory):
    """``(core, pid)``: a real core of ``sleep``, a program that is not QEMU."""
    import synth

    made = synth.make_sleep_core(tmp_path_factory.mktemp("sleep"))
    if made is None:
        pytest.skip("no core appeared for a SIGABRT-ed sleep (core_pattern/limits)")
    return made


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(options)`` mounts a tmpfs under tmp_path (unmounted afterwards).

    Needs root; skipped otherwise.
    """
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", where], check=False)


def run_cli(*args: object, check: bool = False, env: dict | None = None, cwd: Path | None = None):
    """Run ``python -m qemu_vmcore ARGS`` and return the CompletedProcess."""
    cmd = [sys.executable, "-m", "qemu_vmcore", *map(os.fspath, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_one_line_error(proc, *needles: str) -> None:
    """A failed run printed exactly one ``error:`` line (no traceback) naming ``needles``."""
    assert proc.returncode not in (0, None), proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


#: format -> (suffix, compress command reading argv[-2], writing argv[-1])
TOOLS = {
    "zstd": (".zst", ["zstd", "-q", "-T2", "-f"], "-o"),
    "lz4": (".lz4", ["lz4", "-q", "-f"], None),
    "xz": (".xz", ["xz", "-0", "-T2", "-c"], ">"),
}


def compressed_core(case: rig.Case, fmt: str) -> Path:
    """The case's core compressed with the real tool; cached beside it."""
    suffix, cmd, out_flag = TOOLS[fmt]
    dest = case.dir / f"core{suffix}"
    stamp = dest.with_name(dest.name + ".stamp")
    key = f"{case.core.stat().st_size} {case.core.stat().st_mtime_ns}"
    if dest.exists() and stamp.exists() and stamp.read_text() == key:
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    if out_flag == ">":
        with open(tmp, "wb") as f:
            subprocess.run([*cmd, case.core], stdout=f, check=True)
    elif out_flag:
        subprocess.run([*cmd, case.core, out_flag, tmp], check=True)
    else:
        subprocess.run([*cmd, case.core, tmp], check=True)
    tmp.rename(dest)
    stamp.write_text(key)
    return dest


def sparse_copy(src: Path, dst: Path, size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dst``, keeping holes (a cut core)."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.truncate(size)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fi.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            if data >= size:
                break
            hole = min(os.lseek(fi.fileno(), data, os.SEEK_HOLE), size)
            os.copy_file_range(fi.fileno(), fo.fileno(), hole - data, data, data)
            pos = hole


def bytes_being_written(pid: int, out_dir: Path) -> int:
    """How much the process ``pid`` has written to files it holds open in ``out_dir``.

    The output is an unnamed (O_TMPFILE) file until it is complete, so it is
    not in ``out_dir``'s listing; the process's descriptors still show it
    (``/proc/PID/fd/N -> OUT_DIR/#INODE (deleted)``).
    """
    written = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith(f"{out_dir}/"):
                    written = max(written, os.stat(fd).st_size)
    return written


@pytest.fixture
def keep_signals():
    """Restore the handlers that ``cli.main()`` installs when it runs in-process."""
    import signal

    from qemu_vmcore.frontends.cli import CLEANUP_SIGNALS

    old = {sig: signal.getsignal(sig) for sig in (*CLEANUP_SIGNALS, signal.SIGINT, signal.SIGPIPE)}
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)
