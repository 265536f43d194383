"""``qemu-vmcore extract --backend gdb``: the gdb command, run in ``gdb -batch``.

This process starts gdb on the core, sources the command script and runs
``dump-guest-memory``, which leaves its result (or its error) in a status
file, as JSON: the result is :func:`qemu_vmcore.report.extract_dict`'s data,
the error the class, message, hint and exit status. The CLI then reports it
exactly as for the drgn backend, so the two backends can be tested against
each other from the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qemu_vmcore import errors
from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.host.core import check_regular, open_core

#: Settings before gdb loads anything: QEMU's symbols only (as the drgn
#: backend loads), no pager, no questions.
GDB_SETTINGS = (
    "set auto-solib-add off",
    "set pagination off",
    "set confirm off",
    "set width 0",
    "set print thread-events off",
)


#: The gdb command script (the gdb front end), sourced in gdb; found by its
#: place in the package rather than imported, as it imports gdb.
SCRIPT = Path(__file__).resolve().parents[1] / "frontends" / "gdb" / "dump_guest_memory.py"


def script_path() -> Path:
    """The gdb command script shipped in this package."""
    return SCRIPT


def gdb_quote(arg: str) -> str:
    """``arg`` as one argument of ``gdb.string_to_argv`` (libiberty's buildargv)."""
    return "".join("\\" + c if c in "\\'\" \t" else c for c in arg)


def gdb_argv(
    core: Path,
    output: Path,
    status_file: Path,
    *,
    executable: str | None,
    debug_file: Path | None,
    options: list[str],
) -> list[str]:
    """The gdb command line: load QEMU and its core, source the script, run the command.

    Files go on gdb's own command line (``-e``/``-s``/``-c``), never through
    gdb's command parser, so any file name works.
    """
    gdb = os.environ.get("QEMU_VMCORE_GDB", "gdb")
    debuginfod = "on" if os.environ.get("DEBUGINFOD_URLS") else "off"
    argv = [gdb, "-batch", "-nx", "-iex", f"set debuginfod enabled {debuginfod}"]
    for setting in GDB_SETTINGS:
        argv += ["-iex", setting]
    if executable is not None:
        argv += ["-e", executable, "-s", os.fspath(debug_file or executable)]
    elif debug_file is not None:
        argv += ["-s", os.fspath(debug_file)]
    argv += ["-c", os.fspath(core), "-x", os.fspath(script_path())]
    command = ["dump-guest-memory", "--status-file", os.fspath(status_file), *options]
    command.append(os.fspath(output))
    return argv + ["-ex", " ".join(gdb_quote(a) for a in command)]


@dataclass(frozen=True)
class GdbExtract:
    """An ``extract`` for the gdb command: the files and the options it takes too."""

    core: Path
    output: Path
    qemu: Path | None = None
    debug_file: Path | None = None
    force: bool = False
    allow_missing: bool = False
    accept_inconsistent: bool = False
    no_vmcoreinfo: bool = False
    no_backing_files: bool = False
    debug: bool = False

    def options(self) -> list[str]:
        """The gdb command's options for this run."""
        out = ["--quiet"]
        for flag, on in (
            ("--force", self.force),
            ("--allow-missing", self.allow_missing),
            ("--accept-inconsistent", self.accept_inconsistent),
            ("--no-vmcoreinfo", self.no_vmcoreinfo),
            ("--no-backing-files", self.no_backing_files),
            ("--debug", self.debug),
        ):
            if on:
                out.append(flag)
        return out


def _executable(run: GdbExtract) -> str | None:
    """The file gdb loads as QEMU: ``--qemu``, else the one the core names, if it exists.

    gdb would block on a FIFO given as either file, and then report "no
    executable loaded": refuse anything but a regular file here, as the
    drgn path does.
    """
    for path in (run.qemu, run.debug_file):
        if path is not None:
            check_regular(path)
    if run.qemu is not None:
        return os.path.abspath(run.qemu)
    with open_core(run.core) as host:  # also the drgn path's errors for a bad core
        exe = host.executable
    if exe:
        check_regular(exe)
    return exe if exe and os.path.isfile(exe) else None


def extract_in_gdb(run: GdbExtract) -> dict:
    """Run ``dump-guest-memory`` in gdb; what it wrote, as ``extract_dict`` data.

    :raises VmcoreError: the command's error, as the drgn path raises it.
    """
    for path in (run.core, run.output, run.qemu, run.debug_file):
        if path is not None and "\n" in os.fspath(path):
            raise VmcoreError(f"{path!r}: a file name with a newline cannot be passed to gdb")
    core = Path(os.path.abspath(run.core))
    output = Path(os.path.abspath(run.output))
    debug_file = Path(os.path.abspath(run.debug_file)) if run.debug_file else None
    executable = _executable(run)
    scratch = Path(tempfile.mkdtemp(prefix="qemu-vmcore-gdb-"))
    try:
        status_file = scratch / "status"
        argv = gdb_argv(core, output, status_file, executable=executable,
                        debug_file=debug_file, options=run.options())  # fmt: skip
        proc = _run(argv, debug=run.debug)
        if not status_file.exists():
            raise VmcoreError(f"gdb failed (exit status {proc.returncode}): {_last_line(proc)}")
        with open(status_file, encoding="utf-8") as f:
            status = json.load(f)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "error" in status:
        raise _as_exception(status["error"])
    return status["result"]


def _run(argv: list[str], *, debug: bool) -> subprocess.CompletedProcess:
    """Run gdb; on Ctrl-C or SIGTERM, interrupt it and wait, so it removes its temporary file.

    gdb runs in its own session, so a Ctrl-C on the terminal reaches this
    process only, which passes on exactly one SIGINT.
    """
    out = None if debug else subprocess.PIPE
    if debug:
        print("running: " + " ".join(argv), file=sys.stderr)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise VmcoreError(
            f"{argv[0]}: not found", hint="install gdb, or use the default --backend drgn"
        ) from None
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        proc.send_signal(signal.SIGINT)  # gdb turns it into KeyboardInterrupt in Python
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _as_exception(error: dict) -> BaseException:
    """The gdb command's error, rebuilt for the CLI's error handling."""
    if error["class"] == "KeyboardInterrupt":
        return KeyboardInterrupt()
    cls = getattr(errors, error["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, VmcoreError)):
        cls = VmcoreError
    exc = cls(error["message"], hint=error["hint"])
    exc.exit_code = error["exit_code"]
    return exc
