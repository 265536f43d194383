"""End to end: the cores users really have -- compressed by systemd-coredump,
found through coredumpctl."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.runs import assert_one_line_error, compressed_core, run_cli

pytestmark = pytest.mark.rig

RIG_DIR = Path(__file__).resolve().parent.parent / "rig"


@pytest.fixture(scope="module")
def plain_vmcore(rig_case, tmp_path_factory):
    case = rig_case("q72-pc-512")
    out = tmp_path_factory.mktemp("plain") / "vmcore"
    run_cli("extract", case.core, "-o", out, "-q", check=True)
    return out


@pytest.mark.parametrize("fmt", ["zstd", "lz4", "xz"])
def test_compressed_core_gives_the_same_vmcore(rig_case, plain_vmcore, tmp_path, fmt):
    case = rig_case("q72-pc-512")
    core = compressed_core(case, fmt)
    out = tmp_path / "vmcore"
    work = tmp_path / "tmp"
    work.mkdir()
    run_cli("extract", core, "-o", out, "-q", "--tmpdir", work, check=True)
    assert filecmp.cmp(out, plain_vmcore, shallow=False)
    assert list(work.iterdir()) == []  # the decompressed core is gone
    info = run_cli("info", "--json", core, "--tmpdir", work, check=True)
    assert '"in_core": "yes"' in info.stdout


def test_no_room_to_decompress(rig_case, mount_tmpfs, tmp_path):
    core = compressed_core(rig_case("q72-pc-512"), "lz4")
    small = mount_tmpfs("size=16m")
    proc = run_cli("extract", core, "-o", tmp_path / "vmcore", "--tmpdir", small)
    assert_one_line_error(proc, "no room to decompress", "--tmpdir")
    assert list(small.iterdir()) == [] and not (tmp_path / "vmcore").exists()


# -- coredumpctl ----------------------------------------------------------------------
#
# systemd-coredump cannot run here (no systemd as PID 1, and installing it
# would take kernel.core_pattern from the rig). So the journal is made by
# systemd-journal-remote from an entry in journal export format, as
# systemd-coredump writes it, and the real coredumpctl reads it with -D.


def _journal(tmp: Path, entries: list[tuple[int, int, str, Path]]) -> Path:
    jdir = tmp / "journal"
    jdir.mkdir()
    export = []
    for k, (pid, usec, exe, core) in enumerate(entries):
        comm = os.path.basename(exe)[:15]
        export.append(
            f"__CURSOR=s=1;i={k + 1}\n__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={k + 1}\n"
            f"_BOOT_ID=0123456789abcdef0123456789abcdef\n"
            f"MESSAGE_ID=fc2e22bc6ee647b6b90729ab34a250b1\nPRIORITY=2\n"
            f"MESSAGE=Process {pid} ({comm}) of user 0 dumped core.\n"
            f"COREDUMP_PID={pid}\nCOREDUMP_UID=0\nCOREDUMP_GID=0\nCOREDUMP_SIGNAL=6\n"
            f"COREDUMP_TIMESTAMP={usec}\nCOREDUMP_COMM={comm}\nCOREDUMP_EXE={exe}\n"
            f"COREDUMP_FILENAME={core}\n\n"
        )
    src = tmp / "entries.export"
    src.write_text("".join(export))
    remote = "/lib/systemd/systemd-journal-remote"
    subprocess.run([remote, "-o", jdir / "coredumps.journal", src], check=True, capture_output=True)
    return jdir


@pytest.fixture
def coredumpctl_env(rig_case, tmp_path):
    """PATH with a coredumpctl that reads a journal listing three cores."""
    if not os.path.exists("/lib/systemd/systemd-journal-remote"):
        pytest.skip("systemd-journal-remote is not installed (tests/rig/setup-apt.sh)")
    real = subprocess.run(
        ["bash", RIG_DIR / "coredumpctl.sh"], check=True, capture_output=True, text=True
    ).stdout.strip()
    case = rig_case("q72-pc-512")
    zst = compressed_core(case, "zstd")
    stored = tmp_path / f"core.qemu-system-x86.0.0123.{case.meta['pid']}.1700000002000000.zst"
    os.link(zst, stored) if zst.stat().st_dev == tmp_path.stat().st_dev else shutil.copy(
        zst, stored
    )
    exe = str(case.qemu_binary)
    jdir = _journal(
        tmp_path,
        [
            (111, 1700000000000000, "/usr/bin/sleep", tmp_path / "core.sleep.zst"),
            (case.meta["pid"], 1700000002000000, exe, stored),
            (222, 1700000001000000, exe, tmp_path / "core.gone.zst"),
        ],
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "coredumpctl"
    wrapper.write_text(f'#!/bin/sh\nexec {real} -D {jdir} "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}, case


@pytest.mark.parametrize("match", ["PID", "qemu-system-x86_64", "EXE", None])
def test_coredump_lookup(coredumpctl_env, plain_vmcore, tmp_path, match):
    env, case = coredumpctl_env
    match = {"PID": str(case.meta["pid"]), "EXE": str(case.qemu_binary)}.get(match, match)
    out = tmp_path / "vmcore"
    args = ["--coredump"] + ([match] if match else [])
    proc = run_cli("extract", *args, "-o", out, "-q", "--tmpdir", tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert filecmp.cmp(out, plain_vmcore, shallow=False)


def test_coredump_no_match_and_missing_file(coredumpctl_env, tmp_path):
    env, _ = coredumpctl_env
    proc = run_cli("info", "--coredump", "4242", env=env)
    assert_one_line_error(proc, "no core matching '4242'")
    proc = run_cli("info", "--coredump", "222", env=env)  # listed, but its file is gone
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
