"""virtio-mem: a dump holds only the blocks the guest plugged.

A virtio-mem device's memory backend is mapped whole into the guest-physical
address space, but only its plugged blocks are guest RAM. The device is the
region's RamDiscardManager (``mr->rdm``), and QEMU's dump asks it for the
populated parts of each section (``guest_phys_blocks_region_add()`` calls
``ram_discard_manager_replay_populated()`` in system/memory_mapping.c). The
device answers from its bitmap, one bit per ``block_size`` bytes of the
region, in ``virtio_mem_for_each_plugged_section()`` (hw/virtio/virtio-mem.c);
:func:`plugged_runs` is that loop. Each populated part is then added as a
section of its own and joined by the usual rule.
"""

from __future__ import annotations

import re

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import state, versions

#: A bitmap longer than this is corrupt: 2**24 blocks of the smallest block
#: size (4 KiB) are 64 GiB, of the usual 2 MiB block size 32 TiB.
MAX_BITMAP_BITS = 1 << 24
_ONES = re.compile(r"1+")


def discard_manager(mr: Value) -> int:
    """The address of ``mr``'s RamDiscardManager (``mr->rdm``), 0 if none."""
    name = versions.MR_DISCARD_MANAGER.name
    return int(mr.member(name)) if mr.has_member(name) else 0


def plugged_runs(
    bitmap: bytes, nbits: int, block_size: int, offset: int, size: int
) -> list[tuple[int, int]]:
    """The plugged parts of ``[offset, offset + size)`` of the region, in order.

    ``bitmap`` is the device's bitmap (bit ``i`` of the little-endian
    ``unsigned long`` words is block ``i``), ``nbits`` its length in bits.
    Returns ``(offset, size)`` pairs (bytes from the region's start), the
    sections QEMU's loop hands to the dump: each maximal run of plugged
    blocks from the section's first block on, cut to the section, stopping
    at the first run past its end.
    """
    nbits = min(nbits, len(bitmap) * 8)
    if nbits <= 0 or size <= 0:
        return []
    as_int = int.from_bytes(bitmap, "little")
    bits = format(as_int, f"0{len(bitmap) * 8}b")[::-1][:nbits]  # bits[i] is block i
    out = []
    end = offset + size
    for run in _ONES.finditer(bits, min(offset // block_size, nbits)):
        start = max(offset, run.start() * block_size)
        stop = min(end, run.end() * block_size)
        if stop <= start:
            break  # virtio_mem_intersect_memory_section() failed: QEMU stops here
        out.append((start, stop - start))
    return out


def populated_parts(dbg: Debugger, rdm: int, mr: Value, offset: int, size: int):
    """The populated ``(offset, size)`` parts of a section of ``mr``, whose
    RamDiscardManager is the object at ``rdm``.

    :raises QemuStateError: the manager is not a virtio-mem device, or its
        state is implausible.
    """
    owner = dbg.object_at("Object", rdm)
    kind = state.qom_type_name(owner)
    if kind != versions.VIRTIO_MEM_TYPE:
        raise QemuStateError(
            f"memory region {mr.member('name').string()!r} has a RamDiscardManager of type "
            f"{kind!r}; only virtio-mem is supported"
        )
    vmem = dbg.object_at(versions.VIRTIO_MEM_STRUCT, rdm)
    nbits = int(vmem.member("bitmap_size"))
    block_size = int(vmem.member("block_size"))
    region_size = int(mr.member("ram_block").member("max_length"))
    if (
        block_size < 4096
        or block_size & (block_size - 1)
        or not 0 <= nbits <= MAX_BITMAP_BITS
        or nbits * block_size > region_size + block_size
    ):
        raise QemuStateError(
            f"implausible virtio-mem device at {rdm:#x}: bitmap_size={nbits}, "
            f"block_size={block_size:#x}, region size {region_size:#x}"
        )
    bitmap = dbg.read(int(vmem.member("bitmap")), (nbits + 63) // 64 * 8) if nbits else b""
    return plugged_runs(bitmap, nbits, block_size, offset, size)
