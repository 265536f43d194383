"""Running ``qemu-vmcore mount`` (or any FUSE server) as a user does: started in
the background, waited for until its file answers, ended the ways a user ends it.

Standard library only. Every mount is undone when the context ends, whatever
happened, so a failing test leaves no mount behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FILE = "vmcore"


def fuse_usable() -> str | None:
    """Why FUSE mounts cannot be tested here, or None when they can."""
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "fusermount3 not installed"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "fusermount3 not installed (Debian: fuse3)"
    return None


@dataclass
class Mount:
    proc: subprocess.Popen
    mountpoint: Path
    _log: object
    _text: str | None = None  # what the server said, once it ended
    _out: object = None  # its stdout (``mount --json``)

    @property
    def file(self) -> Path:
        return self.mountpoint / FILE

    def stderr(self) -> str:
        if self._text is not None:
            return self._text
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stdout(self) -> str:
        """What the server printed on stdout so far."""
        self._out.flush()
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def end(self, how: str = "fusermount", timeout: float = 60) -> int:
        """End the mount as ``how`` (``fusermount``, ``umount``, or a signal
        name such as ``SIGINT``); returns the server's exit status."""
        if how == "fusermount":
            subprocess.run(["fusermount3", "-u", os.fspath(self.mountpoint)], check=True)
        elif how == "umount":
            subprocess.run(["umount", os.fspath(self.mountpoint)], check=True)
        else:
            self.proc.send_signal(getattr(signal, how))
        return self.proc.wait(timeout=timeout)


def wait_mounted(m: Mount, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if m.proc.poll() is not None:
            raise AssertionError(f"the mount ended early ({m.proc.returncode}):\n{m.stderr()}")
        if os.path.ismount(m.mountpoint) and m.file.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"not mounted after {timeout:.0f} s:\n{m.stderr()}")


def is_mounted(mountpoint: Path) -> bool:
    """Whether ``mountpoint`` is in the mount table (os.path.ismount says no
    for a FUSE mount whose server died: its stat fails with ENOTCONN)."""
    target = os.fspath(Path(mountpoint).absolute()).replace(" ", "\\040")
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def gone(mountpoint: Path, timeout: float = 10) -> bool:
    """Whether ``mountpoint`` stops being a mount within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_mounted(mountpoint):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def mounted(argv: Sequence[object], mountpoint: Path, *, env: dict | None = None,
            timeout: float = 600) -> Iterator[Mount]:  # fmt: skip
    """Start ``argv`` (a FUSE server for ``mountpoint``) and yield once its
    file answers; then make sure it is unmounted and ended."""
    log, out = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen([os.fspath(a) for a in argv], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=log, env=env)  # fmt: skip
    m = Mount(proc, Path(mountpoint), log, _out=out)
    try:
        wait_mounted(m, timeout)
        yield m
    finally:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                subprocess.run(["fusermount3", "-u", "-z", os.fspath(mountpoint)],
                               stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if is_mounted(mountpoint):
            subprocess.run(["umount", "-l", os.fspath(mountpoint)], check=False)
        m._text = m.stderr()
        log.close()


def cli_argv(*args: object) -> list[object]:
    """``python -m qemu_vmcore ARGS``, as support.runs.run_cli runs it."""
    return [sys.executable, "-m", "qemu_vmcore", *args]


def disk_used(path: Path) -> int:
    """Bytes used on the file system holding ``path``, as df counts them."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
