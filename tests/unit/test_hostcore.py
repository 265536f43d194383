"""hostcore: parsing ELF process cores and translating host addresses to file bytes."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import synth
from support.synth import BUILD_ID, EXE, EXE_BASE, LIBC, LIBC_BASE, PAGE, FileEntry, Load

from qemu_vmcore.errors import CoreFileError, MissingMemoryError
from qemu_vmcore.host.core import (
    MAX_SEGMENTS,
    CoreSegment,
    Extent,
    ExtentKind,
    FileMapping,
    ProcessInfo,
    open_core,
    parse_nt_file,
)
from qemu_vmcore.host.executable import read_build_id
from qemu_vmcore.layouts import elf as E

DATA, NOT_DUMPED, TRUNCATED, UNMAPPED = (
    ExtentKind.DATA,
    ExtentKind.NOT_DUMPED,
    ExtentKind.TRUNCATED,
    ExtentKind.UNMAPPED,
)

# -- a layout used by most tests ---------------------------------------------------
#
#   A  0x10000-0x14000  4 pages dumped, page 1 all zeros (a hole in the file)
#   B  0x14000-0x17000  1 page dumped, 2 pages not dumped; file-contiguous with A
#   -- 0x17000-0x20000  unmapped
#   C  0x20000-0x22000  2 pages dumped, last in the file
#   D  0x22000-0x23000  1 page dumped, hva-adjacent to C but *before* C in the file
#   -- 0x23000-0x40000  unmapped
#   E  0x40000-0x42000  mapped, nothing dumped (filesz 0)


def _a_data() -> bytes:
    data = bytearray(synth.pattern(4 * PAGE, seed=1))
    data[PAGE : 2 * PAGE] = bytes(PAGE)
    return bytes(data)


def make_layout(path: Path) -> synth.Core:
    loads = [
        Load(0x10000, _a_data()),
        Load(0x14000, synth.pattern(PAGE, seed=2), memsz=3 * PAGE),
        Load(0x22000, synth.pattern(PAGE, seed=4)),
        Load(0x20000, synth.pattern(2 * PAGE, seed=3)),
        Load(0x40000, b"", memsz=2 * PAGE),
    ]
    notes = synth.core_notes(
        psinfo=synth.prpsinfo(
            pid=4242, uid=1001, fname=b"qemu-system-x86", args=b"qemu-system-x86_64 -m 512  "
        ),
        files=[
            FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE),
            FileEntry(EXE_BASE + PAGE, EXE_BASE + 3 * PAGE, 1, EXE),
            FileEntry(LIBC_BASE, LIBC_BASE + 2 * PAGE, 0, LIBC),
        ],
        aux={E.AT_PHDR: EXE_BASE + 64, E.AT_ENTRY: EXE_BASE + 0x1230, synth.AT_PHNUM: 4},
    )
    return synth.write_core(path, loads, notes)


@pytest.fixture
def layout(tmp_path):
    return make_layout(tmp_path / "core")


@pytest.fixture
def core(layout):
    with open_core(layout.path) as c:
        yield c


def load_at(layout: synth.Core, vaddr: int) -> Load:
    return next(ld for ld in layout.loads if ld.vaddr == vaddr)


# -- segments and extents -------------------------------------------------------------


def test_segments_are_the_pt_loads_sorted_by_address(core, layout):
    assert [(s.hva, s.end, s.file_size) for s in core.segments] == [
        (0x10000, 0x14000, 0x4000),
        (0x14000, 0x17000, 0x1000),
        (0x20000, 0x22000, 0x2000),
        (0x22000, 0x23000, 0x1000),
        (0x40000, 0x42000, 0),
    ]
    assert core.segments[0] == CoreSegment(
        0x10000, 0x14000, load_at(layout, 0x10000).offset, 0x4000, synth.PF_R | synth.PF_W
    )
    assert core.file_size == layout.size == os.path.getsize(layout.path)
    assert not core.truncated
    assert core.expected_size == layout.size


def test_the_layout_really_has_a_file_hole(layout):
    a = load_at(layout, 0x10000)
    with open(layout.path, "rb") as f:
        assert os.lseek(f.fileno(), a.offset + PAGE, os.SEEK_DATA) == a.offset + 2 * PAGE


def test_extents_merge_file_contiguous_segments(core, layout):
    a = load_at(layout, 0x10000)
    assert core.extents(0x10000, 0x7000) == [
        Extent(0x10000, 0x5000, DATA, a.offset),  # A and B, one run in the file
        Extent(0x15000, 0x2000, NOT_DUMPED),
    ]


def test_extents_before_the_first_segment_are_unmapped(core, layout):
    a = load_at(layout, 0x10000)
    assert core.extents(0x8000, 0x9000) == [
        Extent(0x8000, 0x8000, UNMAPPED),
        Extent(0x10000, 0x1000, DATA, a.offset),
    ]
    assert core.extents(0, 0x100) == [Extent(0, 0x100, UNMAPPED)]


def test_extents_across_a_gap_and_file_discontiguous_neighbours(core, layout):
    c, d = load_at(layout, 0x20000), load_at(layout, 0x22000)
    assert c.offset != d.offset - 2 * PAGE  # C is after D in the file
    assert core.extents(0x16000, 0xE000) == [
        Extent(0x16000, 0x1000, NOT_DUMPED),
        Extent(0x17000, 0x9000, UNMAPPED),
        Extent(0x20000, 0x2000, DATA, c.offset),
        Extent(0x22000, 0x1000, DATA, d.offset),  # not merged: file offsets jump
        Extent(0x23000, 0x1000, UNMAPPED),
    ]


def test_extents_after_the_last_segment(core):
    assert core.extents(0x41000, 0x3000) == [
        Extent(0x41000, 0x1000, NOT_DUMPED),
        Extent(0x42000, 0x2000, UNMAPPED),
    ]


def test_extents_inside_one_segment_and_empty_range(core, layout):
    a = load_at(layout, 0x10000)
    assert core.extents(0x11800, 0x100) == [Extent(0x11800, 0x100, DATA, a.offset + 0x1800)]
    assert core.extents(0x11800, 0) == []
    assert core.extents(0x14FFF, 2) == [
        Extent(0x14FFF, 1, DATA, load_at(layout, 0x14000).offset + 0xFFF),
        Extent(0x15000, 1, NOT_DUMPED),
    ]


def test_extent_end():
    assert Extent(0x1000, 0x234, DATA, 0).end == 0x1234


def test_read_across_segments_and_a_hole(core):
    a = _a_data()
    b = synth.pattern(PAGE, seed=2)
    assert core.read(0x10000, 0x4000) == a
    assert core.read(0x11000, PAGE) == bytes(PAGE)  # the file hole reads as zeros
    assert core.read(0x13800, 0x1000) == a[0x3800:] + b[:0x800]
    assert core.read(0x21F00, 0x200) == (
        synth.pattern(2 * PAGE, seed=3)[-0x100:] + synth.pattern(PAGE, seed=4)[:0x100]
    )
    assert core.read(0x12345, 0) == b""


@pytest.mark.parametrize(
    ("hva", "size", "kind", "where"),
    [
        (0x14800, 0x1000, NOT_DUMPED, 0x15000),
        (0x16F00, 0x200, NOT_DUMPED, 0x16F00),
        (0x1F000, 0x2000, UNMAPPED, 0x1F000),
        (0x40000, 1, NOT_DUMPED, 0x40000),
        (0x50000, 1, UNMAPPED, 0x50000),
    ],
)
def test_read_of_missing_bytes_raises(core, hva, size, kind, where):
    with pytest.raises(MissingMemoryError) as info:
        core.read(hva, size)
    assert info.value.context["kind"] is kind
    assert info.value.context["hva"] == where
    assert f"{where:#x}" in info.value.message and kind.value in info.value.message


def test_read_after_the_file_shrank_raises(layout):
    with open_core(layout.path) as c:
        os.truncate(layout.path, load_at(layout, 0x20000).offset + 0x10)
        with pytest.raises(MissingMemoryError, match="short read"):
            c.read(0x20000, 0x100)


# -- truncated cores ------------------------------------------------------------------


def test_truncated_inside_the_last_segment(layout):
    c_load = load_at(layout, 0x20000)
    os.truncate(layout.path, c_load.offset + 0x800)
    with open_core(layout.path) as c:
        assert c.truncated
        assert c.expected_size == layout.size
        assert c.file_size == c_load.offset + 0x800
        assert c.extents(0x20000, 0x3000) == [
            Extent(0x20000, 0x800, DATA, c_load.offset),
            Extent(0x20800, 0x1800, TRUNCATED),
            Extent(0x22000, 0x1000, DATA, load_at(layout, 0x22000).offset),
        ]
        assert c.read(0x20000, 0x800) == synth.pattern(2 * PAGE, seed=3)[:0x800]
        with pytest.raises(MissingMemoryError) as info:
            c.read(0x20000, 0x801)
        assert info.value.context["kind"] is TRUNCATED


def test_truncated_inside_a_partly_dumped_segment(layout):
    b = load_at(layout, 0x14000)
    os.truncate(layout.path, b.offset + 0x100)
    with open_core(layout.path) as c:
        assert c.truncated
        assert c.extents(0x14000, 0x3000) == [
            Extent(0x14000, 0x100, DATA, b.offset),
            Extent(0x14100, 0xF00, TRUNCATED),
            Extent(0x15000, 0x2000, NOT_DUMPED),
        ]
        # Segments entirely past the end of the file are truncated as a whole.
        assert c.extents(0x20000, 0x3000) == [Extent(0x20000, 0x3000, TRUNCATED)]
        # A segment with nothing dumped is never "truncated".
        assert c.extents(0x40000, 0x2000) == [Extent(0x40000, 0x2000, NOT_DUMPED)]


def test_truncated_by_one_byte_but_not_at_the_exact_size(layout):
    os.truncate(layout.path, layout.size - 1)
    with open_core(layout.path) as c:
        assert c.truncated
        assert c.expected_size == layout.size
    os.truncate(layout.path, layout.size)
    with open_core(layout.path) as c:
        assert not c.truncated


def test_truncated_inside_the_program_headers(layout):
    os.truncate(layout.path, 64 + 2 * E.ELF64LE.phdr.size + 5)
    with pytest.raises(CoreFileError, match="truncated core"):
        open_core(layout.path)


# -- notes --------------------------------------------------------------------------


def test_notes_are_parsed(core):
    assert core.process == ProcessInfo(
        pid=4242, uid=1001, fname="qemu-system-x86", args="qemu-system-x86_64 -m 512"
    )
    assert core.mappings == [
        FileMapping(EXE_BASE, EXE_BASE + PAGE, 0, EXE),
        FileMapping(EXE_BASE + PAGE, EXE_BASE + 3 * PAGE, PAGE, EXE),
        FileMapping(LIBC_BASE, LIBC_BASE + 2 * PAGE, 0, LIBC),
    ]
    assert core.auxv == {
        E.AT_PHDR: EXE_BASE + 64,
        E.AT_ENTRY: EXE_BASE + 0x1230,
        synth.AT_PHNUM: 4,
    }


def test_executable_comes_from_at_phdr_not_the_first_mapping(tmp_path):
    notes = synth.core_notes(
        files=[
            FileEntry(LIBC_BASE - 0x10000, LIBC_BASE - 0xF000, 0, "/lib/ld.so"),
            FileEntry(EXE_BASE + 2 * PAGE, EXE_BASE + 3 * PAGE, 2, EXE),
            FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE),
        ],
        aux={E.AT_PHDR: EXE_BASE + 64},
    )
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    with open_core(core.path) as c:
        assert c.executable == EXE
        assert c.executable_base == EXE_BASE
        assert c.mapping_at(EXE_BASE + PAGE) is None
        assert c.mapping_at(EXE_BASE + 2 * PAGE).file_offset == 2 * PAGE


def test_executable_falls_back_to_the_first_mapping(tmp_path):
    notes = synth.core_notes(
        files=[FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE), FileEntry(1 << 40, 1 << 41, 0, "x")],
        aux={E.AT_ENTRY: EXE_BASE + 0x10},  # no AT_PHDR
    )
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    with open_core(core.path) as c:
        assert c.executable == EXE


@pytest.mark.parametrize(
    ("aux", "needle"),
    [
        ({E.AT_PHDR: 5}, "AT_PHDR 0x5 lies in no file mapping"),
        ({E.AT_PHDR: EXE_BASE + 64, E.AT_ENTRY: 2**64 - 1}, "AT_ENTRY 0xffffffffffffffff"),
        ({E.AT_PHDR: EXE_BASE + 64, E.AT_ENTRY: (1 << 40) + 8}, f"AT_PHDR is in {EXE} but"),
    ],
)
def test_an_auxv_outside_the_executable_is_corrupt(tmp_path, aux, needle):
    """drgn would take such values for the load bias and then find "no debug info"."""
    notes = synth.core_notes(
        files=[FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE), FileEntry(1 << 40, 1 << 41, 0, "x")],
        aux=aux,
    )
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    with pytest.raises(CoreFileError, match="corrupt NT_AUXV note") as e:
        open_core(core.path)
    assert needle in str(e.value)


def test_no_notes_at_all(tmp_path):
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"abc")])
    with open_core(core.path) as c:
        assert c.process is None and c.mappings == [] and c.auxv == {}
        assert c.executable is None and c.executable_base is None
        assert c.executable_build_id() is None
        assert c.read(0x1000, 3) == b"abc"


def test_auxv_stops_at_at_null_and_keeps_the_first_value(tmp_path):
    desc = synth.auxv([(E.AT_PHDR, 0x1040), (E.AT_ENTRY, 0x2000), (E.AT_PHDR, 0x9999)])
    desc += (
        E.ELF64LE.auxv.pack(type=E.AT_EXECFN, val=0x7777) + b"\x01\x02\x03"
    )  # after AT_NULL; ragged end
    notes = E.note_bytes(b"CORE", E.NT_AUXV, desc)
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    with open_core(core.path) as c:
        assert c.auxv == {E.AT_PHDR: 0x1040, E.AT_ENTRY: 0x2000}


def test_notes_of_other_owners_and_short_prpsinfo_are_ignored(tmp_path):
    notes = (
        E.note_bytes(b"LINUX", E.NT_FILE, synth.nt_file([FileEntry(0, PAGE, 0, "/nope")]))
        + E.note_bytes(b"CORE", E.NT_PRPSINFO, synth.prpsinfo()[:-1])
        + E.note_bytes(b"CORE", E.NT_FILE, synth.nt_file([FileEntry(0, PAGE, 3, "/yes")]))
    )
    core = synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], notes)
    with open_core(core.path) as c:
        assert c.process is None
        assert c.mappings == [FileMapping(0, PAGE, 3 * PAGE, "/yes")]


def test_unsaved_file_ranges_are_the_read_only_parts_left_out(tmp_path):
    b, r, rx, rw = EXE_BASE, synth.PF_R, synth.PF_R | synth.PF_X, synth.PF_R | synth.PF_W
    loads = [
        Load(b, synth.pattern(PAGE), flags=r),  # ELF header page: dumped
        Load(b + PAGE, b"", memsz=2 * PAGE, flags=rx),  # .text: left out
        Load(b + 3 * PAGE, b"", memsz=PAGE, flags=r),  # .rodata: left out
        Load(b + 4 * PAGE, b"", memsz=PAGE, flags=rw),  # never-written .data: writable
        Load(b + 5 * PAGE, synth.pattern(PAGE, 2), flags=rw),  # written .data: dumped
        Load(b + 6 * PAGE, synth.pattern(PAGE, 3), memsz=2 * PAGE, flags=r),  # half dumped
        Load(LIBC_BASE, b"", memsz=PAGE, flags=rx),  # another file
    ]
    files = [FileEntry(b + k * PAGE, b + (k + 1) * PAGE, k, EXE) for k in range(8)]
    files[1:3] = [FileEntry(b + PAGE, b + 3 * PAGE, 1, EXE)]
    files += [
        FileEntry(LIBC_BASE, LIBC_BASE + PAGE, 0, LIBC),
        FileEntry(b + 20 * PAGE, b + 21 * PAGE, 20, EXE),  # mapped, but no PT_LOAD
    ]
    core = synth.write_core(tmp_path / "core", loads, synth.core_notes(files=files))
    with open_core(core.path) as c:
        assert c.unsaved_file_ranges(EXE) == [
            FileMapping(b + PAGE, b + 3 * PAGE, PAGE, EXE),
            FileMapping(b + 3 * PAGE, b + 4 * PAGE, 3 * PAGE, EXE),
            FileMapping(b + 7 * PAGE, b + 8 * PAGE, 7 * PAGE, EXE),
        ]
        assert c.unsaved_file_ranges(LIBC) == [FileMapping(LIBC_BASE, LIBC_BASE + PAGE, 0, LIBC)]
        assert c.unsaved_file_ranges("/nope") == []


def test_unsaved_file_ranges_of_a_core_without_segments(tmp_path):
    """Found by bench/fuzz.py (hostcore): NT_FILE names the executable but no
    PT_LOAD is left (corrupt p_type or p_memsz 0); the segment lookup indexed
    an empty list and raised IndexError."""
    notes = synth.core_notes(files=[FileEntry(EXE_BASE, EXE_BASE + PAGE, 0, EXE)])
    core = synth.write_core(tmp_path / "core", [], notes)
    with open_core(core.path) as c:
        assert c.segments == [] and c.executable == EXE
        assert c.unsaved_file_ranges(EXE) == []


# -- the executable's build-id ----------------------------------------------------------


def build_id_core(tmp_path: Path, *, dumped=True, aux=None, **page_kw) -> Path:
    page, phnum = synth.fake_executable_page(BUILD_ID, **page_kw)
    loads = [
        Load(LIBC_BASE, synth.pattern(PAGE)),
        Load(EXE_BASE, page if dumped else b"", memsz=PAGE),
        Load(EXE_BASE + PAGE, synth.pattern(PAGE, 7)),
    ]
    if aux is None:
        aux = {E.AT_PHDR: EXE_BASE + 64, synth.AT_PHNUM: phnum}
    notes = synth.core_notes(files=[FileEntry(EXE_BASE, EXE_BASE + 2 * PAGE, 0, EXE)], aux=aux)
    return synth.write_core(tmp_path / "core", loads, notes).path


def test_executable_build_id_from_the_in_memory_headers(tmp_path):
    with open_core(build_id_core(tmp_path)) as c:
        assert c.executable_build_id() == BUILD_ID


def test_executable_build_id_with_phdrs_elsewhere_in_the_page(tmp_path):
    path = build_id_core(
        tmp_path, phdr_vaddr=0x100, aux={E.AT_PHDR: EXE_BASE + 0x100, synth.AT_PHNUM: 4}
    )
    with open_core(path) as c:
        assert c.executable_build_id() == BUILD_ID


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"dumped": False}, "the first page was not dumped"),
        ({"aux": {E.AT_PHDR: EXE_BASE + 64}}, "no AT_PHNUM"),
        ({"aux": {synth.AT_PHNUM: 4}}, "no AT_PHDR"),
        ({"aux": {E.AT_PHDR: EXE_BASE + 64, synth.AT_PHNUM: 257}}, "implausible AT_PHNUM"),
        ({"aux": {E.AT_PHDR: EXE_BASE + 64, synth.AT_PHNUM: 0}}, "AT_PHNUM 0"),
        ({"with_pt_phdr": False, "aux": {E.AT_PHDR: EXE_BASE + 64, synth.AT_PHNUM: 3}}, "PT_PHDR"),
    ],
)
def test_executable_build_id_is_none_when_unavailable(tmp_path, kw, why):
    with open_core(build_id_core(tmp_path, **kw)) as c:
        assert c.executable_build_id() is None, why


# -- extended numbering (PN_XNUM) ----------------------------------------------------------

XNUM_LOADS = 70_000


@pytest.fixture(scope="module")
def xnum_core(tmp_path_factory):
    loads = [Load(0x100_0000 + k * 0x2000, k.to_bytes(8, "little") * 2) for k in range(XNUM_LOADS)]
    notes = synth.core_notes(psinfo=synth.prpsinfo(pid=77, fname=b"big"))
    return synth.write_core(tmp_path_factory.mktemp("xnum") / "core", loads, notes, align=16)


def test_pn_xnum_core(xnum_core):
    with open(xnum_core.path, "rb") as f:
        assert E.ELF64LE.ehdr.unpack(f.read(E.ELF64LE.ehdr.size)).phnum == E.PN_XNUM
    with open_core(xnum_core.path) as c:
        assert len(c.segments) == XNUM_LOADS
        assert c.process.pid == 77 and c.process.fname == "big"
        last = c.segments[-1]
        assert last.hva == 0x100_0000 + (XNUM_LOADS - 1) * 0x2000
        assert last.file_offset == xnum_core.loads[-1].offset
        assert c.extents(last.hva, PAGE) == [
            Extent(last.hva, 16, DATA, last.file_offset),
            Extent(last.hva + 16, PAGE - 16, UNMAPPED),
        ]
        for k in (0, 1, 65_534, 65_535, XNUM_LOADS - 1):
            assert c.read(0x100_0000 + k * 0x2000, 16) == k.to_bytes(8, "little") * 2


def _xnum_header_core(tmp_path: Path, *, shoff: int, sh_info: int | None) -> Path:
    path = tmp_path / "core"
    phdr = E.ELF64LE.phdr.pack(
        type=E.PT_LOAD,
        flags=E.PF_R | E.PF_W,
        offset=0x1000,
        vaddr=0x1000,
        filesz=1,
        memsz=1,
        align=PAGE,
    )
    data = bytearray(synth.ehdr64(phnum=E.PN_XNUM, shoff=shoff, shnum=1) + phdr)
    if sh_info is not None:
        data += E.ELF64LE.shdr.pack(info=sh_info)
    path.write_bytes(bytes(data.ljust(0x1001, b"\1")))
    return path


def test_pn_xnum_with_one_header_in_section_0(tmp_path):
    path = _xnum_header_core(tmp_path, shoff=64 + 56, sh_info=1)
    with open_core(path) as c:
        assert [(s.hva, s.file_size) for s in c.segments] == [(0x1000, 1)]


@pytest.mark.parametrize(
    ("shoff", "sh_info", "message"),
    [
        (0, 1, "section 0 is missing"),
        (0x100000, 1, "section 0 is missing"),
        (64 + 56, MAX_SEGMENTS + 1, "corrupt ELF header"),
        (64 + 56, 1000, "truncated core"),
    ],
)
def test_pn_xnum_errors(tmp_path, shoff, sh_info, message):
    with pytest.raises(CoreFileError, match=message) as info:
        open_core(_xnum_header_core(tmp_path, shoff=shoff, sh_info=sh_info))
    assert "\n" not in str(info.value)


# -- bad inputs ---------------------------------------------------------------------------


def assert_core_error(path, *needles: str) -> CoreFileError:
    with pytest.raises(CoreFileError) as info:
        open_core(path)
    err = info.value
    assert "\n" not in err.message and err.message == str(err)
    assert str(path) in err.message
    for needle in needles:
        assert needle in err.message, (needle, err.message)
    assert err.exit_code == 2
    return err


def test_missing_path(tmp_path):
    err = assert_core_error(tmp_path / "nope", "no such file")
    assert err.context["path"] == tmp_path / "nope"


def test_directory(tmp_path):
    assert_core_error(tmp_path, "is a directory")


def test_character_device():
    assert_core_error(Path("/dev/null"), "not a regular file")


def test_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert_core_error(tmp_path / "empty", "not an ELF file")


def test_random_bytes(tmp_path):
    (tmp_path / "random").write_bytes(synth.pattern(10_000, seed=9))
    assert_core_error(tmp_path / "random", "not an ELF file")


def test_an_executable_is_not_a_core():
    exe = Path("/bin/true")
    if not exe.exists():
        pytest.skip("no /bin/true")
    assert_core_error(exe, "executable", "not a core file")


def test_et_exec(tmp_path):
    (tmp_path / "exe").write_bytes(synth.ehdr64(phnum=0, elf_type=E.ET_EXEC))
    assert_core_error(tmp_path / "exe", "an executable, not a core file")


def test_unknown_elf_type(tmp_path):
    (tmp_path / "rel").write_bytes(synth.ehdr64(phnum=0, elf_type=1))
    assert_core_error(tmp_path / "rel", "ELF type 1, not a core file")


def test_elf32(tmp_path):
    head = E.ELF32LE.ehdr.pack(
        ident=E.ident(E.ELFCLASS32), type=E.ET_CORE, machine=E.EM_386, version=E.EV_CURRENT,
        phoff=52, ehsize=52, phentsize=32,
    )  # fmt: skip
    (tmp_path / "core32").write_bytes(head + bytes(200))
    assert_core_error(tmp_path / "core32", "not a 64-bit little-endian ELF file")


def test_big_endian(tmp_path):
    head = bytearray(synth.ehdr64(phnum=0))
    head[5] = 2  # ELFDATA2MSB
    (tmp_path / "core").write_bytes(bytes(head))
    assert_core_error(tmp_path / "core", "not a 64-bit little-endian ELF file")


def test_header_cut_short(tmp_path):
    (tmp_path / "core").write_bytes(synth.ehdr64(phnum=0)[:40])
    assert_core_error(tmp_path / "core", "not a 64-bit little-endian ELF file")


def test_other_machine(tmp_path):
    synth.write_core(tmp_path / "core", [Load(0x1000, b"x")], machine=E.EM_386)
    assert_core_error(tmp_path / "core", "machine 3", "only x86_64")


def test_corrupt_phnum(layout):
    raw = bytearray(layout.path.read_bytes())
    struct.pack_into("<H", raw, 56, 0xFFF0)  # e_phnum
    layout.path.write_bytes(bytes(raw))
    assert_core_error(layout.path, "truncated core", "program headers")


def test_corrupt_phentsize(layout):
    raw = bytearray(layout.path.read_bytes())
    struct.pack_into("<H", raw, 54, 32)  # e_phentsize
    layout.path.write_bytes(bytes(raw))
    assert_core_error(layout.path, "corrupt ELF header")


def test_unreadable_file(layout):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    layout.path.chmod(0)
    assert_core_error(layout.path, "permission denied")


# Offsets in the headers are unsigned 64-bit; os.pread takes a signed off_t. An
# offset of 2**63 or more made it raise OverflowError, one just below 2**63 plus
# the read size OSError(EINVAL): neither is a CoreFileError, so the CLI printed
# a traceback or a bare "error: Invalid argument".


@pytest.mark.parametrize("phoff", [2**63 + 64, 2**64 - 1, 2**63 - 8])
def test_huge_e_phoff_is_a_core_file_error(layout, phoff):
    raw = bytearray(layout.path.read_bytes())
    struct.pack_into("<Q", raw, 32, phoff)  # e_phoff
    layout.path.write_bytes(bytes(raw))
    assert_core_error(layout.path, "truncated core")


@pytest.mark.parametrize("offset", [2**63, 2**64 - 4096, 2**63 - 8])
def test_huge_pt_note_offset_is_not_fatal(layout, offset):
    """Notes out of the file are no notes: an error, or a core without them."""
    raw = bytearray(layout.path.read_bytes())
    assert struct.unpack_from("<I", raw, 64)[0] == E.PT_NOTE
    struct.pack_into("<Q", raw, 64 + 8, offset)  # the PT_NOTE's p_offset
    layout.path.write_bytes(bytes(raw))
    try:
        c = open_core(layout.path)
    except CoreFileError as e:
        assert "\n" not in e.message
        return
    with c:
        assert c.process is None and c.mappings == [] and c.auxv == {}
        assert len(c.segments) == 5


def test_huge_e_shoff_with_pn_xnum_is_a_core_file_error(tmp_path):
    assert_core_error(_xnum_header_core(tmp_path, shoff=2**63 + 64, sh_info=1))


def test_fifo_is_refused_without_blocking(tmp_path):
    """open_core says "not a regular file" for a FIFO, rather than waiting for a writer.

    os.open(O_RDONLY) of a FIFO blocks until someone opens it for writing, so
    the S_ISREG check after opening is never reached.
    """
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = (
        "import sys\nfrom qemu_vmcore.host.core import open_core\n"
        "from qemu_vmcore.errors import CoreFileError\n"
        "try:\n    open_core(sys.argv[1])\nexcept CoreFileError as e:\n    print(e.message)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=5
        )
    except subprocess.TimeoutExpired:
        pytest.fail("open_core(FIFO) blocked in open() instead of raising CoreFileError")
    assert "not a regular file" in proc.stdout, proc


# -- a real core of another program ----------------------------------------------------


def test_real_core_of_sleep(sleep_core):
    path, pid = sleep_core
    exe = shutil.which("sleep")
    with open_core(path) as c:
        assert c.process.fname == "sleep"
        assert c.process.pid == pid
        assert c.process.args.endswith("sleep 100")
        assert c.process.uid == os.getuid()
        assert os.path.samefile(c.executable, exe)
        assert c.executable_base == min(m.hva for m in c.mappings if m.path == c.executable)
        assert c.auxv[E.AT_PHDR] - c.executable_base < PAGE
        expected = read_build_id(Path(exe))
        if expected is None:
            pytest.skip(f"{exe} has no build-id")
        assert c.executable_build_id() == expected
        assert not c.truncated
        assert c.read(c.executable_base, 4) == E.ELFMAG


# -- properties (hypothesis) -----------------------------------------------------------


@given(st.binary(max_size=2000))
def test_parse_nt_file_never_raises_on_garbage(desc):
    out = parse_nt_file(desc)
    assert len(out) <= max(0, (len(desc) - 16) // 24)
    assert all(m.end >= m.hva for m in out)


@given(synth.nt_entries, st.sampled_from([4096, 16384, 65536]))
def test_parse_nt_file_round_trip(entries, page_size):
    files = [FileEntry(s, s + n, pg, p) for s, n, pg, p in entries]
    out = parse_nt_file(synth.nt_file(files, page_size))
    assert out == [
        FileMapping(f.start, f.end, f.pgoff * page_size, f.path.decode("utf-8", "surrogateescape"))
        for f in files
    ]


@given(st.binary(max_size=2000))
def test_iter_notes_never_raises_on_garbage(buf):
    notes = list(E.iter_notes(buf))
    assert len(notes) <= len(buf) // E.ELF64LE.nhdr.size
    offsets = [n.offset for n in notes]
    assert offsets == sorted(set(offsets))
    for n in notes:
        assert n.offset + E.ELF64LE.nhdr.size + len(n.desc) <= len(buf)


@given(
    st.lists(
        st.tuples(
            st.binary(max_size=12).filter(lambda b: not b.endswith(b"\0")),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=64),
        ),
        max_size=20,
    )
)
def test_iter_notes_round_trip(notes):
    buf = b"".join(E.note_bytes(name, t, desc) for name, t, desc in notes)
    assert [(n.name, n.type, n.desc) for n in E.iter_notes(buf)] == notes
    # A cut anywhere yields exactly the notes that are whole before the cut.
    cut = len(buf) - 1
    if notes:
        got = list(E.iter_notes(buf[:cut]))
        assert [(n.name, n.type, n.desc) for n in got] == notes[: len(got)]
        assert len(got) >= len(notes) - 1


def test_iter_notes_limit():
    buf = E.note_bytes(b"", 0, b"") * 10
    assert len(list(E.iter_notes(buf, limit=3))) == 3
    assert len(list(E.iter_notes(buf))) == 10


def _model_kind(layout: synth.Core, file_size: int, a: int):
    """What one byte of host address space is, from the layout alone."""
    for ld in layout.loads:
        if ld.vaddr <= a < ld.end:
            off = a - ld.vaddr
            if off < ld.file_size and ld.offset + off < file_size:
                return DATA, ld.offset + off
            return (TRUNCATED, None) if off < ld.file_size else (NOT_DUMPED, None)
    return UNMAPPED, None


@pytest.fixture(scope="module")
def truncated_layout(tmp_path_factory):
    layout = make_layout(tmp_path_factory.mktemp("model") / "core")
    b = load_at(layout, 0x14000)
    cut = b.offset + 0x321
    os.truncate(layout.path, cut)
    return layout, cut


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0x8000, 0x44000), st.integers(0, 0x40000), st.booleans())
def test_extents_agree_with_a_byte_model(layout, truncated_layout, hva, size, cut):
    lay, file_size = truncated_layout if cut else (layout, layout.size)
    with open_core(lay.path) as c:
        exts = c.extents(hva, size)
    # They tile the range exactly, in order.
    assert sum(e.size for e in exts) == size
    pos = hva
    for e in exts:
        assert e.hva == pos and e.size > 0
        pos = e.end
    # Neighbours that could be merged are merged.
    for x, y in zip(exts, exts[1:], strict=False):
        mergeable = x.kind is y.kind and (
            x.kind is not DATA or x.file_offset + x.size == y.file_offset
        )
        assert not mergeable, (x, y)
    # Every extent agrees with the model at its first and last byte.
    for e in exts:
        for a in (e.hva, e.end - 1, (e.hva + e.end) // 2):
            kind, off = _model_kind(lay, file_size, a)
            assert kind is e.kind, (hex(a), e)
            if kind is DATA:
                assert off == e.file_offset + (a - e.hva)


@pytest.fixture(scope="module")
def small_core(tmp_path_factory):
    """A valid small core and where its header fields are (see synth.small_core)."""
    path = tmp_path_factory.mktemp("mut") / "core"
    base = synth.small_core(path)
    with open_core(path) as c:
        assert c.executable_build_id() == BUILD_ID  # the base case is valid
    return base


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_mutated_cores_raise_only_core_file_error(small_core, data):
    """Flipped bytes, rewritten header fields and truncation: CoreFileError or success."""
    buf = data.draw(synth.mutated_core(small_core))
    with tempfile.NamedTemporaryFile() as f:
        f.write(buf)
        f.flush()
        try:
            c = open_core(f.name)
        except CoreFileError as e:
            assert "\n" not in e.message
            return
        with c:
            # What callers do next must not blow up either.
            c.executable, c.executable_base, c.truncated, c.expected_size  # noqa: B018
            c.executable_build_id()
            for e in c.extents(0, 2**64):
                if e.kind is DATA:
                    assert len(c.read(e.hva, min(e.size, 4096))) == min(e.size, 4096)
