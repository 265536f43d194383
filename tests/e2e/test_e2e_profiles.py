"""QEMU profiles on real rig cores: the same output as through DWARF, on every
case, both QEMU versions and both guest architectures; the lookup in the
profile directories; refusals in one line.
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pytest
from support import rig
from support.profiles import record
from support.runs import assert_one_line_error, run_cli
from support.vmcore_compare import compare_vmcores

from qemu_vmcore.qemu import profile_names

pytestmark = pytest.mark.rig

# The stripped-QEMU cases have no DWARF to compare with: test_e2e_debuginfo.py.
CASES = list(rig.DWARF_CASES)


@pytest.fixture(scope="session")
def profile_of(tmp_path_factory):
    """``profile_of(case)``: the profile of the case's own QEMU build (made once)."""
    made: dict[Path, Path] = {}
    where = tmp_path_factory.mktemp("profiles")

    def get(case: rig.Case) -> Path:
        exe = case.qemu_binary
        if exe not in made:
            out = where / f"{case.spec.qemu}-{case.spec.arch}.json"
            run_cli("profile", exe, "-o", out, check=True)
            made[exe] = out
        return made[exe]

    return get


def _same_run(case: rig.Case, profile: Path, *args: object, tmp_path: Path) -> None:
    dwarf = run_cli(*args, case.core)
    prof = run_cli(*args, case.core, "--profile", profile)
    assert (prof.returncode, prof.stdout, prof.stderr) == (
        dwarf.returncode,
        dwarf.stdout,
        dwarf.stderr,
    )


@pytest.mark.parametrize("name", CASES)
def test_profile_gives_what_dwarf_gives(rig_case, profile_of, tmp_path, name):
    case = rig_case(name)
    profile = profile_of(case)
    assert profile.stat().st_size < 64 << 10  # small: the names read, nothing more
    for args in (("info", "--json"), ("dmesg",)):
        _same_run(case, profile, *args, tmp_path=tmp_path)
    a, b = tmp_path / "dwarf", tmp_path / "profile"
    da = run_cli("extract", "-q", "--accept-inconsistent", case.core, "-o", a)
    db = run_cli("extract", "-q", "--accept-inconsistent", case.core, "-o", b, "--profile", profile)
    assert (db.returncode, db.stderr) == (da.returncode, da.stderr)
    if da.returncode == 0:
        assert filecmp.cmp(a, b, shallow=False)
    for f in (a, b):
        f.unlink(missing_ok=True)


@pytest.mark.parametrize("name", CASES)
def test_a_recording_reads_nothing_outside_the_declaration(rig_case, name):
    case = rig_case(name)
    assert record(case.core).outside(profile_names.DECLARED) == []


def test_profile_of_another_build_is_refused(rig_case, profile_of, tmp_path):
    other = profile_of(rig_case("q72-pc-512"))
    case = rig_case("q10-q35-512")
    out = tmp_path / "vmcore"
    proc = run_cli("extract", case.core, "-o", out, "--profile", other)
    want = json.loads(other.read_text())["build_id"]
    assert_one_line_error(proc, "build-id", want)
    assert list(tmp_path.iterdir()) == []


def _env(**kw: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("QEMU_VMCORE_PROFILE_PATH", "XDG_DATA_HOME")
    }
    env.update(kw)
    return env


@pytest.mark.parametrize("variable", ["QEMU_VMCORE_PROFILE_PATH", "XDG_DATA_HOME"])
def test_profile_found_by_build_id(rig_case, profile_of, tmp_path, variable):
    case = rig_case("q10-q35-512")
    profile = profile_of(case)
    build_id = json.loads(profile.read_text())["build_id"]
    if variable == "XDG_DATA_HOME":
        home, where = tmp_path / "data", tmp_path / "data" / "qemu-vmcore" / "profiles"
    else:
        home = where = tmp_path / "profiles"
    where.mkdir(parents=True)
    env = _env(
        **{variable: f"{tmp_path}/nowhere:{home}" if variable != "XDG_DATA_HOME" else str(home)}
    )
    # A corrupt profile under the build-id's name shows it is the one read.
    (where / f"{build_id}.json").write_text('{"format": "qemu-vmcore-profile", "version": 1}')
    assert_one_line_error(run_cli("info", case.core, env=env), "corrupt qemu-vmcore profile")
    (where / f"{build_id}.json").write_bytes(profile.read_bytes())
    out = tmp_path / "vmcore"
    run_cli("extract", "-q", case.core, "-o", out, env=env, check=True)
    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b and cmp.differing_pages == []
    out.unlink()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"format": "qemu-vmcore-profile", "version": 2}',
        "CUT",
        "TYPES",
    ],
)
def test_corrupt_profile_is_one_line_error(rig_case, profile_of, tmp_path, text):
    case = rig_case("q10-q35-512")
    good = profile_of(case).read_text()
    if text == "CUT":
        text = good[: len(good) // 2]
    elif text == "TYPES":
        data = json.loads(good)
        data["types"][0] = {"kind": "pointer", "size": 8, "target": 0}
        text = json.dumps(data)
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    out = tmp_path / "vmcore"
    assert_one_line_error(run_cli("extract", case.core, "-o", out, "--profile", bad), str(bad))
    assert not out.exists()
