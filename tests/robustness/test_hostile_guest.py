"""Robustness: a hostile guest plants fake VMCOREINFO notes (rig case q10-q35-hostile).

Before the dump, a user process in the guest (tests/rig/init, ``rig.hostile``)
writes 60 fake notes into tmpfs pages: other OSRELEASEs with the real
address of init_uts_ns, symbols outside the kernel image, a phys_base of its
choosing, no symbols at all, descsz values of 4 GiB and of just over 1 MiB.
The case has no vmcoreinfo device, so only the RAM scan can find the
kernel's note. The tool must pick the real one, and show the real kernel.
"""

from __future__ import annotations

import json

import pytest
from elftools.elf.elffile import ELFFile
from support import consumers
from support.runs import run_cli

from qemu_vmcore.guest import vmcoreinfo
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.source import open_qemu_core

pytestmark = pytest.mark.rig

CASE = "q10-q35-hostile"
FAKE_RELEASE = "6.6.6-hostile-"


def _notes(path) -> list[E.Note]:
    with open(path, "rb") as f:
        return list(E.iter_notes(next(ELFFile(f).iter_segments(type="PT_NOTE")).data()))


def test_the_guest_planted_its_fakes(rig_case):
    case = rig_case(CASE)
    log = case.serial_log.read_text(errors="replace")
    assert f"RIG-HOSTILE {case.spec.hostile_notes} fake VMCOREINFO notes planted" in log


@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib"])
def test_output_has_only_the_real_vmcoreinfo(rig_case, tmp_path, fmt):
    """The output's one VMCOREINFO note is the kernel's (the real release), so
    vmcore-dmesg (ELF) and makedumpfile (kdump) read the guest's own log."""
    case = rig_case(CASE)
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", "--format", fmt, check=True)
    if fmt == "elf":
        texts = [n.desc for n in _notes(out) if n.name == b"VMCOREINFO"]
        assert len(texts) == 1
        assert vmcoreinfo.parse_text(texts[0])["OSRELEASE"] == case.meta["kernel_version"]
        log = consumers.vmcore_dmesg(out)
    else:
        log = consumers.makedumpfile_dmesg(out)
    assert f"RIG-MARKER {case.marker}" in log


def test_dmesg_prints_the_real_log(rig_case):
    case = rig_case(CASE)
    proc = run_cli("dmesg", case.core, check=True)
    assert f"RIG-MARKER {case.marker}" in proc.stdout
    assert "RIG-HOSTILE" not in proc.stderr


def test_info_shows_the_real_kernel(rig_case):
    case = rig_case(CASE)
    v = json.loads(run_cli("info", "--json", case.core, check=True).stdout)["vmcoreinfo"]
    assert v["source"] == "guest RAM scan" and v["verified"]
    assert v["osrelease"] == case.meta["kernel_version"]
    text = run_cli("info", case.core, check=True).stdout
    assert f"kernel       {case.meta['kernel_version']}" in text
    assert FAKE_RELEASE not in text


def test_every_fake_is_rejected(rig_case):
    """Each note in guest RAM, taken on its own, through the same check.

    In this rig the kernel's note lies below the guest's tmpfs pages, so the
    scan meets it first; this test does not rely on that order: it puts
    every candidate the scan finds through the verification, and only the
    kernel's own may pass.
    """
    case = rig_case(CASE)
    with open_qemu_core(case.core) as qc:
        roots = qc.vcpu_page_tables()
        assert roots, "the vCPUs are in long mode: page-table roots to check against"
        verified, rejected, fakes = [], 0, 0
        for gpa in vmcoreinfo.scan_candidates(qc.memory, qc.host.fd):
            try:
                info = vmcoreinfo.candidate_at(
                    qc.memory, gpa, "scan", vmcoreinfo.MAX_SCAN_NOTE_SIZE, roots,
                    layout_of=qc.arch.kernel_layout,
                )  # fmt: skip
            except vmcoreinfo.VmcoreInfoError:
                rejected += 1  # the huge descsz ones
                fakes += 1
                continue
            fakes += info.osrelease.startswith(FAKE_RELEASE)
            if info.verified:
                verified.append(info.osrelease)
    assert verified == [case.meta["kernel_version"]]
    assert fakes >= case.spec.hostile_notes
    assert rejected >= 4  # descsz of 4 GiB and of just over 1 MiB
