"""The ``dump-guest-memory`` gdb command, on qemu-vmcore's engine.

It keeps the workflow of QEMU's scripts/dump-guest-memory.py (``source`` the
script, ``dump-guest-memory FILE [ARCH]``) and its guest RAM table, and
writes what ``qemu-vmcore extract`` writes, through the same
:func:`qemu_vmcore.extract.prepare` and :func:`~qemu_vmcore.extract.write`,
and prints the same lines (:mod:`qemu_vmcore.report`): gdb only reads QEMU's structures (the
gdb backend); guest RAM is copied from the core file by the host-core layer.

Runs in gdb's Python; loaded by :mod:`qemu_vmcore.frontends.gdb.dump_guest_memory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import gdb

from qemu_vmcore import report
from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.plan import check_gdb_arch, parse_gdb_arch

USAGE = (
    "usage: dump-guest-memory [-f|--force] [--allow-missing] [--accept-inconsistent] "
    "[--no-vmcoreinfo] [--no-backing-files] [-q|--quiet] FILE [ARCH]"
)
PREFIX = "dump-guest-memory: "


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (gdb must not exit)."""

    def error(self, message: str):
        raise UsageError(f"{USAGE} ({message})")

    def exit(self, status: int = 0, message: str | None = None):
        raise UsageError(message or USAGE)


def _parser() -> _Parser:
    p = _Parser(prog="dump-guest-memory", add_help=False)
    p.add_argument("file", metavar="FILE")
    p.add_argument("arch", metavar="ARCH", nargs="?")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--allow-missing", action="store_true")
    p.add_argument("--accept-inconsistent", action="store_true")
    p.add_argument("--no-vmcoreinfo", action="store_true")
    p.add_argument("--no-backing-files", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("-h", "--help", action="store_true")
    # For `qemu-vmcore extract --backend gdb`: where to leave the result.
    p.add_argument("--status-file", type=Path)
    return p


def _write(text: str, stream: int = gdb.STDOUT) -> None:
    gdb.write(text + "\n", stream)
    gdb.flush()


class TextProgress:
    """Progress as a few plain lines (every 10 %), for gdb's own output."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.shown = 0

    def __call__(self, n: int) -> None:
        self.done += n
        step = min(100, self.done * 100 // self.total) // 10 * 10
        if step > self.shown:
            self.shown = step
            mib = 1 << 20
            _write(
                f"extracting: {step:3d}% ({self.done / mib:,.1f} of {self.total / mib:,.1f} MiB)"
            )


class _Plain:
    def __init__(self, advance) -> None:
        self.advance = advance

    def __enter__(self):
        return self.advance

    def __exit__(self, *exc):
        return None


def progress(total: int, *, quiet: bool):
    """A context manager yielding ``advance(nbytes)``."""
    if quiet:
        return _Plain(lambda n: None)
    if sys.__stderr__ is not None and sys.__stderr__.isatty():
        import importlib.util

        if importlib.util.find_spec("rich") is not None:  # gdb's Python may lack it
            return report.progress_bar(total, enabled=True, file=sys.__stderr__)
    return _Plain(TextProgress(total))


# -- the command --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    """Open the core gdb has, print the RAM table, extract; what was written,
    as :func:`qemu_vmcore.report.extract_dict` data."""
    from qemu_vmcore.extract import check_output, prepare, write
    from qemu_vmcore.source import (
        core_in_gdb,
        live_pid_in_gdb,
        open_qemu_core_in_gdb,
        open_qemu_process,
    )

    arch = parse_gdb_arch(args.arch)
    output = Path(os.path.abspath(os.path.expanduser(args.file)))
    pid = live_pid_in_gdb()
    core_path = core_in_gdb() if pid is None else None
    # Refuse before the slow part.
    check_output(output, force=args.force, inputs=[core_path] if core_path else [])
    if pid is not None:  # gdb -p PID: gdb holds it stopped; RAM from /proc/PID/mem
        opened = open_qemu_process(pid, backend="gdb", freeze=False,
                                   strict=not args.accept_inconsistent)  # fmt: skip
    else:
        opened = open_qemu_core_in_gdb(
            core_path, backing_files=not args.no_backing_files, strict=not args.accept_inconsistent
        )
    with opened as qc:
        if not args.quiet:
            for line in report.ram_table_lines(qc):
                _write(line)
        check_gdb_arch(arch, qc.dump_arch.machine, qc.dump_arch.byteorder)
        prepared = prepare(qc, output, force=args.force, allow_missing=args.allow_missing,
                           vmcoreinfo=not args.no_vmcoreinfo)  # fmt: skip
        if args.status_file is None:  # in gdb -batch, the CLI prints them from the result
            for line in report.warning_lines(report.prepared_dict(prepared)):
                _write(line, gdb.STDERR)
        with progress(prepared.total, quiet=args.quiet) as advance:
            result = write(prepared, advance)
    data = report.extract_dict(result)
    if not args.quiet:
        _write(report.summary_line(data))
    return data


def _save_status(path: Path | None, status: dict) -> None:
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(status, f)


# gdb prints this for `help dump-guest-memory`: its first line is the summary
# in `help data`, the rest is laid out as gdb's own help texts are.
HELP = """Write the guest's vmcore from the QEMU core gdb has open (qemu-vmcore).

Under `gdb -p PID` it reads the live QEMU gdb holds stopped: QEMU's state
through gdb, guest RAM from /proc/PID/mem.

Usage: dump-guest-memory [OPTIONS] FILE [ARCH]

FILE is the vmcore to write: an ELF vmcore with the same guest RAM ranges and
bytes QMP dump-guest-memory (format elf, paging false) writes, sparse, made
mode 0600 through a temporary file that appears at FILE only when complete.
It is the file `qemu-vmcore extract CORE -o FILE` writes.

ARCH is optional and checked (the names QEMU's own dump-guest-memory.py
takes): X86_64 for an x86 guest whose first vCPU was in long mode, 386
otherwise; aarch64-le for an aarch64 guest (aarch64-be, a big-endian one, is
refused). Left out, it is the guest's.

  -f, --force       replace FILE if it exists
  --allow-missing   write zeros for guest RAM the core lacks, instead of failing
  --accept-inconsistent  write the vmcore, with a warning, where QEMU's state
                    disagrees with independent facts (RAM size, mappings, vCPUs)
  --no-vmcoreinfo   do not look for the guest kernel's VMCOREINFO
  --no-backing-files  do not read shared file-backed RAM the core lacks
                    from its backing file (it is then missing)
  -q, --quiet       no RAM table, progress or summary
  --debug           show a Python traceback for unexpected errors

The command reads a QEMU core file opened in gdb (gdb qemu-system-x86_64 CORE, gdb
qemu-system-aarch64 CORE);
it refuses a live process. Guest RAM is copied from the core file directly,
not through gdb."""


class DumpGuestMemory(gdb.Command):
    __doc__ = HELP

    def __init__(self) -> None:
        super().__init__("dump-guest-memory", gdb.COMMAND_DATA, gdb.COMPLETE_FILENAME)

    def invoke(self, arg: str, from_tty: bool) -> None:
        # Pressing Enter again must not rewrite a multi-GiB file.
        self.dont_repeat()
        try:
            args = _parser().parse_args(gdb.string_to_argv(arg))
        except UsageError as e:
            raise gdb.GdbError(str(e).strip()) from None
        if args.help:
            _write(self.__doc__ or USAGE)
            return
        try:
            result = run(args)
        except BaseException as e:
            if args.debug and not isinstance(e, VmcoreError | KeyboardInterrupt):
                traceback.print_exc()
            output = Path(os.path.abspath(os.path.expanduser(args.file)))
            line, code = report.error_report(e, output=output)
            error = {"class": _class_name(e), "message": line, "hint": None, "exit_code": code}
            _save_status(args.status_file, {"error": error})
            if not isinstance(e, Exception | KeyboardInterrupt):
                raise  # SystemExit and the like are not ours to report
            raise gdb.GdbError(PREFIX + line) from None
        _save_status(args.status_file, {"result": result})


def _class_name(e: BaseException) -> str:
    """The error's class as the CLI rebuilds it (``VmcoreError`` subclasses by name)."""
    if isinstance(e, VmcoreError | KeyboardInterrupt):
        return type(e).__name__
    return "OSError" if isinstance(e, OSError) else "InternalError"


def register() -> DumpGuestMemory:
    return DumpGuestMemory()
