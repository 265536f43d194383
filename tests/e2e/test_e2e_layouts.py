"""End to end: the memory layouts people run, each compared with QEMU's own dump.

Machine types, QEMU versions, vCPU counts, RAM above 4 GiB, pc-dimm (cold and
hot-plugged), virtio-mem, memfd and file-backed RAM, a guest still in its
firmware, and KVM where it works (see LAYOUT_CASES in tests/support/rig.py).
"""

from __future__ import annotations

import json

import pytest
from elftools.elf.elffile import ELFFile
from support.runs import assert_one_line_error, run_cli
from support.vmcore_compare import compare_vmcores, note_segment

from qemu_vmcore.layouts import elf as E

pytestmark = pytest.mark.rig

G4 = 1 << 32
MIB = 1 << 20

#: Every layout case that has QEMU's dump to compare with.
COMPARED = [
    "q72-q35-smp4",
    "q10-pc-smp4",
    "q72-pc-hi",
    "q10-q35-dimm",
    "q72-pc-dimm-hotplug",
    "q10-q35-virtiomem",
    "q72-pc-virtiomem",
    "q10-pc-memfd",
    "q10-q35-file",
    "q72-pc-bios",
    "q10-q35-bios",
    "q72-pc-kvm",
]


def info(case, *args) -> dict:
    return json.loads(run_cli("info", "--json", case.core, *args, check=True).stdout)


def reference_ranges(case) -> list[tuple[int, int]]:
    with open(case.reference, "rb") as f:
        return sorted(
            (s["p_paddr"], s["p_paddr"] + s["p_memsz"])
            for s in ELFFile(f).iter_segments(type="PT_LOAD")
        )


def device_of(data: dict, gpa: int) -> dict:
    return next(r["device"] for r in data["ranges"] if r["gpa"] == gpa)


@pytest.mark.parametrize("name", COMPARED)
def test_layout_equals_qemu_dump(rig_case, tmp_path, name):
    """Same ranges as QEMU's dump, every page identical; info shows those ranges."""
    case = rig_case(name)
    out = tmp_path / "vmcore"
    proc = run_cli("extract", case.core, "-o", out, "--quiet", check=True)
    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b
    assert cmp.differing_pages == []
    assert cmp.pages == sum(size for _, size in cmp.ranges_b) // 4096
    data = info(case)
    assert [(r["gpa"], r["end"]) for r in data["ranges"]] == reference_ranges(case)
    assert data["vcpus"] == case.spec.smp and data["missing"] == []
    assert data["accelerator"] == case.spec.accel
    stale = case.spec.accel != "tcg"  # only TCG keeps the vCPU state current
    assert all(c["stale"] == stale for c in data["vcpu_states"])
    assert ("may be stale" in proc.stderr) == stale
    out.unlink()


@pytest.mark.parametrize("name", ["q72-q35-smp4", "q10-pc-smp4"])
def test_four_vcpus_notes_equal_qemus(rig_case, tmp_path, name):
    case = rig_case(name)
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", check=True)
    ours, ref = note_segment(out), note_segment(case.reference)
    assert [(n.name, n.type) for n in E.iter_notes(ref)][:8] == [(b"CORE", 1)] * 4 + [
        (b"QEMU", 0)
    ] * 4
    assert ours == ref
    assert info(case)["machine"].startswith(
        {"pc": "pc-i440fx-", "q35": "pc-q35-"}[case.spec.machine]
    )


def test_pc_ram_above_4g(rig_case):
    """pc with max-ram-below-4g=256M: pc.ram is split around the PCI hole."""
    data = info(rig_case("q72-pc-hi"))
    ram = [(r["gpa"], r["end"]) for r in data["ranges"] if r["block"] == "pc.ram"]
    assert ram == [(0, 256 * MIB), (G4, G4 + 256 * MIB)]


def test_dimms_in_info(rig_case):
    cold = info(rig_case("q10-q35-dimm"))
    assert device_of(cold, G4) == {
        "device": "pc-dimm",
        "device_id": "dimm1",
        "backend": "memory-backend-ram",
        "backend_id": "mem1",
    }
    assert device_of(cold, 0)["backend_id"] == "pc.ram"
    hot = info(rig_case("q72-pc-dimm-hotplug"))
    dimms = [
        (r["gpa"], r["end"], r["device"]["device_id"]) for r in hot["ranges"] if r["gpa"] >= G4
    ]
    assert dimms == [(G4, G4 + 128 * MIB, "dimm1"), (G4 + 128 * MIB, G4 + 256 * MIB, "dimm2")]
    text = run_cli("info", rig_case("q72-pc-dimm-hotplug").core, check=True).stdout
    assert "pc-dimm dimm2 (memory-backend-ram mem2)" in text


@pytest.mark.parametrize("name", ["q10-q35-virtiomem", "q72-pc-virtiomem"])
def test_virtio_mem_only_plugged_blocks(rig_case, name):
    """320 of the device's 512 MiB are plugged: only those are guest RAM."""
    case = rig_case(name)
    (wait,) = [s for s in case.meta["qmp"]["after_ready"] if s["command"] == "wait-qom"]
    plugged = wait["return"]
    assert plugged == 320 * MIB
    data = info(case)
    vmem = [r for r in data["ranges"] if r["block"].endswith("/vmem0")]
    assert sum(r["size"] for r in vmem) == plugged
    assert vmem[0]["gpa"] == G4
    assert vmem[0]["device"] == {
        "device": "virtio-mem-pci",
        "device_id": "vm0",
        "backend": "memory-backend-ram",
        "backend_id": "vmem0",
    }


def test_memfd_ram_is_in_the_core(rig_case):
    """memfd (share=on) is shmem with no name left: the kernel dumps it as anonymous
    shared memory, so no backing file is needed (or possible)."""
    case = rig_case("q10-pc-memfd")
    data = info(case)
    assert {r["in_core"] for r in data["ranges"]} == {"yes"}
    assert device_of(data, 0)["backend"] == "memory-backend-memfd"
    from qemu_vmcore.host.core import open_core

    with open_core(case.core) as host:
        assert any(m.path.startswith("/memfd:") for m in host.mappings)


def test_file_backed_ram_is_read_from_its_file(rig_case, tmp_path):
    case = rig_case("q10-q35-file")
    ram_file = case.dir / "guest-ram"
    out = tmp_path / "vmcore"
    proc = run_cli("extract", case.core, "-o", out, check=True)
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and str(ram_file) in notes[0] and "0x0-0x20000000" in notes[0]
    out.unlink()
    result = json.loads(run_cli("extract", case.core, "-o", out, "-q", "--json", check=True).stdout)
    assert [b["path"] for b in result["backing_files"]] == [str(ram_file)]
    data = info(case)
    ram = next(r for r in data["ranges"] if r["gpa"] == 0)
    assert (ram["in_core"], ram["backing_file"]) == ("backing file", str(ram_file))
    assert ram["device"]["backend"] == "memory-backend-file"
    text = run_cli("info", case.core, check=True).stdout
    assert f"read from its backing file {ram_file}" in text


def test_no_backing_files_is_an_error(rig_case, tmp_path):
    case = rig_case("q10-q35-file")
    proc = run_cli("extract", case.core, "-o", tmp_path / "vmcore", "--no-backing-files")
    assert_one_line_error(proc, "0x0-0x20000000", str(case.dir / "guest-ram"), "--no-backing-files")
    assert list(tmp_path.iterdir()) == []
    data = info(case, "--no-backing-files")
    assert next(r for r in data["ranges"] if r["gpa"] == 0)["in_core"] == "no"


def test_file_gone_names_ranges_and_file(rig_case, tmp_path):
    case = rig_case("q72-pc-file-gone")
    ram_file = case.dir / "guest-ram"
    assert not ram_file.exists()
    out = tmp_path / "vmcore"
    proc = run_cli("extract", case.core, "-o", out)
    assert_one_line_error(proc, "0x0-0x20000000", str(ram_file), "is gone", "--allow-missing")
    assert list(tmp_path.iterdir()) == []
    (missing,) = info(case)["missing"]
    assert (missing["gpa"], missing["backing_file"]) == (0, str(ram_file))
    assert missing["backing_file_problem"].startswith("is gone")
    proc = run_cli("extract", case.core, "-o", out, "-q", "--allow-missing")
    assert proc.returncode == 0 and "0x0-0x20000000 not in the core" in proc.stderr


def test_file_backed_ram_with_the_gdb_backend(rig_case, tmp_path):
    case = rig_case("q10-q35-file")
    out = tmp_path / "vmcore"
    proc = run_cli("extract", "--backend", "gdb", case.core, "-o", out, "-q", check=True)
    assert str(case.dir / "guest-ram") in proc.stderr
    assert compare_vmcores(out, case.reference).equal


#: ELF header fields that describe the file's layout, where we differ from
#: QEMU on purpose: program headers right after the ELF header, and no
#: section headers (makedumpfile 1.7.2 reads phdrs at 64; README).
LAYOUT_FIELDS = {"e_phoff", "e_shoff", "e_ehsize", "e_shentsize", "e_shnum", "e_shstrndx"}


@pytest.mark.parametrize("name", ["q72-pc-bios", "q10-q35-bios"])
def test_firmware_only_guest_header_and_notes(rig_case, tmp_path, name):
    """No kernel: the first vCPU is in SeaBIOS's real mode, so QEMU writes
    EM_386 with 32-bit notes, in an ELF64 file (the BIOS ends at 4 GiB)."""
    case = rig_case(name)
    out = tmp_path / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", check=True)
    with open(out, "rb") as f, open(case.reference, "rb") as g:
        ours, ref = ELFFile(f).header, ELFFile(g).header
        assert (ours["e_ident"]["EI_CLASS"], ours["e_machine"]) == ("ELFCLASS64", "EM_386")
        assert {k: v for k, v in ours.items() if k not in LAYOUT_FIELDS} == {
            k: v for k, v in ref.items() if k not in LAYOUT_FIELDS
        }
    assert note_segment(out) == note_segment(case.reference)
    data = info(case)
    assert data["vcpu_states"][0]["mode"] != "long"
    assert data["vmcoreinfo"]["source"] is None
