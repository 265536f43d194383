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

#: MemoryRegion flags that exclude a RAM region from dumps (memory_mapping.c).
#: A build whose MemoryRegion lacks one of them cannot have such regions.
MR_EXCLUDING_FLAGS = ("ram_device", "nonvolatile")

#: MemoryRegion member holding a RamDiscardManager (virtio-mem), QEMU 6.1+.
MR_DISCARD_MANAGER = "rdm"


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
