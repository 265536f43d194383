"""The command line on bad input: one ``error:`` line, a non-zero status, no output file."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from support import synth
from support.runs import assert_one_line_error, run_cli
from support.synth import PAGE, FileEntry, Load

from qemu_vmcore import __version__
from qemu_vmcore.frontends import cli
from qemu_vmcore.layouts import elf as E

EXE = "/usr/bin/qemu-system-x86_64"
EXE_BASE = 0x5555_5555_4000
BUILD_ID = bytes.fromhex("c0ffee00" * 5)


def env_without_debuginfod() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DEBUGINFOD_URLS"}


def test_help_explains_debug_info_and_gives_examples():
    proc = run_cli("--help", check=True)
    out = proc.stdout
    assert "usage: qemu-vmcore" in out
    assert "examples:" in out and "qemu-vmcore extract core.12345 -o guest.vmcore" in out
    assert "debug info:" in out and "/usr/lib/debug" in out and "DEBUGINFOD_URLS" in out
    assert "dbgsym" in out and "--qemu" in out
    assert "exit status:" in out
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("command", "words"),
    [("info", ["--json", "--qemu", "--debug-file"]), ("extract", ["--output", "--force", "0600"])],
)
def test_subcommand_help(command, words):
    out = run_cli(command, "--help", check=True).stdout
    for w in words:
        assert w in out, w
    assert "--backend" not in out  # hidden


def test_version():
    assert run_cli("--version", check=True).stdout.strip() == f"qemu-vmcore {__version__}"


def test_no_command_is_a_usage_error():
    proc = run_cli()
    assert proc.returncode == 2
    assert_one_line_error(proc, "COMMAND", "qemu-vmcore --help")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["extract", "core"], ["--output", "required", "qemu-vmcore extract --help"]),
        (["extract", "core", "-o", "v", "--format", "zip"], ["--format", "invalid choice"]),
        (["info", "core", "--no-such-option"], ["unrecognized arguments", "--no-such-option"]),
        (["frobnicate"], ["invalid choice", "'frobnicate'", "qemu-vmcore --help"]),
        (["extract", "core", "-o", "v", "--begin", "x"], ["--begin"]),
    ],
)
def test_argument_errors_are_one_line_with_status_2(argv, needles, tmp_path):
    """A usage mistake is one ``error:`` line naming it and where help is,
    not argparse's usage block, and no output file is begun."""
    proc = run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc, *needles)
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_an_escape_in_an_argument_error_reaches_the_terminal_inert():
    proc = run_cli("extract", "core", "-o", "v", "--format", "x\x1b[31m")
    assert_one_line_error(proc, "invalid choice")
    assert "\x1b" not in proc.stderr


# The bad-input matrix (missing, directory, empty, random, executable, another
# program's core, ...) is tests/robustness/test_matrix.py.


@pytest.fixture
def dirs(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    return inputs, outputs


# -- synthetic cores that look like QEMU's --------------------------------------------------


@pytest.fixture(scope="module")
def fake_qemu_core(tmp_path_factory):
    """A core that names qemu-system-x86_64 and has its build-id, but no QEMU in it."""
    page, phnum = synth.fake_executable_page(BUILD_ID)
    notes = synth.core_notes(
        psinfo=synth.prpsinfo(pid=31337, fname=b"qemu-system-x86", args=b"qemu-system-x86_64"),
        files=[FileEntry(EXE_BASE, EXE_BASE + 2 * PAGE, 0, EXE)],
        aux={E.AT_PHDR: EXE_BASE + 64, synth.AT_PHNUM: phnum},
    )
    loads = [Load(EXE_BASE, page), Load(0x7F00_0000_0000, b"x" * 100)]
    return synth.write_core(tmp_path_factory.mktemp("fakeq") / "core", loads, notes).path


@pytest.mark.parametrize("command", ["info", "extract"])
def test_no_debug_info_names_the_build_id(fake_qemu_core, dirs, command):
    _, outputs = dirs
    extra = ["-o", outputs / "vmcore"] if command == "extract" else []
    proc = run_cli(command, fake_qemu_core, *extra, env=env_without_debuginfod())
    assert_one_line_error(proc, "no debug info found", EXE, BUILD_ID.hex(), "--qemu")
    assert proc.returncode == 2
    assert list(outputs.iterdir()) == []


def test_qemu_option_with_another_build(fake_qemu_core, dirs):
    if not Path("/bin/true").exists():
        pytest.skip("no /bin/true")
    _, outputs = dirs
    proc = run_cli("extract", fake_qemu_core, "--qemu", "/bin/true", "-o", outputs / "vmcore")
    assert_one_line_error(proc, "/bin/true", "does not match the core", BUILD_ID.hex())
    assert list(outputs.iterdir()) == []


def test_corrupt_header_offset_gives_one_line_error(fake_qemu_core, dirs):
    """A core whose e_phoff is past 2**63: an error line, not a traceback (see test_hostcore)."""
    inputs, outputs = dirs
    raw = bytearray(fake_qemu_core.read_bytes())
    struct.pack_into("<Q", raw, 32, 2**63 + 64)
    bad = inputs / "core"
    bad.write_bytes(bytes(raw))
    for args in (("info", bad), ("extract", bad, "-o", outputs / "vmcore")):
        proc = run_cli(*args)
        assert_one_line_error(proc, str(bad))
        assert proc.returncode == 2
    assert list(outputs.iterdir()) == []


# -- the output path --------------------------------------------------------------------------


def test_extract_into_a_missing_directory(fake_qemu_core, tmp_path):
    out = tmp_path / "nope" / "vmcore"
    proc = run_cli("extract", fake_qemu_core, "-o", out)
    assert_one_line_error(proc, str(tmp_path / "nope"), "no such directory")
    assert proc.returncode == 3
    assert list(tmp_path.iterdir()) == []


def test_extract_refuses_an_existing_output(fake_qemu_core, tmp_path):
    out = tmp_path / "vmcore"
    out.write_bytes(b"keep me")
    proc = run_cli("extract", fake_qemu_core, "-o", out)
    assert_one_line_error(proc, str(out), "already exists", "hint: pass --force")
    assert proc.returncode == 3
    assert out.read_bytes() == b"keep me"
    assert list(tmp_path.iterdir()) == [out]


def test_extract_to_a_directory(fake_qemu_core, tmp_path):
    proc = run_cli("extract", fake_qemu_core, "-o", tmp_path, "--force")
    assert_one_line_error(proc, str(tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []


def test_output_is_checked_before_the_core(tmp_path):
    proc = run_cli("extract", tmp_path / "no-core", "-o", tmp_path / "nope" / "vmcore")
    assert_one_line_error(proc, "no such directory")


# -- main() in-process ------------------------------------------------------------------------


def test_main_returns_the_exit_code_and_prints_one_line(tmp_path, capsys, keep_signals):
    assert cli.main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'missing'}: no such file\n"


def test_main_debug_raises(tmp_path, keep_signals):
    from qemu_vmcore.errors import CoreFileError

    with pytest.raises(CoreFileError):
        cli.main(["info", "--debug", str(tmp_path / "missing")])


def test_an_unverified_vmcoreinfo_is_warned_about():
    """A note the kernel's memory does not confirm (say, one of a flood of
    planted fakes past the scan's cap) is used only with a warning."""
    from qemu_vmcore.guest.vmcoreinfo import VmcoreInfo
    from qemu_vmcore.report import unverified_line, vmcoreinfo_used

    fake = VmcoreInfo(b"", 0x1000, "guest RAM scan", fields={"OSRELEASE": "6.6.6\x1b[2J"})
    assert unverified_line(vmcoreinfo_used(fake, capped=True)) == (
        "warning: the VMCOREINFO used (from guest RAM scan at 0x1000, OSRELEASE 6.6.6\\x1b[2J) "
        "is not confirmed by the kernel's init_uts_ns; guest user space can plant such notes; "
        "the scan stopped at its candidate limit"
    )
    verified = VmcoreInfo(b"", 0x1000, "guest RAM scan", verified=True, fields=fake.fields)
    assert unverified_line(vmcoreinfo_used(verified)) is None
    assert unverified_line(vmcoreinfo_used(None)) is None
