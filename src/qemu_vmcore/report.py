"""Rendering for the CLI: info as a dict (for --json) or a rich table, and progress."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TextIO

from qemu_vmcore.extract import ExtractResult
from qemu_vmcore.guest.physmem import BackingUse
from qemu_vmcore.qemu import memdevices, versions
from qemu_vmcore.qemu.memdevices import MemoryOwner
from qemu_vmcore.source import QemuCore


def info_dict(qc: QemuCore, *, vmcoreinfo: bool = True) -> dict:
    """Everything ``info`` shows, as plain JSON-able data (addresses as ints)."""
    stale = qc.accelerator != versions.TCG_ACCEL
    owners = memdevices.owners(qc.dbg, [r.mr for r in qc.ranges])
    problems = qc.memory.backing_problems
    return {
        "core": os.fspath(qc.host.path),
        "qemu": {
            "version": qc.qemu_version,
            "executable": os.fspath(qc.executable) if qc.executable else None,
            "pid": qc.host.process.pid if qc.host.process else None,
        },
        "machine": qc.machine,
        "accelerator": qc.accelerator,
        "vcpus": qc.vcpu_count,
        "vcpu_states": [
            {
                "index": c.index,
                "mode": c.mode,
                "rip": c.rip,
                "cr3": c.cr[3],
                # Only TCG keeps env current; KVM's is the last state QEMU synced.
                "stale": stale,
            }
            for c in qc.vcpus
        ],
        "vmcoreinfo": _vmcoreinfo_dict(qc) if vmcoreinfo else None,
        # Accepted with --accept-inconsistent (qemu/crosscheck.py); else empty.
        "inconsistencies": [p.message for p in qc.inconsistencies],
        "ram_bytes": qc.ram_total,
        "ranges": [
            {
                "gpa": r.gpa,
                "end": r.end,
                "size": r.size,
                "hva": r.hva,
                "block": r.block,
                "region": r.region,
                # The memory device and backend (pc-dimm, virtio-mem-pci, ...).
                "device": owners[r.mr].as_dict(),
                "in_core": qc.memory.coverage(r),
                "backing_file": qc.memory.backing_file(r),
            }
            for r in qc.ranges
        ],
        "missing": [
            {
                "gpa": p.gpa,
                "end": p.end,
                "size": p.size,
                "why": p.kind.value,
                "backing_file": p.path,
                "backing_file_problem": problems.get(p.path) if p.path else None,
            }
            for p in qc.memory.missing()
        ],
    }


def backing_notes(uses: Iterable[BackingUse]) -> list[str]:
    """One line per backing file guest RAM was read from."""
    lines = []
    for use in uses:
        spans = ", ".join(f"{p.gpa:#x}-{p.end:#x}" for p in use.pieces[:4])
        more = f" and {len(use.pieces) - 4} more" if len(use.pieces) > 4 else ""
        lines.append(
            f"note: guest RAM {spans}{more} ({_mib(use.size)}) read from its backing file "
            f"{use.path}: shared file-backed RAM is not in the core"
        )
    return lines


def _vmcoreinfo_dict(qc: QemuCore) -> dict:
    search = qc.vmcoreinfo()
    info = search.chosen
    return {
        "device": search.device_state,
        "source": info.source if info else None,
        "gpa": info.gpa if info else None,
        "verified": info.verified if info else False,
        "osrelease": info.osrelease if info else None,
        "candidates_scanned": search.candidates,
        "rejected": search.rejected[:16],
    }


def extract_dict(result: ExtractResult) -> dict:
    return {
        "output": os.fspath(result.output),
        "format": result.format,
        "file_size": result.file_size,
        "ram_bytes": result.ram_bytes,
        "ranges": result.ranges,
        "seconds": round(result.seconds, 3),
        "inconsistencies": list(getattr(result, "inconsistencies", ())),
        "missing": [
            {"gpa": p.gpa, "end": p.end, "size": p.size, "why": p.kind.value}
            for p in result.missing
        ],
        "backing_files": [
            {
                "path": use.path,
                "size": use.size,
                "ranges": [{"gpa": p.gpa, "end": p.end} for p in use.pieces],
            }
            for use in getattr(result, "backing", ())
        ],
    }


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def print_info(data: dict, file: TextIO | None = None) -> None:
    """Print ``info_dict`` output as a summary and a table of guest RAM.

    :param file: where (default ``sys.stdout``, looked up when printing).
    :raises OSError: the text cannot be written (BrokenPipeError included).
    """
    from rich.console import Console
    from rich.table import Table

    from qemu_vmcore.terminal import safe_data

    class ResultConsole(Console):
        """A broken pipe is the caller's to handle: rich's own handling exits
        with status 1, after pointing stdout at /dev/null."""

        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    # Strings here come from the core and the guest (OSRELEASE, device ids,
    # paths): escape control characters, and never read them as rich markup.
    data = safe_data(data)
    console = ResultConsole(highlight=False, markup=False, file=file)
    console.width = max(console.width, 120)  # addresses must not be cut when piped
    q = data["qemu"]
    console.print(f"QEMU         {q['version'] or 'unknown'}  ({q['executable']}, pid {q['pid']})")
    console.print(f"machine      {data['machine']}, accelerator {data['accelerator']}")
    console.print(f"vCPUs        {data['vcpus']}")
    for c in data["vcpu_states"]:
        stale = "  (may be stale: not TCG)" if c["stale"] else ""
        console.print(
            f"  vCPU {c['index']}     {c['mode']:9} rip {c['rip']:#018x}  cr3 {c['cr3']:#x}{stale}"
        )
    v = data["vmcoreinfo"]
    if v is not None:
        if v["source"]:
            check = "verified" if v["verified"] else "NOT verified against init_uts_ns"
            console.print(
                f"kernel       {v['osrelease']}  (VMCOREINFO from {v['source']} at "
                f"{v['gpa']:#x}, {check})"
            )
        else:
            console.print(f"kernel       unknown: no VMCOREINFO found ({v['device']})")
    console.print(f"guest RAM    {_mib(data['ram_bytes'])} in {len(data['ranges'])} ranges")
    table = Table(box=None, pad_edge=False)
    columns = ("guest start", "guest end", "size", "host address", "RAMBlock", "device", "in core")
    for col in columns:
        table.add_column(col, justify="right" if col == "size" else "left", no_wrap=True)
    for r in data["ranges"]:
        table.add_row(
            f"{r['gpa']:#018x}",
            f"{r['end']:#018x}",
            _mib(r["size"]),
            f"{r['hva']:#018x}",
            r["block"],
            _device(r["device"]),
            r["in_core"],
        )
    console.width = max(console.width, 200)  # long device names stay on one line
    console.print(table)
    for r in data["ranges"]:
        if r["backing_file"]:
            console.print(
                f"  {r['gpa']:#x}-{r['end']:#x}: read from its backing file {r['backing_file']}",
                soft_wrap=True,
            )
    for m in data["missing"]:
        if m["backing_file"]:
            console.print(
                f"  {m['gpa']:#x}-{m['end']:#x}: not in the core; its backing file "
                f"{m['backing_file']} {m['backing_file_problem']}",
                soft_wrap=True,
            )


def _device(d: dict) -> str:
    """``pc-dimm dimm1 (memory-backend-ram mem1)``: the device, then its backend."""
    return str(MemoryOwner(**d)) or "-"


@contextmanager
def progress_bar(
    total: int, *, enabled: bool, label: str = "extracting", file: TextIO | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(nbytes)`` callback; draws a bar on stderr if ``enabled``.

    :param file: where to draw instead of ``sys.stderr`` (inside gdb, the
        real ``sys.__stderr__`` rather than gdb's wrapper).
    """
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from qemu_vmcore.terminal import MessageStream

    columns = (BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn())
    # A bar that cannot be drawn (the terminal gone) must not stop the work:
    # MessageStream drops what fails (the CLI's sys.stderr is one already).
    console = Console(stderr=file is None, file=None if file is None else MessageStream(file))
    with Progress(label, *columns, TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("extract", total=total)
        yield lambda n: bar.advance(task, n)
