"""A live QEMU for the ``--pid`` tests: booted as the rig boots a case, paused
with QMP ``stop``, QMP's own dump taken as the reference, and killed at the end.

Unlike a rig case nothing is cached: the process is the subject. The guest
is small (256 MiB unless told) so that a boot costs seconds under TCG.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from support import rig

#: The live guest: q10-q35-512's QEMU and machine, with less RAM and a fill.
LIVE_SPEC = rig.CaseSpec("live-q10-q35-256", qemu="10.0", machine="q35", mem_mib=256, smp=2,
                         fill_mib=32)  # fmt: skip


@dataclass
class LiveQemu:
    proc: subprocess.Popen
    qmp: rig.QMP
    reference: Path | None
    dir: Path
    marker: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def proc_state(pid: int) -> str:
    """The process's state letter in /proc/PID/stat (R, S, T, t, Z, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def thread_states(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue
        out[int(task.name)] = stat[stat.rindex(")") + 2]
    return out


def tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Wait until every thread of ``pid`` is in group stop (T)."""
    deadline = time.monotonic() + timeout
    while set(thread_states(pid).values()) != {"T"}:
        if time.monotonic() > deadline:
            raise rig.RigError(f"process {pid} not stopped: {thread_states(pid)}")
        time.sleep(0.05)


@contextmanager
def live_qemu(
    workdir: Path, spec: rig.CaseSpec = LIVE_SPEC, *, reference: bool = True
) -> Iterator[LiveQemu]:
    """Boot ``spec``'s guest, wait for RIG-READY, ``stop`` it, take QMP's dump
    (``workdir/reference.elf``) and yield; QEMU is killed afterwards, whatever happened."""
    rig.ensure_guest(spec.arch)
    rig._check_qemu_build(spec.qemu, spec.arch)
    d = workdir / "live"
    d.mkdir(parents=True, exist_ok=True)
    marker = f"{spec.name}-{uuid.uuid4().hex[:12]}"
    spec = replace(spec, reference=reference)
    argv = rig.qemu_argv(spec, d, marker)
    with open(d / "qemu.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    qmp = None
    try:
        rig._wait_ready(spec, d, proc, time.monotonic(), 180.0 + spec.fill_mib / 10.0)
        qmp = rig.QMP(d / "qmp.sock", timeout=120.0)
        qmp.execute("stop")
        ref = None
        if reference:
            ref = d / "reference.elf"
            qmp.execute("dump-guest-memory",
                        {"paging": False, "protocol": f"file:{ref}", "format": "elf"},
                        timeout=600.0)  # fmt: skip
        yield LiveQemu(proc, qmp, ref, d, marker)
    finally:
        if qmp is not None:
            qmp.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # even if stopped or traced
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
