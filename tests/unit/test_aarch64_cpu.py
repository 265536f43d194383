"""arch/aarch64 cpu and notes: QEMU's dump-time rules, pinned to its source.

Real guests almost never leave FP exception flags pending, run in streaming
SVE mode or at EL2, so the end-to-end tests never reach those branches of
:mod:`qemu_vmcore.arch.aarch64.cpu`. Here a fake debugger serves a
CPUARMState shaped as QEMU 7.2 or 10.0 has it, and every expected value is
worked out by hand from the C (the functions are named at each test):

* target/arm/cpu.h ``pstate_read`` (7.2 and 10.0);
* 7.2 target/arm/vfp_helper.c ``HELPER(vfp_get_fpscr)``,
  ``vfp_get_fpscr_from_host``, ``vfp_exceptbits_from_host`` and cpu.h's
  ``vfp_get_fpsr``/``vfp_get_fpcr`` (FPSR_MASK/FPCR_MASK);
* 10.0 target/arm/vfp_fpscr.c ``vfp_get_fpsr``/``vfp_get_fpcr`` and
  target/arm/tcg/vfp_helper.c ``vfp_get_fpsr_from_host``;
* target/arm/helper.c ``sve_vqm1_for_el_sm``, ``el_is_in_host`` and cpu.h's
  ``arm_is_el2_enabled`` (7.2 and 10.0);
* target/arm/arch_dump.c (the same in both) for the notes.

The enumerators the code asks ``constant()`` for are QEMU's own values,
from include/fpu/softfloat-types.h and target/arm/cpu.h of each version
(checked against the rig's trees when they are on this machine).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qemu_vmcore.arch.aarch64 import cpu, notes
from qemu_vmcore.arch.aarch64.cpu import AArch64State, SveState, UnsupportedGuest
from qemu_vmcore.errors import QemuStateError

# -- QEMU's enumerators, per version ------------------------------------------------------

#: enum arm_features (target/arm/cpu.h): the same order in 7.2 and 10.0.
ARM_FEATURES = {
    "ARM_FEATURE_NEON": 8,
    "ARM_FEATURE_M": 9,
    "ARM_FEATURE_V8": 26,
    "ARM_FEATURE_AARCH64": 27,
    "ARM_FEATURE_EL2": 30,
    "ARM_FEATURE_EL3": 31,
}
#: 7.2 include/fpu/softfloat-types.h.
FLAGS_72 = {
    "float_flag_invalid": 0x0001,
    "float_flag_divbyzero": 0x0002,
    "float_flag_overflow": 0x0004,
    "float_flag_underflow": 0x0008,
    "float_flag_inexact": 0x0010,
    "float_flag_input_denormal": 0x0020,
    "float_flag_output_denormal": 0x0040,
    "float_flag_invalid_isi": 0x0080,
    "float_flag_invalid_imz": 0x0100,
    "float_flag_invalid_idi": 0x0200,
    "float_flag_invalid_zdz": 0x0400,
    "float_flag_invalid_sqrt": 0x0800,
    "float_flag_invalid_cvti": 0x1000,
    "float_flag_invalid_snan": 0x2000,
}
#: 10.0 include/fpu/softfloat-types.h: the denormal flags renamed, one added.
FLAGS_10 = {
    "float_flag_invalid": 0x0001,
    "float_flag_divbyzero": 0x0002,
    "float_flag_overflow": 0x0004,
    "float_flag_underflow": 0x0008,
    "float_flag_inexact": 0x0010,
    "float_flag_input_denormal_flushed": 0x0020,
    "float_flag_output_denormal_flushed": 0x0040,
    "float_flag_invalid_isi": 0x0080,
    "float_flag_invalid_imz": 0x0100,
    "float_flag_invalid_idi": 0x0200,
    "float_flag_invalid_zdz": 0x0400,
    "float_flag_invalid_sqrt": 0x0800,
    "float_flag_invalid_cvti": 0x1000,
    "float_flag_invalid_snan": 0x2000,
    "float_flag_input_denormal_used": 0x4000,
}
#: 10.0 target/arm/cpu.h enum ARMFPStatusFlavour (FPST_COUNT 8).
FPST = {
    "FPST_A32": 0,
    "FPST_A64": 1,
    "FPST_A32_F16": 2,
    "FPST_A64_F16": 3,
    "FPST_AH": 4,
    "FPST_AH_F16": 5,
    "FPST_STD": 6,
    "FPST_STD_F16": 7,
}
CONSTANTS = {
    "7.2": {**ARM_FEATURES, **FLAGS_72},
    "10.0": {**ARM_FEATURES, **FLAGS_10, **FPST},
}
VERSIONS = ("7.2", "10.0")
#: 7.2's four float_status, by member name.
STATUS_72 = ("fp_status", "fp_status_f16", "standard_fp_status", "standard_fp_status_f16")

RIG = Path("/var/cache/qemu-vmcore-rig")


def _enum_values(text: str, start: str) -> dict[str, int]:
    """The enumerators of the first C enum body (``{...}``) after ``start``
    (implicit values counted, explicit ``= 0x..`` taken), comments dropped."""
    body = text[text.index("{", text.index(start)) + 1 :]
    body = body[: body.index("}")]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    out, nxt = {}, 0
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        nxt = int(value.strip(), 0) if value else nxt
        out[name.strip()] = nxt
        nxt += 1
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_the_enumerator_tables_are_qemus(version):
    src = RIG / f"qemu-{version}" / "src"
    if not src.is_dir():
        pytest.skip(f"no QEMU {version} source at {src}")
    cpu_h = (src / "target/arm/cpu.h").read_text()
    softfloat = (src / "include/fpu/softfloat-types.h").read_text()
    features = _enum_values(cpu_h, "enum arm_features")
    flags = _enum_values(softfloat, "Software IEC/IEEE floating-point exception flags")
    flags = {k: v for k, v in flags.items() if k.startswith("float_flag_")}
    want = CONSTANTS[version]
    assert {k: features[k] for k in ARM_FEATURES} == ARM_FEATURES
    assert flags == {k: v for k, v in want.items() if k.startswith("float_flag_")}
    if version == "10.0":
        assert _enum_values(cpu_h, "typedef enum ARMFPStatusFlavour") == FPST
        assert "#define FPST_COUNT  8" in cpu_h
    else:
        assert "ARMFPStatusFlavour" not in cpu_h


# -- a fake debugger over nested dicts ----------------------------------------------------


class Array:
    """A C array: its elements (ints, bytes or struct dicts) and the element size.

    Arrays of ints (packed with ``fmt``) and of bytes have raw bytes the fake
    serves at the address it gives the array; arrays of structs have none.
    """

    def __init__(self, items, elem_size: int, fmt: str | None = None) -> None:
        self.items, self.elem_size, self.fmt = list(items), elem_size, fmt
        self.address = 0

    def raw(self) -> bytes | None:
        if self.fmt is not None:
            return b"".join(struct.pack(self.fmt, x) for x in self.items)
        if all(isinstance(x, bytes) for x in self.items):
            assert all(len(x) == self.elem_size for x in self.items)
            return b"".join(self.items)
        return None


def u64s(*items: int) -> Array:
    return Array(items, 8, "<Q")


def u32s(*items: int) -> Array:
    return Array(items, 4, "<I")


class Pointer:
    """A pointer to a struct (a CPUState *): its address and the struct."""

    def __init__(self, address: int, target: dict) -> None:
        self.address, self.target = address, target


class FakeValue:
    """:class:`~qemu_vmcore.debugger.Value` over a dict (struct), an
    :class:`Array`, a :class:`Pointer` or a leaf (int, bytes)."""

    def __init__(self, node, address: int | None = None, size: int | None = None) -> None:
        self.node, self._address, self._size = node, address, size

    def _struct(self) -> dict:
        node = self.node.target if isinstance(self.node, Pointer) else self.node
        if not isinstance(node, dict):
            raise TypeError(f"not a struct: {node!r}")
        return node

    def member(self, name):
        child = self._struct()[name]  # KeyError is a LookupError, as drgn raises
        if isinstance(child, Array):
            return FakeValue(child, child.address, len(child.items) * child.elem_size)
        return FakeValue(child)

    def has_member(self, name):
        try:
            return name in self._struct()
        except TypeError:
            return False

    def deref(self):
        return FakeValue(self.node.target)

    def index(self, i):
        arr = self.node
        assert isinstance(arr, Array), f"not an array: {arr!r}"
        if not 0 <= i < len(arr.items):
            raise IndexError(i)
        return FakeValue(arr.items[i], arr.address + i * arr.elem_size, arr.elem_size)

    def __int__(self):
        if isinstance(self.node, Pointer):
            return self.node.address
        assert isinstance(self.node, int), f"not an integer: {self.node!r}"
        return self.node

    def address(self):
        assert self._address is not None, "the fake gives addresses to arrays only"
        return self._address

    def sizeof(self):
        assert self._size is not None, "the fake knows the size of arrays and their elements"
        return self._size

    def string(self, limit=256):
        raise AssertionError("no strings in CPUARMState")


class FakeDebugger:
    """:class:`~qemu_vmcore.debugger.Debugger` over ``{(type, address): dict}``.

    Every :class:`Array` in the objects gets an address of its own (with a
    gap after it, so a read past its end faults) and its raw bytes.
    """

    def __init__(self, objects: dict[tuple[str, int], dict], constants: dict[str, int]):
        self.objects, self.constants = objects, constants
        self.memory: dict[int, bytes] = {}
        self._next = 0x7F00_0000_0000
        for obj in objects.values():
            self._place(obj)

    def _place(self, node) -> None:
        if isinstance(node, dict):
            for child in node.values():
                self._place(child)
        elif isinstance(node, Array):
            node.address = self._next
            size = len(node.items) * node.elem_size
            self._next += (size + 0xFFF) // 0x1000 * 0x1000 + 0x1000
            raw = node.raw()
            if raw is not None:
                self.memory[node.address] = raw
            for item in node.items:
                self._place(item)

    def has_variable(self, name):
        return False

    def object_at(self, type_name, address):
        return FakeValue(self.objects[(type_name, address)])

    def has_type(self, type_name):
        return any(t == type_name for t, _ in self.objects)

    def constant(self, name):
        try:
            return self.constants[name]
        except KeyError:
            raise QemuStateError(f"QEMU's debug info has no constant {name!r}") from None

    def read(self, address, size):
        for start, data in self.memory.items():
            if start <= address and address + size <= start + len(data):
                return data[address - start : address - start + size]
        raise QemuStateError(f"address {address:#x} is not in the core")


def test_the_fake_is_honest():
    dbg = FakeDebugger({("ARMCPU", 0x1000): {"a": u64s(1, 2), "s": {"x": 3}}}, {"K": 7})
    v = dbg.object_at("ARMCPU", 0x1000)
    assert v.has_member("a") and not v.has_member("b") and not v.member("s").has_member("z")
    assert dbg.has_type("ARMCPU") and not dbg.has_type("X86CPU")
    assert dbg.read(v.member("a").address(), 16) == struct.pack("<2Q", 1, 2)
    assert int(v.member("a").index(1)) == 2 and v.member("a").sizeof() == 16
    with pytest.raises(QemuStateError):
        dbg.read(v.member("a").address() + 8, 16)  # runs past the array
    with pytest.raises(QemuStateError):
        dbg.constant("NOPE")
    with pytest.raises(LookupError):
        v.member("b")
    assert dbg.constant("K") == 7


# -- a vCPU as QEMU 7.2 or 10.0 lays out CPUARMState ----------------------------------------

ARMCPU_ADDR = 0x5555_0000_1000
SVE_PFR0 = 1 << 32  # ID_AA64PFR0_EL1.SVE = 1
AARCH64_FEATURES = 1 << ARM_FEATURES["ARM_FEATURE_AARCH64"]
EL2 = 1 << ARM_FEATURES["ARM_FEATURE_EL2"]
EL3 = 1 << ARM_FEATURES["ARM_FEATURE_EL3"]
EL1H, EL0T, EL2H, EL3H = 0x5, 0x0, 0x9, 0xD  # PSTATE.EL and SPSel
HCR_E2H, HCR_TGE = 1 << 34, 1 << 27
SCR_NS, SCR_RW, SCR_EEL2, SCR_NSE = 1 << 0, 1 << 10, 1 << 18, 1 << 62
FPCR_FIZ, FPCR_AH, FPCR_FZ = 1 << 0, 1 << 1, 1 << 24


def zreg(n: int, size: int = 256) -> bytes:
    """Z``n`` with bytes of its own: ``n`` in the high nibble, the offset below."""
    return bytes((n << 3 ^ i * 7) & 0xFF for i in range(size))


def preg(n: int, size: int = 32) -> bytes:
    return bytes((0x80 | n) ^ i for i in range(size))


def status(flags: int = 0) -> dict:
    """A float_status: only its exception flags matter to the dump."""
    return {"float_exception_flags": flags, "float_rounding_mode": 0, "flush_to_zero": 0}


def arm_cpu(
    version: str,
    *,
    cpu_index: int = 0,
    features: int = AARCH64_FEATURES,
    aarch64: int = 1,
    pstate: int = EL1H,
    nzcv: tuple[int, int, int, int] = (0, 1, 0, 0),  # NF, ZF, CF, VF: Z clear
    daif: int = 0,
    btype: int = 0,
    svcr: int = 0,
    xregs: tuple[int, ...] = tuple(0x1000 + n for n in range(32)),
    pc: int = 0xFFFF_8000_0810_0000,
    sctlr_el: tuple[int, ...] = (0, 0x30D0_199D, 0, 0),
    hcr_el2: int = 0,
    scr_el3: int = 0,
    flags: dict[str, int] | None = None,
    fpscr: int = 0,  # 7.2: vfp.xregs[ARM_VFP_FPSCR]
    fpsr: int = 0,  # 10.0: vfp.fpsr
    fpcr: int = 0,  # 10.0: vfp.fpcr
    qc: tuple[int, int, int, int] = (0, 0, 0, 0),
    vec_len: int = 0,
    vec_stride: int = 0,
    ltpsize: int = 0,
    id_aa64pfr0: int = 0,
    sve_max_vq: int = 16,
    sve_map: int = 0xFFFF,
    sme_map: int = 0,
    zcr_el: tuple[int, ...] = (0, 15, 0, 0),
    smcr_el: tuple[int, ...] = (0, 15, 0, 0),
    zsize: int = 256,
) -> dict:
    """An ARMCPU as the fake debugger serves it: only what the dump reads,
    the members named and nested as QEMU's cpu.h has them.

    :param flags: float_exception_flags by float_status, by 7.2's member
        names (``fp_status``...) or 10.0's FPST_* names.
    """
    flags = flags or {}
    vfp = {
        "zregs": Array([zreg(n, zsize) for n in range(32)], zsize),
        "pregs": Array([preg(n) for n in range(17)], 32),
        "qc": u32s(*qc),
        "vec_len": vec_len,
        "vec_stride": vec_stride,
        "xregs": u32s(*(fpscr if i == 1 else 0 for i in range(16))),
        "scratch": u32s(*[0] * 8),
        "zcr_el": u64s(*zcr_el),
        "smcr_el": u64s(*smcr_el),
    }
    if version == "7.2":
        assert set(flags) <= set(STATUS_72)
        vfp.update({name: status(flags.get(name, 0)) for name in STATUS_72})
    else:
        assert set(flags) <= set(FPST)
        vfp["fpsr"], vfp["fpcr"] = fpsr, fpcr
        by_index = {FPST[name]: value for name, value in flags.items()}
        vfp["fp_status"] = Array([status(by_index.get(i, 0)) for i in range(8)], 32)
    nf, zf, cf, vf = nzcv
    env = {
        "xregs": u64s(*xregs),
        "pc": pc,
        "pstate": pstate,
        "aarch64": aarch64,
        "thumb": 0,
        "CF": cf,
        "VF": vf,
        "NF": nf,
        "ZF": zf,
        "QF": 0,
        "btype": btype,
        "daif": daif,
        "svcr": svcr,
        "cp15": {
            "sctlr_el": u64s(*sctlr_el),
            "ttbr0_el": u64s(0, 0x4123_0000, 0, 0),
            "ttbr1_el": u64s(0, 0x4124_5000, 0, 0),
            "tcr_el": u64s(0, 0x0000_0032_B559_3519, 0, 0),
            "hcr_el2": hcr_el2,
            "scr_el3": scr_el3,
        },
        "v7m": {"ltpsize": ltpsize},
        "vfp": vfp,
        "features": features,
    }
    return {
        "parent_obj": {"cpu_index": cpu_index},
        "env": env,
        "isar": {"id_aa64pfr0": id_aa64pfr0, "id_aa64zfr0": 0},
        "sve_max_vq": sve_max_vq,
        "sve_vq": {"map": sve_map, "init": sve_map, "supported": sve_map},
        "sme_vq": {"map": sme_map, "init": sme_map, "supported": sme_map},
    }


def read(version: str, **kw) -> AArch64State:
    """``cpu.read_state`` of one vCPU built by :func:`arm_cpu`."""
    arm = arm_cpu(version, **kw)
    dbg = FakeDebugger({("ARMCPU", ARMCPU_ADDR): arm}, CONSTANTS[version])
    cs = FakeValue(Pointer(ARMCPU_ADDR, arm["parent_obj"]))
    return cpu.read_state(dbg, cs)


def fp(version: str, **kw) -> tuple[int, int]:
    s = read(version, **kw)
    return s.fpsr, s.fpcr


def vq(version: str = "10.0", **kw) -> int:
    kw.setdefault("id_aa64pfr0", SVE_PFR0)
    s = read(version, **kw)
    assert s.sve is not None
    return s.sve.vq


# -- the registers ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_the_plain_registers_come_from_env(version):
    s = read(version, cpu_index=3)
    assert s.index == 3
    assert s.xregs == tuple(0x1000 + n for n in range(31))
    assert s.sp == 0x101F  # xregs[31]: the current SP in AArch64 state
    assert s.pc == 0xFFFF_8000_0810_0000
    assert (s.ttbr0, s.ttbr1, s.tcr, s.sctlr) == (
        0x4123_0000,
        0x4124_5000,
        0x0000_0032_B559_3519,
        0x30D0_199D,
    )
    # aa64_vfp_qreg(env, n) is &zregs[n].d[0]: V<n> is the low 128 bits of Z<n>.
    assert s.vregs == tuple(struct.unpack("<2Q", zreg(n)[:16]) for n in range(32))
    assert s.sve is None  # no SVE in ID_AA64PFR0 (the default here)


# -- pstate_read (target/arm/cpu.h, 7.2 and 10.0) ---------------------------------------------


@pytest.mark.parametrize(
    ("nzcv", "want"),
    [
        ((0, 1, 0, 0), 0),  # ZF nonzero: Z clear
        ((0, 0, 0, 0), 1 << 30),  # ZF == 0: Z set
        ((0, 0x8000_0000, 0, 0), 0),  # any nonzero ZF is "not zero"
        ((0x8000_0000, 1, 0, 0), 1 << 31),  # N is NF's bit 31
        ((0x7FFF_FFFF, 1, 0, 0), 0),  # ...and only bit 31
        ((0, 1, 1, 0), 1 << 29),  # CF is 0 or 1, shifted to bit 29
        ((0, 1, 0, 0x8000_0000), 1 << 28),  # V is VF's bit 31, shifted down 3
        ((0, 1, 0, 0x7FFF_FFFF), 0),
        ((0xFFFF_FFFF, 0, 1, 0xFFFF_FFFF), 0xF000_0000),
    ],
)
def test_pstate_read_folds_nzcv(nzcv, want):
    assert read("10.0", nzcv=nzcv, pstate=0).pstate == want


def test_pstate_read_folds_daif_btype_and_the_kept_bits():
    # NF=N, ZF=0 (Z), CF=1, VF=V; DAIF all masked (bits 9:6); BTYPE 2 at
    # bits 11:10; env->pstate keeps PAN (22), SS (21) and EL1h.
    s = read(
        "7.2",
        nzcv=(0x8000_0000, 0, 1, 0x8000_0000),
        daif=0x3C0,
        btype=2,
        pstate=(1 << 22) | (1 << 21) | EL1H,
    )
    assert s.pstate == 0xF000_0000 | 0x3C0 | 0x800 | 0x0060_0000 | 0x5
    assert (s.el, s.mode) == (1, "EL1h")


def qemu_pstate_read(nf: int, zf: int, cf: int, vf: int, pstate: int, daif: int, btype: int):
    """pstate_read() with C's types: uint32_t fields, uint64_t daif, uint32_t result."""
    u32 = 0xFFFF_FFFF
    value = (
        (nf & 0x80000000)
        | (int(zf == 0) << 30)
        | ((cf << 29) & u32)
        | ((vf & 0x80000000) >> 3)
        | pstate
        | daif
        | ((btype << 10) & u32)
    )
    return value & u32


@given(
    nf=st.integers(0, 2**32 - 1),
    zf=st.integers(0, 2**32 - 1) | st.just(0),
    cf=st.integers(0, 1),
    vf=st.integers(0, 2**32 - 1),
    pstate=st.integers(0, 2**32 - 1),
    daif=st.sampled_from([0, 0x40, 0x80, 0x100, 0x200, 0x3C0]),
    btype=st.integers(0, 3),
)
def test_pstate_read_matches_qemus(nf, zf, cf, vf, pstate, daif, btype):
    s = read("10.0", nzcv=(nf, zf, cf, vf), pstate=pstate, daif=daif, btype=btype)
    assert s.pstate == qemu_pstate_read(nf, zf, cf, vf, pstate, daif, btype)


# -- FPSR/FPCR: QEMU 7.2 ----------------------------------------------------------------------

#: vfp_exceptbits_from_host (7.2) by hand: each softfloat flag alone -> FPSR.
#: The invalid_* detail flags are never looked at (softfloat raises
#: float_flag_invalid with them); invalid_isi (0x80) is not IDC (0x80).
EXCEPT_72 = {
    "float_flag_invalid": 0x01,  # IOC
    "float_flag_divbyzero": 0x02,  # DZC
    "float_flag_overflow": 0x04,  # OFC
    "float_flag_underflow": 0x08,  # UFC
    "float_flag_inexact": 0x10,  # IXC
    "float_flag_input_denormal": 0x80,  # IDC
    "float_flag_output_denormal": 0x08,  # UFC too
    "float_flag_invalid_isi": 0,
    "float_flag_invalid_imz": 0,
    "float_flag_invalid_idi": 0,
    "float_flag_invalid_zdz": 0,
    "float_flag_invalid_sqrt": 0,
    "float_flag_invalid_cvti": 0,
    "float_flag_invalid_snan": 0,
}


@pytest.mark.parametrize("version", VERSIONS)
def test_no_flags_no_bits(version):
    assert fp(version) == (0, 0)


@pytest.mark.parametrize("where", STATUS_72)
@pytest.mark.parametrize("flag", sorted(EXCEPT_72))
def test_72_each_flag_in_each_status(flag, where):
    want = EXCEPT_72[flag]
    if where.endswith("_f16") and flag == "float_flag_input_denormal":
        want = 0  # "FZ16 does not generate an input denormal exception"
    assert fp("7.2", flags={where: FLAGS_72[flag]}) == (want, 0)


def test_72_statuses_are_ored():
    flags = {
        "fp_status": FLAGS_72["float_flag_invalid"],
        "fp_status_f16": FLAGS_72["float_flag_overflow"] | FLAGS_72["float_flag_input_denormal"],
        "standard_fp_status": FLAGS_72["float_flag_inexact"],
        "standard_fp_status_f16": FLAGS_72["float_flag_divbyzero"],
    }
    assert fp("7.2", flags=flags) == (0x01 | 0x04 | 0x10 | 0x02, 0)


def test_72_fpscr_is_split_by_fpsr_mask_and_fpcr_mask():
    # FPSR_MASK 0xf800009f, FPCR_MASK 0x07ff9f00 (7.2 target/arm/cpu.h).
    assert fp("7.2", fpscr=0xFFFF_FFFF) == (0xF800_009F, 0x07FF_9F00)
    # Bits in neither mask (6:5, 14:13) are in neither register.
    assert fp("7.2", fpscr=0x0000_6060) == (0, 0)
    # NZCV (31:28) is FPSR; AHP, DN, FZ, RMode, FZ16 (26:19) are FPCR.
    assert fp("7.2", fpscr=0xA000_0000 | 0x07C8_0000) == (0xA000_0000, 0x07C8_0000)


def test_72_vec_len_vec_stride_and_ltpsize_land_in_fpcr():
    # fpscr |= vec_len << 16 | vec_stride << 20 | v7m.ltpsize << 16
    assert fp("7.2", vec_len=7, vec_stride=3) == (0, 0x0037_0000)
    assert fp("7.2", ltpsize=4) == (0, 0x0004_0000)
    assert fp("7.2", vec_len=1, ltpsize=4) == (0, 0x0005_0000)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("slot", range(4))
def test_qc_is_any_of_vfp_qc(version, slot):
    qc = tuple(0x8000_0000 if i == slot else 0 for i in range(4))
    assert fp(version, qc=qc) == (1 << 27, 0)  # FPCR_QC / FPSR_QC, bit 27


# -- FPSR/FPCR: QEMU 10.0 ---------------------------------------------------------------------

#: vfp_exceptbits_from_host (10.0) by hand, with ah false, each flag alone.
EXCEPT_10 = {
    "float_flag_invalid": 0x01,
    "float_flag_divbyzero": 0x02,
    "float_flag_overflow": 0x04,
    "float_flag_underflow": 0x08,
    "float_flag_inexact": 0x10,
    "float_flag_input_denormal_flushed": 0x80,
    "float_flag_output_denormal_flushed": 0x08,
    "float_flag_invalid_isi": 0,
    "float_flag_invalid_imz": 0,
    "float_flag_invalid_idi": 0,
    "float_flag_invalid_zdz": 0,
    "float_flag_invalid_sqrt": 0,
    "float_flag_invalid_cvti": 0,
    "float_flag_invalid_snan": 0,
    "float_flag_input_denormal_used": 0,  # IDC only with FPCR.AH, on A64
}
FPCR_CASES = {
    "0": 0,
    "FZ": FPCR_FZ,
    "AH": FPCR_AH,
    "FZ|AH": FPCR_FZ | FPCR_AH,
    "FIZ": FPCR_FIZ,
    "FZ|FIZ": FPCR_FZ | FPCR_FIZ,
}


def expected_10(flag: str, where: str, fpcr: int) -> int:
    """vfp_get_fpsr_from_host (10.0) by hand, for one flag in one float_status."""
    if where in ("FPST_AH", "FPST_AH_F16"):
        return 0  # "We do not merge in flags from FPST_AH or FPST_AH_F16"
    want = EXCEPT_10[flag]
    ah = bool(fpcr & FPCR_AH)
    if where in ("FPST_A32_F16", "FPST_STD_F16", "FPST_A64_F16"):
        if flag == "float_flag_input_denormal_flushed":
            return 0  # "FZ16 does not generate an input denormal exception"
    if where in ("FPST_A64", "FPST_A64_F16"):
        if flag == "float_flag_input_denormal_flushed" and fpcr & (FPCR_FZ | FPCR_AH) != FPCR_FZ:
            return 0  # flushed only because of FIZ (or under AH): no IDC
        if flag == "float_flag_input_denormal_used" and ah and where == "FPST_A64":
            return 0x80  # with FPCR.AH, IDC when an input denormal is used
        if flag == "float_flag_output_denormal_flushed" and ah:
            return 0x08 | 0x10  # with FPCR.AH, flushing an output denormal: UFC and IXC
    return want


@pytest.mark.parametrize("fpcr_name", sorted(FPCR_CASES))
@pytest.mark.parametrize("where", sorted(FPST))
@pytest.mark.parametrize("flag", sorted(FLAGS_10))
def test_10_each_flag_in_each_status(flag, where, fpcr_name):
    fpcr = FPCR_CASES[fpcr_name]
    got = fp("10.0", flags={where: FLAGS_10[flag]}, fpcr=fpcr)
    assert got == (expected_10(flag, where, fpcr), fpcr)


def test_10_the_denormal_rules_spelled_out():
    idf = FLAGS_10["float_flag_input_denormal_flushed"]
    used = FLAGS_10["float_flag_input_denormal_used"]
    odf = FLAGS_10["float_flag_output_denormal_flushed"]
    a64 = "FPST_A64"
    # IDC for a flushed input only when FPCR.FZ is set and FPCR.AH is not.
    assert fp("10.0", flags={a64: idf}, fpcr=FPCR_FZ)[0] == 0x80
    assert fp("10.0", flags={a64: idf}, fpcr=FPCR_FIZ)[0] == 0
    assert fp("10.0", flags={a64: idf}, fpcr=FPCR_FZ | FPCR_AH)[0] == 0
    # AArch32's statuses ignore FZ/AH: their flushed inputs always count.
    assert fp("10.0", flags={"FPST_A32": idf}, fpcr=FPCR_FIZ)[0] == 0x80
    assert fp("10.0", flags={"FPST_STD": idf}, fpcr=FPCR_AH)[0] == 0x80
    # A used input denormal is IDC under AH, on A64 only, and never from F16.
    assert fp("10.0", flags={a64: used}, fpcr=FPCR_AH)[0] == 0x80
    assert fp("10.0", flags={a64: used}, fpcr=0)[0] == 0
    assert fp("10.0", flags={"FPST_A32": used}, fpcr=FPCR_AH)[0] == 0
    assert fp("10.0", flags={"FPST_A64_F16": used | idf}, fpcr=FPCR_AH | FPCR_FZ)[0] == 0
    # A flushed output is UFC, and also IXC under AH (A64's AH only).
    assert fp("10.0", flags={a64: odf}, fpcr=0)[0] == 0x08
    assert fp("10.0", flags={a64: odf}, fpcr=FPCR_AH)[0] == 0x18
    assert fp("10.0", flags={"FPST_A64_F16": odf}, fpcr=FPCR_AH)[0] == 0x18
    assert fp("10.0", flags={"FPST_A32": odf}, fpcr=FPCR_AH)[0] == 0x08


def test_10_fpsr_and_fpcr_are_kept_apart():
    # vfp_get_fpsr: vfp.fpsr as kept (NZCV, the cumulative bits); vfp_get_fpcr:
    # vfp.fpcr as kept. Both are uint64_t in env, uint32_t in the note.
    assert fp("10.0", fpsr=0xF000_009F, fpcr=0x07C8_0003) == (0xF000_009F, 0x07C8_0003)
    assert fp("10.0", fpsr=(1 << 32) | 0x10, fpcr=(1 << 40) | FPCR_FZ) == (0x10, FPCR_FZ)
    # The kept FPSR bits and the pending flags are ORed.
    got = fp("10.0", fpsr=0x2000_0001, flags={"FPST_A64": FLAGS_10["float_flag_inexact"]})
    assert got == (0x2000_0011, 0)


def test_10_vec_len_vec_stride_and_ltpsize_land_in_fpcr():
    assert fp("10.0", vec_len=7, vec_stride=3) == (0, 0x0037_0000)
    assert fp("10.0", ltpsize=4, fpcr=FPCR_AH) == (0, 0x0004_0002)


def test_10_the_qc_bit_and_the_flags_together():
    flags = {"FPST_STD": FLAGS_10["float_flag_invalid"]}
    assert fp("10.0", qc=(0, 0, 1, 0), flags=flags, fpsr=0x4000_0000) == (0x4800_0001, 0)


def qemu_exceptbits(host: int, ah: bool, f: dict[str, int], idf: str, odf: str) -> int:
    """vfp_exceptbits_from_host(), both versions (7.2 never has ah)."""
    out = 0
    out |= 0x01 if host & f["float_flag_invalid"] else 0
    out |= 0x02 if host & f["float_flag_divbyzero"] else 0
    out |= 0x04 if host & f["float_flag_overflow"] else 0
    out |= 0x08 if host & (f["float_flag_underflow"] | f[odf]) else 0
    out |= 0x10 if host & f["float_flag_inexact"] else 0
    out |= 0x80 if host & f[idf] else 0
    if ah:
        out |= 0x80 if host & f["float_flag_input_denormal_used"] else 0
        out |= 0x10 if host & f[odf] else 0
    return out


def qemu_fpsr_fpcr_72(flags, fpscr, qc, vec_len, vec_stride):
    f = FLAGS_72
    i = flags.get("fp_status", 0) | flags.get("standard_fp_status", 0)
    i |= flags.get("fp_status_f16", 0) & ~f["float_flag_input_denormal"]
    i |= flags.get("standard_fp_status_f16", 0) & ~f["float_flag_input_denormal"]
    value = fpscr | vec_len << 16 | vec_stride << 20
    value |= qemu_exceptbits(i, False, f, "float_flag_input_denormal", "float_flag_output_denormal")
    value |= 1 << 27 if any(qc) else 0
    return value & 0xF800009F, value & 0x07FF9F00


def qemu_fpsr_fpcr_10(flags, fpsr, fpcr, qc, vec_len, vec_stride):
    f = FLAGS_10
    idf, used, odf = (
        "float_flag_input_denormal_flushed",
        "float_flag_input_denormal_used",
        "float_flag_output_denormal_flushed",
    )
    a32 = flags.get("FPST_A32", 0) | flags.get("FPST_STD", 0)
    a32 |= flags.get("FPST_A32_F16", 0) & ~f[idf]
    a32 |= flags.get("FPST_STD_F16", 0) & ~f[idf]
    a64 = flags.get("FPST_A64", 0)
    a64 |= flags.get("FPST_A64_F16", 0) & ~(f[idf] | f[used])
    if fpcr & (FPCR_FZ | FPCR_AH) != FPCR_FZ:
        a64 &= ~f[idf]
    host = qemu_exceptbits(a64, bool(fpcr & FPCR_AH), f, idf, odf)
    host |= qemu_exceptbits(a32, False, f, idf, odf)
    out_fpsr = (fpsr | host | (1 << 27 if any(qc) else 0)) & 0xFFFF_FFFF
    out_fpcr = (fpcr | vec_len << 16 | vec_stride << 20) & 0xFFFF_FFFF
    return out_fpsr, out_fpcr


FLAG_BITS = st.integers(0, 0x7FFF)
QC = st.tuples(*[st.sampled_from([0, 0, 1, 0x8000_0000])] * 4)


@given(
    flags=st.fixed_dictionaries({name: FLAG_BITS for name in STATUS_72}),
    fpscr=st.integers(0, 2**32 - 1),
    qc=QC,
    vec_len=st.integers(0, 7),
    vec_stride=st.integers(0, 3),
)
def test_72_random_flags_match_qemus(flags, fpscr, qc, vec_len, vec_stride):
    got = fp("7.2", flags=flags, fpscr=fpscr, qc=qc, vec_len=vec_len, vec_stride=vec_stride)
    assert got == qemu_fpsr_fpcr_72(flags, fpscr, qc, vec_len, vec_stride)


@given(
    flags=st.fixed_dictionaries({name: FLAG_BITS for name in FPST}),
    fpsr=st.integers(0, 2**32 - 1),
    fpcr=st.integers(0, 2**32 - 1) | st.sampled_from(sorted(FPCR_CASES.values())),
    qc=QC,
    vec_len=st.integers(0, 7),
    vec_stride=st.integers(0, 3),
)
def test_10_random_flags_match_qemus(flags, fpsr, fpcr, qc, vec_len, vec_stride):
    got = fp(
        "10.0",
        flags=flags,
        fpsr=fpsr,
        fpcr=fpcr,
        qc=qc,
        vec_len=vec_len,
        vec_stride=vec_stride,
    )
    assert got == qemu_fpsr_fpcr_10(flags, fpsr, fpcr, qc, vec_len, vec_stride)


# -- SVE: cpu_isar_feature(aa64_sve) and sve_vqm1_for_el ------------------------------------------


@pytest.mark.parametrize("pfr0", [0, 0xFFFF_FFFF, 0xFFFF_FFF0_0000_0000 | 0xFFFF_FFFF])
def test_no_sve_field_no_sve_state(pfr0):
    # ID_AA64PFR0_EL1.SVE is bits 35:32; the other fields do not count.
    s = read("10.0", id_aa64pfr0=pfr0)
    assert s.sve is None
    types = [t for _, t, _ in parse_notes(notes.vcpu_notes([s]))]
    assert types == [1, 2]


@pytest.mark.parametrize("pfr0", [1 << 32, 0xF << 32, 2 << 32])
def test_any_sve_field_is_sve(pfr0):
    assert read("7.2", id_aa64pfr0=pfr0).sve is not None


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pstate", [EL1H, EL0T, 0x4])  # EL1h, EL0t, EL1t
@pytest.mark.parametrize(("length", "want"), [(0, 1), (1, 2), (3, 4), (15, 16), (0x13, 4)])
def test_zcr_el1_len_at_el1_and_el0(version, pstate, length, want):
    # len = MIN(15, 0xf & ZCR_EL1): only bits 3:0 count.
    assert vq(version, pstate=pstate, zcr_el=(0, length, 0, 0)) == want


@pytest.mark.parametrize(
    ("vq_map", "length", "want"),
    [
        (0b1011, 2, 2),  # vq 3 is not supported: the next one down
        (0b1011, 3, 4),
        (0b1011, 1, 2),
        (0b1011, 0, 1),
        (0b1011, 15, 4),  # the largest supported
        (0b1000_0000_1000_0001, 14, 8),
        (0b1000_0000_1000_0001, 6, 1),
        (0xFFFF_0001, 15, 1),  # map bits past ARM_MAX_VQ never count
    ],
)
def test_the_length_is_capped_by_sve_vq_map(vq_map, length, want):
    assert vq(sve_map=vq_map, zcr_el=(0, length, 0, 0)) == want


def test_zcr_el2_caps_el1_and_el0_when_el2_is_enabled():
    zcr = (0, 7, 2, 0)
    assert vq(zcr_el=zcr) == 8  # no EL2: ZCR_EL2 is not looked at
    assert vq(zcr_el=zcr, features=AARCH64_FEATURES | EL2) == 3
    assert vq(zcr_el=zcr, features=AARCH64_FEATURES | EL2, pstate=EL0T) == 3
    assert vq(zcr_el=(0, 1, 9, 0), features=AARCH64_FEATURES | EL2) == 2  # the smaller wins


def test_at_el2_zcr_el1_does_not_count():
    feats = AARCH64_FEATURES | EL2
    assert vq(zcr_el=(0, 0, 5, 0), features=feats, pstate=EL2H) == 6


def test_zcr_el3_caps_every_el():
    feats = AARCH64_FEATURES | EL2 | EL3
    scr = SCR_NS | SCR_RW
    for pstate in (EL0T, EL1H, EL2H, EL3H):
        assert vq(zcr_el=(0, 15, 15, 1), features=feats, scr_el3=scr, pstate=pstate) == 2
    # At EL3 only ZCR_EL3 counts.
    assert vq(zcr_el=(0, 0, 0, 9), features=feats, scr_el3=scr, pstate=EL3H) == 10
    # Without ARM_FEATURE_EL3, ZCR_EL3 is not looked at.
    assert vq(zcr_el=(0, 15, 15, 1), features=AARCH64_FEATURES | EL2) == 16


@pytest.mark.parametrize(
    ("scr", "el2_enabled"),
    [
        (0, False),  # secure EL1, no SEL2: EL2 is not enabled
        (SCR_RW, False),
        (SCR_EEL2, True),  # secure EL2 (FEAT_SEL2)
        (SCR_NS | SCR_RW, True),
        (SCR_NS, True),
        (SCR_NS | SCR_NSE | SCR_RW, True),  # 10.0's Realm space: not Secure
    ],
)
def test_arm_is_el2_enabled_follows_the_security_state(scr, el2_enabled):
    feats = AARCH64_FEATURES | EL2 | EL3
    assert vq(zcr_el=(0, 7, 2, 15), features=feats, scr_el3=scr) == (3 if el2_enabled else 8)


@pytest.mark.parametrize(
    ("hcr", "feats", "scr", "want"),
    [
        # el_is_in_host(env, 0): E2H and TGE, with EL2 enabled: EL0 is in the
        # host, ZCR_EL1 does not count (only ZCR_EL2's 3 -> vq 4).
        (HCR_E2H | HCR_TGE, EL2, 0, 4),
        (HCR_E2H, EL2, 0, 1),  # E2H alone: EL0 of a guest, ZCR_EL1's 0 counts
        (HCR_TGE, EL2, 0, 1),
        (HCR_E2H | HCR_TGE, 0, 0, 1),  # no EL2: the HCR bits mean nothing
        (HCR_E2H | HCR_TGE, EL2 | EL3, SCR_NS | SCR_RW, 4),
        # secure, no SEL2: EL2 is not enabled, neither ZCR_EL2 nor the host counts
        (HCR_E2H | HCR_TGE, EL2 | EL3, SCR_RW, 1),
    ],
)
def test_el_is_in_host_at_el0(hcr, feats, scr, want):
    got = vq(
        zcr_el=(0, 0, 3, 15),
        features=AARCH64_FEATURES | feats,
        hcr_el2=hcr,
        scr_el3=scr,
        pstate=EL0T,
    )
    assert got == want


def test_el_is_in_host_does_not_matter_at_el1():
    # el & 1: EL1 is never in the host, ZCR_EL1 counts whatever HCR_EL2 says.
    feats = AARCH64_FEATURES | EL2
    assert vq(zcr_el=(0, 0, 3, 0), features=feats, hcr_el2=HCR_E2H | HCR_TGE) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_streaming_mode_uses_smcr_and_sme_vq(version):
    # svcr.SM: cr = smcr_el, map = sme_vq.map (SME's lengths 2 and 3 here).
    kw = dict(svcr=1, sme_map=0b0110, zcr_el=(0, 0, 0, 0))
    assert vq(version, smcr_el=(0, 15, 0, 0), **kw) == 3
    assert vq(version, smcr_el=(0, 1, 0, 0), **kw) == 2
    # LEN allows only vq 1, which SME lacks: ctz32(sme_vq.map) + 1, the smallest.
    assert vq(version, smcr_el=(0, 0, 0, 0), **kw) == 2
    # SVCR.ZA alone (bit 1) is not streaming mode.
    assert vq(version, svcr=2, sme_map=0b0110, zcr_el=(0, 0, 0, 0)) == 1


def test_streaming_mode_caps_with_smcr_el2_and_el3():
    feats = AARCH64_FEATURES | EL2 | EL3
    kw = dict(svcr=1, sme_map=0xFFFF, features=feats, scr_el3=SCR_NS | SCR_RW)
    assert vq(smcr_el=(0, 15, 4, 15), **kw) == 5
    assert vq(smcr_el=(0, 15, 15, 2), **kw) == 3
    assert vq(smcr_el=(0, 15, 15, 2), zcr_el=(0, 0, 0, 0), **kw) == 3  # ZCR does not count


def qemu_vqm1(
    el: int,
    sm: bool,
    zcr: tuple,
    smcr: tuple,
    sve_map: int,
    sme_map: int,
    el2: bool,
    el3: bool,
    scr: int,
    hcr: int,
) -> int:
    """sve_vqm1_for_el_sm() with el_is_in_host() and arm_is_el2_enabled()."""
    cr, vq_map = (smcr, sme_map) if sm else (zcr, sve_map)
    secure = el3 and not scr & SCR_NS  # arm_is_secure_below_el3
    el2_enabled = el2 and (not secure or bool(scr & SCR_EEL2))
    mask = HCR_E2H if el else HCR_E2H | HCR_TGE
    # (the arm_el_is_aa64(env, 2) of el_is_in_host holds: see the generator)
    in_host = not el & 1 and hcr & mask == mask and el2_enabled
    length = 15
    if el <= 1 and not in_host:
        length = min(length, 0xF & cr[1])
    if el <= 2 and el2_enabled:
        length = min(length, 0xF & cr[2])
    if el3:
        length = min(length, 0xF & cr[3])
    vq_map &= (1 << (length + 1)) - 1
    if vq_map:
        return vq_map.bit_length() - 1
    assert sm
    return (sme_map & -sme_map).bit_length() - 1


CR = st.tuples(st.just(0), *[st.integers(0, 0xFF)] * 3)


@given(
    el=st.integers(0, 3),
    sm=st.booleans(),
    zcr=CR,
    smcr=CR,
    sve_map=st.integers(0, 0xFFFF).map(lambda m: m | 1),  # bit 0: SVE always has vq 1
    sme_map=st.integers(1, 0xFFFF),
    el2=st.booleans(),
    el3=st.booleans(),
    scr=st.sampled_from([0, SCR_NS, SCR_EEL2, SCR_NS | SCR_EEL2]),
    hcr=st.sampled_from([0, HCR_E2H, HCR_TGE, HCR_E2H | HCR_TGE]),
)
def test_sve_vqm1_for_el_matches_qemus(el, sm, zcr, smcr, sve_map, sme_map, el2, el3, scr, hcr):
    if el == 3 and not el3 or el == 2 and not el2:
        return  # a vCPU cannot be at an EL it does not have
    feats = AARCH64_FEATURES | (EL2 if el2 else 0) | (EL3 if el3 else 0)
    # SCR_EL3.RW set: EL2 is AArch64, as it must be for an AArch64 EL2 or for
    # an EL0 in the host (arm_el_is_aa64(env, 2) in el_is_in_host).
    got = vq(
        pstate=el << 2,
        svcr=int(sm),
        zcr_el=zcr,
        smcr_el=smcr,
        sve_map=sve_map,
        sme_map=sme_map,
        features=feats,
        scr_el3=scr | SCR_RW,
        hcr_el2=hcr,
    )
    assert got == qemu_vqm1(el, sm, zcr, smcr, sve_map, sme_map, el2, el3, scr, hcr) + 1


@pytest.mark.parametrize("version", VERSIONS)
def test_the_sve_registers_at_the_current_length(version):
    s = read(version, id_aa64pfr0=SVE_PFR0, zcr_el=(0, 3, 0, 0), sve_max_vq=8)
    assert s.sve is not None
    assert (s.sve.vq, s.sve.max_vq) == (4, 8)
    assert s.sve.zregs == tuple(zreg(n)[:64] for n in range(32))  # vq * 16 bytes
    assert s.sve.pregs == tuple(preg(n)[:8] for n in range(17))  # vq * 2 bytes, FFR last


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(sve_map=0), "no supported vector length"),
        (dict(sve_map=0b10, zcr_el=(0, 0, 0, 0)), "no supported vector length"),
        (dict(sve_max_vq=0), "maximum 0"),
        (dict(sve_max_vq=17), "maximum 17"),
        (dict(zsize=64, zcr_el=(0, 4, 0, 0)), "vector length 5"),  # past sizeof(ARMVectorReg)
        # Streaming mode with no SME length at all: QEMU's ctz32(0) is 32, vq 33.
        (dict(svcr=1, sme_map=0), "vector length 33"),
    ],
)
def test_implausible_sve_state_is_refused(kw, match):
    with pytest.raises(QemuStateError, match=match) as e:
        vq(**kw)
    assert "\n" not in e.value.message


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(features=EL2 | EL3), "vCPU 2 is a 32-bit ARM CPU"),
        (dict(aarch64=0), "vCPU 2 was in AArch32 state"),
        (dict(sctlr_el=(0, 1 << 25, 0, 0)), "big-endian .*vCPU 2"),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_refusals_are_one_line(version, kw, match):
    with pytest.raises(UnsupportedGuest, match=match) as e:
        read(version, cpu_index=2, **kw)
    assert "\n" not in e.value.message


def test_only_sctlr_el1_ee_is_big_endian():
    # cpu_get_dump_info takes EL1's endianness: EE of EL2/EL3, and E0E (bit 24), do not count.
    ee, e0e = 1 << 25, 1 << 24
    assert read("10.0", sctlr_el=(ee, e0e, ee, ee)).sctlr == e0e


# -- the notes (target/arm/arch_dump.c) -------------------------------------------------------


def state(index: int = 0, sve: SveState | None = None, **kw) -> AArch64State:
    fields = dict(
        index=index,
        xregs=tuple(0x1111_0000_0000_0000 + (index << 8) + n for n in range(31)),
        sp=0xFFFF_8000_0A00_0000 + index,
        pc=0xFFFF_8000_0810_0000 + index,
        pstate=0x6000_03C5,
        vregs=tuple((0xA000 + 2 * n, 0xB000 + 2 * n + 1) for n in range(32)),
        fpsr=0x0800_0011,
        fpcr=0x0300_0000,
        sve=sve,
        ttbr0=0,
        ttbr1=0,
        tcr=0,
        sctlr=0,
    )
    fields.update(kw)
    return AArch64State(**fields)


def sve_state(vq: int, max_vq: int = 16) -> SveState:
    return SveState(
        vq=vq,
        max_vq=max_vq,
        zregs=tuple(zreg(n)[: vq * 16] for n in range(32)),
        pregs=tuple(preg(n)[: vq * 2] for n in range(17)),
    )


def test_struct_sizes_are_qemus():
    # QEMU_BUILD_BUG_ON(sizeof(struct aarch64_elf_prstatus) != 392), etc.
    assert notes.PRSTATUS.size == 392
    assert notes.FPSIMD.size == 528
    assert notes.SVE_HEADER.size == 16


def test_prstatus_fields_at_their_offsets():
    s = state(index=5)
    desc = notes.prstatus(s)
    assert len(desc) == 392
    # pad1[32], pr_pid, pad2[76], pr_reg {regs[31], sp, pc, pstate}, pr_fpvalid, pad3[4]
    assert struct.unpack_from("<I", desc, 32) == (6,)  # cpu_index + 1
    assert struct.unpack_from("<31Q", desc, 112) == s.xregs
    assert struct.unpack_from("<3Q", desc, 112 + 248) == (s.sp, s.pc, s.pstate)
    assert struct.unpack_from("<I", desc, 384) == (1,)
    rest = desc[:32] + desc[36:112] + desc[388:]
    assert rest == bytes(32 + 76 + 4)


def test_fpsimd_fields_at_their_offsets():
    s = state()
    desc = notes.fpsimd(s)
    assert len(desc) == 528
    # vregs[64] with the high half of V<n> at 2n+1 (little-endian: no swap)
    flat = tuple(x for pair in s.vregs for x in pair)
    assert struct.unpack_from("<64Q", desc, 0) == flat
    assert struct.unpack_from("<2I", desc, 512) == (s.fpsr, s.fpcr)
    assert desc[520:] == bytes(8)


def round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def qemu_sve_offsets(vq: int) -> dict[str, int]:
    """sve_zreg_offset, sve_preg_offset, sve_fpsr_offset, sve_fpcr_offset and
    sve_size_vq of arch_dump.c, transcribed."""
    header = 16  # sizeof(struct aarch64_user_sve_header)
    zreg0 = round_up(header, 16)
    preg0 = zreg0 + vq * 16 * 32
    fpsr = round_up(preg0 + vq * 16 // 8 * 17, 16)
    fpcr = fpsr + 4
    return {"zreg0": zreg0, "preg0": preg0, "fpsr": fpsr, "size": round_up(fpcr + 4, 16)}


@pytest.mark.parametrize("vq", range(1, 17))
def test_sve_offsets_are_qemus(vq):
    want = qemu_sve_offsets(vq)
    assert notes.sve_size(vq) == want["size"]
    assert notes.sve_fpsr_offset(vq) == want["fpsr"]
    assert notes.sve_zreg_offset(vq, 0) == want["zreg0"]
    assert notes.sve_zreg_offset(vq, 31) == want["zreg0"] + 31 * vq * 16
    assert notes.sve_preg_offset(vq, 0) == want["preg0"]
    assert notes.sve_preg_offset(vq, 16) == want["preg0"] + 16 * vq * 2


def test_sve_sizes_by_hand():
    # vq 1: 16 + 32*16 = 528, + 17*2 = 562 -> 576 (fpsr), fpcr 580, end 584 -> 592.
    # vq 4: 16 + 32*64 = 2064, + 17*8 = 2200 -> 2208, end 2216 -> 2224.
    # vq 16: 16 + 32*256 = 8208, + 17*32 = 8752 (aligned), end 8760 -> 8768.
    assert [notes.sve_size(v) for v in (1, 4, 16)] == [592, 2224, 8768]


@pytest.mark.parametrize(("vq", "max_vq"), [(1, 16), (4, 4), (4, 8)])
def test_the_sve_desc_lands_each_register_at_its_offset(vq, max_vq):
    s = state(sve=sve_state(vq, max_vq))
    desc = notes.sve(s, s.sve)
    off = qemu_sve_offsets(vq)
    want = bytearray(off["size"])
    # user_sve_header: size, max_size, vl, max_vl, flags (SVE_PT_REGS_SVE), reserved
    struct.pack_into(
        "<IIHHHH",
        want,
        0,
        off["size"],
        qemu_sve_offsets(max_vq)["size"],
        vq * 16,
        max_vq * 16,
        1,
        0,
    )
    for n in range(32):
        at = off["zreg0"] + n * vq * 16
        want[at : at + vq * 16] = zreg(n)[: vq * 16]
    for n in range(17):
        at = off["preg0"] + n * vq * 2
        want[at : at + vq * 2] = preg(n)[: vq * 2]
    struct.pack_into("<II", want, off["fpsr"], s.fpsr, s.fpcr)
    assert desc == bytes(want)
    assert len(desc) == off["size"]


def parse_notes(buf: bytes) -> list[tuple[bytes, int, bytes]]:
    """(name field as written, type, desc) of each note, QEMU's struct
    aarch64_note read by hand: Elf64_Nhdr, char name[8], desc."""
    out, at = [], 0
    while at < len(buf):
        namesz, descsz, ntype = struct.unpack_from("<3I", buf, at)
        assert namesz in (5, 6)
        name = buf[at + 12 : at + 20]  # name[8]: align_up(sizeof("LINUX"), 4)
        assert name[:namesz] in (b"CORE\0", b"LINUX\0")
        desc = buf[at + 20 : at + 20 + descsz]
        out.append((name, ntype, desc))
        at += 20 + descsz  # AARCH64_NOTE_HEADER_SIZE + the desc, no padding
    assert at == len(buf)
    return out


def test_vcpu_notes_order_and_names():
    with_sve = [state(0, sve=sve_state(2)), state(1, sve=sve_state(2))]
    got = [(name, t, len(d)) for name, t, d in parse_notes(notes.vcpu_notes(with_sve))]
    per_vcpu = [
        (b"CORE\0\0\0\0", 1, 392),
        (b"CORE\0\0\0\0", 2, 528),
        (b"LINUX\0\0\0", 0x405, notes.sve_size(2)),
    ]
    assert got == per_vcpu * 2
    buf = notes.vcpu_notes(with_sve[:1])
    assert struct.unpack_from("<3I", buf, 0) == (5, 392, 1)  # namesz 5: "CORE\0"
    sve_at = 2 * 20 + 392 + 528
    assert struct.unpack_from("<3I", buf, sve_at) == (6, notes.sve_size(2), 0x405)
    without = [state(0), state(1)]
    got = [
        (t, struct.unpack_from("<I", d, 32)[0] if t == 1 else None)
        for _, t, d in parse_notes(notes.vcpu_notes(without))
    ]
    assert got == [(1, 1), (2, None), (1, 2), (2, None)]


@pytest.mark.parametrize("version", VERSIONS)
def test_read_state_to_notes(version):
    # One vCPU through both halves: its FPSR/FPCR in NT_PRFPREG and NT_ARM_SVE alike.
    if version == "7.2":
        kw = dict(fpscr=0x6300_0000, flags={"fp_status": FLAGS_72["float_flag_inexact"]})
    else:
        kw = dict(fpsr=0x6000_0000, fpcr=0x0300_0000, flags={"FPST_A64": 0x10})
    s = read(version, id_aa64pfr0=SVE_PFR0, zcr_el=(0, 1, 0, 0), sve_max_vq=4, **kw)
    (_, _, pr), (_, _, fpregs), (_, _, sve) = parse_notes(notes.vcpu_notes([s]))
    assert struct.unpack_from("<2I", fpregs, 512) == (0x6000_0010, 0x0300_0000)
    assert struct.unpack_from("<2I", sve, qemu_sve_offsets(2)["fpsr"]) == (0x6000_0010, 0x300_0000)
    assert struct.unpack_from("<IIHHH", sve, 0) == (
        notes.sve_size(2),
        notes.sve_size(4),
        32,
        64,
        1,
    )
    assert sve[16:48] == zreg(0)[:32]
    assert struct.unpack_from("<3Q", pr, 360)[1] == s.pc
