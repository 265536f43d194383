"""End to end: real QEMU cores from the rig, compared with QEMU's own dump."""

from __future__ import annotations

import json
import stat

import pytest
from elftools.elf.elffile import ELFFile
from support.runs import run_cli
from support.vmcore_compare import compare_vmcores

pytestmark = pytest.mark.rig

REFERENCE_CASES = ["q72-pc-512", "q10-q35-512", "q10-q35-4608"]


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_extract_equals_qemu_dump(rig_case, tmp_path, name):
    case = rig_case(name)
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "--quiet", check=True)

    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b
    assert cmp.differing_pages == []
    assert cmp.pages == sum(size for _, size in cmp.ranges_b) // 4096
    # The marker the guest logged is in guest RAM, so it must be in the file.
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # Sparse: never more disk than the core itself.
    assert out.stat().st_blocks <= case.core.stat().st_blocks
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
        assert elf["e_phoff"] == 64
        assert next(elf.iter_segments())["p_type"] == "PT_NOTE"
        loads = list(elf.iter_segments(type="PT_LOAD"))
    # QEMU's rule for paging=false: p_vaddr = p_paddr on every RAM load; one
    # more load maps the kernel text at its virtual address (DESIGN.md).
    ram = [x for x in loads if x["p_vaddr"] == x["p_paddr"]]
    assert len(ram) == len(cmp.ranges_b)
    (text,) = [x for x in loads if x["p_vaddr"] != x["p_paddr"]]
    assert text["p_vaddr"] >= 0xFFFFFFFF80000000
    holder = next(x for x in ram if x["p_paddr"] <= text["p_paddr"] < x["p_paddr"] + x["p_memsz"])
    assert text["p_offset"] == holder["p_offset"] + text["p_paddr"] - holder["p_paddr"]
    out.unlink()


def test_ram_above_4g_is_split_around_the_hole(rig_case):
    case = rig_case("q10-q35-4608")
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    ranges = [(r["gpa"], r["end"]) for r in info["ranges"]]
    assert any(start >= 1 << 32 for start, _ in ranges)
    assert max(end for _, end in ranges) == (1 << 32) + (4608 - 2048) * (1 << 20)


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_info_describes_the_guest(rig_case, name):
    case = rig_case(name)
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert info["qemu"]["version"].startswith(case.spec.qemu + ".")
    assert info["vcpus"] == case.spec.smp
    assert info["accelerator"] == "tcg"
    machine_word = {"pc": "i440fx", "q35": "q35"}[case.spec.machine]
    assert machine_word in info["machine"]
    assert all(r["in_core"] == "yes" for r in info["ranges"])
    assert info["missing"] == []
    with open(case.reference, "rb") as f:
        ref = sorted(
            (s["p_paddr"], s["p_paddr"] + s["p_memsz"])
            for s in ELFFile(f).iter_segments(type="PT_LOAD")
        )
    assert [(r["gpa"], r["end"]) for r in info["ranges"]] == ref
    assert info["ram_bytes"] == sum(e - s for s, e in ref)
    # Plain (non-JSON) output is a table with the same ranges.
    text = run_cli("info", case.core, check=True).stdout
    for r in info["ranges"]:
        assert f"{r['gpa']:#018x}" in text and r["block"] in text
