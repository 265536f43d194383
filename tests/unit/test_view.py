"""writers.view: the served vmcore is, byte for byte, the file extract writes.

The guest is support.viewsynth's synthetic core (no drgn, no QEMU):
compressible, random, zero and never-touched pages, holes in the core, a
range above 4 GiB that ends mid-page, and (with --allow-missing) a range
the core lacks. Each
format is extracted to a file and served from the same prepared decision;
reads of every shape, SEEK_DATA/SEEK_HOLE and the data runs are checked
against that file.
"""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.runs import data_runs_fd
from support.synth import PAGE
from support.viewsynth import GONE, RANGES, TEXT, open_fake, page_of, vmcoreinfo, write_core

from qemu_vmcore.extract import prepare, write
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.plan import DumpOptions, OptionError
from qemu_vmcore.serve import open_view
from qemu_vmcore.source import QemuCore
from qemu_vmcore.writers import compress, view


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return write_core(tmp_path_factory.mktemp("view") / "core")


#: name -> (DumpOptions fields, with VMCOREINFO, ELF64 guest, with a range the core lacks)
CASES = {
    "elf": ({}, True, True, False),
    "elf-no-vmcoreinfo": ({}, False, True, False),
    "elf32": ({}, False, False, False),
    "elf-paging": ({"paging": True}, True, True, False),
    "elf-filter": ({"begin": 0x9F000, "length": 0x62000}, True, True, False),
    "elf-missing": ({}, True, True, True),
    "kdump-zlib": ({"format": "kdump-zlib"}, True, True, False),
    "kdump-zstd": ({"format": "kdump-zstd", "threads": 2}, True, True, False),
    "kdump-lzo": ({"format": "kdump-lzo"}, True, True, False),
    "kdump-snappy": ({"format": "kdump-snappy"}, False, True, False),
    "kdump-filter": ({"format": "kdump-zlib", "begin": 0x180000, "length": 0x80000}, True, True,
                     False),
    "kdump-missing": ({"format": "kdump-zstd"}, True, True, True),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(CASES))
def served(request, core, tmp_path_factory):
    """``(view, the bytes extract wrote, its path)`` for one case, from one prepare()."""
    fields, with_info, long_mode, missing = CASES[request.param]
    ranges = RANGES + ([GONE] if missing else [])
    out = tmp_path_factory.mktemp(request.param) / "vmcore"
    qc = open_fake(core, ranges, info=vmcoreinfo() if with_info else None, long_mode=long_mode)
    options = DumpOptions(**fields)
    write(prepare(qc, out, allow_missing=missing, options=options))
    done = []
    v = open_view(prepare(qc, None, allow_missing=missing, options=options), done.append)
    yield v, out.read_bytes(), out
    qc.close()


def test_whole_file_is_extracts(served):
    v, data, _ = served
    assert v.size == len(data)
    assert v.read(0, v.size) == data
    assert v.read(0, v.size + 12345) == data


def test_reads_of_every_edge(served):
    v, data, _ = served
    assert v.read(0, 0) == b""
    assert v.read(v.size, 1) == b"" and v.read(v.size + PAGE, PAGE) == b""
    assert v.read(v.size - 1, 10) == data[-1:]
    with pytest.raises(ValueError):
        v.read(-1, 1)
    # Every section's boundaries, one byte either side, in reads of 1, a page and more.
    for s in v._sections:
        for at in {s.start - 1, s.start, s.end - 1, s.end}:
            for n in (1, 3, PAGE, 3 * PAGE + 5):
                at = max(at, 0)
                assert v.read(at, n) == data[at : at + n], (at, n)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_reads_equal_the_written_file(served, data):
    v, written, _ = served
    offset = data.draw(st.integers(0, v.size + PAGE), label="offset")
    size = data.draw(st.one_of(st.integers(0, 3 * PAGE), st.integers(0, v.size)), label="size")
    assert v.read(offset, size) == written[offset : offset + size]


def test_data_ranges_hold_every_byte_that_is_not_zero(served):
    v, written, _ = served
    runs = list(v.data_ranges())
    assert runs == sorted(runs)
    pos = 0
    for lo, n in runs:
        assert lo >= pos and n > 0 and lo + n <= v.size
        assert not any(written[pos:lo]), f"non-zero bytes in the hole {pos:#x}-{lo:#x}"
        # Adjacent runs are merged.
        assert lo > pos or pos == 0
        pos = lo + n
    assert not any(written[pos:])
    assert v.allocated() == sum(n for _, n in runs) < v.size


def test_data_ranges_from_the_middle_are_the_tail_of_the_whole(served):
    v, _, _ = served
    whole = list(v.data_ranges())
    for lo, n in whole[:: max(1, len(whole) // 7)]:
        for start in (lo, lo + n // 2, lo + n):
            tail = [(a, b) for a, b in ((max(a, start), a + b) for a, b in whole) if a < b]
            assert [(a, a + b) for a, b in v.data_ranges(start)] == tail


def test_seek_data_and_hole(served):
    v, _, _ = served
    runs = list(v.data_ranges())
    for lo, n in runs:
        assert v.seek_data(lo) == lo
        assert v.seek_hole(lo) == lo + n
        if lo:
            before = lo - 1
            in_hole = not any(a <= before < a + b for a, b in runs)
            assert v.seek_data(before) == (lo if in_hole else before)
    last_lo, last_n = runs[-1]
    if last_lo + last_n < v.size:
        assert v.seek_hole(last_lo + last_n) == last_lo + last_n
        with pytest.raises(OSError) as e:
            v.seek_data(last_lo + last_n)
        assert e.value.errno == errno.ENXIO
    for bad in (v.size, v.size + 1, -1):
        with pytest.raises(OSError):
            v.seek_data(bad)
        with pytest.raises(OSError):
            v.seek_hole(bad)


def test_the_written_files_data_is_no_more_than_the_views(served):
    """Where extract's file has data (SEEK_DATA on it), the view has data too,
    so a cp --sparse of the mount is no larger than extract's file."""
    v, _, out = served
    fd = os.open(out, os.O_RDONLY)
    try:
        file_runs = data_runs_fd(fd, v.size)
    finally:
        os.close(fd)
    mine = [(lo, lo + n) for lo, n in v.data_ranges()]
    assert sum(b - a for a, b in mine) <= sum(b - a for a, b in file_runs) + 2 * PAGE * len(mine)


# -- kdump specifics ----------------------------------------------------------------


def kdump_view(core, fmt="kdump-zlib", **fields) -> tuple[view.KdumpView, QemuCore]:
    qc = open_fake(core, RANGES, info=vmcoreinfo())
    v = open_view(prepare(qc, None, options=DumpOptions(format=fmt, **fields)))
    assert isinstance(v, view.KdumpView)
    return v, qc


def test_the_index_is_two_bytes_a_page(core):
    v, qc = kdump_view(core)
    with qc:
        pages = sum(r.pages for r in v._layout.runs)
        assert v.index_bytes <= 2 * pages + 64 * len(v._sizes.chunk_first)


@pytest.mark.parametrize("method", sorted(compress.METHODS))
def test_compressors_are_deterministic(method):
    """What recompressing on read rests on: the same page, the same bytes,
    from a new compressor as from a used one, in another thread too."""
    import threading

    pages = [page_of("text", 5), page_of("random", 6), b"\1" + bytes(PAGE - 1), TEXT[:PAGE]]
    first = compress.compressor(compress.METHODS[method])
    want = [first(p) for p in pages]
    assert [first(p) for p in pages] == want
    got: list = []
    t = threading.Thread(target=lambda: got.extend(
        compress.compressor(compress.METHODS[method])(p) for p in reversed(pages)))  # fmt: skip
    t.start()
    t.join()
    assert got[::-1] == want


def test_a_page_that_compresses_differently_now_is_an_error(core):
    v, qc = kdump_view(core)
    with qc:
        s = v._sizes
        k = next(i for i, n in enumerate(s.sizes) if 0 < n < PAGE)
        s.sizes[k] += 1  # as if the page had changed since the pass
        v._cache.clear()
        with pytest.raises(view.ViewError, match="compressed to"):
            v.read(v._layout.data_offset + PAGE, v.size)


def test_reads_are_cached_and_bounded(core, monkeypatch):
    monkeypatch.setattr(view, "PAGE_CACHE", 4)
    v, qc = kdump_view(core, "kdump-zstd")
    with qc:
        whole = v.read(0, v.size)
        assert len(v._cache) == 4
        assert v.read(0, v.size) == whole


def test_flattened_is_not_served(core):
    qc = open_fake(core, RANGES)
    with qc, pytest.raises(OptionError, match="--flattened"):
        open_view(prepare(qc, None, options=DumpOptions(format="kdump-zlib", flattened=True)))


def test_the_kdump_pass_reports_progress(core):
    qc = open_fake(core, RANGES)
    with qc:
        prepared = prepare(qc, None, options=DumpOptions(format="kdump-zlib"))
        done: list[int] = []
        open_view(prepared, done.append)
        assert sum(done) == sum(r.pages for r in prepared.kdump[0].runs) * PAGE


def test_an_elf_view_reads_nothing_up_front(core, monkeypatch):
    qc = open_fake(core, RANGES)
    with qc:
        prepared = prepare(qc, None)
        calls = []
        monkeypatch.setattr(GuestPhysicalMemory, "read_present", lambda *a: calls.append(a))
        monkeypatch.setattr(GuestPhysicalMemory, "next_data", lambda *a: calls.append(a))
        open_view(prepared)
        assert calls == []
