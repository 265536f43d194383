"""x86 vCPU state (CPUX86State) as QEMU's dump reads it (target/i386/arch_dump.c)."""

from __future__ import annotations

from qemu_vmcore import elfdefs as E
from qemu_vmcore.debugger import Debugger, Value
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
