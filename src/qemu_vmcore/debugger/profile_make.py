"""Making a QEMU profile from DWARF, and recording which names the code reads.

A profile (see :mod:`qemu_vmcore.debugger.profile_format`) holds the types,
variables, static locals and constants that the qemu/ and arch/ layers read,
and nothing more. Which ones those are is declared once, in
:mod:`qemu_vmcore.qemu.profile_names`; :class:`Recorder` wraps the drgn
backend to find out what a run really touches, so that a test can hold the
declaration to the code (and the declaration can be made again from it).

Both sides name a struct the same way, with :func:`struct_key`: its tag, or
the typedef it was reached through, or (anonymous) the member path that led
to it, e.g. ``ArchCPU.env`` or ``CPUState.node``.
"""

from __future__ import annotations

import os
from pathlib import Path

import drgn

from qemu_vmcore.debugger import Value
from qemu_vmcore.debugger.drgn_backend import (
    DEBUG_INFO_HINT,
    MAX_STATIC_SUFFIX,
    DrgnDebugger,
    missing_debug_info,
)
from qemu_vmcore.debugger.profile_format import FORMAT, VERSION, Names
from qemu_vmcore.errors import DebugInfoError

_COMPOUND = (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION, drgn.TypeKind.CLASS)


def struct_key(t: drgn.Type, path: str) -> str | None:
    """The declaration's name of the struct ``t`` is or points to, else None.

    ``path`` names an anonymous struct: where it was reached from.
    """
    alias = None
    while True:
        if t.kind == drgn.TypeKind.TYPEDEF:
            alias = t.name
            t = t.type
        elif t.kind in (drgn.TypeKind.POINTER, drgn.TypeKind.ARRAY):
            alias = None
            t = t.type
        else:
            break
    if t.kind not in _COMPOUND:
        return None
    return t.tag or alias or path


# -- recording ------------------------------------------------------------------


class RecordingValue:
    """A :class:`Value` that notes every member its struct is asked for."""

    __slots__ = ("_inner", "_path", "_names")

    def __init__(self, inner: Value, path: str, names: Names) -> None:
        self._inner = inner
        self._path = path
        self._names = names

    def _note(self, name: str) -> str:
        key = struct_key(self._inner._obj.type_, self._path)  # type: ignore[attr-defined]
        if key is None:
            key = self._path
        self._names.members.setdefault(key, set()).add(name)
        return key

    def member(self, name: str) -> RecordingValue:
        key = self._note(name)
        return RecordingValue(self._inner.member(name), f"{key}.{name}", self._names)

    def has_member(self, name: str) -> bool:
        self._note(name)
        return self._inner.has_member(name)

    def deref(self) -> RecordingValue:
        return RecordingValue(self._inner.deref(), self._path, self._names)

    def index(self, i: int) -> RecordingValue:
        return RecordingValue(self._inner.index(i), self._path, self._names)

    def __int__(self) -> int:
        return int(self._inner)

    def address(self) -> int:
        return self._inner.address()

    def sizeof(self) -> int:
        return self._inner.sizeof()

    def string(self, limit: int = 256) -> str:
        return self._inner.string(limit)


class Recorder:
    """A :class:`~qemu_vmcore.debugger.Debugger` over the drgn backend that
    records every name asked for, in ``names``."""

    def __init__(self, inner: DrgnDebugger) -> None:
        self.inner = inner
        self.names = Names()

    def __getattr__(self, attr: str) -> object:  # prog, executable
        return getattr(self.inner, attr)

    def has_variable(self, name: str) -> bool:
        self.names.variables.add(name)
        return self.inner.has_variable(name)

    def variable(self, name: str) -> RecordingValue:
        self.names.variables.add(name)
        return RecordingValue(self.inner.variable(name), name, self.names)

    def static_local(self, function: str, name: str, type_name: str) -> RecordingValue | None:
        self.names.static_locals.add((function, name, type_name))
        self.names.types.add(type_name)
        v = self.inner.static_local(function, name, type_name)
        return None if v is None else RecordingValue(v, type_name, self.names)

    def object_at(self, type_name: str, address: int) -> RecordingValue:
        self.names.types.add(type_name)
        return RecordingValue(self.inner.object_at(type_name, address), type_name, self.names)

    def has_type(self, type_name: str) -> bool:
        self.names.types.add(type_name)
        return self.inner.has_type(type_name)

    def constant(self, name: str) -> int:
        self.names.constants.add(name)
        return self.inner.constant(name)

    def read(self, address: int, size: int) -> bytes:
        return self.inner.read(address, size)


# -- making a profile -----------------------------------------------------------


def load_executable(executable: Path, debug_file: Path | None = None) -> tuple[drgn.Program, int]:
    """``executable``'s debug info in a drgn program of its own (no core);
    returns the program and the bias drgn applied to its addresses.

    :raises DebugInfoError: the files are not the same build, or no debug
        info is found (drgn's standard places and debuginfod are searched).
    """
    from elftools.elf.elffile import ELFFile

    from qemu_vmcore.debugger.drgn_backend import _check_given_file, _quiet_drgn_log
    from qemu_vmcore.host.core import check_regular
    from qemu_vmcore.host.executable import read_build_id

    _quiet_drgn_log()
    os.environ.setdefault("DRGN_DISABLE_PLUGINS", "*")
    check_regular(executable)
    build_id = read_build_id(executable)
    if debug_file is not None:
        check_regular(debug_file)
        _check_given_file(debug_file, build_id)
    with open(executable, "rb") as f:
        loads = [s for s in ELFFile(f).iter_segments(type="PT_LOAD")]
        if not loads:
            raise DebugInfoError(f"{executable}: no PT_LOAD segments: not an executable")
        start = min(s["p_vaddr"] for s in loads) & ~0xFFF
        end = max(s["p_vaddr"] + s["p_memsz"] for s in loads)
    prog = drgn.Program(drgn.host_platform)
    main = prog.main_module(os.fspath(executable), create=True)
    main.address_range = (start, end)
    try:
        main.try_file(os.fspath(executable), force=True)
        if main.wants_debug_file():
            if debug_file is not None:
                main.try_file(os.fspath(debug_file), force=True)
            else:
                prog.load_module_debug_info(main)
    except Exception as e:  # noqa: BLE001 -- libdrgn's errors include plain Exception
        raise DebugInfoError(f"cannot load QEMU's debug info: {e}", hint=DEBUG_INFO_HINT) from None
    if main.wants_debug_file():
        raise missing_debug_info(executable, build_id)
    return prog, main.debug_file_bias or 0


class _Exporter:
    def __init__(self, declared: Names) -> None:
        self.declared = declared
        self.types: list[dict] = []
        self.memo: dict[tuple, int] = {}

    def _add(self, memo: tuple, entry: dict) -> int:
        found = self.memo.get(memo)
        if found is not None:
            return found
        self.memo[memo] = len(self.types)
        self.types.append(entry)
        return len(self.types) - 1

    def export(self, t: drgn.Type, path: str, alias: str | None = None) -> int:
        kind = t.kind
        if kind == drgn.TypeKind.TYPEDEF:
            return self.export(t.type, path, t.name)
        if kind in _COMPOUND:
            key = t.tag or alias or path
            memo = ("S", key, t.size)
            if memo in self.memo:
                return self.memo[memo]
            entry: dict = {"kind": "union" if kind == drgn.TypeKind.UNION else "struct",
                           "name": key, "size": t.size}  # fmt: skip
            tid = self._add(memo, entry)
            if t.is_complete():
                members, absent = {}, []
                for name in sorted(self.declared.members.get(key, ())):
                    if not t.has_member(name):
                        absent.append(name)
                        continue
                    m = t.member(name)
                    sub = self.export(m.type, f"{key}.{name}")
                    members[name] = [m.bit_offset, sub, m.bit_field_size or 0]
                entry["members"] = members
                entry["absent"] = absent
            return tid
        if kind == drgn.TypeKind.POINTER:
            target = self.export(t.type, path)
            return self._add(("P", target, t.size), {"kind": "pointer", "size": t.size,
                                                     "target": target})  # fmt: skip
        if kind == drgn.TypeKind.ARRAY:
            elem = self.export(t.type, path)
            return self._add(("A", elem, t.length), {"kind": "array", "target": elem,
                                                     "length": t.length})  # fmt: skip
        if kind in (drgn.TypeKind.INT, drgn.TypeKind.ENUM):
            signed = (t.type if kind == drgn.TypeKind.ENUM else t).is_signed
            name = t.name if kind == drgn.TypeKind.INT else "int"
            return self._add(
                ("I", name, t.size, signed),
                {"kind": "int", "name": name, "size": t.size, "signed": signed},
            )
        if kind == drgn.TypeKind.BOOL:
            return self._add(("B", t.name, t.size), {"kind": "bool", "name": t.name,
                                                     "size": t.size})  # fmt: skip
        if kind == drgn.TypeKind.FLOAT:
            return self._add(("F", t.name, t.size), {"kind": "float", "name": t.name,
                                                     "size": t.size})  # fmt: skip
        return self._add(("V",), {"kind": "void"})  # void, functions


def make_profile(executable: Path, declared: Names, debug_file: Path | None = None) -> dict:
    """The profile of ``executable`` (see profile_format), as a JSON-ready dict.

    :param declared: the names to export; the qemu/ layer's declaration
        (``qemu.profile_names.DECLARED``), which the caller passes down, so
        that this layer knows no QEMU names of its own.
    """
    from qemu_vmcore.host.executable import read_build_id, read_qemu_version

    prog, bias = load_executable(executable, debug_file)
    build_id = read_build_id(executable)
    if build_id is None:
        raise DebugInfoError(f"{executable}: no build-id: a profile could not be matched to a core")
    ex = _Exporter(declared)
    names: dict[str, int] = {}
    absent_types: list[str] = []
    for name in sorted(declared.types):
        try:
            t = prog.type(name)
        except LookupError:
            absent_types.append(name)
            continue
        names[name] = ex.export(t, name)
    variables: dict[str, list[int]] = {}
    absent_variables: list[str] = []
    for name in sorted(declared.variables):
        try:
            v = prog.variable(name)
        except LookupError:
            absent_variables.append(name)
            continue
        variables[name] = [(v.address_ - bias) % (1 << 64), ex.export(v.type_, name)]
    static_locals: dict[str, int | None] = {}
    for function, name, _type in sorted(declared.static_locals):
        static_locals[f"{function}::{name}"] = _static_local(prog, name, bias)
    constants: dict[str, int] = {}
    absent_constants: list[str] = []
    for name in sorted(declared.constants):
        try:
            constants[name] = int(prog.constant(name))
        except LookupError:
            absent_constants.append(name)
    return {
        "format": FORMAT,
        "version": VERSION,
        "build_id": build_id.hex(),
        "qemu_version": read_qemu_version(executable),
        "types": ex.types,
        "names": names,
        "absent_types": absent_types,
        "variables": variables,
        "absent_variables": absent_variables,
        "static_locals": static_locals,
        "constants": constants,
        "absent_constants": absent_constants,
    }


def _static_local(prog: drgn.Program, name: str, bias: int) -> int | None:
    # As DrgnDebugger.static_local finds it: GCC's local ELF symbol "name.N".
    for candidate in (name, *(f"{name}.{n}" for n in range(MAX_STATIC_SUFFIX))):
        found = prog.symbols(candidate)
        if found:
            return (found[0].address - bias) % (1 << 64)
    return None


def write_profile(executable: Path, output: Path, declared: Names, *,
                  debug_file: Path | None = None, force: bool = False) -> dict:  # fmt: skip
    """Write ``executable``'s profile of the names ``declared`` to ``output``
    (complete or not at all)."""
    import json
    import tempfile

    from qemu_vmcore.errors import OutputError

    if output.exists() and not force:
        raise OutputError(f"{output}: exists (pass --force to replace it)", path=output)
    profile = make_profile(executable, declared, debug_file)
    text = json.dumps(profile, separators=(",", ":"), sort_keys=True) + "\n"
    directory = output.parent if str(output.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, output)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise OutputError(f"{output}: {e.strerror or e}", path=output) from None
    return profile
