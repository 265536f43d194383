#!/usr/bin/env python3
"""Benchmark of ``extract --pid`` on a live QEMU, all in one run on one guest.

Boots a guest (default: the 16 GiB q35 guest of the scale benchmark, of
which it writes 2 GiB), pauses it with QMP ``stop``, then times:

* QMP's own live ``dump-guest-memory`` (ELF) of the paused guest;
* ``qemu-vmcore extract --pid``, and how long QEMU stays frozen (TracerPid
  sampled every millisecond from /proc/PID/status);
* ``gcore`` (gdb) of the process followed by ``qemu-vmcore extract`` of that core.

Targets (issue 16): at most a fifth of QMP's time, a tenth of gcore+extract's,
frozen time about the extraction's. Every timed step starts after a sync,
so that the writeback of the one before (QMP's 16 GB) does not land in it.
Scratch files are deleted; QEMU is killed.

    .venv/bin/python bench/live.py                       # 16 GiB, 2 GiB written
    .venv/bin/python bench/live.py --mem 2048 --fill 256 # a smaller guest
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the support package
from support import live, rig  # noqa: E402

PY = sys.executable


def _cli(*args: str) -> float:
    t = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"))
    subprocess.run([PY, "-m", "qemu_vmcore", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - t


class FrozenTimer(threading.Thread):
    """Samples TracerPid of ``pid``: how long someone traced it."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.first, self.last, self.done = pid, None, None, False

    def run(self) -> None:
        while not self.done:
            if live.tracer_pid(self.pid):
                now = time.monotonic()
                self.first = self.first or now
                self.last = now
            time.sleep(0.001)

    @property
    def seconds(self) -> float:
        return (self.last - self.first) if self.first else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", type=int, default=16384, help="guest MiB (default 16384)")
    ap.add_argument("--fill", type=int, default=2048, help="MiB the guest writes (default 2048)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default /var/tmp)")
    ap.add_argument("--runs", type=int, default=3, help="runs of extract --pid (median)")
    args = ap.parse_args()
    spec = rig.CaseSpec(f"live-bench-{args.mem}", qemu="10.0", machine="q35",
                        mem_mib=args.mem, smp=2, fill_mib=args.fill)  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="qemu-vmcore-live-", dir=args.dir or "/var/tmp"))
    try:
        t = time.monotonic()
        with live.live_qemu(scratch, spec, reference=False) as q:
            print(f"guest {args.mem} MiB, {args.fill} MiB written; booted in "
                  f"{time.monotonic() - t:.1f} s", flush=True)  # fmt: skip
            ref = scratch / "qmp.elf"
            os.sync()
            t = time.monotonic()
            q.qmp.execute("dump-guest-memory",
                          {"paging": False, "protocol": f"file:{ref}", "format": "elf"},
                          timeout=3600)  # fmt: skip
            qmp_s = time.monotonic() - t
            ref.unlink()
            out = scratch / "pid.elf"
            pids, frozen = [], []
            for _ in range(args.runs):
                # The writeback of the step before (16 GB from QMP) must not
                # land in this one: every timed step starts with clean pages.
                os.sync()
                timer = FrozenTimer(q.pid)
                timer.start()
                pids.append(_cli("extract", "--pid", str(q.pid), "-o", str(out), "-q"))
                timer.done = True
                timer.join()
                frozen.append(timer.seconds)
                out.unlink()
            pid_s, frozen_s = statistics.median(pids), statistics.median(frozen)
            core = scratch / "core"
            os.sync()
            t = time.monotonic()
            subprocess.run(["gdb", "-batch", "-nx", "-p", str(q.pid), "-ex", f"gcore {core}"],
                           check=True, capture_output=True)  # fmt: skip
            gcore_s = time.monotonic() - t
            os.sync()
            ext_s = _cli("extract", str(core), "-o", str(out), "-q")
            core.unlink()
            out.unlink()
            assert q.qmp.execute("query-status")["status"] == "paused"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    both = gcore_s + ext_s
    print(f"QMP dump-guest-memory      {qmp_s:8.2f} s")
    print(f"extract --pid              {pid_s:8.2f} s  ({qmp_s / pid_s:.1f}x faster than QMP; "
          f"target >= 5x; median of {args.runs})")  # fmt: skip
    print(f"  QEMU frozen              {frozen_s:8.2f} s  (target: about extract's)")
    print(f"gcore + extract            {both:8.2f} s  (gcore {gcore_s:.2f} s, extract "
          f"{ext_s:.2f} s; --pid {both / pid_s:.1f}x faster; target >= 10x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
