"""End to end: the ``dump-guest-memory`` gdb command against ``qemu-vmcore extract``.

gdb runs as ``gdb -batch -nx`` with its own Python (Debian's /usr/bin/python3,
which does not see our virtualenv), sourcing the script whose path
``qemu-vmcore gdb-script`` prints. Its vmcore must be byte for byte the CLI's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from support import rig
from support.runs import assert_one_line_error, data_runs, run_cli

pytestmark = [
    pytest.mark.rig,
    pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed"),
]

REFERENCE_CASES = ["q72-pc-512", "q10-q35-512", "q10-q35-4608"]
ROW = re.compile(r"^([0-9a-f]{16}) ([0-9a-f]{16}) ([0-9a-f]{16}) (added|joined)\s+(\d+)$")


@pytest.fixture(scope="module")
def script() -> Path:
    path = Path(run_cli("gdb-script", check=True).stdout.strip())
    assert path.is_file() and path.name == "dump_guest_memory.py"
    return path


def gdb_env() -> dict[str, str]:
    """No Python variables: gdb's Python must find the package by itself."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DEBUGINFOD_URLS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_gdb(*commands: str, target: list[str], timeout: int = 600):
    """``gdb -batch -nx TARGET -ex COMMAND...``; the CompletedProcess."""
    argv = ["gdb", "-batch", "-nx", *target]
    for c in commands:
        argv += ["-ex", c]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=gdb_env(),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def on_core(case) -> list[str]:
    return ["-ex", f"file {case.qemu_binary}", "-ex", f"core-file {case.core}"]


def command_errors(proc) -> list[str]:
    """The lines our command printed as errors (gdb adds its own warnings around them)."""
    return [ln for ln in proc.stderr.splitlines() if ln.startswith(("dump-guest-memory", "usage"))]


def assert_one_command_error(proc, *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = command_errors(proc)
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def assert_same_file(a: Path, b: Path) -> None:
    """Byte-identical (reading only where either file has data) and about as sparse."""
    sa, sb = a.stat(), b.stat()
    assert sa.st_size == sb.st_size
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, end in sorted(data_runs(a) + data_runs(b)):
            for off in range(start, end, 16 << 20):
                n = min(16 << 20, end - off)
                assert os.pread(fa.fileno(), n, off) == os.pread(fb.fileno(), n, off), off
    assert abs(sa.st_blocks - sb.st_blocks) * 512 <= max(sb.st_blocks * 512 // 100, 1 << 20)


def table_ranges(stdout: str) -> list[tuple[int, int, int]]:
    """The guest RAM table the command printed, joined as its messages say: (gpa, end, hva)."""
    lines = stdout.splitlines()
    at = lines.index("guest RAM blocks:")
    assert lines[at + 1].split() == ["target_start", "target_end", "host_addr", "message", "count"]
    assert set(lines[at + 2].replace(" ", "")) == {"-"}
    out: list[list[int]] = []
    for line in lines[at + 3 :]:
        m = ROW.match(line)
        if m is None:
            break
        start, end, hva = (int(m.group(k), 16) for k in (1, 2, 3))
        if m.group(4) == "added":
            out.append([start, end, hva])
        else:
            assert out and out[-1][1] == start and out[-1][2] + (start - out[-1][0]) == hva
            out[-1][1] = end
        assert int(m.group(5)) == len(out)
    return [tuple(r) for r in out]


@pytest.fixture(scope="module")
def cli_vmcore(rig_case, tmp_path_factory):
    """``cli_vmcore(name)``: the vmcore ``qemu-vmcore extract`` (drgn) writes, made once."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp(name) / "vmcore"
            run_cli("extract", rig_case(name).core, "-o", out, "--quiet", check=True)
            made[name] = out
        return made[name]

    yield get
    for path in made.values():
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_gdb_command_writes_the_cli_vmcore(rig_case, cli_vmcore, script, tmp_path, name):
    case = rig_case(name)
    out = tmp_path / "vmcore"
    proc = run_gdb(f"source {script}", f"dump-guest-memory {out} X86_64", target=on_core(case))
    assert command_errors(proc) == [] and "Traceback" not in proc.stderr, proc.stderr
    assert out.exists(), proc.stdout + proc.stderr
    assert_same_file(out, cli_vmcore(name))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["vmcore"]  # no temporary file left

    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert table_ranges(proc.stdout) == [(r["gpa"], r["end"], r["hva"]) for r in info["ranges"]]
    assert re.search(r"^extracting: 100% ", proc.stdout, re.M)
    assert f"wrote {out}: {len(info['ranges'])} ranges" in proc.stdout
    out.unlink()


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_extract_backend_gdb_equals_drgn(rig_case, cli_vmcore, tmp_path, name):
    case = rig_case(name)
    out = tmp_path / "vmcore"
    proc = run_cli("extract", "--backend", "gdb", case.core, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert_same_file(out, cli_vmcore(name))
    result = json.loads(proc.stdout)
    assert result["output"] == str(out) and result["missing"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["vmcore"]
    out.unlink()
    # The same report as drgn's, but for the time taken.
    drgn = json.loads(run_cli("extract", case.core, "-o", out, "--json", check=True).stdout)
    assert {**result, "seconds": 0} == {**drgn, "seconds": 0}
    out.unlink()


def test_extract_backend_gdb_odd_output_name(rig_case, cli_vmcore, tmp_path):
    """File names reach gdb's command parser intact: spaces, quotes, backslashes."""
    case = rig_case("q72-pc-512")
    out = tmp_path / "a dir" / 'it\'s "the" \\vmcore'
    out.parent.mkdir()
    run_cli("extract", "--backend", "gdb", case.core, "-o", out, "-q", check=True)
    assert_same_file(out, cli_vmcore("q72-pc-512"))
    out.unlink()


@pytest.fixture(scope="module")
def stripped_core(tmp_path_factory) -> tuple[Path, Path]:
    """A core of a QEMU 7.2 stripped of its debug info (it never ran: -S); (core, stripped exe)."""
    d = tmp_path_factory.mktemp("stripped")
    exe = d / "qemu-system-x86_64"
    subprocess.run(["strip", "-o", exe, rig.qemu_binary("7.2")], check=True)
    with _qemu(exe, d, core=True) as proc:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=60)
    if not (d / "core").exists():
        pytest.skip("no core written (core_pattern is not a plain file name here)")
    return d / "core", exe


def test_qemu_and_debug_file_options_through_gdb(stripped_core, tmp_path):
    core, exe = stripped_core
    unstripped = rig.qemu_binary("7.2")
    for option in ("--qemu", "--debug-file"):
        drgn, gdb = tmp_path / f"drgn{option}", tmp_path / f"gdb{option}"
        run_cli("extract", core, "-o", drgn, option, unstripped, "-q", check=True)
        run_cli(
            "extract", "--backend", "gdb", core, "-o", gdb, option, unstripped, "-q", check=True
        )
        assert_same_file(gdb, drgn)
    proc = run_cli("extract", "--backend", "gdb", core, "-o", tmp_path / "v")
    assert_one_line_error(proc, "no debug info found", str(exe), "build-id", "dbgsym")
    other = rig.qemu_binary("10.0")
    proc = run_cli("extract", "--backend", "gdb", core, "-o", tmp_path / "v", "--qemu", other)
    assert_one_line_error(proc, str(other), "does not match the core")
    assert not (tmp_path / "v").exists()


def test_dump_guest_core_off_same_error_everywhere(rig_case, script, tmp_path):
    case = rig_case("q72-pc-nodump")
    out = tmp_path / "vmcore"
    drgn = run_cli("extract", case.core, "-o", out)
    gdb = run_cli("extract", "--backend", "gdb", case.core, "-o", out)
    assert_one_line_error(drgn, "not in the core", "dump-guest-core=off")
    assert_one_line_error(gdb, "not in the core", "dump-guest-core=off")
    assert (gdb.returncode, gdb.stderr) == (drgn.returncode, drgn.stderr)

    proc = run_gdb(f"source {script}", f"dump-guest-memory {out}", target=on_core(case))
    line = assert_one_command_error(proc)
    assert line == "dump-guest-memory: " + drgn.stderr.strip().removeprefix("error: ")
    assert "guest RAM blocks:" in proc.stdout  # the table comes first, as in QEMU's script
    assert list(tmp_path.iterdir()) == []

    # --allow-missing passes through, with the same warnings.
    drgn = run_cli("extract", case.core, "-o", out, "--allow-missing", "-q")
    out2 = tmp_path / "vmcore2"
    gdb = run_cli("extract", "--backend", "gdb", case.core, "-o", out2, "--allow-missing", "-q")
    assert gdb.returncode == drgn.returncode == 0
    assert gdb.stderr.replace(str(out2), str(out)) == drgn.stderr
    assert_same_file(out2, out)


def test_arch_argument(rig_case, script, tmp_path):
    case = rig_case("q72-pc-512")  # a long-mode guest: its dump is X86_64
    out = tmp_path / "vmcore"
    proc = run_gdb(
        f"source {script}",
        f"dump-guest-memory -q {out} 386",
        f"dump-guest-memory -q {out} aarch64-le",
        f"dump-guest-memory -q {out} ppc64-le",
        f"dump-guest-memory -q {out} sparc",
        target=on_core(case),
    )
    assert "Traceback" not in proc.stderr
    wrong, arm, other, unknown = command_errors(proc)
    assert "ARCH 386 does not match this guest" in wrong and "X86_64" in wrong
    assert "ARCH aarch64-le does not match this guest: it is an x86 guest" in arm
    assert "ARCH ppc64-le is not supported" in other and "aarch64" in other
    assert "unknown ARCH 'sparc'" in unknown
    assert list(tmp_path.iterdir()) == []

    proc = run_gdb(
        f"source {script}",
        f"dump-guest-memory --quiet {out}",  # ARCH is optional
        f"dump-guest-memory --quiet --force {out} x86_64",
        target=on_core(case),
    )
    assert command_errors(proc) == [] and out.exists(), proc.stderr
    for word in ("guest RAM blocks", "extracting", "wrote"):  # --quiet: none of these
        assert word not in proc.stdout
    out.unlink()


def test_usage_errors(rig_case, script, tmp_path):
    case = rig_case("q72-pc-512")
    proc = run_gdb(
        f"source {script}",
        "dump-guest-memory",
        f"dump-guest-memory --bogus {tmp_path / 'x'}",
        f"dump-guest-memory {tmp_path / 'a'} X86_64 extra",
        "help dump-guest-memory",
        target=on_core(case),
    )
    assert "Traceback" not in proc.stderr
    errors = command_errors(proc)
    assert len(errors) == 3, proc.stderr
    assert all(e.startswith("usage: dump-guest-memory ") and "FILE [ARCH]" in e for e in errors)
    assert "FILE" in errors[0] and "--bogus" in errors[1] and "extra" in errors[2]
    assert "qemu-vmcore" in proc.stdout and "ARCH" in proc.stdout  # the help text
    assert list(tmp_path.iterdir()) == []


def test_output_errors_are_one_line(rig_case, script, tmp_path):
    case = rig_case("q72-pc-512")
    out = tmp_path / "vmcore"
    out.write_bytes(b"keep me")
    proc = run_gdb(f"source {script}", f"dump-guest-memory {out}", target=on_core(case))
    assert_one_command_error(proc, "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    proc = run_gdb(
        f"source {script}", f"dump-guest-memory {tmp_path}/no/such/dir/vmcore", target=on_core(case)
    )
    assert_one_command_error(proc, "no such directory")


def test_no_core_loaded(script, tmp_path):
    proc = run_gdb(f"source {script}", f"dump-guest-memory {tmp_path / 'v'}", target=[])
    assert_one_command_error(proc, "no core file", "core-file")


def test_package_found_without_the_virtualenv(rig_case, script):
    """gdb's Python cannot import drgn (not installed for it) yet loads our package."""
    case = rig_case("q72-pc-512")
    proc = run_gdb(
        "python import importlib.util; print('drgn:', importlib.util.find_spec('drgn'))",
        f"source {script}",
        "python import qemu_vmcore; print('package:', qemu_vmcore.__file__)",
        target=on_core(case),
    )
    assert "drgn: None" in proc.stdout, "gdb's Python sees the virtualenv; test is moot"
    assert f"package: {script.parents[2] / '__init__.py'}" in proc.stdout


@contextlib.contextmanager
def _qemu(exe: Path, cwd: Path, *, core: bool):
    """A small QEMU, paused (-S) so its guest RAM is never touched; killed on exit."""
    qmp = cwd / "qmp.sock"
    limit = resource.RLIM_INFINITY if core else 0
    argv = [exe, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-machine", "pc",
            "-m", "64", "-display", "none", "-nodefaults", "-S",
            "-qmp", f"unix:{qmp},server=on,wait=off"]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (limit, limit)),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not qmp.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qmp.exists(), "QEMU did not start"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture
def live_qemu(tmp_path):
    """A small QEMU 7.2, paused; its pid."""
    with _qemu(rig.qemu_binary("7.2"), tmp_path, core=False) as proc:
        yield proc.pid


def test_live_process_under_gdb_p(live_qemu, script, tmp_path):
    """Under gdb -p the command reads the live QEMU (gdb holds it stopped), and
    gdb leaves it running; the file is extract --pid's, byte for byte."""
    out = tmp_path / "out" / "vmcore"
    out.parent.mkdir()
    proc = run_gdb(
        f"source {script}", f"dump-guest-memory -q {out}", target=["-p", str(live_qemu)],
        timeout=120,
    )  # fmt: skip
    if "ptrace: Operation not permitted" in proc.stderr:
        pytest.skip("ptrace attach is not permitted here")
    assert command_errors(proc) == [], proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    os.kill(live_qemu, 0)  # still alive: gdb detached and left QEMU running
    again = tmp_path / "again"
    run_cli("extract", "--pid", str(live_qemu), "-o", again, "-q", check=True)
    assert out.read_bytes() == again.read_bytes()


def test_escapes_in_paths_print_escaped_from_both_front_ends(rig_case, script, tmp_path):
    """The summary and the error lines come from one place (report.py) and are
    terminal-safe there: an output path holding an escape sequence reaches
    neither gdb's terminal nor the CLI's stderr raw."""
    case = rig_case("q72-pc-512")
    out = tmp_path / "v\x1b[31m"
    shown = f"{tmp_path}/v\\x1b[31m"
    proc = run_gdb(f"source {script}", f"dump-guest-memory {out}", target=on_core(case))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr
    assert f"wrote {shown}: " in proc.stdout
    proc = run_gdb(f"source {script}", f"dump-guest-memory {out}", target=on_core(case))
    line = assert_one_command_error(proc, shown, "already exists")
    assert "\x1b" not in line
    out.unlink()
    cli = run_cli("extract", case.core, "-o", out)
    assert cli.returncode == 0 and "\x1b" not in cli.stderr
    assert f"wrote {shown}: " in cli.stderr
    cli = run_cli("extract", case.core, "-o", out)
    assert_one_line_error(cli, shown, "already exists")
    assert "\x1b" not in cli.stderr
