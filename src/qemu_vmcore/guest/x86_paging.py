"""x86_64 page-table walks in guest-physical memory (4-level and LA57).

The tables are guest data: every entry is bounds-checked by the physical
memory layer, a walk is at most five reads, and nothing is allocated by a
size the guest chose.
"""

from __future__ import annotations

import struct

from qemu_vmcore.errors import MissingMemoryError
from qemu_vmcore.guest.physmem import GuestPhysicalMemory

PTE_PRESENT = 1
PTE_PSE = 1 << 7  # a large page at PDPT (1 GiB) or PD (2 MiB) level
ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 of an entry
PAGE_SHIFT = 12
_U64 = struct.Struct("<Q")


def translate(mem: GuestPhysicalMemory, root: int, vaddr: int, *, la57: bool = False) -> int | None:
    """The guest-physical address of ``vaddr`` under the tables at ``root`` (CR3).

    Returns None when the address is not mapped or a table is not in memory.
    """
    levels = 5 if la57 else 4
    table = root & ADDR_MASK
    for level in range(levels, 0, -1):
        shift = PAGE_SHIFT + 9 * (level - 1)
        index = (vaddr >> shift) & 0x1FF
        try:
            (entry,) = _U64.unpack(mem.read(table + 8 * index, 8))
        except MissingMemoryError:
            return None
        if not entry & PTE_PRESENT:
            return None
        if level in (2, 3) and entry & PTE_PSE:
            page_mask = (1 << shift) - 1
            return (entry & ADDR_MASK & ~page_mask) | (vaddr & page_mask)
        table = entry & ADDR_MASK
    return table | (vaddr & 0xFFF)
