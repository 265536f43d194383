"""output: the vmcore file appears whole, private, and never through a symlink."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qemu_vmcore.errors import OutputError
from qemu_vmcore.writers.output import MODE, atomic_output, check_target


def entries(d):
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277, 0o777])
def test_mode_is_0600_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    target = tmp_path / "vmcore"
    with atomic_output(target, force=False) as fd:
        # The temporary file is private from the start, not only once renamed.
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.write(fd, b"guest secrets")
    assert MODE == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"guest secrets"
    assert entries(tmp_path) == ["vmcore"]


@pytest.fixture(params=["O_TMPFILE", "named"])
def mode(request, monkeypatch):
    """Run a test with O_TMPFILE, and again as on a file system without it."""
    if request.param == "named":
        without_tmpfile(monkeypatch)
    return request.param


def without_tmpfile(monkeypatch) -> None:
    """Make open(O_TMPFILE) fail as on a file system that lacks it."""
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)


def test_the_file_appears_only_when_complete(tmp_path, mode):
    target = tmp_path / "vmcore"
    with atomic_output(target, force=False) as fd:
        os.write(fd, b"partial")
        assert not target.exists()
        if mode == "O_TMPFILE":
            # Unnamed until complete: nothing a SIGKILL could leave behind.
            assert entries(tmp_path) == []
            assert os.fstat(fd).st_nlink == 0
        else:
            (tmp,) = entries(tmp_path)
            assert tmp.startswith(".qv-") and tmp.endswith(".tmp")
            assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / tmp))
    assert entries(tmp_path) == ["vmcore"]
    assert target.read_bytes() == b"partial"


def test_existing_target_is_refused_without_force(tmp_path):
    target = tmp_path / "vmcore"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists") as info:
        with atomic_output(target, force=False):
            pytest.fail("the body must not run")
    assert info.value.hint and "--force" in info.value.hint
    assert info.value.exit_code == 3
    assert target.read_bytes() == b"precious"
    assert entries(tmp_path) == ["vmcore"]


def test_existing_target_is_replaced_with_force(tmp_path):
    target = tmp_path / "vmcore"
    target.write_bytes(b"old")
    target.chmod(0o644)
    with atomic_output(target, force=True) as fd:
        os.write(fd, b"new")
        assert target.read_bytes() == b"old"  # untouched until the rename
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert entries(tmp_path) == ["vmcore"]


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    victim.chmod(0o644)
    target = tmp_path / "vmcore"
    target.symlink_to(victim)
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target, force=False):
            pass
    with atomic_output(target, force=True) as fd:
        os.write(fd, b"vmcore")
    assert not target.is_symlink()
    assert target.read_bytes() == b"vmcore"
    assert victim.read_bytes() == b"do not touch"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


@pytest.mark.parametrize("force", [False, True])
def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch, force):
    """Without O_TMPFILE, someone who guessed the temporary name and put a
    symlink there first: O_EXCL|O_NOFOLLOW make the create fail, and nothing
    is written through it. (With O_TMPFILE and --force, the link(2) to the
    temporary name fails the same way.)"""
    monkeypatch.setattr(os, "urandom", lambda n: b"\x11" * n)
    without_tmpfile(monkeypatch)
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    planted = tmp_path / f".qv-{'11' * 6}.tmp"
    planted.symlink_to(victim)
    with pytest.raises(OutputError, match="cannot create a file: File exists"):
        with atomic_output(tmp_path / "vmcore", force=force) as fd:
            os.write(fd, b"vmcore")
    assert victim.read_bytes() == b"do not touch"
    assert entries(tmp_path) == [planted.name, "victim"]  # the link is not ours to remove


def test_a_dangling_symlink_is_replaced_and_its_target_not_created(tmp_path):
    target = tmp_path / "vmcore"
    target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="already exists"):
        check_target(target, force=False)
    with atomic_output(target, force=True) as fd:
        os.write(fd, b"x")
    assert not target.is_symlink() and target.read_bytes() == b"x"
    assert not (tmp_path / "elsewhere").exists()


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom("no"), KeyboardInterrupt(), SystemExit(143)])
def test_an_exception_leaves_nothing_behind(tmp_path, exc):
    target = tmp_path / "vmcore"
    with pytest.raises(type(exc)):
        with atomic_output(target, force=False) as fd:
            os.write(fd, b"half a vmcore")
            raise exc
    assert entries(tmp_path) == []
    with pytest.raises(OSError) as info:
        os.fstat(fd)  # closed too
    assert info.value.errno == errno.EBADF


def test_an_exception_keeps_the_old_target_with_force(tmp_path):
    target = tmp_path / "vmcore"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, force=True) as fd:
            os.write(fd, b"new")
            raise KeyboardInterrupt
    assert entries(tmp_path) == ["vmcore"]
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO])
def test_write_errors_become_output_errors(tmp_path, code):
    target = tmp_path / "vmcore"
    with pytest.raises(OutputError, match="cannot write") as info:
        with atomic_output(target, force=False):
            raise OSError(code, os.strerror(code))
    assert str(target) in info.value.message
    assert entries(tmp_path) == []


def test_other_os_errors_propagate(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_output(tmp_path / "vmcore", force=False):
            raise PermissionError(errno.EACCES, "nope")
    assert entries(tmp_path) == []


def test_a_target_that_appears_meanwhile_wins_without_force(tmp_path):
    target = tmp_path / "vmcore"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target, force=False) as fd:
            os.write(fd, b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert entries(tmp_path) == ["vmcore"]


def test_check_target_accepts_a_new_file(tmp_path):
    check_target(tmp_path / "new", force=False)
    assert entries(tmp_path) == []


def test_check_target_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    for force in (False, True):
        with pytest.raises(OutputError, match="is a directory"):
            check_target(tmp_path / "d", force=force)


def test_check_target_refuses_a_missing_directory(tmp_path):
    with pytest.raises(OutputError, match="no such directory") as info:
        check_target(tmp_path / "nope" / "vmcore", force=True)
    assert str(tmp_path / "nope") in info.value.message


def test_check_target_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OutputError, match="no such directory"):
        check_target(tmp_path / "f" / "vmcore", force=False)


def test_check_target_refuses_an_unwritable_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    d = tmp_path / "ro"
    d.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="not writable"):
        check_target(d / "vmcore", force=False)


def test_a_target_that_appears_meanwhile_wins_in_either_mode(tmp_path, mode):
    """link(2) gives the name, and fails rather than replace: no clobber even
    when the file appears after the last check."""
    target = tmp_path / "vmcore"
    with pytest.raises(OutputError, match="already exists"):
        with atomic_output(target, force=False) as fd:
            os.write(fd, b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert entries(tmp_path) == ["vmcore"]


def test_force_replaces_in_either_mode(tmp_path, mode):
    target = tmp_path / "vmcore"
    target.write_bytes(b"old")
    with atomic_output(target, force=True) as fd:
        os.write(fd, b"new")
    assert target.read_bytes() == b"new"
    assert entries(tmp_path) == ["vmcore"]


@pytest.mark.parametrize("length", [238, 250, 255])
def test_names_up_to_name_max_work(tmp_path, mode, length):
    target = tmp_path / ("v" * length)
    for force in (False, True):
        with atomic_output(target, force=force) as fd:
            os.write(fd, b"x")
    assert entries(tmp_path) == [target.name]


@pytest.mark.parametrize("force", [False, True])
def test_a_device_is_never_replaced(force):
    before = os.stat("/dev/null")
    with pytest.raises(OutputError, match="is a device, not a regular file") as info:
        check_target(Path("/dev/null"), force=force)
    assert info.value.exit_code == 3
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


@pytest.mark.parametrize("force", [False, True])
def test_a_fifo_or_socket_is_never_replaced(tmp_path, force):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO"):
        with atomic_output(fifo, force=force):
            pytest.fail("the body must not run")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    with pytest.raises(OutputError, match="is a socket"):
        check_target(tmp_path / "sock", force=force)
    sock.close()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("force", [False, True])
def test_the_input_is_never_the_output(tmp_path, force):
    core = tmp_path / "core"
    core.write_bytes(b"the only copy")
    hard = tmp_path / "hardlink"
    os.link(core, hard)
    for target in (core, hard):
        with pytest.raises(OutputError, match="is the input .* itself") as info:
            with atomic_output(target, force=force, inputs=[core]):
                pytest.fail("the body must not run")
        assert info.value.exit_code == 3
    assert core.read_bytes() == b"the only copy"


def test_sigkill_leaves_nothing(tmp_path):
    """A writer killed mid-file leaves no file: it was never named."""
    code = (
        "import os, sys; from pathlib import Path;"
        "from qemu_vmcore.writers.output import atomic_output\n"
        "with atomic_output(Path(sys.argv[1]), force=False) as fd:\n"
        "    os.write(fd, b'x' * 65536); print('written', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "vmcore")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"written\n"
    proc.kill()
    proc.wait(timeout=10)
    assert entries(tmp_path) == []
