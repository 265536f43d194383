#!/usr/bin/env python3
"""Benchmark: zero-copy analysis (``mount``, ``drgn``) against ``extract`` plus the same consumer.

On each rig case, with a warm page cache, medians of repeated runs:

* **mount**: the time from the command to the first byte of
  ``MOUNTPOINT/vmcore`` read (ELF: no pass over guest RAM; kdump-zstd: one
  pass first), and (ELF) to ``vmcore-dmesg`` on it having printed the log; the
  mount process's peak RSS after the whole file was read through it
  (``cat``); and the disk the mount used (df of the core's file system);
* **extract + consumer**: ``extract -o FILE`` then the same ``vmcore-dmesg``;
  the file's disk use;
* **drgn**: ``qemu-vmcore drgn CORE -s VMLINUX -e ...`` printing
  ``init_uts_ns.name.release`` (the first drgn result; no file), its peak
  RSS, against ``extract`` then ``drgn -c FILE -s VMLINUX -e ...``; and
  drgn alone on the extracted file (drgn's own start-up: loading the
  vmlinux's debug info, the floor under both).

    .venv/bin/python bench/zero_copy.py                         # q10-q35-512, q10-q35-4608
    .venv/bin/python bench/zero_copy.py --cases q10-q35-16g --runs 3
    .venv/bin/python bench/zero_copy.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the support package
from support import consumers, rig  # noqa: E402

PYTHON = sys.executable
RELEASE_PY = "print(prog['init_uts_ns'].name.release.string_().decode())"


def ours(*args: object) -> list[str]:
    return [PYTHON, "-m", "qemu_vmcore", *map(str, args)]


def run_timed(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; (wall seconds, peak RSS bytes, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024, out.decode()


def disk_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def one_mount(case: rig.Case, scratch: Path, fmt: str) -> dict:
    """One mount: first byte, vmcore-dmesg on it, the whole file read; then unmount."""
    mnt = scratch / "mnt"
    mnt.mkdir(exist_ok=True)
    before = disk_used(case.dir)
    start = time.perf_counter()
    proc = subprocess.Popen(ours("mount", case.core, mnt, "-q", "--format", fmt),
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    file = mnt / "vmcore"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"mount ended: {proc.stderr.read().decode()[-2000:]}")
            try:
                with open(file, "rb") as f:
                    if f.read(4096):
                        break
            except OSError:
                pass
            time.sleep(0.002)
        first_byte = time.perf_counter() - start
        dmesg = None
        if fmt == "elf":  # vmcore-dmesg reads ELF only
            consumers.vmcore_dmesg(file)
            dmesg = time.perf_counter() - start
        subprocess.run(["cat", file], stdout=subprocess.DEVNULL, check=True)
        whole = time.perf_counter() - start
        used = disk_used(case.dir) - before
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mount exited {status}: {proc.stderr.read().decode()[-2000:]}")
    return {"first_byte_s": first_byte, "vmcore_dmesg_s": dmesg, "whole_read_s": whole,
            "peak_rss": usage.ru_maxrss * 1024, "disk_delta": used}  # fmt: skip


def extract_then(case: rig.Case, scratch: Path, consumer) -> dict:
    out = scratch / "vmcore"
    start = time.perf_counter()
    _, rss, _ = run_timed(ours("extract", case.core, "-o", out, "-q"))
    extracted = time.perf_counter() - start
    consumer(out)
    done = time.perf_counter() - start
    disk = out.stat().st_blocks * 512
    out.unlink()
    return {"extract_s": extracted, "done_s": done, "peak_rss": rss, "out_disk": disk}


def median_rows(rows: list[dict]) -> dict:
    def merge(k: str):
        values = [r[k] for r in rows]
        if None in values:
            return None
        return max(values) if "rss" in k or "disk" in k else statistics.median(values)

    return {k: merge(k) for k in rows[0]}


def bench_case(case: rig.Case, vmlinux: Path, runs: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=case.dir))
    release = case.meta["kernel_version"]

    def drgn_on(path: Path) -> None:
        assert consumers.drgn(path, vmlinux, RELEASE_PY).strip() == release

    try:
        result: dict = {"case": case.spec.name, "guest_mib": case.spec.mem_mib}
        for fmt in ("elf", "kdump-zstd"):
            one_mount(case, scratch, fmt)  # warm-up
            result[f"mount {fmt}"] = median_rows([one_mount(case, scratch, fmt)
                                                  for _ in range(runs)])  # fmt: skip
        result["extract + vmcore-dmesg"] = median_rows(
            [extract_then(case, scratch, consumers.vmcore_dmesg) for _ in range(runs + 1)][1:]
        )
        argv = ours("drgn", case.core, "-s", vmlinux, "--no-default-symbols", "-e", RELEASE_PY)
        rows = []
        for i in range(runs + 1):
            wall, rss, out = run_timed(argv)
            assert out.strip() == release, out
            if i:
                rows.append({"first_result_s": wall, "peak_rss": rss})
        result["qemu-vmcore drgn"] = median_rows(rows)
        result["extract + drgn -c"] = median_rows(
            [extract_then(case, scratch, drgn_on) for _ in range(runs + 1)][1:]
        )
        out = scratch / "vmcore"
        run_timed(ours("extract", case.core, "-o", out, "-q"))
        alone = []
        for _ in range(runs + 1):
            start = time.perf_counter()
            drgn_on(out)
            alone.append(time.perf_counter() - start)
        result["drgn -c on the file alone_s"] = statistics.median(alone[1:])
        return result
    finally:
        shutil.rmtree(scratch)


def print_tables(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    t = Table(title="mount: the vmcore served, never written (medians; warm cache)")
    for col in ("case", "format", "first byte s", "vmcore-dmesg done s", "whole file read s",
                "peak RSS", "disk used while mounted"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("case", "format") else "right")
    for r in results:
        for fmt in ("elf", "kdump-zstd"):
            m = r[f"mount {fmt}"]
            dmesg = "-" if m["vmcore_dmesg_s"] is None else f"{m['vmcore_dmesg_s']:.3f}"
            t.add_row(r["case"], fmt, f"{m['first_byte_s']:.3f}", dmesg,
                      f"{m['whole_read_s']:.2f}", f"{m['peak_rss'] / 2**20:,.0f} MiB",
                      f"{m['disk_delta'] / 2**20:,.1f} MiB")  # fmt: skip
        e = r["extract + vmcore-dmesg"]
        t.add_row(r["case"], "extract + vmcore-dmesg", f"{e['extract_s']:.3f}",
                  f"{e['done_s']:.3f}", "-", f"{e['peak_rss'] / 2**20:,.0f} MiB",
                  f"{e['out_disk'] / 2**20:,.1f} MiB")  # fmt: skip
    console.print(t)
    d = Table(title="drgn on the guest kernel: the first result (init_uts_ns.name.release)")
    for col in ("case", "how", "first result s", "peak RSS", "disk"):
        d.add_column(col, justify="left" if col in ("case", "how") else "right")
    for r in results:
        q, e = r["qemu-vmcore drgn"], r["extract + drgn -c"]
        d.add_row(r["case"], "qemu-vmcore drgn", f"{q['first_result_s']:.3f}",
                  f"{q['peak_rss'] / 2**20:,.0f} MiB", "0")  # fmt: skip
        d.add_row(r["case"], "extract + drgn -c", f"{e['done_s']:.3f}", "-",
                  f"{e['out_disk'] / 2**20:,.1f} MiB")  # fmt: skip
        d.add_row(r["case"], "  drgn -c alone (its start-up)",
                  f"{r['drgn -c on the file alone_s']:.3f}", "-", "-")  # fmt: skip
    console.print(d)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", default="q10-q35-512,q10-q35-4608")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not consumers.available("vmcore-dmesg") or not shutil.which("fusermount3"):
        raise SystemExit("needs vmcore-dmesg (kexec-tools) and fusermount3 (fuse3)")
    vmlinux = rig.vmlinux()
    results = [
        bench_case(rig.ensure_case(rig.STANDARD_CASES[name]), vmlinux, args.runs)
        for name in args.cases.split(",")
    ]
    if args.json:
        print(json.dumps({"results": results, "time": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    else:
        print_tables(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
