"""x86 vCPU state (CPUX86State) as QEMU's dump reads it (target/i386/arch_dump.c),
and the ELF class and machine QEMU picks for an x86 guest's dump."""

from __future__ import annotations

from dataclasses import dataclass

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange

HF_LMA_MASK = 1 << 14  # target/i386/cpu.h: HF_LMA_SHIFT 14, long mode active
U32_MAX = 0xFFFFFFFF


def env(dbg: Debugger, cpu: Value) -> Value:
    """The CPUX86State of a CPUState pointer.

    X86CPU (ArchCPU) begins with its CPUState ``parent_obj`` in every release
    we know, so the CPUState address is the X86CPU address.
    """
    return dbg.object_at("X86CPU", int(cpu)).member("env")


def long_mode(dbg: Debugger, cpu: Value) -> bool:
    """Whether the vCPU was in long mode (IA-32e), as ``env.hflags`` says."""
    return bool(int(env(dbg, cpu).member("hflags")) & HF_LMA_MASK)


def dump_arch(first_long_mode: bool | None, ranges: list[GuestRange]) -> tuple[int, int]:
    """``(ELF class, e_machine)`` chosen as QEMU's cpu_get_dump_info() chooses.

    Long mode on the first vCPU gives ELF64/EM_X86_64. Otherwise EM_386, in
    ELF32 unless some guest RAM ends above 4 GiB, which ELF32 cannot address.
    ``first_long_mode`` is None when there is no vCPU at all.
    """
    if first_long_mode:
        return E.ELFCLASS64, E.EM_X86_64
    too_high = any(r.end > U32_MAX for r in ranges)
    return (E.ELFCLASS64 if too_high else E.ELFCLASS32), E.EM_386


# Register numbers in CPUX86State.regs (target/i386/cpu.h R_EAX ...).
R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI = range(8)
# Segment numbers in CPUX86State.segs.
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)
_SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")
CR0_PE = 1


@dataclass(frozen=True)
class Segment:
    """A SegmentCache: selector, base, limit and flags as QEMU holds them."""

    selector: int
    base: int
    limit: int
    flags: int


@dataclass(frozen=True)
class X86State:
    """One vCPU's CPUX86State, as much of it as QEMU's dump writes.

    :param index: QEMU's ``cpu_index`` (0-based; notes use index + 1).
    :param regs: the 16 general registers in QEMU's order (R_EAX, R_ECX, ...).
    """

    index: int
    regs: tuple[int, ...]
    rip: int
    rflags: int
    segs: tuple[Segment, ...]  # R_ES, R_CS, R_SS, R_DS, R_FS, R_GS
    ldt: Segment
    tr: Segment
    gdt: Segment
    idt: Segment
    cr: tuple[int, ...]  # cr0..cr4
    kernel_gs_base: int
    hflags: int

    @property
    def long_mode(self) -> bool:
        return bool(self.hflags & HF_LMA_MASK)

    @property
    def mode(self) -> str:
        """``long``, ``protected`` or ``real``."""
        if self.long_mode:
            return "long"
        return "protected" if self.cr[0] & CR0_PE else "real"

    @property
    def pc(self) -> int:
        return self.rip

    @property
    def ran(self) -> bool:
        """Out of real mode: firmware or a kernel got there by writing RAM."""
        return self.mode != "real"

    def registers(self) -> dict[str, int]:
        return {"rip": self.rip, "cr3": self.cr[3]}


#: A segment selector is 16 bits in the hardware and in the i386 note.
SELECTOR_MAX = 0xFFFF


def _segment(v: Value, what: str = "") -> Segment:
    seg = Segment(
        int(v.member("selector")),
        int(v.member("base")),
        int(v.member("limit")),
        int(v.member("flags")),
    )
    # SegmentCache.selector is a uint32_t, but no x86 selector exceeds 16
    # bits: a larger one is corruption, and would not fit the notes.
    if what and seg.selector > SELECTOR_MAX:
        raise QemuStateError(
            f"implausible vCPU state: segment selector {what} = {seg.selector:#x} "
            "does not fit 16 bits"
        )
    return seg


def read_state(dbg: Debugger, cpu: Value) -> X86State:
    """Read one vCPU's architectural state from its CPUState pointer."""
    e = env(dbg, cpu)
    regs, segs, cr = e.member("regs"), e.member("segs"), e.member("cr")
    return X86State(
        index=int(cpu.member("cpu_index")),
        regs=tuple(int(regs.index(i)) for i in range(16)),
        rip=int(e.member("eip")),
        rflags=int(e.member("eflags")),
        segs=tuple(_segment(segs.index(i), _SEG_NAMES[i]) for i in range(6)),
        ldt=_segment(e.member("ldt"), "ldt"),
        tr=_segment(e.member("tr"), "tr"),
        gdt=_segment(e.member("gdt")),
        idt=_segment(e.member("idt")),
        cr=tuple(int(cr.index(i)) for i in range(5)),
        kernel_gs_base=int(e.member("kernelgsbase")),
        hflags=int(e.member("hflags")),
    )
