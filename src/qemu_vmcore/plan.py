"""What to dump and how: the output format, paging, and the begin/length filter.

The rules are QMP ``dump-guest-memory``'s (dump/dump.c):

* ``begin`` and ``length`` come together or not at all, and ``length`` is
  greater than 0; the dump then holds guest RAM in ``[begin, begin + length)``
  only, each range clipped to it, and refuses when nothing is left;
* ``paging`` walks the guest's page tables (ELF only: a kdump file is
  indexed by physical page);
* the kdump formats write kdump-compressed files, raw by default (what
  QMP calls ``kdump-raw-*``) or in makedumpfile's flattened stream
  (``flattened``, QMP's ``kdump-*``).

Beyond QMP, ``begin``/``length`` also work with the kdump formats: pages
outside the range are left out of the bitmap, as makedumpfile leaves out
pages it filters.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from qemu_vmcore.errors import VmcoreError

if TYPE_CHECKING:
    from qemu_vmcore.qemu.memory import GuestRange

MAX_THREADS = 256
FORMATS = ("elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd")
_SIZE = re.compile(r"(?i)^\s*(0x[0-9a-f]+|0o[0-7]+|0b[01]+|\d+)\s*([kmgtp]i?b?)?\s*$")
_UNITS = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


class OptionError(VmcoreError):
    """The dump options contradict each other or QMP's rules."""


@dataclass(frozen=True)
class DumpOptions:
    """How to dump.

    :param format: one of :data:`FORMATS`.
    :param flattened: write a kdump format as makedumpfile's flattened stream.
    :param paging: PT_LOADs from the guest's page tables (virtual addresses).
    :param begin: first guest-physical address of the filter, or None.
    :param length: bytes in the filter (> 0), or None.
    :param threads: compression threads (kdump formats); 0 means one per CPU.
    """

    format: str = "elf"
    flattened: bool = False
    paging: bool = False
    begin: int | None = None
    length: int | None = None
    threads: int = 0

    @property
    def kdump(self) -> bool:
        return self.format.startswith("kdump-")

    @property
    def compression(self) -> str | None:
        """``zlib``, ``lzo``, ``snappy`` or ``zstd`` for a kdump format."""
        return self.format.removeprefix("kdump-") if self.kdump else None

    @property
    def filtered(self) -> bool:
        return self.length is not None

    @property
    def end(self) -> int | None:
        """First guest-physical address after the filter (exclusive)."""
        return None if self.length is None else self.begin + self.length

    def check(self) -> None:
        """:raises OptionError: the options break QMP's rules or contradict each other."""
        if self.format not in FORMATS:
            raise OptionError(f"unknown format {self.format!r} (one of {', '.join(FORMATS)})")
        if (self.begin is None) != (self.length is None):
            missing = "--length" if self.length is None else "--begin"
            given = "--begin" if self.length is None else "--length"
            raise OptionError(f"{given} needs {missing} (QMP: both or neither)")
        if self.length is not None and self.length <= 0:
            raise OptionError(f"--length must be greater than 0, not {self.length}")
        if self.begin is not None and not 0 <= self.begin < 1 << 64:
            raise OptionError(f"--begin {self.begin:#x} is not a guest-physical address")
        if self.paging and self.kdump:
            raise OptionError(
                f"--paging applies to --format elf only; {self.format} holds physical pages"
            )
        if self.flattened and not self.kdump:
            raise OptionError("--flattened applies to the kdump formats only")
        if not 0 <= self.threads <= MAX_THREADS:
            raise OptionError(
                f"--threads must be 0 (one per CPU) to {MAX_THREADS}, not {self.threads}"
            )

    def thread_count(self) -> int:
        """Compression threads to use: as asked, else one per CPU this process may use."""
        if self.threads:
            return self.threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):
            return max(1, os.cpu_count() or 1)


def parse_size(text: str) -> int:
    """An address or size: decimal, 0x hex, 0o or 0b, with an optional binary
    unit suffix (``16M``, ``4GiB``, ``0x1000K``).

    :raises ValueError: not a number of that form.
    """
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not an address or size: {text!r}")
    value = int(m.group(1), 0)
    unit = m.group(2)
    return value << _UNITS[unit[0].lower()] if unit else value


def select_ranges(ranges: list[GuestRange], options: DumpOptions) -> list[GuestRange]:
    """The guest ranges to dump: all of them, or each clipped to the filter.

    :raises OptionError: the filter holds no guest RAM (QMP: "no guest
        memory to dump").
    """
    if not options.filtered:
        return ranges
    begin, end = options.begin, options.end
    out = []
    for r in ranges:
        lo, hi = max(r.gpa, begin), min(r.end, end)
        if lo < hi:
            out.append(replace(r, gpa=lo, end=hi, hva=r.hva + (lo - r.gpa)))
    if not out:
        raise OptionError(f"no guest RAM in [{begin:#x}, {end:#x}): nothing to dump")
    return out


# -- ARCH, as QEMU's gdb script (scripts/dump-guest-memory.py) names it ------------

#: ARCH as QEMU's script spells it -> (e_machine, ELF byte order), for the
#: guests we dump (EM_X86_64, EM_386, EM_AARCH64; ELFDATA2LSB 1, MSB 2).
GDB_ARCHES = {
    "X86_64": (62, 1),
    "386": (3, 1),
    "aarch64-le": (183, 1),
    "aarch64-be": (183, 2),
}
#: Spellings accepted for them besides QEMU's own.
GDB_ARCH_ALIASES = {
    "x86_64": "X86_64",
    "x86-64": "X86_64",
    "i386": "386",
    "aarch64": "aarch64-le",
    "arm64": "aarch64-le",
}
#: The other ARCH values QEMU's script knows (never ours yet).
OTHER_QEMU_ARCHES = ("s390", "ppc64-be", "ppc64-le")
_OURS = "X86_64, 386, aarch64-le or aarch64-be"


def parse_gdb_arch(arch: str | None) -> str | None:
    """QEMU's ARCH name for a guest we dump, or None when not given.

    :raises VmcoreError: an ARCH we do not dump, or one nobody knows.
    """
    if arch is None:
        return None
    name = arch if arch in GDB_ARCHES else GDB_ARCH_ALIASES.get(arch.lower())
    if name is None and arch.lower() in GDB_ARCHES:
        name = arch.lower()
    if name is not None:
        return name
    if arch in OTHER_QEMU_ARCHES:
        raise OptionError(
            f"ARCH {arch} is not supported: qemu-vmcore dumps x86 and aarch64 guests "
            f"(ARCH {_OURS}, or leave ARCH out)"
        )
    raise OptionError(
        f"unknown ARCH {arch!r}: use {_OURS}, or leave ARCH out to take the guest's "
        f"(QEMU's script also knows {', '.join(OTHER_QEMU_ARCHES)})"
    )


def check_gdb_arch(arch: str | None, machine: int, byteorder: int = 1) -> None:
    """Refuse an ARCH that is not what QEMU's own dump of this guest would be.

    :param machine: the e_machine the guest's dump has (``QemuCore.dump_arch``).
    :param byteorder: its ELF byte order (ELFDATA2LSB 1, ELFDATA2MSB 2).
    """
    if arch is None or GDB_ARCHES[arch] == (machine, byteorder):
        return
    right = next((n for n, m in GDB_ARCHES.items() if m == (machine, byteorder)), None)
    if right is None:
        raise OptionError(f"ARCH {arch} does not match this guest (e_machine {machine})")
    given_machine = GDB_ARCHES[arch][0]
    if machine == GDB_ARCHES["X86_64"][0] and given_machine == GDB_ARCHES["386"][0]:
        why = "its first vCPU was in long mode"
    elif machine == GDB_ARCHES["386"][0] and given_machine == GDB_ARCHES["X86_64"][0]:
        why = "its first vCPU was not in long mode"
    elif machine == given_machine:  # aarch64, the other byte order
        why = f"its kernel runs {'big' if byteorder == 2 else 'little'}-endian (SCTLR_EL1.EE)"
    else:
        why = f"it is an {'aarch64' if machine == GDB_ARCHES['aarch64-le'][0] else 'x86'} guest"
    raise OptionError(
        f"ARCH {arch} does not match this guest: {why}, so its "
        f"dump is {right} (as QMP dump-guest-memory would write it)",
        hint=f"pass {right}, or leave ARCH out",
    )
