"""Crafted guest RAM inside a synthetic QEMU core, for the guest-data parser tests.

The guest's RAM is a bytearray the test fills in; :func:`guest_ram` writes it
as one PT_LOAD of a synthetic process core (see :mod:`synth`) and maps it at
guest-physical 0 with a :class:`GuestPhysicalMemory`, the way the library
sees a real QEMU's ``pc.ram``.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import synth

from qemu_vmcore import elfdefs as E
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.hostcore import HostCore, open_core
from qemu_vmcore.qemu.memory import GuestRange

PAGE = 4096
RAM_HVA = 0x7F40_0000_0000
KIMG = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")


@contextmanager
def guest_ram(ram: bytes | bytearray) -> Iterator[tuple[GuestPhysicalMemory, HostCore]]:
    """``(mem, host)`` with ``ram`` as guest-physical ``[0, len(ram))``."""
    with tempfile.TemporaryDirectory(prefix="guestsynth-") as d:
        path = Path(d) / "core"
        notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
        synth.write_core(path, [synth.Load(RAM_HVA, bytes(ram))], notes)
        with open_core(path) as host:
            r = GuestRange(0, len(ram), RAM_HVA, "pc.ram", "pc.ram", 1)
            yield GuestPhysicalMemory([r], host), host


def put(ram: bytearray, at: int, data: bytes) -> None:
    """Write ``data`` at ``ram[at:]`` (must fit: tests lay things out on purpose)."""
    assert 0 <= at and at + len(data) <= len(ram), (hex(at), len(data))
    ram[at : at + len(data)] = data


def put64(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U64.pack(value & (1 << 64) - 1))


def put32(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U32.pack(value & (1 << 32) - 1))


def put16(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U16.pack(value & 0xFFFF))


def vmcoreinfo_note(text: bytes) -> bytes:
    """The kernel's VMCOREINFO ELF note around ``text`` (type 0, 4-byte padding)."""
    return E.note_bytes(b"VMCOREINFO", 0, text)


def vmcoreinfo_text(fields: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """``KEY=value\\n`` lines, in order (OSRELEASE must come first)."""
    items = fields.items() if isinstance(fields, dict) else fields
    return b"".join(f"{k}={v}\n".encode() for k, v in items)
