"""Creating the output file safely: all or nothing, private, never through a symlink.

The vmcore is written to an unnamed file in the target directory
(``O_TMPFILE``, mode 0600 whatever the umask, since it holds the guest's
secrets) and given its name only when complete, with ``linkat``. So no
signal, SIGKILL included, can leave a partial file behind: an unnamed file
vanishes with its last descriptor.

- Without ``force`` the name is given by ``linkat`` itself, which fails
  with EEXIST rather than replace anything: a file that appears at the
  target while we work is never clobbered.
- With ``force`` the file is linked at a short random name and renamed over
  the target (the one moment a named file exists, between two system calls).

Where the file system has no ``O_TMPFILE`` (some network and FUSE file
systems), a named temporary file (``O_EXCL|O_NOFOLLOW``) is used instead and
removed on every exit that Python sees; there SIGKILL can leave it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qemu_vmcore.errors import OutputError

MODE = 0o600

#: errnos with which open(O_TMPFILE) says the file system cannot do it.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)


def check_target(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse early, before any expensive work, if ``path`` cannot be written.

    :param inputs: files being read (the core); the target must not be one
        of them, with or without ``force``: replacing the core would destroy
        the only copy of the guest. (A symlink at the target is replaced, not
        followed, so it may name anything.)
    :raises OutputError: it exists (without ``force``), is a directory, a
        device, FIFO or socket (never replaced by a regular file, even with
        ``force``), is one of ``inputs``, or its directory is missing or not
        writable.
    """
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # the directory check below says which
        st = None
    except OSError as e:
        raise OutputError(f"{path}: {e.strerror}", path=path) from None
    if st is not None:
        # A symlink is replaced, never written through, so what it names is safe.
        if not stat.S_ISLNK(st.st_mode):
            _check_existing(path, st, inputs)
        if not force:
            raise OutputError(
                f"{path}: already exists", hint="pass --force to replace it", path=path
            )
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{parent}: no such directory", path=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: directory not writable", path=path)


def _check_existing(path: Path, st: os.stat_result, inputs: Iterable[Path]) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a directory", path=path)
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        )
        raise OutputError(
            f"{path}: is {kind}, not a regular file; it is never replaced",
            hint="name a regular file",
            path=path,
        )
    for source in inputs:
        try:
            if os.path.samestat(st, os.stat(source)):
                raise OutputError(
                    f"{path}: is the input {source} itself; it is never overwritten",
                    hint="write the vmcore to another file",
                    path=path,
                )
        except OSError:
            continue


@contextmanager
def atomic_output(path: Path, *, force: bool, inputs: Iterable[Path] = ()) -> Iterator[int]:
    """Yield a file descriptor; on clean exit the file appears at ``path``.

    With ``force`` an existing file or symlink at ``path`` is replaced (the
    link itself, never its target).

    :raises OutputError: as :func:`check_target`, and when the file cannot
        be created, written (disk full, quota, I/O error) or named.
    """
    inputs = tuple(inputs)
    check_target(path, force=force, inputs=inputs)
    fd, tmp = _create(path)
    try:
        os.fchmod(fd, MODE)  # the umask may have taken bits from 0600; put them back
        try:
            yield fd
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
                raise OutputError(f"{path}: cannot write: {e.strerror}", path=path) from None
            raise
        check_target(path, force=force, inputs=inputs)  # what appeared while we worked
        tmp = _publish(fd, tmp, path, force=force)
    finally:
        os.close(fd)
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def _temp_name(path: Path) -> Path:
    # Short and fixed in length, so that a target name of up to NAME_MAX
    # bytes still works.
    return path.parent / f".qv-{os.urandom(6).hex()}.tmp"


def _create(path: Path) -> tuple[int, Path | None]:
    """An unnamed file in ``path``'s directory, or a named one where that is not possible."""
    base = os.O_WRONLY | os.O_CLOEXEC
    if os.path.isdir("/proc/self/fd"):  # needed to name it; absent in some chroots
        try:
            return os.open(path.parent, base | os.O_TMPFILE, MODE), None
        except OSError as e:
            if e.errno not in _NO_TMPFILE:
                raise OutputError(
                    f"{path.parent}: cannot create a file: {e.strerror}", path=path
                ) from None
    tmp = _temp_name(path)
    try:
        return os.open(tmp, base | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE), tmp
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create a file: {e.strerror}", path=path) from None


def _publish(fd: int, tmp: Path | None, path: Path, *, force: bool) -> Path | None:
    """Give the finished file its name; returns a temporary name still to remove, if any."""
    try:
        if tmp is None:
            if not force:
                _link_fd(fd, path)  # EEXIST, never a clobber
                return None
            tmp = _temp_name(path)
            _link_fd(fd, tmp)
        if force:
            os.replace(tmp, path)
            return None
        os.link(tmp, path, follow_symlinks=False)  # EEXIST, never a clobber
        return tmp
    except FileExistsError:
        raise OutputError(
            f"{path}: already exists", hint="pass --force to replace it", path=path
        ) from None
    except OSError as e:
        raise OutputError(f"{path}: cannot create the file: {e.strerror}", path=path) from None


def _link_fd(fd: int, path: Path) -> None:
    """Name the unnamed file ``fd`` at ``path`` (EEXIST if taken).

    ``linkat`` with AT_SYMLINK_FOLLOW on ``/proc/self/fd/N`` needs no
    privilege. Python calls plain ``link()``, which does not follow the magic
    link and fails with EXDEV, unless a directory fd is given; so one is.
    """
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"fd/{fd}", path, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)
