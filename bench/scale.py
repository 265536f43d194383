#!/usr/bin/env python3
"""Benchmark at scale: the large rig case, start-up, memory, disk use.

On the large case (16 GiB guest, 2 GiB written by it), all on the same core
in one run with a warm page cache, medians of repeated runs:

* qemu-vmcore extract, against ``cp --sparse=always`` of the core, QEMU's
  gdb script (``scripts/dump-guest-memory.py``, one run: it is slow), and
  QEMU's live QMP ELF dump of the same guest (timed when the case was made);
* our output's disk use against the guest's non-zero pages (counted in
  QEMU's own dump);

and ``info`` on the large case against the smallest, in interleaved pairs
(lookups must not grow with the guest); on every standard rig case, peak
RSS; on the smallest, the fixed cost (start-up included). Each budget is
printed with its measured value.

    .venv/bin/python bench/scale.py            # everything (minutes)
    .venv/bin/python bench/scale.py --no-gdb   # skip the slow gdb script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the support package
from extract import PYTHON, cp_sparse, du, gdb_script, ours, run_timed  # noqa: E402
from support import rig  # noqa: E402

LARGE = "q10-q35-16g"
SMALLEST = "q72-pc-512"
PAGE = 4096
_ZERO = bytes(PAGE)


def timed_runs(make_argv, out: Path, runs: int) -> dict:
    """Warm up once, then ``runs`` timed runs; output removed after each (untimed)."""
    walls, rss, disk = [], [], 0
    for i in range(runs + 1):
        wall, peak = run_timed(make_argv(out))
        disk = du(out) if out.exists() else 0
        out.unlink(missing_ok=True)
        if i:
            walls.append(wall)
            rss.append(peak)
    return {"median_s": statistics.median(walls), "runs": runs, "peak_rss": max(rss),
            "out_disk": disk}  # fmt: skip


def info_pairs(large: rig.Case, small: rig.Case, runs: int) -> dict:
    """``info`` on the large case and on the smallest, in interleaved pairs
    (large, small, large, ...): the median of the per-pair ratios, and each
    side's median wall time and peak RSS. Looking things up (the map, the
    vCPUs, VMCOREINFO) must not cost more with a larger guest."""

    def argv(c: rig.Case) -> list[str]:
        return [PYTHON, "-m", "qemu_vmcore", "info", str(c.core)]

    run_timed(argv(large)), run_timed(argv(small))  # warm-up: page cache, bytecode
    pairs = [(run_timed(argv(large)), run_timed(argv(small))) for _ in range(runs)]
    return {
        "ratio": statistics.median(a[0] / b[0] for a, b in pairs),
        "large_s": statistics.median(a[0] for a, _ in pairs),
        "small_s": statistics.median(b[0] for _, b in pairs),
        "large_rss": max(a[1] for a, _ in pairs),
        "small_rss": max(b[1] for _, b in pairs),
        "runs": runs,
    }


def nonzero_pages(reference: Path) -> int:
    """Non-zero 4 KiB pages of guest RAM, counted in QEMU's own (dense) dump."""
    from elftools.elf.elffile import ELFFile

    count = 0
    buf = bytearray(8 << 20)
    with open(reference, "rb") as f:
        loads = [(s["p_offset"], s["p_filesz"]) for s in ELFFile(f).iter_segments("PT_LOAD")]
        fd = f.fileno()
        for offset, size in loads:
            done = 0
            while done < size:
                n = os.preadv(fd, [memoryview(buf)[: min(len(buf), size - done)]], offset + done)
                count += sum(
                    not buf.startswith(_ZERO[: min(PAGE, n - p)], p, min(p + PAGE, n))
                    for p in range(0, n, PAGE)
                )
                done += n
    return count


def scratch(case: rig.Case) -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-", dir=case.dir))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--no-gdb", action="store_true", help="skip QEMU's gdb script on the large case"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    large = rig.ensure_case(rig.STANDARD_CASES[LARGE])
    d = scratch(large)
    try:
        rows = {
            "qemu-vmcore extract": timed_runs(ours(large), d / "out", args.runs),
            "cp --sparse=always": timed_runs(cp_sparse(large), d / "out", args.runs),
        }
        if not args.no_gdb:
            t0 = time.perf_counter()
            rows["QEMU gdb script"] = timed_runs(gdb_script(large), d / "out", 1)
            print(f"(QEMU's gdb script: {time.perf_counter() - t0:.0f} s with warm-up)", flush=True)
    finally:
        shutil.rmtree(d)
    qmp = large.meta["timings"]["qmp_dump_seconds"]
    rows["QEMU live QMP dump (when made)"] = {"median_s": qmp, "runs": 1, "peak_rss": 0,
                                              "out_disk": du(large.reference)}  # fmt: skip
    nonzero = nonzero_pages(large.reference) * PAGE

    small = rig.ensure_case(rig.STANDARD_CASES[SMALLEST])
    d = scratch(small)
    try:
        fixed = timed_runs(ours(small), d / "out", max(args.runs, 5))
    finally:
        shutil.rmtree(d)

    info = info_pairs(large, small, max(args.runs, 9))

    rss = {}
    for name, spec in rig.STANDARD_CASES.items():
        case = rig.cached_case(spec)
        if case is None or not spec.dump_guest_core:
            continue
        d = scratch(case)
        try:
            rss[name] = timed_runs(ours(case), d / "out", 1)["peak_rss"]
        except SystemExit:  # a case made to fail (e.g. its backing file deleted)
            pass
        finally:
            shutil.rmtree(d)

    result = {"case": LARGE, "rows": rows, "guest_nonzero_bytes": nonzero,
              "fixed_overhead_s": fixed["median_s"], "peak_rss": rss, "info": info,
              "time": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_tables(large, result)
    return 0


def print_tables(large: rig.Case, r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    rows = r["rows"]
    ours_row, cp_row = rows["qemu-vmcore extract"], rows["cp --sparse=always"]
    gib = large.spec.mem_mib / 1024
    t = Table(title=f"{LARGE}: {gib:.0f} GiB guest, core {du(large.core) / 2**30:.2f} GiB on disk")
    for col in ("tool", "median s", "runs", "vs ours", "GiB/s of guest RAM", "output on disk"):
        t.add_column(col, justify="left" if col == "tool" else "right")
    for name, row in rows.items():
        t.add_row(name, f"{row['median_s']:.2f}", str(row["runs"]),
                  f"{row['median_s'] / ours_row['median_s']:.2f}x",
                  f"{gib / row['median_s']:.1f}", f"{row['out_disk'] / 2**30:.2f} GiB")  # fmt: skip
    console.print(t)
    budgets = [
        ("ours / cp <= 1.3", ours_row["median_s"] / cp_row["median_s"], "<=", 1.3),
        ("faster than QEMU's live dump (ours / QMP < 1)",
         ours_row["median_s"] / rows["QEMU live QMP dump (when made)"]["median_s"], "<", 1.0),
        (f"fixed cost, {SMALLEST}, start-up included (s) <= 1.0",
         r["fixed_overhead_s"], "<=", 1.0),
        ("output disk / (guest non-zero pages + 1%) <= 1",
         ours_row["out_disk"] / (r["guest_nonzero_bytes"] * 1.01), "<=", 1.0),
    ]  # fmt: skip
    i = r["info"]
    budgets += [
        (f"info {LARGE} / info {SMALLEST} <= 1.5 (paired; {i['large_s']:.2f} s vs "
         f"{i['small_s']:.2f} s)", i["ratio"], "<=", 1.5),
        (f"info peak RSS {LARGE} (MB) <= 150", i["large_rss"] / 1e6, "<=", 150),
    ]  # fmt: skip
    if "QEMU gdb script" in rows:
        gdb_ratio = rows["QEMU gdb script"]["median_s"] / ours_row["median_s"]
        budgets.insert(1, ("gdb script / ours >= 20", gdb_ratio, ">=", 20))
    for name, peak in r["peak_rss"].items():
        budgets.append((f"peak RSS {name} (MB) <= 150", peak / 1e6, "<=", 150))
    g = Table(title="budgets")
    for col in ("budget", "measured", "met"):
        g.add_column(col)
    for label, value, op, bound in budgets:
        met = {"<=": value <= bound, "<": value < bound, ">=": value >= bound}[op]
        g.add_row(label, f"{value:.2f}", "yes" if met else "NO")
    console.print(g)


if __name__ == "__main__":
    sys.exit(main())
