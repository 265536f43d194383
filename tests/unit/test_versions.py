"""qemu.versions: the one table of QEMU names, its sections, and the code's use of it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from qemu_vmcore.errors import NotQemuError
from qemu_vmcore.qemu import state, versions
from qemu_vmcore.qemu.versions import Alternative, OptionalMember

SRC = Path(versions.__file__).resolve().parents[1]  # src/qemu_vmcore
RIG = Path("/var/cache/qemu-vmcore-rig")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _release(since: str) -> tuple[int, ...]:
    assert re.fullmatch(r"\d+\.\d+", since), since
    return tuple(int(p) for p in since.split("."))


# --- 1. Renamed -------------------------------------------------------------


@pytest.mark.parametrize("fact", versions.RENAMED, ids=lambda f: f[0].name)
def test_a_renamed_fact_lists_its_names_newest_first_with_their_releases(fact):
    assert len(fact) >= 2, "a single name has not been renamed: it belongs in section 3"
    assert all(isinstance(a, Alternative) and IDENT.fullmatch(a.name) for a in fact)
    assert len({a.name for a in fact}) == len(fact)
    releases = [_release(a.since) for a in fact]
    assert releases == sorted(releases, reverse=True) and len(set(releases)) == len(releases)


def test_the_cpu_list_rename_is_the_one_of_qemu_8_2():
    assert versions.CPU_LIST[0] == Alternative("cpus_queue", "8.2")
    assert versions.CPU_LIST[1].name == "cpus"


# --- 2. Optional ------------------------------------------------------------


def test_optional_members_name_their_struct_and_what_their_absence_means():
    seen = set()
    for m in versions.OPTIONAL_MEMBERS:
        assert isinstance(m, OptionalMember)
        assert IDENT.fullmatch(m.struct) and IDENT.fullmatch(m.name), m
        assert m.absent.strip(), m
        assert (m.struct, m.name) not in seen
        seen.add((m.struct, m.name))
    assert all(m in versions.OPTIONAL_MEMBERS for m in versions.MR_EXCLUDING_FLAGS)
    assert {m.struct for m in versions.MR_EXCLUDING_FLAGS} == {"MemoryRegion"}


def test_optional_variables_are_identifiers():
    fn, var, type_name = versions.VMCOREINFO_STATE
    assert IDENT.fullmatch(fn) and IDENT.fullmatch(var) and type_name.endswith("*")
    assert all(IDENT.fullmatch(f) for f in versions.OWNERS_OF_PRIVATE_TYPES)


# --- 3. Fixed ---------------------------------------------------------------


def test_fixed_globals_are_distinct_identifiers_none_of_them_renamed():
    renamed = {a.name for fact in versions.RENAMED for a in fact}
    assert all(IDENT.fullmatch(g) for g in versions.FIXED_GLOBALS)
    assert len(set(versions.FIXED_GLOBALS)) == len(versions.FIXED_GLOBALS)
    assert not renamed & set(versions.FIXED_GLOBALS)


def test_fixed_qom_names_and_members():
    for name in (
        versions.CPU_TYPE_SUFFIX,
        versions.ACCEL_TYPE_SUFFIX,
        versions.MEMORY_REGION_TYPE,
        versions.MEMORY_BACKEND_TYPE,
        versions.VIRTIO_MEM_TYPE,
        versions.PC_MACHINE_PREFIX,
        versions.OBJECTS_PATH,
        versions.TCG_ACCEL,
    ):
        assert isinstance(name, str) and name and name == name.strip()
    assert IDENT.fullmatch(versions.CPU_LIST_LINK) and IDENT.fullmatch(versions.VIRTIO_MEM_STRUCT)
    assert all(IDENT.fullmatch(f) for f in versions.MR_KIND_FLAGS)
    optional = {m.name for m in versions.MR_EXCLUDING_FLAGS}
    assert not optional & set(versions.MR_KIND_FLAGS)
    for struct, path in versions.ACPI_MEMORY_HOTPLUG.values():
        assert IDENT.fullmatch(struct) and all(IDENT.fullmatch(p) for p in path)


# --- the table against QEMU's source, where the rig has it ---------------------


def _tree(release: str) -> Path:
    src = RIG / f"qemu-{release}" / "src"
    if not src.is_dir():
        pytest.skip(f"no QEMU {release} source tree in the rig")
    return src


#: Where QEMU defines its globals (system/ was softmmu/ before 8.1); not the
#: whole tree, which would take seconds to read.
GLOBALS_DIRS = (".", "softmmu", "system", "hw/core")


def _defines(src: Path, pattern: str) -> bool:
    rx = re.compile(pattern, re.M)
    files = [f for d in GLOBALS_DIRS for f in sorted((src / d).glob("*.c"))]
    return any(rx.search(f.read_text(errors="replace")) for f in files)


@pytest.mark.parametrize(("release", "name"), [("7.2", "cpus"), ("10.0", "cpus_queue")])
def test_each_tree_defines_the_cpu_list_name_its_release_picks(release, name):
    src = _tree(release)
    newest_known = next(
        a for a in versions.CPU_LIST if _release(a.since) <= _release(release)
    )  # the name this release should have, by the table's since fields
    assert newest_known.name == name
    assert _defines(src, rf"^CPUTailQ {name} = QTAILQ_HEAD_INITIALIZER")


@pytest.mark.parametrize("release", ["7.2", "10.0"])
def test_each_tree_defines_the_fixed_globals(release):
    src = _tree(release)
    for name in versions.FIXED_GLOBALS:
        assert _defines(src, rf"^\w+ \*?{name}\b"), name


# --- the code uses the table ------------------------------------------------

PROBES = {"has_member", "has_variable", "variable", "static_local"}


def _literal_probes(path: Path, root: Path = SRC) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in PROBES
        ):
            continue
        for arg in node.args:
            if isinstance(arg, ast.JoinedStr) or (
                isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ):
                out.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_probe_or_global_lookup_in_src_takes_a_string_literal():
    """Every ``has_member``/``has_variable`` probe and every global looked up
    by name takes a table entry, so each optional or global name is in
    versions.py (plain ``.member("...")`` reads may spell their member)."""
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in _literal_probes(path)]
    assert found == []


def test_the_scan_sees_a_literal_probe(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(mr, dbg):\n    return mr.has_member("rdm") or dbg.has_variable(f"x")\n')
    assert len(_literal_probes(bad, tmp_path)) == 2


# --- the unknown-QEMU error -------------------------------------------------


class FakeDebugger:
    """Only the globals named; the tests never get past the lookup."""

    def __init__(self, *variables: str) -> None:
        self.variables = set(variables)

    def has_variable(self, name: str) -> bool:
        return name in self.variables


def test_a_build_with_either_cpu_list_name_gets_it():
    assert versions.pick_variable(FakeDebugger("cpus"), versions.CPU_LIST) == "cpus"
    both = FakeDebugger("cpus", "cpus_queue")
    assert versions.pick_variable(both, versions.CPU_LIST) == "cpus_queue"


def test_the_unknown_qemu_error_names_each_alternative_with_its_releases():
    with pytest.raises(NotQemuError) as e:
        state.vcpus(FakeDebugger(versions.ADDRESS_SPACE_MEMORY))
    assert e.value.message.startswith(
        "neither cpus_queue (QEMU 8.2+) nor cpus (QEMU 2.0 until 8.2) exists in this build: "
        "not a QEMU system emulator"
    )


def test_the_error_text_follows_the_since_fields():
    three = (Alternative("c", "9.1"), Alternative("b", "5.0"), Alternative("a", "1.0"))
    assert versions.describe(three) == (
        "none of c (QEMU 9.1+), b (QEMU 5.0 until 9.1) or a (QEMU 1.0 until 5.0)"
    )
    with pytest.raises(NotQemuError, match=r"^c \(QEMU 9\.1\+\) does not exist in this build"):
        versions.pick_variable(FakeDebugger(), three[:1])


def test_a_missing_fixed_global_is_not_qemu():
    with pytest.raises(NotQemuError, match="^current_machine does not exist in this build"):
        state.machine(FakeDebugger())
    assert versions.require_variable(FakeDebugger("ram_list"), versions.RAM_LIST) == "ram_list"
