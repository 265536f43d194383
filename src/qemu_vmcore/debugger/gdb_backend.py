"""gdb backend: QEMU's structures read through gdb's Python API, inside gdb.

This module imports ``gdb``, so it loads only in gdb's own Python (the
``dump-guest-memory`` command, :mod:`qemu_vmcore.frontends.gdb.command`). gdb already
has QEMU's executable and its core open; values come from ``gdb.Value``,
types from ``gdb.lookup_type`` and raw bytes from the inferior's memory. gdb
serves the executable's read-only sections (.rodata, which a default core
lacks) from the file itself, so nothing like the drgn backend's "unsaved file
ranges" is needed. Bulk guest RAM never goes through gdb: the host-core layer
copies it from the core file directly.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import gdb

from qemu_vmcore.debugger import describe_access
from qemu_vmcore.errors import DebugInfoError, QemuStateError
from qemu_vmcore.host.core import HostCore

T = TypeVar("T")

DEBUG_INFO_HINT = (
    "install QEMU's debug symbols (Debian/Ubuntu: the qemu-system-x86-dbgsym package from "
    "the debug archive; Fedora: dnf debuginfo-install qemu-system-x86-core), enable "
    "debuginfod (set DEBUGINFOD_URLS), or load an unstripped build (gdb: `file PATH`; "
    "qemu-vmcore: --qemu PATH) or its debug file (gdb: `symbol-file PATH`; --debug-file PATH)"
)

_ADDRESS_RE = re.compile(r"at address (0x[0-9a-fA-F]+)")
_STRUCTS = (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION)


def _fault_address(e: gdb.MemoryError) -> int | None:
    m = _ADDRESS_RE.search(str(e))
    return int(m.group(1), 16) if m else None


def _faults(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn gdb's read and lookup errors into QemuStateError."""

    @functools.wraps(fn)
    def wrapper(self: GdbValue, *args: object) -> T:
        try:
            return fn(self, *args)
        except gdb.MemoryError as e:
            address = _fault_address(e)
            where = f"address {address:#x} is not in the core" if address is not None else e
            raise QemuStateError(
                f"cannot read {self._expr}{describe_access(fn.__name__, args)}: {where}",
                address=address,
            ) from None
        except (gdb.error, LookupError, TypeError, ValueError) as e:
            raise QemuStateError(
                f"unexpected QEMU data at {self._expr}{describe_access(fn.__name__, args)}: {e}"
            ) from None

    return wrapper


def _has_field(t: gdb.Type, name: str) -> bool:
    """Whether struct/union ``t`` has member ``name``, also inside anonymous members."""
    t = t.strip_typedefs()
    if t.code == gdb.TYPE_CODE_PTR:
        t = t.target().strip_typedefs()
    if t.code not in _STRUCTS:
        return False
    # gdb.Type is unhashable: cache by struct tag (anonymous structs are not cached).
    key = (t.code, t.tag, name) if t.tag else None
    found = _FIELDS.get(key) if key else None
    if found is None:
        found = any(
            f.name == name or (not f.name and f.type is not None and _has_field(f.type, name))
            for f in t.fields()
        )
        if key:
            _FIELDS[key] = found
    return found


_FIELDS: dict[tuple[int, str, str], bool] = {}


class GdbValue:
    """:class:`~qemu_vmcore.debugger.Value` over a ``gdb.Value``."""

    __slots__ = ("_val", "_expr")

    def __init__(self, val: gdb.Value, expr: str) -> None:
        self._val = val
        self._expr = expr

    @_faults
    def member(self, name: str) -> GdbValue:
        # gdb.Value[name] follows a pointer to a struct, like drgn's member_().
        return GdbValue(self._val[name], f"{self._expr}.{name}")

    def has_member(self, name: str) -> bool:
        try:
            return _has_field(self._val.type, name)
        except (gdb.error, TypeError):
            return False

    @_faults
    def deref(self) -> GdbValue:
        return GdbValue(self._val.dereference(), f"*{self._expr}")

    @_faults
    def index(self, i: int) -> GdbValue:
        return GdbValue(self._val[i], f"{self._expr}[{i}]")

    @_faults
    def __int__(self) -> int:
        return int(self._val)

    @_faults
    def address(self) -> int:
        addr = self._val.address
        if addr is None:
            raise QemuStateError(f"{self._expr} has no address")
        return int(addr)

    def sizeof(self) -> int:
        return self._val.type.sizeof

    @_faults
    def string(self, limit: int = 256) -> str:
        t = self._val.type.strip_typedefs()
        inferior = gdb.selected_inferior()
        if t.code == gdb.TYPE_CODE_ARRAY:
            raw = bytes(inferior.read_memory(int(self._val.address), min(limit, t.sizeof)))
        else:
            addr = int(self._val)
            if addr == 0:
                return ""
            raw = _read_c_string(inferior, addr, limit)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read_c_string(inferior: gdb.Inferior, addr: int, limit: int) -> bytes:
    # Page-bounded pieces, as in the drgn backend: a string near the end of a
    # mapping must not fault because a fixed-size read crosses into a hole.
    out = b""
    while len(out) < limit:
        n = min(limit - len(out), 4096 - (addr + len(out)) % 4096)
        piece = bytes(inferior.read_memory(addr + len(out), n))
        out += piece
        if b"\0" in piece:
            break
    return out


def _is_variable(sym: gdb.Symbol) -> bool:
    """Whether ``sym`` is a variable gdb can read.

    A global found through a header's ``extern`` declaration is
    LOC_UNRESOLVED: gdb reads it through the ELF symbol, which must exist.
    """
    if sym.is_variable:
        return True
    if sym.addr_class != gdb.SYMBOL_LOC_UNRESOLVED:
        return False
    try:
        sym.value()
    except gdb.error:
        return False
    return True


class GdbDebugger:
    """:class:`~qemu_vmcore.debugger.Debugger` over the program gdb has open.

    Symbols are looked up in QEMU's executable (and its separate debug file)
    only, never in the shared libraries, as the drgn backend loads QEMU's
    debug info only.
    """

    def __init__(
        self, objfile: gdb.Objfile, executable: Path | None, first_lookups: tuple[str, ...] = ()
    ) -> None:
        self.objfile = objfile
        self.executable = executable
        self._inferior = gdb.selected_inferior()
        self._symbols: dict[str, gdb.Symbol | None] = {}
        self._types: dict[str, gdb.Type] = {}
        # A struct complete in one file only (FlatRange, TypeImpl) is opaque
        # elsewhere; gdb then completes it by expanding every compilation unit
        # that names it, about 0.7 s for FlatRange alone. Looking up a function
        # of the defining unit expands that unit first, which makes it instant.
        # The caller names such functions (``first_lookups``).
        for name in first_lookups:
            objfile.lookup_global_symbol(name)

    def _symbol(self, name: str) -> gdb.Symbol | None:
        if name not in self._symbols:
            sym = self.objfile.lookup_global_symbol(name)
            if sym is None:
                sym = self.objfile.lookup_static_symbol(name)
            self._symbols[name] = sym if sym is not None and _is_variable(sym) else None
        return self._symbols[name]

    def has_variable(self, name: str) -> bool:
        return self._symbol(name) is not None

    def variable(self, name: str) -> GdbValue:
        sym = self._symbol(name)
        if sym is None:
            raise QemuStateError(f"QEMU's debug info has no variable {name!r}")
        try:
            return GdbValue(sym.value(), name)
        except gdb.error as e:
            raise QemuStateError(f"cannot read {name}: {e}") from None

    def static_local(self, function: str, name: str, type_name: str) -> GdbValue | None:
        fn = self.objfile.lookup_static_symbol(function) or self.objfile.lookup_global_symbol(
            function
        )
        if fn is None or not fn.is_function:
            return None
        try:
            block = gdb.block_for_pc(int(fn.value().address))
        except (gdb.error, RuntimeError):
            return None
        while block is not None and block.function is None:
            block = block.superblock  # from a lexical block up to the function's own
        for sym in block or ():
            if sym.name == name and sym.is_variable and not sym.needs_frame:
                return self.object_at(type_name, int(sym.value().address))
        return None

    def _type(self, type_name: str) -> gdb.Type:
        t = self._types.get(type_name)
        if t is None:
            base = type_name.rstrip(" *")
            try:
                t = gdb.lookup_type(base)
            except gdb.error:
                raise QemuStateError(f"QEMU's debug info has no type {base!r}") from None
            for _ in range(type_name.count("*")):
                t = t.pointer()
            self._types[type_name] = t
        return t

    def object_at(self, type_name: str, address: int) -> GdbValue:
        t = self._type(type_name)
        value = gdb.Value(address).cast(t.pointer()).dereference()
        return GdbValue(value, f"({type_name})@{address:#x}")

    def has_type(self, type_name: str) -> bool:
        try:
            self._type(type_name)
        except QemuStateError:
            return False
        return True

    def constant(self, name: str) -> int:
        try:
            sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
            value = sym.value() if sym is not None else gdb.parse_and_eval(name)
            return int(value)
        except (gdb.error, RuntimeError):
            raise QemuStateError(f"QEMU's debug info has no constant {name!r}") from None

    def read(self, address: int, size: int) -> bytes:
        try:
            return bytes(self._inferior.read_memory(address, size))
        except gdb.MemoryError as e:
            at = _fault_address(e)
            where = f"address {at:#x}" if at is not None else f"{address:#x} (+{size:#x})"
            raise QemuStateError(f"{where} is not in the core") from None


# -- what gdb has open ----------------------------------------------------------------

_CORE_RE = re.compile(r"^\s*Local core dump file:\s*\n\s*`(.+)', file type ", re.M)
_EXEC_RE = re.compile(r"^\s*Local exec file:\s*\n\s*`(.+)', file type ", re.M)


def _info_target() -> str:
    try:
        return gdb.execute("info target", to_string=True)
    except gdb.error:
        return ""


def core_file_path() -> str | None:
    """The core file gdb has open, or None.

    gdb 13 has no Python API for it; ``info target`` names it. (Newer gdbs
    have ``Inferior.corefile``, used when present.)
    """
    corefile = getattr(gdb.selected_inferior(), "corefile", None)
    if corefile is not None and getattr(corefile, "filename", None):
        return corefile.filename
    m = _CORE_RE.search(_info_target())
    return m.group(1) if m else None


def exec_file_path() -> str | None:
    """The executable gdb has open (``exec-file``), or None."""
    m = _EXEC_RE.search(_info_target())
    return m.group(1) if m else None


def target_kind() -> tuple[str, int]:
    """``(kind, pid)`` of gdb's current target.

    ``kind`` is the connection type (``core``, ``native``, ``remote``, ...),
    ``none`` when there is no target, or ``unknown`` on a gdb older than 11
    (no ``Inferior.connection``).
    """
    inferior = gdb.selected_inferior()
    if not hasattr(inferior, "connection"):
        return ("unknown", inferior.pid)
    connection = inferior.connection
    return (connection.type if connection is not None else "none", inferior.pid)


def _main_objfile() -> gdb.Objfile | None:
    """QEMU's own objfile: the one gdb's program space loaded as its symbol file."""
    name = gdb.current_progspace().filename
    if not name:
        return None
    for objfile in gdb.objfiles():
        if objfile.is_valid() and objfile.filename == name:
            return objfile.owner or objfile  # a separate debug file's owner is the program
    return None


def open_gdb(
    core: HostCore,
    *,
    qemu: Path | None = None,
    debug_file: Path | None = None,
    first_lookups: tuple[str, ...] = (),
) -> GdbDebugger:
    """The debugger over the program gdb has open with ``core``.

    :param qemu: the executable gdb loaded when it is not the one the core
        names (for messages; gdb itself loaded it).
    :param debug_file: the separate debug file gdb loaded, if one was named.
    :param first_lookups: names whose lookup expands the compilation units
        that define QEMU's private structs (a speed hint, see GdbDebugger).
    :raises DebugInfoError: gdb has no executable, its build-id is not the
        core's, or it has no debug info.
    """
    _FIELDS.clear()  # another program may have been open before
    want = core.executable_build_id()
    bid = f" (build-id {want.hex()})" if want else ""
    objfile = _main_objfile()
    if objfile is None:
        exe = core.executable or "the QEMU executable"
        raise DebugInfoError(
            f"no debug info found for {exe}{bid}: gdb has no executable loaded",
            hint=f"load it with `file {core.executable or 'PATH'}`; {DEBUG_INFO_HINT}",
        )
    have = objfile.build_id
    if want is not None and have and bytes.fromhex(have) != want:
        raise DebugInfoError(
            f"{objfile.filename}: build-id {have} does not match the core's {want.hex()}",
            hint="load (or pass with --qemu or --debug-file) the exact QEMU build, or its "
            "debug file, that produced the core",
            path=objfile.filename,
        )
    if objfile.lookup_global_symbol("main") is None:
        raise DebugInfoError(
            f"no debug info found for {objfile.filename}{bid}", hint=DEBUG_INFO_HINT
        )
    exe = exec_file_path() or objfile.filename
    return GdbDebugger(objfile, Path(os.path.abspath(exe)), first_lookups)
