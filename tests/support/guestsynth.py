"""Crafted guest RAM inside a synthetic QEMU core, for the guest-data parser tests.

The guest's RAM is a bytearray the test fills in; :func:`guest_ram` writes it
as one PT_LOAD of a synthetic process core (see :mod:`synth`) and maps it at
guest-physical 0 with a :class:`GuestPhysicalMemory`, the way the library
sees a real QEMU's ``pc.ram``.

Also here, shared by the guest-data tests and the fuzzer (``bench/fuzz.py``):
a kernel's VMCOREINFO note and ``init_uts_ns``, a Linux 6.1 printk ring,
page-table helpers, and hypothesis strategies that make hostile variants of
each.
"""

from __future__ import annotations

import random
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from qemu_vmcore.arch.x86.cpu import HF_LMA_MASK, Segment, X86State
from qemu_vmcore.arch.x86.paging import X86PageTables
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.guest.vmcoreinfo import MAX_NOTE_SIZE, VmcoreInfo
from qemu_vmcore.host.core import HostCore, open_core
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange
from support import synth

PAGE = 4096
RAM_HVA = 0x7F40_0000_0000
KIMG = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map
U64 = struct.Struct("<Q")
U32 = struct.Struct("<I")
U16 = struct.Struct("<H")


@contextmanager
def guest_ram(ram: bytes | bytearray) -> Iterator[tuple[GuestPhysicalMemory, HostCore]]:
    """``(mem, host)`` with ``ram`` as guest-physical ``[0, len(ram))``."""
    with tempfile.TemporaryDirectory(prefix="guestsynth-") as d:
        path = Path(d) / "core"
        notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
        synth.write_core(path, [synth.Load(RAM_HVA, bytes(ram))], notes)
        with open_core(path) as host:
            r = GuestRange(0, len(ram), RAM_HVA, "pc.ram", "pc.ram", 1)
            yield GuestPhysicalMemory([r], host), host


def put(ram: bytearray, at: int, data: bytes) -> None:
    """Write ``data`` at ``ram[at:]`` (must fit: tests lay things out on purpose)."""
    assert 0 <= at and at + len(data) <= len(ram), (hex(at), len(data))
    ram[at : at + len(data)] = data


def put64(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U64.pack(value & (1 << 64) - 1))


def put32(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U32.pack(value & (1 << 32) - 1))


def put16(ram: bytearray, at: int, value: int) -> None:
    put(ram, at, U16.pack(value & 0xFFFF))


def vmcoreinfo_note(text: bytes) -> bytes:
    """The kernel's VMCOREINFO ELF note around ``text`` (type 0, 4-byte padding)."""
    return E.note_bytes(b"VMCOREINFO", 0, text)


def vmcoreinfo_text(fields: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """``KEY=value\\n`` lines, in order (OSRELEASE must come first)."""
    items = fields.items() if isinstance(fields, dict) else fields
    return b"".join(f"{k}={v}\n".encode() for k, v in items)


# -- VMCOREINFO: a kernel's note and its init_uts_ns ------------------------------------

RELEASE = "6.1.0-21-amd64"
FAKE_RELEASE = "6.6.6-evil"
KERNEL_RAM_PAGES = 32
KERNEL_PHYS_BASE = 0x8000  # written in decimal, as the kernel prints NUMBER()
UTS_VADDR = KIMG + 0x2000  # SYMBOL(init_uts_ns): pa = 0x2000 + KERNEL_PHYS_BASE
NAME_OFF = 4  # OFFSET(uts_namespace.name) (a kref before it on older kernels)
RELEASE_PA = UTS_VADDR - KIMG + KERNEL_PHYS_BASE + NAME_OFF + 2 * 65
NOTE_AT = 0x10000  # the kernel's note (page aligned: alloc_pages_exact)
PGT_AT = 0x18000  # PML4, PDPT, PD, PT in pages 24..27


def kernel_fields(release: str = RELEASE, **changes: str | None) -> dict[str, str]:
    """The kernel's VMCOREINFO fields; ``changes`` set (or, with None, drop) some.

    A ``__`` in a change's name stands for a ``.``.
    """
    fields = {
        "OSRELEASE": release,
        "BUILD-ID": "3a0e2bf1c8f0a9cbd0a5f1f0e4ce2b1a5c9d6e7f",
        "PAGESIZE": "4096",
        "SYMBOL(init_uts_ns)": f"{UTS_VADDR:x}",
        "OFFSET(uts_namespace.name)": str(NAME_OFF),
        "SYMBOL(prb)": "ffffffff82a1c2e8",
        "SIZE(printk_info)": "88",
        "NUMBER(phys_base)": str(KERNEL_PHYS_BASE),
        "SYMBOL(init_top_pgt)": "ffffffff8260a000",
        "NUMBER(pgtable_l5_enabled)": "0",
        "KERNELOFFSET": "1e000000",
        "NUMBER(KERNEL_IMAGE_SIZE)": "1073741824",
        "CRASHTIME": "1718000000",
    }
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


KERNEL_TEXT = vmcoreinfo_text(kernel_fields())
KERNEL_NOTE = vmcoreinfo_note(KERNEL_TEXT)


def kernel_ram(pages: int = KERNEL_RAM_PAGES, note_at: int | None = NOTE_AT) -> bytearray:
    """RAM with the kernel's init_uts_ns and (unless None) its VMCOREINFO note."""
    ram = bytearray(pages * PAGE)
    uts_pa = UTS_VADDR - KIMG + KERNEL_PHYS_BASE + NAME_OFF
    put(ram, uts_pa, b"Linux".ljust(65, b"\0") + b"guest".ljust(65, b"\0"))
    put(ram, RELEASE_PA, RELEASE.encode().ljust(65, b"\0"))
    if note_at is not None:
        put(ram, note_at, KERNEL_NOTE)
    return ram


def fake_note(release: str = FAKE_RELEASE, **changes: str | None) -> bytes:
    """A VMCOREINFO note like the kernel's, with another release and ``changes``."""
    return vmcoreinfo_note(vmcoreinfo_text(kernel_fields(release, **changes)))


def raw_note(descsz: int, desc: bytes = b"", *, namesz: int = 11, ntype: int = 0) -> bytes:
    """A note header claiming ``descsz`` bytes, the VMCOREINFO name, then ``desc`` as is."""
    return E.ELF64LE.nhdr.pack(namesz=namesz, descsz=descsz, type=ntype) + b"VMCOREINFO\0\0" + desc


def kernel_page_tables(ram: bytearray) -> tuple[X86PageTables, ...]:
    """4-level tables mapping the kernel image (KIMG + x -> KERNEL_PHYS_BASE + x, 4 KiB
    pages), as a vCPU's CR3 would; returns the ``roots`` for find()."""
    pml4, pdpt, pd, pt = (PGT_AT + k * PAGE for k in range(4))
    flags = 0x3  # present, writable
    put64(ram, pml4 + 8 * ((KIMG >> 39) & 0x1FF), pdpt | flags)
    put64(ram, pdpt + 8 * ((KIMG >> 30) & 0x1FF), pd | flags)
    put64(ram, pd + 8 * ((KIMG >> 21) & 0x1FF), pt | flags)
    for i in range((len(ram) - KERNEL_PHYS_BASE) // PAGE):
        put64(ram, pt + 8 * i, (KERNEL_PHYS_BASE + i * PAGE) | flags)
    return (X86PageTables.ia32e(pml4, False),)


#: Note headers with the sizes and types a parser must refuse or bound.
note_headers = st.builds(
    lambda namesz, descsz, ntype: E.ELF64LE.nhdr.pack(namesz=namesz, descsz=descsz, type=ntype),
    st.sampled_from([11, 11, 11, 0, 12, 0xFFFFFFFF]),
    st.one_of(
        st.integers(0, 300),
        st.sampled_from([MAX_NOTE_SIZE - 1, MAX_NOTE_SIZE, MAX_NOTE_SIZE + 1, 0xFFFFFFFF]),
    ),
    st.sampled_from([0, 0, 1, 0xFFFFFFFF]),
)
note_names = st.sampled_from([b"VMCOREINFO\0\0", b"VMCOREINFO\0\xff", b"VMCOREINF", b""])
text_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(
        alphabet=st.sampled_from("OSREL=ASYMBOL()0123456789abcdef.\n\t\0\x01\x7f\xe9 "),
        max_size=300,
    ).map(lambda s: s.encode("utf-8")),
)
#: VMCOREINFO descs: near-text, half of them starting as the real ones do.
note_descs = st.one_of(text_bytes, text_bytes.map(lambda t: b"OSRELEASE=" + t))
#: Bytes that look more or less like a VMCOREINFO note.
note_like = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda h, n, d: h + n + d, note_headers, note_names, note_descs),
)


# -- a printk ring (Linux 6.1, x86_64) ---------------------------------------------------

RESERVED, COMMITTED, FINALIZED, REUSABLE = 0, 1, 2, 3
NO_LPOS = 0x3  # the lpos of a data-less record (begin == next)

RING_RAM_PAGES = 64
RING_PHYS_BASE = 0x10000
DIRECT_MAP = 0xFFFF_8880_0000_0000  # PAGE_OFFSET without KASLR
PML4_PA, PDPT_PA = 0x11000, 0x12000  # init_top_pgt (in the image) and a PDPT
PRB_SYMBOL = KIMG + 0x3000  # SYMBOL(prb): a pointer to the ring
RB = KIMG + 0x3100  # struct printk_ringbuffer (printk_rb_dynamic)
UNMAPPED_KVA = 0xFFFF_C900_0000_0000  # vmalloc area: no page-table entry

COUNT_BITS, SIZE_BITS = 4, 8
COUNT, DATA_SIZE = 1 << COUNT_BITS, 1 << SIZE_BITS
TAIL = 5 * COUNT + 14  # ids wrap around the descriptor ring too
WRAP = 7 * DATA_SIZE  # lpos values count wraps in their high bits

#: VMCOREINFO of Linux 6.1, x86_64: the printk entries and what they need.
PRINTK_FIELDS = {
    "OSRELEASE": "6.1.0-21-amd64",
    "SYMBOL(prb)": f"{PRB_SYMBOL:x}",
    "SYMBOL(printk_rb_static)": f"{KIMG + 0x3200:x}",
    "SYMBOL(init_top_pgt)": f"{KIMG + PML4_PA - RING_PHYS_BASE:x}",
    "NUMBER(phys_base)": str(RING_PHYS_BASE),
    "NUMBER(pgtable_l5_enabled)": "0",
    "NUMBER(KERNEL_IMAGE_SIZE)": str(1 << 30),
    "KERNELOFFSET": "0",
    "SIZE(printk_ringbuffer)": "80",
    "OFFSET(printk_ringbuffer.desc_ring)": "0",
    "OFFSET(printk_ringbuffer.text_data_ring)": "48",
    "OFFSET(printk_ringbuffer.fail)": "80",
    "SIZE(prb_desc_ring)": "48",
    "OFFSET(prb_desc_ring.count_bits)": "0",
    "OFFSET(prb_desc_ring.descs)": "8",
    "OFFSET(prb_desc_ring.infos)": "16",
    "OFFSET(prb_desc_ring.head_id)": "24",
    "OFFSET(prb_desc_ring.tail_id)": "32",
    "SIZE(prb_desc)": "24",
    "OFFSET(prb_desc.state_var)": "0",
    "OFFSET(prb_desc.text_blk_lpos)": "8",
    "SIZE(prb_data_blk_lpos)": "16",
    "OFFSET(prb_data_blk_lpos.begin)": "0",
    "OFFSET(prb_data_blk_lpos.next)": "8",
    "SIZE(printk_info)": "88",
    "OFFSET(printk_info.seq)": "0",
    "OFFSET(printk_info.ts_nsec)": "8",
    "OFFSET(printk_info.text_len)": "16",
    "OFFSET(printk_info.caller_id)": "20",
    "OFFSET(printk_info.dev_info)": "24",
    "SIZE(dev_printk_info)": "64",
    "SIZE(prb_data_ring)": "32",
    "OFFSET(prb_data_ring.size_bits)": "0",
    "OFFSET(prb_data_ring.data)": "8",
    "OFFSET(prb_data_ring.head_lpos)": "16",
    "OFFSET(prb_data_ring.tail_lpos)": "24",
    "SIZE(atomic_long_t)": "8",
    "OFFSET(atomic_long_t.counter)": "0",
}


def printk_vmcoreinfo(**changes: str | None) -> VmcoreInfo:
    """A verified VmcoreInfo with :data:`PRINTK_FIELDS`, ``changes`` applied (None drops)."""
    fields = dict(PRINTK_FIELDS)
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return VmcoreInfo(b"", 0, "test", verified=True, fields=fields)


def ring_pa(vaddr: int) -> int:
    """Where the ring's RAM puts a kernel address (image or direct map)."""
    if vaddr >= KIMG:
        return vaddr - KIMG + RING_PHYS_BASE
    return vaddr - DIRECT_MAP


@dataclass(frozen=True)
class RingLayout:
    """Where the ring's descriptors, infos and data are (kernel virtual addresses)."""

    descs: int
    infos: int
    data: int  # straddles a page boundary: reads go page by page


IMAGE = RingLayout(KIMG + 0x4000, KIMG + 0x5000, KIMG + 0x6F80)
DIRECT = RingLayout(DIRECT_MAP + 0x20000, DIRECT_MAP + 0x21000, DIRECT_MAP + 0x22F80)


@dataclass(frozen=True)
class Rec:
    """One record: ``state``, ``ts`` (ns) and text; ``block`` the data block payload."""

    rid: int
    state: int
    ts: int
    text: bytes = b""
    text_len: int | None = None
    block: tuple[int, int] | None = None  # (begin, next) lpos; None: data-less
    sv_id: int | None = None  # the id in state_var, when stale


class RingRam:
    """Guest RAM holding page tables, SYMBOL(prb), the ring and its records."""

    def __init__(self, layout: RingLayout = DIRECT) -> None:
        self.layout = layout
        self.ram = bytearray(RING_RAM_PAGES * PAGE)
        # init_top_pgt: the direct map's first GiB as one 1 GiB page at pa 0.
        put64(self.ram, PML4_PA + 8 * ((DIRECT_MAP >> 39) & 511), PDPT_PA | 0x63)
        put64(self.ram, PDPT_PA, 0x0 | 0xE3)  # present, rw, accessed, dirty, PS
        put64(self.ram, ring_pa(PRB_SYMBOL), RB)
        self.ring(COUNT_BITS, SIZE_BITS, TAIL, TAIL)

    def ring(self, count_bits, size_bits, tail_id, head_id, **ptrs: int) -> None:
        """Write the printk_ringbuffer itself (``ptrs``: descs, infos, data)."""
        rb = ring_pa(RB)
        put32(self.ram, rb + 0, count_bits)
        put64(self.ram, rb + 8, ptrs.get("descs", self.layout.descs))
        put64(self.ram, rb + 16, ptrs.get("infos", self.layout.infos))
        put64(self.ram, rb + 24, head_id)
        put64(self.ram, rb + 32, tail_id)
        put32(self.ram, rb + 48, size_bits)
        put64(self.ram, rb + 56, ptrs.get("data", self.layout.data))

    def data_block(self, begin: int, rid: int, payload: bytes) -> int:
        """Write a data block as data_alloc() does; return its ``next`` lpos."""
        size = 8 + len(payload)
        size = (size + 7) & ~7
        data = ring_pa(self.layout.data)
        off = begin % DATA_SIZE
        if off + size > DATA_SIZE:  # wraps: id at begin *and* the block at 0
            put64(self.ram, data + off, rid)
            put64(self.ram, data, rid)
            put(self.ram, data + 8, payload)
            return begin - off + DATA_SIZE + size
        put64(self.ram, data + off, rid)
        put(self.ram, data + off + 8, payload)
        return begin + size

    def record(self, r: Rec) -> None:
        """Write one record's descriptor and info."""
        slot = r.rid % COUNT
        desc = ring_pa(self.layout.descs) + 24 * slot
        info = ring_pa(self.layout.infos) + 88 * slot
        sv_id = r.rid if r.sv_id is None else r.sv_id
        put64(self.ram, desc, r.state << 62 | sv_id)
        begin, nxt = r.block if r.block is not None else (NO_LPOS, NO_LPOS)
        put64(self.ram, desc + 8, begin)
        put64(self.ram, desc + 16, nxt)
        put64(self.ram, info + 0, r.rid - TAIL + 1000)  # seq
        put64(self.ram, info + 8, r.ts)
        put16(self.ram, info + 16, len(r.text) if r.text_len is None else r.text_len)
        put32(self.ram, info + 20, 0x80000001)  # caller_id: CPU 1


def standard_ring(layout: RingLayout = DIRECT) -> tuple[RingRam, list[bytes]]:
    """A ring of eight descriptors, six of them printable; returns (ram, expected lines)."""
    rr = RingRam(layout)
    t = TAIL
    lpos = WRAP + 112
    blocks = {}

    def block(rid, payload):
        nonlocal lpos
        begin = lpos
        lpos = rr.data_block(begin, rid, payload)
        blocks[rid] = (begin, lpos)
        return blocks[rid]

    text0 = b"Linux version 6.1.0-21-amd64 (gcc-12)"
    text1 = b"bad \x01\x7f\xff\x1b[0m end\ttab\r\v\f."
    text2 = b"SECRET reserved"
    text6 = b"wrapped: " + b"w" * 40
    recs = [
        Rec(t, COMMITTED, 0, text0, block=block(t, text0)),
        Rec(t + 1, FINALIZED, 1_500_000_999, text1, block=block(t + 1, text1)),
        Rec(t + 2, RESERVED, 2_000_000_000, text2, block=block(t + 2, text2)),
        Rec(t + 3, FINALIZED, 3_000_001_000),  # data-less: an empty line
        Rec(t + 4, COMMITTED, 4_000_000_000, sv_id=t + 4 - COUNT),  # stale slot
        Rec(t + 5, REUSABLE, 5_000_000_000),
        Rec(t + 6, FINALIZED, 123456_789012345, text6, block=block(t + 6, text6)),
        # text_len larger than its block: cut at the block's end (with its padding).
        Rec(t + 7, COMMITTED, 99999_999999999, b"truncated", 200, block(t + 7, b"truncated")),
    ]
    assert blocks[t + 6][0] % DATA_SIZE > blocks[t + 6][1] % DATA_SIZE  # it wraps
    assert blocks[t + 7][1] % DATA_SIZE <= blocks[t][0] % DATA_SIZE  # no overlap
    for r in recs:
        rr.record(r)
    rr.ring(COUNT_BITS, SIZE_BITS, t, t + 7)
    expected = [
        b"[    0.000000] Linux version 6.1.0-21-amd64 (gcc-12)\n",
        b"[    1.500000] bad \\x01\\x7f\\xff\\x1b[0m end\ttab\r\v\f.\n",
        b"[    3.000001] \n",
        b"[123456.789012] wrapped: " + b"w" * 40 + b"\n",
        b"[99999.999999] truncated" + b"\\x00" * 7 + b"\n",
    ]
    return rr, expected


#: The ring's parts in the DIRECT layout: (guest-physical address, size).
RING_REGIONS = {
    "prb": (ring_pa(PRB_SYMBOL), 8),
    "ringbuffer": (ring_pa(RB), 80),
    "descs": (ring_pa(DIRECT.descs), 24 * COUNT),
    "infos": (ring_pa(DIRECT.infos), 88 * COUNT),
    "data": (ring_pa(DIRECT.data), DATA_SIZE),
}
ring_u64 = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.sampled_from(
        [0, 1, TAIL, TAIL + 7, 1 << 62 | TAIL, 2 << 62 | TAIL + 1, DIRECT.data, UNMAPPED_KVA, KIMG]
    ),
    st.integers(0, 64),
)
#: One overwrite of the ring: ``(region, offset, bytes)``.
ring_mutation = st.one_of(
    st.tuples(st.sampled_from(sorted(RING_REGIONS)), st.integers(0, 2047), st.binary(max_size=16)),
    st.tuples(
        st.sampled_from(sorted(RING_REGIONS)),
        st.integers(0, 2047),
        ring_u64.map(lambda v: U64.pack(v)),
    ),
)


def mutate_ring(rr: RingRam, mutations: Iterable[tuple[str, int, bytes]]) -> None:
    """Apply :data:`ring_mutation` overwrites, each clipped to its region."""
    for region, offset, data in mutations:
        start, size = RING_REGIONS[region]
        if rr.layout is IMAGE and region in ("descs", "infos", "data"):
            start = ring_pa(getattr(IMAGE, region))
        offset %= size
        data = data[: size - offset]
        rr.ram[start + offset : start + offset + len(data)] = data


#: The printk VMCOREINFO entries whose values are numbers.
printk_numeric_fields = sorted(
    k for k in PRINTK_FIELDS if k.startswith(("OFFSET(", "SIZE(", "NUMBER("))
)
#: Hostile VMCOREINFO values: decimal and hex numbers of any size, and junk
#: (``int()`` refuses more than 4300 digits).
hostile_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2**72).map(lambda v: f"{v:x}"),  # addresses at and past 2**64 too
    st.sampled_from(["", "-1", "x", "1e3", "0x10", "9" * 5000]),
)
#: Hostile values for some of the printk VMCOREINFO entries.
printk_field_changes = st.dictionaries(
    st.sampled_from(printk_numeric_fields + ["SYMBOL(prb)", "SYMBOL(init_top_pgt)"]),
    hostile_values,
    max_size=6,
)


# -- page tables ------------------------------------------------------------------------------

PTE_P, PTE_RW, PTE_US, PTE_PS = 1, 2, 4, 1 << 7
PTE_NX = 1 << 63
PTE_PKEY = 0xA << 59  # protection key bits 62:59
PTE_AVAIL = 1 << 52  # software-available bit: not an address bit
PTE_PAT_LARGE = 1 << 12  # the PAT bit of a 2 MiB / 1 GiB entry: not an address bit
PTE_ADDR = 0x000F_FFFF_FFFF_F000
CR0_PE_PG = 1 | 1 << 31
CR4_PSE, CR4_PAE, CR4_LA57 = 1 << 4, 1 << 5, 1 << 12


def va(i4: int, i3: int, i2: int, i1: int, off: int = 0, i5: int = 0) -> int:
    """A virtual address from its table indices (no sign extension)."""
    return (i5 << 48) | (i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12) | off


def reference_walk(ram: bytes, root: int, vaddr: int, levels: int) -> int | None:
    """An independent reading of the SDM's 4/5-level walk, over a plain buffer."""
    table = root & PTE_ADDR
    for level in range(levels, 0, -1):
        shift = 12 + 9 * (level - 1)
        at = table + 8 * ((vaddr >> shift) & 511)
        if at + 8 > len(ram):
            return None
        (e,) = U64.unpack_from(ram, at)
        if not e & PTE_P:
            return None
        if level in (2, 3) and e & PTE_PS:
            return (e & PTE_ADDR) >> shift << shift | vaddr & ((1 << shift) - 1)
        table = e & PTE_ADDR
    return table | vaddr & 0xFFF


def pt_entries(pages: int) -> st.SearchStrategy[int]:
    """Table entries: any 64 bits, or a page of ``pages`` (+2 outside RAM) with flags."""
    return st.one_of(
        st.integers(0, (1 << 64) - 1),
        st.builds(
            lambda page, flags, high: page * PAGE | flags | high,
            st.integers(0, pages + 1),
            st.integers(0, 0xFFF),
            st.sampled_from([0, PTE_NX, PTE_PKEY, PTE_AVAIL, PTE_PAT_LARGE]),
        ),
    )


def pt_writes(pages: int) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    """``(page, index, entry)`` writes into ``pages`` pages of tables."""
    return st.lists(st.tuples(st.integers(0, pages - 1), st.integers(0, 511), pt_entries(pages)))


#: Virtual addresses: any 64 bits, or built from interesting table indices.
pt_vaddrs = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.builds(
        lambda i, off: va(*i[:4], off, i5=i[4]),
        st.lists(st.sampled_from([0, 1, 2, 511]), min_size=5, max_size=5),
        st.integers(0, 0xFFF),
    ),
)


def leaf_entries(pages: int) -> st.SearchStrategy[int]:
    """Entries pointing at ``pages`` pages and beyond: tables, leaves, large pages."""
    flags = PTE_P | PTE_RW | PTE_US
    return st.builds(
        lambda page, f, high: page * PAGE | f | high,
        st.integers(0, pages + 40),  # many leaf targets, some past the RAM
        st.sampled_from([0, PTE_P, PTE_P | PTE_PS, flags, flags | PTE_PS]),
        st.sampled_from([0, PTE_NX, PTE_PKEY, PTE_AVAIL]),
    )


def vcpu_state(
    cr3: int,
    *,
    cr4: int = CR4_PAE,
    long_mode: bool = True,
    cr0: int = CR0_PE_PG,
    index: int = 0,
) -> X86State:
    """A vCPU with just the paging state set (registers and segments zero)."""
    seg = Segment(0, 0, 0, 0)
    return X86State(
        index=index, regs=(0,) * 16, rip=0, rflags=2, segs=(seg,) * 6, ldt=seg, tr=seg,
        gdt=seg, idt=seg, cr=(cr0, 0, 0, cr3, cr4), kernel_gs_base=0,
        hflags=HF_LMA_MASK if long_mode else 0,
    )  # fmt: skip


def random_ram(seed: int, pages: int) -> bytearray:
    """``pages`` pages of RAM: random bytes for odd seeds, zeros for even ones."""
    if seed % 2:
        return bytearray(random.Random(seed).randbytes(pages * PAGE))
    return bytearray(pages * PAGE)


class CountingMemory:
    """A GuestPhysicalMemory stand-in that counts the reads made through it."""

    def __init__(self, mem):
        self.mem, self.reads = mem, 0

    def read(self, gpa: int, size: int) -> bytes:
        self.reads += 1
        return self.mem.read(gpa, size)
