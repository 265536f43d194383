"""``--pid``: a live QEMU read through /proc/PID/mem, frozen with ptrace, left as found.

One QEMU (256 MiB q35 guest on QEMU 10.0, TCG) is booted for the module,
paused with QMP ``stop``, and QMP's dump of it is the reference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import live
from support.runs import assert_one_line_error, run_cli
from support.vmcore_compare import compare_vmcores, note_segment, ram_loads

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def qemu(tmp_path_factory):
    with live.live_qemu(tmp_path_factory.mktemp("live")) as q:
        yield q


def _untraced_and_as_before(pid: int, before: dict[int, str]) -> None:
    assert live.tracer_pid(pid) == 0
    after = live.thread_states(pid)
    assert set(after) == set(before)
    # Sleeping or running threads stay so; none is left in a tracing stop.
    assert "t" not in after.values(), after
    stopped = {t for t, s in before.items() if s == "T"}
    assert {t for t, s in after.items() if s == "T"} == stopped


def test_extract_pid_equals_qmp(qemu, tmp_path):
    before = live.thread_states(qemu.pid)
    out = tmp_path / "vmcore"
    proc = run_cli("extract", "--pid", str(qemu.pid), "-o", out, "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["missing"] == [] and data["accelerator"] == "tcg"
    cmp = compare_vmcores(out, qemu.reference)
    assert cmp.equal, cmp
    assert note_segment(out) == note_segment(qemu.reference)
    _untraced_and_as_before(qemu.pid, before)
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_info_and_dmesg_pid(qemu):
    proc = run_cli("info", "--pid", str(qemu.pid), "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["qemu"]["pid"] == qemu.pid
    assert data["vcpus"] == 2
    ref = [(x.paddr, x.memsz) for x in ram_loads(qemu.reference)]
    assert [(r["gpa"], r["size"]) for r in data["ranges"]] == ref
    proc = run_cli("dmesg", "--pid", str(qemu.pid), check=True)
    assert f"RIG-MARKER {qemu.marker}" in proc.stdout
    assert live.tracer_pid(qemu.pid) == 0
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_kdump_format_from_pid(qemu, tmp_path):
    out = tmp_path / "vmcore.kdump"
    run_cli(
        "extract", "--pid", str(qemu.pid), "-o", out, "--format", "kdump-zstd", "-q", check=True
    )
    assert out.read_bytes()[:8] == b"KDUMP   "


def test_sigstopped_qemu_stays_stopped(qemu, tmp_path):
    """A QEMU stopped with SIGSTOP (its QMP cannot answer) is read all the same
    and left stopped."""
    os.kill(qemu.pid, signal.SIGSTOP)
    try:
        live.wait_stopped(qemu.pid)
        before = live.thread_states(qemu.pid)
        out = tmp_path / "vmcore"
        run_cli("extract", "--pid", str(qemu.pid), "-o", out, "-q", check=True)
        assert compare_vmcores(out, qemu.reference).equal
        assert note_segment(out) == note_segment(qemu.reference)
        time.sleep(0.2)
        assert set(live.thread_states(qemu.pid).values()) == {"T"}
        _untraced_and_as_before(qemu.pid, before)
    finally:
        os.kill(qemu.pid, signal.SIGCONT)
    assert qemu.qmp.execute("query-status")["status"] == "paused"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_while_frozen_leaves_qemu_untouched(qemu, tmp_path, sig):
    """SIGTERM or Ctrl-C to extract while QEMU is frozen: exit 128+N, no output,
    QEMU as it was; SIGKILLed, the kernel detaches QEMU all the same."""
    before = live.thread_states(qemu.pid)
    out = tmp_path / "vmcore"
    cmd = [sys.executable, "-m", "qemu_vmcore", "extract", "--pid", str(qemu.pid), "-o", out]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while live.tracer_pid(qemu.pid) != p.pid and p.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode == 0:
        pytest.skip("extract finished before SIGTERM arrived")
    assert p.returncode == (-9 if sig == signal.SIGKILL else 128 + sig), err
    assert not out.exists()
    time.sleep(0.1)
    _untraced_and_as_before(qemu.pid, before)
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_ctrl_c_mid_copy_thaws(qemu, tmp_path):
    """An interruption inside the copy (the library path) thaws QEMU, leaves no file."""
    from qemu_vmcore.extract import prepare, write
    from qemu_vmcore.source import open_qemu_process

    before = live.thread_states(qemu.pid)
    out = tmp_path / "vmcore"

    def boom(n: int) -> None:
        assert live.tracer_pid(qemu.pid) == os.getpid()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with open_qemu_process(qemu.pid) as qc:
            write(prepare(qc, out), boom)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    _untraced_and_as_before(qemu.pid, before)


# -- errors, one line each -------------------------------------------------------


def test_no_such_process(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()  # reaped: its pid is free
    proc = run_cli("extract", "--pid", str(p.pid), "-o", tmp_path / "v")
    assert_one_line_error(proc, f"no such process: {p.pid}")
    assert proc.returncode == 2


def test_not_a_qemu(tmp_path):
    p = subprocess.Popen(["sleep", "60"])
    try:
        proc = run_cli("info", "--pid", str(p.pid))
        assert_one_line_error(proc, f"process {p.pid} is", "sleep", "not QEMU")
        assert live.proc_state(p.pid) in "SR"
    finally:
        p.kill()
        p.wait()


def test_not_permitted(qemu):
    """Not root: the error says so (this kernel has no Yama; see the unit tests).
    The rig's Python is not executable by nobody: the library runs in a fork."""
    import pwd

    import qemu_vmcore.host.live  # noqa: F401 -- imported here: nobody cannot read the stdlib
    from qemu_vmcore.errors import VmcoreError
    from qemu_vmcore.source import open_qemu_process

    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                open_qemu_process(qemu.pid).close()
                msg = "opened"
            except VmcoreError as e:
                msg = f"{type(e).__name__}: {e.message} (hint: {e.hint})"
            except BaseException as e:
                msg = repr(e)
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(child, 0)
    assert msg.startswith("ProcessError: cannot "), msg
    assert f"process {qemu.pid}: permission denied" in msg and "run as root" in msg, msg
    assert live.tracer_pid(qemu.pid) == 0


_SEIZE = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
assert libc.ptrace(0x4206, int(sys.argv[1]), None, None) == 0
print("seized", flush=True)
time.sleep(600)
"""


def test_already_traced(qemu, tmp_path):
    tracer = subprocess.Popen([sys.executable, "-c", _SEIZE, str(qemu.pid)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert tracer.stdout.readline().strip() == "seized"
        proc = run_cli("extract", "--pid", str(qemu.pid), "-o", tmp_path / "v")
        assert_one_line_error(proc, f"already traced by process {tracer.pid}")
        assert not (tmp_path / "v").exists()
    finally:
        tracer.kill()
        tracer.wait()
    assert live.tracer_pid(qemu.pid) == 0
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_exit_mid_read_leaves_no_output(tmp_path):
    """QEMU killed while its RAM is copied: one error line, no partial vmcore."""
    from qemu_vmcore.errors import ProcessError
    from qemu_vmcore.extract import prepare, write
    from qemu_vmcore.source import open_qemu_process

    with live.live_qemu(tmp_path / "q", reference=False) as q:
        out = tmp_path / "vmcore"
        killed = []

        def kill_it(n: int) -> None:
            if not killed:
                os.kill(q.pid, signal.SIGKILL)
                killed.append(n)
                deadline = time.monotonic() + 10
                while live.proc_state(q.pid) not in "ZX":
                    assert time.monotonic() < deadline
                    time.sleep(0.01)

        with pytest.raises(ProcessError, match=f"process {q.pid} exited while it was read"):
            with open_qemu_process(q.pid) as qc:
                write(prepare(qc, out), kill_it)
        assert killed and not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == ["q"]


def test_gdb_p_writes_the_same_pages(qemu, tmp_path):
    """`gdb -p PID`, `source $(qemu-vmcore gdb-script)`, `dump-guest-memory FILE`."""
    import shutil

    if shutil.which("gdb") is None:
        pytest.skip("no gdb")
    script = run_cli("gdb-script", check=True).stdout.strip()
    out = tmp_path / "vmcore"
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DEBUGINFOD_URLS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    argv = ["gdb", "-batch", "-nx", "-p", str(qemu.pid), "-ex", f"source {script}",
            "-ex", f"dump-guest-memory -q {out}"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600)  # fmt: skip
    assert "Traceback" not in proc.stderr and out.exists(), proc.stderr
    assert compare_vmcores(out, qemu.reference).equal
    assert note_segment(out) == note_segment(qemu.reference)
    assert live.tracer_pid(qemu.pid) == 0
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_replaced_executable(tmp_path):
    """QEMU's binary deleted on disk since it started: read through /proc/PID/exe."""
    import shutil
    from dataclasses import replace

    from support import rig

    spec = live.LIVE_SPEC
    copy = tmp_path / "qemu-system-x86_64"
    shutil.copy2(rig.qemu_binary(spec.qemu, spec.arch), copy)
    real = rig.qemu_binary
    try:
        rig.qemu_binary = lambda version, arch="x86_64": copy  # the rig's argv uses it
        cm = live.live_qemu(tmp_path / "q", replace(spec, fill_mib=0))
        q = cm.__enter__()
    finally:
        rig.qemu_binary = real
    try:
        copy.unlink()
        assert os.readlink(f"/proc/{q.pid}/exe").endswith(" (deleted)")
        out = tmp_path / "vmcore"
        proc = run_cli("extract", "--pid", str(q.pid), "-o", out, "--json", check=True)
        assert json.loads(proc.stdout)["missing"] == []
        assert compare_vmcores(out, q.reference).equal
        info = json.loads(run_cli("info", "--pid", str(q.pid), "--json", check=True).stdout)
        assert info["qemu"]["version"]
    finally:
        cm.__exit__(None, None, None)


# -- the zero-copy front ends on a live QEMU ---------------------------------------------


def test_drgn_pid_reads_the_guest_kernel(qemu):
    """``qemu-vmcore drgn --pid``: drgn on the guest of a live QEMU, no file
    written; QEMU is frozen while drgn runs and left as it was after."""
    from support import rig

    before = live.thread_states(qemu.pid)
    code = (
        "print(prog['init_uts_ns'].name.release.string_().decode())\n"
        "from drgn.helpers.linux.pid import find_task\n"
        "print(find_task(prog, 1).comm.string_().decode())\n"
    )
    proc = run_cli("drgn", "--pid", str(qemu.pid), "-s", rig.vmlinux(), "--no-default-symbols",
                   "-e", code)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    release, init = proc.stdout.strip().splitlines()[-2:]
    assert release.startswith("6.1.0-") and init == "init"
    _untraced_and_as_before(qemu.pid, before)
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_mount_pid_serves_extracts_file(qemu, tmp_path):
    """``qemu-vmcore mount --pid``: the file served is ``extract --pid``'s, byte
    for byte; QEMU stays frozen while it is mounted and is left as it was."""
    from support import mounts

    reason = mounts.fuse_usable()
    if reason is not None:
        pytest.skip(reason)
    before = live.thread_states(qemu.pid)
    file = tmp_path / "vmcore"
    run_cli("extract", "--pid", str(qemu.pid), "-o", file, "-q", check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = mounts.cli_argv("mount", "--pid", str(qemu.pid), mnt)
    with mounts.mounted(argv, mnt) as m:
        assert live.tracer_pid(qemu.pid) != 0  # frozen while served
        assert subprocess.run(["cmp", m.file, file]).returncode == 0
        assert m.end() == 0
    _untraced_and_as_before(qemu.pid, before)
    assert qemu.qmp.execute("query-status")["status"] == "paused"


def test_an_aarch64_guest_live(tmp_path):
    """``extract --pid`` of a live qemu-system-aarch64 (virt, -cpu max, TCG)
    equals QMP's dump of it, pages and notes (NT_PRSTATUS, NT_PRFPREG,
    NT_ARM_SVE per vCPU, VMCOREINFO); ``info --pid`` names the arch."""
    from support import rig

    spec = rig.CaseSpec("live-a10-virt-256", qemu="10.0", machine="virt", arch="aarch64",
                        mem_mib=256, smp=2, fill_mib=16)  # fmt: skip
    with live.live_qemu(tmp_path, spec) as q:
        before = live.thread_states(q.pid)
        out = tmp_path / "vmcore"
        run_cli("extract", "--pid", str(q.pid), "-o", out, "-q", check=True)
        cmp = compare_vmcores(out, q.reference)
        assert cmp.equal, cmp
        assert note_segment(out) == note_segment(q.reference)
        info = json.loads(run_cli("info", "--pid", str(q.pid), "--json", check=True).stdout)
        assert info["arch"] == "aarch64" and info["vcpus"] == 2
        _untraced_and_as_before(q.pid, before)
        assert q.qmp.execute("query-status")["status"] == "paused"
