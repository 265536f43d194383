"""writers.elf: the ELF vmcore layout, written from a synthetic core, read back by pyelftools."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support import synth
from support.synth import HI_HVA, HI_SIZE, PAGE, R0, R1, R2, R3, RAM_HVA

from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.host.core import open_core
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.writers.elf import build_image, write_elf

NOTES = E.note_bytes(b"CORE", E.NT_PRSTATUS, bytes(range(256)) + bytes(80)) + E.note_bytes(
    b"QEMU", 0, b"\x01" * 0x1B8
)


def _write(core: Path, ranges, image, out: Path) -> list[int]:
    """Write ``image`` of ``ranges`` (read from ``core``) to a new file ``out``;
    return the progress callbacks' byte counts."""
    done: list[int] = []
    with open_core(core) as host:
        mem = GuestPhysicalMemory(ranges, host)
        fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_elf(fd, image, mem, done.append)
        finally:
            os.close(fd)
    return done


def expected_bytes(r: GuestRange, ram: bytes, hi: bytes) -> bytes:
    """What guest RAM ``r`` holds according to the synthetic core (zeros where absent)."""
    if r.hva >= RAM_HVA and r.hva < RAM_HVA + len(ram):
        return ram[r.hva - RAM_HVA :][: r.size]
    if r.hva == HI_HVA:
        return (hi + bytes(r.size))[: r.size]
    return bytes(r.size)


def write_vmcore(tmp_path, ranges, *, elf=E.ELF64LE, machine=E.EM_X86_64, notes=NOTES):
    core, ram, hi = synth.ram_core(tmp_path / "core")
    image = build_image(ranges, notes, elf=elf, machine=machine)
    out = tmp_path / "vmcore"
    done = _write(core.path, ranges, image, out)
    return core, ram, hi, image, out, done


@pytest.fixture
def elf64(tmp_path):
    return write_vmcore(tmp_path, [R0, R1, R2, R3])


def test_elf64_header(elf64):
    *_, image, out, _ = elf64
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf.little_endian
        assert elf["e_type"] == "ET_CORE"
        assert elf["e_machine"] == "EM_X86_64"
        assert elf["e_version"] == "EV_CURRENT"
        assert elf["e_phoff"] == 64
        assert elf["e_ehsize"] == 64 and elf["e_phentsize"] == 56
        assert elf["e_phnum"] == 5
        assert (elf["e_shoff"], elf["e_shnum"], elf["e_shentsize"]) == (0, 0, 0)
    assert os.path.getsize(out) == image.file_size


def test_elf64_notes_come_first(elf64):
    *_, out, _ = elf64
    with open(out, "rb") as f:
        elf = ELFFile(f)
        note = elf.get_segment(0)
        assert note["p_type"] == "PT_NOTE"
        assert note["p_offset"] == 64 + 5 * 56
        assert note["p_filesz"] == len(NOTES)
        assert [n["n_name"] for n in note.iter_notes()] == ["CORE", "QEMU"]
        f.seek(note["p_offset"])
        assert f.read(len(NOTES)) == NOTES


def test_elf64_one_load_per_range(elf64):
    _, ram, hi, image, out, _ = elf64
    ranges = [R0, R1, R2, R3]
    with open(out, "rb") as f:
        elf = ELFFile(f)
        loads = list(elf.iter_segments(type="PT_LOAD"))
        assert len(loads) == len(ranges)
        for seg, r, place in zip(loads, ranges, image.placements, strict=True):
            assert place.range == r
            assert seg["p_paddr"] == seg["p_vaddr"] == r.gpa
            assert seg["p_filesz"] == seg["p_memsz"] == r.size
            assert seg["p_offset"] == place.file_offset
            assert seg["p_offset"] % PAGE == 0
            assert seg["p_flags"] == 0 and seg["p_align"] == 0
            assert seg.data() == expected_bytes(r, ram, hi), hex(r.gpa)
    # Guest RAM starts right after the headers, rounded up to a page; ranges are packed.
    head = 64 + 5 * 56 + len(NOTES)
    assert image.placements[0].file_offset == E.align_up(head, PAGE)
    assert image.file_size == image.placements[-1].file_offset + R3.size
    assert image.head[:4] == E.ELFMAG and len(image.head) == head


def test_elf64_progress_counts_every_guest_byte(elf64):
    *_, done = elf64
    assert sum(done) == R0.size + R1.size + R2.size + R3.size
    assert all(n >= 0 for n in done)


def test_holes_in_the_core_stay_holes(elf64):
    core, _, _, image, out, _ = elf64
    # The source is sparse: 4 MiB of "pc.ram" with five pages of data.
    assert synth.allocated_bytes(core.path) < 64 * PAGE
    assert synth.allocated_bytes(out) <= synth.allocated_bytes(core.path) + 2 * PAGE
    assert image.file_size > 40 * synth.allocated_bytes(out)
    r0 = image.placements[0].file_offset
    with open(out, "rb") as f:
        # In R0, pages 0, 1 and 34 hold data; 2..33 were holes in the core.
        assert os.lseek(f.fileno(), r0 + 2 * PAGE, os.SEEK_DATA) == r0 + 34 * PAGE
        assert os.lseek(f.fileno(), r0, os.SEEK_HOLE) == r0 + 2 * PAGE


def test_our_vmcore_is_a_core_hostcore_can_read(elf64):
    _, ram, hi, _, out, _ = elf64
    with open_core(out) as c:
        assert [(s.hva, s.end, s.file_size) for s in c.segments] == [
            (r.gpa, r.end, r.size) for r in (R0, R1, R2, R3)
        ]
        assert not c.truncated
        assert (
            c.read(R1.gpa + 33 * PAGE, 3 * PAGE)
            == expected_bytes(R1, ram, hi)[33 * PAGE : 36 * PAGE]
        )
        assert c.read(R2.gpa, HI_SIZE) == hi + bytes(HI_SIZE - len(hi))


def test_elf32(tmp_path):
    _, ram, hi, image, out, done = write_vmcore(tmp_path, [R0, R1], elf=E.ELF32LE, machine=E.EM_386)
    assert sum(done) == R0.size + R1.size
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 32
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_386"
        assert elf["e_phoff"] == 52 and elf["e_ehsize"] == 52 and elf["e_phentsize"] == 32
        assert elf["e_phnum"] == 3
        segs = list(elf.iter_segments())
        assert segs[0]["p_type"] == "PT_NOTE"
        assert (segs[0]["p_offset"], segs[0]["p_filesz"]) == (52 + 3 * 32, len(NOTES))
        for seg, r, place in zip(segs[1:], [R0, R1], image.placements, strict=True):
            assert seg["p_type"] == "PT_LOAD"
            assert seg["p_paddr"] == seg["p_vaddr"] == r.gpa
            assert seg["p_filesz"] == seg["p_memsz"] == r.size
            assert seg["p_offset"] == place.file_offset and seg["p_offset"] % PAGE == 0
            assert seg["p_flags"] == 0 and seg["p_align"] == 0
            assert seg.data() == expected_bytes(r, ram, hi)


def test_no_ranges():
    image = build_image([], NOTES)
    assert image.placements == []
    assert image.file_size == PAGE
    elf = ELFFile(io.BytesIO(image.head.ljust(image.file_size, b"\0")))
    assert elf.num_segments() == 1 and elf.get_segment(0)["p_type"] == "PT_NOTE"


# -- extended numbering -------------------------------------------------------------------


def _ranges(n: int) -> list[GuestRange]:
    return [GuestRange(k << 16, (k << 16) + 16, RAM_HVA + 16 * k, "b", "r", 1) for k in range(n)]


@pytest.mark.parametrize(("n", "xnum"), [(65_533, False), (65_534, True)])
def test_pn_xnum_starts_at_65535_headers(n, xnum):
    image = build_image(_ranges(n), NOTES)
    ehdr = E.ELF64LE.ehdr.unpack_from(image.head)
    if xnum:
        assert ehdr.phnum == E.PN_XNUM
        assert (ehdr.shnum, ehdr.shentsize) == (1, 64)
        assert ehdr.shoff == 64 + (n + 1) * 56
        assert E.ELF64LE.shdr.unpack_from(image.head, ehdr.shoff).info == n + 1
    else:
        assert ehdr.phnum == n + 1
        assert (ehdr.shoff, ehdr.shnum, ehdr.shentsize) == (0, 0, 0)


def test_pn_xnum_elf32_header():
    n = 70_000
    image = build_image(
        [GuestRange(k << 12, (k << 12) + 16, 0, "b", "r", 1) for k in range(n)],
        NOTES,
        elf=E.ELF32LE,
        machine=E.EM_386,
    )
    ehdr = E.ELF32LE.ehdr.unpack_from(image.head)
    assert (ehdr.phnum, ehdr.shentsize, ehdr.shnum) == (E.PN_XNUM, 40, 1)
    shoff = ehdr.shoff
    assert shoff == 52 + (n + 1) * 32
    assert E.ELF32LE.shdr.unpack_from(image.head, shoff).info == n + 1
    notes_at = shoff + 40
    assert image.head[notes_at:] == NOTES
    elf = ELFFile(io.BytesIO(image.head))
    assert elf.num_segments() == n + 1
    last = elf.get_segment(n)
    assert (last["p_paddr"], last["p_filesz"]) == ((n - 1) << 12, 16)


XNUM_RANGES = 70_000


@pytest.fixture(scope="module")
def xnum_vmcore(tmp_path_factory):
    d = tmp_path_factory.mktemp("xnum")
    payload = synth.pattern(16 * XNUM_RANGES, seed=5)
    core = synth.write_core(d / "core", [synth.Load(RAM_HVA, payload)])
    ranges = _ranges(XNUM_RANGES)
    image = build_image(ranges, NOTES)
    out = d / "vmcore"
    done = _write(core.path, ranges, image, out)
    return payload, ranges, image, out, done


def test_pn_xnum_vmcore_header(xnum_vmcore):
    *_, out, done = xnum_vmcore
    assert sum(done) == 16 * XNUM_RANGES
    with open(out, "rb") as f:
        ehdr = E.ELF64LE.ehdr.unpack(f.read(64))
        assert ehdr.phnum == E.PN_XNUM and ehdr.phoff == 64
        assert ehdr.shnum == 1 and ehdr.shoff == 64 + (XNUM_RANGES + 1) * 56
        f.seek(ehdr.shoff)
        sh0 = E.ELF64LE.shdr.unpack(f.read(64))
        assert sh0.type == 0  # SHT_NULL
        assert sh0.info == XNUM_RANGES + 1  # the real phnum
        f.seek(0)
        elf = ELFFile(f)
        assert elf["e_phnum"] == E.PN_XNUM
        assert elf.num_segments() == XNUM_RANGES + 1
        assert elf.get_segment(0)["p_type"] == "PT_NOTE"
        last = elf.get_segment(XNUM_RANGES)
        assert last["p_type"] == "PT_LOAD"
        assert last["p_paddr"] == (XNUM_RANGES - 1) << 16


def test_pn_xnum_vmcore_every_load(xnum_vmcore):
    payload, ranges, image, out, _ = xnum_vmcore
    raw = out.read_bytes()
    phdrs = list(E.ELF64LE.phdr.iter_unpack(raw[64 : 64 + (XNUM_RANGES + 1) * 56]))
    assert phdrs[0].type == E.PT_NOTE
    loads = phdrs[1:]
    assert all(p.type == E.PT_LOAD for p in loads)
    assert [p.paddr for p in loads] == [r.gpa for r in ranges]
    assert all(p.vaddr == p.paddr and p.filesz == p.memsz == 16 for p in loads)
    first = loads[0].offset
    assert first % PAGE == 0
    assert [p.offset for p in loads] == list(range(first, first + 16 * XNUM_RANGES, 16))
    assert raw[first:] == payload
    assert len(raw) == image.file_size


def test_pn_xnum_vmcore_reads_back_with_hostcore(xnum_vmcore):
    payload, ranges, _, out, _ = xnum_vmcore
    with open_core(out) as c:
        assert len(c.segments) == XNUM_RANGES
        for k in (0, 65_533, 65_534, XNUM_RANGES - 1):
            assert c.read(ranges[k].gpa, 16) == payload[16 * k : 16 * k + 16]
