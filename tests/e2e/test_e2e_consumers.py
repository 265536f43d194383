"""End to end: crash, drgn, vmcore-dmesg and makedumpfile read our vmcores.

QEMU's own paging=false dump of these guests is refused by vmcore-dmesg
(no PT_LOAD covers the kernel's virtual addresses) and by makedumpfile
(program headers not at offset 64); ours must satisfy all four consumers,
also for a guest without QEMU's vmcoreinfo device.
"""

from __future__ import annotations

import json

import pytest
from support import consumers, rig
from support.runs import run_cli

pytestmark = pytest.mark.rig

RELEASE_PY = "print(prog['init_uts_ns'].name.release.string_().decode())"
TASKS_PY = """
from drgn.helpers.linux.pid import for_each_task
tasks = {int(t.pid): t.comm.string_().decode() for t in for_each_task(prog)}
print(len(tasks), tasks.get(1), tasks.get(2))
"""
PANIC_PY = """
print([f.name for f in prog.crashed_thread().stack_trace()])
"""


@pytest.fixture(scope="module")
def vmlinux():
    return rig.vmlinux()


@pytest.fixture(scope="module")
def vmcore_of(rig_case, tmp_path_factory):
    """``vmcore_of(name)``: our vmcore of a rig case (extracted once per module)."""
    made = {}

    def get(name: str):
        if name not in made:
            out = tmp_path_factory.mktemp(name) / "vmcore"
            run_cli("extract", rig_case(name).core, "-o", out, "-q", check=True)
            made[name] = out
        return made[name]

    return get


@pytest.mark.parametrize("name", ["q10-q35-512", "q72-pc-smp2", "q10-q35-novmci"])
def test_all_consumers_read_our_vmcore(rig_case, vmcore_of, vmlinux, name):
    case = rig_case(name)
    vmcore = vmcore_of(name)
    release = case.meta["kernel_version"]
    marker = f"RIG-MARKER {case.marker}"

    startup = consumers.crash(vmcore, vmlinux, [])
    assert "do not match" not in startup
    sys_out, log_out = consumers.crash_each(vmcore, vmlinux, ["sys", "log"])
    assert f"RELEASE: {release}" in sys_out
    assert marker in log_out

    assert consumers.drgn(vmcore, vmlinux, RELEASE_PY).strip() == release
    count, init, kthreadd = consumers.drgn(vmcore, vmlinux, TASKS_PY).split()
    assert int(count) > 20  # init and the kernel threads
    assert (init, kthreadd) == ("init", "kthreadd")

    dmesg = consumers.vmcore_dmesg(vmcore)
    assert marker in dmesg
    assert marker in consumers.makedumpfile_dmesg(vmcore)
    # qemu-vmcore dmesg, straight from QEMU's core, prints what vmcore-dmesg does.
    ours = run_cli("dmesg", case.core, check=True).stdout
    assert ours == dmesg


def test_without_vmcoreinfo_device_the_note_comes_from_a_ram_scan(rig_case):
    case = rig_case("q10-q35-novmci")
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    vmci = info["vmcoreinfo"]
    assert vmci["device"] == "no vmcoreinfo device"
    assert vmci["source"] == "guest RAM scan" and vmci["verified"]
    assert vmci["osrelease"] == case.meta["kernel_version"]


@pytest.mark.parametrize("name", ["q10-q35-panic", "q72-pc-panic"])
def test_panic_case(rig_case, vmcore_of, vmlinux, name):
    vmcore = vmcore_of(name)
    sys_out, bt_out = consumers.crash_each(vmcore, vmlinux, ["sys", "bt"])
    assert 'PANIC: "Kernel panic - not syncing: sysrq triggered crash"' in sys_out
    assert "sysrq_handle_crash" in bt_out and 'COMMAND: "init"' in bt_out
    frames = consumers.drgn(vmcore, vmlinux, PANIC_PY)
    assert "sysrq_handle_crash" in frames
    assert "Kernel panic - not syncing" in consumers.vmcore_dmesg(vmcore)
