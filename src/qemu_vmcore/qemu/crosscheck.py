"""QEMU's state checked against facts that do not depend on it.

A corrupt core can hold a FlatView, RAMBlock or vCPU list that is readable
and plausible on its own, yet describes a different machine: ``nr`` zeroed
gives an empty memory map, a ``host`` pointer moved into QEMU's own code
gives "guest RAM" that is QEMU's text. Each check here compares one piece
of QEMU's state with a second, independent source:

- the FlatView's RAM against ``MachineState.ram_size`` (``-m``) and the
  machine RAM's RAMBlock (``machine->ram``);
- every RAMBlock a range uses against its own ``used_length`` and against
  the core's program headers, which the kernel wrote, not QEMU;
- the vCPU list against ``MachineState.smp``.

The result is a list of :class:`Inconsistency`; the caller decides whether
one is an error (the default) or a warning (``--accept-inconsistent``).
A memory map with no guest RAM at all is always an error, raised by
:func:`require_ram`, since there is nothing to write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu import pc, state, versions
from qemu_vmcore.qemu.memory import GuestRange

PAGE = 4096
#: RAMBlocks of a real machine: tens (RAM, ROMs, option ROMs, VGA memory).
MAX_RAM_BLOCKS = 1 << 12
#: The legacy window 0xa0000-0x100000 (VGA memory, then the PAM-controlled
#: BIOS area): RAM that the chipset may route to devices instead, so a PC's
#: FlatView can show up to this much less of ``pc.ram`` than ``-m``.
LEGACY_WINDOW = 0x100000 - 0xA0000
PF_W, PF_R = 2, 4


class Segment(Protocol):
    """A PT_LOAD of the host core (``host.core.CoreSegment``)."""

    hva: int
    end: int
    flags: int


@dataclass(frozen=True)
class Block:
    """A RAMBlock as ``ram_list.blocks`` holds it.

    :param host: host address of its first byte in QEMU.
    :param used_length: bytes of it that are guest memory now.
    :param readonly: its MemoryRegion is read-only (a ROM), whose host
        mapping may legitimately be read-only too.
    """

    idstr: str
    host: int
    used_length: int
    readonly: bool


@dataclass(frozen=True)
class Inconsistency:
    """One disagreement between QEMU's state and an independent fact.

    :param message: one line naming both sides of the disagreement.
    :param fatal: no vmcore can be written from it even on request (a
        cpu_index that fits no note, say), as opposed to one that can be
        written with a warning.
    """

    message: str
    fatal: bool = False

    #: How every front end introduces a disagreement, as an error or a warning.
    PREFIX = "QEMU's state disagrees with itself: "

    def __str__(self) -> str:
        return self.PREFIX + self.message


def ram_blocks(dbg: Debugger) -> dict[str, Block]:
    """Every RAMBlock of ``ram_list.blocks``, by idstr (bounded, cycle-safe)."""
    head = dbg.variable(versions.RAM_LIST).member("blocks")
    out: dict[str, Block] = {}
    seen: set[int] = set()
    elem = head.member("lh_first")
    while int(elem) != 0:
        addr = int(elem)
        if addr in seen:
            raise QemuStateError(f"cycle in QEMU's RAMBlock list ram_list.blocks at {addr:#x}")
        if len(seen) >= MAX_RAM_BLOCKS:
            raise QemuStateError(f"QEMU's RAMBlock list is longer than {MAX_RAM_BLOCKS}")
        seen.add(addr)
        out[elem.member("idstr").string()] = _block(elem)
        elem = elem.member("next").member("le_next")
    return out


def _block(b: Value) -> Block:
    mr = b.member("mr")
    readonly = bool(int(mr) and int(mr.member("readonly")))
    return Block(b.member("idstr").string(), int(b.member("host")),
                 int(b.member("used_length")), readonly)  # fmt: skip


def check(
    dbg: Debugger,
    ranges: Sequence[GuestRange],
    vcpu_indices: Sequence[int],
    segments: Iterable[Segment],
) -> list[Inconsistency]:
    """Every disagreement found, in a fixed order (the first is the most basic).

    :param ranges: the guest RAM ranges from the FlatView.
    :param vcpu_indices: ``cpu_index`` of each vCPU in QEMU's list.
    :param segments: the host core's PT_LOADs.
    :raises QemuStateError: the facts themselves cannot be read.
    """
    blocks = ram_blocks(dbg)
    ms = state.machine(dbg)
    layout = pc.pc_ram_layout(dbg, ms)
    out = _check_machine_ram(ms, layout, ranges, blocks)
    out += _check_pc_bios(layout, ranges, blocks)
    out += _check_overlaps(ranges, blocks)
    out += _check_blocks(ranges, blocks, sorted(segments, key=lambda s: s.hva))
    out += _check_vcpus(ms, vcpu_indices)
    return out


def machine_ram_block(machine: Value) -> str | None:
    """The idstr of the RAMBlock of ``machine->ram`` (``pc.ram``, a backend's
    id), or None for a machine without its own RAM region (none of pc, q35, virt).

    :param machine: ``current_machine``.
    """
    ram_member = versions.MACHINE_RAM.name
    ram = machine.member(ram_member) if machine.has_member(ram_member) else None
    if ram is None or int(ram) == 0 or int(ram.member("ram_block")) == 0:
        return None
    return ram.member("ram_block").member("idstr").string()


def _check_machine_ram(
    machine: Value,
    layout: tuple[int, int] | None,
    ranges: Sequence[GuestRange],
    blocks: dict[str, Block],
) -> list[Inconsistency]:
    ram_size = int(machine.member("ram_size"))
    main = machine_ram_block(machine)
    if main is None:
        return []
    block = blocks.get(main)
    if block is None:
        return [Inconsistency(f"machine RAM's RAMBlock {main!r} is not in ram_list.blocks")]
    out = []
    if block.used_length != ram_size:
        out.append(
            Inconsistency(
                f"the machine's RAM size is {ram_size:#x} bytes (MachineState.ram_size), but "
                f"its RAMBlock {main!r} is {block.used_length:#x} bytes long (used_length)"
            )
        )
    if layout is not None:
        out += _check_pc_layout(layout, ranges, block, ram_size)
    mapped = _bytes_of_block(ranges, main)
    if not ram_size - LEGACY_WINDOW <= mapped <= ram_size:
        out.append(
            Inconsistency(
                f"QEMU's memory map (the FlatView) holds {mapped:#x} bytes of the machine's "
                f"RAM {main!r}, but the machine has {ram_size:#x} (MachineState.ram_size)"
            )
        )
    return out


def _check_pc_layout(
    layout: tuple[int, int], ranges: Sequence[GuestRange], block: Block, ram_size: int
) -> list[Inconsistency]:
    """On a PC, every range of the machine's RAM must sit where pc_memory_init()
    put it: at its own offset below 4 GiB, shifted by the PCI hole above.

    :param layout: ``(below_4g_mem_size, above_4g_mem_size)``.
    """
    below, above = layout
    if below + above != ram_size:
        return [
            Inconsistency(
                f"the PC's RAM below and above 4 GiB ({below:#x} + {above:#x}) is not its "
                f"ram_size {ram_size:#x}"
            )
        ]
    mine = [r for r in ranges if r.block == block.idstr]
    for a, b in pc.pc_ram_must_cover(below, above):
        gap = _first_gap(mine, a, b)
        if gap is not None:
            return [
                Inconsistency(
                    f"QEMU's memory map lacks the machine's RAM at {gap:#x} (a PC with "
                    f"{below:#x} bytes below 4 GiB maps {block.idstr!r} over {a:#x}-{b:#x})"
                )
            ]
    bad = _misplaced(mine, block, lambda gpa: pc.pc_ram_offset(gpa, below, above))
    if bad is not None:
        r, want, got = bad
        where = "nothing" if want is None else f"RAMBlock offset {want:#x}"
        return [
            Inconsistency(
                f"guest RAM {r.gpa:#x}-{r.end:#x} maps {block.idstr!r} at offset {got:#x}, "
                f"but a PC with {below:#x} bytes below 4 GiB maps {where} there"
            )
        ]
    return []


def _misplaced(
    ranges: Sequence[GuestRange], block: Block, offset_of: Callable[[int], int | None]
) -> tuple[GuestRange, int | None, int] | None:
    """The first range that does not map ``block`` where ``offset_of`` says:
    ``(range, the offset its first gpa should have, the offset it has)``.

    :param offset_of: the block offset the machine maps at a gpa, or None
        where it maps none of the block.
    """
    for r in ranges:
        want, last = offset_of(r.gpa), offset_of(r.end - 1)
        got = r.hva - block.host
        if want is None or last is None or want != got or last - want != r.size - 1:
            return r, want, got
    return None


def _first_gap(ranges: Sequence[GuestRange], start: int, end: int) -> int | None:
    """The first address of ``[start, end)`` that no range covers, or None."""
    pos = start
    for r in sorted(ranges, key=lambda r: r.gpa):
        if r.gpa > pos:
            break
        pos = max(pos, r.end)
        if pos >= end:
            return None
    return pos if pos < end else None


def _check_pc_bios(
    layout: tuple[int, int] | None, ranges: Sequence[GuestRange], blocks: dict[str, Block]
) -> list[Inconsistency]:
    """On a PC (``layout`` not None), the BIOS ROM must be mapped whole up to
    4 GiB, and only where the firmware rules put it."""
    bios = blocks.get(pc.PC_BIOS_BLOCK)
    if bios is None or layout is None:
        return []
    mine = [r for r in ranges if r.block == bios.idstr]
    top = pc.FOUR_GIB
    gap = _first_gap(mine, top - bios.used_length, top)
    if gap is not None:
        return [Inconsistency(f"QEMU's memory map lacks the BIOS ROM at {gap:#x} (a PC maps "
                              f"{bios.idstr!r} up to 4 GiB)")]  # fmt: skip
    bad = _misplaced(mine, bios, lambda gpa: pc.pc_bios_offset(gpa, bios.used_length))
    if bad is not None:
        r, _, got = bad
        return [Inconsistency(f"the BIOS ROM {bios.idstr!r} is mapped at {r.gpa:#x}-"
                              f"{r.end:#x} from offset {got:#x}, where a PC maps "
                              "no such part of it")]  # fmt: skip
    return []


def _check_overlaps(ranges: Sequence[GuestRange], blocks: dict[str, Block]) -> list[Inconsistency]:
    """RAMBlocks are separate mmap()s: no two of those mapped may share host memory."""
    used = sorted((blocks[r.block] for r in ranges if r.block in blocks), key=lambda b: b.host)
    used = list({b.idstr: b for b in used}.values())
    for a, b in zip(used, used[1:], strict=False):
        if a.host + a.used_length > b.host:
            return [
                Inconsistency(
                    f"RAMBlocks {a.idstr!r} and {b.idstr!r} overlap in QEMU's memory "
                    f"({a.host:#x}+{a.used_length:#x}, {b.host:#x})"
                )
            ]
    return []


def _bytes_of_block(ranges: Sequence[GuestRange], idstr: str) -> int:
    """How many distinct bytes of RAMBlock ``idstr`` the ranges map.

    Aliases may map the same bytes twice (the BIOS's last 128 KiB at
    0xe0000 and below 4 GiB), so the ranges' host intervals are merged,
    not summed.
    """
    spans = sorted((r.hva, r.hva + r.size) for r in ranges if r.block == idstr)
    total, end = 0, None
    for a, b in spans:
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def _check_blocks(
    ranges: Sequence[GuestRange], blocks: dict[str, Block], segments: Sequence[Segment]
) -> list[Inconsistency]:
    out = []
    mapped = {
        idstr: _bytes_of_block(ranges, idstr) for idstr in dict.fromkeys(r.block for r in ranges)
    }
    for idstr, size in mapped.items():
        b = blocks.get(idstr)
        if b is None:
            out.append(Inconsistency(f"RAMBlock {idstr!r} of the memory map is not in ram_list"))
            continue
        if b.host % PAGE:
            out.append(Inconsistency(f"RAMBlock {idstr!r}: host address {b.host:#x} is not "
                                     "page-aligned; QEMU maps guest RAM by pages"))  # fmt: skip
            continue
        if size > b.used_length:
            out.append(
                Inconsistency(
                    f"the memory map holds {size:#x} distinct bytes of RAMBlock {idstr!r}, which "
                    f"is "
                    f"{b.used_length:#x} bytes long (used_length)"
                )
            )
        problem = _mapping_problem(b, segments)
        if problem:
            out.append(Inconsistency(problem))
    return out


def _mapping_problem(b: Block, segments: Sequence[Segment]) -> str | None:
    """Whether the core's mappings under the block contradict it being guest RAM.

    QEMU maps each RAMBlock with one mmap() (qemu_ram_mmap), so the block
    lies inside one mapping, readable and, unless the block is a ROM,
    writable, and begins where the mapping does (a guard page ends it, and
    guest RAM's madvise flags keep the kernel from merging it with a
    neighbour; so on every rig core). A block in no mapping at all is not judged here: gdb's gcore
    leaves MADV_DONTDUMP mappings out, so that is RAM the core lacks,
    reported as missing later. A block that straddles mappings is a host
    pointer moved by corruption (a shift of a page into the neighbour).
    """
    start, end = b.host, b.host + b.used_length
    under = [s for s in segments if s.hva < end and s.end > start]
    if not under:
        return None
    need = PF_R if b.readonly else PF_R | PF_W
    for s in under:
        if s.flags & need != need:
            perms = "".join(c if s.flags & f else "-" for c, f in (("r", PF_R), ("w", PF_W)))
            return (
                f"RAMBlock {b.idstr!r} ({start:#x}-{end:#x} in QEMU) lies in a {perms} "
                f"mapping {s.hva:#x}-{s.end:#x} of the core; QEMU's guest RAM is mapped rw"
            )
    if len(under) > 1 or under[0].hva != start or under[0].end < end:
        spans = ", ".join(f"{s.hva:#x}-{s.end:#x}" for s in under[:3])
        return (
            f"RAMBlock {b.idstr!r} ({start:#x}-{end:#x} in QEMU) is not inside one mapping "
            f"of the core, from its start (it meets {spans}); QEMU maps each block with one mmap"
        )
    return None


def _check_vcpus(machine: Value, indices: Sequence[int]) -> list[Inconsistency]:
    smp = machine.member("smp")
    cpus, max_cpus = int(smp.member("cpus")), int(smp.member("max_cpus"))
    out = []
    if not indices:
        out.append(Inconsistency(f"QEMU's vCPU list is empty, but the machine has {cpus} vCPUs"))
    if 0 < len(indices) < cpus:
        out.append(
            Inconsistency(
                f"QEMU's vCPU list has {len(indices)} entries, but the machine started with "
                f"{cpus} (smp.cpus): the list is cut, or vCPUs were unplugged"
            )
        )
    allowed = max(max_cpus, 1)  # 0 in a machine that predates the field's use
    if len(indices) > allowed:
        out.append(
            Inconsistency(
                f"QEMU's vCPU list has {len(indices)} entries, but the machine allows "
                f"{max_cpus} (smp.max_cpus)"
            )
        )
    bad = [i for i in indices if not 0 <= i < allowed]
    if bad:
        out.append(Inconsistency(f"vCPU cpu_index {bad[0]} outside 0..{max_cpus - 1} "
                                 "(smp.max_cpus)", fatal=True))  # fmt: skip
    dupes = sorted(i for i, n in Counter(indices).items() if n > 1)
    if dupes:
        out.append(Inconsistency(f"two vCPUs with cpu_index {dupes[0]} in QEMU's vCPU list"))
    return out


def require_ram(ranges: Sequence[GuestRange], where: str = "address_space_memory") -> None:
    """Refuse a memory map with no guest RAM: an empty vmcore is never right.

    :raises QemuStateError: ``ranges`` is empty.
    """
    if not ranges:
        raise QemuStateError(
            f"QEMU's memory map ({where}.current_map) holds no guest RAM; every machine has "
            "some, so QEMU's state in the core is corrupt or not yet set up"
        )
