"""QEMU profiles as hostile input: what validation refuses, in one DebugInfoError."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import drgn
import pytest

from qemu_vmcore.debugger.profile_backend import ProfileDebugger, find_profile
from qemu_vmcore.debugger.profile_format import MAX_FILE, parse_profile
from qemu_vmcore.errors import DebugInfoError, QemuStateError

GOOD = {
    "format": "qemu-vmcore-profile",
    "version": 1,
    "build_id": "ab" * 20,
    "qemu_version": "10.0.0",
    "types": [
        {"kind": "int", "name": "int", "size": 4, "signed": True},
        {"kind": "struct", "name": "S", "size": 16, "absent": ["old"],
         "members": {"a": [0, 0, 0], "next": [64, 2, 0], "bits": [32, 0, 3]}},
        {"kind": "pointer", "size": 8, "target": 1},
    ],
    "names": {"S": 1},
    "absent_types": ["T"],
    "variables": {"head": [0x1000, 2]},
    "absent_variables": ["gone"],
    "static_locals": {"f::s": None},
    "constants": {"C": 3},
    "absent_constants": ["D"],
}  # fmt: skip


def _parse(data: object) -> object:
    return parse_profile(json.dumps(data).encode(), Path("p.json"))


def test_a_good_profile_answers_the_protocol():
    dbg = ProfileDebugger(drgn.Program(drgn.host_platform), None, _parse(GOOD), 0x1000)
    assert dbg.has_variable("head") and not dbg.has_variable("gone")
    assert dbg.has_type("S") and not dbg.has_type("T")
    assert dbg.constant("C") == 3
    with pytest.raises(QemuStateError):
        dbg.constant("D")
    s = dbg.object_at("S", 0x4000)
    assert s.sizeof() == 16 and s.has_member("a") and not s.has_member("old")
    assert s.member("next").address() == 0x4008
    assert dbg.variable("head").address() == 0x2000
    assert dbg.static_local("f", "s", "S") is None


@pytest.mark.parametrize(
    "ask", [lambda d: d.has_variable("x"), lambda d: d.has_type("X"), lambda d: d.constant("E"),
            lambda d: d.object_at("S", 0).has_member("new")],
)  # fmt: skip
def test_a_name_the_profile_does_not_know_is_loud(ask):
    dbg = ProfileDebugger(drgn.Program(drgn.host_platform), None, _parse(GOOD), 0)
    with pytest.raises(DebugInfoError, match="the profile lacks"):
        ask(dbg)


def _broken(path: tuple, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format",), "volatility"),
        (("version",), 2),
        (("build_id",), "xyz"),
        (("types", 2, "target"), 3),
        (("types", 2, "target"), 2),  # a pointer to itself
        (("types", 1, "size"), 1 << 40),
        (("types", 1, "members", "a"), [1 << 20, 0, 0]),
        (("types", 0, "kind"), ["int"]),
        (("types", 0, "size"), True),
        (("variables", "head"), [1 << 60, 2]),
        (("names", "S"), -1),
        (("constants", "C"), 1 << 70),
        (("types",), {}),
    ],
)
def test_corruption_is_one_error(path, value):
    with pytest.raises(DebugInfoError, match="p.json") as e:
        _parse(_broken(path, value))
    assert "\n" not in e.value.message


def test_bad_json_and_huge_files_are_refused():
    for raw in (b"", b"{", b"\xff", b"[" * 100_000, b" " * (MAX_FILE + 1)):
        with pytest.raises(DebugInfoError, match="not a qemu-vmcore profile"):
            parse_profile(raw, Path("p.json"))


def test_lookup_by_build_id(tmp_path, monkeypatch):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{'cd' * 20}.json").write_text("{}")
    monkeypatch.setenv("QEMU_VMCORE_PROFILE_PATH", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert find_profile(bytes.fromhex("cd" * 20)) == tmp_path / "b" / f"{'cd' * 20}.json"
    assert find_profile(bytes.fromhex("ef" * 20)) is None
    assert find_profile(None) is None
