"""The rig's case specs and QEMU command lines (no QEMU is run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import rig

X86 = [s for s in rig.STANDARD_CASES.values() if s.arch == "x86_64" and not s.stripped]
AARCH64 = [s for s in rig.STANDARD_CASES.values() if s.arch == "aarch64"]


@pytest.mark.parametrize("spec", X86, ids=lambda s: s.name)
def test_x86_specs_stored_before_arch_still_match(spec):
    """meta.json of an x86 case made before CaseSpec.arch has no arch field."""
    stored = spec.as_dict()
    del stored["arch"], stored["start_paused"]
    assert spec.matches(stored)
    assert not rig.CaseSpec(**{**spec.__dict__, "arch": "aarch64"}).matches(stored)


@pytest.mark.parametrize("spec", X86, ids=lambda s: s.name)
def test_x86_command_line(spec):
    argv = rig.qemu_argv(spec, Path("/case"), "m")
    assert argv[:5] == [
        str(rig.qemu_dir(spec.qemu) / "build" / "qemu-system-x86_64"),
        "-L",
        "/usr/share/seabios",
        "-L",
        "/usr/share/qemu",
    ]
    assert "-cpu" not in argv and "-S" not in argv
    if not spec.firmware_only:
        assert argv[argv.index("-kernel") + 1] == str(rig.rig_cache() / "guest" / "vmlinuz")
        assert argv[argv.index("-append") + 1].startswith("console=ttyS0 ")


def test_aarch64_cases():
    names = rig.case_names("aarch64")
    assert names == [s.name for s in AARCH64] and len(names) >= 8
    assert {s.qemu for s in AARCH64} == {"7.2", "10.0"}
    assert all(s.machine == "virt" and not s.firmware_only for s in AARCH64)
    # QEMU writes no virtual addresses for arm: paging=true would be paging=false.
    assert all("paging" not in s.extra_references for s in AARCH64)
    assert not set(names) & set(rig.case_names("x86_64"))


def test_stripped_cases_run_the_stripped_copy():
    """The stripped-QEMU cases: not in case_names nor DWARF_CASES, and their
    QEMU is the stripped copy, not the build's own binary."""
    assert rig.STRIPPED_CASES
    for spec in rig.STRIPPED_CASES:
        assert spec.stripped and spec.name in rig.STANDARD_CASES
        assert spec.name not in rig.case_names(spec.arch) and spec.name not in rig.DWARF_CASES
        argv = rig.qemu_argv(spec, Path("/case"), "m")
        assert argv[0] == str(rig.qemu_dir(spec.qemu) / "stripped" / "qemu-system-x86_64")
        assert argv[0] != str(rig.qemu_binary(spec.qemu, spec.arch))


@pytest.mark.parametrize("spec", AARCH64, ids=lambda s: s.name)
def test_aarch64_command_line(spec):
    argv = rig.qemu_argv(spec, Path("/case"), "m")
    assert argv[0] == str(rig.qemu_binary(spec.qemu, "aarch64"))
    assert argv[0].endswith("/qemu-system-aarch64") and "-L" not in argv
    assert argv[argv.index("-machine") + 1] == "virt,dump-guest-core=on"
    assert argv[argv.index("-cpu") + 1].startswith("max")
    assert argv[argv.index("-kernel") + 1] == str(rig.guest_dir("aarch64") / "vmlinuz")
    assert argv[argv.index("-append") + 1].startswith("console=ttyAMA0 ")
    assert ("-S" in argv) == spec.start_paused
    assert ("vmcoreinfo" in argv) == spec.vmcoreinfo_device


def test_filter_reference_lies_in_ram():
    x86 = rig.extra_reference_arguments("filter")
    assert (x86["begin"], x86["length"]) == (rig.FILTER_BEGIN, rig.FILTER_LENGTH)
    arm = rig.extra_reference_arguments("filter", "aarch64")
    assert arm == {**x86, "begin": 0x40000000 + rig.FILTER_BEGIN}
    assert rig.EXTRA_REFERENCES["filter"]["begin"] == rig.FILTER_BEGIN  # not changed in place


def test_paths_per_arch():
    assert rig.guest_dir() == rig.guest_dir("x86_64") == rig.rig_cache() / "guest"
    assert rig.guest_dir("aarch64") == rig.rig_cache() / "guest-arm64"
    assert rig.qemu_binary("7.2") == rig.qemu_dir("7.2") / "build" / "qemu-system-x86_64"
    with pytest.raises(rig.RigError, match="unknown guest architecture"):
        rig.guest_dir("arm64")


def test_firmware_only_is_x86_only():
    spec = rig.CaseSpec("x", qemu="10.0", machine="virt", arch="aarch64", firmware_only=True)
    with pytest.raises(rig.RigError, match="x86_64 only"):
        rig.qemu_argv(spec, Path("/case"), "m")
