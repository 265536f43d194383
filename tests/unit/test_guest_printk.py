"""guest.printk: the guest's log from a synthetic lockless printk ring (Linux 5.10+).

The ring (built by guestsynth) is laid out in crafted guest RAM as Linux 6.1
lays it out (guestsynth.PRINTK_FIELDS holds 6.1's offsets), with its buffers
either in the kernel image (the static boot ring) or in the direct map (the
ring allocated by ``log_buf_len=``, reached through the kernel's page
tables). Output is compared with what kexec-tools' vmcore-dmesg prints for
the same ring.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.guestsynth import (
    COMMITTED,
    COUNT,
    COUNT_BITS,
    DATA_SIZE,
    DIRECT,
    DIRECT_MAP,
    FINALIZED,
    IMAGE,
    KIMG,
    NO_LPOS,
    PAGE,
    PRB_SYMBOL,
    RB,
    SIZE_BITS,
    TAIL,
    WRAP,
    CountingMemory,
    Rec,
    RingRam,
    guest_ram,
    mutate_ring,
    printk_field_changes,
    put,
    put16,
    put32,
    put64,
    ring_mutation,
    standard_ring,
)
from support.guestsynth import RING_PHYS_BASE as PHYS_BASE
from support.guestsynth import UNMAPPED_KVA as UNMAPPED
from support.guestsynth import printk_vmcoreinfo as vmcoreinfo
from support.guestsynth import ring_pa as pa

from qemu_vmcore.arch.x86 import ARCH as X86
from qemu_vmcore.errors import MissingMemoryError, VmcoreError
from qemu_vmcore.guest import printk
from qemu_vmcore.guest.printk import (
    MAX_COUNT_BITS,
    MAX_SIZE_BITS,
    DmesgError,
    Ring,
    escape,
    find_ring,
)
from qemu_vmcore.guest.printk import KernelMemory as _KernelMemory
from qemu_vmcore.guest.printk import records as _records
from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo


def records(mem, info):
    """The log, with the kernel layout the engine would give (init_top_pgt)."""
    return _records(mem, info, X86.kernel_layout(info))


def KernelMemory(mem, info):  # noqa: N802 (stands in for the class)
    return _KernelMemory(mem, info, X86.kernel_layout(info))


def dmesg(ram: bytearray, info: VmcoreInfo | None = None) -> list[bytes]:
    with guest_ram(ram) as (mem, _):
        return list(records(mem, info or vmcoreinfo()))


# -- the ring as the kernel leaves it --------------------------------------------------------


@pytest.mark.parametrize("layout", [DIRECT, IMAGE], ids=["direct-map", "kernel-image"])
def test_records_as_vmcore_dmesg_prints_them(layout):
    rr, expected = standard_ring(layout)
    assert dmesg(rr.ram) == expected


def test_find_ring():
    rr, _ = standard_ring()
    with guest_ram(rr.ram) as (mem, _):
        ring = find_ring(KernelMemory(mem, vmcoreinfo()))
    assert ring == Ring(
        count=COUNT,
        descs=DIRECT.descs,
        infos=DIRECT.infos,
        data=DIRECT.data,
        data_size=DATA_SIZE,
        tail_id=TAIL,
        head_id=TAIL + 7,
    )


def test_atomic_long_counter_offset_is_added():
    # A counter at offset 8 of atomic_long_t (not the case on x86_64, but the
    # offset is read from VMCOREINFO, as vmcore-dmesg does).
    rr, expected = standard_ring()
    for slot in range(COUNT):
        desc = pa(DIRECT.descs) + 24 * slot
        rr.ram[desc : desc + 8] = bytes(8)
    # With the counter at 8 the state_var is read where text_blk_lpos.begin is:
    # every state then looks "reserved" (lpos < 1 << 62), so nothing is printed.
    assert dmesg(rr.ram, vmcoreinfo(**{"OFFSET(atomic_long_t.counter)": "8"})) == []


def test_a_single_record_ring():
    rr = RingRam()
    nxt = rr.data_block(0, 0, b"hello")
    rr.record(Rec(0, FINALIZED, 42_000, b"hello", block=(0, nxt)))
    rr.ring(COUNT_BITS, SIZE_BITS, 0, 0)
    assert dmesg(rr.ram) == [b"[    0.000042] hello\n"]


def test_text_shorter_than_its_block_stops_at_text_len():
    rr = RingRam()
    nxt = rr.data_block(WRAP, TAIL, b"short text\0\0\0\0\0\0")
    rr.record(Rec(TAIL, FINALIZED, 0, b"short", text_len=5, block=(WRAP, nxt)))
    assert dmesg(rr.ram) == [b"[    0.000000] short\n"]


def test_zero_text_len_with_a_block_is_an_empty_line():
    rr = RingRam()
    nxt = rr.data_block(WRAP, TAIL, b"ignored!")
    rr.record(Rec(TAIL, COMMITTED, 0, b"", text_len=0, block=(WRAP, nxt)))
    assert dmesg(rr.ram) == [b"[    0.000000] \n"]


def test_records_is_lazy():
    rr, expected = standard_ring()
    with guest_ram(rr.ram) as (mem, _):
        it = records(mem, vmcoreinfo())
        assert next(it) == expected[0]


def test_escape():
    assert escape(b"plain text") == b"plain text"
    assert escape(b" \t\n\v\f\r~") == b" \t\n\v\f\r~"
    assert escape(b"\x00\x1f\x7f\x80\xe9\xff") == b"\\x00\\x1f\\x7f\\x80\\xe9\\xff"
    assert escape("é".encode()) == b"\\xc3\\xa9"  # bytes, as C's isprint() sees them
    assert escape(b"") == b""


@given(st.binary(max_size=300))
def test_escape_matches_c_isprint_isspace(text):
    keep = set(range(0x20, 0x7F)) | set(b" \t\n\v\f\r")
    expected = b"".join(bytes([c]) if c in keep else b"\\x%02x" % c for c in text)
    assert escape(text) == expected


def test_dmesg_error_is_a_vmcore_error():
    assert issubclass(DmesgError, VmcoreError)


# -- kernel memory -----------------------------------------------------------------------


def test_kernel_memory_translates_image_and_direct_map():
    rr, _ = standard_ring()
    put(rr.ram, 0x2FFC, b"ABCDEFGH")
    with guest_ram(rr.ram) as (mem, _):
        km = KernelMemory(mem, vmcoreinfo())
        assert km.pa(KIMG + 0x1234) == 0x1234 + PHYS_BASE
        assert km.pa(DIRECT_MAP + 0x2FFC) == 0x2FFC
        assert km.read(DIRECT_MAP + 0x2FFC, 8) == b"ABCDEFGH"  # across a page
        assert km.u64(PRB_SYMBOL) == RB
        assert km.u32(DIRECT_MAP + 0x2FFC) == int.from_bytes(b"ABCD", "little")
        with pytest.raises(DmesgError, match="not mapped"):
            km.pa(0xFFFF_C900_0000_0000)  # vmalloc: no PML4 entry
        with pytest.raises(MissingMemoryError):
            km.read(DIRECT_MAP + 0x3000_0000, 8)  # mapped, beyond RAM
        for k in range(5000):  # the translation cache stays bounded
            km.pa(DIRECT_MAP + k * PAGE)
        assert len(km._pages) <= 4097


def test_kernel_memory_without_page_tables():
    rr, _ = standard_ring()
    with guest_ram(rr.ram) as (mem, _):
        km = KernelMemory(mem, vmcoreinfo(**{"SYMBOL(init_top_pgt)": None}))
        assert km.u64(PRB_SYMBOL) == RB  # the image needs no page tables
        with pytest.raises(DmesgError, match="not mapped"):
            km.u64(DIRECT.descs)


def test_kernel_image_size_bounds_the_image_mapping():
    rr, _ = standard_ring()
    with guest_ram(rr.ram) as (mem, _):
        km = KernelMemory(mem, vmcoreinfo(**{"NUMBER(KERNEL_IMAGE_SIZE)": str(0x2000)}))
        assert km.pa(KIMG + 0x1FFF) == 0x1FFF + PHYS_BASE
        with pytest.raises(DmesgError, match="not mapped"):
            km.pa(KIMG + 0x2000)  # past the image: through the page tables


# -- hostile rings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "count_bits, size_bits",
    [
        (MAX_COUNT_BITS + 1, SIZE_BITS),
        (COUNT_BITS, MAX_SIZE_BITS + 1),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (64, 64),
    ],
)
def test_implausible_ring_sizes(count_bits, size_bits):
    rr, _ = standard_ring()
    rr.ring(count_bits, size_bits, TAIL, TAIL + 7)
    with pytest.raises(DmesgError, match="implausible printk ring"):
        dmesg(rr.ram)


@pytest.mark.parametrize("head", [TAIL + 10**15, TAIL - 1, TAIL + (1 << 62) - 1])
def test_head_far_from_tail_is_bounded_by_the_ring_count(head):
    rr, expected = standard_ring()
    rr.ring(COUNT_BITS, SIZE_BITS, TAIL, head)
    with guest_ram(rr.ram) as (mem, _):
        counting = CountingMemory(mem)
        start = time.perf_counter()
        lines = list(records(counting, vmcoreinfo()))
        assert time.perf_counter() - start < 2
    assert lines == expected  # the ring's COUNT slots from the tail, no more
    assert counting.reads < 40 * COUNT


def test_tail_after_head():
    rr, expected = standard_ring()
    rr.ring(COUNT_BITS, SIZE_BITS, TAIL + 7, TAIL)
    # From TAIL + 7 for COUNT ids: only TAIL + 7 is in its slot.
    assert dmesg(rr.ram) == expected[-1:]


def test_zero_count_and_size_bits():
    rr, _ = standard_ring()
    rr.ring(0, 0, TAIL, TAIL + 7)
    # One descriptor (slot 0: id TAIL + 2, not TAIL), every lpos % 1 == 0.
    assert dmesg(rr.ram) == []
    put64(rr.ram, pa(DIRECT.descs), FINALIZED << 62 | TAIL)  # slot 0 is every id's
    put64(rr.ram, pa(DIRECT.infos) + 8, 7_000_000_000)
    assert dmesg(rr.ram) == [b"[    7.000000] \n"]


BEYOND_RAM = DIRECT_MAP + 0x3000_0000  # mapped by the 1 GiB page, past the RAM


@pytest.mark.parametrize(
    "pointer, value, error",
    [
        ("descs", UNMAPPED, DmesgError),
        ("descs", BEYOND_RAM, MissingMemoryError),
        ("descs", 0, DmesgError),
        ("infos", UNMAPPED, DmesgError),
        ("infos", BEYOND_RAM, MissingMemoryError),
        ("data", UNMAPPED, DmesgError),
        ("data", BEYOND_RAM, MissingMemoryError),
        ("data", (1 << 64) - 8, DmesgError),
    ],
)
def test_ring_pointers_to_absent_memory(pointer, value, error):
    rr, _ = standard_ring()
    rr.ring(COUNT_BITS, SIZE_BITS, TAIL, TAIL + 7, **{pointer: value})
    with pytest.raises(error) as e:
        dmesg(rr.ram)
    assert isinstance(e.value, VmcoreError)


@pytest.mark.parametrize(
    "prb_value, error",
    [
        (0, DmesgError),
        (UNMAPPED, DmesgError),
        # Absent memory under the ring itself: the one error for a ring not there.
        (BEYOND_RAM, DmesgError),
        (KIMG + 0x3FFF_0000, DmesgError),  # in the image, past the RAM
    ],
)
def test_prb_pointer_to_absent_memory(prb_value, error):
    rr, _ = standard_ring()
    put64(rr.ram, pa(PRB_SYMBOL), prb_value)
    with pytest.raises(error):
        dmesg(rr.ram)


def test_prb_symbol_outside_ram():
    rr, _ = standard_ring()
    with pytest.raises(DmesgError, match="log ring is not in the core: guest-physical"):
        dmesg(rr.ram, vmcoreinfo(**{"SYMBOL(prb)": f"{KIMG + 0x100000:x}"}))
    with pytest.raises(DmesgError, match="not mapped"):
        dmesg(rr.ram, vmcoreinfo(**{"SYMBOL(prb)": "1000"}))


def test_lpos_values_and_lengths_out_of_range_stay_in_the_data_ring():
    rr = RingRam()
    data = pa(DIRECT.data)
    put(rr.ram, data, bytes(range(0x30, 0x30 + 96)) * 2 + b"Z" * 64)
    recs = [
        # begin > next after the modulo: the text starts at the ring's start.
        Rec(TAIL, FINALIZED, 0, text_len=0xFFFF, block=(WRAP + 200, WRAP + 24)),
        # begin just before next: no room for the id, an empty text.
        Rec(TAIL + 1, FINALIZED, 0, text_len=0xFFFF, block=(WRAP + 20, WRAP + 24)),
        # Huge lpos values (wrap counts in the high bits).
        Rec(TAIL + 2, FINALIZED, 0, text_len=4, block=((1 << 64) - 256, (1 << 64) - 240)),
        # begin odd but not equal to next: read like any block (as vmcore-dmesg does).
        Rec(TAIL + 3, FINALIZED, 0, text_len=3, block=(NO_LPOS, NO_LPOS + 16)),
    ]
    for r in recs:
        rr.record(r)
    rr.ring(COUNT_BITS, SIZE_BITS, TAIL, TAIL + 3)
    assert dmesg(rr.ram) == [
        b"[    0.000000] " + bytes(range(0x38, 0x48)) + b"\n",
        b"[    0.000000] \n",
        b"[    0.000000] " + bytes(range(0x38, 0x3C)) + b"\n",
        b"[    0.000000] " + bytes(range(0x3B, 0x3E)) + b"\n",
    ]


@pytest.mark.parametrize(
    "missing",
    [
        "OFFSET(printk_ringbuffer.desc_ring)",
        "OFFSET(printk_ringbuffer.text_data_ring)",
        "OFFSET(prb_desc_ring.count_bits)",
        "OFFSET(prb_desc_ring.descs)",
        "OFFSET(prb_desc_ring.infos)",
        "OFFSET(prb_desc_ring.head_id)",
        "OFFSET(prb_desc_ring.tail_id)",
        "OFFSET(prb_data_ring.size_bits)",
        "OFFSET(prb_data_ring.data)",
        "SIZE(prb_desc)",
        "SIZE(printk_info)",
        "OFFSET(prb_desc.state_var)",
        "OFFSET(prb_desc.text_blk_lpos)",
        "OFFSET(prb_data_blk_lpos.begin)",
        "OFFSET(prb_data_blk_lpos.next)",
        "OFFSET(printk_info.ts_nsec)",
        "OFFSET(printk_info.text_len)",
    ],
)
def test_missing_vmcoreinfo_entries(missing):
    rr, _ = standard_ring()
    with pytest.raises(DmesgError, match=re.escape(f"VMCOREINFO lacks {missing}")):
        dmesg(rr.ram, vmcoreinfo(**{missing: None}))


def test_optional_entries():
    rr, expected = standard_ring()
    assert dmesg(rr.ram, vmcoreinfo(**{"OFFSET(atomic_long_t.counter)": None})) == expected
    assert dmesg(rr.ram, vmcoreinfo(**{"NUMBER(KERNEL_IMAGE_SIZE)": None})) == expected


def test_pre_5_10_kernel_with_log_buf():
    rr, _ = standard_ring()
    info = vmcoreinfo(**{"SYMBOL(prb)": None, "SYMBOL(log_buf)": "ffffffff82a1c2e8"})
    with pytest.raises(DmesgError, match="pre-5.10 log_buf"):
        dmesg(rr.ram, info)


def test_no_printk_symbol_at_all():
    rr, _ = standard_ring()
    with pytest.raises(DmesgError, match=r"no SYMBOL\(prb\)"):
        dmesg(rr.ram, vmcoreinfo(**{"SYMBOL(prb)": None}))


def test_large_ring_of_empty_descriptors_finishes():
    """A ring of 2^18 readable, empty descriptors is walked in about a second.

    (The walk costs about 4 us a descriptor: 2^MAX_COUNT_BITS = 4M of them
    take about 17 s.)
    """
    count_bits = 18
    descs_pa = 0x40000
    ram = bytearray(descs_pa + 24 * (1 << count_bits) + PAGE)  # zeros: holes in the core
    rr = RingRam()
    ram[: len(rr.ram)] = rr.ram
    put32(ram, pa(RB), count_bits)
    put64(ram, pa(RB) + 8, DIRECT_MAP + descs_pa)
    put64(ram, pa(RB) + 24, 0)  # head
    put64(ram, pa(RB) + 32, 1)  # tail: every id of the ring is walked
    with guest_ram(ram) as (mem, _):
        start = time.perf_counter()
        assert list(records(mem, vmcoreinfo())) == []
        elapsed = time.perf_counter() - start
    assert elapsed < 10, f"{elapsed:.1f} s for {1 << count_bits} empty descriptors"


def test_output_is_bounded_by_the_data_ring():
    """Every descriptor may point at the same 64 KiB block: output stays bounded.

    Descriptors are checked one by one, never against each other or the data
    ring's tail/head lpos, so a corrupt (or forged, see the VMCOREINFO
    verification bug) ring whose 2^count_bits descriptors all point at one
    block of 0xFFFF non-printable bytes yields count * 0xFFFF * 4 bytes of
    output: up to 2^22 * 256 KiB = 1 TiB, and hours of Python escaping, from a
    ring of a few MiB. In a ring the kernel wrote, the live blocks are
    disjoint, so the text printed never exceeds the data ring's size; a cap on
    the total text (e.g. data_size, checked as records are yielded) or a
    check that blocks follow each other between tail_lpos and head_lpos
    would bound the output by the ring itself.
    """
    count_bits, size_bits = 12, 17
    count, data_size = 1 << count_bits, 1 << size_bits
    ram = bytearray(0x40000 + 24 * count + 88 * count + data_size + PAGE)
    rr = RingRam()
    ram[: len(rr.ram)] = rr.ram
    descs, infos = 0x40000, 0x40000 + 24 * count
    data = infos + 88 * count
    put(ram, data, b"\xff" * data_size)
    for rid in range(count):
        put64(ram, descs + 24 * rid, FINALIZED << 62 | rid)
        put64(ram, descs + 24 * rid + 8, 0)  # begin
        put64(ram, descs + 24 * rid + 16, data_size - 8)  # next
        put16(ram, infos + 88 * rid + 16, 0xFFFF)  # text_len
    rr_ptrs = {"descs": DIRECT_MAP + descs, "infos": DIRECT_MAP + infos, "data": DIRECT_MAP + data}
    put32(ram, pa(RB), count_bits)
    put64(ram, pa(RB) + 8, rr_ptrs["descs"])
    put64(ram, pa(RB) + 16, rr_ptrs["infos"])
    put64(ram, pa(RB) + 24, count - 1)  # head
    put64(ram, pa(RB) + 32, 0)  # tail
    put32(ram, pa(RB) + 48, size_bits)
    put64(ram, pa(RB) + 56, rr_ptrs["data"])
    bound = 4 * data_size + 32 * count  # every text byte escaped, plus the prefixes
    total = 0
    with guest_ram(ram) as (mem, _), pytest.raises(DmesgError, match="inconsistent"):
        for line in records(mem, vmcoreinfo()):
            total += len(line)
            if total > bound:
                break
    assert total <= bound, (
        f"over {total:,} bytes of output from a {data_size:,}-byte data ring "
        f"(and still going: {count} records of {len(line):,} bytes)"
    )


# -- properties (hypothesis) -------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ring_mutation, max_size=12), st.sampled_from([DIRECT, IMAGE]))
def test_random_bytes_in_the_ring_raise_only_vmcore_errors(mutations, layout):
    rr, _ = standard_ring(layout)
    mutate_ring(rr, mutations)
    with guest_ram(rr.ram) as (mem, _):
        begin = time.perf_counter()
        lines = []
        try:
            for line in records(mem, vmcoreinfo()):
                lines.append(line)
        except VmcoreError:
            pass
        assert time.perf_counter() - begin < 5
    assert len(lines) <= 1 << MAX_COUNT_BITS
    keep = set(range(0x20, 0x7F)) | set(b"\t\n\v\f\r")
    for line in lines:
        assert line.startswith(b"[") and line.endswith(b"\n")
        assert set(line) <= keep
        assert len(line) < 20 + 4 * 0xFFFF


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(printk_field_changes)
def test_hostile_vmcoreinfo_values_raise_only_vmcore_errors(changes):
    rr, _ = standard_ring()
    with guest_ram(rr.ram) as (mem, _):
        begin = time.perf_counter()
        try:
            lines = list(records(mem, vmcoreinfo(**changes)))
        except VmcoreError:
            lines = []
        assert time.perf_counter() - begin < 5
    assert len(lines) <= COUNT or "OFFSET(prb_desc_ring.count_bits)" in changes


def test_records_in_ram_the_core_lacks_are_counted_and_skipped(monkeypatch):
    """A cut core: a record whose descriptor, info or text is past the cut is
    left out and its id collected (the CLI warns); without ``lost`` it raises."""
    rr, expected = standard_ring()
    real = printk._record
    seen: list[int] = []

    def cut(km, ring, o, rid):
        seen.append(rid)
        if len(seen) == 2:
            raise MissingMemoryError("guest-physical 0x1000 is truncated in the core", gpa=0x1000)
        return real(km, ring, o, rid)

    monkeypatch.setattr(printk, "_record", cut)
    lost: list[int] = []
    with guest_ram(rr.ram) as (mem, _):
        info = vmcoreinfo()
        got = list(printk.records(mem, info, X86.kernel_layout(info), lost=lost))
    assert lost == [seen[1]] and got == expected[:1] + expected[2:]
    seen.clear()
    with pytest.raises(MissingMemoryError):
        dmesg(rr.ram)
