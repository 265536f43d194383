"""aarch64 vCPU state (CPUARMState) as QEMU's dump reads it (target/arm/arch_dump.c).

What ``arm_cpu_write_elf64_note`` puts in the notes is computed by QEMU from
``env`` at dump time: ``pstate_read`` folds the NZCV flags, DAIF and BTYPE
back into PSTATE, ``vfp_get_fpsr``/``vfp_get_fpcr`` fold the softfloat
exception flags into FPSR, and the SVE vector length comes from
``sve_vqm1_for_el`` at the current exception level. Each is redone here
from the same fields of the core, by the same rules, for QEMU 7.2 and 10.0
(the FP status layout differs between them: see :func:`_fpsr_fpcr`).

Not covered, and refused in one line: a vCPU in AArch32 state (QEMU first
copies its banked registers into xregs, ``aarch64_sync_32_to_64``), a CPU
without AArch64 (QEMU then writes an ELF32 EM_ARM dump) and a big-endian
kernel (SCTLR_EL1.EE).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qemu_vmcore.debugger import Debugger, Value
from qemu_vmcore.errors import QemuStateError, VmcoreError
from qemu_vmcore.qemu import versions

SCTLR_M = 1 << 0  # stage 1 MMU enabled
SCTLR_EE = 1 << 25  # EL1 data accesses are big-endian
PSTATE_SP = 1 << 0  # SPSel: SP_ELx rather than SP_EL0
HCR_TGE, HCR_E2H = 1 << 27, 1 << 34
SCR_NS, SCR_EEL2 = 1 << 0, 1 << 18
SVCR_SM = 1 << 0  # streaming SVE mode
#: ARM_MAX_VQ: SVE vectors of up to 2048 bits, in 128-bit quadwords.
ARM_MAX_VQ = 16
#: ARM_VFP_FPSCR, the index of FPSCR in vfp.xregs (QEMU 7.2).
ARM_VFP_FPSCR = 1
FPSR_MASK, FPCR_MASK = 0xF800009F, 0x07FF9F00  # QEMU 7.2's split of FPSCR
FPSR_QC = 1 << 27
FPCR_FZ, FPCR_AH = 1 << 24, 1 << 1
# FPSR's cumulative exception bits.
FPSR_IOC, FPSR_DZC, FPSR_OFC, FPSR_UFC, FPSR_IXC, FPSR_IDC = 1, 2, 4, 8, 0x10, 0x80
U32 = 0xFFFFFFFF


class UnsupportedGuest(VmcoreError):
    """A guest state this room does not dump (AArch32, big-endian)."""


@dataclass(frozen=True)
class SveState:
    """The SVE registers QEMU's NT_ARM_SVE note holds, at the current vector length.

    :param vq: the current vector length in quadwords (128 bits).
    :param max_vq: the CPU's largest (``ARMCPU.sve_max_vq``).
    :param zregs: Z0..Z31, ``vq * 16`` bytes each, little-endian as QEMU keeps them.
    :param pregs: P0..P15 and FFR, ``vq * 2`` bytes each.
    """

    vq: int
    max_vq: int
    zregs: tuple[bytes, ...]
    pregs: tuple[bytes, ...]


@dataclass(frozen=True)
class AArch64State:
    """One vCPU's CPUARMState, as much of it as QEMU's dump writes and ``info`` shows.

    :param index: QEMU's ``cpu_index`` (0-based; notes use index + 1).
    :param xregs: X0..X30.
    :param sp: the current stack pointer (``xregs[31]``).
    :param pstate: PSTATE as ``pstate_read()`` builds it.
    :param vregs: V0..V31 as (low, high) 64-bit halves.
    :param ttbr0, ttbr1, tcr, sctlr: the EL1 translation registers.
    """

    index: int
    xregs: tuple[int, ...]
    sp: int
    pc: int
    pstate: int
    vregs: tuple[tuple[int, int], ...]
    fpsr: int
    fpcr: int
    sve: SveState | None
    ttbr0: int
    ttbr1: int
    tcr: int
    sctlr: int

    @property
    def el(self) -> int:
        """The exception level, PSTATE.EL."""
        return (self.pstate >> 2) & 3

    @property
    def mode(self) -> str:
        """``EL1h``, ``EL0t``...: the exception level and its stack pointer."""
        return f"EL{self.el}{'h' if self.pstate & PSTATE_SP else 't'}"

    @property
    def mmu_on(self) -> bool:
        return bool(self.sctlr & SCTLR_M)

    @property
    def ran(self) -> bool:
        """The MMU is on: a kernel set up page tables in guest RAM."""
        return self.mmu_on

    def registers(self) -> dict[str, int]:
        return {"pc": self.pc, "ttbr0": self.ttbr0, "ttbr1": self.ttbr1}


def _u64s(dbg: Debugger, v: Value, count: int) -> tuple[int, ...]:
    """``count`` uint64_t from the array ``v``, read in one go."""
    raw = dbg.read(v.address(), 8 * count)
    return struct.unpack(f"<{count}Q", raw)


def _feature(dbg: Debugger, env: Value, name: str) -> bool:
    """``arm_feature(env, name)``: a bit of ``env->features`` by its enumerator."""
    return bool(int(env.member("features")) >> dbg.constant(name) & 1)


def read_state(dbg: Debugger, cpu: Value) -> AArch64State:
    """Read one vCPU's architectural state from its CPUState pointer.

    ARMCPU begins with its CPUState ``parent_obj``, so the CPUState address
    is the ARMCPU address.

    :raises UnsupportedGuest: an AArch32 or big-endian vCPU, or a CPU without AArch64.
    """
    arm = dbg.object_at("ARMCPU", int(cpu))
    env = arm.member("env")
    index = int(cpu.member("cpu_index"))
    if not _feature(dbg, env, "ARM_FEATURE_AARCH64"):
        raise UnsupportedGuest(
            f"vCPU {index} is a 32-bit ARM CPU (no AArch64): QEMU dumps it as ELF32 "
            "EM_ARM, which qemu-vmcore does not write"
        )
    if not int(env.member("aarch64")):
        raise UnsupportedGuest(
            f"vCPU {index} was in AArch32 state (a 32-bit task or kernel): "
            "qemu-vmcore writes the notes of AArch64 vCPUs only"
        )
    cp15 = env.member("cp15")
    sctlr_el = _u64s(dbg, cp15.member("sctlr_el"), 4)
    if sctlr_el[1] & SCTLR_EE:
        raise UnsupportedGuest(
            "the guest kernel runs big-endian (SCTLR_EL1.EE is set on vCPU "
            f"{index}): big-endian aarch64 guests are not supported"
        )
    xregs = _u64s(dbg, env.member("xregs"), 32)
    vfp = env.member("vfp")
    zregs = vfp.member("zregs")
    # aa64_vfp_qreg(env, n) is &zregs[n].d[0]: V registers are the low
    # 128 bits of the Z registers.
    zsize = zregs.index(0).sizeof()
    zraw = dbg.read(zregs.address(), 32 * zsize)
    vregs = tuple(struct.unpack_from("<2Q", zraw, n * zsize) for n in range(32))
    fpsr, fpcr = _fpsr_fpcr(dbg, env)
    return AArch64State(
        index=index,
        xregs=xregs[:31],
        sp=xregs[31],
        pc=int(env.member("pc")),
        pstate=_pstate_read(env),
        vregs=vregs,
        fpsr=fpsr,
        fpcr=fpcr,
        sve=_sve(dbg, arm, env, zraw, zsize),
        ttbr0=_u64s(dbg, cp15.member("ttbr0_el"), 4)[1],
        ttbr1=_u64s(dbg, cp15.member("ttbr1_el"), 4)[1],
        tcr=_u64s(dbg, cp15.member("tcr_el"), 4)[1],
        sctlr=sctlr_el[1],
    )


def _pstate_read(env: Value) -> int:
    """``pstate_read()`` (target/arm/cpu.h, the same in 7.2 and 10.0): PSTATE
    with the flags QEMU keeps apart folded back in. ZF is "zero iff Z"."""
    nf, zf, cf, vf = (int(env.member(f)) for f in ("NF", "ZF", "CF", "VF"))
    z = int(zf == 0)
    return (
        (nf & 0x80000000)
        | (z << 30)
        | (cf << 29)
        | ((vf & 0x80000000) >> 3)
        | int(env.member("pstate"))
        | int(env.member("daif"))
        | (int(env.member("btype")) << 10)
    ) & U32


def _flags(status: Value) -> int:
    """``get_float_exception_flags()`` of one float_status."""
    return int(status.member("float_exception_flags"))


def _fpsr_fpcr(dbg: Debugger, env: Value) -> tuple[int, int]:
    """``(vfp_get_fpsr(env), vfp_get_fpcr(env))`` as this QEMU computes them."""
    vfp = env.member("vfp")
    qc = any(int(vfp.member("qc").index(i)) for i in range(4))
    shortvec = (
        (int(vfp.member("vec_len")) << 16)
        | (int(vfp.member("vec_stride")) << 20)
        | (int(env.member("v7m").member("ltpsize")) << 16)
    )
    if vfp.has_member(versions.ARM_VFP_FPSR.name):
        # 10.0: FPSR and FPCR kept apart, float_status in an array by FPST_*.
        fpcr = int(vfp.member("fpcr")) | shortvec
        fpsr = int(vfp.member("fpsr")) | _fpsr_from_host_10(dbg, vfp)
        return (fpsr | (FPSR_QC if qc else 0)) & U32, fpcr & U32
    # 7.2: one FPSCR in vfp.xregs, and four named float_status.
    fpscr = int(vfp.member("xregs").index(ARM_VFP_FPSCR)) | shortvec
    fpscr |= _fpscr_from_host_72(dbg, vfp)
    fpscr |= FPSR_QC if qc else 0
    return fpscr & FPSR_MASK, fpscr & FPCR_MASK


def _exceptbits(host: int, ah: bool, names: dict[str, int]) -> int:
    """``vfp_exceptbits_from_host()``: softfloat flags -> FPSR's cumulative bits.

    :param names: the flag enumerators' values, by role.
    """
    out = 0
    if host & names["invalid"]:
        out |= FPSR_IOC
    if host & names["divbyzero"]:
        out |= FPSR_DZC
    if host & names["overflow"]:
        out |= FPSR_OFC
    if host & (names["underflow"] | names["output_denormal"]):
        out |= FPSR_UFC
    if host & names["inexact"]:
        out |= FPSR_IXC
    if host & names["input_denormal"]:
        out |= FPSR_IDC
    if ah and host & names.get("input_denormal_used", 0):
        out |= FPSR_IDC
    if ah and host & names["output_denormal"]:
        out |= FPSR_IXC
    return out


def _flag_values(dbg: Debugger, spelling: dict[str, str]) -> dict[str, int]:
    return {role: dbg.constant(f"float_flag_{name}") for role, name in spelling.items()}


_FLAGS_72 = {
    "invalid": "invalid",
    "divbyzero": "divbyzero",
    "overflow": "overflow",
    "underflow": "underflow",
    "inexact": "inexact",
    "input_denormal": "input_denormal",
    "output_denormal": "output_denormal",
}
_FLAGS_10 = {
    **_FLAGS_72,
    "input_denormal": "input_denormal_flushed",
    "output_denormal": "output_denormal_flushed",
    "input_denormal_used": "input_denormal_used",
}


def _fpscr_from_host_72(dbg: Debugger, vfp: Value) -> int:
    """QEMU 7.2's ``vfp_get_fpscr_from_host()``."""
    f = _flag_values(dbg, _FLAGS_72)
    bits = _flags(vfp.member("fp_status")) | _flags(vfp.member("standard_fp_status"))
    # FZ16 does not generate an input denormal exception.
    for half in ("fp_status_f16", "standard_fp_status_f16"):
        bits |= _flags(vfp.member(half)) & ~f["input_denormal"]
    return _exceptbits(bits, False, f)


def _fpsr_from_host_10(dbg: Debugger, vfp: Value) -> int:
    """QEMU 10.0's ``vfp_get_fpsr_from_host()``."""
    f = _flag_values(dbg, _FLAGS_10)
    status = vfp.member("fp_status")

    def flags(fpst: str) -> int:
        return _flags(status.index(dbg.constant(fpst)))

    a32 = flags("FPST_A32") | flags("FPST_STD")
    a32 |= (flags("FPST_A32_F16") | flags("FPST_STD_F16")) & ~f["input_denormal"]
    a64 = flags("FPST_A64")
    a64 |= flags("FPST_A64_F16") & ~(f["input_denormal"] | f["input_denormal_used"])
    fpcr = int(vfp.member("fpcr"))
    # Flushing an input denormal only because of FPCR.FIZ does not set IDC.
    if fpcr & (FPCR_FZ | FPCR_AH) != FPCR_FZ:
        a64 &= ~f["input_denormal"]
    return _exceptbits(a64, bool(fpcr & FPCR_AH), f) | _exceptbits(a32, False, f)


def _sve(dbg: Debugger, arm: Value, env: Value, zraw: bytes, zsize: int) -> SveState | None:
    """The SVE note's registers, or None when the CPU has no SVE
    (``cpu_isar_feature(aa64_sve, cpu)``: ID_AA64PFR0_EL1.SVE, bits 35:32)."""
    if (int(arm.member("isar").member("id_aa64pfr0")) >> 32) & 0xF == 0:
        return None
    vq = _sve_vqm1_for_el(dbg, arm, env) + 1
    max_vq = int(arm.member("sve_max_vq"))
    if not 1 <= vq <= ARM_MAX_VQ or not 1 <= max_vq <= ARM_MAX_VQ or vq * 16 > zsize:
        raise QemuStateError(
            f"implausible SVE state: vector length {vq} quadwords, maximum {max_vq} "
            f"(QEMU allows 1..{ARM_MAX_VQ})"
        )
    pregs = env.member("vfp").member("pregs")
    psize = pregs.index(0).sizeof()
    praw = dbg.read(pregs.address(), 17 * psize)
    return SveState(
        vq=vq,
        max_vq=max_vq,
        zregs=tuple(zraw[n * zsize : n * zsize + vq * 16] for n in range(32)),
        pregs=tuple(praw[n * psize : n * psize + vq * 2] for n in range(17)),
    )


def _sve_vqm1_for_el(dbg: Debugger, arm: Value, env: Value) -> int:
    """``sve_vqm1_for_el(env, arm_current_el(env))`` (target/arm/helper.c, the
    same in 7.2 and 10.0): the largest supported vector length (quadwords,
    minus one) that ZCR_EL1..3 (SMCR_ELx in streaming mode) allow."""
    el = (int(env.member("pstate")) >> 2) & 3
    vfp = env.member("vfp")
    streaming = bool(int(env.member("svcr")) & SVCR_SM)
    cr = _u64s(dbg, vfp.member("smcr_el" if streaming else "zcr_el"), 4)
    vq_map = int(arm.member("sme_vq" if streaming else "sve_vq").member("map"))
    el2 = _el2_enabled(dbg, env)
    length = ARM_MAX_VQ - 1
    if el <= 1 and not _el_is_in_host(env, el, el2):
        length = min(length, cr[1] & 0xF)
    if el <= 2 and el2:
        length = min(length, cr[2] & 0xF)
    if _feature(dbg, env, "ARM_FEATURE_EL3"):
        length = min(length, cr[3] & 0xF)
    allowed = vq_map & ((1 << (length + 1)) - 1)
    if allowed:
        return allowed.bit_length() - 1
    if streaming:  # bit 0 is always set for Normal SVE, not for Streaming SVE
        sme = int(arm.member("sme_vq").member("map"))
        # ctz32(sme_vq.map); ctz32(0) is 32, a length the caller refuses.
        return (sme & -sme).bit_length() - 1 if sme else 32
    raise QemuStateError("implausible SVE state: no supported vector length (sve_vq.map)")


def _el2_enabled(dbg: Debugger, env: Value) -> bool:
    """``arm_is_el2_enabled()``: EL2 exists, and with EL3 the current security
    state has it (non-secure, or secure with SCR_EL3.EEL2)."""
    if not _feature(dbg, env, "ARM_FEATURE_EL2"):
        return False
    if not _feature(dbg, env, "ARM_FEATURE_EL3"):
        return True
    scr = int(env.member("cp15").member("scr_el3"))
    return bool(scr & (SCR_NS | SCR_EEL2))


def _el_is_in_host(env: Value, el: int, el2_enabled: bool) -> bool:
    """``el_is_in_host()``: EL0 or EL2 under HCR_EL2.E2H (and TGE for EL0)."""
    if el & 1:
        return False
    mask = HCR_E2H if el else HCR_E2H | HCR_TGE
    return int(env.member("cp15").member("hcr_el2")) & mask == mask and el2_enabled
