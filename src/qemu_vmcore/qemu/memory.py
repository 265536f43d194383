"""The guest-physical RAM map, rebuilt from QEMU's FlatView.

This mirrors what QMP ``dump-guest-memory`` does through
``guest_phys_blocks_append()`` (system/memory_mapping.c): walk the FlatView of
``address_space_memory``, keep RAM that is neither ``ram_device`` nor
``nonvolatile`` (of a virtio-mem region only the plugged parts, see
:mod:`~qemu_vmcore.qemu.virtio_mem`), and join a range to its predecessor only
when it continues it in guest-physical *and* host-virtual address space *and*
belongs to the same MemoryRegion. Following those rules exactly gives the
same PT_LOAD set as QEMU's own dump.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import state, versions, virtio_mem

#: A FlatView of a real machine has tens of ranges; a corrupt ``nr`` must not
#: make us read (or allocate for) billions.
MAX_FLAT_RANGES = 1 << 16
#: Alias chains are a few levels deep; a cycle must not hang us.
MAX_ALIAS_DEPTH = 64
U64 = 1 << 64
#: The end of x86_64 user space: TASK_SIZE_MAX with 5-level paging (2**56
#: less a page; with 4-level paging it is 2**47 less a page). mmap() never
#: returns memory above it, so a RAMBlock whose host memory would lie there
#: is corrupt. That is an error about QEMU's state, unlike a plausible host
#: address that the core has no segment for: gdb's gcore leaves MADV_DONTDUMP
#: mappings (dump-guest-core=off) out entirely, so that is RAM the core lacks.
USER_SPACE_END = (1 << 56) - 4096


@dataclass(frozen=True)
class GuestRange:
    """Guest RAM ``[gpa, end)`` lives in QEMU at host address ``hva``.

    :param gpa: first guest-physical address.
    :param end: first guest-physical address after the range (exclusive).
    :param hva: host virtual address of ``gpa`` in the QEMU process.
    :param block: the RAMBlock's idstr (e.g. ``pc.ram``).
    :param region: the MemoryRegion's name.
    :param mr: the MemoryRegion's address, the identity used for joining.
    :param dumpable: QEMU left this RAM dumpable (no MADV_DONTDUMP from
        ``dump-guest-core=off`` or a backend's ``dump=off``).
    :param shared: the RAMBlock is a shared mapping (``RAM_SHARED``: a
        ``share=on`` memory backend), so a file it maps holds its bytes.
    """

    gpa: int
    end: int
    hva: int
    block: str
    region: str
    mr: int
    dumpable: bool = True
    shared: bool = False

    @property
    def size(self) -> int:
        """Length in bytes."""
        return self.end - self.gpa


@dataclass(frozen=True)
class MapSource:
    """Where the guest-physical map came from.

    :param kind: ``"flatview"`` (the FlatView QEMU rendered, as its own dump
        reads it) or ``"region tree"`` (rendered here from the MemoryRegion
        tree, qemu/render.py, when the FlatView is cut off the core).
    :param expr: the QEMU expression read (``address_space_memory.current_map``).
    :param why: why the FlatView was not used; None when it was.
    """

    kind: str
    expr: str
    why: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "expr": self.expr, "why": self.why}


FLATVIEW = "flatview"
REGION_TREE = "region tree"
#: The usual source: the FlatView QEMU rendered, as its own dump reads it.
FLATVIEW_SOURCE = MapSource(FLATVIEW, f"{versions.ADDRESS_SPACE_MEMORY}.current_map")


def read_int128(dbg: Debugger, value: Value) -> int:
    """An ``Int128`` as a Python int.

    QEMU's Int128 is ``__int128`` where the compiler has it (7.2, 10.0 on
    x86_64) and ``struct { uint64_t lo; int64_t hi; }`` otherwise. On a
    little-endian host both are the same 16 bytes, low half first, so reading
    the raw bytes handles both shapes.
    """
    raw = dbg.read(value.address(), 16)
    return int.from_bytes(raw, "little", signed=True)


@dataclass(frozen=True)
class FlatRange:
    """One range of a FlatView, as QEMU's ``FlatRange``: guest-physical
    ``[start, start + size)`` is MemoryRegion ``mr`` from ``offset_in_region``.

    Read from the FlatView QEMU rendered (:func:`flatview_ranges`), or
    rendered here from the MemoryRegion tree (qemu/render.py).

    :param where: the range as an expression, for error messages.
    """

    start: int
    size: int
    mr: Value
    offset_in_region: int
    where: str


def flatview_ranges(dbg: Debugger) -> list[FlatRange]:
    """The ranges of ``address_space_memory``'s current FlatView, in order."""
    as_name = versions.require_variable(dbg, versions.ADDRESS_SPACE_MEMORY)
    view = dbg.variable(as_name).member("current_map")
    if int(view) == 0:
        raise QemuStateError(f"{as_name}.current_map is NULL: QEMU died before its memory map")
    where = f"{as_name}.current_map"
    # Both counts are checked before anything is read or allocated for them:
    # a corrupt nr (say 2**31) must neither make us walk past the array nor
    # build a list of billions of entries.
    nr, allocated = int(view.member("nr")), int(view.member("nr_allocated"))
    if nr > MAX_FLAT_RANGES or nr > allocated:
        raise QemuStateError(
            f"implausible FlatView {where}: nr={nr} ranges (nr_allocated={allocated}, "
            f"limit {MAX_FLAT_RANGES})",
            nr=nr,
        )
    ranges = view.member("ranges")
    out = []
    for i in range(nr):
        fr = ranges.index(i)
        at = f"{where}->ranges[{i}]"
        start = read_int128(dbg, fr.member("addr").member("start"))
        size = read_int128(dbg, fr.member("addr").member("size"))
        out.append(FlatRange(start, size, fr.member("mr"), int(fr.member("offset_in_region")), at))
    return out


def flat_ram_sections(dbg: Debugger) -> list[GuestRange]:
    """The FlatView's RAM ranges that QEMU's dump would consider, in order."""
    return ram_sections(dbg, flatview_ranges(dbg))


def ram_sections(dbg: Debugger, flat: list[FlatRange]) -> list[GuestRange]:
    """The RAM sections QEMU's dump listener adds for ``flat``, in order."""
    machine_dumps = state.dump_guest_core(dbg)
    out = []
    for fr in flat:
        out += _ram_sections(dbg, fr, machine_dumps)
    return out


def _ram_sections(dbg: Debugger, fr: FlatRange, machine_dumps: bool) -> list[GuestRange]:
    """The sections QEMU's dump listener adds for one FlatRange: none, the
    range itself, or (virtio-mem) its populated parts."""
    mr = fr.mr
    _check_region(mr, fr.where)
    if not int(mr.member("ram")):
        return []
    for flag in versions.MR_EXCLUDING_FLAGS:
        if mr.has_member(flag.name) and int(mr.member(flag.name)):
            return []
    whole = _ram_section(dbg, fr, mr, machine_dumps)
    rdm = virtio_mem.discard_manager(mr)
    if not rdm:
        return [whole]
    offset = fr.offset_in_region
    return [
        replace(
            whole,
            gpa=whole.gpa + (part - offset),
            end=whole.gpa + (part - offset) + size,
            hva=whole.hva + (part - offset),
        )
        for part, size in virtio_mem.populated_parts(dbg, rdm, mr, offset, whole.size)
    ]


#: The MemoryRegion flags that decide whether a range is dumped; C bools,
#: so 0 or 1 and nothing else in a sound core.
_MR_BOOLS = (*versions.MR_KIND_FLAGS, *(f.name for f in versions.MR_EXCLUDING_FLAGS))


def _check_region(mr: Value, where: str) -> None:
    """The FlatRange's ``mr`` must be a MemoryRegion, with flags that fit its kind.

    A pointer moved by corruption can land on bytes that read as a region
    without RAM, and the range would vanish from the dump unnoticed; the
    QOM type name and C bool values are facts such bytes rarely fake.
    """
    try:
        kind = state.qom_type_name(mr.member("parent_obj"))
    except QemuStateError:
        kind = None
    if kind != versions.MEMORY_REGION_TYPE:
        raise QemuStateError(
            f"{where}.mr ({int(mr):#x}) is not a MemoryRegion "
            f"(its QOM type is {kind!r}, not {versions.MEMORY_REGION_TYPE!r})"
        )
    flags = {f: int(mr.member(f)) for f in _MR_BOOLS if mr.has_member(f)}
    bad = {f: v for f, v in flags.items() if v not in (0, 1)}
    if bad:
        name, value = next(iter(bad.items()))
        raise QemuStateError(f"MemoryRegion of {where}: bool {name} = {value:#x}, not 0 or 1")
    if int(mr.member("ram_block")) and not flags["ram"] and not flags.get("rom_device"):
        raise QemuStateError(
            f"MemoryRegion of {where} has a RAMBlock but is neither RAM nor a ROM device"
        )


def _range_problem(start: int, size: int) -> str | None:
    """What is wrong with a FlatRange's ``addr`` (two Int128s), if anything.

    The memory API keeps a FlatRange inside the 64-bit address space (an
    Int128 only so that ``2**64`` itself, the end of the last range, fits).
    """
    if not 0 <= start < U64:
        return "start outside the 64-bit address space"
    if size <= 0:
        return "size not positive"
    if start + size > U64:
        return f"start+size={start + size:#x} overflows 2**64"
    return None


def _ram_section(dbg: Debugger, fr: FlatRange, mr: Value, machine_dumps: bool) -> GuestRange:
    region = mr.member("name").string()
    start, size = fr.start, fr.size
    problem = _range_problem(start, size)
    if problem:
        raise QemuStateError(
            f"implausible FlatRange {fr.where} (region {region!r}): start={start:#x} "
            f"size={size:#x}: {problem}"
        )
    offset = fr.offset_in_region
    target, alias_offset = _resolve_alias(mr)
    block = target.member("ram_block")
    if int(block) == 0:
        raise QemuStateError(f"RAM region {region!r} has no RAMBlock")
    idstr = block.member("idstr").string()
    host = int(block.member("host"))
    region_offset = alias_offset + offset
    max_length = int(block.member("max_length"))
    if region_offset + size > max_length:
        raise QemuStateError(
            f"RAMBlock {idstr!r}: range +{region_offset:#x}..+{region_offset + size:#x} "
            f"beyond max_length {max_length:#x}"
        )
    if host == 0 or host + region_offset + size > USER_SPACE_END:
        raise QemuStateError(
            f"RAMBlock {idstr!r}: host address {host:#x} is not a user-space address; "
            f"QEMU cannot have mapped guest RAM {start:#x}-{start + size:#x} there"
        )
    return GuestRange(
        gpa=start,
        end=start + size,
        hva=host + region_offset,
        block=idstr,
        region=region,
        mr=int(mr),
        dumpable=machine_dumps and _backend_dumps(dbg, target),
        shared=bool(int(block.member("flags")) & versions.RAM_SHARED),
    )


def _backend_dumps(dbg: Debugger, mr: Value) -> bool:
    """False when the region belongs to a memory backend created with ``dump=off``."""
    owner = mr.member("owner")
    if int(owner) == 0 or not state.qom_type_name(owner).startswith(versions.MEMORY_BACKEND_TYPE):
        return True
    backend = dbg.object_at("HostMemoryBackend", int(owner))
    dump = versions.BACKEND_DUMP.name
    return not backend.has_member(dump) or bool(int(backend.member(dump)))


def _resolve_alias(mr: Value) -> tuple[Value, int]:
    """Follow ``mr->alias`` as memory_region_get_ram_ptr() does; returns (mr, offset)."""
    offset = 0
    for _ in range(MAX_ALIAS_DEPTH):
        alias = mr.member("alias")
        if int(alias) == 0:
            return mr, offset
        offset += int(mr.member("alias_offset"))
        mr = alias
    raise QemuStateError(f"MemoryRegion alias chain longer than {MAX_ALIAS_DEPTH}")


def join_sections(sections: list[GuestRange]) -> list[GuestRange]:
    """Join sections (one range per FlatRange, as QEMU's listener sees them)
    into guest ranges by QEMU's rules (see the module docstring).

    :raises QemuStateError: sections out of order or overlapping, which the
        memory API never produces.
    """
    out: list[GuestRange] = []
    for s in sections:
        prev = out[-1] if out else None
        if prev is not None and prev.end > s.gpa:
            raise QemuStateError(f"FlatView ranges overlap or are unsorted at {s.gpa:#x}")
        if (
            prev is not None
            and prev.end == s.gpa
            and prev.hva + prev.size == s.hva
            and prev.mr == s.mr
        ):
            out[-1] = replace(prev, end=s.end)
        else:
            out.append(s)
    return out


def guest_ram(dbg: Debugger) -> list[GuestRange]:
    """The guest RAM ranges QMP ``dump-guest-memory`` would dump, in gpa order."""
    return join_sections(flat_ram_sections(dbg))
