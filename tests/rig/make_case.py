#!/usr/bin/env python3
"""Make (or reuse) rig cases.

Usage: make_case.py [--list] [--force] [--wait-build SECONDS] [NAME ...]
Without names, all standard cases are made. One line is printed per case:
name, status (cached/made), directory, core size, reference size, seconds,
and for panic cases whether the guest's panic was seen on its console. A
case this machine cannot make (KVM where KVM does not boot the guest) is
reported as skipped, with the reason, and is not a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the support package

from support import rig


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 20):.1f}MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("names", nargs="*", metavar="NAME", help="standard case names (default: all)")
    ap.add_argument(
        "--list", action="store_true", help="list the standard cases and whether they are cached"
    )
    ap.add_argument("--force", action="store_true", help="make the cases again even if cached")
    ap.add_argument(
        "--wait-build",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the needed QEMU builds to finish",
    )
    args = ap.parse_args(argv)

    if args.list:
        for name, spec in rig.STANDARD_CASES.items():
            case = rig.cached_case(spec)
            state = "cached" if case else "missing"
            print(
                f"{name:20} arch={spec.arch:7} qemu={spec.qemu:5} machine={spec.machine:4} "
                f"mem={spec.mem_mib}M "
                f"smp={spec.smp} fill={spec.fill_mib}M dump_guest_core={spec.dump_guest_core} "
                f"reference={spec.reference} vmcoreinfo_device={spec.vmcoreinfo_device} "
                f"panic={spec.panic} "
                f"[{state}] {rig.case_dir(name)}"
            )
        return 0

    names = args.names or [n for n in rig.STANDARD_CASES if n not in rig.BENCH_ONLY]
    unknown = [n for n in names if n not in rig.STANDARD_CASES]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(rig.STANDARD_CASES)}")

    failed = 0
    for name in names:
        spec = rig.STANDARD_CASES[name]
        t0 = time.monotonic()
        try:
            if args.wait_build:
                rig.wait_for_qemu_build(spec.qemu, args.wait_build, spec.arch)
            was_cached = not args.force and rig.cached_case(spec) is not None
            case = rig.ensure_case(spec, force=args.force)
        except rig.RigUnavailable as e:  # e.g. no working KVM here: the tests skip it
            print(f"{name} skipped: {str(e).splitlines()[0]}", flush=True)
            continue
        except rig.RigError as e:
            failed += 1
            print(f"{name}: FAILED: {e}", file=sys.stderr)
            continue
        ref = case.meta["reference"]["size"] if case.reference else None
        core = case.meta["core"]
        panic = case.meta.get("panic")
        print(
            f"{name} {'cached' if was_cached else 'made'} {case.dir} core={_mib(core['size'])} "
            f"(disk {_mib(core['disk_bytes'])}) reference={_mib(ref)} "
            f"{time.monotonic() - t0:.1f}s"
            + ("" if panic is None else f" panic_seen={panic['seen']}"),
            flush=True,
        )
        if panic is not None and not panic["seen"]:
            failed += 1
            print(f"{name}: the guest's panic was not seen on its console", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
