"""The ``dump-guest-memory`` gdb command, on qemu-vmcore's engine.

It keeps the workflow of QEMU's scripts/dump-guest-memory.py (``source`` the
script, ``dump-guest-memory FILE [ARCH]``) and its guest RAM table, and
writes what ``qemu-vmcore extract`` writes, through the same
:func:`qemu_vmcore.extract.extract`: gdb only reads QEMU's structures (the
gdb backend); guest RAM is copied from the core file by the host-core layer.

Runs in gdb's Python; loaded by :mod:`qemu_vmcore.frontends.gdb.dump_guest_memory`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import traceback
from pathlib import Path

import gdb

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu import versions
from qemu_vmcore.terminal import safe

USAGE = (
    "usage: dump-guest-memory [-f|--force] [--allow-missing] [--accept-inconsistent] "
    "[--no-vmcoreinfo] [--no-backing-files] [-q|--quiet] FILE [ARCH]"
)
PREFIX = "dump-guest-memory: "

#: ARCH as QEMU's script spells it -> e_machine, for the guests we dump.
X86_ARCHES = {"X86_64": E.EM_X86_64, "386": E.EM_386}
#: Spellings accepted for them besides QEMU's own.
ARCH_ALIASES = {"x86_64": "X86_64", "x86-64": "X86_64", "i386": "386"}
#: The other ARCH values QEMU's script knows (not x86, so never ours).
OTHER_QEMU_ARCHES = ("aarch64-be", "aarch64-le", "s390", "ppc64-be", "ppc64-le")


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


def parse_arch(arch: str | None) -> str | None:
    """QEMU's ARCH name for an x86 guest, or None when not given.

    :raises VmcoreError: an ARCH we do not dump, or one nobody knows.
    """
    if arch is None:
        return None
    name = arch if arch in X86_ARCHES else ARCH_ALIASES.get(arch.lower())
    if name is not None:
        return name
    if arch in OTHER_QEMU_ARCHES:
        raise VmcoreError(
            f"ARCH {arch} is not supported: qemu-vmcore dumps x86 guests only "
            "(ARCH X86_64 or 386, or leave ARCH out)"
        )
    raise VmcoreError(
        f"unknown ARCH {arch!r}: use X86_64 or 386, or leave ARCH out to take the guest's "
        f"(QEMU's script also knows {', '.join(OTHER_QEMU_ARCHES)})"
    )


def check_arch(arch: str | None, machine: int) -> None:
    """Refuse an ARCH that is not what QEMU's own dump of this guest would be."""
    if arch is None or X86_ARCHES[arch] == machine:
        return
    right = next(name for name, m in X86_ARCHES.items() if m == machine)
    why = "in long mode" if machine == E.EM_X86_64 else "not in long mode"
    raise VmcoreError(
        f"ARCH {arch} does not match this guest: its first vCPU was {why}, so its "
        f"dump is {right} (as QMP dump-guest-memory would write it)",
        hint=f"pass {right}, or leave ARCH out",
    )


# -- what gdb has open ----------------------------------------------------------------


def core_in_gdb() -> str:
    """The path of the QEMU core gdb has open.

    :raises VmcoreError: gdb is attached to a live process, or has no core.
    """
    from qemu_vmcore.debugger.gdb_backend import core_file_path, target_kind

    kind, pid = target_kind()
    path = core_file_path() if kind in ("core", "unknown") else None
    if path is None and (kind == "native" or (kind not in ("core", "none") and pid)):
        raise VmcoreError(
            f"gdb is attached to a live process (pid {pid}); this command reads a QEMU core",
            hint="on a live QEMU use QMP/HMP dump-guest-memory; or write a core with "
            "`gcore FILE`, then run this command in `gdb QEMU FILE`",
            pid=pid,
        )
    if path is None:
        what = "no core file" if kind in ("none", "core", "unknown") else f"gdb's target is {kind}"
        raise VmcoreError(
            f"{what}: open the QEMU core first",
            hint="gdb qemu-system-x86_64 CORE, or `core-file CORE` at the (gdb) prompt",
        )
    return path


def executable_given(core_path: str) -> Path | None:
    """gdb's program, if it is not the executable the core names.

    Loading a program under another path is naming it explicitly, as
    ``--qemu`` does on the command line (so a renamed QEMU is accepted).
    """
    from qemu_vmcore.host.core import open_core

    loaded = gdb.current_progspace().filename
    if not loaded:
        return None
    with open_core(core_path) as host:
        recorded = host.executable
    if recorded is not None and os.path.realpath(recorded) == os.path.realpath(loaded):
        return None
    return Path(loaded)


# -- output -----------------------------------------------------------------------------


def ram_table(qc) -> list[str]:
    """The guest RAM table as QEMU's script prints it, one line per RAM FlatRange.

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
            from qemu_vmcore.report import progress_bar

            return progress_bar(total, enabled=True, file=sys.__stderr__)
    return _Plain(TextProgress(total))


# -- the command --------------------------------------------------------------------------


def run(args: argparse.Namespace, warnings: list[str]):
    """Open the core gdb has, print the RAM table, extract; returns the ExtractResult.

    Warnings printed before the result are also appended to ``warnings``.
    """
    from qemu_vmcore.extract import extract
    from qemu_vmcore.source import open_qemu_core
    from qemu_vmcore.writers.output import check_target

    arch = parse_arch(args.arch)
    output = Path(os.path.abspath(os.path.expanduser(args.file)))
    core_path = core_in_gdb()
    check_target(output, force=args.force, inputs=[core_path])  # refuse before the slow part
    given = executable_given(core_path)
    backing = not args.no_backing_files
    strict = not args.accept_inconsistent
    with open_qemu_core(
        core_path, qemu=given, backend="gdb", backing_files=backing, strict=strict
    ) as qc:
        for problem in qc.inconsistencies:
            warnings.append(safe(f"warning: {problem}"))
            _write(warnings[-1], gdb.STDERR)
        if not args.quiet:
            for line in ram_table(qc):
                _write(line)
        check_arch(arch, qc.elf_arch()[1])
        if qc.accelerator != versions.TCG_ACCEL:
            warnings.append(
                f"warning: QEMU ran with {qc.accelerator}: the vCPU registers are the last "
                "state QEMU synced from the accelerator and may be stale"
            )
            _write(warnings[-1], gdb.STDERR)
        with progress(qc.ram_total, quiet=args.quiet) as advance:
            result = extract(
                qc,
                output,
                force=args.force,
                allow_missing=args.allow_missing,
                vmcoreinfo=not args.no_vmcoreinfo,
                progress=advance,
            )
    for piece in result.missing:
        _write(
            f"warning: guest {piece.gpa:#x}-{piece.end:#x} not in the core "
            f"({piece.kind.value}); written as zeros",
            gdb.STDERR,
        )
    from qemu_vmcore.report import backing_notes

    for line in backing_notes(result.backing):
        _write(line, gdb.STDERR)
    if not args.quiet:
        _write(
            f"wrote {result.output}: {result.ranges} ranges, {result.ram_bytes:,} bytes of "
            f"guest RAM in {result.seconds:.2f} s"
        )
    return result


def _error_line(e: BaseException, output: Path | None = None) -> tuple[str, dict]:
    """One line for gdb, and the error as data for ``--status-file``.

    :param output: the vmcore being written: an OSError about it (or its
        directory) has exit status 3, any other 2, as in the CLI.
    """
    if isinstance(e, VmcoreError):
        line = e.message + (f" (hint: {e.hint})" if e.hint else "")
        return line, {"class": type(e).__name__, "message": e.message, "hint": e.hint,
                      "exit_code": e.exit_code}  # fmt: skip
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        message = f"{where}{e.strerror or e}"
        about = Path(os.path.abspath(os.fsdecode(e.filename))) if e.filename else None
        ours = output is not None and about in (output, output.parent)
        return message, {"class": "OSError", "message": message, "hint": None,
                         "exit_code": 3 if ours else 2}  # fmt: skip
    if isinstance(e, KeyboardInterrupt):
        message = "interrupted; no output written"
        return message, {"class": "KeyboardInterrupt", "message": message, "hint": None,
                         "exit_code": 130}  # fmt: skip
    message = f"internal error: {type(e).__name__}: {e}"
    line = f"{message} (hint: run with --debug for a traceback)"
    return line, {"class": "InternalError", "message": message, "hint": None, "exit_code": 2}


def _save_status(path: Path | None, status: dict) -> None:
    if path is not None:
        with open(path, "wb") as f:
            pickle.dump(status, f)


# gdb prints this for `help dump-guest-memory`: its first line is the summary
# in `help data`, the rest is laid out as gdb's own help texts are.
HELP = """Write the guest's vmcore from the QEMU core gdb has open (qemu-vmcore).

Usage: dump-guest-memory [OPTIONS] FILE [ARCH]

FILE is the vmcore to write: an ELF vmcore with the same guest RAM ranges and
bytes QMP dump-guest-memory (format elf, paging false) writes, sparse, made
mode 0600 through a temporary file that appears at FILE only when complete.
It is the file `qemu-vmcore extract CORE -o FILE` writes.

ARCH is optional and checked: X86_64 for a guest whose first vCPU was in
long mode, 386 otherwise (the names QEMU's own dump-guest-memory.py takes).

  -f, --force       replace FILE if it exists
  --allow-missing   write zeros for guest RAM the core lacks, instead of failing
  --accept-inconsistent  write the vmcore, with a warning, where QEMU's state
                    disagrees with independent facts (RAM size, mappings, vCPUs)
  --no-vmcoreinfo   do not look for the guest kernel's VMCOREINFO
  --no-backing-files  do not read shared file-backed RAM the core lacks
                    from its backing file (it is then missing)
  -q, --quiet       no RAM table, progress or summary
  --debug           show a Python traceback for unexpected errors

The command reads a QEMU core file opened in gdb (gdb qemu-system-x86_64 CORE);
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
        warnings: list[str] = []
        if args.help:
            _write(self.__doc__ or USAGE)
            return
        try:
            result = run(args, warnings)
        except BaseException as e:
            if args.debug and not isinstance(e, VmcoreError | KeyboardInterrupt):
                traceback.print_exc()
            output = Path(os.path.abspath(os.path.expanduser(args.file)))
            line, status = _error_line(e, output)
            _save_status(args.status_file, {"error": status})
            if not isinstance(e, Exception | KeyboardInterrupt):
                raise  # SystemExit and the like are not ours to report
            raise gdb.GdbError(PREFIX + line) from None
        _save_status(args.status_file, {"result": result, "warnings": warnings})


def register() -> DumpGuestMemory:
    return DumpGuestMemory()
