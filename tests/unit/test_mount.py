"""frontends.mount: the served vmcore through a real FUSE mount, on a synthetic guest.

The FUSE server is support.viewsynth's (a synthetic core, no QEMU): it
writes extract's file beside the mount, so each test compares the mounted
file with it. Skipped where FUSE cannot be mounted. The checks of the
mount point and of FUSE itself need no mount.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import mounts
from support.runs import data_runs

from qemu_vmcore.errors import OutputError, VmcoreError
from qemu_vmcore.frontends import mount

TESTS = Path(__file__).resolve().parent.parent
needs_fuse = pytest.mark.skipif(mounts.fuse_usable() is not None, reason=str(mounts.fuse_usable()))


def serve_argv(directory: Path, fmt: str) -> list[object]:
    from support.viewsynth import SERVE

    return [sys.executable, "-c", SERVE, directory, fmt]


def env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))


@pytest.fixture
def served(tmp_path):
    """``served(fmt)``: a running mount of the synthetic guest, and extract's file."""

    def start(fmt: str = "elf"):
        (tmp_path / "mnt").mkdir(exist_ok=True)
        return mounts.mounted(serve_argv(tmp_path, fmt), tmp_path / "mnt", env=env(), timeout=60)

    return start


@needs_fuse
@pytest.mark.parametrize("fmt", ["elf", "kdump-zstd"])
def test_the_mounted_file_is_extracts_and_sparse(served, tmp_path, fmt):
    with served(fmt) as m:
        extracted = tmp_path / "extracted"
        assert os.listdir(m.mountpoint) == ["vmcore"]
        assert m.file.read_bytes() == extracted.read_bytes()
        st = m.file.stat()
        assert st.st_size == extracted.stat().st_size
        assert 0 < st.st_blocks * 512 < st.st_size  # sparse, and says so
        assert (st.st_mode & 0o777, st.st_uid) == (0o400, os.getuid())
        runs = data_runs(m.file)
        assert runs and runs[-1][1] <= st.st_size
        data = extracted.read_bytes()
        pos = 0
        for lo, hi in runs:  # holes hold zeros only
            assert not any(data[pos:lo])
            pos = hi
        assert not any(data[pos:])
        copy = tmp_path / "copy"
        subprocess.run(["cp", "--sparse=always", m.file, copy], check=True)
        assert copy.read_bytes() == data
        assert copy.stat().st_blocks <= extracted.stat().st_blocks + 8
        with pytest.raises(OSError):
            open(m.file, "r+b")
        assert m.end("fusermount") == 0
    assert not mounts.is_mounted(tmp_path / "mnt")
    assert "not mounted" not in m.stderr()  # the watchdog's words stay off the terminal


@needs_fuse
@pytest.mark.parametrize("how", ["fusermount", "umount", "SIGINT", "SIGTERM", "SIGHUP"])
def test_each_way_to_end_it_exits_0_and_unmounts(served, tmp_path, how):
    with served() as m:
        m.file.read_bytes()
        assert m.end(how) == 0, m.stderr()
        assert not mounts.is_mounted(m.mountpoint)
        assert m.stderr() == ""


@needs_fuse
def test_sigkill_leaves_no_mount_behind(served, tmp_path):
    """The watchdogs unmount a killed server's mount: libfuse's (auto_unmount)
    misses about one kill in five, ours none (five kills, each must be clean)."""
    for _ in range(5):
        with served() as m:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
            assert mounts.gone(m.mountpoint, timeout=15)


# -- the checks, without a mount ---------------------------------------------------


def test_mountpoint_missing(tmp_path):
    with pytest.raises(OutputError, match="no such directory to mount on"):
        mount.check_mountpoint(tmp_path / "nope")


def test_mountpoint_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        mount.check_mountpoint(tmp_path / "f")


def test_mountpoint_not_empty(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        mount.check_mountpoint(tmp_path)


def test_mountpoint_already_a_mount():
    with pytest.raises(OutputError, match="already a mount point"):
        mount.check_mountpoint(Path("/proc"))


def test_an_empty_directory_will_do(tmp_path):
    mount.check_mountpoint(tmp_path)


def test_no_fuse_device(monkeypatch, tmp_path):
    monkeypatch.setenv(mount.DEVICE_ENV, str(tmp_path / "fuse"))
    with pytest.raises(VmcoreError, match="has no FUSE") as e:
        mount.check_fuse()
    assert "modprobe fuse" in e.value.hint
    (tmp_path / "fuse").write_text("")
    with pytest.raises(VmcoreError, match="not a character device"):
        mount.check_fuse()


def test_no_fusermount(monkeypatch):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    monkeypatch.setenv(mount.FUSERMOUNT_ENV, "fusermount3-that-is-not-there")
    with pytest.raises(VmcoreError, match="fusermount3-that-is-not-there not found") as e:
        mount.check_fuse()
    assert "apt install fuse3" in e.value.hint


@needs_fuse
def test_a_mount_that_fails_is_one_error(tmp_path, monkeypatch):
    """When libfuse refuses (here: the mount point vanished after the checks),
    serve() raises with what libfuse said, and nothing is left mounted."""
    from qemu_vmcore.writers.view import VmcoreView

    target = tmp_path / "mnt"
    target.mkdir()
    monkeypatch.setattr(mount, "check_mountpoint", lambda path: shutil.rmtree(path))
    start = time.monotonic()
    with pytest.raises(VmcoreError, match="cannot mount"):
        mount.serve(VmcoreView(0, [], "elf"), target, source=Path(__file__))
    assert time.monotonic() - start < 30
