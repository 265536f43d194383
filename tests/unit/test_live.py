"""host/live.py on a small live process (not QEMU) and its messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qemu_vmcore.errors import NotQemuError, ProcessError
from qemu_vmcore.host import live
from qemu_vmcore.host.core import ExtentKind

PAGE = 4096

_CHILD = """
import mmap, sys, time
m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for page in (1, 2, 40):
    m[page * 4096] = 0x41 + page
import ctypes
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
print(hex(addr), flush=True)
time.sleep(600)
"""


@pytest.fixture
def child():
    p = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        addr = int(p.stdout.readline(), 16)
        yield p.pid, addr
    finally:
        p.kill()
        p.wait()


def _state(pid: int) -> str:
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


def test_untouched_pages_are_holes_and_the_process_runs_on(child):
    pid, addr = child
    host = live.open_process(pid)
    try:
        assert _state(pid) == "t"  # frozen: a tracing stop
        exts = host.extents(addr, 64 * PAGE)
        kinds = [(e.hva - addr, e.size, e.kind) for e in exts]
        assert kinds == [
            (0, PAGE, ExtentKind.UNTOUCHED),
            (PAGE, 2 * PAGE, ExtentKind.DATA),
            (3 * PAGE, 37 * PAGE, ExtentKind.UNTOUCHED),
            (40 * PAGE, PAGE, ExtentKind.DATA),
            (41 * PAGE, 23 * PAGE, ExtentKind.UNTOUCHED),
        ]
        assert all(e.file_offset == e.hva for e in exts if e.kind is ExtentKind.DATA)
        data = host.read(addr, 41 * PAGE)
        assert data[PAGE] == 0x42 and data[40 * PAGE] == 0x41 + 40 and data[0] == 0
    finally:
        host.close()
    assert live.tracer_of(pid) == 0
    assert _state(pid) in "SR"


def test_a_stopped_process_stays_stopped(child):
    import signal
    import time

    pid, _ = child
    os.kill(pid, signal.SIGSTOP)
    while _state(pid) != "T":
        time.sleep(0.01)
    live.open_process(pid).close()
    time.sleep(0.1)
    assert _state(pid) == "T" and live.tracer_of(pid) == 0
    os.kill(pid, signal.SIGCONT)


def test_not_qemu_and_no_such_process(child):
    pid, _ = child
    with pytest.raises(NotQemuError, match=f"process {pid} is .*python.*not QEMU"):
        live.check_qemu_process(pid, named=False)
    live.check_qemu_process(pid, named=True)  # --qemu given: a renamed QEMU is accepted
    with pytest.raises(ProcessError, match="no such process: 0"):
        live.check_qemu_process(0, named=False)


@pytest.mark.parametrize(
    ("scope", "euid", "needles"),
    [
        (None, 1000, ["permission denied", "run as root"]),
        (1, 1000, ["kernel.yama.ptrace_scope is 1", "sysctl kernel.yama.ptrace_scope=0"]),
        (2, 1000, ["kernel.yama.ptrace_scope is 2", "only root"]),
        (3, 0, ["kernel.yama.ptrace_scope is 3", "next boot"]),
    ],
)
def test_permission_messages(scope, euid, needles):
    e = live.permission_error(1234, "trace", scope, euid)
    text = f"{e.message} (hint: {e.hint})"
    assert e.message.startswith("cannot trace process 1234: ")
    for n in needles:
        assert n in text, text


def test_parse_maps():
    text = (
        "55d0-55e0 r--p 00000000 fe:00 12 /usr/bin/qemu-system-x86_64 (deleted)\n"
        "7f00-7f10 rw-p 00000000 00:00 0 \n"
        "7f10-7f20 rw-s 00000000 00:01 5 /memfd:ram0 (deleted)\n"
    )
    maps = live.parse_maps(text)
    assert [m.hva for m in maps] == [0x55D0, 0x7F00, 0x7F10]
    assert [m.anonymous_private for m in maps] == [False, True, False]
    assert maps[0].path.endswith("(deleted)")
