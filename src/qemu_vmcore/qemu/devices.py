"""QEMU devices whose state a dump uses: the vmcoreinfo device."""

from __future__ import annotations

from qemu_vmcore.debugger import Debugger
from qemu_vmcore.qemu import versions


def vmcoreinfo_device(dbg: Debugger) -> tuple[str, tuple[int, int, int] | None]:
    """What the guest told QEMU's vmcoreinfo device.

    Returns ``(state, (paddr, size, guest_format))``; the tuple is None when
    there is nothing to use, and ``state`` says why in a few words. The
    fields are little-endian in the device (fw_cfg), as on the host.
    """
    fn, var, type_name = versions.VMCOREINFO_STATE
    state = dbg.static_local(fn, var, type_name)
    if state is None or int(state) == 0:
        return "no vmcoreinfo device", None
    if not int(state.member("has_vmcoreinfo")):
        return "device present, not filled in by the guest", None
    info = state.member("vmcoreinfo")
    found = (int(info.member("paddr")), int(info.member("size")), int(info.member("guest_format")))
    return "filled in by the guest", found
