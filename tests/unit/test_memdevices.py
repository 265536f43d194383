"""qemu.memdevices: how info names the device and backend behind a RAM range."""

from __future__ import annotations

from qemu_vmcore.qemu.memdevices import MemoryOwner
from qemu_vmcore.report import _device


def test_owner_text_and_json_agree():
    cases = [
        (MemoryOwner("pc-dimm", "dimm1", "memory-backend-ram", "mem1"),
         "pc-dimm dimm1 (memory-backend-ram mem1)"),
        (MemoryOwner("virtio-mem-pci", None, "memory-backend-ram", "vmem0"),
         "virtio-mem-pci (memory-backend-ram vmem0)"),
        (MemoryOwner(backend="memory-backend-ram", backend_id="pc.ram"),
         "memory-backend-ram pc.ram"),
        (MemoryOwner("vga", None), "vga"),
        (MemoryOwner(), ""),
    ]  # fmt: skip
    for owner, text in cases:
        assert str(owner) == text
        assert _device(owner.as_dict()) == (text or "-")
