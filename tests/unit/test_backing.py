"""guest.backing and the backing-file path of guest.physmem: shared file-backed
RAM that a core leaves out, read from the file QEMU mapped."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from support import synth
from support.synth import HI_DUMPED, HI_HVA, PAGE

from qemu_vmcore.extract import describe_missing, extract, missing_hint
from qemu_vmcore.guest import backing
from qemu_vmcore.guest.backing import BackingFiles, FileSpan, file_spans, open_backing_file
from qemu_vmcore.guest.physmem import GuestPhysicalMemory, PieceKind
from qemu_vmcore.host.core import FileMapping, open_core
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.report import backing_lines, extract_dict

G4 = 1 << 32
HI_SIZE = 2 * HI_DUMPED * PAGE
#: The HI mapping as memory-backend-file,share=on RAM: its second half is not dumped.
SHARED = GuestRange(G4, G4 + HI_SIZE, HI_HVA, "ram0", "ram0", 2, shared=True)
NOT_DUMPED_GPA = G4 + HI_DUMPED * PAGE


# -- file_spans -----------------------------------------------------------------------


def fm(hva, end, offset=0, path="/f"):
    return FileMapping(hva, end, offset, path)


def test_file_spans_split_by_mappings():
    a, b = fm(0x2000, 0x3000, path="/a"), fm(0x4000, 0x6000, 0x1000, "/b")
    spans = file_spans([b, a], 0x1000, 0x4000)  # unsorted input
    assert spans == [
        FileSpan(0x1000, 0x1000, None),
        FileSpan(0x2000, 0x1000, a),
        FileSpan(0x3000, 0x1000, None),
        FileSpan(0x4000, 0x1000, b),
    ]
    assert spans[3].file_offset() == 0x1000
    assert file_spans([b], 0x5000, 0x800)[0].file_offset() == 0x2000
    assert file_spans([], 0x1000, 0x10) == [FileSpan(0x1000, 0x10, None)]
    assert file_spans([a], 0x2800, 0x100) == [FileSpan(0x2800, 0x100, a)]


# -- opening backing files --------------------------------------------------------------


def test_open_backing_file(tmp_path):
    f = tmp_path / "guest-ram"
    f.write_bytes(b"x" * 8192)
    ok = open_backing_file(str(f))
    assert (ok.size, ok.problem) == (8192, None) and ok.fd is not None
    os.close(ok.fd)
    gone = open_backing_file(str(tmp_path / "nope"))
    assert gone.fd is None and gone.problem.startswith("is gone")
    assert "not a regular file" in open_backing_file(str(tmp_path)).problem
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in open_backing_file(str(tmp_path / "fifo")).problem
    # The kernel marks unlinked files; a file of that very name must not be taken for it.
    (tmp_path / "guest-ram (deleted)").write_bytes(b"x")
    deleted = open_backing_file(str(tmp_path / "guest-ram (deleted)"))
    assert deleted.fd is None and "deleted" in deleted.problem
    assert "memfd" in open_backing_file("/memfd:ram0 (deleted)").problem


def test_backing_files_size_check_and_switch(tmp_path):
    f = tmp_path / "ram"
    f.write_bytes(bytes(3 * PAGE))
    files = BackingFiles()
    assert files.problem(str(f), PAGE, 2 * PAGE) is None
    assert "too short" in files.problem(str(f), PAGE, 3 * PAGE)
    files.close()
    off = BackingFiles(enabled=False)
    assert "turned off" in off.problem(str(f), 0, PAGE)


# -- guest memory over a core whose shared file RAM is not dumped ------------------------


@pytest.fixture
def shared_core(tmp_path):
    """A core with SHARED's mapping naming ``tmp_path/guest-ram``, and that file."""
    path = tmp_path / "guest-ram"
    core, _, hi = synth.ram_core(tmp_path / "core", hi_file=str(path))
    content = synth.pattern(HI_SIZE, seed=99)
    # A hole in the file: never-written guest RAM stays a hole in the output too.
    with open(path, "wb") as f:
        f.write(content[: HI_DUMPED * PAGE + PAGE])
        f.truncate(HI_SIZE)
    expected = hi + content[HI_DUMPED * PAGE : HI_DUMPED * PAGE + PAGE]
    expected += bytes(HI_SIZE - len(expected))
    return core, path, expected


def test_shared_file_ram_is_read_from_its_backing_file(shared_core):
    core, path, expected = shared_core
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([SHARED], host)
        p0, p1 = mem.pieces(SHARED)
        assert (p0.kind, p1.kind) == (PieceKind.DATA, PieceKind.BACKING_FILE)
        assert (p1.gpa, p1.file_offset, p1.path) == (NOT_DUMPED_GPA, HI_DUMPED * PAGE, str(path))
        assert mem.missing() == []
        assert mem.coverage(SHARED) == "backing file"
        assert mem.backing_file(SHARED) == str(path)
        (use,) = mem.backing_uses()
        assert (use.path, use.size, use.pieces) == (str(path), HI_DUMPED * PAGE, (p1,))
        assert mem.read(G4, HI_SIZE) == expected
        spans = list(mem.file_spans())
        assert spans[-1][0] == NOT_DUMPED_GPA and spans[-1][1] != host.fd
        assert [(g, s) for g, _, s in mem.data_spans()][-1] == (NOT_DUMPED_GPA, PAGE)
        mem.close()


def test_extract_writes_backing_file_bytes(shared_core, tmp_path):
    from test_extract import open_fake

    core, path, expected = shared_core
    qc = open_fake(core.path, [SHARED])
    with qc:
        result = extract(qc, tmp_path / "vmcore", vmcoreinfo=False)
    assert [u.path for u in result.backing] == [str(path)]
    data = (tmp_path / "vmcore").read_bytes()
    assert data[-HI_SIZE:] == expected
    (line,) = backing_lines(extract_dict(result)["backing_files"])
    assert line.startswith(f"note: guest RAM {NOT_DUMPED_GPA:#x}-{G4 + HI_SIZE:#x} ")
    assert str(path) in line


@pytest.mark.parametrize("how", ["gone", "disabled", "private", "short"])
def test_when_the_backing_file_cannot_be_used_the_ram_is_missing(shared_core, how):
    core, path, _ = shared_core
    r = replace(SHARED, shared=how != "private")
    if how == "gone":
        path.unlink()
    if how == "short":
        os.truncate(path, HI_SIZE - PAGE)
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([r], host, backing_files=how != "disabled")
        (p,) = mem.missing()
        assert (p.gpa, p.kind) == (NOT_DUMPED_GPA, PieceKind.NOT_DUMPED)
        assert mem.coverage(r) == "partial"
        if how == "private":  # a private mapping's written pages are not in its file
            assert p.path is None and mem.backing_problems == {}
            return
        assert p.path == str(path)
        problem = mem.backing_problems[str(path)]
        message = describe_missing([p], problems=mem.backing_problems)
        assert f"{NOT_DUMPED_GPA:#x}-{G4 + HI_SIZE:#x}" in message
        assert f"backing file {path} {problem}" in message
        hint = missing_hint([p], mem.backing_problems)
        assert ("--no-backing-files" in hint) == (how == "disabled")
        assert {"gone": "is gone", "disabled": "turned off", "short": "too short"}[how] in problem


def test_memfd_names_are_never_opened():
    assert backing.MEMFD_PREFIX == "/memfd:" and backing.DELETED == " (deleted)"
    files = BackingFiles()
    assert "memfd" in files.problem("/memfd:pc.ram (deleted)", 0, PAGE)
