"""The aarch64 vCPU notes QMP dump-guest-memory writes, byte for byte.

Per vCPU, in QEMU's vCPU order, ``arm_cpu_write_elf64_note`` (target/arm/
arch_dump.c, the same in 7.2 and 10.0) writes three notes before the next
vCPU's: NT_PRSTATUS ("CORE", struct elf_prstatus with user_pt_regs),
NT_PRFPREG ("CORE", user_fpsimd_state) and, when the CPU has SVE,
NT_ARM_SVE ("LINUX", user_sve_header and the registers at the current
vector length). aarch64 has no "QEMU" note. Then dump.c adds the guest's
VMCOREINFO note.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from qemu_vmcore.arch.aarch64.cpu import AArch64State, SveState
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts.cstruct import Layout

NT_PRFPREG = 2
NT_ARM_SVE = 0x405
#: user_sve_header.flags: SVE_PT_REGS_SVE, the registers are in SVE layout.
SVE_PT_REGS_SVE = 1


class Prstatus(NamedTuple):
    """aarch64_elf_prstatus: pr_pid, user_pt_regs and pr_fpvalid (the rest is zero)."""

    pid: int = 0
    regs: bytes = b""  # X0..X30, 31 uint64_t
    sp: int = 0
    pc: int = 0
    pstate: int = 0
    fpvalid: int = 0


#: pad1[32], pr_pid, pad2[76], regs[31], sp, pc, pstate, pr_fpvalid, pad3[4]: 392 bytes.
PRSTATUS = Layout("aarch64_elf_prstatus", Prstatus, "<", [
    (None, "32x"), ("pid", "I"), (None, "76x"), ("regs", "248s"), ("sp", "Q"), ("pc", "Q"),
    ("pstate", "Q"), ("fpvalid", "I"), (None, "4x"),
])  # fmt: skip


class FpsimdState(NamedTuple):
    """aarch64_user_vfp_state: V0..V31 as low/high halves, FPSR, FPCR."""

    vregs: bytes = b""  # 64 uint64_t
    fpsr: int = 0
    fpcr: int = 0


#: vregs[64], fpsr, fpcr, pad[8]: 528 bytes.
FPSIMD = Layout("aarch64_user_vfp_state", FpsimdState, "<", [
    ("vregs", "512s"), ("fpsr", "I"), ("fpcr", "I"), (None, "8x"),
])  # fmt: skip


class SveHeader(NamedTuple):
    """aarch64_user_sve_header (struct user_sve_header)."""

    size: int = 0
    max_size: int = 0
    vl: int = 0
    max_vl: int = 0
    flags: int = 0


SVE_HEADER = Layout("aarch64_user_sve_header", SveHeader, "<", [
    ("size", "I"), ("max_size", "I"), ("vl", "H"), ("max_vl", "H"), ("flags", "H"), (None, "2x"),
])  # fmt: skip
U64 = Layout("uint64_t", NamedTuple("U64", [("v", int)]), "<", [("v", "Q")])
U32 = Layout("uint32_t", NamedTuple("U32", [("v", int)]), "<", [("v", "I")])


def _round16(n: int) -> int:
    return (n + 15) & ~15


def sve_zreg_offset(vq: int, n: int) -> int:
    return _round16(SVE_HEADER.size) + vq * 16 * n


def sve_preg_offset(vq: int, n: int) -> int:
    return sve_zreg_offset(vq, 32) + vq * 2 * n


def sve_fpsr_offset(vq: int) -> int:
    return _round16(sve_preg_offset(vq, 17))


def sve_size(vq: int) -> int:
    """``sve_size_vq()``: the SVE note's desc size at vector length ``vq``."""
    return _round16(sve_fpsr_offset(vq) + 8)


def prstatus(s: AArch64State) -> bytes:
    """The desc of an NT_PRSTATUS note."""
    return PRSTATUS.pack(
        pid=s.index + 1,  # QEMU passes cpu_index + 1 as cpuid
        regs=b"".join(U64.pack(v=x) for x in s.xregs),
        sp=s.sp,
        pc=s.pc,
        pstate=s.pstate,
        fpvalid=1,
    )


def fpsimd(s: AArch64State) -> bytes:
    """The desc of an NT_PRFPREG note (little-endian: no half swap)."""
    vregs = b"".join(U64.pack(v=lo) + U64.pack(v=hi) for lo, hi in s.vregs)
    return FPSIMD.pack(vregs=vregs, fpsr=s.fpsr, fpcr=s.fpcr)


def sve(s: AArch64State, state: SveState) -> bytes:
    """The desc of an NT_ARM_SVE note, as aarch64_write_elf64_sve lays it out."""
    vq = state.vq
    buf = bytearray(sve_size(vq))
    buf[: SVE_HEADER.size] = SVE_HEADER.pack(
        size=sve_size(vq),
        max_size=sve_size(state.max_vq),
        vl=vq * 16,
        max_vl=state.max_vq * 16,
        flags=SVE_PT_REGS_SVE,
    )
    for n, z in enumerate(state.zregs):
        buf[sve_zreg_offset(vq, n) : sve_zreg_offset(vq, n) + vq * 16] = z
    for n, p in enumerate(state.pregs):
        buf[sve_preg_offset(vq, n) : sve_preg_offset(vq, n) + vq * 2] = p
    at = sve_fpsr_offset(vq)
    buf[at : at + 8] = U32.pack(v=s.fpsr) + U32.pack(v=s.fpcr)
    return bytes(buf)


def vcpu_notes(states: Sequence[AArch64State]) -> bytes:
    """All vCPU notes in QEMU's order: per vCPU, PRSTATUS, PRFPREG, then SVE."""
    out = []
    for s in states:
        out.append(E.note_bytes(b"CORE", E.NT_PRSTATUS, prstatus(s)))
        out.append(E.note_bytes(b"CORE", NT_PRFPREG, fpsimd(s)))
        if s.sve is not None:
            out.append(E.note_bytes(b"LINUX", NT_ARM_SVE, sve(s, s.sve)))
    return b"".join(out)
