"""aarch64 page tables: the one VMSAv8-64 walker, for one address or the whole map.

The EL1&0 translation regime's stage 1, as the Arm ARM describes it
(AArch64.S1Translate and the functions it calls) and QEMU's
target/arm/ptw.c (``get_phys_addr_lpae``) and helper.c
(``aa64_va_parameters``) implement it. TCR_EL1 splits the 64-bit virtual
address space into two ranges, chosen by VA bit 55: the lower one walked
from TTBR0_EL1 (user space, for Linux), the upper one from TTBR1_EL1 (the
kernel). Each range is one :class:`VaRange` (granule, size, output size,
root); both, or none when SCTLR_EL1.M is clear (the MMU is off, VA = PA),
are one :class:`AArch64PageTables`. Reading and decoding a descriptor are
shared by the two uses:

* :meth:`AArch64PageTables.translate`: one virtual address, at most one
  descriptor read per level, for VMCOREINFO confirmation and printk.
* :func:`guest_mappings`: the guest's virtual memory map (``--paging``),
  described below.

What is covered:

* TCR_EL1's T0SZ/T1SZ, TG0/TG1 (their encodings differ), EPD0/EPD1, IPS,
  TBI0/TBI1 (with TBI, bits 63:56 are ignored, else they must be a copy of
  bit 55 like the bits between the range's top and bit 55) and DS.
* Granules of 4, 16 and 64 KiB, with 16 to 48 bits of VA per range, and
  the start level from the granule and TxSZ, down to level 3. Table, block
  and page descriptors; blocks at levels 1 and 2 with 4 KiB, at level 2
  with 16 and 64 KiB.
* 52 bits: with 64 KiB and FEAT_LVA, 52-bit VAs (TxSZ down to 12); with
  64 KiB and FEAT_LPA (IPS = 52 bits), PA bits 51:48 in descriptor bits
  15:12 and TTBR bits 5:2, and 4 TiB blocks at level 1; with 4 and 16 KiB
  and TCR_EL1.DS = 1 (FEAT_LPA2), the LPA2 descriptor format (PA bits
  49:48 in place, 51:50 in bits 9:8, TTBR bits 5:2), 52-bit VAs from level
  -1 (4 KiB) or 0 (16 KiB), and blocks one level higher.
* TTBR BADDR: ASID bits 63:48 and CnP (bit 0) are not address bits; the
  bits below the root table's size (at least 64 bytes in the 52-bit
  forms) are ignored, as AArch64.TTBaseAddress ignores them.
* Output addresses past the effective PA size (IPS, at most 48 bits but
  in the 52-bit forms) are an Address size fault: not mapped.

Walked as a debugger's access is (QEMU's ``in_debug``): the Access flag is
not checked and no permission is. What is not covered, because a vCPU's EL1
registers cannot say: the EL2 regimes (a guest kernel running at EL2 with
VHE walks TTBR0/1_EL2), stage 2 (nested virtualization), AArch32 EL1,
VMSAv9-128 (TCR2_EL1.D128) and big-endian tables (big-endian guests are
refused before they get here). Where the architecture leaves a choice to
the implementation, we take the one QEMU takes or, where the registers do
not say what the CPU implements, the one that translates: a reserved TGx is
4 KiB; TxSZ outside the architecture's range (more than 48, 47 with 64 KiB,
or below 16, 12 with 52-bit VAs) faults every address of the range;
FEAT_TTST (TxSZ above 39) and, when the registers ask for them, FEAT_LVA,
FEAT_LPA and FEAT_LPA2 are taken as implemented, since a guest sets them
only on a CPU that has them; a reserved IPS (0b111) is the largest size.
Nothing in the registers is refused: every value of them means something.
:meth:`AArch64PageTables.kernel`, whose sizes come from VMCOREINFO (guest
data), refuses sizes no VMSAv8-64 configuration has with
:class:`TranslationConfigError` when it is built, not in a walk.

The guest's virtual memory map (``--paging``): QEMU's own dump cannot page
an arm guest (with ``paging``, ``dump-guest-memory`` fails: "Obtaining
memory mappings is unsupported on this CPU."), so this is ours, shaped as
the x86 one (:mod:`qemu_vmcore.arch.x86.paging`): every vCPU with the MMU
on has both ranges walked (TTBR0 unless EPD0, TTBR1 unless EPD1); every
leaf's part that is guest RAM becomes a mapping -- clipped to RAM, since
no QEMU behaviour asks for keeping a block that only starts in RAM;
virtual addresses are canonical (the upper range's have all the bits
above the range set, whatever TBI1); mappings are merged canonically
(:func:`~qemu_vmcore.guest.paging.merge`). If no vCPU has the MMU on,
guest RAM is mapped at virtual = physical.

The tables are guest data, so the walk is bounded as x86's is: each
(table, level, virtual base, layout) is walked at most once, roots
included, so vCPUs that share tables cost nothing more; at most
:data:`MAX_TABLES` tables are read (a 64 KiB table counts 16); at most
:data:`MAX_MAPPINGS` separate mappings are kept. A hostile or corrupt set
of tables ends in :class:`PagingLimitError`, never in a loop or a memory
blow-up.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.guest.paging import (
    MAX_MAPPINGS,
    MAX_TABLES,
    Mapping,
    MappingCollector,
    PagingLimitError,
    PhysicalReader,
    RamIndex,
    identity_mappings,
    read_entries,
)
from qemu_vmcore.qemu.memory import GuestRange

__all__ = [
    "MAX_MAPPINGS",
    "MAX_TABLES",
    "AArch64PageTables",
    "Descriptor",
    "Mapping",
    "PagingLimitError",
    "TranslationConfigError",
    "VaRange",
    "VcpuRegisters",
    "guest_mappings",
    "kernel_page_tables",
    "vcpu_page_tables",
]

MASK64 = (1 << 64) - 1

# TCR_EL1 (Arm ARM D19.2): the two ranges' fields, and those they share.
TCR_T0SZ_SHIFT = 0
TCR_EPD0 = 1 << 7
TCR_TG0_SHIFT = 14
TCR_T1SZ_SHIFT = 16
TCR_EPD1 = 1 << 23
TCR_TG1_SHIFT = 30
TCR_IPS_SHIFT = 32
TCR_TBI0 = 1 << 37
TCR_TBI1 = 1 << 38
TCR_DS = 1 << 59
TXSZ_MASK = 0x3F
SCTLR_M = 1  # SCTLR_EL1.M: stage 1 translation for EL1&0 enabled

#: Granule bits (log2 of its size) by TCR_EL1.TG0 and TG1, which encode them
#: differently. A reserved value behaves as an implemented granule of the
#: implementation's choice; QEMU's choice is 4 KiB (sanitize_gran_size).
TG0_GRANULE_BITS = {0b00: 12, 0b01: 16, 0b10: 14}
TG1_GRANULE_BITS = {0b01: 14, 0b10: 12, 0b11: 16}
GRANULE_BITS_BY_SIZE = {1 << 12: 12, 1 << 14: 14, 1 << 16: 16}
#: PA size in bits by TCR_EL1.IPS; 0b111 is reserved (FEAT_D128's 56 bits
#: need TCR2_EL1): taken as the largest, as QEMU bounds it by PARANGE.
IPS_BITS = (32, 36, 40, 42, 44, 48, 52, 52)

DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1  # a table below level 3, a page at level 3 (clear: a block)
#: Output address bits 47:12 of a descriptor (the low ones are the granule's).
OA_47_12 = ((1 << 48) - 1) & ~((1 << 12) - 1)
OA_49_48 = 0x3 << 48
TTBR_BADDR_47_1 = ((1 << 48) - 1) & ~1  # below: CnP; above: the ASID
TTBR_BADDR_47_6 = ((1 << 48) - 1) & ~0x3F  # the 52-bit forms: 51:48 are bits 5:2

#: Linux's KPTI (arch/arm64/kernel/entry.S): a vCPU at EL0 runs with
#: TTBR1 = tramp_pg_dir, below swapper_pg_dir, and this ASID bit set.
USER_ASID_FLAG = 1 << 48
#: swapper_pg_dir - tramp_pg_dir, in pages: 2 in today's kernels
#: (TRAMP_SWAPPER_OFFSET), 1 or 2 in older ones (PAGE_SIZE +
#: RESERVED_TTBR0_SIZE, the latter a page with CONFIG_ARM64_SW_TTBR0_PAN).
TRAMP_SWAPPER_PAGES = (2, 1)


class TranslationConfigError(VmcoreError):
    """Page-table sizes (from VMCOREINFO or a caller) that no VMSAv8-64
    configuration has, or that this walker does not implement."""


class Descriptor(enum.Enum):
    """What a descriptor is at the level it is read at."""

    INVALID = 0  # a translation fault: bit 0 clear, or a block where there can be none
    TABLE = 1  # the next level's table
    LEAF = 2  # a block (levels 0-2) or a page (level 3)


def _start_level(granule_bits: int, va_bits: int) -> int:
    """The level a walk of ``va_bits`` starts at: the pseudocode's
    ``4 - RoundUp((inputsize - grainsize) / stride)``, as ptw.c simplifies it."""
    return 4 - (va_bits - 4) // (granule_bits - 3)


@dataclass(frozen=True)
class VaRange:
    """One VA range of the EL1&0 regime, as TCR_EL1 configures it: all a walk needs.

    :param upper: the upper range (VA bit 55 set, walked from TTBR1); else the
        lower one (TTBR0).
    :param root: guest-physical address of the initial table, aligned to its size.
    :param granule_bits: log2 of the granule: 12, 14 or 16 (4, 16 or 64 KiB).
    :param va_bits: bits of address the range translates, 64 - TxSZ: 16 to 48
        (17 to 48 with 64 KiB), to 52 with ``ds`` or with 64 KiB.
    :param pa_bits: the effective output address size in bits: IPS, at most
        48 but in the 52-bit forms (``ds``, ``lpa``).
    :param tbi: top byte ignore: bits 63:56 of an address are not checked.
    :param ds: TCR_EL1.DS with 4 or 16 KiB: the LPA2 descriptor format.
    :param lpa: 64 KiB with a 52-bit IPS (FEAT_LPA): PA bits 51:48 in
        descriptor bits 15:12.
    :raises TranslationConfigError: sizes no VMSAv8-64 configuration has.
    """

    upper: bool
    root: int
    granule_bits: int
    va_bits: int
    pa_bits: int = 48
    tbi: bool = False
    ds: bool = False
    lpa: bool = False

    def __post_init__(self) -> None:
        g, what = self.granule_bits, f"aarch64 {self.granule_name} granule"
        if g not in (12, 14, 16):
            raise TranslationConfigError(f"aarch64 granule of 2**{g} bytes does not exist")
        if self.ds and g == 16:
            raise TranslationConfigError(f"{what}: TCR_EL1.DS (LPA2) is for 4 and 16 KiB only")
        if self.lpa and g != 16:
            raise TranslationConfigError(f"{what}: FEAT_LPA's descriptor format is 64 KiB only")
        wide = self.ds or g == 16
        low, high = (17 if g == 16 else 16), (52 if wide else 48)
        if not low <= self.va_bits <= high:
            why = " without TCR_EL1.DS (LPA2)" if 48 < self.va_bits <= 52 else ""
            raise TranslationConfigError(
                f"{what}: {self.va_bits}-bit VA is not supported{why} (from {low} to {high} bits)"
            )
        wide_pa = self.ds or self.lpa
        if (
            self.pa_bits not in IPS_BITS
            or (self.pa_bits > 48 and not wide_pa)
            or (self.lpa and self.pa_bits != 52)  # FEAT_LPA's format is IPS = 52 bits
        ):
            raise TranslationConfigError(f"{what}: {self.pa_bits}-bit PA is not supported")
        if not 0 <= self.root < 1 << self.pa_bits or self.root & (self.root_table_bytes - 1):
            raise TranslationConfigError(
                f"{what}: root table {self.root:#x} is not an aligned {self.pa_bits}-bit "
                "physical address"
            )

    # -- the layout --------------------------------------------------------------

    @property
    def granule_name(self) -> str:
        """``4K``, ``16K`` or ``64K``, for messages."""
        return {12: "4K", 14: "16K", 16: "64K"}.get(self.granule_bits, "?")

    @property
    def stride(self) -> int:
        """Address bits each level resolves (the granule's entries are 2**stride)."""
        return self.granule_bits - 3

    @property
    def start_level(self) -> int:
        """The level of the root table: -1 (4 KiB, 52-bit VA) to 3."""
        return _start_level(self.granule_bits, self.va_bits)

    def shift(self, level: int) -> int:
        """The low bit of the address an entry at ``level`` indexes (log2 of
        the bytes it maps)."""
        return self.granule_bits + self.stride * (3 - level)

    def entries(self, level: int) -> int:
        """Entries of a table at ``level`` (the root's can be fewer than a granule's)."""
        if level == self.start_level:
            return 1 << (self.va_bits - self.shift(level))
        return 1 << self.stride

    @property
    def root_table_bytes(self) -> int:
        """The root table's size, and its alignment (64 bytes at least in the
        52-bit forms, AArch64.TTBaseAddress)."""
        size = 8 * self.entries(self.start_level)
        return max(size, 64) if self.ds or self.lpa else size

    @property
    def block_levels(self) -> frozenset[int]:
        """Levels where a descriptor with bit 1 clear is a block
        (AArch64.BlockDescSupported; QEMU's lpae_block_desc_valid)."""
        if self.granule_bits == 12:
            return frozenset((0, 1, 2) if self.ds else (1, 2))
        return frozenset((1, 2) if self.ds or self.lpa else (2,))

    @property
    def top(self) -> int:
        """The bits above the range in its canonical addresses: all set in the
        upper range, clear in the lower one."""
        return MASK64 & ~((1 << self.va_bits) - 1) if self.upper else 0

    @property
    def layout(self) -> tuple[int, int, bool, bool]:
        """What decides how a table's entries read, beside its level."""
        return (self.granule_bits, self.pa_bits, self.ds, self.lpa)

    # -- decoding ----------------------------------------------------------------

    def covers(self, vaddr: int) -> bool:
        """Whether ``vaddr`` (64 bits) is in this range: the bits from the
        range's top to bit 55 (63 without TBI) are all a copy of the range's
        bit 55. The gap between the ranges is a translation fault."""
        top_bits = 56 if self.tbi else 64
        field = (vaddr >> self.va_bits) & ((1 << (top_bits - self.va_bits)) - 1)
        return field == (((1 << (top_bits - self.va_bits)) - 1) if self.upper else 0)

    def kind(self, desc: int, level: int) -> Descriptor:
        """What ``desc`` is at ``level``."""
        if not desc & DESC_VALID:
            return Descriptor.INVALID
        if desc & DESC_TABLE:
            return Descriptor.TABLE if level < 3 else Descriptor.LEAF
        # Bit 1 clear at level 3 is the reserved encoding: invalid there too.
        return Descriptor.LEAF if level in self.block_levels else Descriptor.INVALID

    def output_address(self, desc: int, align_bits: int) -> int | None:
        """The address ``desc`` points to (a table, a block or a page), with
        its low ``align_bits`` bits clear; None when it is past the PA size
        (an Address size fault).

        :param align_bits: the granule's bits for a table, the block's or
            page's size (:meth:`shift` of its level) for a leaf; the address
            bits below it are RES0 or attributes, and ignored.
        """
        oa = desc & OA_47_12 & ~((1 << align_bits) - 1)
        if self.ds:  # LPA2: bits 49:48 in place, 51:50 where 4K's SH was
            oa |= (desc & OA_49_48) | ((desc >> 8) & 0x3) << 50
        elif self.lpa:  # 64 KiB and FEAT_LPA: 51:48 below the granule
            oa |= ((desc >> 12) & 0xF) << 48
        return None if oa >> self.pa_bits else oa

    def translate(self, mem: PhysicalReader, vaddr: int) -> int | None:
        """The guest-physical address of ``vaddr``; None when it is not in this
        range, not mapped, or a table is not in memory. At most one 8-byte read
        per level (five at most)."""
        if not self.covers(vaddr):
            return None
        table, level = self.root, self.start_level
        while True:
            shift = self.shift(level)
            index = (vaddr >> shift) & (self.entries(level) - 1)
            got = read_entries(mem, table + 8 * index, 1, 8)
            if got is None:
                return None
            (desc,) = got
            kind = self.kind(desc, level)
            if kind is Descriptor.INVALID:
                return None
            if kind is Descriptor.TABLE:
                below = self.output_address(desc, self.granule_bits)
                if below is None:
                    return None
                table, level = below, level + 1
                continue
            base = self.output_address(desc, shift)
            return None if base is None else base | (vaddr & ((1 << shift) - 1))


def _va_range(ttbr: int, tcr: int, upper: bool) -> VaRange | None:
    """The range TCR_EL1 and one TTBR configure; None when walks of it are
    disabled (EPDx) or every address in it faults (TxSZ out of range, a
    root past the PA size)."""
    if upper:
        tsz = (tcr >> TCR_T1SZ_SHIFT) & TXSZ_MASK
        granule_bits = TG1_GRANULE_BITS.get((tcr >> TCR_TG1_SHIFT) & 0x3, 12)
        disabled, tbi = bool(tcr & TCR_EPD1), bool(tcr & TCR_TBI1)
    else:
        tsz = (tcr >> TCR_T0SZ_SHIFT) & TXSZ_MASK
        granule_bits = TG0_GRANULE_BITS.get((tcr >> TCR_TG0_SHIFT) & 0x3, 12)
        disabled, tbi = bool(tcr & TCR_EPD0), bool(tcr & TCR_TBI0)
    if disabled:
        return None
    ds = bool(tcr & TCR_DS) and granule_bits != 16  # DS is RES0 with 64 KiB
    ips = IPS_BITS[(tcr >> TCR_IPS_SHIFT) & 0x7]
    lpa = granule_bits == 16 and ips == 52
    pa_bits = ips if ds or lpa else min(ips, 48)
    # TxSZ bounds (aa64_va_parameters): 52-bit VAs need 64 KiB (FEAT_LVA) or DS.
    min_tsz = 12 if ds or granule_bits == 16 else 16
    max_tsz = 47 if granule_bits == 16 else 48
    if not min_tsz <= tsz <= max_tsz:
        return None
    r = VaRange(upper, 0, granule_bits, 64 - tsz, pa_bits, tbi, ds, lpa)
    # The root's address (AArch64.TTBaseAddress): TTBR bits 47:1, or 47:6 and
    # 51:48 in bits 5:2 in the 52-bit forms, aligned to the root table's size.
    if ds or lpa:
        root = (ttbr & TTBR_BADDR_47_6) | ((ttbr >> 2) & 0xF) << 48
    else:
        root = ttbr & TTBR_BADDR_47_1
    root &= ~(r.root_table_bytes - 1)
    if root >> pa_bits:  # an Address size fault at the start level
        return None
    return replace(r, root=root)


@dataclass(frozen=True)
class AArch64PageTables:
    """The EL1&0 regime's stage-1 tables: its two VA ranges (the seam's
    :class:`~qemu_vmcore.guest.paging.PageTables`).

    :param lower: the TTBR0 range (VA bit 55 clear), None when not walked.
    :param upper: the TTBR1 range (VA bit 55 set), None when not walked.
    """

    lower: VaRange | None
    upper: VaRange | None

    @classmethod
    def from_registers(
        cls, ttbr0: int, ttbr1: int, tcr: int, sctlr: int
    ) -> AArch64PageTables | None:
        """The tables a vCPU's EL1 registers (TTBR0_EL1, TTBR1_EL1, TCR_EL1,
        SCTLR_EL1, 64 bits each) select; None when SCTLR_EL1.M is clear (the
        MMU is off: VA = PA). A range is None when EPDx disables it or every
        address of it faults. Never raises: every register value means something.
        """
        if not sctlr & SCTLR_M:
            return None
        return cls(_va_range(ttbr0, tcr, upper=False), _va_range(ttbr1, tcr, upper=True))

    @classmethod
    def kernel(
        cls, root_pa: int, va_bits: int, page_size: int, *, pa_bits: int | None = None
    ) -> AArch64PageTables:
        """The kernel's own upper range, from ``swapper_pg_dir``'s physical
        address and VMCOREINFO's sizes; the lower range is not walked.

        :param root_pa: guest-physical address of the root table (not a TTBR
            value: no ASID, no encoded high bits); must be aligned to its size.
        :param va_bits: the size the tables are built for: NUMBER(VA_BITS). A
            52-bit kernel with 4 or 16 KiB pages that runs on a CPU without
            LPA2 folds its top level, so for it pass 64 - NUMBER(TCR_EL1_T1SZ)
            (48); with 64 KiB, 52 is right on both kinds of CPU (a 48-bit CPU's
            TTBR1 points into the same table, past its first entries).
        :param page_size: PAGESIZE: 4096, 16384 or 65536.
        :param pa_bits: the PA size the descriptors are in. By default 52
            with 64 KiB (FEAT_LPA's bits 15:12 are zero in a 48-bit kernel's
            tables) or a 52-bit VA, 48 otherwise: with 4 or 16 KiB, 52 means
            the LPA2 format, which a 48-bit VA kernel uses only on an LPA2 CPU
            (a vCPU's TCR_EL1.DS says so; :func:`kernel_page_tables`).
        :raises TranslationConfigError: sizes no configuration has, named.
        """
        granule_bits = GRANULE_BITS_BY_SIZE.get(page_size)
        if granule_bits is None:
            raise TranslationConfigError(
                f"aarch64 page size {page_size} is not supported (4096, 16384 or 65536)"
            )
        if pa_bits is None:
            pa_bits = 52 if granule_bits == 16 or va_bits > 48 else 48
        wide = pa_bits > 48
        return cls(
            None,
            VaRange(
                upper=True,
                root=root_pa,
                granule_bits=granule_bits,
                va_bits=va_bits,
                pa_bits=pa_bits,
                ds=wide and granule_bits != 16,
                lpa=wide and granule_bits == 16,
            ),
        )

    def ranges(self) -> tuple[VaRange, ...]:
        """The ranges that are walked, lower first."""
        return tuple(r for r in (self.lower, self.upper) if r is not None)

    def translate(self, mem: PhysicalReader, vaddr: int) -> int | None:
        """The guest-physical address of ``vaddr`` (64 bits; VA bit 55 picks the
        range); None when it is not mapped, in no walked range, or a table
        is not in memory."""
        if not 0 <= vaddr <= MASK64:
            return None
        r = self.upper if vaddr >> 55 & 1 else self.lower
        return None if r is None else r.translate(mem, vaddr)


class VcpuRegisters(Protocol):
    """What the walk needs of a vCPU's state: its EL1 translation registers,
    64 bits each (the state is read in :mod:`qemu_vmcore.arch.aarch64`)."""

    @property
    def index(self) -> int: ...
    @property
    def ttbr0(self) -> int: ...
    @property
    def ttbr1(self) -> int: ...
    @property
    def tcr(self) -> int: ...
    @property
    def sctlr(self) -> int: ...


def vcpu_page_tables(s: VcpuRegisters) -> AArch64PageTables | None:
    """The tables a vCPU runs on; None when its MMU is off."""
    return AArch64PageTables.from_registers(s.ttbr0, s.ttbr1, s.tcr, s.sctlr)


def kernel_page_tables(states: Sequence[VcpuRegisters]) -> tuple[AArch64PageTables, ...]:
    """Each vCPU's upper range (TTBR1: the kernel's), deduplicated, in vCPU
    order, for confirming VMCOREINFO; vCPUs with the MMU off or EPD1 set
    have none.

    Under Linux's KPTI a vCPU stopped at EL0 runs on ``tramp_pg_dir``, which
    maps only the trampoline; it says so with :data:`USER_ASID_FLAG` in
    TTBR1, and ``swapper_pg_dir`` is then a page or two above it
    (:data:`TRAMP_SWAPPER_PAGES`), which are tried after it.
    """
    roots: dict[AArch64PageTables, None] = {}
    for s in states:
        tables = vcpu_page_tables(s)
        if tables is None or tables.upper is None:
            continue
        upper = tables.upper
        roots[AArch64PageTables(None, upper)] = None
        if s.ttbr1 & USER_ASID_FLAG:
            page = 1 << upper.granule_bits
            for pages in TRAMP_SWAPPER_PAGES:
                root = upper.root + pages * page
                if root < 1 << upper.pa_bits:
                    roots[AArch64PageTables(None, replace(upper, root=root))] = None
    return tuple(roots)


class _Walk(MappingCollector):
    """One walk over all vCPUs' ranges (the collecting and the bounds are
    :class:`~qemu_vmcore.guest.paging.MappingCollector`'s)."""

    def va_range(self, r: VaRange) -> None:
        """Walk one range from its root down, each table at most once per
        (layout, table, level, virtual base, entries) over the whole walk."""
        self._table(r, r.root, r.start_level, r.top)

    def _table(self, r: VaRange, table: int, level: int, vbase: int) -> None:
        count = r.entries(level)
        if not self.first_visit((r.layout, table, level, vbase, count)):
            return
        values = self.read_table(table, count)
        if values is None:  # not in guest RAM or not in the core: maps nothing
            return
        shift = r.shift(level)
        if level == 3:
            leaves = []
            for i, d in enumerate(values):
                # A page is bits 1:0 = 0b11 (kind() inlined: most entries are here).
                if d & (DESC_VALID | DESC_TABLE) == DESC_VALID | DESC_TABLE:
                    oa = r.output_address(d, shift)
                    if oa is not None:
                        leaves.append((i, oa))
            self.pages(vbase, leaves, 1 << shift)
            return
        for i, d in enumerate(values):
            if not d & DESC_VALID:
                continue
            kind = r.kind(d, level)
            vaddr = vbase | (i << shift)
            if kind is Descriptor.TABLE:
                below = r.output_address(d, r.granule_bits)
                if below is not None:
                    self._table(r, below, level + 1, vaddr)
            elif kind is Descriptor.LEAF:
                oa = r.output_address(d, shift)
                if oa is not None:
                    self.leaf_clipped(vaddr, oa, 1 << shift)


def guest_mappings(
    mem: PhysicalReader, states: Sequence[VcpuRegisters], ranges: Sequence[GuestRange]
) -> list[Mapping]:
    """The guest's virtual memory map, from every vCPU's tables (``--paging``).

    :param ranges: all guest RAM ranges: what of a leaf is in one is kept.
    :returns: canonical mappings, sorted by physical then virtual address;
        RAM at virtual = physical when no vCPU has the MMU on.
    :raises PagingLimitError: the tables are too large or corrupt to walk.
    """
    all_tables = [t for t in map(vcpu_page_tables, states) if t is not None]
    if not all_tables:
        return identity_mappings(ranges)
    # The bounds are read here, at call time, so that they can be lowered
    # through this module (the tests do).
    walk = _Walk(mem, RamIndex(ranges), max_tables=MAX_TABLES, max_mappings=MAX_MAPPINGS)
    for tables in all_tables:
        for r in tables.ranges():
            walk.va_range(r)
    return walk.mappings()
