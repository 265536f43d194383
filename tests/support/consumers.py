"""Run the real vmcore consumers on a vmcore and return what they print.

The consumers are Debian's crash (8.0.2 on bookworm), drgn (the Python
package, run as ``python -m drgn``), kexec-tools' vmcore-dmesg and
makedumpfile's ``--dump-dmesg``. Each wrapper returns the tool's text output
and raises ConsumerError, carrying the command, exit code and output, when the
tool fails or runs past its timeout. No tool ever reads the terminal: stdin
is /dev/null, so a tool that stops at a prompt sees end-of-file and exits.

Standard library only, so that tests and bench scripts can import it as is.

What the tools need from the vmcore (see DESIGN.md): vmcore-dmesg,
makedumpfile and drgn need a VMCOREINFO note; vmcore-dmesg and makedumpfile
also need a PT_LOAD with the kernel text's virtual addresses, and
makedumpfile 1.7.2 reads the program headers at offset 64 whatever e_phoff
says. crash copes without all of that, through QEMU's notes.

Debian's crash reads only x86_64 kernels; for an aarch64 guest
``crash_binary("aarch64")`` is the rig's build of crash for ARM64
(tests/rig/build-crash.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ConsumerError",
    "DEFAULT_TIMEOUT",
    "tool_path",
    "available",
    "crash_binary",
    "crash",
    "crash_each",
    "drgn",
    "drgn_argv",
    "vmcore_dmesg",
    "makedumpfile_dmesg",
]

DEFAULT_TIMEOUT = 120.0  # seconds, per tool run

# Where the tools live when they are not on PATH (sbin is often missing from
# a non-root PATH).
_FALLBACK_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

# The rig's crash for arm64 guests: tests/rig/build-crash.sh puts it here.
_RIG_CACHE_ENV = "QEMU_VMCORE_RIG_CACHE"
_RIG_CACHE_DEFAULT = "/var/cache/qemu-vmcore-rig"
_RIG_CRASH_ARM64 = Path("crash-arm64") / "crash"

# crash runs `!echo` between commands so crash_each can split its output.
_CRASH_SEPARATOR = "@@@qemu-vmcore-consumers {}@@@"

StrPath = str | os.PathLike[str]


class ConsumerError(RuntimeError):
    """A consumer failed: non-zero exit, timeout, missing tool or no output."""

    def __init__(
        self,
        message: str,
        *,
        cmd: Sequence[str],
        returncode: int | None,
        output: str = "",
        timed_out: bool = False,
    ):
        self.cmd = list(cmd)
        self.returncode = returncode  # None when the tool did not run or timed out
        self.output = output  # stdout and stderr (drgn: stderr last)
        self.timed_out = timed_out
        tail = "\n".join(output.splitlines()[-30:])
        super().__init__(
            f"{message}\ncommand: {' '.join(map(str, self.cmd))}\n"
            f"exit code: {returncode}\noutput (last lines):\n{tail}"
        )


def tool_path(name: str) -> str:
    """The absolute path of tool `name`, looked up on PATH and then in sbin."""
    found = shutil.which(name)
    if found is None:
        for d in _FALLBACK_DIRS:
            p = Path(d) / name
            if p.is_file() and os.access(p, os.X_OK):
                found = str(p)
                break
    if found is None:
        raise ConsumerError(f"{name} not found (install it)", cmd=[name], returncode=None)
    return found


def available(name: str) -> bool:
    """Whether tool `name` ("crash", "vmcore-dmesg", "makedumpfile", "drgn") can run."""
    if name == "drgn":
        try:
            import drgn  # noqa: F401
        except ImportError:
            return False
        return True
    try:
        tool_path(name)
    except ConsumerError:
        return False
    return True


def crash_binary(arch: str) -> Path:
    """The crash that reads kernels of guest `arch` ("x86_64" or "aarch64").

    x86_64: Debian's crash, found like tool_path("crash") (/usr/bin/crash).
    aarch64: the rig's crash built with ``make target=ARM64``,
    ``$QEMU_VMCORE_RIG_CACHE/crash-arm64/crash`` (default cache
    /var/cache/qemu-vmcore-rig), made by tests/rig/build-crash.sh. Raises
    ConsumerError when that binary is missing and ValueError for another
    arch."""
    if arch == "x86_64":
        return Path(tool_path("crash"))
    if arch == "aarch64":
        cache = os.environ.get(_RIG_CACHE_ENV) or _RIG_CACHE_DEFAULT
        p = Path(cache) / _RIG_CRASH_ARM64
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ConsumerError(
                f"crash for ARM64 not found at {p} (run tests/rig/build-crash.sh)",
                cmd=[str(p)],
                returncode=None,
            )
        return p
    raise ValueError(f"no crash for guest arch {arch!r} (x86_64 or aarch64)")


def _run(
    cmd: Sequence[str],
    *,
    timeout: float,
    cwd: StrPath | None = None,
    merge_stderr: bool = True,
) -> tuple[int, str, str]:
    """Run `cmd` with stdin from /dev/null; returns (exit code, stdout, stderr).

    With `merge_stderr` stderr goes into stdout (one pipe, the tool's own
    order). On timeout the tool's whole process group is killed."""
    cmd = [os.fspath(c) for c in cmd]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        text = _text(out) + _text(err)
        raise ConsumerError(
            f"{Path(cmd[0]).name} timed out after {timeout:.0f} s",
            cmd=cmd,
            returncode=None,
            output=text,
            timed_out=True,
        ) from None
    return proc.returncode, _text(out), _text(err)


def _text(b: bytes | None) -> str:
    return "" if b is None else b.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# crash


def _crash_argv(
    vmcore: StrPath, vmlinux: StrPath, input_file: StrPath, arch: str = "x86_64"
) -> list[str]:
    return [
        os.fspath(crash_binary(arch)),
        "-s",  # silent: no banner, no prompt
        "--no_scroll",  # never pipe output through a pager
        "--no_crashrc",
        "-i",
        os.fspath(input_file),
        os.fspath(vmlinux),
        os.fspath(vmcore),
    ]


def _crash_run(
    vmcore: StrPath,
    vmlinux: StrPath,
    lines: Sequence[str],
    timeout: float,
    merge: bool,
    arch: str = "x86_64",
) -> tuple[list[str], str, str]:
    for c in lines:
        if "\n" in c:
            raise ValueError(f"crash command with a newline: {c!r}")
    with tempfile.TemporaryDirectory(prefix="consumers-crash-") as tmp:
        inp = Path(tmp) / "commands"
        inp.write_text("".join(f"{c}\n" for c in [*lines, "quit"]))
        argv = _crash_argv(vmcore, vmlinux, inp, arch)
        rc, out, err = _run(argv, timeout=timeout, cwd=tmp, merge_stderr=merge)
    if rc != 0:
        raise ConsumerError(f"crash failed ({rc})", cmd=argv, returncode=rc, output=out + err)
    return argv, out, err


def crash(
    vmcore: StrPath,
    vmlinux: StrPath,
    commands: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    arch: str = "x86_64",
) -> str:
    """Run crash's `commands` (e.g. ["sys", "bt", "log"]) on `vmcore`.

    `arch` is the guest's: the crash of :func:`crash_binary` for it runs.

    Runs ``crash -s --no_scroll --no_crashrc -i FILE vmlinux vmcore`` where
    FILE holds the commands and a final ``quit``. Returns stdout and stderr
    together. crash's stdout is block-buffered into the pipe while stderr is
    not, so its error and warning lines (e.g. "WARNING: active task ... not
    found in PID hash") tend to come first. crash exits 0 even when single
    commands fail; only a failure to open the dump raises ConsumerError."""
    _, out, _ = _crash_run(vmcore, vmlinux, list(commands), timeout, merge=True, arch=arch)
    return out


def crash_each(
    vmcore: StrPath,
    vmlinux: StrPath,
    commands: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Like crash(), in one crash run, but return one stdout text per command.

    crash's error messages are on stdout as well, after the command's
    output; the start-up output (before the first command) is dropped: use
    crash() to see it."""
    lines: list[str] = []
    for i, c in enumerate(commands):
        lines += [f"!echo '{_CRASH_SEPARATOR.format(i)}'", c]
    argv, out, err = _crash_run(vmcore, vmlinux, lines, timeout, merge=False)
    pieces: list[str] = []
    rest = out
    for i in range(len(commands)):
        sep = _CRASH_SEPARATOR.format(i) + "\n"
        pos = rest.find(sep)
        if pos < 0:
            raise ConsumerError(
                f"crash output lacks the separator before command {i} ({commands[i]!r})",
                cmd=argv,
                returncode=0,
                output=out + err,
            )
        if i:
            pieces.append(rest[:pos])
        rest = rest[pos + len(sep) :]
    if commands:
        pieces.append(rest)
    return pieces


# --------------------------------------------------------------------------
# drgn


def drgn_argv(vmcore: StrPath, vmlinux: StrPath, script: StrPath) -> list[str]:
    """drgn's command line: load only `vmlinux`'s symbols, run `script`.

    drgn 0.3.0: -q (no logs, no download progress), -c CORE,
    -s PATH (symbols from PATH), --no-default-symbols (nothing but -s: no
    search of /usr/lib/debug, debuginfod or modules), then the script; the
    script sees the program as the global ``prog``."""
    return [
        sys.executable,
        "-m",
        "drgn",
        "-q",
        "-c",
        os.fspath(vmcore),
        "-s",
        os.fspath(vmlinux),
        "--no-default-symbols",
        os.fspath(script),
    ]


def drgn(
    vmcore: StrPath,
    vmlinux: StrPath,
    code: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Run the Python `code` under drgn on `vmcore`; returns its stdout.

    `code` sees ``prog`` (and drgn's usual CLI globals) and should print
    what the caller wants to check. A non-zero exit (drgn refusing the file,
    or an exception in `code`) raises ConsumerError with stderr in it."""
    with tempfile.TemporaryDirectory(prefix="consumers-drgn-") as tmp:
        script = Path(tmp) / "script.py"
        script.write_text(code)
        argv = drgn_argv(vmcore, vmlinux, script)
        rc, out, err = _run(argv, timeout=timeout, cwd=tmp, merge_stderr=False)
    if rc != 0:
        raise ConsumerError(f"drgn failed ({rc})", cmd=argv, returncode=rc, output=out + err)
    return out


# --------------------------------------------------------------------------
# the two dmesg extractors


def vmcore_dmesg(vmcore: StrPath, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """kexec-tools' ``vmcore-dmesg VMCORE``: the guest's kernel log.

    vmcore-dmesg exits non-zero with one line on stderr when it cannot read
    the log, e.g. "Missing the log_buf symbol" (no VMCOREINFO) or "No program
    header covering vaddr 0x... found kexec bug?" (no PT_LOAD with the
    kernel's virtual addresses)."""
    argv = [tool_path("vmcore-dmesg"), os.fspath(vmcore)]
    rc, out, err = _run(argv, timeout=timeout, merge_stderr=False)
    if rc != 0 or not out:
        raise ConsumerError(
            f"vmcore-dmesg failed ({rc})", cmd=argv, returncode=rc, output=out + err
        )
    return out


def makedumpfile_dmesg(
    vmcore: StrPath,
    vmlinux: StrPath | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """``makedumpfile [-x VMLINUX] --dump-dmesg VMCORE OUT``; returns OUT's text.

    Without `vmlinux` makedumpfile takes symbols and offsets from the
    VMCOREINFO note alone."""
    with tempfile.TemporaryDirectory(prefix="consumers-makedumpfile-") as tmp:
        outfile = Path(tmp) / "dmesg.txt"
        argv = [tool_path("makedumpfile")]
        if vmlinux is not None:
            argv += ["-x", os.fspath(vmlinux)]
        argv += ["--dump-dmesg", os.fspath(vmcore), os.fspath(outfile)]
        rc, out, _ = _run(argv, timeout=timeout, cwd=tmp, merge_stderr=True)
        text = outfile.read_text(errors="replace") if outfile.is_file() else ""
    if rc != 0 or not text:
        raise ConsumerError(f"makedumpfile failed ({rc})", cmd=argv, returncode=rc, output=out)
    return text
