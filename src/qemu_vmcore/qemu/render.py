"""The FlatView of ``address_space_memory``, rendered from its MemoryRegion tree.

QEMU keeps the guest-physical map twice: the MemoryRegion tree the machine
built (``address_space_memory.root``: containers, aliases, priorities) and
the FlatView rendered from it (``current_map``, what qemu/memory.py reads).
A cut core can lose the FlatView while the tree survives: the FlatView is
re-allocated on every topology change, often in a thread's malloc arena
that lies after guest RAM in the file, while the machine's regions were
allocated at start-up. This module renders the tree as QEMU's
``render_memory_region()`` (system/memory.c) does, so the map can be rebuilt
from what the core still holds.

The rules, QEMU's, in brief: a disabled region renders nothing; a region's
range is clipped to its container's; an alias renders its target, shifted
by the alias's offset; subregions render first, in list order (QEMU keeps
the list sorted by priority, highest first), so a higher-priority region
wins where regions overlap; a region that terminates (RAM, MMIO, ROM)
then fills whatever gaps its subregions left in its clipped range.
``flatview_simplify()`` only merges neighbours, which qemu/memory.py's
join_sections merges again, so it is left out.

Everything is read from the core, so everything is bounded: the regions
visited, the nesting depth, the number of ranges, and a region that is its
own ancestor (a cycle) is an error.
"""

from __future__ import annotations

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import state, versions
from qemu_vmcore.qemu.memory import MAX_FLAT_RANGES, U64, FlatRange, read_int128

#: A machine's tree has a few hundred regions (q35: about 200 under
#: system_memory); corrupt subregion lists must not make us walk millions.
MAX_REGIONS = 1 << 14
#: Containers and aliases nest a few levels (system_memory > pci > alias >
#: ram); a chain deeper than this is corrupt.
MAX_DEPTH = 64


def rendered_ranges(dbg: Debugger) -> list[FlatRange]:
    """The FlatView QEMU would render from ``address_space_memory.root``.

    :raises QemuStateError: the tree is unreadable, cyclic or implausibly large.
    """
    as_name = versions.require_variable(dbg, versions.ADDRESS_SPACE_MEMORY)
    root = dbg.variable(as_name).member("root")
    if int(root) == 0:
        raise QemuStateError(f"{as_name}.root is NULL: QEMU died before its memory map")
    r = _Renderer(dbg, f"{as_name}.root")
    r.render(root, 0, 0, U64, 0, ())
    return [FlatRange(s, n, mr, off, f"{as_name}.root rendered [{s:#x}, {s + n:#x})")
            for s, n, mr, off in r.view]  # fmt: skip


class _Renderer:
    def __init__(self, dbg: Debugger, where: str) -> None:
        self.dbg = dbg
        self.where = where
        #: (start, size, mr, offset_in_region), sorted by start, disjoint.
        self.view: list[tuple[int, int, Value, int]] = []
        self.visited = 0

    def render(
        self, mr: Value, base: int, clip_start: int, clip_end: int, depth: int,
        ancestors: tuple[int, ...],
    ) -> None:  # fmt: skip
        """render_memory_region(view, mr, base, clip, ...) for ``mr``."""
        addr = int(mr)
        if addr == 0:
            raise QemuStateError(f"NULL MemoryRegion in the tree of {self.where}")
        if depth > MAX_DEPTH:
            raise QemuStateError(f"MemoryRegion tree of {self.where} deeper than {MAX_DEPTH}")
        if addr in ancestors:
            raise QemuStateError(
                f"MemoryRegion {addr:#x} contains itself in the tree of {self.where}"
            )
        self.visited += 1
        if self.visited > MAX_REGIONS:
            raise QemuStateError(f"MemoryRegion tree of {self.where} has over {MAX_REGIONS} nodes")
        if not _bool(mr, "enabled"):
            return
        base += int(mr.member("addr"))
        size = read_int128(self.dbg, mr.member("size"))
        if not 0 <= size <= U64:
            name = _name(mr)
            raise QemuStateError(
                f"MemoryRegion {name!r} ({addr:#x}): size {size:#x} is implausible"
            )
        start, end = max(base, clip_start), min(base + size, clip_end)
        if start >= end:
            return  # outside the clip, or empty: renders nothing
        inner = (*ancestors, addr)
        alias = mr.member("alias")
        if int(alias):
            base -= int(alias.member("addr")) + int(mr.member("alias_offset"))
            self.render(alias, base, start, end, depth + 1, inner)
            return
        subregions = state.qtailq(
            mr.member("subregions"), "subregions_link", MAX_REGIONS,
            f"subregions of MemoryRegion {_name(mr)!r}",
        )  # fmt: skip
        for sub in subregions:
            self.render(sub, base, start, end, depth + 1, inner)
        if _bool(mr, "terminates"):
            self._fill_gaps(mr, start, end, start - base)

    def _fill_gaps(self, mr: Value, start: int, end: int, offset: int) -> None:
        """Put ``mr`` into the gaps of ``[start, end)`` that the view leaves."""
        pos, out, i = start, [], 0
        view = self.view
        while i < len(view) and pos < end:
            s, n, *_ = view[i]
            if pos >= s + n:
                i += 1
                continue
            if pos < s:
                now = min(end, s) - pos
                out.append((i, (pos, now, mr, offset + pos - start)))
            pos = min(end, s + n)
            i += 1
        if pos < end:
            out.append((len(view), (pos, end - pos, mr, offset + pos - start)))
        for k, (i, fr) in enumerate(out):
            view.insert(i + k, fr)
        if len(view) > MAX_FLAT_RANGES:
            raise QemuStateError(
                f"the map rendered from {self.where} has over {MAX_FLAT_RANGES} ranges"
            )


def _bool(mr: Value, member: str) -> bool:
    v = int(mr.member(member))
    if v not in (0, 1):
        raise QemuStateError(f"MemoryRegion {int(mr):#x}: bool {member} = {v:#x}, not 0 or 1")
    return bool(v)


def _name(mr: Value) -> str:
    try:
        return mr.member("name").string() if int(mr.member("name")) else "(unnamed)"
    except QemuStateError:
        return "(unreadable)"
