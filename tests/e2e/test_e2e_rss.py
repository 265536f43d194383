"""End to end: peak RSS stays under 150 MB on every rig case, whatever the guest's size.

Guest RAM is streamed (copy_file_range, bounded buffers), never held, and
the VMCOREINFO scan reads through one reused buffer; so ``info``, an ELF
``extract`` and a kdump-zstd ``extract`` (two compression threads, a
bounded number of chunks in flight) cost the same memory on a 512 MiB guest
as on a 4.5 GiB one. The peak is the process's own (its VmHWM at exit), not
a sum over a process tree. The bench (bench/scale.py,
bench/extract.py) prints the same numbers beside its timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import rig

pytestmark = pytest.mark.rig

LIMIT = 150 * 10**6  # bytes (issue: "peak RSS <= 150 MB, flat")


#: Runs the CLI and, at exit, writes its own VmHWM (kB) to $QVM_HWM_OUT.
#: Not wait4()'s ru_maxrss: Linux carries the parent's RSS high-water mark
#: into a child across fork and exec (the signal struct's maxrss), so a
#: child of a 190 MB pytest worker "peaks" at 190 MB whatever it does.
#: VmHWM is the high-water mark of the process's own memory after exec.
_WRAPPER = """
import atexit, os, runpy, sys

def _report():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["QVM_HWM_OUT"], "w") as out:
        out.write(kb)

atexit.register(_report)
sys.argv[0] = "qemu-vmcore"
runpy.run_module("qemu_vmcore", run_name="__main__", alter_sys=True)
"""


def peak_rss(*args: object, tmp: Path) -> int:
    """Run ``qemu-vmcore ARGS`` (it must succeed); its own peak RSS in bytes."""
    report = tmp / "hwm"
    argv = [sys.executable, "-c", _WRAPPER, *map(os.fspath, args)]
    env = dict(os.environ, QVM_HWM_OUT=str(report))
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.returncode == 0, (argv, proc.stderr.decode(errors="replace"))
    kb = int(report.read_text())
    report.unlink()
    return kb * 1024


#: Where writing a whole vmcore is measured too (every case would cost minutes
#: of copying): the largest guests of each arch and version, memory devices,
#: and the hostile guest's RAM scan.
EXTRACTED = ["q72-pc-512", "q10-q35-4608", "q10-q35-hostile", "q10-q35-virtiomem",
             "q72-pc-dimm-hotplug", "a72-virt-512", "a10-virt-4g"]  # fmt: skip


@pytest.mark.parametrize("name", rig.DWARF_CASES)
def test_info_peak_rss_is_bounded(rig_case, tmp_path, name):
    case = rig_case(name)
    peak = peak_rss("info", "--accept-inconsistent", case.core, tmp=tmp_path)
    assert peak <= LIMIT, f"{peak / 1e6:.0f} MB"


def _extract_peaks(case, out) -> dict[str, int]:
    common = ("-q", "--accept-inconsistent", "--allow-missing", case.core, "-o", out)
    peaks = {}
    for fmt in ("elf", "kdump-zstd"):
        peaks[fmt] = peak_rss("extract", "--format", fmt, *common, tmp=out.parent)
        out.unlink()
    return peaks


@pytest.mark.parametrize("name", EXTRACTED)
def test_extract_peak_rss_is_bounded(rig_case, tmp_path, name):
    peaks = _extract_peaks(rig_case(name), tmp_path / "vmcore")
    assert max(peaks.values()) <= LIMIT, {k: f"{v / 1e6:.0f} MB" for k, v in peaks.items()}


def test_peak_rss_is_flat_in_guest_size(rig_case, tmp_path):
    """9 times the guest RAM (512 MiB against 4.5 GiB, same QEMU and machine)
    costs no more than a few MB more."""
    small = _extract_peaks(rig_case("q10-q35-512"), tmp_path / "vmcore")
    large = _extract_peaks(rig_case("q10-q35-4608"), tmp_path / "vmcore")
    for fmt in small:
        assert large[fmt] <= small[fmt] + 16 * 10**6, (fmt, small[fmt], large[fmt])
