"""Synthetic ELF64 x86_64 process cores for unit tests.

Builds what the Linux kernel writes for a process core: an ELF header, a
PT_NOTE (CORE notes NT_PRPSINFO, NT_FILE, NT_AUXV) then PT_LOADs, with the
dumped bytes of each PT_LOAD at a page-aligned file offset. Pages of zeros are
not written but skipped by seeking, so they are real file system holes (as
the kernel leaves them). ``filesz < memsz`` models memory the kernel did not
dump. More than 65534 program headers use extended numbering (PN_XNUM).

Only ``struct`` and the layouts of :mod:`qemu_vmcore.layouts.elf` are used, so
the helper shares no parsing code with what it tests.

The hypothesis strategies at the end (mutated cores, NT_FILE entries) are
shared by the property tests and the fuzzer, ``bench/fuzz.py``.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange

PAGE = 4096
PF_R, PF_W, PF_X = E.PF_R, E.PF_W, E.PF_X
PT_PHDR = E.PT_PHDR
AT_PHNUM = E.AT_PHNUM
NT_GNU_PROPERTY_TYPE_0 = 5


@dataclass
class Load:
    """One PT_LOAD: ``data`` is dumped at ``vaddr``; ``memsz`` may exceed it.

    ``offset`` is filled in by :func:`write_core` unless given.
    """

    vaddr: int
    data: bytes = b""
    memsz: int | None = None
    flags: int = PF_R | PF_W
    offset: int | None = None
    filesz: int | None = None  # defaults to len(data); may be larger (then truncated)

    @property
    def file_size(self) -> int:
        return len(self.data) if self.filesz is None else self.filesz

    @property
    def mem_size(self) -> int:
        return self.file_size if self.memsz is None else self.memsz

    @property
    def end(self) -> int:
        return self.vaddr + self.mem_size


@dataclass(frozen=True)
class FileEntry:
    """One NT_FILE entry (``pgoff`` is in pages, as the kernel stores it)."""

    start: int
    end: int
    pgoff: int
    path: bytes | str


@dataclass
class Core:
    """What :func:`write_core` wrote, with the offsets it chose."""

    path: Path
    loads: list[Load]
    notes_offset: int
    notes: bytes
    phnum: int
    size: int
    extra_phdrs: list[E.Phdr] = field(default_factory=list)


# -- notes ----------------------------------------------------------------------


def prpsinfo(
    *, pid: int = 1234, uid: int = 1000, gid: int = 1000, fname: bytes = b"prog", args: bytes = b""
) -> bytes:
    """The desc of an NT_PRPSINFO note (struct elf_prpsinfo, x86_64)."""
    return E.ELF64LE.prpsinfo.pack(
        state=b"R", sname=b"R", flag=0x400600, uid=uid, gid=gid, pid=pid, ppid=1, pgrp=pid,
        sid=pid, fname=fname, psargs=args,
    )  # fmt: skip


def nt_file(entries: Sequence[FileEntry], page_size: int = PAGE) -> bytes:
    """The desc of an NT_FILE note: count, page size, the table, the names."""
    out = bytearray(E.ELF64LE.nt_file_header.pack(count=len(entries), page_size=page_size))
    for e in entries:
        out += E.ELF64LE.nt_file_entry.pack(start=e.start, end=e.end, file_ofs=e.pgoff)
    for e in entries:
        path = e.path.encode("utf-8", "surrogateescape") if isinstance(e.path, str) else e.path
        out += path + b"\0"
    return bytes(out)


def auxv(pairs: Mapping[int, int] | Iterable[tuple[int, int]]) -> bytes:
    """The desc of an NT_AUXV note, AT_NULL-terminated."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    entries = [E.ELF64LE.auxv.pack(type=k, val=v) for k, v in items]
    return b"".join(entries) + E.ELF64LE.auxv.pack(type=E.AT_NULL)


def core_notes(
    *,
    psinfo: bytes | None = None,
    files: Sequence[FileEntry] | None = None,
    aux: Mapping[int, int] | None = None,
    extra: Iterable[bytes] = (),
) -> bytes:
    """A PT_NOTE segment's bytes, ordered like the kernel's (PRSTATUS, PRPSINFO, ..., FILE)."""
    out = bytearray(E.note_bytes(b"CORE", E.NT_PRSTATUS, bytes(336)))
    if psinfo is not None:
        out += E.note_bytes(b"CORE", E.NT_PRPSINFO, psinfo)
    if aux is not None:
        out += E.note_bytes(b"CORE", E.NT_AUXV, auxv(aux))
    if files is not None:
        out += E.note_bytes(b"CORE", E.NT_FILE, nt_file(files))
    for note in extra:
        out += note
    return bytes(out)


# -- the file -------------------------------------------------------------------


def ehdr64(
    *,
    phnum: int,
    shoff: int = 0,
    shnum: int = 0,
    elf_type: int = E.ET_CORE,
    machine: int = E.EM_X86_64,
    phoff: int = E.ELF64LE.ehdr.size,
    entry: int = 0,
) -> bytes:
    return E.ELF64LE.ehdr.pack(
        ident=E.ident(E.ELFCLASS64),
        type=elf_type,
        machine=machine,
        version=E.EV_CURRENT,
        entry=entry,
        phoff=phoff,
        shoff=shoff,
        ehsize=E.ELF64LE.ehdr.size,
        phentsize=E.ELF64LE.phdr.size,
        phnum=phnum,
        shentsize=E.ELF64LE.shdr.size if shnum else 0,
        shnum=shnum,
    )


def write_core(
    path: str | os.PathLike[str],
    loads: Sequence[Load],
    notes: bytes = b"",
    *,
    machine: int = E.EM_X86_64,
    elf_type: int = E.ET_CORE,
    align: int = PAGE,
    extra_phdrs: Sequence[E.Phdr] = (),
    sparse: bool = True,
) -> Core:
    """Write an ELF64 core to ``path`` and return its layout.

    ``loads`` are written in list order (their file offsets increase in that
    order, ``align``-aligned, and ``align`` is their p_align); zero pages are
    skipped when ``sparse``. With
    65535 or more program headers the header uses PN_XNUM and section 0.
    """
    path = Path(path)
    loads = list(loads)
    phdr_count = (1 if notes else 0) + len(extra_phdrs) + len(loads)
    xnum = phdr_count >= E.PN_XNUM
    phoff = E.ELF64LE.ehdr.size
    shoff = phoff + phdr_count * E.ELF64LE.phdr.size if xnum else 0
    notes_offset = phoff + phdr_count * E.ELF64LE.phdr.size + (E.ELF64LE.shdr.size if xnum else 0)
    offset = E.align_up(notes_offset + len(notes), align)
    for ld in loads:
        if ld.offset is None:
            ld.offset = offset
        offset = max(offset, E.align_up(ld.offset + ld.file_size, align))
    size = max([notes_offset + len(notes)] + [ld.offset + len(ld.data) for ld in loads])

    phdrs = []
    if notes:
        phdrs.append(E.Phdr(type=E.PT_NOTE, offset=notes_offset, filesz=len(notes)))
    phdrs.extend(extra_phdrs)
    for ld in loads:
        phdrs.append(
            E.Phdr(
                type=E.PT_LOAD,
                flags=ld.flags,
                offset=ld.offset,
                vaddr=ld.vaddr,
                filesz=ld.file_size,
                memsz=ld.mem_size,
                align=align,
            )  # fmt: skip
        )

    head = bytearray(
        ehdr64(
            phnum=E.PN_XNUM if xnum else phdr_count,
            shoff=shoff,
            shnum=1 if xnum else 0,
            elf_type=elf_type,
            machine=machine,
        )
    )
    head += b"".join(E.ELF64LE.phdr.pack(p) for p in phdrs)
    if xnum:
        head += E.ELF64LE.shdr.pack(info=phdr_count)
    head += notes

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, bytes(head), 0)
        for ld in loads:
            _write_data(fd, ld.offset, ld.data, sparse=sparse)
    finally:
        os.close(fd)
    return Core(path, loads, notes_offset, notes, phdr_count, size, list(extra_phdrs))


def _write_data(fd: int, offset: int, data: bytes, *, sparse: bool) -> None:
    """Write ``data`` at ``offset``; all-zero pages are left as holes when ``sparse``."""
    if not sparse or len(data) <= PAGE:
        if data and (not sparse or any(data)):
            os.pwrite(fd, data, offset)
        return
    zero = bytes(PAGE)
    # The first partial page up to a page boundary of the file, then whole pages.
    first = min(len(data), E.align_up(offset, PAGE) - offset) if offset % PAGE else 0
    if first:
        os.pwrite(fd, data[:first], offset)
    for k in range(first, len(data), PAGE):
        chunk = data[k : k + PAGE]
        if chunk != zero[: len(chunk)]:
            os.pwrite(fd, chunk, offset + k)


def pattern(size: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes (no page of them is all zeros)."""
    return random.Random(seed).randbytes(size)


def sparse_file(path, pages: Sequence[bool]) -> bytes:
    """A file of ``len(pages)`` pages; page k is data (seeded) when pages[k], else a
    hole. Returns the file's content."""
    content = bytearray(len(pages) * PAGE)
    with open(path, "wb") as f:
        f.truncate(len(content))
        for k, is_data in enumerate(pages):
            if is_data:
                chunk = pattern(PAGE, seed=k + 1)
                content[k * PAGE : (k + 1) * PAGE] = chunk
                f.seek(k * PAGE)
                f.write(chunk)
    return bytes(content)


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    """Disk space a file really uses."""
    return os.stat(path).st_blocks * 512


# -- an in-memory executable, for build-id lookup --------------------------------


def _phdr(p_type: int, at: int, size: int, *, align: int) -> E.Phdr:
    """A read-only segment of an executable file, loaded at its file offset ``at``."""
    return E.Phdr(type=p_type, flags=PF_R, offset=at, vaddr=at, paddr=at, filesz=size,
                  memsz=size, align=align)  # fmt: skip


def fake_executable_page(build_id: bytes, *, phdr_vaddr: int = 64, with_pt_phdr: bool = True):
    """The first page of a PIE executable as it sits in memory.

    Returns ``(page, phnum)``: an ELF header, program headers at
    ``phdr_vaddr`` (PT_PHDR, PT_LOAD, a PT_NOTE of .note.gnu.property and a
    PT_NOTE holding the GNU build-id) and the note bytes they point at.
    """
    prop_at, bid_at = 0x300, 0x340
    prop = E.note_bytes(b"GNU", NT_GNU_PROPERTY_TYPE_0, bytes(range(16)))
    bid = E.note_bytes(b"GNU", E.NT_GNU_BUILD_ID, build_id)
    abi = E.note_bytes(b"GNU", 1, bytes(16))  # NT_GNU_ABI_TAG, after the build-id
    phdrs = []
    if with_pt_phdr:
        phdrs.append(_phdr(PT_PHDR, phdr_vaddr, 0, align=8))  # sized below
    phdrs += [
        _phdr(E.PT_LOAD, 0, PAGE, align=PAGE),
        _phdr(E.PT_NOTE, prop_at, len(prop), align=8),
        _phdr(E.PT_NOTE, bid_at, len(bid + abi), align=4),
    ]
    if with_pt_phdr:
        size = len(phdrs) * E.ELF64LE.phdr.size
        phdrs[0] = phdrs[0]._replace(filesz=size, memsz=size)
    page = bytearray(PAGE)
    page[: E.ELF64LE.ehdr.size] = ehdr64(phnum=len(phdrs), elf_type=E.ET_DYN, phoff=phdr_vaddr)
    raw = b"".join(E.ELF64LE.phdr.pack(p) for p in phdrs)
    page[phdr_vaddr : phdr_vaddr + len(raw)] = raw
    page[prop_at : prop_at + len(prop)] = prop
    page[bid_at : bid_at + len(bid + abi)] = bid + abi
    return bytes(page), len(phdrs)


# -- a real core of another program --------------------------------------------------


def _unlimited_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def make_sleep_core(directory: Path) -> tuple[Path, int] | None:
    """Kill ``sleep 100`` (run in ``directory``) with SIGABRT and return ``(core, pid)``.

    Relies on core_pattern ``core`` (a file named ``core`` in the cwd). Returns
    None when no core appeared (other core_pattern, limits, a container...).
    """
    sleep = shutil.which("sleep")
    if sleep is None:
        return None
    proc = subprocess.Popen([sleep, "100"], cwd=directory, preexec_fn=_unlimited_core)
    time.sleep(0.2)  # let the dynamic loader finish, so the core is of a running sleep
    proc.send_signal(signal.SIGABRT)
    proc.wait(timeout=30)
    for name in ("core", f"core.{proc.pid}"):
        core = directory / name
        for _ in range(50):  # the kernel may still be writing it
            if core.exists():
                break
            time.sleep(0.05)
        if core.exists() and core.stat().st_size > 0:
            return core, proc.pid
    return None


# -- a QEMU-like process holding guest RAM -------------------------------------------

RAM_HVA = 0x7F12_0000_0000  # "pc.ram": 4 MiB, mostly never touched (holes)
RAM_PAGES = 1024
RAM_DATA_PAGES = (0, 1, 34, 500, 1023)
HI_HVA = 0x7F34_0000_0000  # 16 pages mapped, the first 8 dumped
HI_DUMPED = 8

# The guest ranges of ram_core()'s process, as QEMU's FlatView would give them:
# pc.ram below 4 GiB around the VGA hole, 16 pages above 4 GiB of which the
# core holds 8, and a range whose host memory is not in the core at all.
G4 = 1 << 32
HI_SIZE = 2 * HI_DUMPED * PAGE
R0 = GuestRange(0, 0xA0000, RAM_HVA, "pc.ram", "ram-below-4g", 1)
R1 = GuestRange(0x100000, 0x400000, RAM_HVA + 0x100000, "pc.ram", "ram-below-4g", 1)
R2 = GuestRange(G4, G4 + HI_SIZE, HI_HVA, "hi", "ram-above-4g", 2)
R3 = GuestRange(2 * G4, 2 * G4 + PAGE, 0x10000, "gone", "gone", 3)


def ram_core(
    path: str | os.PathLike[str], *, hi_file: str | None = None
) -> tuple[Core, bytes, bytes]:
    """A core with guest RAM in it; returns ``(core, ram_bytes, hi_dumped_bytes)``.

    With ``hi_file`` the HI mapping is file-backed (an NT_FILE entry names it),
    like a memory-backend-file or memfd RAMBlock.
    """
    ram = bytearray(RAM_PAGES * PAGE)
    for p in RAM_DATA_PAGES:
        ram[p * PAGE : (p + 1) * PAGE] = pattern(PAGE, seed=100 + p)
    hi = pattern(HI_DUMPED * PAGE, seed=7)
    # HI's second half is a VMA of its own with nothing dumped, as after
    # MADV_DONTDUMP on part of a mapping: the kernel writes a PT_LOAD whole,
    # its first page, or none of it (hostcore._check_loads).
    loads = [
        Load(RAM_HVA, bytes(ram)),
        Load(HI_HVA, hi),
        Load(HI_HVA + HI_DUMPED * PAGE, b"", memsz=HI_DUMPED * PAGE),
    ]
    files = [FileEntry(HI_HVA, HI_HVA + 2 * HI_DUMPED * PAGE, 0, hi_file)] if hi_file else None
    notes = core_notes(psinfo=prpsinfo(fname=b"qemu-system-x86"), files=files)
    return write_core(path, loads, notes), bytes(ram), hi


# -- mutation-based inputs (test_hostcore and bench/fuzz.py) ---------------------------

EXE = "/usr/bin/qemu-system-x86_64"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
EXE_BASE = 0x5555_5555_4000
LIBC_BASE = 0x7F00_0000_0000
BUILD_ID = bytes.fromhex("c0ffee00" * 5)

#: Values a corrupt 8-byte header field likes to hold: zero, tiny, the
#: signed/unsigned and off_t boundaries (pread() takes a signed offset).
EDGES = [0, 1, 56, 0xFFFF, 2**31, 2**32, 2**63 - 4096, 2**63 - 8, 2**63, 2**64 - 1]


@dataclass(frozen=True)
class SmallCore:
    """A valid small core's bytes, for mutation.

    :param head_end: where its headers and notes end (mutations favour them:
        pure random bytes rarely get past the ELF magic).
    :param fields64: offsets of its 8-byte header fields.
    :param fields32: offsets of its 4-byte fields (p_type, p_flags, note headers).
    :param fields16: offsets of its 2-byte ELF header fields (e_phentsize, e_phnum...).
    """

    raw: bytes
    head_end: int
    fields64: tuple[int, ...]
    fields32: tuple[int, ...]
    fields16: tuple[int, ...]


def small_core(path: str | os.PathLike[str]) -> SmallCore:
    """Write a small valid core (build-id page, NT_FILE, NT_PRPSINFO, NT_AUXV) and describe it."""
    page, phnum = fake_executable_page(BUILD_ID)
    notes = core_notes(
        psinfo=prpsinfo(pid=9, fname=b"qemu"),
        files=[FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE)],
        aux={E.AT_PHDR: EXE_BASE + 64, AT_PHNUM: phnum},
    )
    loads = [Load(EXE_BASE, page), Load(0x10000, b"abc" * 100)]
    core = write_core(path, loads, notes, align=256)
    phdr = [64 + k * E.ELF64LE.phdr.size for k in range(core.phnum)]
    # e_entry, e_phoff, e_shoff, then p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
    fields64 = [24, 32, 40] + [p + f for p in phdr for f in range(8, 56, 8)]
    # e_version, e_flags; p_type, p_flags; each note's namesz, descsz and type.
    fields32 = [20, 48] + [p + f for p in phdr for f in (0, 4)]
    fields32 += [core.notes_offset + n.offset + f for n in E.iter_notes(notes) for f in (0, 4, 8)]
    # e_type, e_machine, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
    fields16 = [16, 18, 52, 54, 56, 58, 60, 62]
    return SmallCore(
        core.path.read_bytes(),
        core.notes_offset + len(core.notes),
        tuple(fields64),
        tuple(fields32),
        tuple(fields16),
    )


@st.composite
def mutated_core(draw: st.DrawFn, base: SmallCore) -> bytes:
    """``base`` with flipped bytes, rewritten header fields and maybe a cut (never unchanged)."""
    buf = bytearray(base.raw)
    pos = st.one_of(st.integers(0, base.head_end - 1), st.integers(0, len(buf) - 1))
    for p, b in draw(st.lists(st.tuples(pos, st.integers(0, 255)), max_size=8)):
        buf[p] = b
    values = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
    for p, v in draw(st.lists(st.tuples(st.sampled_from(base.fields64), values), max_size=3)):
        struct.pack_into("<Q", buf, p, v)
    small = st.one_of(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF]), st.integers(0, 2**32 - 1))
    for p, v in draw(st.lists(st.tuples(st.sampled_from(base.fields32), small), max_size=3)):
        struct.pack_into("<I", buf, p, v)
    for p, v in draw(
        st.lists(st.tuples(st.sampled_from(base.fields16), st.integers(0, 0xFFFF)), max_size=2)
    ):
        struct.pack_into("<H", buf, p, v)
    cut = draw(st.one_of(st.none(), st.integers(0, len(buf))))
    if cut is not None:
        del buf[cut:]
    if bytes(buf) == base.raw:  # a no-op mutation tests nothing new: change one byte
        buf[draw(st.integers(0, base.head_end - 1))] ^= 0xFF
    return bytes(buf)


#: NT_FILE entries as ``(start, length, pgoff, path)``: paths without NULs.
nt_entries = st.lists(
    st.tuples(
        st.integers(0, 2**63),
        st.integers(0, 2**40),
        st.integers(0, 2**40),
        st.binary(max_size=40).filter(lambda b: b"\0" not in b),
    ),
    max_size=20,
)
