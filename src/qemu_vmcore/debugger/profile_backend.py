"""Profile backend: QEMU's structures read through a profile, with no DWARF.

The profile's types are built as drgn types (drgn's ``Program.struct_type``
and kin), on a drgn program that has the core but no debug info: values are
then the drgn backend's own :class:`DrgnValue`, and read exactly as through
DWARF. Only the lookups by name differ. A name that the profile neither has
nor lists as absent from its build is one this qemu-vmcore reads but the
profile's maker did not know: that is a loud error, never a silent "absent".
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import drgn

from qemu_vmcore.debugger.drgn_backend import (
    DrgnDebugger,
    DrgnValue,
    _quiet_drgn_log,
    _serve_unsaved_from_file,
)
from qemu_vmcore.debugger.profile_format import Profile, load_profile
from qemu_vmcore.errors import CoreFileError, DebugInfoError, QemuStateError, VmcoreError
from qemu_vmcore.host.core import HostCore

REMAKE_HINT = "make the profile again with this qemu-vmcore: qemu-vmcore profile QEMU -o FILE"


def profile_dirs() -> list[Path]:
    """Where profiles are looked for: $QEMU_VMCORE_PROFILE_PATH (colon-separated),
    then $XDG_DATA_HOME/qemu-vmcore/profiles (~/.local/share by default)."""
    dirs = [Path(d) for d in os.environ.get("QEMU_VMCORE_PROFILE_PATH", "").split(":") if d]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    dirs.append(Path(data) / "qemu-vmcore" / "profiles")
    return dirs


def find_profile(build_id: bytes | None) -> Path | None:
    """The profile ``<build-id>.json`` in :func:`profile_dirs`, if any."""
    if not build_id:
        return None
    for d in profile_dirs():
        path = d / f"{build_id.hex()}.json"
        if path.is_file():
            return path
    return None


class ProfileValue(DrgnValue):
    """A DrgnValue whose member lookups must be ones the profile knows."""

    __slots__ = ()
    #: struct name -> member names the profile has or lists as absent
    known: dict[str, frozenset[str]] = {}
    profile_path: Path = Path()

    def _check(self, name: str) -> None:
        t = self._obj.type_.unaliased()
        if t.kind == drgn.TypeKind.POINTER:
            t = t.type.unaliased()
        tag = getattr(t, "tag", None)
        if tag is None or name not in self.known.get(tag, ()):
            raise DebugInfoError(
                f"{self.profile_path}: the profile lacks {tag or self._expr}.{name}, "
                "which this qemu-vmcore reads",
                hint=REMAKE_HINT,
            )

    def member(self, name: str) -> DrgnValue:
        self._check(name)
        return super().member(name)

    def has_member(self, name: str) -> bool:
        self._check(name)
        return super().has_member(name)


class ProfileDebugger(DrgnDebugger):
    """:class:`~qemu_vmcore.debugger.Debugger` over a profile and the core."""

    def __init__(self, prog: drgn.Program, executable: Path | None, profile: Profile,
                 bias: int) -> None:  # fmt: skip
        super().__init__(prog, executable)
        self.profile = profile
        self.bias = bias
        self._built: list[drgn.Type | None] = [None] * len(profile.types)
        known: dict[str, set[str]] = {}
        for t in profile.types:
            if t["kind"] in ("struct", "union"):
                names = known.setdefault(t["name"], set())
                names.update(t.get("members", {}), t.get("absent", ()))
        self.value = type("ProfileValue", (ProfileValue,), {
            "__slots__": (),
            "known": {k: frozenset(v) for k, v in known.items()},
            "profile_path": profile.path,
        })  # fmt: skip

    def _lacks(self, what: str) -> DebugInfoError:
        return DebugInfoError(
            f"{self.profile.path}: the profile lacks {what}, which this qemu-vmcore reads",
            hint=REMAKE_HINT,
        )

    def _type(self, i: int) -> drgn.Type:
        t = self._built[i]
        if t is not None:
            return t
        e = self.profile.types[i]
        kind, prog = e["kind"], self.prog
        if kind == "int":
            t = prog.int_type(e["name"], e["size"], e["signed"])
        elif kind == "bool":
            t = prog.bool_type(e["name"], e["size"])
        elif kind == "float":
            t = prog.float_type(e["name"], e["size"])
        elif kind == "pointer":
            t = prog.pointer_type(self._type(e["target"]), e["size"])
        elif kind == "array":
            t = prog.array_type(self._type(e["target"]), e.get("length"))
        elif kind == "void":
            t = prog.void_type()
        else:
            make = prog.union_type if kind == "union" else prog.struct_type
            if e.get("size") is None:
                t = make(e["name"])
            else:
                members = [
                    drgn.TypeMember(functools.partial(self._member_type, sub, bits), name, off)
                    for name, (off, sub, bits) in sorted(
                        e["members"].items(), key=lambda kv: kv[1][0]
                    )
                ]
                t = make(e["name"], e["size"], members)
        self._built[i] = t
        return t

    def _member_type(self, i: int, bits: int) -> drgn.Type | drgn.Object:
        if not bits:
            return self._type(i)
        return drgn.Object(self.prog, self._type(i), bit_field_size=bits)

    def _object(self, type_index: int, address: int, expr: str) -> DrgnValue:
        try:
            obj = drgn.Object(self.prog, self._type(type_index), address=address)
        except (TypeError, ValueError, OverflowError) as e:
            raise DebugInfoError(f"{self.profile.path}: corrupt qemu-vmcore profile: {e}") from None
        return self.value(obj, expr)

    def has_variable(self, name: str) -> bool:
        if name in self.profile.variables:
            return True
        if name in self.profile.absent_variables:
            return False
        raise self._lacks(f"the variable {name!r}")

    def variable(self, name: str) -> DrgnValue:
        if not self.has_variable(name):
            raise QemuStateError(f"QEMU's debug info has no variable {name!r}")
        address, tid = self.profile.variables[name]
        return self._object(tid, (self.bias + address) % (1 << 64), name)

    def static_local(self, function: str, name: str, type_name: str) -> DrgnValue | None:
        key = f"{function}::{name}"
        if key not in self.profile.static_locals:
            raise self._lacks(f"the static local {key}")
        address = self.profile.static_locals[key]
        if address is None:
            return None
        return self.object_at(type_name, (self.bias + address) % (1 << 64))

    def object_at(self, type_name: str, address: int) -> DrgnValue:
        if not self.has_type(type_name):
            raise QemuStateError(f"QEMU's debug info has no type {type_name!r}")
        tid = self.profile.names[type_name]
        return self._object(tid, address, f"({type_name})@{address:#x}")

    def has_type(self, type_name: str) -> bool:
        if type_name in self.profile.names:
            return True
        if type_name in self.profile.absent_types:
            return False
        raise self._lacks(f"the type {type_name!r}")

    def constant(self, name: str) -> int:
        if name in self.profile.constants:
            return self.profile.constants[name]
        if name in self.profile.absent_constants:
            raise QemuStateError(f"QEMU's debug info has no constant {name!r}")
        raise self._lacks(f"the constant {name!r}")


def open_profile(
    core: HostCore,
    path: Path,
    *,
    qemu: Path | None = None,
    first_lookups: tuple[str, ...] = (),
    **_ignored: object,
) -> ProfileDebugger:
    """Open ``core`` through the profile at ``path``.

    :param qemu: the QEMU executable (default: the path the core names), only
        to serve the read-only memory the core left out (its .rodata).
    :raises DebugInfoError: the profile is corrupt or not of the core's build.
    """
    from qemu_vmcore.host.executable import read_build_id

    profile = load_profile(path)
    want = core.executable_build_id()
    if want is None:
        raise DebugInfoError(
            f"{core.path}: the core does not hold its executable's build-id, "
            f"so the profile {path} cannot be matched to it"
        )
    if want != profile.build_id:
        raise DebugInfoError(
            f"{path}: a profile of build-id {profile.build_id.hex()}, not of the core's "
            f"QEMU (build-id {want.hex()})",
            hint="make the profile from the exact QEMU build that produced the core",
            path=path,
        )
    bias = core.executable_load_bias()
    if bias is None:
        raise CoreFileError(f"{core.path}: the core does not say where QEMU was loaded")
    _quiet_drgn_log()
    os.environ.setdefault("DRGN_DISABLE_PLUGINS", "*")
    prog = drgn.Program()
    try:
        prog.set_core_dump(os.dup(core.fd))
    except Exception as e:  # noqa: BLE001 -- libdrgn's errors include plain Exception
        raise CoreFileError(f"{core.path}: drgn cannot read the core: {e}") from None
    executable: Path | None = None
    candidate = qemu or (Path(core.executable) if core.executable else None)
    if candidate is not None:
        try:
            if read_build_id(candidate) == want:
                executable = candidate
        except (OSError, VmcoreError):
            pass
        if executable is None and qemu is not None:
            raise DebugInfoError(f"{qemu}: not the QEMU build of the core (build-id {want.hex()})")
    if executable is not None and core.executable is not None:
        _serve_unsaved_from_file(prog, core, executable)
    return ProfileDebugger(prog, executable, profile, bias)
