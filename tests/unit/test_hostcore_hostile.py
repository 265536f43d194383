"""Hostile files, on synthetic cores: PT_LOAD layouts no core writer makes,
malformed notes, files that block or vanish, and the tools' own odd output.

Each refusal is a one-line library error (a CLI error line, exit 2); nothing
here may hang, raise a traceback, or die of SIGBUS. The same classes on real
rig cores are in tests/robustness/test_hostile_files.py.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import drgn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import synth
from support.guestsynth import guest_ram
from support.runs import assert_one_line_error, run_cli
from support.synth import EXE, EXE_BASE, PAGE, FileEntry, Load

from qemu_vmcore.debugger import drgn_backend
from qemu_vmcore.errors import CoreFileError, DebugInfoError
from qemu_vmcore.guest import vmcoreinfo as V
from qemu_vmcore.host import compressed
from qemu_vmcore.host import executable as elffile
from qemu_vmcore.host.core import (
    NotRegularFileError,
    check_regular,
    open_core,
    open_regular,
    parse_nt_file,
)
from qemu_vmcore.host.coredump import CoredumpError, Entry
from qemu_vmcore.layouts import elf as E

#: A subprocess that takes longer than this has blocked (each needs < 2 s).
TIMEOUT = 30
RW = E.PF_R | E.PF_W


def refused(path: Path, *needles: str) -> CoreFileError:
    """open_core refuses ``path`` with one line naming ``needles``."""
    with pytest.raises(CoreFileError) as info:
        open_core(path)
    message = info.value.message
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return info.value


def phdr_at(index: int) -> int:
    """File offset of program header ``index`` (with notes, 0 is the PT_NOTE)."""
    return E.ELF64LE.ehdr.size + index * E.ELF64LE.phdr.size


def patch(path: Path, offset: int, fmt: str, *values: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


# Offsets in a PHDR64: type 0, flags 4, offset 8, vaddr 16, paddr 24, filesz 32, memsz 40, align 48.
P_OFFSET, P_FILESZ, P_MEMSZ, P_ALIGN = 8, 32, 40, 48


@pytest.fixture
def kernel_like(tmp_path) -> synth.Core:
    """Three PT_LOADs end to end after the notes, as the kernel lays them out:
    program header 1 is 4 pages (all dumped), 2 is 4 pages (none), 3 is 2 pages."""
    loads = [
        Load(0x10000, synth.pattern(4 * PAGE, 1)),
        Load(0x20000, b"", memsz=4 * PAGE),
        Load(0x30000, synth.pattern(2 * PAGE, 2)),
    ]
    notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
    return synth.write_core(tmp_path / "core", loads, notes)


# -- PT_LOAD layouts ---------------------------------------------------------------------


def test_the_kernel_layout_and_its_one_page_dumps_pass(tmp_path):
    """filesz 0, whole, or one page of more (an ELF header page) are what the kernel writes."""
    loads = [
        Load(EXE_BASE, synth.pattern(PAGE), memsz=5 * PAGE),  # vma_dump_size(): PAGE_SIZE
        Load(EXE_BASE + 5 * PAGE, b"", memsz=PAGE),
        Load(0x7F00_0000_0000, synth.pattern(3 * PAGE, 3)),
    ]
    core = synth.write_core(tmp_path / "core", loads, synth.core_notes())
    with open_core(core.path) as c:
        assert [s.file_size for s in c.segments] == [PAGE, 0, 3 * PAGE]


def test_gcore_layout_passes(tmp_path):
    """gdb's gcore: p_align 1, loads packed right after the headers, notes last."""
    notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
    start = E.ELF64LE.ehdr.size + 4 * E.ELF64LE.phdr.size
    a, b = synth.pattern(0x1234, 1), synth.pattern(0x2000, 2)
    phdrs = [
        E.Phdr(type=E.PT_NOTE, offset=start + len(a) + len(b), filesz=len(notes), align=1),
        E.Phdr(
            type=E.PT_LOAD,
            flags=RW,
            offset=start,
            vaddr=0x1000,
            filesz=len(a),
            memsz=len(a),
            align=1,
        ),
        E.Phdr(
            type=E.PT_LOAD,
            flags=RW,
            offset=start + len(a),
            vaddr=0x10000,
            filesz=len(b),
            memsz=len(b),
            align=1,
        ),
        # Not dumped: its offset is unused.
        E.Phdr(type=E.PT_LOAD, flags=E.PF_R, offset=0x77, vaddr=0x20000, memsz=PAGE, align=1),
    ]
    raw = synth.ehdr64(phnum=4) + b"".join(E.ELF64LE.phdr.pack(p) for p in phdrs) + a + b + notes
    (tmp_path / "core").write_bytes(raw)
    with open_core(tmp_path / "core") as c:
        assert c.read(0x1000, len(a)) == a and c.read(0x10000, len(b)) == b
        assert c.process is not None and c.process.fname == "qemu-system-x86"


@pytest.mark.parametrize(
    ("filesz", "memsz"),
    [(2 * PAGE, 4 * PAGE), (1, 4 * PAGE), (PAGE + 1, 4 * PAGE), (5 * PAGE, 4 * PAGE)],
    ids=["two-pages-of-four", "one-byte", "page-and-a-byte", "more-than-mapped"],
)
def test_partial_dumps_the_kernel_never_writes_are_refused(kernel_like, filesz, memsz):
    patch(kernel_like.path, phdr_at(1) + P_FILESZ, "<QQ", filesz, memsz)
    refused(kernel_like.path, "PT_LOAD 1", "host 0x10000-", f"{filesz:#x} bytes in the file")


def test_zeroed_filesz_leaves_bytes_of_no_segment(kernel_like):
    """The real defect: guest RAM's p_filesz set to 0 made it "not dumped" zeros."""
    patch(kernel_like.path, phdr_at(1) + P_FILESZ, "<Q", 0)
    refused(
        kernel_like.path,
        "PT_LOAD 1 (host 0x10000-0x14000) has 0x0 bytes in the file",
        f"-{kernel_like.loads[1].offset:#x}, belong to no segment",
    )


def test_one_page_of_a_whole_segment_leaves_a_gap(kernel_like):
    patch(kernel_like.path, phdr_at(1) + P_FILESZ, "<Q", PAGE)
    refused(kernel_like.path, "PT_LOAD 1", "0x3000 bytes of the file", "belong to no segment")


def test_grown_filesz_overlaps_the_next_segment(kernel_like):
    # The empty segment 2 shares the offset; 3's data then starts inside 1's.
    patch(kernel_like.path, phdr_at(1) + P_FILESZ, "<QQ", 8 * PAGE, 8 * PAGE)
    refused(kernel_like.path, "PT_LOAD 1", "PT_LOAD 3", "share file bytes")


@pytest.mark.parametrize(
    ("offset", "other"),
    [(0, "the ELF header"), (E.ELF64LE.ehdr.size, "the program headers"), (None, "the notes")],
)
def test_a_segment_over_the_headers_or_notes_is_refused(kernel_like, offset, other):
    at = kernel_like.notes_offset if offset is None else offset
    patch(kernel_like.path, phdr_at(3) + P_OFFSET, "<Q", at)
    patch(kernel_like.path, phdr_at(3) + P_ALIGN, "<Q", 1)
    refused(kernel_like.path, "PT_LOAD 3", other, "share file bytes")


def test_misaligned_offset_is_refused(kernel_like):
    at = kernel_like.loads[2].offset + 8
    patch(kernel_like.path, phdr_at(3) + P_OFFSET, "<Q", at)
    refused(kernel_like.path, "PT_LOAD 3", f"file offset {at:#x}", "p_align 0x1000")


def test_p_align_that_is_no_power_of_two_is_refused(kernel_like):
    patch(kernel_like.path, phdr_at(3) + P_ALIGN, "<Q", 3000)
    refused(kernel_like.path, "PT_LOAD 3", "p_align 0xbb8")


def test_empty_segments_may_sit_anywhere(kernel_like):
    """A segment with no file bytes has no file range to check (gcore leaves its offset be)."""
    patch(kernel_like.path, phdr_at(2) + P_OFFSET, "<Q", 2**64 - 5)
    with open_core(kernel_like.path) as c:
        assert not c.truncated


def test_a_cut_core_is_still_truncated_not_corrupt(kernel_like):
    os.truncate(kernel_like.path, kernel_like.loads[0].offset + PAGE)
    with open_core(kernel_like.path) as c:
        assert c.truncated and c.expected_size == kernel_like.size


# -- notes ---------------------------------------------------------------------------------


def _notes_core(tmp_path: Path, notes: bytes) -> Path:
    return synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes).path


@pytest.mark.parametrize(
    ("field", "value"),
    [(0, 0xFFFFFFFF), (4, 0xFFFFFFFF), (4, 0x10000), (4, 137)],
    ids=["namesz-huge", "descsz-huge", "descsz-past-the-segment", "prpsinfo-one-too-long"],
)
def test_a_note_running_past_its_segment_is_refused(tmp_path, field, value):
    # PRPSINFO last: a size one byte too big is then not hidden by the next note.
    notes = synth.core_notes(files=[FileEntry(0, PAGE, 0, EXE)])
    at = len(notes)
    notes = bytearray(notes + E.note_bytes(b"CORE", E.NT_PRPSINFO, synth.prpsinfo()))
    struct.pack_into("<I", notes, at + field, value)
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], bytes(notes))
    where = f"at file offset {core.notes_offset + at:#x}"
    refused(core.path, "corrupt notes", where, "past the end of the notes")


def test_a_short_prpsinfo_size_breaks_the_notes_after_it(tmp_path):
    notes = bytearray(synth.core_notes(psinfo=synth.prpsinfo(), aux={E.AT_PHDR: 1}))
    at = next(n.offset for n in E.iter_notes(bytes(notes)) if n.type == E.NT_PRPSINFO)
    struct.pack_into("<I", notes, at + 4, 20)  # descsz 20: the next "note" is inside it
    refused(_notes_core(tmp_path, bytes(notes)), "corrupt notes")


def test_trailing_zeros_after_the_notes_are_padding(tmp_path):
    notes = synth.core_notes(psinfo=synth.prpsinfo(pid=5)) + bytes(7)
    with open_core(_notes_core(tmp_path, notes)) as c:
        assert c.process is not None and c.process.pid == 5


def test_trailing_garbage_after_the_notes_is_refused(tmp_path):
    notes = synth.core_notes(psinfo=synth.prpsinfo(pid=5)) + b"\1\2\3"
    refused(_notes_core(tmp_path, notes), "corrupt notes", "too few for a note header")


@given(st.binary(max_size=600))
def test_malformed_note_never_raises(buf):
    bad = E.malformed_note(buf)
    assert bad is None or (0 <= bad[0] < len(buf) and bad[1])


def test_malformed_note_accepts_what_note_bytes_writes():
    buf = b"".join(E.note_bytes(b"CORE", t, bytes(t * 3)) for t in range(1, 9))
    assert E.malformed_note(buf) is None
    assert E.malformed_note(buf[:-1]) is not None


# -- NT_FILE -------------------------------------------------------------------------------


def _nt_file_core(tmp_path: Path, desc: bytes) -> Path:
    notes = E.note_bytes(b"CORE", E.NT_FILE, desc)
    return _notes_core(tmp_path, notes)


def test_gcore_nt_file_with_byte_offsets(tmp_path):
    """gdb writes NT_FILE's page size as 1 and its offsets in bytes."""
    desc = synth.nt_file([FileEntry(EXE_BASE, EXE_BASE + PAGE, 0x1234, EXE)], page_size=1)
    with open_core(_nt_file_core(tmp_path, desc)) as c:
        assert c.mappings[0].file_offset == 0x1234 and c.executable == EXE


@pytest.mark.parametrize("page_size", [0, 2, 8192, 2**63, 2**64 - 1])
def test_nt_file_page_size_is_the_kernels_or_gdbs(tmp_path, page_size):
    desc = synth.nt_file([FileEntry(EXE_BASE, EXE_BASE + PAGE, 1, EXE)], page_size=page_size)
    refused(_nt_file_core(tmp_path, desc), "corrupt NT_FILE note", f"page size {page_size:#x}")


@pytest.mark.parametrize("count", [2, 1000, 2**63, 2**64 - 1])
def test_nt_file_count_beyond_its_entries_or_names(tmp_path, count):
    desc = bytearray(synth.nt_file([FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE)]))
    struct.pack_into("<Q", desc, 0, count)
    refused(_nt_file_core(tmp_path, bytes(desc)), "corrupt NT_FILE note", f"counts {count:,}")


def test_nt_file_names_missing(tmp_path):
    files = [FileEntry(EXE_BASE + k * PAGE, EXE_BASE + (k + 1) * PAGE, k, EXE) for k in range(3)]
    desc = synth.nt_file(files)
    names_at = 16 + 3 * 24
    cut = desc[: names_at + len(EXE) + 1]  # one name of three
    refused(_nt_file_core(tmp_path, cut), "corrupt NT_FILE note", "counts 3 mappings but holds 1")
    blank = desc[:names_at] + bytes(len(desc) - names_at)  # three empty names
    refused(_nt_file_core(tmp_path, blank), "corrupt NT_FILE note", "mapping 0 has no path")


def test_nt_file_offsets_beyond_any_file_are_dropped():
    desc = synth.nt_file(
        [FileEntry(0, PAGE, 2**52, "/huge"), FileEntry(PAGE, 2 * PAGE, 3, "/fine")]
    )
    assert [m.path for m in parse_nt_file(desc)] == ["/fine"]


# -- files that are not regular files --------------------------------------------------------


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.fspath(tmp_path / "sock"))
        return tmp_path / "sock"
    if kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "link").symlink_to(tmp_path / "fifo")
        return tmp_path / "link"
    if kind == "directory":
        return tmp_path
    return Path("/dev/null")


def _in_subprocess(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: if it blocks, the test fails instead of hanging."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *map(os.fspath, args)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"blocked for {TIMEOUT} s")


KINDS = {
    "fifo": "a FIFO",
    "socket": "a socket",
    "symlink-to-fifo": "a FIFO",
    "directory": "a directory",
    "/dev/null": "a character device",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_open_regular_refuses_without_opening(tmp_path, kind):
    path = _special(tmp_path, kind)
    proc = _in_subprocess(
        """
        import sys
        from qemu_vmcore.host.core import open_regular, check_regular, NotRegularFileError
        from qemu_vmcore.host import compressed
        from qemu_vmcore.host import executable as elffile
        for f in (open_regular, check_regular, elffile.read_build_id):
            try:
                f(sys.argv[1])
            except NotRegularFileError as e:
                print(e.message)
        print(compressed.detect(sys.argv[1]), elffile.read_qemu_version(sys.argv[1]))
        """,
        path,
    )
    lines = proc.stdout.splitlines()
    assert lines[:3] == [f"{path}: is {KINDS[kind]}, not a regular file"] * 3, proc
    assert lines[3] == "None None", proc


def test_open_regular_of_a_regular_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    fd = open_regular(tmp_path / "f")
    try:
        assert os.pread(fd, 3, 0) == b"abc"
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    check_regular(tmp_path / "f")
    check_regular(tmp_path / "missing")  # missing: for whoever opens it to say
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")


def test_core_that_is_a_fifo_names_it(tmp_path):
    fifo = _special(tmp_path, "fifo")
    proc = _in_subprocess(
        """
        import sys
        from qemu_vmcore.host.core import open_core
        from qemu_vmcore.errors import CoreFileError
        try:
            open_core(sys.argv[1])
        except CoreFileError as e:
            print(e.message)
        """,
        fifo,
    )
    assert proc.stdout.strip() == f"{fifo}: is a FIFO, not a regular file", proc


# -- drgn's errors while it loads the core ------------------------------------------------


class _FakeProgram:
    """drgn.Program whose loading raises ``error`` at ``where``."""

    error: BaseException = Exception("?")
    where = "set_core_dump"

    def __init__(self) -> None:
        pass

    def set_core_dump(self, fd: int) -> None:
        os.close(fd)  # drgn owns the descriptor, even when it fails
        if self.where == "set_core_dump":
            raise self.error

    def load_debug_info(self, paths, main=False) -> None:
        if self.where == "load_debug_info":
            raise self.error


@pytest.mark.parametrize(
    ("where", "error", "kind", "needle"),
    [
        ("set_core_dump", drgn.FaultError("bad", 0x1000), CoreFileError, "drgn cannot read"),
        ("set_core_dump", ValueError("not an ELF core file"), CoreFileError, "not an ELF core"),
        ("set_core_dump", OverflowError("too big"), CoreFileError, "too big"),
        ("set_core_dump", Exception("libdrgn other"), CoreFileError, "libdrgn other"),
        ("load_debug_info", drgn.BadDataError("couldn't parse NT_FILE"), CoreFileError, "NT_FILE"),
        ("load_debug_info", OverflowError("big"), DebugInfoError, "cannot load QEMU's debug"),
        ("load_debug_info", Exception("libdrgn other"), DebugInfoError, "libdrgn other"),
        ("load_debug_info", OSError(errno.EIO, "I/O"), DebugInfoError, "I/O"),
    ],
)
def test_drgn_errors_while_loading_are_one_line(tmp_path, monkeypatch, where, error, kind, needle):
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], synth.core_notes())
    monkeypatch.setattr(_FakeProgram, "where", where)
    monkeypatch.setattr(_FakeProgram, "error", error)
    monkeypatch.setattr(drgn_backend.drgn, "Program", _FakeProgram)
    with open_core(core.path) as host:
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(kind) as info:
            drgn_backend.open_drgn(host)
        assert len(os.listdir("/proc/self/fd")) == before  # the dup went to drgn
    assert "\n" not in info.value.message and needle in info.value.message


def test_the_core_named_executable_that_is_a_fifo_is_refused_before_drgn(tmp_path, monkeypatch):
    fifo = _special(tmp_path, "fifo")
    notes = synth.core_notes(files=[FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, str(fifo))])
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    monkeypatch.setattr(drgn_backend.drgn, "Program", None)  # never reached
    with open_core(core.path) as host, pytest.raises(NotRegularFileError, match="is a FIFO"):
        drgn_backend.open_drgn(host)


@pytest.mark.parametrize("kind", ["missing", "fifo", "huge-offset"])
def test_executable_reader_faults_instead_of_raising_anything(tmp_path, kind):
    path = tmp_path / "exe"
    offset = 0
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge-offset":
        path.write_bytes(b"x" * 100)
        offset = 2**63
    read = drgn_backend._file_reader(path, offset)
    with pytest.raises(drgn.FaultError):
        read(0x1000, 16, 0, False)


def test_executable_reader_pads_past_the_end(tmp_path):
    (tmp_path / "exe").write_bytes(b"abcdef")
    assert drgn_backend._file_reader(tmp_path / "exe", 2)(0x1000, 8, 1, False) == b"def" + bytes(5)


# -- the VMCOREINFO scan reads, not maps -----------------------------------------------------


NOTE_START = b"\x0b\x00\x00\x00" + b"\x10\x00\x00\x00" + bytes(4) + b"VMCOREINFO\0\0OSRELEASE="


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 3 * 4096 - len(NOTE_START)), max_size=6),
    st.sampled_from([40, 64, 100, 4096, 4099]),
)
def test_scan_finds_notes_across_chunk_boundaries(at, chunk):
    """Every note start is found once, whatever chunk boundary it straddles."""
    ram = bytearray(synth.pattern(3 * 4096, 5))
    for a in at:
        ram[a : a + len(NOTE_START)] = NOTE_START
    expected = [m.start() for m in V._NOTE_START.finditer(bytes(ram))]
    saved = V.SCAN_CHUNK
    V.SCAN_CHUNK = chunk
    try:
        with guest_ram(ram) as (mem, host):
            assert list(V.scan_candidates(mem, host.fd)) == expected
    finally:
        V.SCAN_CHUNK = saved


def test_scan_of_a_core_that_shrinks_is_an_error(tmp_path):
    """The file cut under the scan: mmap() would have died of SIGBUS here."""
    ram = bytearray(synth.pattern(64 * PAGE, 6))
    with guest_ram(ram) as (mem, host):
        spans = list(mem.file_spans())  # computed while the file is whole
        os.truncate(host.path, os.fstat(host.fd).st_size - 40 * PAGE)
        mem.file_spans = lambda: iter(spans)
        with pytest.raises(CoreFileError) as info:
            V.find(mem, host.fd, None, "no vmcoreinfo device", layout_of=lambda info: None)
    message = info.value.message
    assert "\n" not in message and "the file ended at offset" in message
    assert str(host.path) in message and "truncated" in message


def test_scan_read_error_is_an_error(monkeypatch):
    def eio(*args: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with guest_ram(bytearray(synth.pattern(4 * PAGE, 7))) as (mem, host):
        monkeypatch.setattr(V.os, "preadv", eio)
        with pytest.raises(CoreFileError, match="Input/output error") as info:
            list(V.scan_candidates(mem, host.fd))
    assert "scanning guest RAM" in info.value.message


# -- the QEMU version, read from .rodata without mmap ---------------------------------------


def test_version_found_across_chunk_boundaries(tmp_path, monkeypatch):
    text = b"QEMU emulator version 7.2.22 (test)\n"
    for at in (0, 90, 100 - 5, 100 - len(text), 250):
        data = bytearray(synth.pattern(400, 8).replace(b"\n", b" "))
        data[at : at + len(text)] = text
        (tmp_path / "rodata").write_bytes(bytes(data))
        monkeypatch.setattr(elffile, "_CHUNK", 100)
        fd = os.open(tmp_path / "rodata", os.O_RDONLY)
        try:
            assert elffile._search(fd, 0, len(data)) == "7.2.22 (test)", at
            assert elffile._search(fd, 0, len(data) + 1000) == "7.2.22 (test)", at
            assert elffile._search(fd, at + 1, len(data)) is None
        finally:
            os.close(fd)


# -- coredumpctl's JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        {"pid": None},
        {"time": "x"},
        {"time": float("inf")},
        {"pid": True},
        {"pid": -1},
        {"time": 1.5},
        {"pid": [1]},
        {"time": "9" * 5000},
    ],  # fmt: skip
)
def test_entry_with_a_malformed_number_is_refused(row):
    with pytest.raises(CoredumpError, match="not a number") as info:
        Entry.from_json(row)
    assert "\n" not in info.value.message


def test_entry_fields_as_coredumpctl_prints_them():
    e = Entry.from_json({"time": 1.7e15, "pid": "42", "exe": None, "corefile": "present"})
    assert (e.time, e.pid, e.exe, e.corefile) == (1_700_000_000_000_000, 42, "", "present")


def fake_coredumpctl(tmp_path: Path, listing: str, filename: str = "") -> dict[str, str]:
    """An environment whose ``coredumpctl`` prints ``listing`` for ``--json=short list``
    and ``filename`` for ``-F COREDUMP_FILENAME``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (tmp_path / "listing.json").write_text(listing)
    (tmp_path / "filename").write_text(filename + "\n")
    script = bindir / "coredumpctl"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *--json=short*) cat "{tmp_path}/listing.json" ;;\n'
        f'  *COREDUMP_FILENAME*) cat "{tmp_path}/filename" ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


#: One row as systemd 252's ``coredumpctl --json=short list`` prints it.
TIME = "1700000000000000"
ROW = f'{{"time":{TIME},"pid":4242,"corefile":"present","exe":"/usr/bin/qemu-system-x86_64"}}'


@pytest.mark.parametrize(
    ("listing", "needle"),
    [
        ("[" + ROW.replace("4242", "null") + "]", "'pid' is null, not a number"),
        ("[" + ROW.replace(TIME, '"x"') + "]", "'time' is \"x\", not a number"),
        ("[" + ROW.replace(TIME, "1e400") + "]", "'time' is Infinity, not a number"),
        (ROW, "JSON dict, not a list of cores"),
        ('"cores"', "JSON str, not a list of cores"),
        ("[1, 2]", "listed 1 as a core, not an object"),
        ('[["pid", 4242]]', 'listed ["pid", 4242] as a core'),
        ("[" * 100_000 + "]" * 100_000, "coredumpctl printed no JSON"),
        ("{nope", "coredumpctl printed no JSON"),
    ],
    ids=[
        "pid-null",
        "time-x",
        "time-1e400",
        "object",
        "string",
        "numbers",
        "lists",
        "nested",
        "garbage",
    ],  # fmt: skip
)
def test_malformed_coredumpctl_json_is_one_line(tmp_path, listing, needle):
    env = fake_coredumpctl(tmp_path, listing)
    for command in (["info"], ["extract", "-o", tmp_path / "vmcore"]):
        proc = run_cli(*command, "--coredump", "4242", env=env)
        assert_one_line_error(proc, needle)
        assert proc.returncode == 2 and not (tmp_path / "vmcore").exists()


def test_coredump_naming_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = _special(tmp_path, "fifo")
    env = fake_coredumpctl(tmp_path, f"[{ROW}]", str(fifo))
    cmd = [sys.executable, "-m", "qemu_vmcore", "info", "--coredump", "4242"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("--coredump naming a FIFO blocked")
    assert_one_line_error(proc, str(fifo), "is a FIFO, not a regular file")
    assert proc.returncode == 2


# -- the decompressed copy has no name ---------------------------------------------------


def _xz_core(tmp_path: Path) -> Path:
    import lzma

    core = synth.write_core(tmp_path / "plain", [Load(0x1000, synth.pattern(8 * PAGE))])
    xz = tmp_path / "core.xz"
    xz.write_bytes(lzma.compress(core.path.read_bytes()))
    return xz


def test_decompressed_copy_is_never_in_the_directory(tmp_path):
    xz, work = _xz_core(tmp_path), tmp_path / "work"
    work.mkdir()
    seen = []  # what the directory held at each step of the decompression

    def progress(n: int) -> None:
        seen.append(sorted(work.iterdir()))

    with compressed.decompressed(xz, "xz", tmpdir=work, progress=progress) as plain:
        assert list(work.iterdir()) == []
        assert plain.parent == Path(f"/proc/{os.getpid()}/fd")
        assert os.readlink(plain).startswith(f"{work}/")  # the unnamed file, in --tmpdir
        with open_core(plain) as c:
            assert c.read(0x1000, 8 * PAGE) == synth.pattern(8 * PAGE)
    assert seen and all(s == [] for s in seen)
    assert list(work.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        os.stat(plain)


def test_without_o_tmpfile_the_copy_is_unlinked_at_once(tmp_path, monkeypatch):
    xz, work = _xz_core(tmp_path), tmp_path / "work"
    work.mkdir()
    real_open = os.open

    def no_tmpfile(path, flags, mode=0o777, **kw):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(compressed.os, "open", no_tmpfile)
    with compressed.decompressed(xz, "xz", tmpdir=work) as plain:
        assert list(work.iterdir()) == []
        assert os.readlink(plain).endswith(" (deleted)")
        with open_core(plain) as c:
            assert c.read(0x1000, 4) == synth.pattern(8 * PAGE)[:4]
    assert list(work.iterdir()) == []
