"""writers.copy: the copy engine, moving guest RAM from where the guest layer says it is."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import synth
from support.synth import HI_DUMPED, HI_SIZE, PAGE, R0, R1, R2, R3

from qemu_vmcore.errors import MissingMemoryError, OutputError
from qemu_vmcore.guest.physmem import GuestPhysicalMemory, data_runs
from qemu_vmcore.host.core import open_core
from qemu_vmcore.writers import copy
from qemu_vmcore.writers.copy import CopyJob, copy_range, copy_spans, run_copies


@pytest.fixture
def ram(tmp_path):
    core, ram_bytes, hi = synth.ram_core(tmp_path / "core")
    with open_core(core.path) as host:
        yield GuestPhysicalMemory([R0, R1, R2, R3], host), ram_bytes, hi


def total_ram(placements):
    return sum(r.size for r, _ in placements)


def test_copy_spans_writes_data_skips_the_rest_and_reports_progress(ram, tmp_path):
    mem, ram_bytes, hi = ram
    out = tmp_path / "out"
    done = []
    placements = [(R2, PAGE), (R3, PAGE + HI_SIZE), (R0, 2 * PAGE + HI_SIZE)]
    total = 2 * PAGE + HI_SIZE + R0.size
    with open(out, "wb+") as f:
        f.truncate(total)
        copy_spans(f.fileno(), mem.mapping(placements), total_ram(placements), done.append)
        f.seek(0)
        got = f.read()
    assert sum(done) == R2.size + R3.size + R0.size
    assert all(n >= 0 for n in done)
    assert got == bytes(PAGE) + hi + bytes(HI_DUMPED * PAGE) + bytes(PAGE) + ram_bytes[: R0.size]
    # Only the pages that hold data were written.
    data_pages = HI_DUMPED + sum(1 for p in synth.RAM_DATA_PAGES if p * PAGE < R0.size)
    assert synth.allocated_bytes(out) <= (data_pages + 2) * PAGE


def test_copy_spans_nothing(ram, tmp_path):
    mem, _, _ = ram
    done = []
    with open(tmp_path / "out", "wb+") as f:
        copy_spans(f.fileno(), mem.mapping([]), 0, done.append)
    assert sum(done) == 0


# -- run_copies, copy_range, copy_whole ---------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("sparse")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=16), st.sampled_from([0, PAGE, 100]))
def test_copying_the_data_runs_reproduces_the_file(scratch, pages, dst_off):
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        content = synth.sparse_file(os.path.join(d, "src"), pages)
        src = os.open(os.path.join(d, "src"), os.O_RDONLY)
        dst = os.open(os.path.join(d, "dst"), os.O_RDWR | os.O_CREAT)
        try:
            os.ftruncate(dst, dst_off + len(content))
            runs = data_runs(src, 0, len(content))
            jobs = [CopyJob(src, off, dst_off + off, n) for off, n in runs]
            done = []
            run_copies(dst, jobs, done.append)
            got = os.pread(dst, len(content), dst_off)
            allocated = synth.allocated_bytes(os.path.join(d, "dst"))
        finally:
            os.close(src)
            os.close(dst)
    assert got == content
    assert sum(done) == sum(j.size for j in jobs)
    # Each data page costs one block, two when the destination is not page-aligned.
    assert allocated <= (sum(pages) * (1 if dst_off % PAGE == 0 else 2) + 1) * PAGE


@pytest.fixture
def two_files(tmp_path):
    content = synth.sparse_file(tmp_path / "src", [True, True, False, True])
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    yield src, dst, content
    os.close(src)
    os.close(dst)


def test_copy_range_copies_and_leaves_zero_pages_as_holes(monkeypatch, two_files):
    src, dst, content = two_files
    done = []
    copy_range(src, 0, dst, 0, len(content), done.append)
    assert os.pread(dst, len(content), 0) == content
    assert sum(done) == len(content)


def test_copy_range_writes_no_zero_page(monkeypatch, tmp_path):
    """A page of zeros that is data in the source is a hole in the copy."""
    data = synth.pattern(PAGE, seed=3) + bytes(2 * PAGE) + synth.pattern(PAGE, seed=4)
    (tmp_path / "src").write_bytes(data)  # all four pages allocated
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(dst, len(data))
        copy_range(src, 0, dst, 0, len(data), lambda n: None)
        assert os.pread(dst, len(data), 0) == data
        assert data_runs(dst, 0, len(data)) == [(0, PAGE), (3 * PAGE, PAGE)]
    finally:
        os.close(src)
        os.close(dst)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_copy_range_out_of_space_is_an_output_error(monkeypatch, two_files, code):
    src, dst, _ = two_files

    def full(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OutputError, match="cannot write the vmcore") as info:
        copy_range(src, 0, dst, 0, PAGE, lambda n: None)
    assert info.value.exit_code == 3


def test_copy_range_other_errors_propagate(monkeypatch, two_files):
    src, dst, _ = two_files

    def broken(*args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "pwrite", broken)
    with pytest.raises(OSError) as info:
        copy_range(src, 0, dst, 0, PAGE, lambda n: None)
    assert info.value.errno == errno.EIO


def test_copy_range_past_the_end_of_the_source(two_files):
    src, dst, content = two_files
    done = []
    with pytest.raises(MissingMemoryError, match="ended early") as info:
        copy_range(src, len(content) - 10, dst, 0, 100, done.append)
    assert f"{len(content):#x}" in info.value.message
    assert sum(done) == 10


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP])
def test_copy_whole_falls_back_to_pread_pwrite(monkeypatch, two_files, code):
    src, dst, content = two_files
    calls = []

    def refuse(*args):
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    done = []
    copy.copy_whole(src, 0, dst, 0, len(content), done.append)
    assert len(calls) == 1  # not retried once it failed
    assert os.pread(dst, len(content), 0) == content
    assert sum(done) == len(content)


def test_copy_whole_out_of_space_is_an_output_error(monkeypatch, two_files):
    src, dst, _ = two_files

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(OutputError, match="cannot write the vmcore"):
        copy.copy_whole(src, 0, dst, 0, PAGE, lambda n: None)


def test_small_copies_go_through_the_kernel_large_ones_skip_zero_pages(monkeypatch, tmp_path):
    data = synth.pattern(PAGE, seed=5) + bytes(PAGE)  # one data page, one zero page
    (tmp_path / "src").write_bytes(data)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        for threshold, runs in ((1 << 30, [(0, 2 * PAGE)]), (0, [(0, PAGE)])):
            monkeypatch.setattr(copy, "ZERO_SCAN_FROM", threshold)
            dst = os.open(tmp_path / f"dst{threshold}", os.O_RDWR | os.O_CREAT)
            os.ftruncate(dst, len(data))
            copy.run_copies(dst, [CopyJob(src, 0, 0, len(data))], lambda n: None)
            assert os.pread(dst, len(data), 0) == data
            assert data_runs(dst, 0, len(data)) == runs
            os.close(dst)
    finally:
        os.close(src)
