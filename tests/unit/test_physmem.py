"""guest.physmem: guest-physical addresses over the host core, and where their bytes are."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import synth
from support.synth import G4, HI_DUMPED, HI_HVA, HI_SIZE, PAGE, R0, R1, R2, R3, RAM_HVA

from qemu_vmcore.errors import MissingMemoryError
from qemu_vmcore.guest.physmem import GuestPhysicalMemory, Piece, PieceKind, data_runs
from qemu_vmcore.host.core import open_core
from qemu_vmcore.qemu.memory import GuestRange

DATA, NOT_DUMPED, UNTOUCHED, UNMAPPED = (
    PieceKind.DATA,
    PieceKind.NOT_DUMPED,
    PieceKind.UNTOUCHED,
    PieceKind.UNMAPPED,
)


@pytest.fixture
def ram(tmp_path):
    core, ram_bytes, hi = synth.ram_core(tmp_path / "core")
    with open_core(core.path) as host:
        yield GuestPhysicalMemory([R0, R1, R2, R3], host), ram_bytes, hi


def test_ranges_and_coverage(ram):
    mem, _, _ = ram
    assert mem.ranges() == [R0, R1, R2, R3]
    # R2's second half is anonymous memory the kernel skipped: known zeros.
    assert [mem.coverage(r) for r in (R0, R1, R2, R3)] == ["yes", "yes", "yes", "no"]


def test_pieces_translate_extents_to_gpa(ram):
    mem, _, _ = ram
    (p0,) = mem.pieces(R0)
    assert (p0.gpa, p0.size, p0.kind) == (0, 0xA0000, DATA)
    (p1,) = mem.pieces(R1)
    assert p1.file_offset == p0.file_offset + 0x100000
    assert mem.pieces(R2) == [
        Piece(G4, HI_DUMPED * PAGE, DATA, mem.pieces(R2)[0].file_offset),
        Piece(G4 + HI_DUMPED * PAGE, HI_DUMPED * PAGE, UNTOUCHED, None),
    ]
    assert mem.pieces(R3) == [Piece(2 * G4, PAGE, UNMAPPED, None)]
    assert mem.pieces(R3)[0].end == 2 * G4 + PAGE


def test_missing(ram):
    mem, _, _ = ram
    assert [(p.gpa, p.size, p.kind) for p in mem.missing()] == [(2 * G4, PAGE, UNMAPPED)]


def test_ram_left_out_on_purpose_is_missing(tmp_path):
    """dump-guest-core=off (not dumpable), or file-backed RAM: not dumped, not zeros."""
    core, _, _ = synth.ram_core(tmp_path / "core")
    off = replace(R2, dumpable=False)
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([off], host)
        assert mem.coverage(off) == "partial"
        assert [(p.gpa, p.kind) for p in mem.missing()] == [(G4 + HI_DUMPED * PAGE, NOT_DUMPED)]
    core, _, _ = synth.ram_core(tmp_path / "core2", hi_file="/memfd:pc.ram (deleted)")
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([R2], host)
        assert mem.coverage(R2) == "partial"
        assert [(p.gpa, p.kind) for p in mem.missing()] == [(G4 + HI_DUMPED * PAGE, NOT_DUMPED)]


def test_piece_kinds_name_their_cause():
    assert {k.value for k in PieceKind} >= {"data", "not dumped", "truncated", "unmapped"}
    assert [k for k in PieceKind if k.present] == [DATA, UNTOUCHED, PieceKind.BACKING_FILE]


def test_read(ram):
    mem, ram_bytes, hi = ram
    assert mem.read(0, 2 * PAGE) == ram_bytes[: 2 * PAGE]
    assert mem.read(0x9F800, 0x800) == ram_bytes[0x9F800:0xA0000]
    assert mem.read(0x100000 + 34 * PAGE - 8, 16) == ram_bytes[0x100000 + 34 * PAGE - 8 :][:16]
    assert mem.read(5 * PAGE, PAGE) == bytes(PAGE)  # a hole in the core
    assert mem.read(G4 + 100, 200) == hi[100:300]
    assert mem.read(0x1234, 0) == b""


def test_read_of_untouched_ram_is_zeros_like_the_vmcore(ram):
    """coverage() says "yes" and the copy writes zeros there; read() should agree."""
    mem, _, hi = ram
    assert mem.read(G4 + HI_DUMPED * PAGE - 4, 8) == hi[-4:] + bytes(4)


@pytest.mark.parametrize(
    ("gpa", "size", "where"),
    [
        (0x9F000, 0x2000, 0xA0000),  # runs into the gap below 1 MiB
        (0xA0000, 1, 0xA0000),  # inside the gap
        (0x3FF000, 0x2000, 0x400000),  # past the end of R1
        (3 * G4, 1, 3 * G4),  # past every range
    ],
)
def test_read_outside_guest_ram(ram, gpa, size, where):
    mem, _, _ = ram
    with pytest.raises(MissingMemoryError, match="not guest RAM") as info:
        mem.read(gpa, size)
    assert info.value.context["gpa"] == where


def test_read_of_bytes_the_core_lacks(tmp_path):
    core, _, _ = synth.ram_core(tmp_path / "core")
    off = replace(R2, dumpable=False)
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([off, R3], host)
        with pytest.raises(MissingMemoryError, match="not dumped"):
            mem.read(G4 + HI_DUMPED * PAGE - 1, 2)
        with pytest.raises(MissingMemoryError, match="unmapped"):
            mem.read(2 * G4, 1)


def test_read_across_gpa_adjacent_ranges_with_different_hosts(tmp_path):
    core, ram_bytes, hi = synth.ram_core(tmp_path / "core")
    a = GuestRange(0, PAGE, RAM_HVA + 34 * PAGE, "a", "a", 1)
    b = GuestRange(PAGE, 2 * PAGE, HI_HVA, "b", "b", 2)
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([a, b], host)
        assert mem.read(PAGE - 4, 8) == ram_bytes[35 * PAGE - 4 : 35 * PAGE] + hi[:4]


# A compact map for the model test: R1 is followed directly by the HI memory.
M2 = GuestRange(0x400000, 0x400000 + HI_SIZE, HI_HVA, "hi", "hi", 2)
M3 = GuestRange(0x500000, 0x501000, 0x10000, "gone", "gone", 3)


@pytest.fixture(scope="module")
def model_mem(tmp_path_factory):
    core, ram_bytes, hi = synth.ram_core(tmp_path_factory.mktemp("model") / "core")
    host = open_core(core.path)
    yield GuestPhysicalMemory([R0, R1, M2, M3], host), ram_bytes, hi
    host.close()


def _model_byte(ram_bytes, hi, gpa):
    """The byte at ``gpa``, or None where read() must fail."""
    if gpa < R0.end:
        return ram_bytes[gpa]
    if R1.gpa <= gpa < R1.end:
        return ram_bytes[gpa]  # R1 maps pc.ram at the same offset
    if M2.gpa <= gpa < M2.end:
        off = gpa - M2.gpa
        return hi[off] if off < len(hi) else 0  # never touched: zeros
    return None


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 0x502000), st.integers(0, 0x30000))
def test_read_agrees_with_a_model(model_mem, gpa, size):
    mem, ram_bytes, hi = model_mem
    # Check the model at the bytes that decide: both ends, and every range boundary inside.
    points = {gpa, gpa + size - 1} | {
        b for r in (R0, R1, M2, M3) for b in (r.gpa, r.end - 1, r.end) if gpa <= b < gpa + size
    }
    ok = size == 0 or all(_model_byte(ram_bytes, hi, a) is not None for a in points)
    if not ok:
        with pytest.raises(MissingMemoryError):
            mem.read(gpa, size)
        return
    got = mem.read(gpa, size)
    assert len(got) == size
    for a in points:
        if size:
            assert got[a - gpa] == _model_byte(ram_bytes, hi, a), hex(a)
    if gpa + size <= R0.end or R1.gpa <= gpa and gpa + size <= R1.end:
        assert got == ram_bytes[gpa : gpa + size]


def test_read_of_truncated_ram(tmp_path):
    core, _, hi = synth.ram_core(tmp_path / "core")
    os.truncate(core.path, core.loads[1].offset + PAGE)
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([R2], host)
        assert mem.read(G4, PAGE) == hi[:PAGE]
        with pytest.raises(MissingMemoryError, match="truncated") as info:
            mem.read(G4 + PAGE - 1, 2)
        assert info.value.context["gpa"] == G4 + PAGE


def test_read_of_a_core_that_shrank_after_it_was_opened(tmp_path):
    """The pieces were planned on the whole file; a short pread is an error naming it."""
    core, _, hi = synth.ram_core(tmp_path / "core")
    with open_core(core.path) as host:
        mem = GuestPhysicalMemory([R2], host)
        assert mem.read(G4, PAGE) == hi[:PAGE]
        os.truncate(core.path, core.loads[1].offset + PAGE)
        with pytest.raises(MissingMemoryError, match="ended early at offset") as info:
            mem.read(G4 + PAGE - 1, 2)
        assert "the core" in str(info.value) and "was it truncated" in str(info.value)
        assert info.value.context["gpa"] == G4 + PAGE - 1


def test_mapping_says_where_the_bytes_are(ram):
    """Each span: output offset, source fd, source offset, size; holes left out."""
    mem, ram_bytes, hi = ram
    placements = [(R2, PAGE), (R3, PAGE + HI_SIZE), (R0, 2 * PAGE + HI_SIZE)]
    spans = list(mem.mapping(placements))
    assert all(s.size > 0 for s in spans)
    assert all(a.at + a.size <= b.at for a, b in zip(spans, spans[1:], strict=False))
    # R2's first half is data, R3 is not in the core: neither is in a span.
    assert spans[0].at == PAGE and spans[0].size == HI_DUMPED * PAGE
    assert os.pread(spans[0].fd, spans[0].size, spans[0].offset) == hi[: HI_DUMPED * PAGE]
    base = 2 * PAGE + HI_SIZE
    for s in spans[1:]:
        assert base <= s.at and s.at + s.size <= base + R0.size
        assert os.pread(s.fd, s.size, s.offset) == ram_bytes[s.at - base : s.at - base + s.size]
    # file_spans() is the mapping of every range at its own gpa.
    assert list(mem.file_spans()) == list(mem.mapping((r, r.gpa) for r in mem.ranges()))
    assert list(mem.mapping([])) == []


# -- data_runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("sparse")


def _covered(runs):
    return {b for off, n in runs for b in range(off, off + n)}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=24), st.data())
def test_data_runs_find_exactly_the_data(scratch, pages, data):
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        content = synth.sparse_file(os.path.join(d, "src"), pages)
        start = data.draw(st.integers(0, len(content) + PAGE))
        size = data.draw(st.integers(0, len(content) + PAGE - start))
        fd = os.open(os.path.join(d, "src"), os.O_RDONLY)
        try:
            runs = data_runs(fd, start, size)
        finally:
            os.close(fd)
    # Sorted, disjoint, non-empty, inside the range asked for.
    for off, n in runs:
        assert n > 0 and start <= off and off + n <= start + size
    assert all(a + n <= b for (a, n), (b, _) in zip(runs, runs[1:], strict=False))
    # They cover every data page's bytes in the range, and no whole hole page.
    for k, is_data in enumerate(pages):
        lo, hi = max(start, k * PAGE), min(start + size, (k + 1) * PAGE)
        if lo >= hi:
            continue
        inside = any(off <= lo and hi <= off + n for off, n in runs)
        touching = any(off < hi and lo < off + n for off, n in runs)
        if is_data:
            assert inside, (k, runs)
        elif lo == k * PAGE and hi == (k + 1) * PAGE:
            assert not touching, (k, runs)


def test_data_runs_of_a_file_that_is_all_hole(tmp_path):
    synth.sparse_file(tmp_path / "src", [False] * 8)
    with open(tmp_path / "src", "rb") as f:
        assert data_runs(f.fileno(), 0, 8 * PAGE) == []
        assert data_runs(f.fileno(), 100, 9 * PAGE) == []  # past the end too


def test_data_runs_clip_to_the_range(tmp_path):
    synth.sparse_file(tmp_path / "src", [True, True, False, True])
    with open(tmp_path / "src", "rb") as f:
        assert data_runs(f.fileno(), 100, PAGE) == [(100, PAGE)]
        assert data_runs(f.fileno(), PAGE + 5, 2 * PAGE) == [(PAGE + 5, PAGE - 5), (3 * PAGE, 5)]
        assert data_runs(f.fileno(), 0, 0) == []
