"""The bad-input matrix: each row is an input and exactly what must happen.

Every refusing row must give: the exit status in the table, exactly one
stderr line ``error: ...`` naming the problem (no traceback), nothing on
stdout, and nothing left in the output directory (neither the vmcore nor a
temporary file). ``info`` refuses the same inputs as ``extract`` where the
row says so. Inputs are real: QEMU cores from the rig (tests/rig), cut,
recompressed or pointed at the wrong QEMU build; a real ``sleep`` core; a
real ELF executable; a real tmpfs that fills up.

Rows that corrupt QEMU's own structures inside a real core are in
test_corrupt_qemu.py; the hostile guest is in test_hostile_guest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from support import rig, synth
from support.runs import (
    assert_one_line_error,
    bytes_being_written,
    compressed_core,
    run_cli,
    sparse_copy,
)
from support.vmcore_compare import compare_vmcores

pytestmark = pytest.mark.rig

EXIT_INPUT = 2  # a problem with the core or the QEMU build (cli: exit status)
EXIT_OUTPUT = 3  # a problem with the output path or file system


class Inputs:
    """What the rows build their inputs from; everything is made on first use."""

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.request, self.tmp = request, tmp

    def case(self, name: str) -> rig.Case:
        return self.request.getfixturevalue("rig_case")(name)

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)


@dataclass(frozen=True)
class Row:
    """One refusing row.

    :param make: builds the input; returns the arguments after the command
        (the core and any options) and the strings the error line must name.
    :param commands: the commands that must refuse it.
    """

    id: str
    make: Callable[[Inputs], tuple[list[object], list[str]]]
    exit: int = EXIT_INPUT
    commands: tuple[str, ...] = ("info", "extract")


def _missing(i: Inputs):
    return [i.tmp / "no-such-core"], ["no-such-core", "no such file"]


def _directory(i: Inputs):
    (i.tmp / "adir").mkdir()
    return [i.tmp / "adir"], ["adir", "is a directory"]


def _empty(i: Inputs):
    (i.tmp / "empty").write_bytes(b"")
    return [i.tmp / "empty"], ["empty", "not an ELF file"]


def _random(i: Inputs):
    (i.tmp / "random").write_bytes(synth.pattern(1 << 20, seed=3))
    return [i.tmp / "random"], ["random", "not an ELF file"]


def _executable(i: Inputs):
    exe = rig.qemu_binary("7.2")  # an ELF file, and QEMU's at that, but no core
    return [exe], [str(exe), "executable", "not a core file"]


def _sleep_core(i: Inputs):
    core, pid = i.fixture("sleep_core")
    return [core], [str(core), "sleep", f"pid {pid}", "not of QEMU", "--qemu"]


def _truncated(fraction: float):
    def make(i: Inputs):
        core = i.case("q72-pc-512").core
        cut = i.tmp / f"core-{int(fraction * 100)}"
        sparse_copy(core, cut, int(core.stat().st_size * fraction))
        return [cut], [str(cut), "truncated core"]

    make.__name__ = f"truncated_{int(fraction * 100)}"
    return make


def _other_qemu_build(i: Inputs):
    other = rig.qemu_binary("10.0")
    core = i.case("q72-pc-512").core
    return [core, "--qemu", other], [str(other), "does not match the core's", "exact QEMU build"]


def _build_id_mismatch(i: Inputs):
    """The right QEMU 7.2 code and debug info, but another build-id."""
    patched = i.fixture("rebuilt_qemu")
    core = i.case("q72-pc-512").core
    return [core, "--debug-file", patched], [str(patched), "build-id", "does not match the core's"]


def _no_debug_info(i: Inputs):
    core, exe, _ = i.fixture("stripped_core")
    return [core], ["no debug info found", str(exe), "build-id", "dbgsym", "--qemu"]


def _dump_guest_core_off(i: Inputs):
    core = i.case("q72-pc-nodump").core
    return [core], ["not in the core", "dump-guest-core=off", "0x0-0x20000000", "--allow-missing"]


def _zstd_corrupt_mid_stream(i: Inputs):
    data = bytearray(compressed_core(i.case("q72-pc-512"), "zstd").read_bytes())
    for k in range(64):  # a run of flipped bytes in the middle of the stream
        data[len(data) // 2 + k] ^= 0xA5
    bad = i.tmp / "core.zst"
    bad.write_bytes(data)
    return [bad], [str(bad), "corrupt zstd stream"]


def _zstd_cut(i: Inputs):
    core = compressed_core(i.case("q72-pc-512"), "zstd")
    cut = i.tmp / "cut.zst"
    cut.write_bytes(core.read_bytes()[: core.stat().st_size // 3])
    return [cut], [str(cut), "corrupt zstd stream", "ended before"]


ROWS = [
    Row("missing path", _missing),
    Row("directory", _directory),
    Row("empty file", _empty),
    Row("random bytes", _random),
    Row("ELF executable", _executable),
    Row("core of sleep", _sleep_core),
    # A cut core: QEMU's state may still be readable, guest RAM is not all
    # there; either way extract refuses and names the truncation.
    Row("truncated 10%", _truncated(0.10), commands=("extract",)),
    Row("truncated 60%", _truncated(0.60), commands=("extract",)),
    Row("truncated 99%", _truncated(0.99), commands=("extract",)),
    Row("--qemu another QEMU build", _other_qemu_build),
    Row("build-id mismatch", _build_id_mismatch),
    Row("no debug info", _no_debug_info),
    Row("dump-guest-core=off", _dump_guest_core_off, commands=("extract",)),
    Row("zstd corrupt mid-stream", _zstd_corrupt_mid_stream),
    Row("zstd cut short", _zstd_cut),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_refused(row: Row, request, tmp_path):
    inputs_dir, out_dir, work = tmp_path / "in", tmp_path / "out", tmp_path / "work"
    for d in (inputs_dir, out_dir, work):
        d.mkdir()
    args, needles = row.make(Inputs(request, inputs_dir))
    before = sorted(inputs_dir.iterdir())
    for command in row.commands:
        extra = ["-o", out_dir / "vmcore"] if command == "extract" else []
        proc = run_cli(command, *args, *extra, "--tmpdir", work)
        assert_one_line_error(proc, *needles)
        assert proc.returncode == row.exit, (command, proc.stderr)
        assert proc.stdout == ""
        assert list(out_dir.iterdir()) == [], command
        assert list(work.iterdir()) == [], command  # no decompressed copy left either
    assert sorted(inputs_dir.iterdir()) == before  # inputs are never written


# -- the output side --------------------------------------------------------------------


def test_output_exists(rig_case, tmp_path):
    out = tmp_path / "vmcore"
    out.write_bytes(b"keep me")
    proc = run_cli("extract", rig_case("q72-pc-512").core, "-o", out)
    assert_one_line_error(proc, str(out), "already exists", "hint: pass --force")
    assert proc.returncode == EXIT_OUTPUT
    assert out.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [out]
    # --force replaces it, with a new file (mode 0600) rather than in place.
    run_cli("extract", rig_case("q72-pc-512").core, "-o", out, "--force", "-q", check=True)
    assert out.stat().st_size > 512 << 20 and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_output_directory_not_writable(rig_case, mount_tmpfs):
    ro = mount_tmpfs("ro,size=1m")
    proc = run_cli("extract", rig_case("q72-pc-512").core, "-o", ro / "vmcore")
    assert_one_line_error(proc, str(ro), "not writable")
    assert proc.returncode == EXIT_OUTPUT


def test_file_system_full(rig_case, mount_tmpfs):
    small = mount_tmpfs("size=32m")
    proc = run_cli("extract", rig_case("q72-pc-512").core, "-o", small / "vmcore")
    assert_one_line_error(proc, "No space left on device")
    assert proc.returncode == EXIT_OUTPUT
    assert list(small.iterdir()) == []  # neither the vmcore nor a temporary file


def test_symlink_at_the_output_is_replaced_with_force(rig_case, tmp_path):
    """--force replaces a symlink; the file it pointed to is not written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "vmcore"
    out.symlink_to(victim)
    run_cli("extract", rig_case("q72-pc-512").core, "-o", out, "--force", "-q", check=True)
    assert victim.read_bytes() == b"precious"
    assert not out.is_symlink() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim", "vmcore"]


def _digest(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB pieces."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _start_extract(core: Path, out: Path, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "qemu_vmcore", "extract", core, "-o", out, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As a terminal's Ctrl-C or Ctrl-\ finds it: a shell starts background
        # jobs (and so, maybe, this test run) with SIGINT and SIGQUIT ignored,
        # and we then rightly leave them ignored.
        preexec_fn=_default_interrupts,
    )


def _default_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("sig", "status"),
    [
        (signal.SIGINT, 130),
        (signal.SIGTERM, 143),
        (signal.SIGHUP, 129),
        (signal.SIGQUIT, 131),
        (signal.SIGUSR1, 138),
        (signal.SIGALRM, 142),
    ],
)
def test_signal_mid_write_leaves_nothing(rig_case, tmp_path, sig, status):
    """Interrupted while the output is being written: nothing is left, and the
    exit status is 128 + the signal's number, with one line saying so.

    kdump-zlib of a guest with 256 MiB of random data takes seconds to
    compress, so the signal lands mid-write.
    """
    core = rig_case("q10-q35-512").core
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start_extract(core, out_dir / "vmcore", "--format", "kdump-zlib")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if bytes_being_written(proc.pid, out_dir) > 4 << 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the extraction ended before it could be interrupted"
    assert list(out_dir.iterdir()) == []  # the output has no name yet
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert list(out_dir.iterdir()) == []
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stderr=err.decode())
    assert_one_line_error(done, sig.name if sig != signal.SIGINT else "interrupted")


@pytest.mark.parametrize(("case", "fmt"), [("q72-pc-512", "elf"), ("q10-q35-512", "kdump-zlib")])
def test_sigkill_at_any_moment_leaves_nothing(rig_case, tmp_path, case, fmt):
    """SIGKILL, which no handler sees, at 20 moments spread over a run: the
    output directory and --tmpdir are empty after each, or hold exactly the
    finished vmcore when the kill came too late."""
    core = rig_case(case).core
    out_dir, work = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir()
    work.mkdir()
    t0 = time.monotonic()
    run_cli("extract", core, "-o", out_dir / "vmcore", "--format", fmt, "-q", check=True)
    full = time.monotonic() - t0
    whole = _digest(out_dir / "vmcore")
    (out_dir / "vmcore").unlink()
    rng = random.Random(f"{case}-{fmt}")  # the same moments on every run
    for i in range(20):
        at = full * (i + rng.random()) / 20
        proc = _start_extract(core, out_dir / "vmcore", "--format", fmt, "--tmpdir", work)
        time.sleep(at)
        proc.kill()
        proc.communicate(timeout=60)
        left = sorted(p.name for p in out_dir.iterdir())
        assert list(work.iterdir()) == [], f"kill at {at:.2f}s"
        if left == ["vmcore"]:
            # The kill came after the file got its name (maybe before the
            # exit): it must then be the whole vmcore.
            assert _digest(out_dir / "vmcore") == whole, f"kill at {at:.2f}s: a partial vmcore"
            (out_dir / "vmcore").unlink()
        else:
            assert left == [], f"kill at {at:.2f}s left {left}"


# -- rows that write, with --allow-missing ----------------------------------------------


STATE_GONE = "QEMU's state is unreadable"


@pytest.mark.parametrize("fraction", [0.10, 0.60])
def test_truncated_core_with_allow_missing(rig_case, tmp_path, fraction):
    """What is there is extracted; what is not is listed, and written as zeros.

    A cut that took the FlatView (malloc'd by a vCPU thread, after guest RAM
    in this core) leaves the map to be rendered from the MemoryRegion tree.
    Only a cut that took the rest of QEMU's state (the tree, the RAMBlocks,
    the vCPUs) leaves no map to extract by: --allow-missing then refuses
    with the same one-line error, naming what could not be read.
    """
    core = rig_case("q72-pc-512").core
    cut = tmp_path / "core"
    sparse_copy(core, cut, int(core.stat().st_size * fraction))
    out = tmp_path / "vmcore"
    proc = run_cli("extract", cut, "-o", out, "--allow-missing", "-q")
    if STATE_GONE in proc.stderr:
        assert fraction < 0.5  # 60% always keeps QEMU's state of this case
        assert_one_line_error(proc, str(cut), "truncated core", STATE_GONE, "is not in the core")
        assert list(tmp_path.iterdir()) == [cut]
        return
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    # When the cut took the kernel's init_uts_ns, its VMCOREINFO cannot be
    # confirmed, and the user is told so in one more warning line.
    unconfirmed = [w for w in warnings if w.startswith("warning: the VMCOREINFO used ")]
    assert len(unconfirmed) <= 1 and all("is not confirmed" in w for w in unconfirmed)
    # When the cut took the FlatView, the map is rendered from the
    # MemoryRegion tree (qemu/render.py), and the user is told so.
    rendered = [w for w in warnings if w.startswith("warning: guest-physical map rendered")]
    assert len(rendered) <= 1 and all("the FlatView lies past the cut" in w for w in rendered)
    missing = [w for w in warnings if w not in unconfirmed and w not in rendered]
    assert missing and all(
        w.startswith("warning: guest 0x")
        and w.endswith("not in the core (truncated); written as zeros")
        for w in missing
    ), warnings
    assert "0xfffc0000-0x100000000" in proc.stderr  # the BIOS is dumped last: always cut
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with open(out, "rb") as f:
        assert sum(s["p_memsz"] for s in ELFFile(f).iter_segments(type="PT_LOAD")) > 512 << 20


def test_truncated_99_percent_with_allow_missing_is_whole(rig_case, tmp_path):
    """The last 1% of this core holds no guest RAM: the output equals QEMU's dump."""
    case = rig_case("q72-pc-512")
    cut = tmp_path / "core"
    sparse_copy(case.core, cut, int(case.core.stat().st_size * 0.99))
    out = tmp_path / "vmcore"
    run_cli("extract", cut, "-o", out, "--allow-missing", "-q", check=True)
    cmp = compare_vmcores(out, case.reference)
    assert cmp.equal, (cmp.ranges_a, cmp.ranges_b, cmp.differing_pages)


def test_dump_guest_core_off_with_allow_missing(rig_case, tmp_path):
    case = rig_case("q72-pc-nodump")
    info = run_cli("info", "--json", case.core, check=True).stdout
    assert {r["in_core"] for r in json.loads(info)["ranges"]} == {"no"}
    out = tmp_path / "vmcore"
    proc = run_cli("extract", case.core, "-o", out, "--allow-missing", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "0x0-0x20000000" in proc.stderr and "written as zeros" in proc.stderr
    assert out.stat().st_blocks * 512 < (1 << 20)  # all zeros: holes, not data
    with open(out, "rb") as f:
        assert {s["p_paddr"] for s in ELFFile(f).iter_segments(type="PT_LOAD")} == {0, 0xFFFC0000}


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt_qemu(tmp_path_factory) -> Path:
    """QEMU 7.2 with its build-id changed: the same code, as if built again."""
    exe = tmp_path_factory.mktemp("rebuilt") / "qemu-system-x86_64"
    shutil.copyfile(rig.qemu_binary("7.2"), exe)
    with open(exe, "r+b") as f:
        note = ELFFile(f).get_section_by_name(".note.gnu.build-id")
        end = note["sh_offset"] + note["sh_size"]
        f.seek(end - 1)
        last = f.read(1)[0]
        f.seek(end - 1)
        f.write(bytes([last ^ 0xFF]))
    return exe


@pytest.fixture(scope="module")
def stripped_core(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A core of a QEMU 7.2 whose executable was stripped of its debug info.

    Returns (core, stripped executable, QMP reference dump). The guest never
    ran (-S), so none of its RAM was ever touched. strip keeps the build-id
    note, so the unstripped rig build still matches the core.
    """
    import resource

    d = tmp_path_factory.mktemp("stripped")
    exe = d / "qemu-system-x86_64"
    subprocess.run(["strip", "-o", exe, rig.qemu_binary("7.2")], check=True)
    qmp = d / "qmp.sock"
    argv = [exe, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu", "-machine", "pc",
            "-m", "64", "-display", "none", "-nodefaults", "-S",
            "-qmp", f"unix:{qmp},server=on,wait=off"]  # fmt: skip

    def unlimited_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)

    proc = subprocess.Popen(argv, cwd=d, preexec_fn=unlimited_core, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not qmp.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qmp.exists(), "QEMU did not start"
    reference = d / "reference.elf"
    with contextlib.closing(rig.QMP(qmp)) as conn:
        conn.execute("dump-guest-memory", {"paging": False, "protocol": f"file:{reference}"})
    proc.send_signal(signal.SIGABRT)
    proc.wait(timeout=60)
    core = d / "core"
    if not core.exists():
        pytest.skip("no core written (core_pattern is not a plain file name here)")
    return core, exe, reference


def test_qemu_and_debug_file_options_supply_debug_info(stripped_core, tmp_path):
    """The fix the no-debug-info row's hint names works; RAM the guest never
    touched is zeros, as in QEMU's dump.

    The kernel dumps no bytes of an anonymous mapping that was never written
    (it has no anon_vma), so the core says "not dumped" for all guest RAM
    although QEMU ran with dump-guest-core=on: that RAM is zeros, not lost.
    """
    core, _, reference = stripped_core
    unstripped = rig.qemu_binary("7.2")
    for option in ("--qemu", "--debug-file"):
        out = tmp_path / f"vmcore{option}"
        run_cli("extract", core, "-o", out, option, unstripped, "-q", check=True)
        cmp = compare_vmcores(out, reference)
        assert cmp.equal, (cmp.ranges_a, cmp.ranges_b, cmp.differing_pages)
        with open(out, "rb") as f, open(reference, "rb") as g:
            # Never in long mode: EM_386, in ELF64 because the BIOS ends at 4 GiB.
            assert f.read(20) == g.read(20)
        out.unlink()


def test_the_core_itself_is_never_the_output(rig_case, tmp_path):
    """``-o`` naming the core, or a hard link to it, is refused even with
    --force: replacing it would destroy the only copy of the guest."""
    core = rig_case("q72-pc-bios").core
    before = os.stat(core)
    link = tmp_path / "core-link"
    os.link(core, link)
    for target in (core, link):
        proc = run_cli("extract", core, "-o", target, "--force")
        assert proc.returncode == EXIT_OUTPUT
        assert_one_line_error(proc, str(target), "is the input", "never overwritten")
    after = os.stat(core)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    link.unlink()


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "socket"])
def test_special_files_are_never_replaced(rig_case, tmp_path, kind):
    import socket as socketlib

    if kind == "/dev/null":
        target = Path(kind)
    elif kind == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    else:
        target = tmp_path / "sock"
        sock = socketlib.socket(socketlib.AF_UNIX)
        sock.bind(os.fspath(target))
    mode = os.lstat(target).st_mode
    proc = run_cli("extract", rig_case("q72-pc-bios").core, "-o", target, "--force")
    assert proc.returncode == EXIT_OUTPUT
    assert_one_line_error(proc, str(target), "not a regular file")
    assert os.lstat(target).st_mode == mode
