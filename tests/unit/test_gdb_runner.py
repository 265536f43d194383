"""The gdb front end from the CLI's side: ``gdb-script``, ``extract --backend gdb`` on bad input.

No QEMU needed: these cover the runner (quoting, gdb missing or failing) and
the errors that must read the same whichever backend produced them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import synth
from support.runs import assert_one_line_error, run_cli

from qemu_vmcore import errors
from qemu_vmcore.debugger import gdb_batch as runner
from qemu_vmcore.debugger.gdb_batch import script_path

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")


def test_gdb_script_prints_the_shipped_script():
    proc = run_cli("gdb-script", check=True)
    path = Path(proc.stdout.strip())
    assert path == script_path() and path.is_file()
    assert path.parents[2].name == "qemu_vmcore"  # loads the package it sits in
    assert "dump-guest-memory" in path.read_text()


@needs_gdb
def test_quoting_round_trips_through_gdbs_argv_parser(tmp_path):
    names = ["plain", "with space", "it's", 'say "hi"', "back\\slash", "tab\there", "ünï"]
    line = " ".join(runner.gdb_quote(n) for n in names)
    (tmp_path / "line").write_text(line)
    code = f"print(repr(gdb.string_to_argv(open({str(tmp_path / 'line')!r}).read())))"
    proc = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", f"python {code}"], capture_output=True, text=True
    )
    assert proc.stdout.strip() == repr(names), proc.stderr


def test_gdb_command_line_passes_files_as_arguments(tmp_path):
    argv = runner.gdb_argv(
        tmp_path / "core",
        tmp_path / "out put",
        tmp_path / "status",
        executable="/q/qemu",
        debug_file=tmp_path / "q.debug",
        options=["--quiet", "--force"],
    )
    assert argv[:3] == [os.environ.get("QEMU_VMCORE_GDB", "gdb"), "-batch", "-nx"]
    joined = " ".join(argv)
    assert "set auto-solib-add off" in argv and "-e /q/qemu" in joined
    assert f"-s {tmp_path / 'q.debug'}" in joined and f"-c {tmp_path / 'core'}" in joined
    assert argv[argv.index("-x") + 1] == str(script_path())
    command = argv[-1]
    assert command.startswith("dump-guest-memory --status-file ")
    assert command.endswith("--quiet --force " + runner.gdb_quote(str(tmp_path / "out put")))


def test_errors_come_back_as_the_same_class():
    e = runner._as_exception(
        {"class": "MissingMemoryError", "message": "m", "hint": "h", "exit_code": 2}
    )
    assert isinstance(e, errors.MissingMemoryError) and (e.message, e.hint) == ("m", "h")
    e = runner._as_exception({"class": "OSError", "message": "x: y", "hint": None, "exit_code": 1})
    assert type(e) is errors.VmcoreError and e.exit_code == 1
    assert isinstance(runner._as_exception({"class": "KeyboardInterrupt"}), KeyboardInterrupt)


@pytest.fixture
def any_core(tmp_path):
    core, _, _ = synth.ram_core(tmp_path / "core")
    return core.path


def test_gdb_missing(any_core, tmp_path):
    env = dict(os.environ, QEMU_VMCORE_GDB=str(tmp_path / "no-gdb"))
    proc = run_cli("extract", "--backend", "gdb", any_core, "-o", tmp_path / "v", env=env)
    assert_one_line_error(proc, "no-gdb: not found", "--backend drgn")
    assert not (tmp_path / "v").exists()


def test_gdb_failing_without_a_result(any_core, tmp_path):
    fake = tmp_path / "fake-gdb"
    fake.write_text("#!/bin/sh\necho 'something broke' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = dict(os.environ, QEMU_VMCORE_GDB=str(fake))
    proc = run_cli("extract", "--backend", "gdb", any_core, "-o", tmp_path / "v", env=env)
    assert_one_line_error(proc, "gdb failed (exit status 3): something broke")
    assert not (tmp_path / "v").exists()


def test_backend_gdb_is_for_extract_only(any_core):
    proc = run_cli("info", "--backend", "gdb", any_core)
    assert_one_line_error(proc, "--backend gdb works with extract only")


@needs_gdb
def test_core_of_another_program_same_error_both_backends(tmp_path):
    made = synth.make_sleep_core(tmp_path)
    if made is None:
        pytest.skip("no core appeared for a SIGABRT-ed sleep (core_pattern/limits)")
    core, pid = made
    out = tmp_path / "out" / "vmcore"
    out.parent.mkdir()
    drgn = run_cli("extract", core, "-o", out)
    gdb = run_cli("extract", "--backend", "gdb", core, "-o", out)
    assert_one_line_error(gdb, "sleep", f"pid {pid}", "not of QEMU")
    assert (gdb.returncode, gdb.stderr) == (drgn.returncode, drgn.stderr)
    assert list(out.parent.iterdir()) == []


@needs_gdb
def test_bad_core_same_error_both_backends(tmp_path):
    bad = tmp_path / "core"
    bad.write_bytes(b"not a core at all")
    drgn = run_cli("extract", bad, "-o", tmp_path / "v")
    gdb = run_cli("extract", "--backend", "gdb", bad, "-o", tmp_path / "v")
    assert_one_line_error(gdb, "not an ELF file")
    assert (gdb.returncode, gdb.stderr) == (drgn.returncode, drgn.stderr)


@needs_gdb
def test_script_says_how_to_fix_a_missing_module(tmp_path):
    """A copy of the package whose command needs a module gdb's Python lacks."""
    copy = tmp_path / "site" / "qemu_vmcore"
    package = script_path().parents[2]
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    gdb_dir = copy / script_path().parent.relative_to(package)
    command = gdb_dir / "command.py"
    text = command.read_text().replace(
        "import gdb\n", "import gdb\nimport no_such_module_xyz  # noqa\n", 1
    )
    command.write_text(text)
    proc = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", f"source {gdb_dir / script_path().name}",
         "-ex", f"dump-guest-memory {tmp_path / 'v'}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0] == lines[1], proc.stderr  # at source, then the command
    assert "Traceback" not in proc.stderr
    assert "cannot import 'no_such_module_xyz'" in lines[0]
    assert "apt install python3-no_such_module_xyz" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "v").exists()
