"""Hostile files around real rig cores: corrupt notes and program headers,
FIFOs where files should be, a core that shrinks while it is scanned, and
signals (SIGKILL too) while a compressed core is decompressed.

Every refusal must be exactly one ``error:`` line, exit status 2, nothing on
stdout and nothing written; nothing may hang (each run has a timeout) or die
of a signal. The corrupt inputs are a sparse copy of a rig core (q72-pc-bios,
~25 MB on disk) patched in place and restored after each test; where a note
or header is, is found by parsing the copy's own program headers here.
Synthetic versions of the same classes are in tests/unit/test_hostcore_hostile.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import rig
from support.runs import assert_one_line_error, bytes_being_written, compressed_core

from qemu_vmcore.host.core import open_core
from qemu_vmcore.layouts import elf as E

pytestmark = pytest.mark.rig

CASE = "q72-pc-bios"  # small on disk, and its QEMU's state is whole
#: A run that takes longer than this has hung (a refusal takes ~1 s).
TIMEOUT = 120
EXIT_INPUT = 2


def run(*args: object, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m qemu_vmcore ARGS``; a hang fails the test instead of hanging it."""
    cmd = [sys.executable, "-m", "qemu_vmcore", *map(os.fspath, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{cmd} did not finish within {TIMEOUT} s")


def assert_refused(core: Path, out_dir: Path, *needles: str, extra: tuple = ()) -> None:
    """``info`` and ``extract`` both refuse ``core`` in one line naming ``needles``."""
    for command in ("info", "extract"):
        out = ["-o", out_dir / "vmcore"] if command == "extract" else []
        proc = run(command, core, *extra, *out)
        assert_one_line_error(proc, *needles)
        assert proc.returncode == EXIT_INPUT, (command, proc.stderr)
        assert proc.stdout == ""
        assert list(out_dir.iterdir()) == [], command


# -- the copy and where its parts are -------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where things are in a core file, read from its own headers."""

    ehdr: E.Ehdr
    phdrs: list[tuple[int, E.Phdr]]  # (file offset of the header, header)
    notes: list[tuple[int, E.Note]]  # (file offset of the note header, note)

    def note(self, name: bytes, ntype: int) -> tuple[int, E.Note]:
        return next((at, n) for at, n in self.notes if n.name == name and n.type == ntype)

    @staticmethod
    def desc_at(at: int, note: E.Note) -> int:
        return at + E.ELF64LE.nhdr.size + E.align_up(len(note.name) + 1, 4)

    def segment_at(self, hva: int) -> tuple[int, int, E.Phdr]:
        """(index, header offset, header) of the PT_LOAD that maps ``hva``."""
        return next(
            (k, at, p)
            for k, (at, p) in enumerate(self.phdrs)
            if p.type == E.PT_LOAD and p.vaddr <= hva < p.vaddr + p.memsz
        )


def layout(path: Path) -> Layout:
    with open(path, "rb") as f:
        ehdr = E.ELF64LE.ehdr.unpack(f.read(E.ELF64LE.ehdr.size))
        f.seek(ehdr.phoff)
        raw = f.read(ehdr.phnum * E.ELF64LE.phdr.size)
        phdrs = [
            (ehdr.phoff + k * E.ELF64LE.phdr.size, p)
            for k, p in enumerate(E.ELF64LE.phdr.iter_unpack(raw))
        ]
        notes = []
        for _, p in phdrs:
            if p.type == E.PT_NOTE:
                f.seek(p.offset)
                notes += [(p.offset + n.offset, n) for n in E.iter_notes(f.read(p.filesz))]
    return Layout(ehdr, phdrs, notes)


class Copy:
    """A private sparse copy of a rig core, patched for a while and restored.

    :param ram_hva: host address of pc.ram, as ``info --json`` says.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.layout = layout(path)
        info = json.loads(run("info", "--json", path).stdout)
        self.ram_hva = next(r["hva"] for r in info["ranges"] if r["block"] == "pc.ram")

    def guest_ram(self) -> tuple[int, int, E.Phdr]:
        """(index, header offset, header) of pc.ram's PT_LOAD."""
        return self.layout.segment_at(self.ram_hva)

    @contextlib.contextmanager
    def patched(self, patches: list[tuple[int, bytes]]) -> Iterator[Path]:
        fd = os.open(self.path, os.O_RDWR)
        try:
            old = [(at, os.pread(fd, len(data), at)) for at, data in patches]
            for at, data in patches:
                os.pwrite(fd, data, at)
            try:
                yield self.path
            finally:
                for at, data in reversed(old):
                    os.pwrite(fd, data, at)
        finally:
            os.close(fd)


@pytest.fixture(scope="module")
def copy(rig_case, tmp_path_factory) -> Iterator[Copy]:
    case = rig_case(CASE)
    d = tmp_path_factory.mktemp("hostile")
    subprocess.run(["cp", "--sparse=always", case.core, d / "core"], check=True)
    yield Copy(d / "core")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def out_dir(tmp_path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


# -- corrupt notes --------------------------------------------------------------------------

Patches = list[tuple[int, bytes]]
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")


def _auxv_descsz_huge(lay: Layout) -> Patches:
    at, _ = lay.note(b"CORE", E.NT_AUXV)
    return [(at + 4, U32.pack(0xFFFFFFF0))]


def _auxv_values_huge(lay: Layout) -> Patches:
    at, n = lay.note(b"CORE", E.NT_AUXV)
    desc = lay.desc_at(at, n)
    return [(desc + 16 * k + 8, U64.pack(2**64 - 1)) for k in range(len(n.desc) // 16 - 1)]


def _auxv_retyped(lay: Layout) -> Patches:
    """No NT_AUXV for drgn: its own parse of the notes fails (BadDataError)."""
    at, _ = lay.note(b"CORE", E.NT_AUXV)
    return [(at + 8, U32.pack(0x77))]


def _nt_file_count(count: Callable[[int], int]) -> Callable[[Layout], Patches]:
    def make(lay: Layout) -> Patches:
        at, n = lay.note(b"CORE", E.NT_FILE)
        return [(lay.desc_at(at, n), U64.pack(count(U64.unpack_from(n.desc)[0])))]

    return make


def _nt_file_page_size(lay: Layout) -> Patches:
    at, n = lay.note(b"CORE", E.NT_FILE)
    return [(lay.desc_at(at, n) + 8, U64.pack(2**63))]


def _nt_file_names_gone(lay: Layout) -> Patches:
    at, n = lay.note(b"CORE", E.NT_FILE)
    count = U64.unpack_from(n.desc)[0]
    names = 16 + 24 * count
    return [(lay.desc_at(at, n) + names, bytes(len(n.desc) - names))]


def _first_namesz_huge(lay: Layout) -> Patches:
    return [(lay.notes[0][0], U32.pack(0xFFFFFFFF))]


def _last_descsz_past_the_segment(lay: Layout) -> Patches:
    at, n = lay.notes[-1]
    return [(at + 4, U32.pack(len(n.desc) + 8))]


def _prpsinfo_descsz(size: int) -> Callable[[Layout], Patches]:
    def make(lay: Layout) -> Patches:
        at, _ = lay.note(b"CORE", E.NT_PRPSINFO)
        return [(at + 4, U32.pack(size))]

    return make


def _shoff(shoff: int) -> Callable[[Layout], Patches]:
    """e_phnum PN_XNUM: the count is in section 0, which e_shoff puts out of the file."""

    def make(lay: Layout) -> Patches:
        return [(40, U64.pack(shoff)), (56, struct.pack("<H", E.PN_XNUM))]

    return make


NOTE_ROWS = {
    "NT_AUXV size past the notes": (_auxv_descsz_huge, ["corrupt notes", "descsz 4294967280"]),
    "NT_AUXV values huge": (_auxv_values_huge, ["corrupt NT_AUXV", "AT_PHDR 0xffffffffffffffff"]),
    "NT_AUXV missing for drgn": (_auxv_retyped, ["drgn cannot read the core", "NT_AUXV"]),
    "NT_FILE count huge": (_nt_file_count(lambda c: 2**63), ["corrupt NT_FILE", "counts 9,223"]),
    "NT_FILE count past names": (_nt_file_count(lambda c: c + 50), ["corrupt NT_FILE", "holds"]),
    "NT_FILE names missing": (_nt_file_names_gone, ["corrupt NT_FILE", "has no path"]),
    "NT_FILE page size": (_nt_file_page_size, ["corrupt NT_FILE", "page size 0x8000"]),
    "note namesz huge": (_first_namesz_huge, ["corrupt notes", "namesz 4294967295"]),
    "note past the segment": (_last_descsz_past_the_segment, ["corrupt notes", "past the end"]),
    "NT_PRPSINFO size short": (_prpsinfo_descsz(20), ["corrupt notes"]),
    "NT_PRPSINFO size huge": (_prpsinfo_descsz(0x7FFFFFFF), ["corrupt notes"]),
    "e_shoff past the file, PN_XNUM": (_shoff(1 << 40), ["PN_XNUM", "section 0 is missing"]),
    "e_shoff huge, PN_XNUM": (_shoff(2**64 - 64), ["PN_XNUM", "section 0 is missing"]),
}


@pytest.mark.parametrize("row", list(NOTE_ROWS))
def test_corrupt_notes_are_one_line(copy, out_dir, row):
    make, needles = NOTE_ROWS[row]
    with copy.patched(make(copy.layout)) as core:
        assert_refused(core, out_dir, *needles)


def test_garbage_prpsinfo_contents_are_only_shown(copy, out_dir):
    """NT_PRPSINFO's fields are reported, never trusted: garbage there is no error."""
    at, n = copy.layout.note(b"CORE", E.NT_PRPSINFO)
    garbage = bytes(range(256))[: len(n.desc)]
    with copy.patched([(copy.layout.desc_at(at, n), garbage)]) as core:
        proc = run("info", "--json", core)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


# -- program headers: a segment whole, its first page, or nothing; no gaps or overlaps ----


def _ram(c: Copy, field: int, value: Callable[[E.Phdr], int]) -> Patches:
    _, at, p = c.guest_ram()
    return [(at + field, U64.pack(value(p)))]


PHDR_ROWS = {
    "guest RAM p_filesz zeroed": (
        lambda c: _ram(c, 32, lambda p: 0),
        ["has 0x0 bytes in the file of 0x8000000 mapped", "belong to no segment"],
    ),
    "guest RAM p_filesz two pages": (
        lambda c: _ram(c, 32, lambda p: 2 * 4096),
        ["has 0x2000 bytes in the file", "whole, its first page, or none"],
    ),
    "guest RAM p_filesz a page more": (
        lambda c: _ram(c, 32, lambda p: p.filesz + 4096) + _ram(c, 40, lambda p: p.memsz + 4096),
        ["share file bytes"],
    ),
    "guest RAM p_offset misaligned": (
        lambda c: _ram(c, 8, lambda p: p.offset + 8),
        ["not aligned to its p_align 0x1000"],
    ),
    "guest RAM p_offset onto the notes": (
        lambda c: _ram(c, 8, lambda p: c.layout.notes[0][0]) + _ram(c, 48, lambda p: 1),
        ["share file bytes", "the notes"],
    ),
}


@pytest.mark.parametrize("row", list(PHDR_ROWS))
def test_corrupt_program_headers_name_the_segment(copy, out_dir, row):
    make, needles = PHDR_ROWS[row]
    k, _, p = copy.guest_ram()
    with copy.patched(make(copy)) as core:
        assert_refused(core, out_dir, f"PT_LOAD {k} (host {p.vaddr:#x}-", *needles)


def test_every_cached_rig_core_passes_the_layout_checks():
    """What the kernel really writes: every rig core (cores of real QEMUs) opens."""
    opened = 0
    for spec in rig.STANDARD_CASES.values():
        case = rig.cached_case(spec)
        if case is None or not case.core.exists():
            continue
        with open_core(case.core) as c:
            assert not c.truncated and c.segments
        opened += 1
    if not opened:
        pytest.skip("no rig case is made yet")


def test_real_gcore_passes(tmp_path):
    """What gdb's gcore writes (p_align 1, notes last, NT_FILE page size 1) opens."""
    gdb = shutil.which("gdb")
    if gdb is None:
        pytest.skip("no gdb")
    sleep = subprocess.Popen(["sleep", "100"])
    try:
        time.sleep(0.2)
        out = tmp_path / "gcore"
        subprocess.run(
            [gdb, "-q", "-batch", "-p", str(sleep.pid), "-ex", f"gcore {out}"],
            capture_output=True,
            timeout=120,
        )
    finally:
        sleep.kill()
        sleep.wait()
    if not out.exists():
        pytest.skip("gdb could not attach (ptrace restrictions?)")
    lay = layout(out)
    assert {p.align for _, p in lay.phdrs if p.type == E.PT_LOAD} == {1}
    with open_core(out) as c:
        assert c.process is not None and c.process.fname == "sleep"
        assert os.path.samefile(c.executable, shutil.which("sleep"))


# -- FIFOs where files should be ---------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


@pytest.mark.parametrize("where", ["core", "--qemu", "--debug-file"])
def test_fifo_is_refused_without_blocking(rig_case, fifo, out_dir, where):
    """Opened for reading, a FIFO waits for a writer: it must never be opened."""
    if where == "core":
        assert_refused(fifo, out_dir, str(fifo), "is a FIFO, not a regular file")
    else:
        core = rig_case(CASE).core
        for command in ("info", "extract", "extract --backend gdb"):
            out = ["-o", out_dir / "vmcore"] if command != "info" else []
            proc = run(*command.split(), core, where, fifo, *out)
            assert_one_line_error(proc, str(fifo), "is a FIFO, not a regular file")
            assert proc.returncode == EXIT_INPUT and list(out_dir.iterdir()) == []


def test_fifo_as_the_executable_the_core_names(copy, out_dir):
    """NT_FILE names the executable that drgn opens (and we read .rodata from)."""
    at, n = copy.layout.note(b"CORE", E.NT_FILE)
    count = U64.unpack_from(n.desc)[0]
    names = n.desc[16 + 24 * count :].split(b"\0")
    exe = names[0]  # the first mapping: the executable's ELF header
    assert os.path.basename(exe).startswith(b"qemu-system"), exe
    with tempfile.TemporaryDirectory(prefix="q", dir="/tmp") as d:
        # The same length, so that the note's layout stays as it is.
        fifo = (d + "/qemu-system-x86_64").encode().ljust(len(exe), b"x")
        assert len(fifo) == len(exe)
        os.mkfifo(fifo)
        desc = n.desc.replace(exe + b"\0", fifo + b"\0")
        with copy.patched([(copy.layout.desc_at(at, n), desc)]) as core:
            assert_refused(core, out_dir, fifo.decode(), "is a FIFO, not a regular file")


# -- the core shrinks under the VMCOREINFO scan --------------------------------------------


def test_core_cut_during_the_scan_is_an_error_not_sigbus(rig_case, tmp_path):
    """The scan used to mmap() the core: a file cut short under the mapping
    killed the process with SIGBUS. Now it is an error naming the file.

    The cut comes mid-scan: after the first span of guest RAM is scanned and
    before the next is read (file_spans() is replaced to do just that), in a
    child process, so that a SIGBUS fails the test rather than the test run.
    """
    core = tmp_path / "core"
    subprocess.run(["cp", "--sparse=always", rig_case(CASE).core, core], check=True)
    code = """
        import os, sys
        from qemu_vmcore.errors import CoreFileError
        from qemu_vmcore.source import open_qemu_core
        with open_qemu_core(sys.argv[1]) as qc:
            spans = list(qc.memory.file_spans())
            assert len(spans) > 1, spans

            def cut_after_the_first():
                yield spans[0]
                os.truncate(sys.argv[1], spans[1][2] + 4096)
                yield from spans[1:]

            qc.memory.file_spans = cut_after_the_first
            try:
                qc.vmcoreinfo()
            except CoreFileError as e:
                print(e.message)
            else:
                print("no error")
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), core],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the scan of a cut core hung")
    assert proc.returncode == 0, f"died of {proc.returncode}: {proc.stderr}"
    line = proc.stdout.strip()
    assert "\n" not in line and str(core) in line, proc
    assert "the file ended at offset" in line and "scanned for VMCOREINFO" in line, line


# -- decompression: the copy in --tmpdir never has a name ------------------------------------


@pytest.mark.parametrize(
    ("sig", "status"),
    [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130), (signal.SIGTERM, 143)],
)
def test_signal_mid_decompression_leaves_tmpdir_empty(rig_case, tmp_path, sig, status):
    """No signal, SIGKILL included, leaves a decompressed copy: it never had a name."""
    core = compressed_core(rig_case("q72-pc-512"), "xz")
    out_dir, work = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir()
    work.mkdir()
    cmd = [sys.executable, "-m", "qemu_vmcore", "extract", core, "-o", out_dir / "vmcore"]
    proc = subprocess.Popen(
        [*cmd, "--tmpdir", work],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if bytes_being_written(proc.pid, work) > 64 << 20:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the decompression ended before it could be interrupted"
        assert list(work.iterdir()) == []  # half decompressed, and still no name
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    assert list(work.iterdir()) == [] and list(out_dir.iterdir()) == []
    assert b"Traceback" not in err


def test_decompressed_copy_serves_drgn_and_gdb(rig_case, tmp_path):
    """drgn gets the open descriptor, gdb (a child process) the /proc path: both work."""
    core = compressed_core(rig_case("q72-pc-512"), "zstd")
    work = tmp_path / "work"
    work.mkdir()
    for backend in ("drgn", "gdb"):
        out = tmp_path / f"vmcore-{backend}"
        proc = run("extract", core, "-o", out, "-q", "--tmpdir", work, "--backend", backend)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size > 512 << 20
        assert list(work.iterdir()) == []
        out.unlink()
