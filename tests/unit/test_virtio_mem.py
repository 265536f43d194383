"""qemu.virtio_mem: the plugged parts of a virtio-mem section, as QEMU's dump finds them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qemu_vmcore.errors import QemuStateError
from qemu_vmcore.qemu.virtio_mem import plugged_runs, populated_parts

BS = 2 << 20  # the x86 default block size


def bitmap(bits: str) -> tuple[bytes, int]:
    """``"0110"`` (block 0 first) as QEMU's bitmap bytes and its length in bits."""
    value = sum(1 << i for i, b in enumerate(bits) if b == "1")
    return value.to_bytes((len(bits) + 63) // 64 * 8, "little"), len(bits)


def qemu_loop(data: bytes, nbits: int, block_size: int, offset: int, size: int):
    """virtio_mem_for_each_plugged_section() + virtio_mem_intersect_memory_section(),
    transcribed literally from hw/virtio/virtio-mem.c (7.2 and 10.0)."""
    value = int.from_bytes(data, "little")

    def find_next(start: int, want: int) -> int:
        for i in range(start, nbits):
            if (value >> i) & 1 == want:
                return i
        return nbits

    out = []
    first_bit = find_next(offset // block_size, 1)
    while first_bit < nbits:
        run_offset = first_bit * block_size
        last_bit = find_next(first_bit + 1, 0) - 1
        run_size = (last_bit - first_bit + 1) * block_size
        start = max(offset, run_offset)
        end = min(offset + size, run_offset + run_size)
        if end <= start:
            break
        out.append((start, end - start))
        first_bit = find_next(last_bit + 2, 1)
    return out


def test_nothing_plugged():
    assert plugged_runs(*bitmap("0000"), BS, 0, 4 * BS) == []


def test_all_plugged_is_one_section():
    assert plugged_runs(*bitmap("1111"), BS, 0, 4 * BS) == [(0, 4 * BS)]


def test_runs_become_separate_sections():
    assert plugged_runs(*bitmap("0110111000"), BS, 0, 10 * BS) == [(BS, 2 * BS), (4 * BS, 3 * BS)]


def test_a_section_cuts_the_runs():
    # The section starts inside a run (not even block-aligned) and ends inside another.
    runs = plugged_runs(*bitmap("1110011100"), BS, BS + 4096, 6 * BS)
    assert runs == [(BS + 4096, 2 * BS - 4096), (5 * BS, 2 * BS + 4096)]


def test_bits_past_bitmap_size_are_ignored():
    data, _ = bitmap("1" * 64)
    assert plugged_runs(data, 3, BS, 0, 64 * BS) == [(0, 3 * BS)]
    assert plugged_runs(data, 0, BS, 0, 64 * BS) == []
    assert plugged_runs(data, 100, BS, 0, 64 * BS) == [(0, 64 * BS)]  # capped at the data


@given(
    bits=st.text(alphabet="01", min_size=1, max_size=200),
    block_size=st.sampled_from([4096, BS]),
    start=st.integers(0, 220),
    length=st.integers(1, 220),
    misalign=st.integers(0, 4095),
)
def test_same_as_qemus_loop(bits, block_size, start, length, misalign):
    data, nbits = bitmap(bits)
    offset = start * block_size + misalign
    size = length * block_size
    assert plugged_runs(data, nbits, block_size, offset, size) == qemu_loop(
        data, nbits, block_size, offset, size
    )


# -- populated_parts over QEMU's structures (a fake debugger) ------------------------------


class FakeValue:
    """A struct as a dict of members (ints, strings or FakeValues)."""

    def __init__(self, fields):
        self.fields = fields

    def member(self, name):
        v = self.fields[name]
        return v if isinstance(v, FakeValue) else FakeValue(v)

    def has_member(self, name):
        return isinstance(self.fields, dict) and name in self.fields

    def __int__(self):
        return int(self.fields)

    def string(self, limit=256):
        return self.fields


class FakeDebugger:
    def __init__(self, objects, memory):
        self.objects, self.memory = objects, memory

    def object_at(self, type_name, address):
        return FakeValue(self.objects[(type_name, address)])

    def read(self, address, size):
        return self.memory[address][:size]


VMEM, BITMAP = 0x5000, 0x6000


def fake(kind="virtio-mem", bits="0110", block_size=BS, region=4 * BS):
    data, nbits = bitmap(bits)
    qom = {"class": FakeValue({"type": FakeValue({"name": kind})})}
    objects = {
        ("Object", VMEM): qom,
        ("VirtIOMEM", VMEM): {"bitmap_size": nbits, "block_size": block_size, "bitmap": BITMAP},
    }
    mr = FakeValue({"name": "vmem0", "ram_block": FakeValue({"max_length": region})})
    return FakeDebugger(objects, {BITMAP: data}), mr


def test_populated_parts_reads_the_devices_bitmap():
    dbg, mr = fake()
    assert populated_parts(dbg, VMEM, mr, 0, 4 * BS) == [(BS, 2 * BS)]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "ram-block-attributes"}, "only virtio-mem is supported"),
        ({"block_size": 3000}, "implausible virtio-mem"),
        ({"bits": "1" * 64, "region": 2 * BS}, "implausible virtio-mem"),
    ],
)
def test_populated_parts_refuses_what_it_does_not_know(changes, message):
    dbg, mr = fake(**changes)
    with pytest.raises(QemuStateError, match=message):
        populated_parts(dbg, VMEM, mr, 0, 4 * BS)
