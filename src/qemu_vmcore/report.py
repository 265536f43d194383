"""The engine's words: results as data (the ``--json`` dicts), and the lines
both front ends print from that data.

Data first, formatting second (as drgn's helpers do): :func:`info_dict`,
:func:`prepared_dict` and :func:`extract_dict` are plain JSON-able data;
:func:`warning_lines`, :func:`summary_line` and :func:`error_report` turn
that data into text, terminal-safe, in this one place. The CLI and the gdb
command print these lines and nothing of their own making, so they say the
same words; the gdb batch run (``extract --backend gdb``) hands its result
to the CLI as the same ``extract_dict`` JSON.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.extract import ExtractResult, Prepared
from qemu_vmcore.qemu import memdevices, memory, versions
from qemu_vmcore.qemu.crosscheck import Inconsistency
from qemu_vmcore.qemu.memdevices import MemoryOwner
from qemu_vmcore.source import QemuCore
from qemu_vmcore.terminal import safe


def info_dict(qc: QemuCore, *, vmcoreinfo: bool = True) -> dict:
    """Everything ``info`` shows, as plain JSON-able data (addresses as ints)."""
    stale = qc.accelerator != versions.TCG_ACCEL
    owners = memdevices.owners(qc.dbg, [r.mr for r in qc.ranges])
    problems = qc.memory.backing_problems
    return {
        "core": os.fspath(qc.host.path),
        # A core cut short (size limits, RLIMIT_CORE): its size and the size
        # its program headers promise; None for a whole core.
        "truncated": (
            {"file_size": qc.host.file_size, "expected_size": qc.host.expected_size}
            if qc.host.truncated
            else None
        ),
        "qemu": {
            "version": qc.qemu_version,
            "executable": os.fspath(qc.executable) if qc.executable else None,
            "pid": qc.host.process.pid if qc.host.process else None,
        },
        "machine": qc.machine,
        "accelerator": qc.accelerator,
        "arch": qc.dump_arch.name,
        "vcpus": qc.vcpu_count,
        "vcpu_states": [
            {
                "index": c.index,
                "mode": c.mode,
                "pc": c.pc,
                # The arch's own few: x86 rip and cr3; aarch64 el, ttbr0, ttbr1.
                **c.registers(),
                # Only TCG keeps env current; KVM's is the last state QEMU synced.
                "stale": stale,
            }
            for c in qc.vcpus
        ],
        "vmcoreinfo": _vmcoreinfo_dict(qc) if vmcoreinfo else None,
        # The FlatView, or (a cut core) the MemoryRegion tree rendered here.
        "map": qc.map_source.as_dict(),
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


def backing_lines(backing_files: list[dict]) -> list[str]:
    """One note per backing file guest RAM was read from (``backing_files`` data)."""
    lines = []
    for use in backing_files:
        ranges = use["ranges"]
        spans = ", ".join(f"{r['gpa']:#x}-{r['end']:#x}" for r in ranges[:4])
        more = f" and {len(ranges) - 4} more" if len(ranges) > 4 else ""
        lines.append(
            safe(
                f"note: guest RAM {spans}{more} ({_mib(use['size'])}) read from its backing "
                f"file {use['path']}: shared file-backed RAM is not in the core"
            )
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


def vmcoreinfo_used(info, capped: bool = False) -> dict | None:
    """The VMCOREINFO a vmcore carries, as data (None: none found or not looked for)."""
    if info is None:
        return None
    return {"source": info.source, "gpa": info.gpa, "osrelease": info.osrelease,
            "verified": info.verified, "capped": capped}  # fmt: skip


def _pieces(pieces) -> list[dict]:
    return [{"gpa": p.gpa, "end": p.end, "size": p.size, "why": p.kind.value} for p in pieces]


def _backing(uses) -> list[dict]:
    return [
        {"path": u.path, "size": u.size, "ranges": [{"gpa": p.gpa, "end": p.end} for p in u.pieces]}
        for u in uses
    ]


def _notices(x: Prepared | ExtractResult) -> dict:
    """What deserves a word about a vmcore: the same fields of a prepared one and
    of one written (:class:`ExtractResult` carries them on)."""
    return {
        "inconsistencies": list(x.inconsistencies),
        "accelerator": x.accelerator,
        "missing": _pieces(x.missing),
        "backing_files": _backing(x.backing),
        "vmcoreinfo": vmcoreinfo_used(x.vmcoreinfo, x.vmcoreinfo_capped),
        "map": x.map_source.as_dict() if x.map_source else None,
    }


def prepared_dict(prepared: Prepared) -> dict:
    """What a prepared vmcore will hold that deserves a word before it is written."""
    return _notices(prepared)


def extract_dict(result: ExtractResult) -> dict:
    """What ``extract`` wrote, as data: the ``--json`` result, and what the gdb
    batch run hands back to the CLI."""
    return {
        "output": os.fspath(result.output),
        "format": result.format,
        "file_size": result.file_size,
        "ram_bytes": result.ram_bytes,
        "ranges": result.ranges,
        "seconds": round(result.seconds, 3),
        **_notices(result),
    }


def inconsistency_lines(messages: Iterable[str]) -> list[str]:
    """One warning per disagreement accepted with ``--accept-inconsistent``."""
    return [safe(f"warning: {Inconsistency(m)}") for m in messages]


def unverified_line(vmcoreinfo: dict | None) -> str | None:
    """The warning for a VMCOREINFO the kernel's memory does not confirm, if it is one.

    The RAM scan falls back to such a note when none verifies (see
    guest/vmcoreinfo.py): better than none for an old kernel, but guest user
    space can plant one, so the user must know.
    """
    v = vmcoreinfo
    if v is None or v["verified"]:
        return None
    return safe(
        f"warning: the VMCOREINFO used (from {v['source']} at {v['gpa']:#x}, OSRELEASE "
        f"{v['osrelease'] or ''}) is not confirmed by the kernel's init_uts_ns; guest "
        "user space can plant such notes"
        + ("; the scan stopped at its candidate limit" if v["capped"] else "")
    )


def warning_lines(data: dict, *, missing_as: str = "written as zeros") -> list[str]:
    """Every warning and note about a vmcore, from :func:`prepared_dict` or
    :func:`extract_dict` data; terminal-safe.

    :param missing_as: what becomes of guest RAM the core lacks (``mount``
        serves zeros, ``drgn`` faults).
    """
    lines = inconsistency_lines(data["inconsistencies"])
    line = map_line(data.get("map"))
    if line:
        lines.append(line)
    if data["accelerator"] != versions.TCG_ACCEL:
        lines.append(
            f"warning: QEMU ran with {safe(data['accelerator'])}: the vCPU registers are the "
            "last state QEMU synced from the accelerator and may be stale"
        )
    for m in data["missing"]:
        lines.append(
            f"warning: guest {m['gpa']:#x}-{m['end']:#x} not in the core ({m['why']}); {missing_as}"
        )
    lines += backing_lines(data["backing_files"])
    unverified = unverified_line(data["vmcoreinfo"])
    if unverified:
        lines.append(unverified)
    return lines


def map_line(source: dict | None) -> str | None:
    """The warning for a guest-physical map that is not QEMU's FlatView."""
    if not source or source["kind"] == memory.FLATVIEW:
        return None
    return safe(
        f"warning: guest-physical map rendered from {source['expr']} (QEMU's MemoryRegion "
        f"tree, by QEMU's rules): {source['why']}"
    )


def lost_records_line(count: int) -> str:
    """The warning after a log some of whose records the (cut) core lacks."""
    return (
        f"warning: {count} log record{'s' if count != 1 else ''} not printed: "
        "they lie in guest RAM the core lacks (cut short?)"
    )


def summary_line(data: dict) -> str:
    """``wrote OUT: N ranges, B bytes of guest RAM in S s``, from :func:`extract_dict`."""
    fmt = "" if data["format"] == "elf" else f" ({data['format']}, {data['file_size']:,} bytes)"
    return safe(
        f"wrote {data['output']}{fmt}: {data['ranges']} ranges, "
        f"{data['ram_bytes']:,} bytes of guest RAM in {data['seconds']:.2f} s"
    )


def mounted_dict(path: Path, format: str, size: int, prepared: Prepared) -> dict:
    """What ``mount --json`` prints once the file answers: the file, and the
    same notices as :func:`prepared_dict` (missing RAM, map, VMCOREINFO...)."""
    return {"file": os.fspath(path), "format": format, "size": size,
            **prepared_dict(prepared)}  # fmt: skip


def mounted_line(path: Path, format: str, size: int) -> str:
    """What ``mount`` says once its file answers."""
    return safe(
        f"mounted {path} ({format}, {size:,} bytes): crash, drgn, vmcore-dmesg and makedumpfile "
        f"read it there; unmount with `fusermount3 -u {path.parent}` or Ctrl-C"
    )


def drgn_banner(data: dict, core: str) -> str:
    """The first line of ``qemu-vmcore drgn``'s shell, from :func:`prepared_dict` data."""
    v = data["vmcoreinfo"] or {}
    return safe(
        f"qemu-vmcore: drgn on guest kernel {v.get('osrelease') or 'unknown'} in {core} "
        "(guest-physical memory read from the core; no vmcore written)"
    )


#: ``info``'s last line: which command for which job.
NEXT_STEPS = (
    "next         extract -o FILE keeps or ships a vmcore; mount CORE DIR serves it without a "
    "copy (crash, makedumpfile, vmcore-dmesg); drgn CORE -s VMLINUX opens drgn on the guest"
)


def error_report(e: BaseException, *, output: Path | None = None) -> tuple[str, int]:
    """The one line (without ``error:``) and the exit status for an error.

    :param output: the vmcore being written: an OSError about it (or its
        directory, or a temporary name beside it) has exit status 3, any
        other OSError 2.
    """
    if isinstance(e, VmcoreError):
        line = safe(e.message) + (f" (hint: {safe(e.hint)})" if e.hint else "")
        return line, e.exit_code
    if isinstance(e, OSError):
        where = ""
        if e.filename is not None:
            where = os.fsdecode(e.filename)
            if e.filename2 is not None:
                where += f" -> {os.fsdecode(e.filename2)}"
            where += ": "
        return safe(f"{where}{e.strerror or e}"), _os_error_status(e, output)
    if isinstance(e, KeyboardInterrupt):
        return "interrupted; no output written", 130
    return (
        safe(f"internal error: {type(e).__name__}: {e}")
        + " (hint: run with --debug for a traceback)",
        2,
    )


def _os_error_status(e: OSError, output: Path | None) -> int:
    """3 when the error is about the output (its path or its directory), else 2 (input)."""
    if output is None or e.filename is None:
        return 2
    try:
        where = Path(os.fsdecode(e.filename)).absolute()
    except (TypeError, ValueError):
        return 2
    out = Path(output).absolute()
    if where in (out, out.parent) or where.parent == out.parent and where.name.startswith("."):
        return 3
    return 2


def ram_table_lines(qc: QemuCore) -> list[str]:
    """The guest RAM table as QEMU's gdb script prints it, one line per RAM FlatRange.

    ``message`` says whether the range started a block of the dump (``added``)
    or was joined to the one before; ``count`` is the number of blocks so far.
    """
    from qemu_vmcore.qemu import memory

    lines = [
        "guest RAM blocks:",
        "target_start     target_end       host_addr        message count",
        "---------------- ---------------- ---------------- ------- -----",
    ]
    starts = [r.gpa for r in qc.ranges]
    for s in memory.flat_ram_sections(qc.dbg):
        count = sum(1 for gpa in starts if gpa <= s.gpa)
        message = "added" if s.gpa in starts else "joined"
        lines.append(f"{s.gpa:016x} {s.gpa + s.size:016x} {s.hva:016x} {message:<7} {count:5d}")
    return lines


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


#: Keys of a vCPU's info dict that are not registers to show.
_VCPU_KEYS = ("index", "mode", "pc", "stale")


def _vcpu_line(c: dict) -> str:
    """``  vCPU 0     long      rip 0x...  cr3 0x...``: the mode, the pc (x86
    names it rip, among its registers), then the arch's registers in order."""
    regs = [(k, v) for k, v in c.items() if k not in _VCPU_KEYS]
    if "pc" in c and "rip" not in c:
        regs.insert(0, ("pc", c["pc"]))
    shown = "  ".join(
        f"{k} {v:#018x}" if i == 0 else f"{k} {v:#x}" for i, (k, v) in enumerate(regs)
    )
    stale = "  (may be stale: not TCG)" if c["stale"] else ""
    return f"  vCPU {c['index']}     {c['mode']:9} {shown}{stale}"


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
    console.print(f"arch         {data['arch']}")
    console.print(f"vCPUs        {data['vcpus']}")
    for c in data["vcpu_states"]:
        console.print(_vcpu_line(c))
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
    cut = data.get("truncated")
    if cut:
        console.print(
            f"core         cut short: {cut['file_size']:,} of {cut['expected_size']:,} bytes "
            "(extract --allow-missing writes what is there)"
        )
    m = data["map"]
    if m["kind"] != memory.FLATVIEW:  # said only when it is not QEMU's own FlatView
        console.print(f"map          rendered from {m['expr']}: {m['why']}")
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
    console.print(NEXT_STEPS, soft_wrap=True)


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
