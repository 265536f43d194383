"""End to end: the error paths that need a real QEMU core or a real file system."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
import rig
from conftest import assert_one_line_error, run_cli
from vmcore_compare import compare_vmcores

pytestmark = pytest.mark.rig


def _preexec() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.fixture(scope="module")
def stripped_core(tmp_path_factory) -> tuple[Path, Path]:
    """A core of a QEMU 7.2 whose executable was stripped of its debug info.

    The guest never ran (-S), so none of its RAM was ever touched. Returns
    (core, stripped executable, QMP reference dump). strip keeps the build-id
    note, so the unstripped rig build still matches the core.
    """
    d = tmp_path_factory.mktemp("stripped")
    exe = d / "qemu-system-x86_64"
    subprocess.run(["strip", "-o", exe, rig.qemu_binary("7.2")], check=True)
    qmp = d / "qmp.sock"
    argv = [exe, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-machine", "pc",
            "-m", "64", "-display", "none", "-nodefaults", "-S",
            "-qmp", f"unix:{qmp},server=on,wait=off"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=d, preexec_fn=_preexec, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not qmp.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qmp.exists(), "QEMU did not start"
    reference = d / "reference.elf"
    with contextlib.closing(rig.QMP(qmp)) as conn:
        conn.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{reference}"})
    proc.send_signal(signal.SIGABRT)
    proc.wait(timeout=60)
    core = d / "core"
    if not core.exists():
        pytest.skip("no core written (core_pattern is not a plain file name here)")
    return core, exe, reference


def test_debug_info_not_found(stripped_core, tmp_path):
    core, exe, _ = stripped_core
    proc = run_cli("extract", core, "-o", tmp_path / "vmcore")
    assert_one_line_error(proc, "no debug info found", str(exe), "build-id", "dbgsym", "--qemu")
    assert list(tmp_path.iterdir()) == []


def test_qemu_and_debug_file_options_supply_debug_info(stripped_core, tmp_path):
    """Both options work; and RAM the guest never touched is zeros, as in QEMU's dump.

    The kernel dumps no bytes of an anonymous mapping that was never written
    (it has no anon_vma), so the core says "not dumped" for all guest RAM
    although QEMU ran with dump-guest-core=on: that RAM is zeros, not lost.
    """
    core, _, reference = stripped_core
    unstripped = rig.qemu_binary("7.2")
    for option in ("--qemu", "--debug-file"):
        out = tmp_path / f"vmcore{option}"
        run_cli("extract", core, "-o", out, option, unstripped, "-q", check=True)
        cmp = compare_vmcores(out, reference)
        assert cmp.equal, (cmp.ranges_a, cmp.ranges_b, cmp.differing_pages)
        with open(out, "rb") as f, open(reference, "rb") as g:
            # Never in long mode: EM_386, in ELF64 because the BIOS ends at 4 GiB.
            assert f.read(20)[:20] == g.read(20)[:20]
        out.unlink()


def test_build_id_mismatch(stripped_core, tmp_path):
    core, _, _ = stripped_core
    other = rig.qemu_binary("10.0")
    for option in ("--qemu", "--debug-file"):
        proc = run_cli("extract", core, "-o", tmp_path / "vmcore", option, other)
        assert_one_line_error(proc, str(other), "does not match the core")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_mid_write(rig_case, mount_tmpfs):
    case = rig_case("q72-pc-512")
    small = mount_tmpfs("size=32m")
    proc = run_cli("extract", case.core, "-o", small / "vmcore")
    assert_one_line_error(proc, "No space left on device")
    assert proc.returncode == 3
    assert list(small.iterdir()) == []  # neither the vmcore nor a temporary file


def test_output_directory_not_writable(rig_case, mount_tmpfs):
    case = rig_case("q72-pc-512")
    ro = mount_tmpfs("ro,size=1m")
    proc = run_cli("extract", case.core, "-o", ro / "vmcore")
    assert_one_line_error(proc, "not writable")
    assert proc.returncode == 3
