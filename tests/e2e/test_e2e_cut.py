"""End to end: rig cores cut short, as size limits cut real ones.

Each core is copied up to a cut (sparse, with ``support.runs.sparse_copy``):
- inside guest RAM (half-way through it, or at 1 GiB, the RLIMIT_CORE some
  platforms set);
- just after guest RAM, before what the process mapped above it: in most
  rig cores that is the thread arena holding the current FlatView (the
  vCPU thread that last changed the memory topology allocated it).

Where the FlatView is past the cut, the map is rendered from the
MemoryRegion tree (qemu/render.py), which the main thread allocated early
in the file. Either way ``extract --allow-missing`` writes a vmcore whose
present pages equal QMP's dump of the same guest and names the missing
ranges; without the option the run stops in one line; ``info`` works, and
``dmesg`` prints the log when VMCOREINFO and the log ring survived the cut
(or says, in one line, which of them was lost).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support.runs import assert_one_line_error, run_cli, sparse_copy
from support.vmcore_compare import compare_present, note_segment

from qemu_vmcore.layouts import elf as E
from qemu_vmcore.source import open_qemu_core

pytestmark = pytest.mark.rig

PAGE = 4096
GIB = 1 << 30

#: (case, cut): QEMU 7.2 and 10.0, pc and q35, two with RAM above 4 GiB.
CUTS = [
    ("q10-q35-4608", "1g"),  # inside RAM, below 4 GiB: all of RAM above 4 GiB is lost
    ("q10-q35-4608", "after-ram"),
    ("q72-pc-hi", "mid-ram"),
    ("q72-pc-hi", "after-ram"),
    ("q72-q35-smp4", "after-ram"),
    ("q10-pc-smp4", "mid-ram"),
    ("q10-pc-smp4", "after-ram"),
]


def _file_offset(host, hva: int) -> int | None:
    for s in host.segments:
        if s.hva <= hva < s.end:
            return s.file_offset + hva - s.hva
    return None


@pytest.fixture(scope="module")
def layouts():
    """``layouts(case)``: where guest RAM and the FlatView lie in the whole core's file."""
    made = {}

    def get(case):
        if case.spec.name not in made:
            with open_qemu_core(case.core) as qc:
                ram = [
                    (_file_offset(qc.host, r.hva), _file_offset(qc.host, r.hva) + r.size)
                    for r in qc.ranges
                    if r.block != "pc.bios"  # the BIOS ROM lies far off, with the libraries
                ]
                view = qc.dbg.variable("address_space_memory").member("current_map")
                flat = _file_offset(qc.host, int(view))
            made[case.spec.name] = (min(a for a, _ in ram), max(b for _, b in ram), flat)
        return made[case.spec.name]

    return get


def _cut_at(kind: str, ram_start: int, ram_end: int) -> int:
    if kind == "1g":
        assert ram_start < GIB < ram_end, "1 GiB must fall inside guest RAM here"
        return GIB
    if kind == "mid-ram":
        return (ram_start + ram_end) // 2 // PAGE * PAGE
    return -(-ram_end // PAGE) * PAGE  # after-ram: the first page past it


@pytest.fixture
def cut_core(rig_case, layouts, tmp_path):
    def make(name: str, kind: str):
        case = rig_case(name)
        ram_start, ram_end, flat = layouts(case)
        at = _cut_at(kind, ram_start, ram_end)
        path = tmp_path / "core"
        sparse_copy(case.core, path, at)
        return case, path, at, flat

    return make


def _notes(path: Path) -> list[tuple[bytes, int, bytes]]:
    return [(n.name, n.type, n.desc) for n in E.iter_notes(note_segment(path))]


@pytest.mark.parametrize(("name", "kind"), CUTS)
def test_cut_core(cut_core, tmp_path, name, kind):
    case, core, at, flat = cut_core(name, kind)
    rendered = flat >= at  # the FlatView is past the cut: the map is rendered
    out = tmp_path / "vmcore"

    # Without --allow-missing: one line that names the cut and the option.
    proc = run_cli("extract", core, "-o", out)
    assert_one_line_error(proc, "truncated core", f"{at:,} of", "--allow-missing")
    assert not out.exists()

    # info: works, and says where the map came from.
    info = json.loads(run_cli("info", "--json", core, check=True).stdout)
    assert info["map"]["kind"] == ("region tree" if rendered else "flatview")
    assert info["vcpus"] == case.spec.smp
    # A cut inside RAM loses some; one after it may lose none (or the BIOS ROM).
    assert bool(info["missing"]) or kind == "after-ram"
    assert info["truncated"] == {"file_size": at, "expected_size": case.core.stat().st_size}
    text = run_cli("info", core, check=True).stdout
    assert ("rendered from address_space_memory.root" in text) == rendered
    assert f"cut short: {at:,} of {case.core.stat().st_size:,} bytes" in text

    # extract --allow-missing: the present pages are QEMU's; the missing ones named.
    proc = run_cli("extract", "--allow-missing", "--json", core, "-o", out, check=True)
    data = json.loads(proc.stdout)
    missing = [(m["gpa"], m["end"]) for m in data["missing"]]
    assert missing == [(m["gpa"], m["end"]) for m in info["missing"]]
    assert all(m["why"] == "truncated" for m in data["missing"])
    assert data["map"]["kind"] == info["map"]["kind"]
    for gpa, end in missing:
        assert f"warning: guest {gpa:#x}-{end:#x} not in the core (truncated)" in proc.stderr
    assert ("guest-physical map rendered from" in proc.stderr) == rendered
    compared, differing = compare_present(out, case.reference, missing)
    assert differing == [] and compared > 0

    # Notes: every vCPU's, as QEMU wrote them; VMCOREINFO where it survived.
    ours, ref = _notes(out), _notes(case.reference)
    vcpu = [n for n in ref if n[0] != b"VMCOREINFO"]
    assert ours[: len(vcpu)] == vcpu
    survived = info["vmcoreinfo"]["source"] is not None
    assert ours == (ref if survived else vcpu)
    out.unlink()

    # dmesg: the guest's log where VMCOREINFO survived, else one line naming the loss.
    proc = run_cli("dmesg", core)
    if not survived:
        assert_one_line_error(proc, "no VMCOREINFO found", "truncated in the core")
    elif proc.returncode == 0:
        assert case.marker in proc.stdout
    else:  # VMCOREINFO is there, the ring is not (SMP kernels allocate it high)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the kernel's log ring is not in the core: ")
        assert last.endswith("is truncated in the core")
        assert "Traceback" not in proc.stderr and kind != "after-ram"


def test_the_cuts_reach_both_paths(rig_case, layouts):
    """The cases above exercise the rendered map and the FlatView both."""
    kinds = set()
    for name, kind in CUTS:
        ram_start, ram_end, flat = layouts(rig_case(name))
        kinds.add(flat >= _cut_at(kind, ram_start, ram_end))
    assert kinds == {True, False}


@pytest.mark.parametrize("where", ["program headers", "notes"])
def test_a_cut_inside_the_headers_or_notes_is_one_line(rig_case, tmp_path, where):
    """A core cut before its own description (the program headers, or the
    notes: NT_FILE, NT_PRSTATUS...) holds nothing to go by: one error line,
    for extract (with --allow-missing too) and info alike."""
    case = rig_case("q10-q35-4608")
    with open(case.core, "rb") as f:
        elf = ELFFile(f)
        if where == "program headers":
            at = elf["e_phoff"] + elf["e_phentsize"] * 3 + 10
        else:
            note = next(elf.iter_segments(type="PT_NOTE"))
            at = note["p_offset"] + note["p_filesz"] // 2
    core = tmp_path / "core"
    sparse_copy(case.core, core, at)
    out = tmp_path / "vmcore"
    for args in (("extract", core, "-o", out), ("extract", "--allow-missing", core, "-o", out),
                 ("info", core)):  # fmt: skip
        proc = run_cli(*args)
        assert_one_line_error(proc, str(core), "truncated core", f"inside its {where}")
        assert not out.exists()
