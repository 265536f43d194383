"""The QEMU profile file: its format, and its validation as hostile input.

A profile is a small JSON file made by ``qemu-vmcore profile`` from one QEMU
build's debug info, for hosts that have none. It holds exactly what the
qemu/ and arch/ layers read (the names of qemu/profile_names.py)::

    {"format": "qemu-vmcore-profile", "version": 1,
     "build_id": "hex", "qemu_version": "10.0.0" or null,
     "types": [TYPE, ...],            # referred to by index
     "names": {"MachineClass": 12, "VMCoreInfoState *": 40, ...},
     "absent_types": [...],           # declared, not in this build
     "variables": {"cpus_queue": [ADDRESS, TYPE-INDEX], ...},
     "absent_variables": [...],
     "static_locals": {"vmcoreinfo_realize::vmcoreinfo_state": ADDRESS or null},
     "constants": {"ARM_FEATURE_EL2": 11, ...}, "absent_constants": [...]}

ADDRESS is relative to the load bias (the link-time address). A TYPE is one of
``{"kind": "int", "name", "size", "signed"}``, ``{"kind": "bool"|"float",
"name", "size"}``, ``{"kind": "pointer", "size", "target"}``, ``{"kind":
"array", "target", "length" (null: flexible)}``, ``{"kind": "void"}`` and
``{"kind": "struct"|"union", "name", "size", "members": {NAME: [BIT-OFFSET,
TYPE-INDEX, BIT-FIELD-SIZE (0: none)]}, "absent": [NAME, ...]}`` (members and
absent missing for an incomplete struct). Members of anonymous structs and
unions are listed flat, at their offsets in the outer struct.

The file is read like a core: bounded in size, every index and offset
checked, and any violation a :class:`~qemu_vmcore.errors.DebugInfoError` of
one line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from qemu_vmcore.errors import DebugInfoError

FORMAT = "qemu-vmcore-profile"
VERSION = 1

#: A profile of QEMU 10.0 is ~100 KiB; a file this large is not one.
MAX_FILE = 16 << 20
MAX_TYPES = 200_000
MAX_MEMBERS = 20_000
MAX_NAME = 512
#: No QEMU struct (CPUArchState included) comes near 16 MiB.
MAX_SIZE = 1 << 24
MAX_LENGTH = 1 << 32
MAX_ADDRESS = 1 << 48
MAX_CONSTANT = 1 << 64

_KINDS = {"int", "bool", "float", "pointer", "array", "void", "struct", "union"}
_BUILD_ID = re.compile(r"[0-9a-f]{2,128}")


@dataclass(frozen=True)
class Profile:
    """A validated profile."""

    path: Path
    build_id: bytes
    qemu_version: str | None
    types: list[dict]
    names: dict[str, int]
    absent_types: frozenset[str]
    variables: dict[str, tuple[int, int]]
    absent_variables: frozenset[str]
    static_locals: dict[str, int | None]
    constants: dict[str, int]
    absent_constants: frozenset[str]


@dataclass
class Names:
    """A set of QEMU names: what a run touched, or what a profile holds."""

    variables: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    static_locals: set[tuple[str, str, str]] = field(default_factory=set)
    constants: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)

    def outside(self, declared: Names) -> list[str]:
        """What this set has that ``declared`` lacks, one line each."""
        out = [f"variable {n}" for n in sorted(self.variables - declared.variables)]
        out += [f"type {n}" for n in sorted(self.types - declared.types)]
        out += [
            f"static local {f}::{n}"
            for f, n, _ in sorted(self.static_locals - declared.static_locals)
        ]
        out += [f"constant {n}" for n in sorted(self.constants - declared.constants)]
        for key, names in sorted(self.members.items()):
            out += [f"member {key}.{n}" for n in sorted(names - declared.members.get(key, set()))]
        return out

    def update(self, other: Names) -> None:
        self.variables |= other.variables
        self.types |= other.types
        self.static_locals |= other.static_locals
        self.constants |= other.constants
        for key, names in other.members.items():
            self.members.setdefault(key, set()).update(names)


class _Bad(Exception):
    pass


def load_profile(path: Path) -> Profile:
    """Read and validate the profile at ``path``.

    :raises DebugInfoError: it cannot be read, or it is not a valid profile.
    """
    from qemu_vmcore.host.core import open_regular

    try:
        fd = open_regular(path)
        try:
            raw = os.read(fd, MAX_FILE + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise DebugInfoError(f"{path}: cannot read the profile: {e.strerror or e}") from None
    return parse_profile(raw, path)


def parse_profile(raw: bytes, path: Path) -> Profile:
    """Validate the profile ``raw`` (the contents of ``path``)."""
    if len(raw) > MAX_FILE:
        raise DebugInfoError(f"{path}: not a qemu-vmcore profile (over {MAX_FILE >> 20} MiB)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DebugInfoError(f"{path}: not a qemu-vmcore profile (bad JSON: {msg})") from None
    try:
        return _validate(data, path)
    except _Bad as e:
        raise DebugInfoError(f"{path}: corrupt qemu-vmcore profile: {e}") from None


def _obj(v: object, what: str) -> dict:
    if not isinstance(v, dict):
        raise _Bad(f"{what} is not an object")
    return v


def _list(v: object, what: str, limit: int) -> list:
    if not isinstance(v, list) or len(v) > limit:
        raise _Bad(f"{what} is not a list of at most {limit:,} items")
    return v


def _int(v: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise _Bad(f"{what} is not an integer in [{lo:#x}, {hi:#x})")
    return v


def _str(v: object, what: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        raise _Bad(f"{what} is not a name of 1 to {MAX_NAME} characters")
    return v


def _names(v: object, what: str) -> frozenset[str]:
    return frozenset(_str(n, what) for n in _list(v, what, MAX_TYPES))


def _validate(data: object, path: Path) -> Profile:
    top = _obj(data, "the file")
    if top.get("format") != FORMAT:
        raise _Bad(f"format is not {FORMAT!r}")
    if top.get("version") != VERSION:
        raise _Bad(f"version {top.get('version')!r} is not {VERSION} (made by another qemu-vmcore)")
    bid = top.get("build_id")
    if not isinstance(bid, str) or not _BUILD_ID.fullmatch(bid) or len(bid) % 2:
        raise _Bad("build_id is not a hex string")
    version = top.get("qemu_version")
    if version is not None and (not isinstance(version, str) or len(version) > MAX_NAME):
        raise _Bad("qemu_version is not a string")
    types = _list(top.get("types"), "types", MAX_TYPES)
    n = len(types)
    for i, t in enumerate(types):
        _check_type(_obj(t, f"types[{i}]"), f"types[{i}]", n)
    _check_acyclic(types)
    names = {
        _str(k, "a type name"): _int(v, f"names[{k!r}]", 0, n)
        for k, v in _obj(top.get("names"), "names").items()
    }
    variables = {}
    for k, v in _obj(top.get("variables"), "variables").items():
        pair = _list(v, f"variables[{k!r}]", 2)
        if len(pair) != 2:
            raise _Bad(f"variables[{k!r}] is not [address, type]")
        variables[_str(k, "a variable name")] = (
            _int(pair[0], f"variables[{k!r}] address", 0, MAX_ADDRESS),
            _int(pair[1], f"variables[{k!r}] type", 0, n),
        )
    static_locals = {
        _str(k, "a static local"): (
            None if v is None else _int(v, f"static_locals[{k!r}]", 0, MAX_ADDRESS)
        )
        for k, v in _obj(top.get("static_locals"), "static_locals").items()
    }
    constants = {
        _str(k, "a constant name"): _int(v, f"constants[{k!r}]", -MAX_CONSTANT, MAX_CONSTANT)
        for k, v in _obj(top.get("constants"), "constants").items()
    }
    return Profile(
        path=path,
        build_id=bytes.fromhex(bid),
        qemu_version=version,
        types=types,
        names=names,
        absent_types=_names(top.get("absent_types"), "absent_types"),
        variables=variables,
        absent_variables=_names(top.get("absent_variables"), "absent_variables"),
        static_locals=static_locals,
        constants=constants,
        absent_constants=_names(top.get("absent_constants"), "absent_constants"),
    )


def _check_type(t: dict, what: str, n: int) -> None:
    kind = t.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise _Bad(f"{what} has an unknown kind")
    if kind in ("int", "bool", "float"):
        _str(t.get("name"), f"{what} name")
        size = _int(t.get("size"), f"{what} size", 1, 17)
        if kind == "int" and not isinstance(t.get("signed"), bool):
            raise _Bad(f"{what} signed is not a bool")
        if kind == "bool" and size > 8:
            raise _Bad(f"{what} is a bool of over 8 bytes")
    elif kind == "pointer":
        if t.get("size") not in (4, 8):
            raise _Bad(f"{what} size is not 4 or 8")
        _int(t.get("target"), f"{what} target", 0, n)
    elif kind == "array":
        _int(t.get("target"), f"{what} target", 0, n)
        if t.get("length") is not None:
            _int(t.get("length"), f"{what} length", 0, MAX_LENGTH)
    elif kind in ("struct", "union"):
        _str(t.get("name"), f"{what} name")
        size = t.get("size")
        if size is None:
            if "members" in t:
                raise _Bad(f"{what} has members but no size")
            return
        _int(size, f"{what} size", 0, MAX_SIZE)
        members = _obj(t.get("members"), f"{what} members")
        if len(members) > MAX_MEMBERS:
            raise _Bad(f"{what} has over {MAX_MEMBERS:,} members")
        for name, m in members.items():
            _str(name, f"{what} member name")
            entry = _list(m, f"{what}.{name}", 3)
            if len(entry) != 3:
                raise _Bad(f"{what}.{name} is not [bit offset, type, bit-field size]")
            _int(entry[0], f"{what}.{name} bit offset", 0, size * 8 + 1)
            _int(entry[1], f"{what}.{name} type", 0, n)
            _int(entry[2], f"{what}.{name} bit-field size", 0, 65)
        _names(t.get("absent", []), f"{what} absent")


def _check_acyclic(types: list[dict]) -> None:
    """Pointers and arrays are built before what refers to them (struct members
    are built lazily): a chain of them must end, at something else."""
    state = [0] * len(types)  # 0 unseen, 1 on the current chain, 2 done
    for start in range(len(types)):
        chain = []
        i = start
        while state[i] == 0 and types[i]["kind"] in ("pointer", "array"):
            state[i] = 1
            chain.append(i)
            i = types[i]["target"]
        if state[i] == 1:
            raise _Bad(f"types[{i}] refers to itself through pointers and arrays")
        for j in chain:
            state[j] = 2
        state[i] = 2
    for i, t in enumerate(types):
        if t["kind"] == "array":
            elem = types[t["target"]]
            if elem["kind"] == "void" or (
                elem["kind"] in ("struct", "union") and elem.get("size") is None
            ):
                raise _Bad(f"types[{i}] is an array of elements with no size")
        if t["kind"] in ("struct", "union"):
            for name, (_, sub, bits) in t.get("members", {}).items():
                if bits and types[sub]["kind"] not in ("int", "bool"):
                    raise _Bad(f"types[{i}].{name} is a bit field of no integer")
