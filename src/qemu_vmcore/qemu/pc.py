"""The PC machines' memory layout (``pc-i440fx-*``, ``pc-q35-*``), as
pc_memory_init() builds it from X86MachineState: what the cross-checks hold
QEMU's FlatView against."""

from __future__ import annotations

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.qemu import versions

#: Where a PC (``pc-i440fx-*``, ``pc-q35-*``) maps its RAM: pc_memory_init()
#: aliases the machine's RAM at 0 for ``below_4g_mem_size`` bytes and at
#: 4 GiB for the rest (``above_4g_mem_size``), at the same offsets in the
#: RAMBlock. Both sizes live in X86MachineState (QEMU 4.2+).
FOUR_GIB = 1 << 32


def pc_ram_layout(dbg: Debugger, machine: Value) -> tuple[int, int] | None:
    """``(below_4g_mem_size, above_4g_mem_size)`` of a PC machine, else None.

    :param machine: ``current_machine``.
    """
    klass = dbg.object_at("MachineClass", int(machine.member("parent_obj").member("class")))
    if not klass.member("name").string().startswith(versions.PC_MACHINE_PREFIX):
        return None
    x86ms = dbg.object_at("X86MachineState", int(machine))
    return int(x86ms.member("below_4g_mem_size")), int(x86ms.member("above_4g_mem_size"))


def pc_ram_offset(gpa: int, below_4g: int, above_4g: int) -> int | None:
    """The offset in the machine's RAMBlock at which a PC maps guest-physical
    ``gpa``, or None where the PC maps none of its RAM."""
    if gpa < below_4g:
        return gpa
    if FOUR_GIB <= gpa < FOUR_GIB + above_4g:
        return below_4g + gpa - FOUR_GIB
    return None


#: Where the chipset may route a PC's RAM to devices instead (VGA memory at
#: 0xa0000, the PAM-controlled BIOS area up to 1 MiB): the map may lack RAM
#: there, and only QEMU's chipset state says whether it should.
PC_LEGACY_WINDOW = (0xA0000, 0x100000)
#: The BIOS ROM's RAMBlock: mapped so that it ends at 4 GiB (the reset
#: vector), and its last 128 KiB also below 1 MiB (isa-bios), as
#: pc_system_firmware_init() and x86_bios_rom_init() map it.
PC_BIOS_BLOCK = "pc.bios"
ISA_BIOS_SIZE = 128 << 10


def pc_ram_must_cover(below_4g: int, above_4g: int) -> list[tuple[int, int]]:
    """The guest-physical intervals a PC's FlatView must map to its RAM."""
    lo, hi = PC_LEGACY_WINDOW
    out = [(0, min(lo, below_4g))]
    if below_4g > hi:
        out.append((hi, below_4g))
    if above_4g:
        out.append((FOUR_GIB, FOUR_GIB + above_4g))
    return [(a, b) for a, b in out if b > a]


def pc_bios_offset(gpa: int, size: int) -> int | None:
    """The offset in ``pc.bios`` (``size`` bytes) at which a PC maps ``gpa``, or None."""
    if FOUR_GIB - size <= gpa < FOUR_GIB:
        return gpa - (FOUR_GIB - size)
    isa = min(size, ISA_BIOS_SIZE)
    if 0x100000 - isa <= gpa < 0x100000:
        return size - (0x100000 - gpa)
    return None
