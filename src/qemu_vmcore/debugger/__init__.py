"""The small "typed value" protocol between the qemu/ layer and a debugger.

The qemu/ layer walks QEMU's structures through these two protocols only, so
it is written once and runs on drgn (standalone) or inside gdb. A backend maps
its own read faults to :class:`~qemu_vmcore.errors.QemuStateError`, naming the
expression that could not be read.
"""

from __future__ import annotations

from typing import Protocol


class Value(Protocol):
    """A typed object in QEMU's address space (a struct, pointer, int, ...)."""

    def member(self, name: str) -> Value:
        """``self.name``; on a pointer to a struct, ``self->name``."""
        ...

    def has_member(self, name: str) -> bool:
        """Whether this struct (or pointed-to struct) has a member ``name``."""
        ...

    def deref(self) -> Value:
        """``*self`` for a pointer."""
        ...

    def index(self, i: int) -> Value:
        """``self[i]`` for a pointer or array."""
        ...

    def __int__(self) -> int:
        """The value of an integer, enum, bool or pointer (pointers as addresses)."""
        ...

    def address(self) -> int:
        """The address of this object in QEMU's address space."""
        ...

    def sizeof(self) -> int:
        """The size of this object's type in bytes."""
        ...

    def string(self, limit: int = 256) -> str:
        """A NUL-terminated string from a char array or ``char *``, at most ``limit`` bytes."""
        ...


class Debugger(Protocol):
    """QEMU's program: its symbols, types and memory."""

    def has_variable(self, name: str) -> bool:
        """Whether a global variable ``name`` exists in the debug info."""
        ...

    def variable(self, name: str) -> Value:
        """The global variable ``name``."""
        ...

    def static_local(self, function: str, name: str, type_name: str) -> Value | None:
        """The function-local ``static`` variable ``function::name``, or None.

        ``type_name`` is its type (e.g. ``"VMCoreInfoState *"``), for
        backends that find the variable by symbol rather than by scope.
        """
        ...

    def object_at(self, type_name: str, address: int) -> Value:
        """An object of type ``type_name`` (e.g. ``"MachineClass"``) at ``address``."""
        ...

    def has_type(self, type_name: str) -> bool:
        """Whether the debug info has a type ``type_name`` (e.g. ``"ARMCPU"``)."""
        ...

    def constant(self, name: str) -> int:
        """The value of the enumerator ``name`` (e.g. ``ARM_FEATURE_EL2``).

        :raises QemuStateError: the debug info has no such enumerator.
        """
        ...

    def read(self, address: int, size: int) -> bytes:
        """``size`` raw bytes at ``address`` in QEMU's address space."""
        ...


def describe_access(op: str, args: tuple[object, ...]) -> str:
    """How a failed Value operation reads in an error: ``.name``, ``[i]``, ``(deref)``."""
    if op == "member":
        return f".{args[0]}"
    if op == "index":
        return f"[{args[0]}]"
    if op == "deref":
        return " (deref)"
    return ""
