#!/usr/bin/env python3
"""The demo behind scripts/demo.sh (run that; it does the set-up first)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "tests"))  # the support package
from support import rig  # noqa: E402

QV = [str(TOP / ".venv" / "bin" / "qemu-vmcore")]


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(argv: list[str], tail: int | None = None) -> str:
    """Run ``argv``, print it and its output (only the last ``tail`` lines if given)."""
    print("$ " + " ".join(argv) + (f" | tail -{tail}" if tail else ""), flush=True)
    out = subprocess.run(
        argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ).stdout
    shown = "".join(out.splitlines(keepends=True)[-tail:]) if tail else out
    print(shown, end="", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="boot, crash, extract, read the guest's log")
    ap.add_argument("--qemu", choices=["7.2", "10.0"], default="10.0")
    ap.add_argument("--out", type=Path, default=TOP / "demo-out")
    args = ap.parse_args()

    step(f"boot a Linux guest under QEMU {args.qemu} (TCG), let it log a marker, kill QEMU")
    base = rig.STANDARD_CASES["q10-q35-512"]
    spec = dataclasses.replace(base, name=f"demo-{args.qemu}", qemu=args.qemu, reference=False)
    case = rig.ensure_case(spec, force=True)  # a fresh boot and crash every time
    print(f"QEMU pid {case.meta['pid']} died by {case.meta['exit_signal']}; core: {case.core}")
    print(f"the guest logged: RIG-MARKER {case.marker}")

    step("what the core holds")
    show([*QV, "info", str(case.core)])

    step("extract the guest's vmcore")
    args.out.mkdir(exist_ok=True)
    vmcore = args.out / "vmcore"
    show([*QV, "extract", str(case.core), "-o", str(vmcore), "--force"])
    show(["ls", "-ls", str(case.core), str(vmcore)])
    show(["readelf", "-l", str(vmcore)])

    step("the guest's kernel log, read from the vmcore by kexec-tools' vmcore-dmesg")
    log = show(["vmcore-dmesg", str(vmcore)], tail=4).splitlines()
    found = [line for line in log if f"RIG-MARKER {case.marker}" in line]

    step("and straight from QEMU's core, without extracting: qemu-vmcore dmesg")
    direct = show([*QV, "dmesg", str(case.core)], tail=2).splitlines()
    print(f"({len(direct)} lines, identical to vmcore-dmesg's: {direct == log})")
    shutil.rmtree(case.dir)  # the demo's core is scratch; keep the vmcore
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
