"""End to end: zero-copy analysis on real rig cores.

``qemu-vmcore mount`` serves extract's very file (cmp), which crash,
vmcore-dmesg, drgn and makedumpfile read as they read the extracted one,
with no disk used; ``qemu-vmcore drgn`` and ``qemu_vmcore.guest_program()``
give drgn the guest kernel with no file at all. Bad input is one error line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import consumers, mounts, rig
from support.runs import assert_one_line_error, compressed_core, run_cli

pytestmark = [
    pytest.mark.rig,
    pytest.mark.skipif(mounts.fuse_usable() is not None, reason=str(mounts.fuse_usable())),
]

RELEASE_PY = "print(prog['init_uts_ns'].name.release.string_().decode())"
TASKS_PY = """
from drgn.helpers.linux.pid import for_each_task
tasks = {int(t.pid): t.comm.string_().decode() for t in for_each_task(prog)}
print(len(tasks), tasks.get(1), tasks.get(2))
"""
PANIC_PY = "print([f.name for f in prog.crashed_thread().stack_trace()])"


@pytest.fixture(scope="module")
def vmlinux():
    return rig.vmlinux()


def mount_argv(core: Path, mountpoint: Path, *options: object) -> list[object]:
    return mounts.cli_argv("mount", core, mountpoint, *options)


@pytest.fixture
def mountpoint(tmp_path) -> Path:
    m = tmp_path / "mnt"
    m.mkdir()
    return m


def extracted(case: rig.Case, out: Path, *options: object) -> Path:
    run_cli("extract", case.core, "-o", out, "-q", *options, check=True)
    return out


# -- every byte is extract's ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["elf", "kdump-zlib"])
@pytest.mark.parametrize("name", ["q72-pc-512", "q10-q35-512", "q10-q35-4608", "a10-virt-smp2"])
def test_the_mounted_vmcore_is_extracts(rig_case, tmp_path, mountpoint, name, fmt):
    case = rig_case(name)
    file = extracted(case, tmp_path / "vmcore", "--format", fmt)
    with mounts.mounted(mount_argv(case.core, mountpoint, "--format", fmt), mountpoint) as m:
        assert subprocess.run(["cmp", m.file, file]).returncode == 0
        st = m.file.stat()
        assert st.st_size == file.stat().st_size
        # Sparse, and it says so: no more data than extract's file holds.
        assert st.st_blocks <= file.stat().st_blocks + 64
        assert m.end() == 0
    lines = m.stderr().splitlines()
    assert lines[-1].startswith(f"mounted {m.file} ({fmt}, ") and "fusermount3 -u" in lines[-1]
    assert not any(line.startswith("error") for line in lines)


def test_with_the_options_of_extract(rig_case, tmp_path, mountpoint):
    """--paging, --begin/--length, --no-vmcoreinfo: the same file as extract's with them."""
    case = rig_case("q10-q35-512")
    for options in (["--paging"], ["--begin", "0x100000", "--length", "64M"],
                    ["--no-vmcoreinfo"], ["--format", "kdump-zstd", "--begin", "128M",
                                          "--length", "0x1000000"]):  # fmt: skip
        file = extracted(case, tmp_path / "vmcore", *options)
        with mounts.mounted(mount_argv(case.core, mountpoint, "-q", *options), mountpoint) as m:
            assert subprocess.run(["cmp", m.file, file]).returncode == 0, options
            m.end()
        file.unlink()


def test_a_compressed_core(rig_case, tmp_path, mountpoint):
    """A zstd core is decompressed into an unnamed file in --tmpdir, which
    lives as long as the mount: nothing is left there after it."""
    case = rig_case("q72-pc-512")
    core = compressed_core(case, "zstd")
    file = extracted(case, tmp_path / "vmcore")
    work = tmp_path / "tmp"
    work.mkdir()
    argv = mount_argv(core, mountpoint, "-q", "--tmpdir", work)
    with mounts.mounted(argv, mountpoint) as m:
        assert subprocess.run(["cmp", m.file, file]).returncode == 0
        assert list(work.iterdir()) == []  # unnamed (O_TMPFILE), held by the mount
        assert m.end("SIGTERM") == 0
    assert list(work.iterdir()) == []


# -- consumers on the mount, as on the file -------------------------------------------


def without_paths(text: str, *paths: Path) -> str:
    for p in paths:
        text = text.replace(os.fspath(p), "VMCORE")
    return text


@pytest.mark.parametrize("name", ["q10-q35-512", "q72-pc-smp2"])
def test_consumers_read_the_mount_as_the_file(rig_case, vmlinux, tmp_path, mountpoint, name):
    case = rig_case(name)
    file = extracted(case, tmp_path / "vmcore")
    marker = f"RIG-MARKER {case.marker}"
    with mounts.mounted(mount_argv(case.core, mountpoint, "-q"), mountpoint) as m:
        results = {}
        for label, path in (("mount", m.file), ("file", file)):
            sys_out, log_out = consumers.crash_each(path, vmlinux, ["sys", "log"])
            results[label] = (
                without_paths(sys_out, path),
                log_out,
                consumers.vmcore_dmesg(path),
                consumers.drgn(path, vmlinux, RELEASE_PY),
                consumers.drgn(path, vmlinux, TASKS_PY),
                consumers.makedumpfile_dmesg(path),
            )
        assert m.end() == 0
    assert results["mount"] == results["file"]
    sys_out, log_out, dmesg, release, tasks, mdf = results["mount"]
    assert f"RELEASE: {case.meta['kernel_version']}" in sys_out
    assert marker in log_out and marker in dmesg and marker in mdf
    assert release.strip() == case.meta["kernel_version"]
    assert tasks.split()[1:] == ["init", "kthreadd"]


def test_crash_reads_a_mounted_kdump_file(rig_case, vmlinux, mountpoint):
    case = rig_case("q10-q35-512")
    argv = mount_argv(case.core, mountpoint, "-q", "--format", "kdump-zlib")
    with mounts.mounted(argv, mountpoint) as m:
        sys_out, log_out = consumers.crash_each(m.file, vmlinux, ["sys", "log"])
        assert m.end() == 0
    assert f"RELEASE: {case.meta['kernel_version']}" in sys_out
    assert f"RIG-MARKER {case.marker}" in log_out


def test_makedumpfile_filters_the_mount(rig_case, vmlinux, tmp_path, mountpoint):
    """makedumpfile -d 31 reads the mounted ELF and writes a filtered dump,
    as from the extracted file; crash reads that dump."""
    case = rig_case("q10-q35-512")
    file = extracted(case, tmp_path / "vmcore")
    with mounts.mounted(mount_argv(case.core, mountpoint, "-q"), mountpoint) as m:
        sizes = {}
        for label, src in (("mount", m.file), ("file", file)):
            out = tmp_path / f"filtered-{label}"
            subprocess.run([consumers.tool_path("makedumpfile"), "-d", "31", src, out],
                           check=True, capture_output=True)  # fmt: skip
            sizes[label] = out.stat().st_size
        assert m.end() == 0
    assert sizes["mount"] == sizes["file"]
    assert sizes["mount"] < file.stat().st_blocks * 512  # filtered: smaller than the RAM kept
    sys_out, log_out = consumers.crash_each(tmp_path / "filtered-mount", vmlinux, ["sys", "log"])
    assert f"RELEASE: {case.meta['kernel_version']}" in sys_out
    assert f"RIG-MARKER {case.marker}" in log_out


def test_no_disk_is_used_while_mounted_and_read(rig_case, vmlinux, tmp_path, mountpoint):
    """df of the file system the core (and the mount point) are on: reading
    the whole mounted vmcore and running vmcore-dmesg on it uses no disk
    (the extracted file would take hundreds of MiB). Other work on the
    machine moves df too: the least of three tries counts."""
    case = rig_case("q10-q35-512")
    deltas = []
    for _ in range(3):
        with mounts.mounted(mount_argv(case.core, mountpoint, "-q"), mountpoint) as m:
            before = mounts.disk_used(case.dir)
            subprocess.run(["cat", m.file], stdout=subprocess.DEVNULL, check=True)
            consumers.vmcore_dmesg(m.file)
            deltas.append(mounts.disk_used(case.dir) - before)
            data = m.file.stat().st_blocks * 512
            assert m.end() == 0
        if min(deltas) < 16 << 20:
            break
    assert data > 200 << 20  # what extract would have written
    assert min(deltas) < 16 << 20, deltas


@pytest.mark.parametrize("how", ["fusermount", "umount", "SIGINT", "SIGTERM"])
def test_unmounting_ends_it_with_0(rig_case, mountpoint, how):
    case = rig_case("q72-pc-512")
    with mounts.mounted(mount_argv(case.core, mountpoint, "-q"), mountpoint) as m:
        with open(m.file, "rb") as f:
            assert f.read(4) == b"\x7fELF"
        start = time.monotonic()
        assert m.end(how) == 0
        assert time.monotonic() - start < 10
        assert not mounts.is_mounted(mountpoint)
    assert m.stderr() == ""


# -- bad input: one error line, nothing mounted ----------------------------------------


def test_mountpoint_missing(rig_case, tmp_path):
    proc = run_cli("mount", rig_case("q72-pc-512").core, tmp_path / "nope")
    assert_one_line_error(proc, "no such directory to mount on")
    assert proc.returncode == 3


def test_mountpoint_not_empty(rig_case, tmp_path):
    (tmp_path / "x").write_text("")
    proc = run_cli("mount", rig_case("q72-pc-512").core, tmp_path)
    assert_one_line_error(proc, "not empty")


def test_mountpoint_already_a_mount(rig_case, mount_tmpfs):
    where = mount_tmpfs("size=1m")
    proc = run_cli("mount", rig_case("q72-pc-512").core, where)
    assert_one_line_error(proc, "already a mount point")


def test_no_fuse_device(rig_case, tmp_path, mountpoint):
    env = dict(os.environ, QEMU_VMCORE_FUSE_DEVICE=str(tmp_path / "no-fuse"))
    proc = run_cli("mount", rig_case("q72-pc-512").core, mountpoint, env=env)
    assert_one_line_error(proc, "no-fuse: No such file or directory", "has no FUSE")
    assert not mounts.is_mounted(mountpoint)


def test_no_fusermount(rig_case, mountpoint):
    env = dict(os.environ, QEMU_VMCORE_FUSERMOUNT="fusermount3-gone")
    proc = run_cli("mount", rig_case("q72-pc-512").core, mountpoint, env=env)
    assert_one_line_error(proc, "fusermount3-gone not found", "apt install fuse3")


def test_flattened_is_refused(rig_case, mountpoint):
    proc = run_cli("mount", rig_case("q72-pc-512").core, mountpoint, "--format", "kdump-zlib",
                   "--flattened")  # fmt: skip
    assert_one_line_error(proc, "--flattened is a stream")


# -- drgn, with no file ------------------------------------------------------------------


def test_drgn_on_the_core_writes_no_file(rig_case, vmlinux, tmp_path):
    case = rig_case("q10-q35-512")
    work, tmp = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    before = sorted(os.listdir(case.dir))
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = run_cli("drgn", case.core, "-s", vmlinux, "--no-default-symbols",
                   "-e", RELEASE_PY + TASKS_PY, env=env, cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    release, line = proc.stdout.strip().splitlines()
    assert release == case.meta["kernel_version"]
    count, init, kthreadd = line.split()
    assert int(count) > 20 and (init, kthreadd) == ("init", "kthreadd")
    assert list(work.iterdir()) == list(tmp.iterdir()) == []
    assert sorted(os.listdir(case.dir)) == before


def test_drgn_script_and_its_arguments(rig_case, vmlinux, tmp_path):
    case = rig_case("q72-pc-512")
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint(sys.argv[1:], prog['init_uts_ns'].name.sysname)\n")
    proc = run_cli("drgn", case.core, "-s", vmlinux, script, "-x", "--y", "z")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("['-x', '--y', 'z'] (char [65])\"Linux\"")
    # From stdin when it is not a terminal, as drgn does.
    proc = subprocess.run(mounts.cli_argv("drgn", case.core, "-s", vmlinux), text=True,
                          input=RELEASE_PY, capture_output=True)  # fmt: skip
    assert proc.stdout.strip() == case.meta["kernel_version"], proc.stderr


def test_drgn_shell_on_a_terminal(rig_case, vmlinux):
    """On a terminal, drgn's own interactive shell, with prog and the helpers."""
    import shlex
    import shutil

    if not shutil.which("script"):
        pytest.skip("no script(1) to give the shell a terminal")
    case = rig_case("q72-pc-512")
    cmd = shlex.join(map(str, mounts.cli_argv("drgn", case.core, "-s", vmlinux)))
    typed = "print('release', prog['init_uts_ns'].name.release.string_().decode())\n"
    typed += "print('pid1', find_task(prog, 1).comm.string_().decode())\nexit()\n"
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], input=typed, text=True,
                          capture_output=True, timeout=300)  # fmt: skip
    out = proc.stdout.replace("\r", "")
    assert "qemu-vmcore: drgn on guest kernel" in out and ">>> " in out, out
    assert f"release {case.meta['kernel_version']}" in out
    assert "pid1 init" in out


def test_drgn_user_errors_are_tracebacks_with_status_1(rig_case, vmlinux):
    proc = run_cli("drgn", rig_case("q72-pc-512").core, "-s", vmlinux, "-e", "1/0")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "qemu_vmcore" not in proc.stderr  # the user's frames only


@pytest.mark.parametrize("name", ["q10-q35-panic", "q72-pc-panic", "a10-virt-panic"])
def test_drgn_has_the_vcpus_registers(rig_case, vmlinux, name):
    """The crashed thread unwinds from the vCPU's NT_PRSTATUS (from a notes-only
    in-memory core); drgn's custom-kernel target alone has no registers."""
    case = rig_case(name)
    vmlinux = case.vmlinux  # the guest arch's (arm64 for the a* cases)
    proc = run_cli("drgn", case.core, "-s", vmlinux, "-e", PANIC_PY)
    assert proc.returncode == 0, proc.stderr
    assert "sysrq_handle_crash" in proc.stdout and "panic" in proc.stdout
    proc = run_cli("drgn", case.core, "-s", vmlinux, "--no-registers", "-e", PANIC_PY)
    assert proc.returncode == 1
    assert "registers for CPU" in proc.stderr and "were not saved" in proc.stderr


def test_guest_program_api(rig_case, vmlinux):
    import qemu_vmcore

    case = rig_case("q10-q35-panic")
    prog = qemu_vmcore.guest_program(case.core, vmlinux=vmlinux, default_symbols=False)
    release = prog["init_uts_ns"].name.release.string_().decode()
    assert release == case.meta["kernel_version"]
    frames = [f.name for f in prog.crashed_thread().stack_trace()]
    assert "sysrq_handle_crash" in frames
    # RAM the core lacks faults; it is never read as zeros.
    import drgn

    with pytest.raises(drgn.FaultError):
        prog.read(1 << 50, 8, True)


def test_drgn_without_vmlinux(rig_case):
    case = rig_case("q72-pc-512")
    proc = run_cli("drgn", case.core, "--no-default-symbols", "-e", "print(1)")
    assert_one_line_error(proc, "no debug info for the guest kernel", "-s VMLINUX",
                          case.meta["kernel_version"])  # fmt: skip


def test_drgn_with_a_missing_vmlinux(rig_case, tmp_path):
    proc = run_cli("drgn", rig_case("q72-pc-512").core, "-s", tmp_path / "vmlinux", "-e", "1")
    assert_one_line_error(proc, "vmlinux: no such file")


def test_drgn_with_another_kernels_vmlinux(rig_case, tmp_path):
    """A file that is not this kernel's vmlinux (here QEMU's own executable) is not taken."""
    case = rig_case("q72-pc-512")
    proc = run_cli("drgn", case.core, "-s", case.qemu_binary, "--no-default-symbols", "-e", "1")
    assert_one_line_error(proc, "no debug info for the guest kernel", "is not its vmlinux")


def test_drgn_needs_vmcoreinfo(rig_case):
    proc = run_cli("drgn", rig_case("q72-pc-512").core, "--no-vmcoreinfo", "-e", "1")
    assert_one_line_error(proc, "drgn needs the guest's VMCOREINFO")


def test_drgn_on_a_guest_without_a_kernel(rig_case, vmlinux):
    proc = run_cli("drgn", rig_case("q72-pc-bios").core, "-s", vmlinux, "-e", "1")
    assert_one_line_error(proc, "no VMCOREINFO found")


# -- info points at them -------------------------------------------------------------


def test_info_says_when_to_use_which(rig_case):
    case = rig_case("q72-pc-512")
    text = run_cli("info", case.core, check=True).stdout
    (line,) = [x for x in text.splitlines() if x.startswith("next ")]
    assert "extract" in line and "mount" in line and "drgn" in line
    data = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert "next" not in data


def test_sigkill_of_the_mount_leaves_no_mount(rig_case, mountpoint):
    with mounts.mounted(mount_argv(rig_case("q72-pc-512").core, mountpoint, "-q"),
                        mountpoint) as m:  # fmt: skip
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()
        assert mounts.gone(mountpoint, timeout=15)


def test_mount_json_says_when_the_file_answers(rig_case, mountpoint):
    """``mount --json``: one JSON line on stdout once the file answers (for
    scripts to wait on), with the file, format, size and the notices."""
    import json

    case = rig_case("q10-q35-512")
    argv = mount_argv(case.core, mountpoint, "--json", "-q", "--format", "kdump-zstd")
    with mounts.mounted(argv, mountpoint) as m:
        lines = m.stdout().splitlines()
        assert len(lines) == 1, lines
        data = json.loads(lines[0])
        assert data["file"] == str(m.file) and data["format"] == "kdump-zstd"
        assert data["size"] == m.file.stat().st_size
        assert data["missing"] == [] and data["map"]["kind"] == "flatview"
        assert data["vmcoreinfo"]["verified"]
        assert m.end() == 0
    assert m.stderr() == ""  # -q: nothing else said
