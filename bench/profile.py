#!/usr/bin/env python3
"""QEMU profile against DWARF: the fixed cost (wall time of ``info --json``,
which reads QEMU's state and writes no guest RAM) and peak RSS, per rig case.

    .venv/bin/python bench/profile.py [-n 5] [CASE ...]

The default cases: q72-pc-512, q10-q35-512, a10-virt-512.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support import rig  # noqa: E402


def run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one ``python -m qemu_vmcore ARGS``."""
    before = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.execv(sys.executable, [sys.executable, "-m", "qemu_vmcore", *args])
    _, status, usage = os.wait4(pid, 0)
    if status:
        raise SystemExit(f"{args} failed ({status})")
    return time.perf_counter() - before, usage.ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cases", nargs="*", default=["q72-pc-512", "q10-q35-512", "a10-virt-512"])
    ap.add_argument("-n", type=int, default=5, help="runs of each (the median is shown)")
    args = ap.parse_args()
    print(f"{'case':16} {'how':8} {'info s':>8} {'peak RSS MiB':>13} {'profile KiB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            case = rig.ensure_case(rig.STANDARD_CASES[name])
            profile = Path(tmp) / f"{name}.json"
            subprocess.run([sys.executable, "-m", "qemu_vmcore", "profile", case.qemu_binary,
                            "-o", profile], check=True)  # fmt: skip
            for how, extra in (("dwarf", []), ("profile", ["--profile", str(profile)])):
                runs = [run(["info", "--json", str(case.core), *extra]) for _ in range(args.n)]
                wall = statistics.median(r[0] for r in runs)
                rss = max(r[1] for r in runs) / 1024
                size = f"{profile.stat().st_size / 1024:.1f}" if how == "profile" else ""
                print(f"{name:16} {how:8} {wall:8.3f} {rss:13.1f} {size:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
