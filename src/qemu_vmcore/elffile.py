"""Facts read from ELF files on disk (the QEMU executable or its debug file)."""

from __future__ import annotations

import mmap
import re
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from qemu_vmcore.errors import DebugInfoError

# QEMU prints "QEMU emulator version " QEMU_FULL_VERSION for -version; the
# literal sits in .rodata, which a default core does not contain.
_VERSION_RE = re.compile(rb"QEMU emulator version ([ -~]{1,120})\n")


def read_build_id(path: Path) -> bytes | None:
    """The GNU build-id of the ELF file at ``path``, or None if it has none.

    :raises DebugInfoError: the file is not an ELF file.
    :raises OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
            for section in elf.iter_sections(type="SHT_NOTE"):
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return bytes.fromhex(note["n_desc"])
        except ELFError as e:
            raise DebugInfoError(f"{path}: not an ELF file ({e})", path=path) from None
    return None


def read_qemu_version(path: Path) -> str | None:
    """QEMU's full version string (e.g. ``7.2.20 (Debian 1:7.2+dfsg-7+deb12u18)``).

    Read from the executable's .rodata; None when the file is not readable or
    holds no such string.
    """
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".rodata")
            if sec is None or sec["sh_type"] == "SHT_NOBITS":
                return None
            start, size = sec["sh_offset"], sec["sh_size"]
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                match = _VERSION_RE.search(m, start, start + size)
                return match.group(1).decode() if match else None
    except (OSError, ELFError, ValueError):
        return None
