"""Everything that differs between QEMU releases, in one table.

Each fact lists the names QEMU has used for one thing, newest first, with the
release that introduced each. Code asks :func:`pick_variable` for the fact and
never compares version numbers: the debug info says which name this build has.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.debugger import Debugger
from qemu_vmcore.errors import NotQemuError


@dataclass(frozen=True)
class Alternative:
    name: str
    since: str  # the QEMU release (or range) known to use this name


#: The global QTAILQ of all CPUState objects.
CPU_LIST = (
    # QEMU 8.1 (commit "cpus: Rename 'cpus' to 'cpus_queue'" era; the 10.0 tree uses it).
    Alternative("cpus_queue", "8.1"),
    Alternative("cpus", "2.0"),  # QEMU 7.2 and older
)

#: The system memory address space; its FlatView is the guest-physical map.
ADDRESS_SPACE_MEMORY = (Alternative("address_space_memory", "1.6"),)

#: The running machine (MachineState *).
CURRENT_MACHINE = (Alternative("current_machine", "2.0"),)

#: How every CPU's QOM type name ends (``qemu64-x86_64-cpu``, ``max-i386-cpu``;
#: TYPE_X86_CPU and its kin on every target since 2.0).
CPU_TYPE_SUFFIX = "-cpu"

#: The QOM type of every MemoryRegion (TYPE_MEMORY_REGION, since 2.0).
MEMORY_REGION_TYPE = "memory-region"

#: MemoryRegion flags that exclude a RAM region from dumps (memory_mapping.c).
#: A build whose MemoryRegion lacks one of them cannot have such regions.
MR_EXCLUDING_FLAGS = ("ram_device", "nonvolatile")

#: MemoryRegion member holding a RamDiscardManager (virtio-mem), QEMU 6.1+.
MR_DISCARD_MANAGER = "rdm"

#: The one RamDiscardManager of 7.2 and 10.0: the virtio-mem device
#: (QEMU 6.1, "virtio-mem: Implement RamDiscardManager interface"), its QOM
#: type and C struct. Its ``bitmap``/``bitmap_size``/``block_size`` and the
#: plugged-section loop are the same in 7.2 and 10.0; 8.2's
#: ``dynamic-memslots=on`` maps the backend through aliases, which the
#: FlatView resolves to the backend's region, so the same rule holds.
VIRTIO_MEM_TYPE = "virtio-mem"
VIRTIO_MEM_STRUCT = "VirtIOMEM"

#: RAMBlock.flags bit of a shared mapping (include/exec/memory.h, 2.x on).
RAM_SHARED = 1 << 1

#: Where an x86 machine's ACPI PM device (``X86MachineState.acpi_dev``,
#: QEMU 4.2+) keeps its memory hotplug state (MemHotplugState, one MemStatus
#: per DIMM slot), by the PM device's QOM type: PIIX4 for pc, ICH9 LPC for
#: q35. The same in 7.2 and 10.0.
ACPI_MEMORY_HOTPLUG: dict[str, tuple[str, tuple[str, ...]]] = {
    "PIIX4_PM": ("PIIX4PMState", ("acpi_memory_hotplug",)),
    "ICH9-LPC": ("ICH9LPCState", ("pm", "acpi_memory_hotplug")),
}


def pick_variable(dbg: Debugger, alternatives: tuple[Alternative, ...]) -> str:
    """The first of ``alternatives`` that this QEMU build defines.

    :raises NotQemuError: none exists, so the program is not a QEMU we know.
    """
    for alt in alternatives:
        if dbg.has_variable(alt.name):
            return alt.name
    names = " or ".join(a.name for a in alternatives)
    raise NotQemuError(
        f"the program has no variable {names}: not a QEMU system emulator, "
        "or a QEMU release this tool does not know"
    )


#: The vmcoreinfo device: hw/misc/vmcoreinfo.c keeps a function-local static
#: pointer ``vmcoreinfo_realize::vmcoreinfo_state`` (volatile, so that it
#: survives optimisation) precisely for debuggers; since QEMU 2.11.
VMCOREINFO_STATE = ("vmcoreinfo_realize", "vmcoreinfo_state", "VMCoreInfoState *")
