"""Backing files: shared file-backed guest RAM that the core left out.

The kernel's default ``coredump_filter`` (0x33) dumps private and anonymous
shared memory but not shared file mappings whose file still has a name
(``MMF_DUMP_MAPPED_SHARED``, fs/coredump.c ``vma_dump_size()``). Guest RAM
from ``memory-backend-file,share=on`` is such a mapping, so a default core
lacks it. That RAM *is* the file: once QEMU died, the file holds the guest's
last bytes, and the core's NT_FILE note names it. gdb reads such ranges from
the file without a word; we do too, but say so, and only for RAM QEMU mapped
shared (``RAM_SHARED``): a private mapping's written pages are not in its
file.

(``memory-backend-memfd`` and unlinked files count as anonymous shared
memory and are in the core; their NT_FILE names end in " (deleted)".)
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from qemu_vmcore.host.core import FileMapping

#: What the kernel appends to the NT_FILE path of a file that was unlinked.
DELETED = " (deleted)"
#: How the kernel names a memfd in NT_FILE (then followed by " (deleted)").
MEMFD_PREFIX = "/memfd:"


@dataclass(frozen=True)
class FileSpan:
    """``[hva, hva + size)``, inside NT_FILE mapping ``mapping`` (None: no file)."""

    hva: int
    size: int
    mapping: FileMapping | None

    def file_offset(self) -> int:
        """Where ``hva`` is in the mapped file (a file span only)."""
        assert self.mapping is not None
        return self.mapping.file_offset + (self.hva - self.mapping.hva)


def file_spans(mappings: list[FileMapping], hva: int, size: int) -> list[FileSpan]:
    """Split ``[hva, hva + size)`` by the NT_FILE mappings covering it, in order.

    ``mappings`` need not be sorted; parts no mapping covers have
    ``mapping=None``. Mappings do not overlap (they are VMAs).
    """
    end = hva + size
    inside = sorted((m for m in mappings if m.hva < end and hva < m.end), key=lambda m: m.hva)
    out, pos = [], hva
    for m in inside:
        if m.hva > pos:
            out.append(FileSpan(pos, m.hva - pos, None))
            pos = m.hva
        stop = min(end, m.end)
        if stop > pos:
            out.append(FileSpan(pos, stop - pos, m))
            pos = stop
    if pos < end:
        out.append(FileSpan(pos, end - pos, None))
    return out


@dataclass(frozen=True)
class BackingFile:
    """A file named in NT_FILE, opened for reading guest RAM, or why not.

    :param fd: open read-only, or None when the file cannot be used.
    :param size: its size in bytes when open.
    :param problem: why it cannot be used, to follow its path in a sentence
        (e.g. "is gone (no such file)").
    """

    path: str
    fd: int | None
    size: int = 0
    problem: str | None = None


def open_backing_file(path: str) -> BackingFile:
    """Open ``path`` if it can hold guest RAM: a regular file that still exists."""
    if path.endswith(DELETED):
        what = "is a memfd, which" if path.startswith(MEMFD_PREFIX) else "was deleted and"
        return BackingFile(path, None, problem=f"{what} has no file left to read")
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not block us.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        reason = "is gone" if isinstance(e, FileNotFoundError) else "cannot be opened"
        return BackingFile(path, None, problem=f"{reason} ({e.strerror})")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return BackingFile(path, None, problem="is not a regular file")
    return BackingFile(path, fd, st.st_size)


class BackingFiles:
    """The backing files a guest's memory reads from, opened once each.

    :param enabled: False refuses them all (``--no-backing-files``).
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._files: dict[str, BackingFile] = {}

    def get(self, path: str) -> BackingFile:
        if path not in self._files:
            if self.enabled:
                self._files[path] = open_backing_file(path)
            else:
                problem = "is not read (reading backing files is turned off)"
                self._files[path] = BackingFile(path, None, problem=problem)
        return self._files[path]

    def problem(self, path: str, file_offset: int, size: int) -> str | None:
        """Why ``[file_offset, file_offset + size)`` of ``path`` cannot be read, or None."""
        f = self.get(path)
        if f.problem is None and file_offset + size > f.size:
            return f"is {f.size:,} bytes, too short for the mapping ({file_offset + size:,})"
        return f.problem

    def fd(self, path: str) -> int:
        fd = self.get(path).fd
        assert fd is not None, path
        return fd

    def close(self) -> None:
        for f in self._files.values():
            if f.fd is not None:
                os.close(f.fd)
        self._files.clear()
