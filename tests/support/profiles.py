"""QEMU profiles in tests: recording what a run reads, and making profiles of rig builds."""

from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

from qemu_vmcore.debugger.profile_format import Names
from qemu_vmcore.errors import QemuStateError, VmcoreError


def exercise(core: Path, **open_kw: object) -> None:
    """What extract, info and dmesg ask of QEMU's state on ``core``."""
    from qemu_vmcore import report
    from qemu_vmcore.extract import prepare
    from qemu_vmcore.source import open_qemu_core

    try:
        qc = open_qemu_core(core, **open_kw)
    except QemuStateError:
        qc = open_qemu_core(core, strict=False, **open_kw)
    with qc:
        report.info_dict(qc)
        with contextlib.suppress(VmcoreError):
            prepare(qc, None, allow_missing=True)
        with contextlib.suppress(VmcoreError):
            for _ in qc.dmesg():
                pass


def record(core: Path, **open_kw: object) -> Names:
    """The names :func:`exercise` reads through the drgn backend (DWARF)."""
    from qemu_vmcore.debugger import drgn_backend
    from qemu_vmcore.debugger.profile_make import Recorder

    recorders: list[Recorder] = []
    real = drgn_backend.open_drgn

    def recording(*args: object, **kw: object) -> Recorder:
        recorders.append(Recorder(real(*args, **kw)))
        return recorders[-1]

    with mock.patch.object(drgn_backend, "open_drgn", recording):
        exercise(core, **open_kw)
    out = Names()
    for r in recorders:
        out.update(r.names)
    return out
