"""End to end: the core of a stripped QEMU, as distributions ship it.

The guest of case q10-q35-stripped ran under ``rig.stripped_qemu()``: the
rig's 10.0 build after ``objcopy --strip-debug`` (the build-id stays) with a
``.gnu_debuglink``. Its debug info is kept where no debugger looks
(``rig.kept_debug_file()``). Each test puts it in one of the places a host
has it (a debuginfod server, ``/usr/lib/debug/.build-id``, next to the
executable, ``--debug-file``) or reads the core through a profile, and
compares the vmcore with QMP's dump of the same paused guest, page for page
and note for note. Without any of them the run stops with one line.

Every run gets an environment with no ``DEBUGINFOD_URLS`` (Debian's
/etc/profile.d sets one for login shells), no profile path and an empty
``XDG_DATA_HOME``, so only the way under test can supply the debug info.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support import rig
from support.runs import assert_one_line_error, run_cli
from support.vmcore_compare import compare_vmcores, note_segment

from qemu_vmcore.host.executable import read_build_id
from qemu_vmcore.layouts import elf as E

pytestmark = pytest.mark.rig

NAME = "q10-q35-stripped"
#: How long debuginfod may take to index the one debug file it is given
#: (measured: about 5 s for QEMU 10.0's 100 MB of DWARF on this machine).
INDEX_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def case(rig_case):
    return rig_case(NAME)


@pytest.fixture(scope="module")
def build_id(case) -> str:
    bid = read_build_id(case.qemu_binary)
    assert bid is not None
    return bid.hex()


@pytest.fixture(scope="module")
def debug_file(case) -> Path:
    path = rig.kept_debug_file(case.spec.qemu, case.spec.arch)
    assert path.is_file()
    return path


@pytest.fixture
def env(tmp_path):
    """``env(**more)``: an environment where nothing supplies debug info but ``more``."""

    def make(**more: str) -> dict[str, str]:
        drop = ("DEBUGINFOD_URLS", "QEMU_VMCORE_PROFILE_PATH", "DEBUGINFOD_CACHE_PATH")
        e = {k: v for k, v in os.environ.items() if k not in drop}
        e["XDG_DATA_HOME"] = str(tmp_path / "xdg")
        # debuginfod's client cache, private to the test: a file cached by
        # one test must not answer for the next.
        e["DEBUGINFOD_CACHE_PATH"] = str(tmp_path / "debuginfod-cache")
        e.update(more)
        return e

    return make


def assert_extract_equals_reference(case, out: Path, *args: object, env: dict) -> None:
    """``extract ARGS`` on the stripped core equals QMP's dump: ranges, pages, notes."""
    run_cli("extract", "-q", case.core, "-o", out, *args, env=env, check=True)
    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b and cmp.differing_pages == []
    assert cmp.pages == sum(size for _, size in cmp.ranges_b) // 4096
    ours, ref = note_segment(out), note_segment(case.reference)
    smp = case.spec.smp
    names = [(n.name, n.type) for n in E.iter_notes(ref)]
    assert names == [(b"CORE", 1)] * smp + [(b"QEMU", 0)] * smp + [(b"VMCOREINFO", 0)]
    assert ours == ref
    out.unlink()


# -- none: the error -------------------------------------------------------


def test_the_core_holds_no_debug_info_of_its_own(case, debug_file):
    """The case is what it claims: its QEMU has no DWARF, the kept file has it."""
    sections = subprocess.run(
        ["readelf", "-S", "-W", case.qemu_binary], capture_output=True, text=True, check=True
    ).stdout
    assert ".debug_info" not in sections and ".gnu_debuglink" in sections
    assert case.meta["qemu_binary"] == str(case.qemu_binary)
    assert read_build_id(debug_file) == read_build_id(case.qemu_binary)
    assert read_build_id(case.qemu_binary) == read_build_id(rig.qemu_binary(case.spec.qemu))


@pytest.mark.parametrize("command", ["extract", "info", "dmesg"])
def test_no_debug_info_anywhere_is_one_line(case, build_id, env, tmp_path, command):
    out = tmp_path / "vmcore"
    args = ("-o", out) if command == "extract" else ()
    proc = run_cli(command, case.core, *args, env=env())
    assert proc.returncode == 2
    assert_one_line_error(
        proc,
        "no debug info found",
        str(case.qemu_binary),
        f"build-id {build_id}",
        "dbgsym",  # the distribution's debug package ...
        "debuginfo-install",
        "DEBUGINFOD_URLS",  # ... debuginfod ...
        "--debug-file",  # ... the file itself ...
        "qemu-vmcore profile",  # ... or a profile made elsewhere
        "--profile",
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []


# -- --debug-file, /usr/lib/debug/.build-id, .gnu_debuglink -----------------


def test_debug_file_option(case, debug_file, env, tmp_path):
    assert_extract_equals_reference(case, tmp_path / "v", "--debug-file", debug_file, env=env())


def _link_or_copy(src: Path, dest: Path) -> None:
    """A hard link where it can be (same file system): no copy of 100 MB."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


@contextlib.contextmanager
def _placed(src: Path, dest: Path):
    """``src`` linked at ``dest`` (a new file: never one that was there) for the block."""
    if dest.exists() or dest.is_symlink():
        raise AssertionError(f"{dest} exists: left by an earlier run? remove it")
    made = []
    d = dest.parent
    while not d.exists():
        made.append(d)
        d = d.parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _link_or_copy(src, dest)
        yield dest
    finally:
        dest.unlink(missing_ok=True)
        for m in made:  # the directories this made, innermost first
            with contextlib.suppress(OSError):
                m.rmdir()


def test_build_id_directory(case, build_id, debug_file, env, tmp_path):
    """Where a dbgsym/debuginfo package puts it: /usr/lib/debug/.build-id/xx/yyyy.debug."""
    dest = Path("/usr/lib/debug/.build-id") / build_id[:2] / f"{build_id[2:]}.debug"
    with _placed(debug_file, dest):
        assert_extract_equals_reference(case, tmp_path / "v", env=env())
    proc = run_cli("info", case.core, env=env())  # gone again: back to the error
    assert_one_line_error(proc, "no debug info found")


def test_gnu_debuglink_next_to_the_executable(case, debug_file, env, tmp_path):
    """The name .gnu_debuglink records, in the executable's directory."""
    dest = case.qemu_binary.parent / debug_file.name
    with _placed(debug_file, dest):
        assert_extract_equals_reference(case, tmp_path / "v", env=env())


# -- debuginfod ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Netns:
    """A network namespace with only loopback: debuginfod listens on every
    interface (0.188 has no listen-address option), so the server and its
    client run in here, where loopback is all there is."""

    def __init__(self) -> None:
        self.name = f"qvm-dinfod-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *argv: object) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(os.fspath, argv)]

    def run(self, *argv: object, **kw):
        return subprocess.run(self.argv(*argv), check=True, **kw)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("a private network namespace needs root and iproute2")
    ns = Netns()
    yield ns
    ns.delete()


#: Exit 0 if a GET of argv[1] answers 200 (debuginfod serves GET only; the
#: body is not read).
_PROBE = """
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5).close()
except Exception:
    sys.exit(1)
"""


@contextlib.contextmanager
def debuginfod(netns: Netns, serve: Path, workdir: Path, build_id: str):
    """A real debuginfod in ``netns``, scanning ``serve``; yields its URL once it
    answers (for ``build_id``: once that file is indexed; None: once it is up)."""
    if not shutil.which("debuginfod"):
        pytest.skip("debuginfod is not installed (tests/rig/setup-apt.sh installs it)")
    port = _free_port()
    log = open(workdir / f"debuginfod-{port}.log", "wb")
    proc = subprocess.Popen(
        netns.argv(
            "debuginfod", "-F", "-p", str(port), "-d", workdir / f"db-{port}.sqlite",
            "--disable-source-scan", "-t", "0", "-g", "0", serve,
        ),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + INDEX_TIMEOUT
        probe = f"{url}/buildid/{build_id}/debuginfo" if build_id else f"{url}/metrics"
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"debuginfod exited: {(workdir / log.name).read_text()}")
            # Asked from inside the namespace: this process is outside it.
            got = subprocess.run(netns.argv(sys.executable, "-c", _PROBE, probe), check=False)
            if got.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"debuginfod did not serve {probe} in {INDEX_TIMEOUT:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _in_netns(netns: Netns, *args: object, env: dict):
    """``run_cli(ARGS)`` inside the namespace."""
    argv = netns.argv(sys.executable, "-m", "qemu_vmcore", *args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


def test_debuginfod_serves_the_debug_file(case, build_id, debug_file, netns, env, tmp_path):
    serve = tmp_path / "serve"
    serve.mkdir()
    _link_or_copy(debug_file, serve / debug_file.name)
    with debuginfod(netns, serve, tmp_path, build_id) as url:
        e = env(DEBUGINFOD_URLS=url)
        out = tmp_path / "v"
        proc = _in_netns(netns, "extract", "-q", case.core, "-o", out, env=e)
        assert proc.returncode == 0, proc.stderr
        # It came from the server: the client cached it under the build-id.
        cached = Path(e["DEBUGINFOD_CACHE_PATH"]) / build_id / "debuginfo"
        assert cached.is_file() and read_build_id(cached).hex() == build_id
        cmp = compare_vmcores(out, case.reference)
        assert cmp.ranges_a == cmp.ranges_b and cmp.differing_pages == []
        assert note_segment(out) == note_segment(case.reference)


def test_debuginfod_without_the_build_id(case, build_id, netns, env, tmp_path):
    """A server that is up but lacks the build-id: the error names both."""
    empty = tmp_path / "empty"
    empty.mkdir()
    with debuginfod(netns, empty, tmp_path, "") as url:
        proc = _in_netns(netns, "info", case.core, env=env(DEBUGINFOD_URLS=url))
    assert_one_line_error(proc, "no debug info found", f"build-id {build_id}", url)


def test_debuginfod_down(case, build_id, netns, env, tmp_path):
    """Nothing listens at the URL: the same one line, naming the URL."""
    url = f"http://127.0.0.1:{_free_port()}"
    out = tmp_path / "v"
    proc = _in_netns(netns, "extract", case.core, "-o", out, env=env(DEBUGINFOD_URLS=url))
    assert_one_line_error(proc, "no debug info found", f"build-id {build_id}", url)
    assert not (tmp_path / "v").exists()


# -- profiles --------------------------------------------------------------


@pytest.fixture(scope="module")
def profile(case, debug_file, tmp_path_factory) -> Path:
    """A profile made from the stripped executable and its debug file."""
    out = tmp_path_factory.mktemp("profile") / "qemu.json"
    run_cli("profile", case.qemu_binary, "--debug-file", debug_file, "-o", out, check=True)
    return out


def test_profile_option(case, profile, env, tmp_path):
    assert_extract_equals_reference(case, tmp_path / "v", "--profile", profile, env=env())


def test_profile_path(case, profile, build_id, env, tmp_path):
    """Found as ``<build-id>.json`` in QEMU_VMCORE_PROFILE_PATH, with no option."""
    shelf = tmp_path / "profiles"
    shelf.mkdir()
    shutil.copyfile(profile, shelf / f"{build_id}.json")
    e = env(QEMU_VMCORE_PROFILE_PATH=f"{tmp_path / 'nothing-here'}:{shelf}")
    assert_extract_equals_reference(case, tmp_path / "v", env=e)


def test_info_and_dmesg_through_a_profile(case, profile, env):
    import json

    info = json.loads(
        run_cli("info", "--json", case.core, "--profile", profile, env=env(), check=True).stdout
    )
    assert info["qemu"]["version"].startswith("10.0.") and info["vcpus"] == case.spec.smp
    assert info["vmcoreinfo"]["verified"]
    log = run_cli("dmesg", case.core, "--profile", profile, env=env(), check=True).stdout
    assert case.marker in log


def test_profile_of_another_build_is_refused(case, rig_case, env, tmp_path):
    other = tmp_path / "other.json"
    run_cli("profile", rig.qemu_binary("7.2"), "-o", other, check=True)
    out = tmp_path / "v"
    proc = run_cli("extract", case.core, "-o", out, "--profile", other, env=env())
    assert_one_line_error(proc, str(other), "not of the core's")
    assert not out.exists()
