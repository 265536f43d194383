"""The guest kernel's log, read from its printk ring buffer (Linux 5.10+).

It follows the VMCOREINFO offsets of the lockless printk_ringbuffer, the same
data vmcore-dmesg (kexec-tools) reads, and formats records the way it does:
``[seconds.micros] text`` with non-printable bytes escaped as ``\\xNN``.

Guest data is trusted for nothing: ring sizes are capped, iteration is
bounded by the ring's own record count, and each record's text is read on
its own (at most 64 KiB), so no allocation follows a guest-chosen size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from qemu_vmcore.errors import MissingMemoryError, VmcoreError
from qemu_vmcore.guest.paging import KernelLayout
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo

#: Linux caps CONFIG_LOG_BUF_SHIFT at 25 (32 MiB); records average >= 32 bytes.
MAX_COUNT_BITS = 22
MAX_SIZE_BITS = 28
DESC_FLAGS_SHIFT = 62
DESC_ID_MASK = (1 << DESC_FLAGS_SHIFT) - 1
DESC_COMMITTED, DESC_FINALIZED = 1, 2
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

#: bytes vmcore-dmesg prints as they are: C isprint() or isspace().
_KEEP = frozenset(range(0x20, 0x7F)) | frozenset(b"\t\n\v\f\r")


class DmesgError(VmcoreError):
    """The guest's log cannot be read."""


@dataclass(frozen=True)
class Ring:
    """Where the ring's parts are, as guest virtual addresses and sizes."""

    count: int  # descriptors (a power of two)
    descs: int
    infos: int
    data: int
    data_size: int  # bytes (a power of two)
    tail_id: int
    head_id: int


class KernelMemory:
    """Kernel virtual addresses -> guest-physical, for the addresses printk uses.

    Kernel-image addresses translate by ``__pa_symbol`` (``layout.image_pa``);
    anything else (the direct map, where boot-time buffers live) through
    ``layout.tables``, the kernel's own page tables. The engine builds the
    layout for the guest's architecture; None, or a layout without tables,
    leaves such addresses unmapped.
    """

    def __init__(
        self, mem: GuestPhysicalMemory, info: VmcoreInfo, layout: KernelLayout | None
    ) -> None:
        self.mem, self.info, self.layout = mem, info, layout
        self.tables = layout.tables if layout is not None else None
        self._pages: dict[int, int | None] = {}

    def pa(self, vaddr: int) -> int:
        image = self.layout.image_pa(vaddr) if self.layout is not None else None
        if image is not None:
            return image
        page = vaddr & ~0xFFF
        if page not in self._pages:
            if len(self._pages) > 4096:
                self._pages.clear()
            pa = None
            if self.tables is not None:
                pa = self.tables.translate(self.mem, page)
            self._pages[page] = pa
        base = self._pages[page]
        if base is None:
            raise DmesgError(f"kernel address {vaddr:#x} is not mapped")
        return base | (vaddr & 0xFFF)

    def read(self, vaddr: int, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:  # page by page: the pages need not be contiguous
            addr = vaddr + len(out)
            n = min(size - len(out), 0x1000 - (addr & 0xFFF))
            out += self.mem.read(self.pa(addr), n)
        return bytes(out)

    def u64(self, vaddr: int) -> int:
        return _U64.unpack(self.read(vaddr, 8))[0]

    def u32(self, vaddr: int) -> int:
        return _U32.unpack(self.read(vaddr, 4))[0]


def _need(info: VmcoreInfo, kind: str, name: str) -> int:
    value = getattr(info, kind)(name)
    if value is None:
        raise DmesgError(f"VMCOREINFO lacks {kind.upper()}({name})")
    return value


def find_ring(km: KernelMemory) -> Ring:
    """Locate the ring through SYMBOL(prb) and the printk OFFSETs."""
    info = km.info
    if info.symbol("prb") is None:
        if info.symbol("log_buf") is not None:
            raise DmesgError(
                "this kernel keeps its log in the pre-5.10 log_buf ring, which is not "
                "supported; use vmcore-dmesg on the extracted vmcore"
            )
        raise DmesgError("VMCOREINFO has no SYMBOL(prb): cannot find the kernel log")
    prb = km.u64(_need(info, "symbol", "prb"))
    desc_ring = prb + _need(info, "offset", "printk_ringbuffer.desc_ring")
    data_ring = prb + _need(info, "offset", "printk_ringbuffer.text_data_ring")
    counter = info.offset("atomic_long_t.counter") or 0
    count_bits = km.u32(desc_ring + _need(info, "offset", "prb_desc_ring.count_bits"))
    size_bits = km.u32(data_ring + _need(info, "offset", "prb_data_ring.size_bits"))
    if count_bits > MAX_COUNT_BITS or size_bits > MAX_SIZE_BITS:
        raise DmesgError(f"implausible printk ring: count_bits={count_bits}, size_bits={size_bits}")
    return Ring(
        count=1 << count_bits,
        descs=km.u64(desc_ring + _need(info, "offset", "prb_desc_ring.descs")),
        infos=km.u64(desc_ring + _need(info, "offset", "prb_desc_ring.infos")),
        data=km.u64(data_ring + _need(info, "offset", "prb_data_ring.data")),
        data_size=1 << size_bits,
        tail_id=km.u64(desc_ring + _need(info, "offset", "prb_desc_ring.tail_id") + counter),
        head_id=km.u64(desc_ring + _need(info, "offset", "prb_desc_ring.head_id") + counter),
    )


def records(
    mem: GuestPhysicalMemory,
    info: VmcoreInfo,
    layout: KernelLayout | None,
    *,
    lost: list[int] | None = None,
) -> Iterator[bytes]:
    """Each log record formatted as vmcore-dmesg prints it, newline included.

    :param layout: the kernel's virtual layout (see :class:`KernelMemory`).
    :param lost: where a record lies (descriptor, info or text) in guest RAM
        the core lacks (a cut core), its id is appended here and the record
        skipped; None raises instead.
    :raises DmesgError: the ring itself (its descriptor) is not in the core
        (beyond guest RAM, or in RAM the core lacks).
    """
    km = KernelMemory(mem, info, layout)
    try:
        ring = find_ring(km)
    except MissingMemoryError as e:
        raise DmesgError(f"the kernel's log ring is not in the core: {e}") from None
    sizes = {
        "desc": _need(info, "size", "prb_desc"),
        "info": _need(info, "size", "printk_info"),
        "state": _need(info, "offset", "prb_desc.state_var")
        + (info.offset("atomic_long_t.counter") or 0),
        "lpos": _need(info, "offset", "prb_desc.text_blk_lpos"),
        "begin": _need(info, "offset", "prb_data_blk_lpos.begin"),
        "next": _need(info, "offset", "prb_data_blk_lpos.next"),
        "ts": _need(info, "offset", "printk_info.ts_nsec"),
        "len": _need(info, "offset", "printk_info.text_len"),
    }
    span = (ring.head_id - ring.tail_id) & DESC_ID_MASK
    # The ring holds at most `count` records; a larger span is corruption.
    # And all records together hold at most the data ring's bytes: forged
    # descriptors that all point at one large block must not multiply it.
    text_budget = ring.data_size
    for k in range(min(span, ring.count - 1) + 1):
        rid = (ring.tail_id + k) & DESC_ID_MASK
        try:
            record = _record(km, ring, sizes, rid)
        except MissingMemoryError:
            if lost is None:
                raise
            lost.append(rid)
            continue
        if record is None:
            continue
        line, text_len = record
        text_budget -= text_len
        if text_budget < 0:
            raise DmesgError(
                f"the printk ring is inconsistent: its records hold more text than the "
                f"ring's {ring.data_size} bytes"
            )
        yield line


def _record(km: KernelMemory, ring: Ring, o: dict[str, int], rid: int) -> tuple[bytes, int] | None:
    """One record as ``(formatted line, bytes of text it took from the ring)``."""
    slot = rid % ring.count
    desc = ring.descs + slot * o["desc"]
    state_var = km.u64(desc + o["state"])
    state = state_var >> DESC_FLAGS_SHIFT
    if state_var & DESC_ID_MASK != rid or state not in (DESC_COMMITTED, DESC_FINALIZED):
        return None
    begin = km.u64(desc + o["lpos"] + o["begin"]) % ring.data_size
    nxt = km.u64(desc + o["lpos"] + o["next"]) % ring.data_size
    info = ring.infos + slot * o["info"]
    ts = km.u64(info + o["ts"])
    seconds, nanos = divmod(ts, 1_000_000_000)
    line = f"[{seconds:5d}.{nanos // 1000:06d}] ".encode()
    length = 0
    if begin != nxt:
        length = _U16.unpack(km.read(info + o["len"], 2))[0]
        if begin > nxt:  # the block wrapped: its text starts at the ring's start
            begin = 0
        begin += 8  # skip the block's id (an unsigned long)
        length = max(0, min(length, nxt - begin))
        line += escape(km.read(ring.data + begin, length))
    return line + b"\n", length


def escape(text: bytes) -> bytes:
    """vmcore-dmesg's escaping: bytes that are neither printable nor space as ``\\xNN``."""
    if all(b in _KEEP for b in text):
        return text
    return b"".join(bytes([b]) if b in _KEEP else b"\\x%02x" % b for b in text)
