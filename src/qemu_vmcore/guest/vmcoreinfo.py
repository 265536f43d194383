"""The guest kernel's VMCOREINFO: finding it, validating it, reading it.

Everything here comes from guest memory, which the guest controls (user
space included), so every size is capped and every candidate is checked
against the kernel memory it describes before it is believed.

Where it comes from, in order of preference:

1. QEMU's vmcoreinfo device, when the guest's fw_cfg driver filled it in
   (QEMU's own dump uses that, and only that);
2. a scan of guest RAM for the kernel's own ELF note: name ``VMCOREINFO``,
   text starting ``OSRELEASE=``.

A candidate is *verified* when ``init_uts_ns.name.release``, read through the
candidate's own SYMBOL(init_uts_ns), OFFSET(uts_namespace.name) and kernel
layout (x86_64: NUMBER(phys_base); arm64: NUMBER(kimage_voffset), see the
arch rooms' ``kernel_layout``), equals its OSRELEASE -- and, because all
those numbers are the candidate's own, the symbol must lie in the kernel
image mapping and the vCPUs' page tables (which no user process can change)
must map it to that very physical address. A user process can plant notes, and strings, but
cannot place bytes at a kernel-image address of its choosing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from qemu_vmcore.errors import CoreFileError, MissingMemoryError
from qemu_vmcore.guest.paging import KernelLayout, PageTables
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.layouts import elf as E

#: QEMU's MAX_GUEST_NOTE_SIZE, and our cap on any VMCOREINFO we read.
MAX_NOTE_SIZE = 1 << 20
#: Linux's own note holds at most VMCOREINFO_BYTES (one page) of text; a RAM
#: scan looks no further than this, which keeps each candidate cheap.
MAX_SCAN_NOTE_SIZE = 64 << 10
#: VMCOREINFO has about 150 lines; a few thousand is already absurd.
MAX_LINES = 4096
#: A RAM scan examines at most this many candidates: planted fakes can be
#: many, and each costs a read and a parse.
MAX_CANDIDATES = 4096
NAME = b"VMCOREINFO"
#: The guest's note header: the guests we dump are little-endian.
NHDR = E.ELF64LE.nhdr
UTS_FIELD_LEN = 65  # __NEW_UTS_LEN + 1
UTS_RELEASE_INDEX = 2  # sysname, nodename, release, ...
FW_CFG_VMCOREINFO_FORMAT_ELF = 1
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"
#: namesz 11, any descsz, type 0, "VMCOREINFO" padded to 12, "OSRELEASE=".
_NOTE_START = re.compile(rb"\x0b\x00\x00\x00.{4}\x00{4}VMCOREINFO\x00\x00OSRELEASE=", re.DOTALL)
#: Every match of _NOTE_START is this long (it has no variable part).
_NOTE_START_LEN = 34
#: The fixed text in every match, which a chunk must hold to be matched at all.
_NOTE_NAME = b"VMCOREINFO\x00\x00OSRELEASE="
#: Guest RAM the scan reads per pread(): big enough that the search, not the
#: system call, costs the time, small enough to stay in the CPU cache between
#: the copy and the search (256 KiB-2 MiB measured alike, 8 MiB slower).
SCAN_CHUNK = 1 << 20


class VmcoreInfoError(ValueError):
    """A candidate note is malformed (internal; never escapes this module)."""


@dataclass(frozen=True)
class VmcoreInfo:
    """A parsed VMCOREINFO note.

    :param note: the whole ELF note (header, name, desc, padding) as it is
        written into a vmcore.
    :param gpa: where the note was found in guest-physical memory.
    :param source: ``vmcoreinfo device`` or ``guest RAM scan``.
    :param verified: init_uts_ns in guest RAM agrees with OSRELEASE.
    """

    note: bytes
    gpa: int
    source: str
    verified: bool = False
    fields: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def osrelease(self) -> str | None:
        return self.fields.get("OSRELEASE")

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``: a kernel virtual address (hex in the text)."""
        return _int(self.fields.get(f"SYMBOL({name})"), 16)

    def offset(self, name: str) -> int | None:
        """``OFFSET(struct.member)`` in bytes (decimal in the text)."""
        return _int(self.fields.get(f"OFFSET({name})"), 10)

    def size(self, name: str) -> int | None:
        """``SIZE(struct)`` in bytes (decimal in the text)."""
        return _int(self.fields.get(f"SIZE({name})"), 10)

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``: decimal as VMCOREINFO_NUMBER prints it (%ld), or
        hex with a ``0x`` prefix, as arm64 prints PHYS_OFFSET, kimage_voffset
        and TCR_EL1_T1SZ (``0x%llx``)."""
        text = self.fields.get(f"NUMBER({name})")
        if text is not None and text[:2].lower() == "0x":
            return _int(text[2:], 16)
        return _int(text, 10)

    @property
    def kerneloffset(self) -> int:
        """KASLR offset of the kernel image (``KERNELOFFSET=``, hex)."""
        return _int(self.fields.get("KERNELOFFSET"), 16) or 0


def _int(text: str | None, base: int) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def parse_note(buf: bytes) -> tuple[bytes, bytes]:
    """Split one ELF note at the start of ``buf`` into (whole note, desc).

    :raises VmcoreInfoError: not a VMCOREINFO note, or sizes out of bounds.
    """
    if len(buf) < NHDR.size:
        raise VmcoreInfoError("shorter than a note header")
    h = NHDR.unpack_from(buf)
    namesz, descsz, ntype = h.namesz, h.descsz, h.type
    if namesz != len(NAME) + 1 or ntype != 0:
        raise VmcoreInfoError(f"not a VMCOREINFO note (namesz {namesz}, type {ntype})")
    if descsz > MAX_NOTE_SIZE:
        raise VmcoreInfoError(f"desc of {descsz} bytes is over the {MAX_NOTE_SIZE} cap")
    name_at = NHDR.size
    desc_at = name_at + E.align_up(namesz, 4)
    total = desc_at + E.align_up(descsz, 4)
    if buf[name_at : name_at + namesz] != NAME + b"\0":
        raise VmcoreInfoError("note name is not VMCOREINFO")
    if len(buf) < total:
        raise VmcoreInfoError("note runs past the bytes available")
    return bytes(buf[:total]), bytes(buf[desc_at : desc_at + descsz])


def parse_text(desc: bytes) -> dict[str, str]:
    """``KEY=value`` lines of a VMCOREINFO desc.

    :raises VmcoreInfoError: not printable ASCII text, too many lines, or no
        OSRELEASE first.
    """
    text = desc.split(b"\0", 1)[0]
    if not text.startswith(b"OSRELEASE="):
        raise VmcoreInfoError("text does not start with OSRELEASE=")
    if text.translate(None, _TEXT_BYTES):
        raise VmcoreInfoError("text has non-printable bytes")
    lines = text.split(b"\n")
    if len(lines) > MAX_LINES:
        raise VmcoreInfoError(f"more than {MAX_LINES} lines")
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.decode("ascii").partition("=")
        if sep:
            fields.setdefault(key, value)
    if not fields.get("OSRELEASE"):
        raise VmcoreInfoError("empty OSRELEASE")
    return fields


#: The vCPUs' page tables to check symbols against (built by the engine
#: from the guest's architecture, e.g. arch.x86.paging.kernel_page_tables).
Roots = Sequence[PageTables]
#: The kernel layout a candidate describes (``GuestArch.kernel_layout``).
LayoutOf = Callable[["VmcoreInfo"], KernelLayout | None]


def candidate_at(
    mem: GuestPhysicalMemory,
    gpa: int,
    source: str,
    limit: int,
    roots: Roots = (),
    *,
    layout_of: LayoutOf,
) -> VmcoreInfo:
    """Read and parse the note at ``gpa`` (at most ``limit`` bytes), then verify it.

    :raises VmcoreInfoError: the bytes there are not a well-formed VMCOREINFO.
    """
    try:
        descsz = NHDR.unpack(mem.read(gpa, NHDR.size)).descsz
        total = NHDR.size + E.align_up(len(NAME) + 1, 4) + E.align_up(descsz, 4)
        if descsz > MAX_NOTE_SIZE or total > limit:
            raise VmcoreInfoError(f"note of {total} bytes is over its {limit} byte bound")
        note, desc = parse_note(mem.read(gpa, total))
    except MissingMemoryError as e:
        raise VmcoreInfoError(str(e)) from None
    fields = parse_text(desc)
    info = VmcoreInfo(note=note, gpa=gpa, source=source, fields=fields)
    verified = verify(mem, info, roots, layout=layout_of(info))
    return VmcoreInfo(note, gpa, source, verified=verified, fields=fields)


def verify(
    mem: GuestPhysicalMemory, info: VmcoreInfo, roots: Roots = (), *, layout: KernelLayout | None
) -> bool:
    """Whether the kernel's ``init_uts_ns.name.release`` equals the note's OSRELEASE.

    :param layout: the kernel layout the note itself describes; None (the
        note lacks what the arch needs) is never verified.
    :param roots: the vCPUs' page tables. When given, the
        symbol must translate through one of them to the physical address
        the note's own layout gives; without them (no vCPU with paging on)
        the check is weaker, resting on the release string alone.
    """
    uts, name_off = info.symbol("init_uts_ns"), info.offset("uts_namespace.name")
    if layout is None or uts is None or name_off is None or not 0 <= name_off < 4096:
        return False
    pa = layout.image_pa(uts)
    if pa is None or pa < 0:
        return False
    if roots and not any(t.translate(mem, uts) == pa for t in roots):
        return False
    pa += name_off + UTS_RELEASE_INDEX * UTS_FIELD_LEN
    try:
        release = mem.read(pa, UTS_FIELD_LEN).split(b"\0", 1)[0]
    except MissingMemoryError:
        return False
    return release.decode("ascii", "replace") == info.osrelease


def scan_candidates(mem: GuestPhysicalMemory, host_fd: int) -> Iterator[int]:
    """Guest-physical addresses of every ``VMCOREINFO`` note header in guest RAM.

    Looks only at the data the core (or a backing file) holds: holes are
    zeros. Read with pread() into one reused buffer, SCAN_CHUNK at a time
    with an overlap of a match's length, not through mmap(): a file that
    shrinks or fails under a mapping kills the process with SIGBUS, where a
    read returns short or fails, which we report.

    :raises CoreFileError: a file ends early or fails to read mid-scan.
    """
    overlap = _NOTE_START_LEN - 1
    buf = bytearray(SCAN_CHUNK + overlap)
    view = memoryview(buf)
    for gpa, fd, file_offset, size in mem.file_spans():
        pos, end = file_offset, file_offset + size
        while pos < end:
            want = min(SCAN_CHUNK + overlap, end - pos)
            try:
                got = os.preadv(fd, [view[:want]], pos)
            except OSError as e:
                raise CoreFileError(
                    f"{_fd_name(fd)}: cannot read offset {pos:#x} while scanning guest RAM for "
                    f"VMCOREINFO: {e.strerror}"
                ) from None
            if got < want:
                raise CoreFileError(
                    f"{_fd_name(fd)}: the file ended at offset {pos + got:#x}, inside guest RAM "
                    "being scanned for VMCOREINFO; was it truncated while we read it?"
                )
            # Most chunks hold no note name at all, which a plain substring
            # search (C fastsearch) tells faster than the regex.
            if buf.find(_NOTE_NAME, 0, got) < 0:
                pos += SCAN_CHUNK
                continue
            # One compiled pattern matches the whole note start, so every hit
            # is a candidate (and counts against MAX_CANDIDATES): RAM filled
            # with near-misses costs the regex engine, not a Python loop.
            for hit in _NOTE_START.finditer(buf, 0, got):
                if hit.start() >= SCAN_CHUNK:
                    break  # in the overlap: the next chunk starts with it
                yield gpa + (pos - file_offset) + hit.start()
            pos += SCAN_CHUNK


def _fd_name(fd: int) -> str:
    """The path an open descriptor reads (for messages)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"file descriptor {fd}"


@dataclass
class Search:
    """The outcome of :func:`find`: the pick and why."""

    chosen: VmcoreInfo | None
    device_state: str  # what the vmcoreinfo device said
    candidates: int = 0
    rejected: list[str] = field(default_factory=list)
    capped: bool = False  # the scan stopped at MAX_CANDIDATES


def find(
    mem: GuestPhysicalMemory,
    host_fd: int,
    device: tuple[int, int, int] | None,
    device_state: str,
    roots: Roots = (),
    *,
    layout_of: LayoutOf,
) -> Search:
    """Find the guest's VMCOREINFO.

    :param device: ``(paddr, size, format)`` from QEMU's vmcoreinfo device,
        or None when it has none.
    :param layout_of: the arch's kernel layout of a candidate, for :func:`verify`.
    :param roots: the vCPUs' page tables, for :func:`verify`.
    """
    search = Search(None, device_state)
    if device is not None:
        paddr, size, fmt = device
        try:
            if fmt != FW_CFG_VMCOREINFO_FORMAT_ELF:
                raise VmcoreInfoError(f"guest format {fmt} is not ELF")
            info = candidate_at(mem, paddr, "vmcoreinfo device", min(size, MAX_NOTE_SIZE),
                                roots, layout_of=layout_of)  # fmt: skip
            if info.verified:
                search.chosen = info
                return search
            search.rejected.append(f"device note at {paddr:#x}: init_uts_ns disagrees")
        except VmcoreInfoError as e:
            search.rejected.append(f"device note at {paddr:#x}: {e}")
    unverified: VmcoreInfo | None = None
    for gpa in scan_candidates(mem, host_fd):
        search.candidates += 1
        if search.candidates > MAX_CANDIDATES:
            search.rejected.append(f"more than {MAX_CANDIDATES} candidates; stopped scanning")
            search.capped = True
            break
        try:
            info = candidate_at(mem, gpa, "guest RAM scan", MAX_SCAN_NOTE_SIZE, roots,
                                layout_of=layout_of)  # fmt: skip
        except VmcoreInfoError as e:
            search.rejected.append(f"{gpa:#x}: {e}")
            continue
        if info.verified:
            search.chosen = info
            return search
        unverified = unverified or info
        search.rejected.append(f"{gpa:#x}: init_uts_ns disagrees with OSRELEASE")
    # No candidate proves itself (e.g. a kernel without SYMBOL(init_uts_ns)):
    # an unverified note is still better than none, and is reported as such.
    search.chosen = unverified
    return search
