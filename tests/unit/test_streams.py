"""stdout and stderr that go away: broken pipes, closed descriptors, a full disk.

Results (info, dmesg, gdb-script, --json, --help) are stdout's; a result that
cannot be written is an output error (exit 3, one line on stderr naming
stdout and what it is), except when its reader went away (``| head``): then
the run ends quietly, 141 as if killed by SIGPIPE (or 0, when everything was
written before the reader left). Messages are stderr's, and losing them
never stops a command: ``extract 2>&-`` writes the same vmcore. Every run is
a real process started by bash, as a user's shell would start it; most read
a real rig core.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.vmcore_compare import compare_vmcores

from qemu_vmcore.frontends import cli

QV = f"{shlex.quote(sys.executable)} -m qemu_vmcore"
CLOSED = (
    "error: cannot print the result: stdout is closed (hint: redirect it to a file or /dev/null)\n"
)
FULL = "error: cannot print the result to stdout (/dev/full): No space left on device"


def sh(script: str) -> subprocess.CompletedProcess:
    """Run ``script`` in bash; its stdout and stderr are captured, its status is the script's."""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)


def q(*words: object) -> str:
    return " ".join(shlex.quote(os.fspath(w)) for w in words)


@pytest.fixture(scope="module")
def core(rig_case) -> Path:
    return rig_case("q72-pc-512").core


# -- broken pipes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reader"),
    [
        ("gdb-script", "true"),
        ("--help", "true"),
        ("extract --help", "head -c1"),
    ],
)
def test_a_reader_that_goes_away_is_no_error(command, reader):
    proc = sh(f"{QV} {command} | {reader} >/dev/null; exit ${{PIPESTATUS[0]}}")
    assert (proc.returncode, proc.stderr) in ((0, ""), (141, "")), proc


@pytest.mark.rig
@pytest.mark.parametrize(
    ("command", "reader"),
    [
        ("info --json CORE", "head -c1"),
        ("info CORE", "true"),
        ("dmesg CORE", "head -1"),
        ("extract CORE -o OUT --json", "true"),
    ],
)
def test_a_reader_that_goes_away_is_no_error_on_a_real_core(core, tmp_path, command, reader):
    command = command.replace("CORE", q(core)).replace("OUT", q(tmp_path / "vmcore"))
    proc = sh(f"{QV} {command} | {reader} >/dev/null; exit ${{PIPESTATUS[0]}}")
    assert (proc.returncode, proc.stderr) in ((0, ""), (141, "")), proc
    if "extract" in command:
        assert (tmp_path / "vmcore").stat().st_size > 512 << 20  # written all the same


def run_into_a_dead_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run qemu-vmcore with stdout a pipe whose reader is already gone (always EPIPE)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "qemu_vmcore", *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=600)  # fmt: skip
    finally:
        os.close(w)


@pytest.mark.rig
@pytest.mark.parametrize("argv", [["info", "CORE"], ["info", "--json", "CORE"], ["dmesg", "CORE"]])
def test_a_dead_pipe_ends_the_run_with_141_and_no_message(core, argv):
    proc = run_into_a_dead_pipe([os.fspath(core) if a == "CORE" else a for a in argv])
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("argv", [["gdb-script"], ["--version"], ["--help"]])
def test_a_dead_pipe_ends_a_quick_command_with_141_too(argv):
    proc = run_into_a_dead_pipe(argv)
    assert (proc.returncode, proc.stderr) == (141, "")


# -- stdout closed or full ----------------------------------------------------


@pytest.mark.parametrize("command", ["gdb-script", "--version", "--help", "info --help"])
def test_quick_results_with_stdout_closed_or_full(command):
    proc = sh(f"{QV} {command} >&-")
    assert (proc.returncode, proc.stderr) == (3, CLOSED)
    proc = sh(f"{QV} {command} >/dev/full")
    assert (proc.returncode, proc.stderr) == (3, FULL + "\n")


@pytest.mark.rig
@pytest.mark.parametrize("command", ["info CORE", "info --json CORE", "dmesg CORE"])
def test_results_with_stdout_closed_or_full(core, command):
    command = command.replace("CORE", q(core))
    proc = sh(f"{QV} {command} >&-")
    assert (proc.returncode, proc.stderr) == (3, CLOSED)
    proc = sh(f"{QV} {command} >/dev/full")
    assert (proc.returncode, proc.stderr) == (3, FULL + "\n")


@pytest.mark.rig
def test_extract_json_with_stdout_closed_is_refused_before_the_work(core, tmp_path):
    out = tmp_path / "vmcore"
    proc = sh(f"{QV} extract {q(core)} -o {q(out)} --json >&-")
    assert (proc.returncode, proc.stderr) == (3, CLOSED)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.rig
def test_extract_json_with_stdout_full_says_the_vmcore_was_written(core, tmp_path):
    out = tmp_path / "vmcore"
    proc = sh(f"{QV} extract {q(core)} -o {q(out)} --json >/dev/full")
    assert (proc.returncode, proc.stderr) == (3, f"{FULL}; {out} was written all the same\n")
    assert out.stat().st_size > 512 << 20


@pytest.mark.rig
def test_extract_without_json_needs_no_stdout(rig_case, tmp_path):
    case = rig_case("q72-pc-512")
    out = tmp_path / "vmcore"
    proc = sh(f"{QV} extract {q(case.core)} -o {q(out)} >&-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"wrote {out}: ")
    assert compare_vmcores(out, case.reference).differing_pages == []


# -- stderr closed or full ----------------------------------------------------


@pytest.mark.rig
@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full", ">&- 2>&-"])
def test_extract_writes_the_vmcore_whatever_stderr_is(rig_case, tmp_path, redirect):
    """Both closed is where, without care, the vmcore would be descriptor 1 or 2."""
    case = rig_case("q72-pc-512")
    out = tmp_path / "vmcore"
    proc = sh(f"{QV} extract {q(case.core)} -o {q(out)} {redirect}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b and cmp.differing_pages == []


@pytest.mark.rig
def test_warnings_with_stderr_closed_go_nowhere(rig_case, tmp_path):
    """The warnings for guest RAM not in the core, lost; not on stdout, not in the file."""
    core = rig_case("q72-pc-nodump").core
    plain, closed = tmp_path / "plain", tmp_path / "closed"
    proc = sh(f"{QV} extract {q(core)} -o {q(plain)} --allow-missing -q")
    assert proc.returncode == 0 and "warning: guest 0x0-0x20000000 not in the core" in proc.stderr
    proc = sh(f"{QV} extract {q(core)} -o {q(closed)} --allow-missing 2>&-")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert filecmp.cmp(plain, closed, shallow=False)


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_an_error_with_stderr_closed_still_fails_and_stdout_stays_empty(tmp_path, redirect):
    proc = sh(f"{QV} info {q(tmp_path / 'missing')} {redirect}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "")
    proc = sh(f"{QV} extract {q(tmp_path / 'missing')} -o {q(tmp_path / 'no/dir')} {redirect}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "", "")
    proc = sh(f"{QV} info --bogus {redirect}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", "")


# -- OSError: 2 or 3, never 1 -------------------------------------------------


def raising(error: OSError):
    def command(args):
        raise error

    return command


def test_an_os_error_without_a_file_name_names_the_core(monkeypatch, capsys, keep_signals):
    """pread() on the core says EIO with no file name: the message names the core."""
    monkeypatch.setattr(cli, "_cmd_info", raising(OSError(errno.EIO, "Input/output error")))
    assert cli.main(["info", "/cores/core.1"]) == 2
    assert capsys.readouterr() == ("", "error: /cores/core.1: Input/output error\n")


def test_an_os_error_with_two_file_names_names_both(monkeypatch, capsys, keep_signals, tmp_path):
    error = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    monkeypatch.setattr(cli, "_cmd_extract", raising(error))
    assert cli.main(["extract", "/cores/core.1", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: /a -> /b: Invalid cross-device link\n"


def test_an_os_error_about_the_output_is_3(monkeypatch, capsys, keep_signals, tmp_path):
    out = tmp_path / "out"
    error = OSError(errno.EROFS, "Read-only file system", str(out))
    monkeypatch.setattr(cli, "_cmd_extract", raising(error))
    assert cli.main(["extract", "/cores/core.1", "-o", str(out)]) == 3
    assert capsys.readouterr().err == f"error: {out}: Read-only file system\n"


def test_main_leaves_the_callers_streams_as_they_were(capsys, keep_signals, tmp_path):
    before = sys.stdout, sys.stderr
    cli.main(["info", str(tmp_path / "missing")])
    assert (sys.stdout, sys.stderr) == before
