"""writers.kdump: kdump-compressed files, read back with an independent reader.

The guest is a synthetic core (no drgn, no QEMU) with compressible,
incompressible, zero and never-touched pages across three ranges, one of
them above 4 GiB and one ending mid-page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import synth, viewsynth
from support.kdump_reader import Kdump, unflatten
from support.synth import PAGE
from support.viewsynth import G4, HI_HVA, LO_HVA, VMCI_TEXT, page_of, vmcoreinfo

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.extract import extract
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts import kdump as K
from qemu_vmcore.plan import DumpOptions
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.writers import compress, kdump

# Fewer pages than viewsynth's guest (and a high range ending on a page): its
# own RAM, at viewsynth's host addresses.
LO_PAGES, HI_PAGES = 600, 8


def guest_ram() -> tuple[bytes, bytes]:
    """(low RAM, high RAM): text pages, random pages, and holes."""
    lo = bytearray(LO_PAGES * PAGE)
    for p in (0, 1, 2, 7, 255, 256, 257, 300, 511, 512, 599):
        lo[p * PAGE : (p + 1) * PAGE] = page_of("text", p)
    for p in (3, 4, 100, 258, 513):
        lo[p * PAGE : (p + 1) * PAGE] = page_of("random", p)
    hi = b"".join(page_of("text" if p % 2 else "random", 1000 + p) for p in range(HI_PAGES))
    return bytes(lo), hi


RANGES = [
    GuestRange(0, 0xA0000, LO_HVA, "pc.ram", "ram-below-4g", 1),
    GuestRange(0x100000, LO_PAGES * PAGE - 0x800, LO_HVA + 0x100000, "pc.ram", "ram-below-4g", 1),
    GuestRange(G4, G4 + HI_PAGES * PAGE, HI_HVA, "hi", "ram-above-4g", 2),
]


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    lo, hi = guest_ram()
    path = tmp_path_factory.mktemp("kdump") / "core"
    notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
    synth.write_core(path, [synth.Load(LO_HVA, lo), synth.Load(HI_HVA, hi)], notes)
    return path, lo, hi


def expected_pages(lo: bytes, hi: bytes, ranges=RANGES) -> dict[int, bytes]:
    """pfn -> page, as QEMU's get_next_page() builds them (zero-filled edges)."""
    ram = {}
    for r in ranges:
        src = lo if r.gpa < G4 else hi
        base = r.hva - (LO_HVA if r.gpa < G4 else HI_HVA)
        for pfn in range(r.gpa // PAGE, -(-r.end // PAGE)):
            page = bytearray(ram.get(pfn, bytes(PAGE)))
            lo_at, hi_at = max(pfn * PAGE, r.gpa), min((pfn + 1) * PAGE, r.end)
            page[lo_at - pfn * PAGE : hi_at - pfn * PAGE] = src[
                base + lo_at - r.gpa : base + hi_at - r.gpa
            ]
            ram[pfn] = bytes(page)
    return ram


def open_fake(path, ranges=RANGES, info=None, ncpus=2, long_mode=True):
    return viewsynth.open_fake(path, ranges, info=info, ncpus=ncpus, long_mode=long_mode)


def write(core, tmp_path, name="out", ranges=RANGES, info=None, **options) -> bytes:
    out = tmp_path / name
    with open_fake(core[0], ranges, info) as qc:
        extract(qc, out, options=DumpOptions(**options))
    return out.read_bytes()


@pytest.mark.parametrize("method", sorted(compress.METHODS))
def test_round_trip(core, tmp_path, method):
    _, lo, hi = core
    data = write(core, tmp_path, format=f"kdump-{method}", info=vmcoreinfo())
    dump = Kdump.parse(data)
    flag = compress.METHODS[method].flag
    assert (dump.version, dump.block_size, dump.status, dump.nr_cpus) == (6, PAGE, flag, 2)
    assert dump.machine == b"x86_64" and dump.dump_level == 1
    assert dump.max_mapnr == G4 // PAGE + HI_PAGES
    first, second = dump.bitmaps()
    assert first == second
    expected = expected_pages(lo, hi)
    assert dump.pfns() == sorted(expected)
    assert dump.pages() == expected
    descs = dump.descriptors()
    # Every zero page shares one descriptor, pointing at one zero page first in the data.
    data_start = min(d[0] for d in descs.values())
    zero = (data_start, PAGE, 0, 0)
    assert {descs[p] for p, page in expected.items() if page == bytes(PAGE)} == {zero}
    assert data[data_start : data_start + PAGE] == bytes(PAGE)
    # Text shrinks and is flagged; random data does not, and is stored as is.
    assert descs[0][2] == flag and descs[0][1] < PAGE // 2
    assert descs[3][1:3] == (PAGE, 0)
    assert data[descs[3][0] : descs[3][0] + PAGE] == page_of("random", 3)
    # The last page is only half RAM: the rest reads as zeros.
    last = (LO_PAGES * PAGE - 0x800) // PAGE
    assert expected[last][-0x800:] == bytes(0x800)
    assert len(data) == max(o + s for o, s, _, _ in descs.values())


def test_sub_header_notes_and_vmcoreinfo(core, tmp_path):
    info = vmcoreinfo()
    dump = Kdump.parse(write(core, tmp_path, format="kdump-zlib", info=info))
    # phys_base from VMCOREINFO, decimal and negative as Linux prints it
    # (QEMU parses it as hex and gets it wrong).
    assert dump.phys_base == (-73400320) % (1 << 64)
    assert dump.vmcoreinfo == VMCI_TEXT
    notes = list(E.iter_notes(dump.notes))
    assert [(n.name, n.type) for n in notes] == [
        (b"CORE", E.NT_PRSTATUS), (b"CORE", E.NT_PRSTATUS),
        (b"QEMU", 0), (b"QEMU", 0), (b"VMCOREINFO", 0),
    ]  # fmt: skip
    assert dump.notes.endswith(info.note)
    sub_size = K.for_class(E.ELFCLASS64).kdump_sub_header.size
    assert dump.sub.offset_note == PAGE + sub_size  # notes right after the sub-header
    assert dump.sub_hdr_size == -(-(sub_size + len(dump.notes)) // PAGE)


def test_without_vmcoreinfo(core, tmp_path):
    dump = Kdump.parse(write(core, tmp_path, format="kdump-zstd"))
    assert (dump.phys_base, dump.sub.offset_vmcoreinfo, dump.sub.size_vmcoreinfo) == (0, 0, 0)
    assert [n.name for n in E.iter_notes(dump.notes)] == [b"CORE", b"CORE", b"QEMU", b"QEMU"]


def test_32bit_guest(core, tmp_path):
    """First vCPU not in long mode, RAM below 4 GiB: the 32-bit headers, i386 notes."""
    _, lo, hi = core
    out = tmp_path / "k32"
    with open_fake(core[0], RANGES[:2], vmcoreinfo(), long_mode=False) as qc:
        extract(qc, out, options=DumpOptions(format="kdump-lzo"))
    dump = Kdump.parse(out.read_bytes(), bits64=False)
    assert (dump.version, dump.machine, dump.nr_cpus) == (6, b"i686", 2)
    assert dump.max_mapnr == -(-RANGES[1].end // PAGE)
    assert dump.pages() == expected_pages(lo, hi, RANGES[:2])
    assert dump.phys_base == (-73400320) % (1 << 32)
    assert dump.vmcoreinfo == VMCI_TEXT
    prstatus = [n for n in E.iter_notes(dump.notes) if n.type == E.NT_PRSTATUS]
    assert [len(n.desc) for n in prstatus] == [E.I386_PRSTATUS.size] * 2


def test_no_ram_no_dump(core, tmp_path):
    with open_fake(core[0], []) as qc:
        with pytest.raises(VmcoreError, match="no RAM"):
            extract(qc, tmp_path / "x", options=DumpOptions(format="kdump-zlib"))


def test_layouts_are_qemus():
    """The header formats QEMU's dump.c writes (sizes: see test_layouts.py)."""
    k64, k32 = K.for_class(E.ELFCLASS64), K.for_class(E.ELFCLASS32)
    assert k64.disk_dump_header.struct.format == "<8sI390s6xqqIIIIIIIIII"
    assert k32.disk_dump_header.struct.format == "<8sI390s2xiiIIIIIIIIII"
    assert k64.kdump_sub_header.struct.format == "<QIIQQQQQQQQQQQ"
    assert k32.kdump_sub_header.struct.format == "<IIIIIQIQIQIQQQ"


def test_flattened_is_the_same_dump(core, tmp_path):
    raw = write(core, tmp_path, "raw", format="kdump-zstd", info=vmcoreinfo())
    flat = write(core, tmp_path, "flat", format="kdump-zstd", flattened=True, info=vmcoreinfo())
    assert flat.startswith(b"makedumpfile\0")
    assert unflatten(flat) == raw


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
def test_makedumpfile_reassembles_the_flattened_file(core, tmp_path):
    raw = write(core, tmp_path, "raw", format="kdump-lzo")
    write(core, tmp_path, "flat", format="kdump-lzo", flattened=True)
    with open(tmp_path / "flat", "rb") as stdin:
        subprocess.run(["makedumpfile", "-R", str(tmp_path / "re")], stdin=stdin,
                       check=True, capture_output=True)  # fmt: skip
    assert (tmp_path / "re").read_bytes() == raw


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_threads_do_not_change_the_file(core, tmp_path, threads):
    one = write(core, tmp_path, "one", format="kdump-zlib", threads=1)
    assert write(core, tmp_path, "many", format="kdump-zlib", threads=threads) == one


def test_zlib_pages_are_qemus_compress2(core, tmp_path):
    """zlib at level 1, as QEMU's compress2(Z_BEST_SPEED): the same bytes."""
    dump = Kdump.parse(write(core, tmp_path, format="kdump-zlib"))
    offset, size, flags, _ = dump.descriptors()[0]
    assert dump.data[offset : offset + size] == zlib.compress(page_of("text", 0), 1)


def test_begin_length_leaves_other_pages_out(core, tmp_path):
    _, lo, hi = core
    data = write(core, tmp_path, format="kdump-snappy", begin=0x9F000, length=0x62000)
    dump = Kdump.parse(data)
    assert dump.pfns() == [0x9F, *range(0x100, 0x101)]
    assert dump.max_mapnr == G4 // PAGE + HI_PAGES  # the guest's, whatever the filter
    expected = expected_pages(lo, hi)
    assert dump.pages() == {p: expected[p] for p in (0x9F, 0x100)}


def test_missing_compression_library(core, tmp_path, monkeypatch):
    def missing():
        raise ImportError("No module named 'zstandard'")

    zstd = compress.METHODS["zstd"]
    monkeypatch.setitem(compress.METHODS, "zstd", replace(zstd, factory=missing))
    with pytest.raises(VmcoreError, match="kdump-zstd needs the Python module zstandard"):
        write(core, tmp_path, format="kdump-zstd")
    assert not os.listdir(tmp_path)  # refused before any output


def test_compressors_shrink_text_and_not_random():
    for method in compress.METHODS.values():
        c = compress.compressor(method)
        assert len(c(page_of("text", 1))) < PAGE // 2, method.name
        assert len(c(page_of("random", 1))) >= PAGE, method.name


# -- the pieces ----------------------------------------------------------------


def test_page_runs_merge_shared_and_adjacent_frames():
    ranges = [
        GuestRange(0, 0x1800, 0, "a", "a", 1),
        GuestRange(0x1800, 0x2000, 0, "b", "b", 2),  # shares frame 1
        GuestRange(0x2000, 0x3000, 0, "c", "c", 3),  # adjacent
        GuestRange(0x10000, 0x10001, 0, "d", "d", 4),  # one byte: one frame
    ]
    assert kdump.page_runs(ranges) == [kdump.PageRun(0, 3), kdump.PageRun(0x10, 0x11)]


def bits(pieces):
    out = []
    for offset, data in pieces:
        assert data and data[0] and data[-1]  # trimmed
        for i, byte in enumerate(data):
            out += [(offset + i) * 8 + b for b in range(8) if byte >> b & 1]
    return out


def test_bitmap_pieces():
    per_piece = kdump.BITMAP_PIECE * 8
    runs = [kdump.PageRun(3, 20), kdump.PageRun(per_piece - 5, per_piece + 9)]
    pieces = list(kdump.bitmap_pieces(runs))
    assert [o for o, _ in pieces] == [0, per_piece // 8]  # one piece per BITMAP_PIECE
    assert bits(pieces) == [
        *range(3, 20),
        *range(per_piece - 5, per_piece + 9),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 700)), min_size=1, max_size=5),
    st.lists(st.tuples(st.integers(0, 3000 * PAGE), st.integers(1, 300 * PAGE)), max_size=8),
)
def test_chunks_cover_runs_in_order(gaps_sizes, raw_spans):
    runs, pfn = [], 0
    for gap, size in gaps_sizes:
        runs.append(kdump.PageRun(pfn + gap, pfn + gap + size))
        pfn += gap + size
    # spans: sorted, disjoint, inside guest RAM (as data_spans() yields them)
    spans, last = [], 0
    for start, size in sorted(raw_spans):
        start = max(start, last)
        for r in runs:
            lo, hi = max(start, r.start * PAGE), min(start + size, r.end * PAGE)
            if lo < hi:
                spans.append((lo, hi - lo))
        last = start + size
    spans = _disjoint(spans)
    chunks = list(kdump.chunks(runs, iter(spans)))
    pages = [p for c in chunks for p in range(c.pfn, c.pfn + c.pages)]
    assert pages == [p for r in runs for p in range(r.start, r.end)]
    covered = []
    for c in chunks:
        if c.spans:
            assert c.pages <= kdump.CHUNK_PAGES
        for gpa, size in c.spans:
            assert c.pfn * PAGE <= gpa and gpa + size <= (c.pfn + c.pages) * PAGE
            covered.append((gpa, size))
    assert _disjoint(covered) == spans


def _disjoint(spans):
    out = []
    for gpa, size in sorted(spans):
        if out and gpa <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], gpa + size)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((gpa, size))
    return out


class FakeMemory:
    """Just ``read``: a dict of gpa -> bytes pages."""

    def __init__(self, pages):
        self.pages = pages

    def read(self, gpa, size):
        return b"".join(self.pages.get(a, bytes(PAGE)) for a in range(gpa, gpa + size, PAGE))


def test_zero_pages_held_as_data_share_the_zero_descriptor():
    pages = {0: page_of("text", 1), PAGE: bytes(PAGE), 2 * PAGE: page_of("random", 2)}
    work = kdump._Compressor(FakeMemory(pages), compress.METHODS["zlib"])
    result = work(kdump.Chunk(0, 3, ((0, 3 * PAGE),)))
    flag = compress.METHODS["zlib"].flag
    assert result.entries[1] is None
    assert result.entries[0][1] == flag and result.entries[2] == (PAGE, 0)
    assert result.data.endswith(pages[2 * PAGE])
    all_zero = work(kdump.Chunk(0, 2, ((PAGE, PAGE),)))
    assert all_zero.entries is None and all_zero.data == b""


# -- the ELF options on the same guest ------------------------------------------


def elf_loads(path):
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        return [
            (s["p_vaddr"], s["p_paddr"], s["p_memsz"], s["p_filesz"], s.data())
            for s in ELFFile(f).iter_segments("PT_LOAD")
        ]


def test_paging_without_paging_vcpus_maps_ram_at_its_physical_address(core, tmp_path):
    """No vCPU has CR0.PG: QEMU's paging dump maps each range at virtual =
    physical; and no kernel-text load is added (the walk gives virtual addresses)."""
    _, lo, hi = core
    write(core, tmp_path, "paging", paging=True, info=vmcoreinfo())
    loads = elf_loads(tmp_path / "paging")
    assert [(v, p, m, f) for v, p, m, f, _ in loads] == [
        (r.gpa, r.gpa, r.size, r.size) for r in RANGES
    ]
    assert loads[2][4] == hi


def test_elf_begin_length(core, tmp_path):
    _, lo, _ = core
    write(core, tmp_path, "part", begin=0x9F000, length=0x62000, info=vmcoreinfo())
    loads = elf_loads(tmp_path / "part")
    assert [(v, p, m) for v, p, m, _, _ in loads] == [
        (0x9F000, 0x9F000, 0x1000),
        (0x100000, 0x100000, 0x1000),
    ]
    assert loads[0][4] == lo[0x9F000:0xA0000] and loads[1][4] == lo[0x100000:0x101000]


class _Ram:
    """Guest RAM from one bytes object at gpa 0 (for _Compressor)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, gpa: int, size: int) -> bytes:
        return self.data[gpa : gpa + size]


def _counting(method, calls: list[int]):
    from dataclasses import replace

    def factory():
        inner = method.factory()

        def compress(page: bytes) -> bytes:
            calls.append(1)
            return inner(page)

        return compress

    return replace(method, factory=factory)


@pytest.mark.parametrize("name", ["zstd", "zlib"])
def test_runs_of_pages_that_do_not_shrink_are_not_all_tried(name):
    """kdump-zstd stores a run of incompressible pages raw after RAW_RUN tries,
    probing every RAW_PROBE-th; a page that shrinks ends the run. kdump-zlib
    tries every page, as QEMU does (its file must be QEMU's)."""
    import os

    from qemu_vmcore.writers import kdump as KW
    from qemu_vmcore.writers.compress import METHODS

    pages = 64
    noise = os.urandom(40 * PAGE)
    text = b"compressible " * (24 * PAGE // 13 + 1)
    data = noise + text[: 24 * PAGE]
    calls: list[int] = []
    work = KW._Compressor(_Ram(data), _counting(METHODS[name], calls))
    got = work(KW.Chunk(0, pages, ((0, pages * PAGE),)))
    # Every page reads back: raw ones as they are, compressed ones flagged.
    at = 0
    for i, (size, flags) in enumerate(got.entries):
        if flags == 0:
            assert size == PAGE and got.data[at : at + PAGE] == data[i * PAGE : (i + 1) * PAGE]
        at += size
    assert at == len(got.data)
    assert all(flags == 0 for _, flags in got.entries[:40])  # random: raw
    if name == "zlib":
        assert len(calls) == pages
        assert all(flags for _, flags in got.entries[40:])
    else:
        tried_noise = KW.RAW_RUN + -(-(40 - KW.RAW_RUN) // KW.RAW_PROBE)
        assert len(calls) <= tried_noise + 24
        # The run ends within RAW_PROBE pages of the text, whose pages all shrink after.
        first = next(i for i, (_, f) in enumerate(got.entries) if f)
        assert 40 <= first < 40 + KW.RAW_PROBE
        assert all(f for _, f in got.entries[first:])
