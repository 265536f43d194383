"""Every QEMU name this tool depends on by spelling, in one table.

The code reads QEMU's structures by name through the debug info. A name that
QEMU could rename, or that some builds lack, is a fact about QEMU releases,
and such facts live here, in three sections:

1. **Renamed**: names that changed between releases. Each lists the names
   QEMU has used for one thing, newest first, with the release that
   introduced each. Code asks :func:`pick_variable` for the fact and never
   compares version numbers: the debug info says which name this build has.
2. **Optional**: members and variables that exist only in some builds or
   configurations. Code probes them (``has_member``, ``static_local``) and
   falls back to what QEMU does without them.
3. **Fixed**: names that have not changed but that the code must spell: the
   global entry points every walk starts from, and the QOM type names and
   prefixes it compares strings against (where a rename would not fail
   loudly but silently match nothing).

What is *not* here: C struct types and the members read unconditionally
along a walk (``mr->ram_block->idstr``). A rename of one of those fails
loudly, naming the member, and a copy here would only add indirection. The
test ``tests/unit/test_versions.py`` holds the code to this: no probe
(``has_member``/``has_variable``) anywhere in src/ takes a string literal.

The names and releases were checked against the QEMU 7.2 and 10.0 source
trees of the rig (/var/cache/qemu-vmcore-rig/qemu-*/src) and, for releases
neither tree shows, against QEMU's history as cited at each entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.debugger import Debugger
from qemu_vmcore.errors import NotQemuError

# --------------------------------------------------------------------------
# 1. Renamed: names that changed between QEMU releases
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Alternative:
    """One name QEMU has used for a thing, and the release that introduced it."""

    name: str
    since: str  # the first QEMU release with this name, e.g. "8.2"


#: The global QTAILQ of all CPUState objects (linked through ``CPUState.node``).
CPU_LIST = (
    # Philippe Mathieu-Daudé, "cpus: Rename 'cpus' to 'cpus_queue'"
    # (Message-Id 20231010115048.11856-2-philmd@linaro.org): merged for 8.2,
    # so 8.1 is the last release with ``cpus``; 10.0's cpu-common.c has it.
    Alternative("cpus_queue", "8.2"),
    # bdc44640cb ("cpu: Use QTAILQ for CPU list") replaced first_cpu's
    # next_cpu chain; 7.2's cpus-common.c defines ``CPUTailQ cpus``.
    Alternative("cpus", "2.0"),
)

#: Every fact of this section, for the table's tests.
RENAMED: tuple[tuple[Alternative, ...], ...] = (CPU_LIST,)


def describe(alternatives: tuple[Alternative, ...]) -> str:
    """The alternatives with their releases: ``cpus_queue (QEMU 8.2+)``, and
    each older one until the next replaced it: ``cpus (QEMU 2.0 until 8.2)``."""
    parts = [f"{alternatives[0].name} (QEMU {alternatives[0].since}+)"]
    for older, newer in zip(alternatives[1:], alternatives, strict=False):
        parts.append(f"{older.name} (QEMU {older.since} until {newer.since})")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"neither {parts[0]} nor {parts[1]}"
    return f"none of {', '.join(parts[:-1])} or {parts[-1]}"


def pick_variable(dbg: Debugger, alternatives: tuple[Alternative, ...]) -> str:
    """The first of ``alternatives`` that this QEMU build defines.

    :raises NotQemuError: none exists, so the program is not a QEMU we know.
    """
    for alt in alternatives:
        if dbg.has_variable(alt.name):
            return alt.name
    verb = "exists" if len(alternatives) > 1 else "does not exist"
    lead = describe(alternatives)
    raise NotQemuError(
        f"{lead} {verb} in this build: not a QEMU system emulator, "
        "or a QEMU release this tool does not know"
    )


# --------------------------------------------------------------------------
# 2. Optional: members and variables only some builds or configurations have
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionalMember:
    """A struct member that some builds lack, and what its absence means."""

    struct: str  # the C struct (typedef) that has it, as the debug info names it
    name: str
    absent: str  # why a build may lack it, and what the code does then


#: ``X86MachineState.acpi_dev``: the machine's ACPI PM device (PIIX4 or ICH9
#: LPC), which holds the memory hotplug state that names every DIMM. 7.2 and
#: 10.0 have it (pc.h still documents it under PCMachineState, where older
#: QEMU kept it); without it no DIMM is named.
X86_ACPI_DEV = OptionalMember(
    "X86MachineState", "acpi_dev", "older QEMU kept it elsewhere: no DIMMs are named"
)

#: ``HostMemoryBackend.dump``: ``-object memory-backend-*,dump=off``.
BACKEND_DUMP = OptionalMember(
    "HostMemoryBackend", "dump", "a build without it cannot exclude a backend: all dump"
)

#: ``MachineState.ram``: the machine's RAM region (``-machine memory-backend``),
#: from QEMU 5.0's move of machine RAM to a backend.
MACHINE_RAM = OptionalMember(
    "MachineState", "ram", "older QEMU allocated machine RAM itself: no machine RAM block"
)

#: MemoryRegion flags that exclude a RAM region from dumps, as
#: memory_mapping.c's guest_phys_blocks_region_add() checks them.
MR_RAM_DEVICE = OptionalMember(
    "MemoryRegion", "ram_device", "older QEMU has no RAM device regions: none is excluded"
)
MR_NONVOLATILE = OptionalMember(
    "MemoryRegion", "nonvolatile", "older QEMU has no non-volatile regions: none is excluded"
)
MR_EXCLUDING_FLAGS = (MR_RAM_DEVICE, MR_NONVOLATILE)

#: ``MemoryRegion.rdm``: the region's RamDiscardManager (virtio-mem), QEMU 6.1+.
MR_DISCARD_MANAGER = OptionalMember(
    "MemoryRegion", "rdm", "before QEMU 6.1 no region discards: each is dumped whole"
)

#: ``CPUARMState.vfp.fpsr`` (with ``vfp.fpcr`` and ``float_status
#: fp_status[FPST_COUNT]``): QEMU 10.0 keeps FPSR and FPCR apart and its
#: float_status in an array indexed by FPST_*; 7.2 keeps one FPSCR in
#: ``vfp.xregs[ARM_VFP_FPSCR]`` and four named float_status (checked in the
#: rig's two trees; the release between them that changed it is not pinned).
#: The struct is CPUARMState's anonymous ``vfp`` member.
ARM_VFP_FPSR = OptionalMember(
    "CPUARMState", "fpsr", "older QEMU kept one FPSCR: FPSR and FPCR are split from it"
)

#: Every optional member, for the table's tests.
OPTIONAL_MEMBERS: tuple[OptionalMember, ...] = (
    X86_ACPI_DEV,
    ARM_VFP_FPSR,
    BACKEND_DUMP,
    MACHINE_RAM,
    *MR_EXCLUDING_FLAGS,
    MR_DISCARD_MANAGER,
)

#: The vmcoreinfo device: hw/misc/vmcoreinfo.c keeps a function-local static
#: pointer ``vmcoreinfo_realize::vmcoreinfo_state`` (volatile, so that it
#: survives optimisation) precisely for debuggers; since QEMU 2.11. A build
#: without the device (CONFIG_VMCOREINFO off) lacks it: no guest vmcoreinfo.
#: As (function, variable, type) for :meth:`Debugger.static_local`.
VMCOREINFO_STATE = ("vmcoreinfo_realize", "vmcoreinfo_state", "VMCoreInfoState *")

#: Functions defined next to QEMU's private structs (FlatRange and AddrRange
#: in system/memory.c, TypeImpl in qom/object.c), which the gdb backend looks
#: up to expand their compilation units early. Only a speed hint: a name a
#: build lacks costs nothing.
OWNERS_OF_PRIVATE_TYPES = ("memory_region_init", "type_register_static")


# --------------------------------------------------------------------------
# 3. Fixed: names the code spells that have not changed
# --------------------------------------------------------------------------

#: The system memory address space; its FlatView is the guest-physical map.
#: Only a system emulator has it, so its absence means "not QEMU system".
ADDRESS_SPACE_MEMORY = "address_space_memory"

#: The running machine (MachineState *).
CURRENT_MACHINE = "current_machine"

#: The global RAMList; ``ram_list.blocks`` lists every RAMBlock.
RAM_LIST = "ram_list"

#: The globals every walk starts from, for the table's tests.
FIXED_GLOBALS = (ADDRESS_SPACE_MEMORY, CURRENT_MACHINE, RAM_LIST)

#: The QTAILQ link of a CPUState in :data:`CPU_LIST`.
CPU_LIST_LINK = "node"

#: How every CPU's QOM type name ends (``qemu64-x86_64-cpu``, ``max-i386-cpu``;
#: X86_CPU_TYPE_SUFFIX is ``"-" TYPE_X86_CPU``, and every target's kin ends so).
CPU_TYPE_SUFFIX = "-cpu"

#: How an accelerator's QOM type name ends (ACCEL_CLASS_SUFFIX: ``tcg-accel``).
ACCEL_TYPE_SUFFIX = "-accel"

#: The accelerator whose vCPU registers QEMU's own state holds at any time
#: (with KVM and others they are in the kernel, synced only now and then).
TCG_ACCEL = "tcg"

#: The QOM type of every MemoryRegion (TYPE_MEMORY_REGION).
MEMORY_REGION_TYPE = "memory-region"

#: MemoryRegion flags that say what kind of region it is. Always present;
#: read as C bools alongside :data:`MR_EXCLUDING_FLAGS`.
MR_KIND_FLAGS = ("ram", "rom_device")

#: The QOM type prefix of every memory backend (TYPE_MEMORY_BACKEND; the
#: concrete types are ``memory-backend-ram``, ``-file``, ``-memfd``).
MEMORY_BACKEND_TYPE = "memory-backend"

#: Where ``-object`` puts a backend in the QOM tree; its region's name is
#: this prefix and the backend's id.
OBJECTS_PATH = "/objects/"

#: The machine type prefix of PC machines (``pc-i440fx-*``, ``pc-q35-*``).
PC_MACHINE_PREFIX = "pc-"

#: The one RamDiscardManager of 7.2 and 10.0: the virtio-mem device
#: (QEMU 6.1, "virtio-mem: Implement RamDiscardManager interface"), its QOM
#: type and C struct. Its ``bitmap``/``bitmap_size``/``block_size`` and the
#: plugged-section loop are the same in 7.2 and 10.0; 8.2's
#: ``dynamic-memslots=on`` maps the backend through aliases, which the
#: FlatView resolves to the backend's region, so the same rule holds.
VIRTIO_MEM_TYPE = "virtio-mem"
VIRTIO_MEM_STRUCT = "VirtIOMEM"

#: RAMBlock.flags bit of a shared mapping (RAM_SHARED, include/exec/memory.h
#: in 7.2 and 10.0).
RAM_SHARED = 1 << 1

#: Where an x86 machine's ACPI PM device (:data:`X86_ACPI_DEV`) keeps its
#: memory hotplug state (MemHotplugState, one MemStatus per DIMM slot), by
#: the PM device's QOM type: PIIX4 for pc, ICH9 LPC for q35. The same in 7.2
#: and 10.0.
ACPI_MEMORY_HOTPLUG: dict[str, tuple[str, tuple[str, ...]]] = {
    "PIIX4_PM": ("PIIX4PMState", ("acpi_memory_hotplug",)),
    "ICH9-LPC": ("ICH9LPCState", ("pm", "acpi_memory_hotplug")),
}


def require_variable(dbg: Debugger, name: str) -> str:
    """``name``, a fixed global of section 3, when this build defines it.

    :raises NotQemuError: it does not, so the program is not a QEMU we know.
    """
    if not dbg.has_variable(name):
        raise NotQemuError(
            f"{name} does not exist in this build: not a QEMU system emulator, "
            "or a QEMU release this tool does not know"
        )
    return name


#: What the debugger backends look up first, when they open QEMU's debug
#: info: the system memory address space (drgn indexes its DWARF on that
#: first lookup), then the owners of private types (gdb's speed hint).
FIRST_LOOKUPS = (ADDRESS_SPACE_MEMORY, *OWNERS_OF_PRIVATE_TYPES)
