"""Compressed cores (systemd-coredump's ``core.*.zst``, ``.lz4``, ``.xz``).

A core must be seekable, so a compressed one is streamed once into a
temporary file: in fixed-size chunks (memory stays flat whatever the core's
size), and sparsely -- all-zero blocks are skipped, not written, so the
many gigabytes of never-touched guest RAM in a QEMU core cost no disk.
The format is recognised by its magic bytes, not its name.
"""

from __future__ import annotations

import errno
import lzma
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from qemu_vmcore.errors import CoreFileError, OutputError, VmcoreError
from qemu_vmcore.fileio import write_sparse
from qemu_vmcore.host.core import open_regular

CHUNK = 1 << 20  # decompressed bytes per read

#: magic bytes -> format name
MAGICS = {
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
    b"\xfd7zXZ\x00": "xz",
}


def detect(path: Path) -> str | None:
    """``zstd``, ``lz4`` or ``xz`` if ``path`` starts with that format's magic, else None.

    Only a regular file is opened (a FIFO would block the read); anything
    else is None, and open_core reports the problem in its own words.
    """
    try:
        fd = open_regular(path)
    except (OSError, VmcoreError):
        return None
    try:
        head = os.pread(fd, 6, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return next((name for magic, name in MAGICS.items() if head.startswith(magic)), None)


def _reader(fmt: str, raw: BinaryIO) -> BinaryIO:
    if fmt == "zstd":
        # pyzstd, not zstandard: its reader reports a stream cut short
        # (EOFError) where zstandard's returns the partial data silently.
        import pyzstd

        return pyzstd.ZstdFile(raw, mode="rb")
    if fmt == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameFile(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")


def _decompress_errors(fmt: str) -> tuple[type[BaseException], ...]:
    """What each library raises for a corrupt or truncated stream."""
    if fmt == "zstd":
        import pyzstd

        return (pyzstd.ZstdError, EOFError)
    if fmt == "lz4":
        return (RuntimeError, EOFError)  # lz4.frame: RuntimeError("LZ4F_decompress failed...")
    return (lzma.LZMAError, EOFError)


@contextmanager
def decompressed(
    path: Path,
    fmt: str,
    *,
    tmpdir: Path | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> Iterator[Path]:
    """Yield a path to a sparse, decompressed copy of ``path``; gone on exit.

    The copy has no name in the directory at any time (O_TMPFILE) or loses
    it right after it is made, so that no signal, not even SIGKILL, leaves
    it behind: it lives as long as our descriptor. The path yielded is that
    descriptor's ``/proc/PID/fd/N``, which this process and its children
    (gdb) can open while the context lasts.

    :param tmpdir: where the copy goes (default: $TMPDIR, else /var/tmp,
        which is disk rather than memory on most systems).
    :param progress: called with each number of *compressed* bytes consumed.
    :raises CoreFileError: the compressed stream is corrupt or truncated.
    :raises OutputError: the temporary directory has no room for the core.
    """
    where = Path(tmpdir or os.environ.get("TMPDIR") or "/var/tmp")
    fd = _unnamed_file(where)
    try:
        _decompress_into(path, fmt, fd, progress)
        yield Path(f"/proc/{os.getpid()}/fd/{fd}")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OutputError(
                f"{where}: no room to decompress {path.name} ({e.strerror})",
                hint="point --tmpdir (or TMPDIR) at a file system with room for the core's "
                "non-zero data",
            ) from None
        raise
    finally:
        os.close(fd)


#: errnos with which open(O_TMPFILE) says the file system (or kernel) cannot.
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)


def _unnamed_file(where: Path) -> int:
    """A new read-write file in ``where`` that has no name (mode 0600)."""
    try:
        try:
            return os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno not in _NO_TMPFILE:
                raise
        # No O_TMPFILE here: create a file and unlink it at once; the name
        # exists only between the two calls.
        fd, name = tempfile.mkstemp(prefix="qemu-vmcore-core-", dir=where)
        os.unlink(name)
        return fd
    except OSError as e:
        raise OutputError(f"{where}: cannot create a temporary core: {e.strerror}") from None


def _decompress_into(path: Path, fmt: str, fd: int, progress: Callable[[int], None]) -> None:
    with open(path, "rb") as raw, _reader(fmt, raw) as stream:
        offset, consumed = 0, 0
        while True:
            try:
                chunk = stream.read(CHUNK)
            except _decompress_errors(fmt) as e:
                raise CoreFileError(
                    f"{path}: corrupt {fmt} stream after {offset:,} bytes ({e})", path=path
                ) from None
            if not chunk:
                break
            write_sparse(fd, offset, chunk, len(chunk))
            offset += len(chunk)
            now = raw.tell()
            progress(now - consumed)
            consumed = now
        os.ftruncate(fd, offset)  # a trailing hole still counts towards the size
