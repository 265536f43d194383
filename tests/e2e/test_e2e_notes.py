"""End to end: vCPU notes and VMCOREINFO equal QEMU's own, byte for byte."""

from __future__ import annotations

import json

import pytest
from elftools.elf.elffile import ELFFile
from support.runs import run_cli
from support.vmcore_compare import note_segment

from qemu_vmcore.layouts import elf as E

pytestmark = pytest.mark.rig


@pytest.mark.parametrize(
    "name", ["q72-pc-512", "q72-pc-smp2", "q10-q35-512", "q10-q35-4608", "q10-q35-panic"]
)
def test_notes_equal_qemu_dump(rig_case, tmp_path, name):
    """Every note QEMU writes (NT_PRSTATUS and QEMU per vCPU, then the
    guest's VMCOREINFO from the vmcoreinfo device) is in our file, identical."""
    case = rig_case(name)
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", check=True)
    ours, ref = note_segment(out), note_segment(case.reference)
    names = [(n.name, n.type) for n in E.iter_notes(ref)]
    smp = case.spec.smp
    assert names == [(b"CORE", 1)] * smp + [(b"QEMU", 0)] * smp + [(b"VMCOREINFO", 0)]
    assert ours == ref


def test_no_vmcoreinfo_option(rig_case, tmp_path):
    case = rig_case("q10-q35-512")
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", "--no-vmcoreinfo", check=True)
    names = [n.name for n in E.iter_notes(note_segment(out))]
    assert names == [b"CORE", b"CORE", b"QEMU", b"QEMU"]
    with open(out, "rb") as f:
        loads = list(ELFFile(f).iter_segments(type="PT_LOAD"))
    assert all(x["p_vaddr"] == x["p_paddr"] for x in loads)  # no kernel-text load either


def test_info_shows_vcpus_and_kernel(rig_case):
    case = rig_case("q10-q35-512")
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert [c["mode"] for c in info["vcpu_states"]] == ["long", "long"]
    assert all(c["rip"] >= 0xFFFFFFFF80000000 for c in info["vcpu_states"])
    assert not any(c["stale"] for c in info["vcpu_states"])  # TCG: env is current
    vmci = info["vmcoreinfo"]
    assert vmci["source"] == "vmcoreinfo device" and vmci["verified"]
    assert vmci["osrelease"] == case.meta["kernel_version"]
