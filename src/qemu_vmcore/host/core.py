"""The QEMU process core: host virtual addresses (hva) -> bytes in the core file.

This is the bottom layer. It knows the ELF core format and nothing of QEMU.
A core's PT_LOAD segments map host virtual address ranges to file offsets:

* ``[vaddr, vaddr + filesz)`` is in the file at ``offset`` -- possibly as a file
  system hole, which reads as zeros (the kernel skips never-touched pages);
* ``[vaddr + filesz, vaddr + memsz)`` was mapped but not dumped (MADV_DONTDUMP,
  i.e. QEMU's ``dump-guest-core=off``, or file-backed memory left out by
  ``coredump_filter``);
* bytes past the end of the file are lost (a truncated core).
"""

from __future__ import annotations

import bisect
import enum
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from qemu_vmcore.errors import CoreFileError, MissingMemoryError, VmcoreError
from qemu_vmcore.layouts import elf as E

# Bounds on what we accept from the core's metadata: generous for any real
# process, small enough that a corrupt header cannot make us allocate much.
MAX_SEGMENTS = 1 << 20
MAX_NOTES_SIZE = 64 << 20
#: ELF_EXEC_PAGESIZE on x86_64: the kernel's core dumps align to it, and a
#: partly dumped PT_LOAD holds exactly one such page (see _check_loads).
PAGE = 4096
#: The layouts of a QEMU process core: the host is x86_64, ELF64 little-endian.
HOST = E.ELF64LE


class NotRegularFileError(VmcoreError):
    """A path we must read is a FIFO, socket, device or directory."""


class ExtentKind(enum.Enum):
    DATA = "data"  # in the core file (holes in it read as zeros)
    NOT_DUMPED = "not dumped"  # mapped, but the kernel wrote no bytes for it
    TRUNCATED = "truncated"  # the core file ends before these bytes
    UNMAPPED = "unmapped"  # no PT_LOAD covers this address
    # A live process's anonymous page it never touched (host/live.py): zeros, not read.
    UNTOUCHED = "never touched"


@dataclass(frozen=True)
class Extent:
    """A piece of host address space, all of one kind.

    :param hva: first host virtual address.
    :param size: length in bytes.
    :param file_offset: where the bytes start in the core file (DATA only).
    """

    hva: int
    size: int
    kind: ExtentKind
    file_offset: int | None = None

    @property
    def end(self) -> int:
        """First address after the extent (exclusive)."""
        return self.hva + self.size


@dataclass(frozen=True)
class CoreSegment:
    """One PT_LOAD: ``[hva, end)`` mapped; the first ``file_size`` bytes at ``file_offset``."""

    hva: int
    end: int
    file_offset: int
    file_size: int
    flags: int


@dataclass(frozen=True)
class FileMapping:
    """One NT_FILE entry: ``[hva, end)`` maps ``path`` from byte ``file_offset``."""

    hva: int
    end: int
    file_offset: int
    path: str


@dataclass(frozen=True)
class ProcessInfo:
    """NT_PRPSINFO: who the process was."""

    pid: int
    uid: int
    fname: str  # comm, at most 15 characters
    args: str  # the start of the command line, at most 80 bytes


@dataclass
class HostCore:
    """An open ELF64 x86_64 core file. Use :func:`open_core`; close when done."""

    path: Path
    fd: int
    file_size: int
    segments: list[CoreSegment]
    mappings: list[FileMapping] = field(default_factory=list)
    process: ProcessInfo | None = None
    auxv: dict[int, int] = field(default_factory=dict)
    _starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.segments.sort(key=lambda s: s.hva)
        self._starts = [s.hva for s in self.segments]

    # -- address translation -------------------------------------------------

    def extents(self, hva: int, size: int) -> list[Extent]:
        """Split ``[hva, hva + size)`` into extents by kind, in address order.

        The extents cover the whole range exactly; neighbours of the same kind
        and (for DATA) contiguous file offsets are merged.
        """
        out: list[Extent] = []
        pos, end = hva, hva + size
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i >= 0 and pos < self.segments[i].end:
                seg = self.segments[i]
                stop = min(end, seg.end)
                for ext in _segment_extents(seg, self.file_size, pos, stop):
                    _append(out, ext)
            else:
                # bisect_right guarantees the next segment starts above pos.
                stop = min(end, self._starts[i + 1]) if i + 1 < len(self._starts) else end
                _append(out, Extent(pos, stop - pos, ExtentKind.UNMAPPED))
            pos = stop
        return out

    def read(self, hva: int, size: int) -> bytes:
        """Read ``size`` bytes at ``hva``; file holes read as zeros.

        :raises MissingMemoryError: when any byte is not in the file.
        """
        parts = []
        for ext in self.extents(hva, size):
            if ext.kind is not ExtentKind.DATA:
                raise MissingMemoryError(
                    f"host address {ext.hva:#x} (+{ext.size:#x}) is {ext.kind.value} in the core",
                    hva=ext.hva,
                    size=ext.size,
                    kind=ext.kind,
                )
            data = os.pread(self.fd, ext.size, ext.file_offset)
            if len(data) != ext.size:  # the file shrank under us
                raise MissingMemoryError(f"short read at core offset {ext.file_offset:#x}")
            parts.append(data)
        return b"".join(parts)

    @property
    def truncated(self) -> bool:
        """Whether some segment's bytes run past the end of the file."""
        return any(
            s.file_size and s.file_offset + s.file_size > self.file_size for s in self.segments
        )

    @property
    def expected_size(self) -> int:
        """The file size the program headers promise (bytes)."""
        return max((s.file_offset + s.file_size for s in self.segments), default=0)

    def mapping_at(self, hva: int) -> FileMapping | None:
        """The NT_FILE mapping containing ``hva``, if any."""
        for m in self.mappings:
            if m.hva <= hva < m.end:
                return m
        return None

    def unsaved_file_ranges(self, path: str) -> list[FileMapping]:
        """Read-only parts of ``path``'s mappings whose bytes the core lacks.

        A default ``coredump_filter`` leaves out file-backed memory that was
        never written, such as an executable's .rodata; the file itself holds
        those bytes (when it is the very file that was mapped).
        """
        out = []
        for m in self.mappings:
            if m.path != path:
                continue
            for ext in self.extents(m.hva, m.end - m.hva):
                if ext.kind is not ExtentKind.NOT_DUMPED:
                    continue  # an UNMAPPED one has no segment (a core may have none at all)
                seg = self.segments[bisect.bisect_right(self._starts, ext.hva) - 1]
                if not seg.flags & E.PF_W:
                    offset = m.file_offset + (ext.hva - m.hva)
                    out.append(FileMapping(ext.hva, ext.end, offset, path))
        return out

    # -- the executable -------------------------------------------------------

    @property
    def executable(self) -> str | None:
        """Path of the main executable, as the kernel recorded it in NT_FILE."""
        phdr = self.auxv.get(E.AT_PHDR)
        m = self.mapping_at(phdr) if phdr is not None else None
        if m is None and self.mappings:
            m = self.mappings[0]
        return m.path if m else None

    @property
    def executable_base(self) -> int | None:
        """Lowest address the executable is mapped at (its file offset 0)."""
        exe = self.executable
        starts = [m.hva for m in self.mappings if m.path == exe and m.file_offset == 0]
        return min(starts) if starts else None

    def executable_load_bias(self) -> int | None:
        """What the executable's link-time addresses were moved by (AT_PHDR
        less PT_PHDR's address); None when the core does not tell."""
        phdr_at, phnum = self.auxv.get(E.AT_PHDR), self.auxv.get(E.AT_PHNUM)
        if phdr_at is None or not phnum or phnum > 256:
            return None
        try:
            raw = self.read(phdr_at, phnum * HOST.phdr.size)
        except MissingMemoryError:
            return None
        pt_phdr = next((p for p in HOST.phdr.iter_unpack(raw) if p.type == E.PT_PHDR), None)
        return None if pt_phdr is None else (phdr_at - pt_phdr.vaddr) % (1 << 64)

    def executable_build_id(self) -> bytes | None:
        """The executable's GNU build-id, read from its headers in the core.

        Uses AT_PHDR/AT_PHNUM from the auxiliary vector: the program headers
        are in the first page of the executable, which the kernel dumps by
        default. Returns None when those bytes are not in the core.
        """
        phdr_at, phnum = self.auxv.get(E.AT_PHDR), self.auxv.get(E.AT_PHNUM)
        if phdr_at is None or not phnum or phnum > 256:
            return None
        try:
            raw = self.read(phdr_at, phnum * HOST.phdr.size)
            phdrs = list(HOST.phdr.iter_unpack(raw))
            pt_phdr = next((p for p in phdrs if p.type == E.PT_PHDR), None)
            if pt_phdr is None:
                return None
            bias = phdr_at - pt_phdr.vaddr
            for p in phdrs:
                if p.type == E.PT_NOTE and p.filesz <= 1 << 16:
                    for note in E.iter_notes(self.read(bias + p.vaddr, p.filesz)):
                        if note.name == b"GNU" and note.type == E.NT_GNU_BUILD_ID:
                            return note.desc
        except MissingMemoryError:
            return None
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> HostCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _append(out: list[Extent], ext: Extent) -> None:
    if ext.size <= 0:
        return
    if out:
        last = out[-1]
        same_kind = last.kind is ext.kind and last.end == ext.hva
        contiguous = ext.kind is not ExtentKind.DATA or (
            last.file_offset is not None and ext.file_offset == last.file_offset + last.size
        )
        if same_kind and contiguous:
            out[-1] = Extent(last.hva, last.size + ext.size, last.kind, last.file_offset)
            return
    out.append(ext)


def _segment_extents(seg: CoreSegment, file_size: int, start: int, end: int) -> list[Extent]:
    """Extents of ``[start, end)``, a range inside ``seg``."""
    dumped_end = seg.hva + seg.file_size
    in_file_end = seg.hva + max(0, min(seg.file_size, file_size - seg.file_offset))
    out = []
    for lo, hi, kind in (
        (seg.hva, in_file_end, ExtentKind.DATA),
        (in_file_end, dumped_end, ExtentKind.TRUNCATED),
        (dumped_end, seg.end, ExtentKind.NOT_DUMPED),
    ):
        a, b = max(lo, start), min(hi, end)
        if a < b:
            off = seg.file_offset + (a - seg.hva) if kind is ExtentKind.DATA else None
            out.append(Extent(a, b - a, kind, off))
    return out


# -- parsing ------------------------------------------------------------------


def open_core(path: str | os.PathLike[str]) -> HostCore:
    """Open and parse an ELF64 x86_64 process core.

    :raises CoreFileError: not found, not a regular file, not an ELF core of
        an x86_64 process, or with corrupt headers.
    """
    path = Path(path)
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise CoreFileError(f"{path}: no such file", path=path) from None
    except NotRegularFileError as e:
        if e.context.get("kind") == "a directory":
            raise CoreFileError(f"{path}: is a directory, not a core file", path=path) from None
        raise CoreFileError(e.message, path=path) from None
    except PermissionError:
        raise CoreFileError(f"{path}: permission denied", path=path) from None
    try:
        return _parse(path, fd)
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def _not_regular(path: str | os.PathLike[str], mode: int) -> NotRegularFileError:
    kind = _kind(mode)
    return NotRegularFileError(f"{os.fspath(path)}: is {kind}, not a regular file", kind=kind)


def open_regular(path: str | os.PathLike[str]) -> int:
    """Open ``path`` read-only, refusing anything but a regular file, without blocking.

    Opening a FIFO for reading waits for a writer, and opening a device may
    do anything, so the path is stat()ed first and only a regular file is
    opened -- with O_NONBLOCK (which regular files ignore) and fstat()ed
    again, in case another file took its place in between.

    :returns: a file descriptor (O_CLOEXEC); the caller closes it.
    :raises NotRegularFileError: ``path`` is a FIFO, socket, device or directory.
    :raises OSError: it cannot be stat()ed or opened (FileNotFoundError, ...).
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(path, st.st_mode)
    return fd


def check_regular(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotRegularFileError` when ``path`` exists but is not a regular file.

    For paths that another program (drgn, gdb) will open: a missing or
    unreadable file is theirs to report; one that would block them is ours.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)


def _parse(path: Path, fd: int) -> HostCore:
    st = os.fstat(fd)
    head = os.pread(fd, HOST.ehdr.size, 0)
    if len(head) < 16 or head[:4] != E.ELFMAG:
        raise CoreFileError(f"{path}: not an ELF file (no ELF magic)", path=path)
    if (
        head[E.EI_CLASS] != E.ELFCLASS64
        or head[E.EI_DATA] != E.ELFDATA2LSB
        or len(head) < HOST.ehdr.size
    ):
        raise CoreFileError(f"{path}: not a 64-bit little-endian ELF file", path=path)
    ehdr = HOST.ehdr.unpack(head)
    if ehdr.type != E.ET_CORE:
        kind = {E.ET_EXEC: "an executable", E.ET_DYN: "a shared object or PIE executable"}
        what = kind.get(ehdr.type, f"ELF type {ehdr.type}")
        raise CoreFileError(f"{path}: {what}, not a core file", path=path)
    if ehdr.machine != E.EM_X86_64:
        raise CoreFileError(
            f"{path}: core of an ELF machine {ehdr.machine} process; only x86_64 is supported",
            path=path,
        )
    phdrs = _read_phdrs(path, fd, ehdr, st.st_size)
    _check_loads(path, ehdr, phdrs)
    segments = [
        CoreSegment(p.vaddr, p.vaddr + p.memsz, p.offset, p.filesz, p.flags)
        for p in phdrs
        if p.type == E.PT_LOAD and p.memsz > 0
    ]
    core = HostCore(path=path, fd=fd, file_size=st.st_size, segments=segments)
    for p in phdrs:
        if p.type == E.PT_NOTE:
            if p.offset + p.filesz > st.st_size:
                raise CoreFileError(
                    f"{path}: truncated core: the file ends inside its notes "
                    f"({st.st_size:,} bytes)",
                    path=path,
                )
            buf = _read_at(fd, p.offset, min(p.filesz, MAX_NOTES_SIZE), st.st_size)
            bad = E.malformed_note(buf) if p.filesz <= MAX_NOTES_SIZE else None
            if bad is not None:
                # Not just ignored: notes after it would be lost, and with
                # them what the process was (and drgn reads them too).
                raise CoreFileError(
                    f"{path}: corrupt notes: at file offset {p.offset + bad[0]:#x}, {bad[1]}",
                    path=path,
                )
            _parse_notes(core, buf)
    _check_auxv(core)
    return core


def _check_auxv(core: HostCore) -> None:
    """Refuse an auxiliary vector that points outside the executable's mappings.

    AT_PHDR and AT_ENTRY are addresses in the main executable: the kernel
    put them there when it loaded it. drgn finds the executable and its load
    bias from them, so wrong values would surface as a misleading "no debug
    info found"; say what is wrong instead. Checked only when NT_FILE lists
    the mappings to check against.
    """
    if not core.mappings:
        return
    paths = {}
    for key, name in ((E.AT_PHDR, "AT_PHDR"), (E.AT_ENTRY, "AT_ENTRY")):
        value = core.auxv.get(key)
        if value is None:
            continue
        m = core.mapping_at(value)
        if m is None:
            raise CoreFileError(
                f"{core.path}: corrupt NT_AUXV note: {name} {value:#x} lies in no file "
                f"mapping of the core (NT_FILE)",
                path=core.path,
            )
        paths[name] = m.path
    if len(set(paths.values())) > 1:
        raise CoreFileError(
            f"{core.path}: corrupt NT_AUXV note: AT_PHDR is in {paths['AT_PHDR']} but "
            f"AT_ENTRY in {paths['AT_ENTRY']}",
            path=core.path,
        )


def _read_at(fd: int, offset: int, size: int, file_size: int) -> bytes:
    """Up to ``size`` bytes at ``offset``; short or empty past the end of the file.

    Offsets come from the file's headers and may be anything up to 2**64:
    clamp them, as pread() rejects offsets beyond off_t.
    """
    if offset >= file_size:
        return b""
    return os.pread(fd, min(size, file_size - offset), offset)


def _read_phdrs(path: Path, fd: int, ehdr: E.Ehdr, file_size: int) -> list[E.Phdr]:
    phnum = ehdr.phnum
    if phnum == E.PN_XNUM:
        # More than 65534 segments: the real count is section 0's sh_info.
        sh0 = _read_at(fd, ehdr.shoff, HOST.shdr.size, file_size)
        if ehdr.shoff == 0 or len(sh0) != HOST.shdr.size:
            raise CoreFileError(f"{path}: e_phnum is PN_XNUM but section 0 is missing")
        phnum = HOST.shdr.unpack(sh0).info
    if ehdr.phentsize != HOST.phdr.size or phnum > MAX_SEGMENTS:
        raise CoreFileError(f"{path}: corrupt ELF header (phentsize/phnum)", path=path)
    raw = _read_at(fd, ehdr.phoff, phnum * HOST.phdr.size, file_size)
    if len(raw) != phnum * HOST.phdr.size:
        raise CoreFileError(
            f"{path}: truncated core: the file ends inside its program headers ({file_size} bytes)",
            path=path,
        )
    return list(HOST.phdr.iter_unpack(raw))


def _check_loads(path: Path, ehdr: E.Ehdr, phdrs: list[E.Phdr]) -> None:
    """Refuse PT_LOADs whose file ranges no core writer produces.

    The kernel (fs/binfmt_elf.c, elf_core_dump) writes each PT_LOAD at a
    page-aligned offset with p_filesz 0 (nothing dumped: VM_DONTDUMP, or
    memory coredump_filter leaves out), p_memsz (all of it), or one page
    (the ELF header of a file mapping, vma_dump_size()), one after the other
    with no gaps. gdb's gcore writes them whole or empty, packed one after
    the other with p_align 1. Either way every byte between the first and the
    last segment's data belongs to exactly one segment. So a p_filesz that
    was zeroed or shrunk leaves bytes that belong to no segment (and would
    make the guest RAM they hold read as "not dumped" zeros); one that grew,
    or a p_offset that moved, makes segments share bytes. A core cut short
    keeps its headers intact and is reported as truncated, elsewhere.

    Only the headers are judged: offsets past the end of the file are fine.
    """
    loads = [(k, p) for k, p in enumerate(phdrs) if p.type == E.PT_LOAD]
    for k, p in loads:
        what = f"PT_LOAD {k} (host {p.vaddr:#x}-{p.vaddr + p.memsz:#x})"
        if p.filesz > p.memsz or p.filesz not in (0, p.memsz, PAGE):
            raise CoreFileError(
                f"{path}: corrupt program header: {what} has {p.filesz:#x} bytes in the file "
                f"of {p.memsz:#x} mapped; a core holds a segment whole, its first page, or none "
                "of it",
                path=path,
            )
        if p.filesz == 0:
            continue  # no file bytes: the offset means nothing
        # gcore writes p_align 1; the kernel writes the page size, and then
        # the offset must be page-aligned (p_offset = p_vaddr mod p_align).
        if p.align > 1 and (p.align & (p.align - 1) or p.offset % p.align != p.vaddr % p.align):
            raise CoreFileError(
                f"{path}: corrupt program header: {what} is at file offset {p.offset:#x}, "
                f"not aligned to its p_align {p.align:#x}",
                path=path,
            )
    # Every byte range the headers give a meaning: (start, end, description, kind).
    ranges = [(0, HOST.ehdr.size, "the ELF header", "header")]
    ranges.append(
        (ehdr.phoff, ehdr.phoff + len(phdrs) * HOST.phdr.size, "the program headers", "header")
    )
    if ehdr.phnum == E.PN_XNUM:
        ranges.append((ehdr.shoff, ehdr.shoff + HOST.shdr.size, "section header 0", "header"))
    for k, p in enumerate(phdrs):
        if p.type == E.PT_NOTE and p.filesz:
            ranges.append(
                (p.offset, p.offset + p.filesz, f"the notes (program header {k})", "notes")
            )
    for k, p in loads:
        if p.filesz:
            what = f"PT_LOAD {k} (host {p.vaddr:#x}-{p.vaddr + p.memsz:#x})"
            ranges.append((p.offset, p.offset + p.filesz, what, "load"))
    ranges.sort(key=lambda r: (r[0], r[1]))
    # Overlaps: sweep in offset order, keeping the range that reaches furthest.
    reach = ranges[0]
    for r in ranges[1:]:
        if r[0] < reach[1] and "load" in (r[3], reach[3]):
            raise CoreFileError(
                f"{path}: corrupt program headers: {r[2]} and {reach[2]} share file bytes "
                f"(offsets {r[0]:#x} and {reach[0]:#x}-{reach[1]:#x})",
                path=path,
            )
        if r[1] > reach[1]:
            reach = r
    _check_gaps(path, phdrs, [r for r in ranges if r[3] != "header"])


def _check_gaps(path: Path, phdrs: list[E.Phdr], ranges: list[tuple[int, int, str, str]]) -> None:
    """Refuse a page or more of file bytes, between segments' data, that belongs to none.

    Less than a page is padding (a writer may page-align each segment).
    """
    end = None
    for start, stop, _, _ in ranges:
        if end is not None and start - end >= PAGE:
            raise CoreFileError(
                f"{path}: corrupt program headers: {_gap_owner(phdrs, end, start)}"
                f"{start - end:#x} bytes of the file, at offsets {end:#x}-{start:#x}, belong to "
                "no segment (a p_filesz zeroed or cut?)",
                path=path,
            )
        end = stop if end is None else max(end, stop)


def _gap_owner(phdrs: list[E.Phdr], start: int, end: int) -> str:
    """The PT_LOAD whose shrunk p_filesz most likely left ``[start, end)`` unclaimed, as a phrase.

    The kernel lays segments end to end, so it is one that starts in the gap
    (its p_filesz zeroed; of several, the first whose memory could fill the
    rest of the gap), else the one whose data ends where the gap begins.
    """
    loads = [(k, p) for k, p in enumerate(phdrs) if p.type == E.PT_LOAD]
    inside = [(k, p) for k, p in loads if start <= p.offset < end]
    if inside:
        k, p = min(inside, key=lambda kp: (kp[1].memsz < end - kp[1].offset, kp[1].offset, kp[0]))
    else:
        before = [(k, p) for k, p in loads if p.filesz and p.offset + p.filesz == start]
        if not before:
            return ""
        k, p = before[0]
    return (
        f"PT_LOAD {k} (host {p.vaddr:#x}-{p.vaddr + p.memsz:#x}) has {p.filesz:#x} bytes in "
        f"the file of {p.memsz:#x} mapped, yet "
    )


def _parse_notes(core: HostCore, buf: bytes) -> None:
    for note in E.iter_notes(buf):
        if note.name != b"CORE":
            continue
        if note.type == E.NT_FILE:
            _check_nt_file(core.path, note.desc)
            core.mappings.extend(parse_nt_file(note.desc))
        elif note.type == E.NT_PRPSINFO and len(note.desc) >= HOST.prpsinfo.size:
            ps = HOST.prpsinfo.unpack_from(note.desc)
            core.process = ProcessInfo(
                pid=ps.pid,
                uid=ps.uid,
                fname=_cstr(ps.fname),
                args=_cstr(ps.psargs).strip(),
            )
        elif note.type == E.NT_AUXV:
            whole = len(note.desc) // HOST.auxv.size * HOST.auxv.size  # a ragged end is ignored
            for entry in HOST.auxv.iter_unpack(note.desc[:whole]):
                if entry.type == E.AT_NULL:
                    break
                core.auxv.setdefault(entry.type, entry.val)


#: NT_FILE's unit of file offsets: the kernel's page size, or 1 from gdb's
#: gcore (which records byte offsets).
NT_FILE_PAGE_SIZES = (1, PAGE)


def _check_nt_file(path: Path, desc: bytes) -> None:
    """Refuse an NT_FILE note that the kernel or gdb cannot have written.

    Its file offsets find guest RAM in backing files and QEMU's read-only
    data in its executable: with a wrong unit or a count that does not fit,
    they would find the wrong bytes. drgn refuses such a note too, with a
    less telling message.
    """
    if len(desc) < HOST.nt_file_header.size:
        raise CoreFileError(f"{path}: corrupt NT_FILE note: {len(desc)} bytes", path=path)
    head = HOST.nt_file_header.unpack_from(desc)
    count, page_size = head.count, head.page_size
    if page_size not in NT_FILE_PAGE_SIZES:
        raise CoreFileError(
            f"{path}: corrupt NT_FILE note: page size {page_size:#x} (the kernel writes "
            f"{PAGE}, gdb 1)",
            path=path,
        )
    room = (len(desc) - HOST.nt_file_header.size) // HOST.nt_file_entry.size
    names = desc[HOST.nt_file_header.size + min(count, room) * HOST.nt_file_entry.size :].split(
        b"\0"
    )
    names.pop()  # after the last NUL: not a name
    if count > room or len(names) < count:
        raise CoreFileError(
            f"{path}: corrupt NT_FILE note: it counts {count:,} mappings but holds "
            f"{min(room, len(names)):,} (of {len(desc):,} bytes)",
            path=path,
        )
    empty = next((k for k, name in enumerate(names[:count]) if not name), None)
    if empty is not None:  # every mapped file has a path; the kernel writes d_path()'s
        raise CoreFileError(f"{path}: corrupt NT_FILE note: mapping {empty} has no path", path=path)


def parse_nt_file(desc: bytes) -> list[FileMapping]:
    """Parse an NT_FILE note's desc: file-backed mappings and their paths.

    A malformed desc yields the entries that are whole; counts are bounded by
    the desc's own size, so a corrupt count cannot make us allocate.
    """
    if len(desc) < HOST.nt_file_header.size:
        return []
    head = HOST.nt_file_header.unpack_from(desc)
    count, page_size = head.count, head.page_size
    table_at = HOST.nt_file_header.size
    count = min(count, (len(desc) - table_at) // HOST.nt_file_entry.size)
    names_at = table_at + count * HOST.nt_file_entry.size
    names = desc[names_at:].split(b"\0")
    out = []
    for k in range(min(count, len(names))):
        entry = HOST.nt_file_entry.unpack_from(desc, table_at + k * HOST.nt_file_entry.size)
        offset = entry.file_ofs * page_size
        if entry.end < entry.start or offset >= 1 << 63:  # beyond any file (off_t)
            continue
        path = names[k].decode("utf-8", "surrogateescape")
        out.append(FileMapping(entry.start, entry.end, offset, path))
    return out


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
