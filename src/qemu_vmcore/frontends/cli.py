"""Command line: ``qemu-vmcore info CORE``, ``extract CORE -o OUT``, ``mount CORE DIR``,
``drgn CORE`` and the rest.

Thin on purpose: parse arguments, call the library, render results. Library
errors (VmcoreError) and OS errors become one ``error: ...`` line and a
non-zero exit; a traceback appears only with --debug.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from qemu_vmcore import __version__
from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.terminal import MessageStream, point_at_devnull

if TYPE_CHECKING:
    from qemu_vmcore.source import QemuCore

DESCRIPTION = """\
Rebuild the vmcore of a QEMU guest from the core dump of the dead QEMU process.

qemu-vmcore reads QEMU's own data structures (the FlatView of
address_space_memory, the RAMBlocks, the vCPUs) from the core, using QEMU's
debug info, and writes the guest's memory as an ELF vmcore, like QMP
dump-guest-memory would have written while the guest was alive.
"""

EPILOG = """\
examples:
  qemu-vmcore info core.12345
  qemu-vmcore info --json core.12345
  qemu-vmcore extract core.12345 -o guest.vmcore
  qemu-vmcore extract core --qemu ./build/qemu-system-x86_64 -o vmcore
  qemu-vmcore mount core.12345 /mnt/guest      # /mnt/guest/vmcore, never written
  qemu-vmcore drgn core.12345 -s vmlinux       # drgn's shell on the guest kernel

debug info:
  QEMU's debug info is found as drgn finds it: by build-id under
  /usr/lib/debug, through .gnu_debuglink, or from debuginfod when
  DEBUGINFOD_URLS is set. Debian/Ubuntu: install qemu-system-x86-dbgsym
  (from the debug archive); Fedora: dnf debuginfo-install qemu-system-x86-core.
  An unstripped QEMU build can be named with --qemu.

exit status: 0 success, 2 bad input, 3 output problem (the vmcore, or stdout
closed or failing, e.g. >/dev/full), 128+N ended by signal N (130 Ctrl-C,
143 SIGTERM; also SIGHUP, SIGQUIT, SIGUSR1, SIGALRM; 141 when the reader of
stdout went away, as in `| head`, quietly).
"""


MOUNT_DESCRIPTION = """\
Serve the guest's vmcore, the very file extract would write with the same
options, as MOUNTPOINT/vmcore on a read-only FUSE file system, without
writing it: crash, makedumpfile, vmcore-dmesg and drgn read it there.
Headers and notes come from memory, guest RAM from the core as it is read;
holes read as zeros, and SEEK_DATA/SEEK_HOLE and the block count show them,
so `cp --sparse=always` of it stays sparse.

ELF (the default) is served at once, whatever the guest's size. A kdump
format costs one pass over guest RAM first (about extract's time for the
same format, with its progress bar): a page's place in the file depends on
the compressed size of every page before it. The pass keeps 2 bytes per
guest page (8 MiB for a 16 GiB guest) and reads compress their pages again.
The raw kdump file is served; --flattened (a stream) is refused.

It runs in the foreground until the file system is unmounted
(`fusermount3 -u MOUNTPOINT`, `umount MOUNTPOINT`) or it gets SIGINT
(Ctrl-C), SIGTERM or SIGHUP; then it unmounts, exits 0 and removes a
decompressed copy of a compressed core. Even if it is killed (SIGKILL),
a watchdog process unmounts. Needs /dev/fuse, fusermount3 and
libfuse 3 (Debian: apt install fuse3); the mount is the user's alone.
QEMU_VMCORE_FUSE_DEVICE and QEMU_VMCORE_FUSERMOUNT name another FUSE device
and fusermount program to check for (test hooks).
"""

DRGN_DESCRIPTION = """\
drgn on the guest kernel, straight from the QEMU core: no vmcore is
written. drgn reads guest-physical memory from the core through
qemu-vmcore's guest layer, with the VMCOREINFO qemu-vmcore finds, and the
vCPUs' registers (their NT_PRSTATUS notes, in a few KiB of memory), so
prog.crashed_thread() and the stacks of tasks on a vCPU unwind as on the
vmcore. As `drgn -c`: with -e CODE or SCRIPT [ARG ...] it runs that,
otherwise its interactive shell (or, with stdin not a terminal, the code
read from stdin); `prog` and drgn's helpers are globals. It needs the
guest kernel's vmlinux: -s VMLINUX, or where drgn looks for it
(/usr/lib/debug/boot/vmlinux-RELEASE, debuginfod). The exit status is
the code's: 1 for an uncaught exception (its traceback on stderr).
"""


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "core",
        type=Path,
        nargs="?",
        help="the QEMU process core file; compressed cores (.zst, .lz4, .xz, as "
        "systemd-coredump stores them) are decompressed on the fly",
    )
    p.add_argument(
        "--coredump",
        metavar="MATCH",
        nargs="?",
        const="",
        help="take the core from systemd's coredumpctl instead: MATCH is a PID, an "
        "executable name or path; alone, the newest core of a QEMU",
    )
    p.add_argument(
        "--pid",
        type=int,
        metavar="PID",
        help="read a live or hung QEMU process instead of a core: it is frozen (ptrace) while "
        "it is read and left as it was found, running or stopped",
    )
    p.add_argument(
        "--tmpdir",
        type=Path,
        metavar="DIR",
        help="where a compressed core is decompressed (sparsely; default $TMPDIR or /var/tmp)",
    )
    p.add_argument(
        "--qemu",
        type=Path,
        metavar="PATH",
        help="the QEMU executable that made the core (default: the path recorded in the core)",
    )
    p.add_argument(
        "--debug-file",
        type=Path,
        metavar="PATH",
        help="a separate file holding QEMU's debug info (e.g. from a -dbgsym package)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="read QEMU's state through this QEMU profile (made by `qemu-vmcore profile`) "
        "instead of debug info; by default <build-id>.json is looked for in "
        "$QEMU_VMCORE_PROFILE_PATH and $XDG_DATA_HOME/qemu-vmcore/profiles",
    )
    # drgn reads QEMU's state in this process; gdb runs the gdb command in gdb -batch
    # (extract only), so that the two can be tested against each other.
    p.add_argument("--backend", choices=["drgn", "gdb"], default="drgn", help=argparse.SUPPRESS)
    p.add_argument(
        "--no-vmcoreinfo",
        action="store_true",
        help="do not look for the guest kernel's VMCOREINFO (neither in QEMU's vmcoreinfo "
        "device nor by scanning guest RAM)",
    )
    p.add_argument(
        "--no-backing-files",
        action="store_true",
        help="do not read shared file-backed guest RAM that the core lacks from its backing "
        "file (memory-backend-file,share=on); such RAM is then missing",
    )
    p.add_argument(
        "--accept-inconsistent",
        action="store_true",
        help="go on, with a warning on stderr (and in --json), where QEMU's state disagrees "
        "with independent facts: the FlatView's RAM against -m (ram_size) and the RAMBlocks, "
        "a RAMBlock against the core's mappings, the vCPU list against -smp; without it "
        "each disagreement is an error",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")


def _size(text: str) -> int:
    from qemu_vmcore.plan import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_format_args(p: argparse.ArgumentParser) -> None:
    from qemu_vmcore.plan import FORMATS

    g = p.add_argument_group("format and range (as QMP dump-guest-memory)")
    g.add_argument(
        "--format",
        choices=FORMATS,
        default="elf",
        help="elf (default), or kdump-compressed with zlib, lzo, snappy or zstd; kdump files "
        "are raw (QMP's kdump-raw-*) unless --flattened",
    )
    g.add_argument(
        "--flattened",
        action="store_true",
        help="write a kdump format as makedumpfile's flattened stream (QMP's kdump-*); "
        "`makedumpfile -R OUT < FILE` turns it into a kdump file",
    )
    g.add_argument(
        "--paging",
        action="store_true",
        help="PT_LOADs with the guest's virtual addresses, from the vCPUs' page tables (elf only)",
    )
    g.add_argument("--begin", type=_size, metavar="ADDR", help="first guest-physical address")
    g.add_argument(
        "--length", type=_size, metavar="LEN", help="bytes from --begin (> 0; needs --begin)"
    )
    g.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="compression threads for the kdump formats (default: one per CPU)",
    )


def _dump_options(args: argparse.Namespace):
    from qemu_vmcore.plan import DumpOptions

    options = DumpOptions(
        format=args.format,
        flattened=args.flattened,
        paging=args.paging,
        begin=args.begin,
        length=args.length,
        threads=args.threads,
    )
    options.check()
    return options


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and a pointer to --help (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        from qemu_vmcore.terminal import safe

        print(f"error: {safe(message)} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)

    def _print_message(self, message: str, file: TextIO | None = None) -> None:
        # argparse ignores an OSError here; --help and --version are results,
        # and one that cannot be written is an error (see _stdout_failed).
        if message:
            (file or sys.stderr).write(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qemu-vmcore",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="show the QEMU version, machine, vCPUs and guest RAM map of a core",
        description="Show what the core holds: QEMU version, machine type, vCPU count, "
        "and each guest RAM range with its host address, RAMBlock and whether the core "
        "has its bytes (yes/no/partial).",
    )
    _add_source_args(info)
    info.add_argument("--json", action="store_true", help="print JSON for scripts")

    dm = sub.add_parser(
        "dmesg",
        help="print the guest kernel's log, straight from the QEMU core",
        description="Print the guest kernel's log (Linux 5.10+ printk ring buffer), found "
        "through the guest's VMCOREINFO: no vmlinux needed. The output is the same as "
        "vmcore-dmesg's on the extracted vmcore; non-printable bytes are escaped as \\xNN.",
    )
    _add_source_args(dm)

    ex = sub.add_parser(
        "extract",
        help="write the guest's vmcore (ELF or kdump-compressed)",
        description="Write the guest's ELF vmcore: the same ranges and bytes QMP "
        "dump-guest-memory (format elf, paging false) writes; or, with the options below, "
        "what it writes with its other formats, paging and begin/length. The file is created "
        "mode 0600 through a temporary file and appears only when complete.",
    )
    _add_source_args(ex)
    ex.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="vmcore path")
    ex.add_argument("-f", "--force", action="store_true", help="replace OUT if it exists")
    ex.add_argument(
        "--allow-missing",
        action="store_true",
        help="write zeros for guest RAM the core lacks (listed on stderr) instead of failing",
    )
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    ex.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _add_format_args(ex)

    mt = sub.add_parser(
        "mount",
        help="serve the guest's vmcore as MOUNTPOINT/vmcore (FUSE), never writing it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=MOUNT_DESCRIPTION,
    )
    _add_source_args(mt)
    mt.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT", help="an empty directory")
    mt.add_argument(
        "--allow-missing",
        action="store_true",
        help="serve zeros for guest RAM the core lacks (listed on stderr) instead of failing",
    )
    mt.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages")
    mt.add_argument(
        "--json",
        action="store_true",
        help="once the file answers, print one JSON line on stdout (the file, its format and "
        "size, what it lacks) for scripts to wait on",
    )
    _add_format_args(mt)

    dg = sub.add_parser(
        "drgn",
        help="drgn's shell or a drgn script on the guest kernel, straight from the core",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DRGN_DESCRIPTION,
    )
    _add_source_args(dg)
    dg.add_argument(
        "-s",
        "--symbols",
        action="append",
        type=Path,
        metavar="VMLINUX",
        help="the guest kernel's vmlinux (or a module's debug file); may be repeated",
    )
    dg.add_argument(
        "--no-default-symbols",
        action="store_true",
        help="load only the files given with -s: do not let drgn look for debug info "
        "(/usr/lib/debug, /lib/modules/RELEASE, debuginfod)",
    )
    dg.add_argument(
        "--no-registers",
        action="store_true",
        help="drgn's custom-kernel target alone (set_linux_kernel_custom): no vCPU registers, "
        "so tasks running on a vCPU have no stack trace",
    )
    dg.add_argument("-e", dest="exec", metavar="CODE", help="run CODE instead of the shell")
    dg.add_argument(
        "args",
        nargs="*",
        metavar="SCRIPT [ARG ...]",
        help="a drgn script to run instead of the shell, and its arguments (everything "
        "after SCRIPT, or after --, is the script's)",
    )
    parser._drgn = dg  # type: ignore[attr-defined]  # see _split_script

    pf = sub.add_parser(
        "profile",
        help="write a QEMU profile: what qemu-vmcore reads of one QEMU build's debug info",
        description="Write the QEMU profile of one QEMU build: the build-id, the version, and "
        "the types, symbols and constants qemu-vmcore reads, from the build's debug info. "
        "On a host without QEMU's debug info, --profile FILE (or FILE in a profile "
        "directory, named <build-id>.json) then stands in for it.",
    )
    pf.add_argument("executable", type=Path, metavar="QEMU-EXECUTABLE", help="the QEMU build")
    pf.add_argument(
        "--debug-file",
        type=Path,
        metavar="PATH",
        help="its separate debug info (default: where drgn looks: /usr/lib/debug, "
        ".gnu_debuglink, debuginfod)",
    )
    pf.add_argument("-o", "--output", type=Path, required=True, metavar="PROFILE.json")
    pf.add_argument("-f", "--force", action="store_true", help="replace the output if it exists")
    pf.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    sub.add_parser(
        "gdb-script",
        help="print the path of the gdb script that adds dump-guest-memory to gdb",
        description="Print the path of qemu-vmcore's gdb command script. In gdb, on a QEMU "
        "core: `source PATH`, then `dump-guest-memory FILE [ARCH]` writes what extract writes.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see EPILOG)."""
    with _standard_streams() as stdout_closed:
        return _run(argv, stdout_closed=stdout_closed)


def _split_script(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """``drgn``'s own arguments, and ``SCRIPT [ARG ...]`` (from its second
    positional on, or after ``--``), which are the script's, options or not.

    argparse cannot say this itself: a REMAINDER after the CORE positional
    would take ``-s VMLINUX`` too.
    """
    if "drgn" not in argv or argv.index("drgn") != next(
        (i for i, a in enumerate(argv) if not a.startswith("-")), -1
    ):
        return argv, []
    sub = parser._drgn  # type: ignore[attr-defined]
    takes = {o: a.nargs for a in sub._actions for o in a.option_strings}
    at = argv.index("drgn") + 1
    positionals, core_given = 0, True
    i = at
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return argv[:i], argv[i + 1 :]
        if a.startswith("-") and a != "-":
            name = a.split("=", 1)[0]
            nargs = takes.get(name, 0)
            if name == "--coredump":
                core_given = False
            if "=" not in a and nargs is None:  # one value
                i += 1
            elif (
                "=" not in a
                and nargs == "?"
                and i + 1 < len(argv)
                and not argv[i + 1].startswith("-")
            ):
                i += 1
            i += 1
            continue
        positionals += 1
        if positionals > (1 if core_given else 0):
            return argv[:i], argv[i:]
        i += 1
    return argv, []


def _run(argv: list[str] | None, *, stdout_closed: bool) -> int:
    try:
        parser = build_parser()
        own, script = _split_script(parser, list(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(own)
        if script:
            args.args = script
    except OSError as e:  # writing --help or --version (stderr's failures are ignored)
        return _stdout_failed(e)
    except SystemExit as e:
        if e.code not in (0, None):
            raise  # a usage error, already on stderr
        # --help or --version: their text is a result like any other.
        try:
            if stdout_closed:
                raise _StdoutError(None)
            _flush_results()
        except _StdoutError as failed:
            return _stdout_failed(failed.error)
        return 0
    debug = getattr(args, "debug", False)  # gdb-script has no --debug
    try:
        if stdout_closed and _prints_results(args):
            raise _StdoutError(None)  # refuse before the slow part
        if args.command == "gdb-script":
            from qemu_vmcore.extract import gdb_script_path

            _print_result(f"{gdb_script_path()}\n")
            return 0
        _install_signal_handlers()
        if debug:
            import logging

            # Show drgn's own log (otherwise silenced) when debugging.
            logging.getLogger("drgn").addHandler(logging.StreamHandler())
        if args.command == "info":
            return _cmd_info(args)
        if args.command == "dmesg":
            return _cmd_dmesg(args)
        if args.command == "mount":
            return _cmd_mount(args)
        if args.command == "drgn":
            return _cmd_drgn(args)
        if args.command == "profile":
            return _cmd_profile(args)
        return _cmd_extract(args)
    except _StdoutError as e:
        if debug and e.error is not None and e.error.errno != errno.EPIPE:
            raise e.error from None
        return _stdout_failed(e.error, written=e.written)
    except (VmcoreError, OSError) as e:
        if debug:
            raise
        return _fail(e, args)
    except KeyboardInterrupt as e:
        return _fail(e, args)
    except _Terminated as e:
        _error(f"{signal.Signals(e.signum).name}: terminated; no output written")
        return 128 + e.signum


# -- standard streams ---------------------------------------------------------
#
# Results (info, dmesg, gdb-script, --json, --help) go to stdout; everything
# else (errors, warnings, progress) to stderr. A result that cannot be written
# is an output error (3), unless the reader went away (`| head`): then the
# run ends quietly with 141, as if killed by SIGPIPE, which is what the
# shell reports for other programs in that pipeline. Messages that cannot be
# written are lost, and never stop a command: `extract 2>&-` still writes
# the vmcore.


class _StdoutError(Exception):
    """The command's results cannot be written to stdout (``error`` None: it is closed)."""

    def __init__(self, error: OSError | None) -> None:
        super().__init__(error)
        self.error = error
        self.written: Path | None = None  # the vmcore, when it was written before


def _prints_results(args: argparse.Namespace) -> bool:
    return args.command in ("info", "dmesg", "gdb-script") or bool(getattr(args, "json", False))


def _print_result(text: str) -> None:
    """Write ``text`` to stdout, now.

    :raises _StdoutError: it cannot be written (a closed pipe, a full disk).
    """
    try:
        sys.stdout.write(text)
    except OSError as e:
        raise _StdoutError(e) from None
    _flush_results()


def _flush_results() -> None:
    try:
        sys.stdout.flush()
    except OSError as e:
        raise _StdoutError(e) from None


def _stdout_failed(error: OSError | None, *, written: Path | None = None) -> int:
    """Say why the results were lost (except after a broken pipe); the exit status."""
    where = _stream_path(sys.stdout)
    # Whatever Python still holds for stdout would fail again at exit, with an
    # "Exception ignored ..." message and status 120: send it to /dev/null.
    point_at_devnull(sys.stdout)
    if error is not None and error.errno == errno.EPIPE:
        return 128 + signal.SIGPIPE
    from qemu_vmcore.terminal import safe

    if error is None:
        _error(
            "cannot print the result: stdout is closed (hint: redirect it to a file or /dev/null)"
        )
    else:
        done = f"; {written} was written all the same" if written is not None else ""
        _error(
            safe(f"cannot print the result to stdout ({where}): {error.strerror or error}{done}")
        )
    return 3


def _stream_path(stream: object) -> str:
    """What ``stream`` is open on, for messages: ``/dev/full``, ``pipe:[1234]``."""
    try:
        return os.readlink(f"/proc/self/fd/{stream.fileno()}")  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return "not a file"


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@contextmanager
def _standard_streams() -> Iterator[bool]:
    """Make stdin, stdout and stderr safe to use while main() runs; yields
    whether stdout was closed (``>&-``).

    A closed descriptor 0, 1 or 2 is reopened on /dev/null: otherwise the
    next file we open would get it, and the vmcore opened as descriptor 2
    would receive whatever writes to stderr (our messages, libdw's). And
    sys.stderr becomes a stream whose failures are ignored, so that a message
    never stops a command, and Python's print() never falls back to stdout.
    """
    closed = [fd for fd in (0, 1, 2) if not _fd_open(fd)]
    for fd in closed:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        else:
            os.set_inheritable(fd, True)  # children (gdb, coredumpctl) get it too
    saved = sys.stdout, sys.stderr
    stdout_closed = sys.stdout is None or 1 in closed
    if sys.stdout is None:  # Python saw descriptor 1 closed; now it is /dev/null
        sys.stdout = open(1, "w", closefd=False)
    stderr = sys.stderr
    if stderr is None:
        stderr = open(2, "w", errors="backslashreplace", closefd=False)
    sys.stderr = MessageStream(stderr)  # type: ignore[assignment]
    try:
        yield stdout_closed
    finally:
        sys.stderr.flush()
        # Back to the caller's streams (tests call main() in-process); one we
        # opened for a closed descriptor stays, for Python's flush at exit.
        sys.stdout = saved[0] if saved[0] is not None else sys.stdout
        sys.stderr = saved[1] if saved[1] is not None else stderr


#: Signals that end a run the way SIGTERM does: cleanup runs, exit 128+N.
CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGALRM)


class _Terminated(BaseException):
    """A signal of CLEANUP_SIGNALS, raised so that cleanup (closing or removing
    the unfinished output, a decompressed copy) runs before the exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _install_signal_handlers() -> None:
    def handler(signum: int, frame: object) -> None:
        raise _Terminated(signum)

    for sig in CLEANUP_SIGNALS:
        # A signal ignored by whoever started us (nohup's SIGHUP) stays ignored.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def _error(line: str) -> None:
    """Print an ``error:`` line the engine made (report.error_report: already safe)."""
    print(f"error: {line}", file=sys.stderr)


def _fail(e: BaseException, args: argparse.Namespace) -> int:
    """Report an error in one line; its exit status."""
    from qemu_vmcore import report

    output = getattr(args, "output", None)
    if isinstance(e, OSError) and e.filename is None:
        # No file name: an error reading the core (the vmcore's own become
        # OutputError, see writers/output.py).
        core = getattr(args, "core", None)
        e = OSError(e.errno, e.strerror, os.fspath(core) if core is not None else "the core")
    line, code = report.error_report(e, output=output)
    _error(line)
    return code


def _progress(args: argparse.Namespace):
    """``progress(total, label)`` for the engine: a bar on a terminal, else nothing."""
    from qemu_vmcore import report

    show = not getattr(args, "quiet", False) and sys.stderr.isatty()
    return lambda total, label="extracting": report.progress_bar(total, enabled=show, label=label)


@contextmanager
def _open(args: argparse.Namespace, *, warn: bool = True) -> Iterator[QemuCore]:
    from qemu_vmcore import report
    from qemu_vmcore.source import core_file, open_qemu_core

    if args.backend == "gdb":
        raise VmcoreError(f"--backend gdb works with extract only, not {args.command}")
    if getattr(args, "pid", None) is not None:
        with _open_pid(args) as qc:
            if warn:
                for line in report.inconsistency_lines(i.message for i in qc.inconsistencies):
                    print(line, file=sys.stderr)
            yield qc
        return
    with core_file(args.core, coredump=args.coredump, tmpdir=args.tmpdir,
                   progress=_progress(args)) as core:  # fmt: skip
        with open_qemu_core(
            core,
            qemu=args.qemu,
            debug_file=args.debug_file,
            backend=args.backend,
            backing_files=not args.no_backing_files,
            strict=not args.accept_inconsistent,
            profile=args.profile,
        ) as qc:
            if warn:
                for line in report.inconsistency_lines(i.message for i in qc.inconsistencies):
                    print(line, file=sys.stderr)
            yield qc


def _open_pid(args: argparse.Namespace):
    """The live QEMU of ``--pid``, frozen while the command runs."""
    from qemu_vmcore.source import open_qemu_process

    if args.core is not None or args.coredump is not None:
        raise VmcoreError("name a core file, --coredump MATCH or --pid PID (one of them)")
    return open_qemu_process(args.pid, qemu=args.qemu, debug_file=args.debug_file,
                             strict=not args.accept_inconsistent)  # fmt: skip


def _cmd_info(args: argparse.Namespace) -> int:
    from qemu_vmcore import report

    with _open(args) as qc:
        data = report.info_dict(qc, vmcoreinfo=not args.no_vmcoreinfo)
    if args.json:
        _print_result(json.dumps(data, indent=2) + "\n")
        return 0
    try:  # only writes to stdout: its OSError is stdout's
        report.print_info(data)
    except OSError as e:
        raise _StdoutError(e) from None
    _flush_results()
    return 0


def _cmd_dmesg(args: argparse.Namespace) -> int:
    from qemu_vmcore import report

    if args.no_vmcoreinfo:
        raise VmcoreError("dmesg needs the guest's VMCOREINFO; drop --no-vmcoreinfo")
    with _open(args) as qc:
        lost: list[int] = []
        records = qc.dmesg(lost)
        search = qc.vmcoreinfo()
        unverified = report.unverified_line(report.vmcoreinfo_used(search.chosen, search.capped))
        if unverified:
            print(unverified, file=sys.stderr)
        _flush_results()  # text before bytes
        out = sys.stdout.buffer
        # Reading the log can fail too (the core): only the writes are stdout's.
        for line in records:
            try:
                out.write(line)
            except OSError as e:
                raise _StdoutError(e) from None
        _flush_results()
        if lost:
            print(report.lost_records_line(len(lost)), file=sys.stderr)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from qemu_vmcore import report
    from qemu_vmcore.extract import check_output, prepare, write

    options = _dump_options(args)
    inputs = [args.core] if args.core is not None else []
    check_output(args.output, force=args.force, inputs=inputs)  # refuse before the slow part
    if args.backend == "gdb" and args.pid is not None:
        raise VmcoreError("--backend gdb reads a core, not --pid")
    if args.backend == "gdb":
        from qemu_vmcore.extract import extract_in_gdb
        from qemu_vmcore.plan import DumpOptions
        from qemu_vmcore.source import core_file

        if options != DumpOptions(threads=options.threads):
            raise VmcoreError("--backend gdb writes ELF of all guest RAM only")
        with core_file(args.core, coredump=args.coredump, tmpdir=args.tmpdir,
                       progress=_progress(args)) as core:  # fmt: skip
            data = extract_in_gdb(core, args.output, qemu=args.qemu,
                                  debug_file=args.debug_file, force=args.force,
                                  allow_missing=args.allow_missing,
                                  accept_inconsistent=args.accept_inconsistent,
                                  no_vmcoreinfo=args.no_vmcoreinfo,
                                  no_backing_files=args.no_backing_files,
                                  debug=args.debug)  # fmt: skip
        for line in report.warning_lines(data):
            print(line, file=sys.stderr)
        return _report_extract(args, data)
    with _open(args, warn=False) as qc:
        prepared = prepare(qc, args.output, force=args.force, allow_missing=args.allow_missing,
                           vmcoreinfo=not args.no_vmcoreinfo, options=options)  # fmt: skip
        for line in report.warning_lines(report.prepared_dict(prepared)):
            print(line, file=sys.stderr)
        with _progress(args)(prepared.total) as advance:
            result = write(prepared, advance)
    return _report_extract(args, report.extract_dict(result))


def _cmd_mount(args: argparse.Namespace) -> int:
    from qemu_vmcore import report
    from qemu_vmcore.extract import prepare
    from qemu_vmcore.frontends import mount
    from qemu_vmcore.serve import FILE_NAME, check_options, open_view

    options = _dump_options(args)
    check_options(options)
    # Refuse before the slow part.
    mount.check_mountpoint(args.mountpoint)
    mount.check_fuse()
    with _open(args, warn=not args.quiet) as qc:
        prepared = prepare(qc, None, allow_missing=args.allow_missing,
                           vmcoreinfo=not args.no_vmcoreinfo, options=options)  # fmt: skip
        if not args.quiet:
            data = report.prepared_dict(prepared)
            for line in report.warning_lines(data, missing_as="served as zeros"):
                print(line, file=sys.stderr)
        total = prepared.total if options.kdump else 0  # only kdump reads RAM up front
        with _progress(args)(total, label="indexing") as advance:
            view = open_view(prepared, advance)
        file = args.mountpoint / FILE_NAME

        def ready() -> None:
            if args.json:  # one line, flushed: a script's signal that the file answers
                data = report.mounted_dict(file, options.format, view.size, prepared)
                try:
                    print(json.dumps(data), flush=True)
                except OSError as e:  # stdout closed: the mount serves on regardless
                    print(f"warning: cannot write --json to stdout: {e.strerror}", file=sys.stderr)
            if not args.quiet:
                print(report.mounted_line(file, options.format, view.size), file=sys.stderr)

        def warn(line: str) -> None:
            from qemu_vmcore.terminal import safe

            print(safe(f"warning: {line}"), file=sys.stderr)

        mount.serve(view, args.mountpoint, source=qc.host.path, ready=ready, warn=warn)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from qemu_vmcore.debugger.profile_make import write_profile
    from qemu_vmcore.qemu.profile_names import DECLARED

    write_profile(args.executable, args.output, DECLARED, debug_file=args.debug_file,
                  force=args.force)  # fmt: skip
    return 0


def _cmd_drgn(args: argparse.Namespace) -> int:
    from qemu_vmcore import program, report

    if args.no_vmcoreinfo:
        raise VmcoreError("drgn needs the guest's VMCOREINFO; drop --no-vmcoreinfo")
    with _open(args) as qc:
        prepared = program.prepare_guest(qc)
        data = report.prepared_dict(prepared)
        for line in report.warning_lines(data, missing_as="drgn's reads there fault"):
            print(line, file=sys.stderr)
        prog = program.program_of(prepared, registers=not args.no_registers)
        program.load_symbols(prog, args.symbols or (), default_symbols=not args.no_default_symbols,
                             release=prepared.vmcoreinfo.osrelease)  # fmt: skip
        return _run_drgn(prog, args, report.drgn_banner(data, os.fspath(qc.host.path)))


def _run_drgn(prog, args: argparse.Namespace, banner: str) -> int:
    """Run the user's code on ``prog`` as ``drgn -c`` runs it: ``-e CODE``, a
    script, the shell on a terminal, else code from stdin; ``prog`` and
    drgn's helpers are globals. The user's exceptions are theirs: a
    traceback and exit status 1, as Python gives them."""
    import runpy
    import traceback

    import drgn
    import drgn.cli

    drgn.set_default_prog(prog)
    scope = drgn.cli.default_globals(prog)
    try:
        if args.exec is not None:
            sys.argv = ["-e", *args.args]
            exec(compile(args.exec, "<string>", "exec"), scope)
        elif args.args:
            script = args.args[0]
            sys.argv = list(args.args)
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
            scope.pop("__name__", None)
            runpy.run_path(script, init_globals=scope, run_name="__main__")
        elif sys.stdin is not None and sys.stdin.isatty():
            print(drgn.cli.version_header(), file=sys.stderr, flush=True)
            drgn.cli.run_interactive(prog, banner_func=lambda text: f"{banner}\n{text}")
        else:
            sys.argv = [""]
            scope["__file__"] = "<stdin>"
            exec(compile(sys.stdin.read() if sys.stdin else "", "<stdin>", "exec"), scope)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except _Terminated:
        raise
    except BaseException as e:
        tb = e.__traceback__
        # The user's frames only, as Python shows a script's: not ours or runpy's.
        while tb is not None and (
            tb.tb_frame.f_code.co_filename == __file__
            or tb.tb_frame.f_code.co_filename.startswith("<frozen runpy")
        ):
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        return 1
    finally:
        _flush_results_quietly()
    return 0


def _flush_results_quietly() -> None:
    try:
        sys.stdout.flush()
    except OSError:
        pass


def _report_extract(args: argparse.Namespace, data: dict) -> int:
    from qemu_vmcore import report

    if args.json:
        try:
            _print_result(json.dumps(data, indent=2) + "\n")
        except _StdoutError as e:
            e.written = Path(data["output"])  # the vmcore is there all the same: say so
            raise
    elif not args.quiet:
        print(report.summary_line(data), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
