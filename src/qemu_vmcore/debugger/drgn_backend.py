"""drgn backend: QEMU's structures read from the core file with drgn.

Debug info is loaded for the QEMU executable only. Loading every shared
library's as well (drgn's ``load_default_debug_info``) costs time and prints
"missing debugging symbols" noise for libraries we never look at.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import drgn

from qemu_vmcore.debugger import describe_access
from qemu_vmcore.errors import CoreFileError, DebugInfoError, QemuStateError, VmcoreError
from qemu_vmcore.host.core import HostCore, check_regular, open_regular

T = TypeVar("T")

#: GCC numbers function-local statics "name.N" per translation unit; a few
#: dozen is far more than any QEMU source file has.
MAX_STATIC_SUFFIX = 64

DEBUG_INFO_HINT = (
    "install QEMU's debug symbols (Debian/Ubuntu: the qemu-system-x86-dbgsym package from "
    "the debug archive; Fedora: dnf debuginfo-install qemu-system-x86-core), set "
    "DEBUGINFOD_URLS, or pass --qemu PATH (an unstripped build) or --debug-file PATH; "
    "on a host that can have none of these, make a profile of this build where its debug "
    "info is (qemu-vmcore profile QEMU -o P.json) and pass --profile P.json"
)


def missing_debug_info(exe: object, build_id: bytes | None) -> DebugInfoError:
    """The error for an executable whose debug info was found nowhere.

    Names the build-id (what every way of getting the debug info is keyed
    on) and, when debuginfod was asked, its URLs: a server that is down and
    one that lacks the build-id look the same to drgn (no file).
    """
    bid = f" (build-id {build_id.hex()})" if build_id else ""
    urls = os.environ.get("DEBUGINFOD_URLS", "").split()
    asked = f"; debuginfod at {' '.join(urls)} had none or did not answer" if urls else ""
    return DebugInfoError(f"no debug info found for {exe}{bid}{asked}", hint=DEBUG_INFO_HINT)


def _faults(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn drgn's read and lookup errors into QemuStateError."""

    @functools.wraps(fn)
    def wrapper(self: DrgnValue, *args: object) -> T:
        try:
            return fn(self, *args)
        except drgn.FaultError as e:
            raise QemuStateError(
                f"cannot read {self._expr}{describe_access(fn.__name__, args)}: "
                f"address {e.address:#x} is not in the core",
                address=e.address,
            ) from None
        except (LookupError, TypeError, ValueError) as e:
            raise QemuStateError(
                f"unexpected QEMU data at {self._expr}{describe_access(fn.__name__, args)}: {e}"
            ) from None

    return wrapper


class DrgnValue:
    """:class:`~qemu_vmcore.debugger.Value` over a ``drgn.Object``."""

    __slots__ = ("_obj", "_expr")

    def __init__(self, obj: drgn.Object, expr: str) -> None:
        self._obj = obj
        self._expr = expr

    @_faults
    def member(self, name: str) -> DrgnValue:
        return type(self)(self._obj.member_(name), f"{self._expr}.{name}")

    def has_member(self, name: str) -> bool:
        t = self._obj.type_.unaliased()
        if t.kind == drgn.TypeKind.POINTER:
            t = t.type.unaliased()
        try:
            return t.has_member(name)
        except (TypeError, ValueError):
            return False

    @_faults
    def deref(self) -> DrgnValue:
        return type(self)(self._obj[0], f"*{self._expr}")

    @_faults
    def index(self, i: int) -> DrgnValue:
        return type(self)(self._obj[i], f"{self._expr}[{i}]")

    @_faults
    def __int__(self) -> int:
        return int(self._obj.value_())

    @_faults
    def address(self) -> int:
        addr = self._obj.address_
        if addr is None:
            raise QemuStateError(f"{self._expr} has no address")
        return addr

    @_faults
    def sizeof(self) -> int:
        return drgn.sizeof(self._obj)

    @_faults
    def string(self, limit: int = 256) -> str:
        obj = self._obj
        kind = obj.type_.unaliased_kind()
        if kind == drgn.TypeKind.ARRAY:
            raw = obj.prog_.read(obj.address_, min(limit, drgn.sizeof(obj)))
        else:
            addr = obj.value_()
            if addr == 0:
                return ""
            raw = _read_c_string(obj.prog_, addr, limit)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read_c_string(prog: drgn.Program, addr: int, limit: int) -> bytes:
    # Read in page-bounded pieces: a string near the end of a mapping must not
    # fault just because a fixed-size read would cross into unmapped memory.
    out = b""
    while len(out) < limit:
        n = min(limit - len(out), 4096 - (addr + len(out)) % 4096)
        piece = prog.read(addr + len(out), n)
        out += piece
        if b"\0" in piece:
            break
    return out


class DrgnDebugger:
    """:class:`~qemu_vmcore.debugger.Debugger` over a ``drgn.Program`` on the core."""

    def __init__(self, prog: drgn.Program, executable: Path | None) -> None:
        self.prog = prog
        self.executable = executable

    def has_variable(self, name: str) -> bool:
        try:
            self.prog.variable(name)
        except LookupError:
            return False
        return True

    def variable(self, name: str) -> DrgnValue:
        try:
            return DrgnValue(self.prog.variable(name), name)
        except LookupError:
            raise QemuStateError(f"QEMU's debug info has no variable {name!r}") from None

    def static_local(self, function: str, name: str, type_name: str) -> DrgnValue | None:
        # drgn indexes no function-scope statics; GCC emits them as local ELF
        # symbols named "name.N". Exact lookups of the likely names are
        # cheaper than walking the whole symbol table in Python.
        for candidate in (name, *(f"{name}.{n}" for n in range(MAX_STATIC_SUFFIX))):
            found = self.prog.symbols(candidate)
            if found:
                return self.object_at(type_name, found[0].address)
        return None

    def object_at(self, type_name: str, address: int) -> DrgnValue:
        try:
            t = self.prog.type(type_name)
        except LookupError:
            raise QemuStateError(f"QEMU's debug info has no type {type_name!r}") from None
        return DrgnValue(drgn.Object(self.prog, t, address=address), f"({type_name})@{address:#x}")

    def has_type(self, type_name: str) -> bool:
        try:
            self.prog.type(type_name)
        except LookupError:
            return False
        return True

    def constant(self, name: str) -> int:
        try:
            return int(self.prog.constant(name))
        except LookupError:
            raise QemuStateError(f"QEMU's debug info has no constant {name!r}") from None

    def read(self, address: int, size: int) -> bytes:
        try:
            return self.prog.read(address, size)
        except drgn.FaultError as e:
            raise QemuStateError(f"address {e.address:#x} is not in the core") from None


def _quiet_drgn_log() -> None:
    """Keep drgn's own warnings (e.g. about shared libraries in a truncated
    core) off stderr: our errors are one line. ``--debug`` turns logging on."""
    logger = logging.getLogger("drgn")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def open_drgn(
    core: HostCore,
    *,
    qemu: Path | None = None,
    debug_file: Path | None = None,
    first_lookups: tuple[str, ...] = (),
) -> DrgnDebugger:
    """Open ``core`` in drgn and load the debug info of its QEMU executable.

    :param qemu: the QEMU executable that made the core (default: the path the
        core names, found the way drgn finds files: build-id, debuglink,
        /usr/lib/debug, debuginfod when DEBUGINFOD_URLS is set).
    :param debug_file: a separate file with QEMU's debug info.
    :param first_lookups: names (variables, functions) to look up at once, so
        that the debug info is indexed here (see ``_index_debug_info``); the
        caller knows QEMU's names, this layer does not.
    :raises DebugInfoError: no matching debug info, or a file given whose
        build-id is not the core's.
    """
    _quiet_drgn_log()
    # drgn plugins are for kernel debugging; scanning every installed
    # package's entry points for them costs ~0.1 s, a third of our start-up.
    os.environ.setdefault("DRGN_DISABLE_PLUGINS", "*")
    given = [p for p in (qemu, debug_file) if p is not None]
    # drgn opens these files, and looks for the executable at the path the
    # core names: a FIFO there would block it for good, a device do anything.
    for path in given:
        check_regular(path)
    if core.executable is not None:
        check_regular(core.executable)
    prog = drgn.Program()
    try:
        if getattr(core, "live", False):  # host/live.py: a frozen process
            prog.set_pid(core.pid)  # type: ignore[attr-defined]
        else:
            # The descriptor we parsed, not the path: drgn reads the very file
            # we checked (even an unlinked, decompressed copy). drgn owns the dup.
            prog.set_core_dump(os.dup(core.fd))
    except Exception as e:  # noqa: BLE001 -- libdrgn's errors include plain Exception
        raise CoreFileError(f"{core.path}: drgn cannot read the core: {e}") from None
    want = core.executable_build_id()
    for path in given:
        _check_given_file(path, want)
    try:
        prog.load_debug_info([os.fspath(p) for p in given], main=True)
    except drgn.MissingDebugInfoError:
        pass  # judged below, on the main module alone
    except drgn.BadDataError as e:
        # drgn parses the core's NT_FILE and NT_AUXV only now.
        raise CoreFileError(f"{core.path}: drgn cannot read the core: {e}") from None
    except Exception as e:  # noqa: BLE001 -- OSError, ValueError, OverflowError, libdrgn's own
        raise DebugInfoError(f"cannot load QEMU's debug info: {e}", hint=DEBUG_INFO_HINT) from None
    try:
        main = prog.main_module()
    except LookupError:
        exe = core.executable or "the QEMU executable"
        raise DebugInfoError(f"drgn finds no main executable ({exe}) in the core") from None
    if main.wants_debug_file():
        raise missing_debug_info(core.executable or "the QEMU executable", want)
    loaded = main.loaded_file_path or (os.fspath(qemu) if qemu else core.executable)
    if qemu is not None and loaded and not os.path.exists(loaded):
        loaded = os.fspath(qemu)  # a live QEMU's deleted binary: /proc/PID/exe, given
    executable = Path(loaded) if loaded else None
    if executable is not None and core.executable is not None:
        _serve_unsaved_from_file(prog, core, executable)
    _index_debug_info(prog, first_lookups)
    return DrgnDebugger(prog, executable)


def _index_debug_info(prog: drgn.Program, names: tuple[str, ...]) -> None:
    """Have drgn index the DWARF now, where its errors mean "bad debug info".

    drgn parses the debug info on the first lookup; a corrupt file then
    raises whatever libdrgn raises (plain Exception among them) from
    whichever lookup came first.
    """
    try:
        for name in names[:1]:  # the first lookup indexes everything
            prog.object(name)
    except LookupError:
        pass  # not QEMU: the caller says so
    except Exception as e:  # noqa: BLE001
        raise DebugInfoError(f"cannot read QEMU's debug info: {e}", hint=DEBUG_INFO_HINT) from None


def _serve_unsaved_from_file(prog: drgn.Program, core: HostCore, executable: Path) -> None:
    """Serve the executable's read-only mappings that the core left out from the file.

    A default core lacks .rodata, so QEMU's string literals (e.g. a
    MachineClass alias) fault in drgn (drgn issue 291). drgn matched the
    file's build-id to the core, so its bytes are the ones that were mapped.
    """
    for m in core.unsaved_file_ranges(core.executable):
        prog.add_memory_segment(m.hva, m.end - m.hva, _file_reader(executable, m.file_offset))


def _file_reader(path: Path, file_offset: int) -> Callable[[int, int, int, bool], bytes]:
    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        # Errors are faults at the address: drgn hands an exception from
        # here to whoever read, and the readers expect FaultError.
        try:
            fd = open_regular(path)
            try:
                data = os.pread(fd, count, file_offset + offset)
            finally:
                os.close(fd)
        except (OSError, OverflowError, ValueError, VmcoreError) as e:
            raise drgn.FaultError(f"{path}: {getattr(e, 'message', e)}", address) from None
        return data.ljust(count, b"\0")

    return read


def _check_given_file(path: Path, want: bytes | None) -> None:
    """Refuse an explicitly given file that is missing or not for this core."""
    from qemu_vmcore.host.executable import read_build_id

    try:
        have = read_build_id(path)
    except OSError as e:
        raise DebugInfoError(f"{path}: {e.strerror or e}", path=path) from None
    if want is not None and have is not None and have != want:
        raise DebugInfoError(
            f"{path}: build-id {have.hex()} does not match the core's {want.hex()}",
            hint="pass the exact QEMU build (or its debug file) that produced the core",
            path=path,
        )
