"""Facts read from ELF files on disk (the QEMU executable or its debug file)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from qemu_vmcore.errors import DebugInfoError, VmcoreError
from qemu_vmcore.host.core import open_regular

# QEMU prints "QEMU emulator version " QEMU_FULL_VERSION for -version; the
# literal sits in .rodata, which a default core does not contain.
_VERSION_RE = re.compile(rb"QEMU emulator version ([ -~]{1,120})\n")
#: The longest match of _VERSION_RE: consecutive chunks overlap by this much.
_VERSION_MAX = len(b"QEMU emulator version ") + 120 + 1
#: Bytes of .rodata read at a time (QEMU's is ~10 MiB).
_CHUNK = 4 << 20


def read_build_id(path: Path) -> bytes | None:
    """The GNU build-id of the ELF file at ``path``, or None if it has none.

    :raises DebugInfoError: the file is not an ELF file.
    :raises NotRegularFileError: it is a FIFO, device, ... (never opened for reading).
    :raises OSError: the file cannot be opened.
    """
    with os.fdopen(open_regular(path), "rb") as f:
        try:
            elf = ELFFile(f)
            for section in elf.iter_sections(type="SHT_NOTE"):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return bytes.fromhex(note["n_desc"])
        except (ELFError, ValueError, OverflowError, EOFError) as e:
            # pyelftools raises more than ELFError on a corrupt file (struct
            # errors are ValueErrors, a cut file EOFError).
            raise DebugInfoError(f"{path}: not an ELF file ({e})", path=path) from None
    return None


def read_qemu_version(path: Path) -> str | None:
    """QEMU's full version string (e.g. ``7.2.20 (Debian 1:7.2+dfsg-7+deb12u18)``).

    Read from the executable's .rodata; None when the file is not readable or
    holds no such string. Read with pread() in chunks, not mmap(): a file
    cut short under a mapping kills the process with SIGBUS.
    """
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".rodata")
            if sec is None or sec["sh_type"] == "SHT_NOBITS":
                return None
            return _search(f.fileno(), sec["sh_offset"], sec["sh_size"])
    except (OSError, ELFError, ValueError, OverflowError, EOFError, VmcoreError):
        return None


def _search(fd: int, start: int, size: int) -> str | None:
    """The first _VERSION_RE match in ``[start, start + size)`` of ``fd``."""
    pos, end = start, start + size
    while pos < end:
        # Overlap by the longest match, so one that straddles chunks is seen whole.
        buf = os.pread(fd, min(_CHUNK + _VERSION_MAX, end - pos), pos)
        match = _VERSION_RE.search(buf)
        if match and match.start() < _CHUNK:
            return match.group(1).decode()
        if len(buf) < min(_CHUNK + _VERSION_MAX, end - pos):
            return None  # the file is shorter than its section headers say
        pos += _CHUNK
    return None
