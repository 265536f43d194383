"""Who guest RAM belongs to: memory backends and memory devices, for ``info``.

Each RAM MemoryRegion of a memory backend is owned by the backend object
(``memory-backend-ram``, ``-file``, ``-memfd``), named by its id; the
machine's own RAM is a backend too (``pc.ram``). Which device maps a backend:

* virtio-mem is the region's RamDiscardManager (``mr->rdm``); its QOM parent
  is the ``virtio-mem-pci`` proxy, which carries the ``-device ...,id=``;
* a pc-dimm has no link back from its backend. The machine's ACPI memory
  hotplug state lists every plugged DIMM (cold- and hot-plugged), in the
  PM device the x86 machine names in ``acpi_dev``.

This is for display only: what cannot be read is left out, never an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import state, versions, virtio_mem

#: ACPI_MAX_RAM_SLOTS (include/hw/mem/pc-dimm.h); a larger dev_count is corrupt.
MAX_DIMM_SLOTS = 256


@dataclass(frozen=True)
class MemoryOwner:
    """The device and memory backend behind a guest RAM range (any may be None).

    :param device: the device's QOM type, e.g. ``pc-dimm`` or ``virtio-mem-pci``.
    :param device_id: its ``id=``.
    :param backend: the memory backend's QOM type, e.g. ``memory-backend-file``.
    :param backend_id: its ``id=`` (the machine's own RAM: e.g. ``pc.ram``).
    """

    device: str | None = None
    device_id: str | None = None
    backend: str | None = None
    backend_id: str | None = None

    def __str__(self) -> str:
        device = " ".join(x for x in (self.device, self.device_id) if x)
        backend = " ".join(x for x in (self.backend, self.backend_id) if x)
        if device and backend:
            return f"{device} ({backend})"
        return device or backend

    def as_dict(self) -> dict[str, str | None]:
        return {
            "device": self.device,
            "device_id": self.device_id,
            "backend": self.backend,
            "backend_id": self.backend_id,
        }


def owners(dbg: Debugger, mrs: Iterable[int]) -> dict[int, MemoryOwner]:
    """The owner of each MemoryRegion (by address); empty where unknown."""
    try:
        dimms = acpi_dimms(dbg)
    except QemuStateError:
        dimms = {}
    out = {}
    for mr in dict.fromkeys(mrs):
        try:
            out[mr] = region_owner(dbg, dbg.object_at("MemoryRegion", mr), dimms)
        except QemuStateError:
            out[mr] = MemoryOwner()
    return out


def region_owner(dbg: Debugger, mr: Value, dimms: dict[int, MemoryOwner]) -> MemoryOwner:
    """Who owns RAM region ``mr``; ``dimms`` maps a backend's address to its DIMM."""
    owner = int(mr.member("owner"))
    if owner == 0:
        return MemoryOwner()
    kind = state.qom_type_name(dbg.object_at("Object", owner))
    if not kind.startswith(versions.MEMORY_BACKEND_TYPE):
        return MemoryOwner(kind, _device_id(dbg, owner))
    backend_id = mr.member("name").string().removeprefix(versions.OBJECTS_PATH)
    rdm = virtio_mem.discard_manager(mr)
    device = _virtio_mem_owner(dbg, rdm) if rdm else dimms.get(owner, MemoryOwner())
    return MemoryOwner(device.device, device.device_id, kind, backend_id)


def _device_id(dbg: Debugger, obj: int) -> str | None:
    """``-device ...,id=`` of the device at ``obj`` (None when it has none)."""
    ident = dbg.object_at("DeviceState", obj).member("id")
    return ident.string() or None if int(ident) else None


def _virtio_mem_owner(dbg: Debugger, rdm: int) -> MemoryOwner:
    """The virtio-mem device at ``rdm``, named by its PCI proxy when it has one."""
    parent = int(dbg.object_at("Object", rdm).member("parent"))
    if parent:
        return MemoryOwner(
            state.qom_type_name(dbg.object_at("Object", parent)), _device_id(dbg, parent)
        )
    return MemoryOwner(versions.VIRTIO_MEM_TYPE, _device_id(dbg, rdm))


def acpi_dimms(dbg: Debugger) -> dict[int, MemoryOwner]:
    """The plugged DIMMs of an x86 machine, by the address of their backend."""
    machine = dbg.variable(versions.require_variable(dbg, versions.CURRENT_MACHINE))
    x86 = dbg.object_at("X86MachineState", int(machine))
    acpi_dev = versions.X86_ACPI_DEV.name
    pm = int(x86.member(acpi_dev)) if x86.has_member(acpi_dev) else 0
    if pm == 0:
        return {}
    layout = versions.ACPI_MEMORY_HOTPLUG.get(state.qom_type_name(dbg.object_at("Object", pm)))
    if layout is None:
        return {}
    struct, path = layout
    hotplug = dbg.object_at(struct, pm)
    for name in path:
        hotplug = hotplug.member(name)
    devs, out = hotplug.member("devs"), {}
    for i in range(min(int(hotplug.member("dev_count")), MAX_DIMM_SLOTS) if int(devs) else 0):
        dimm = int(devs.index(i).member("dimm"))
        if dimm:
            backend = int(dbg.object_at("PCDIMMDevice", dimm).member("hostmem"))
            kind = state.qom_type_name(dbg.object_at("Object", dimm))
            out[backend] = MemoryOwner(kind, _device_id(dbg, dimm))
    return out
