"""Creating the output file safely: all or nothing, private, never through a symlink.

The vmcore is written to a temporary file in the target directory (created
with O_EXCL and O_NOFOLLOW, mode 0600 whatever the umask, since it holds the
guest's secrets) and renamed over the target only when complete. On any
failure or interruption the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qemu_vmcore.errors import OutputError

MODE = 0o600


def check_target(path: Path, *, force: bool) -> None:
    """Refuse early, before any expensive work, if ``path`` cannot be written.

    :raises OutputError: it exists (without ``force``), is a directory, or its
        directory is missing or not writable.
    """
    if path.is_dir():
        raise OutputError(f"{path}: is a directory", path=path)
    if os.path.lexists(path) and not force:
        raise OutputError(f"{path}: already exists", hint="pass --force to replace it", path=path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{parent}: no such directory", path=path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: directory not writable", path=path)


@contextmanager
def atomic_output(path: Path, *, force: bool) -> Iterator[int]:
    """Yield a file descriptor; on clean exit the file appears at ``path``.

    With ``force`` an existing file or symlink at ``path`` is replaced (the
    link itself, never its target).
    """
    check_target(path, force=force)
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, MODE)
    except OSError as e:
        raise OutputError(f"{path.parent}: cannot create a file: {e.strerror}", path=path) from None
    try:
        os.fchmod(fd, MODE)  # the umask may have taken bits from 0600; put them back
        try:
            yield fd
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
                raise OutputError(f"{path}: cannot write: {e.strerror}", path=path) from None
            raise
        os.close(fd)
        fd = -1
        if os.path.lexists(path) and not force:  # appeared while we worked
            raise OutputError(f"{path}: already exists", hint="pass --force to replace it")
        os.replace(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)
