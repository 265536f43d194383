"""QEMU's machine-level state: machine type, accelerator, the vCPU list."""

from __future__ import annotations

from collections.abc import Callable

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import versions

#: QEMU caps x86 at a few thousand vCPUs; a corrupt or cyclic list stops here.
MAX_VCPUS = 1 << 13


def qtailq(
    head: Value,
    link: str,
    limit: int,
    what: str = "QEMU list",
    check: Callable[[int, Value], None] | None = None,
) -> list[Value]:
    """The elements of a QTAILQ, following ``elem.<link>.tqe_next``.

    Memory and time are bounded by ``limit`` whatever the core holds: a
    corrupt ``tqe_next`` that points back into the list is reported as a
    cycle rather than walked forever.

    :param what: the list, as error messages name it.
    :param check: called with each entry's position and value before its
        next pointer is followed, so that a bogus entry is named as such
        rather than by the garbage it leads to.
    :raises QemuStateError: the list is longer than ``limit`` or has a cycle.
    """
    out: list[Value] = []
    seen: dict[int, int] = {}  # address -> position in the list
    elem = head.member("tqh_first")
    while int(elem) != 0:
        addr = int(elem)
        if addr in seen:
            n = len(out)
            raise QemuStateError(
                f"cycle in {what}: entry {n} is entry {seen[addr]} again ({addr:#x}); "
                f"the list's next pointers loop",
                address=addr,
            )
        if len(out) >= limit:
            raise QemuStateError(f"{what} longer than {limit} entries")
        seen[addr] = len(out)
        if check is not None:
            check(len(out), elem)
        out.append(elem)
        elem = elem.member(link).member("tqe_next")
    return out


def vcpus(dbg: Debugger) -> list[Value]:
    """The CPUState pointers of all vCPUs, in QEMU's order (cpu_index order)."""
    name = versions.pick_variable(dbg, versions.CPU_LIST)

    def is_cpu(i: int, cpu: Value) -> None:
        # A next pointer moved by corruption can land on bytes that read as
        # a CPUState; its QOM type (``max-x86_64-cpu``, ...) they rarely fake.
        try:
            kind = qom_type_name(dbg.object_at("Object", int(cpu)))
        except QemuStateError:
            kind = None
        if kind is None or not kind.endswith(versions.CPU_TYPE_SUFFIX):
            raise QemuStateError(
                f"entry {i} of QEMU's vCPU list {name} ({int(cpu):#x}) is not a CPU "
                f"(its QOM type is {kind!r})"
            )

    return qtailq(
        dbg.variable(name), versions.CPU_LIST_LINK, MAX_VCPUS, f"QEMU's vCPU list {name}", is_cpu
    )


def machine(dbg: Debugger) -> Value:
    """``current_machine``, the MachineState.

    :raises QemuStateError: it is NULL (QEMU died before creating the machine).
    """
    name = versions.require_variable(dbg, versions.CURRENT_MACHINE)
    ms = dbg.variable(name)
    if int(ms) == 0:
        raise QemuStateError(f"{name} is NULL: QEMU died before creating the machine")
    return ms


def qom_type_name(obj: Value) -> str:
    """The QOM type name of an Object (``obj->class->type->name``)."""
    return obj.member("class").member("type").member("name").string()


def machine_type(dbg: Debugger) -> str:
    """The machine type as ``-machine`` names it (e.g. ``pc-q35-10.0``), with its alias."""
    ms = machine(dbg)
    klass = dbg.object_at("MachineClass", int(ms.member("parent_obj").member("class")))
    name = klass.member("name").string()
    alias = klass.member("alias").string() if int(klass.member("alias")) else ""
    return f"{name} ({alias})" if alias else name


def accelerator(dbg: Debugger) -> str:
    """``tcg``, ``kvm``, ... from the machine's AccelState type name."""
    accel = machine(dbg).member("accelerator")
    if int(accel) == 0:
        return "unknown"
    name = qom_type_name(accel.member("parent_obj"))
    return name.removesuffix(versions.ACCEL_TYPE_SUFFIX)


def ram_size(dbg: Debugger) -> int:
    """``-m`` in bytes (the machine's initial RAM, not hotplugged memory)."""
    return int(machine(dbg).member("ram_size"))


def dump_guest_core(dbg: Debugger) -> bool:
    """``-machine dump-guest-core``: whether QEMU let the kernel dump guest RAM."""
    return bool(int(machine(dbg).member("dump_guest_core")))
