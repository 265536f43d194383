"""End to end: aarch64 guests (``-machine virt -cpu max``, TCG) on QEMU 7.2 and 10.0.

Every case's vmcore equals QEMU's own QMP dump of the same paused guest,
page for page and note for note (NT_PRSTATUS, NT_PRFPREG, NT_ARM_SVE per
vCPU, then VMCOREINFO); drgn, vmcore-dmesg and libkdumpfile read it on
this x86_64 host, and the gdb backend writes the same bytes as the CLI.
"""

from __future__ import annotations

import json

import pytest
from elftools.elf.elffile import ELFFile
from support import consumers, kdumpfile_pages, rig
from support.runs import run_cli
from support.vmcore_compare import all_loads, compare_vmcores, note_segment

from qemu_vmcore.arch.aarch64.notes import NT_ARM_SVE, NT_PRFPREG
from qemu_vmcore.layouts import elf as E

pytestmark = pytest.mark.rig

#: The aarch64 cases with a QMP reference (all of them but the bench's).
CASES = [
    n
    for n, s in rig.STANDARD_CASES.items()
    if s.arch == "aarch64" and s.reference and n not in rig.BENCH_ONLY
]
#: Cases whose guest booted a kernel (not stopped before it ran).
BOOTED = [n for n in CASES if not rig.STANDARD_CASES[n].start_paused]
PANIC = [n for n in BOOTED if rig.STANDARD_CASES[n].panic]


@pytest.fixture(scope="module")
def vmlinux():
    return rig.vmlinux("aarch64")


@pytest.fixture(scope="module")
def extracted(rig_case, tmp_path_factory):
    """``extracted(name, *args)``: our vmcore of a case (made once per args)."""
    made: dict[tuple, object] = {}
    d = tmp_path_factory.mktemp("aarch64")

    def get(name: str, *args: str):
        key = (name, *args)
        if key not in made:
            out = d / f"{name}-{len(made)}"
            run_cli("extract", rig_case(name).core, "-o", out, "-q", *args, check=True)
            made[key] = out
        return made[key]

    return get


@pytest.mark.parametrize("name", CASES)
def test_vmcore_equals_qemu_dump(rig_case, extracted, name):
    """Pages, ranges and notes as QMP dump-guest-memory wrote them."""
    case = rig_case(name)
    out = extracted(name)
    cmp = compare_vmcores(out, case.reference)
    assert cmp.ranges_a == cmp.ranges_b and cmp.ranges_b[0][0] == 0x40000000
    assert cmp.differing_pages == []
    ours, ref = note_segment(out), note_segment(case.reference)
    names = [(n.name, n.type) for n in E.iter_notes(ref)]
    per_vcpu = [(b"CORE", E.NT_PRSTATUS), (b"CORE", NT_PRFPREG), (b"LINUX", NT_ARM_SVE)]
    vmci = [(b"VMCOREINFO", 0)] if case.spec.vmcoreinfo_device and name in BOOTED else []
    assert names == per_vcpu * case.spec.smp + vmci
    if vmci or name not in BOOTED:
        assert ours == ref
    else:  # QEMU's own dump lacks VMCOREINFO; ours adds the guest's, found in RAM
        assert ours.startswith(ref)
        assert [n.name for n in E.iter_notes(ours)][-1] == b"VMCOREINFO"
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert (elf["e_machine"], elf["e_ident"]["EI_DATA"]) == ("EM_AARCH64", "ELFDATA2LSB")
        assert elf["e_phoff"] == 64


@pytest.mark.parametrize("name", BOOTED)
def test_kernel_text_load_maps_the_image(rig_case, extracted, vmlinux, name):
    """One PT_LOAD gives the kernel image its virtual addresses (as kexec's
    /proc/vmcore has one), pointing into the RAM load's bytes; its start is
    the guest's _stext."""
    case = rig_case(name)
    loads = all_loads(extracted(name))
    (text,) = [x for x in loads if x.vaddr != x.paddr]
    ram = [x for x in loads if x.vaddr == x.paddr]
    holder = next(x for x in ram if x.paddr <= text.paddr < x.paddr + x.memsz)
    assert text.offset == holder.offset + text.paddr - holder.paddr
    assert text.vaddr >= 0xFFFF800000000000 and 16 << 20 < text.memsz < 256 << 20
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert info["vmcoreinfo"]["verified"]


@pytest.mark.parametrize("name", BOOTED)
def test_info_names_the_arch_and_each_vcpu(rig_case, name):
    case = rig_case(name)
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert info["arch"] == "aarch64" and info["vcpus"] == case.spec.smp
    assert info["qemu"]["version"].startswith(case.spec.qemu + ".")
    assert "virt" in info["machine"]
    for c in info["vcpu_states"]:
        assert c["mode"] in ("EL1h", "EL1t", "EL0t")
        assert c["pc"] == c["pc"] & (2**64 - 1) and c["ttbr1"] != 0
        assert not c["stale"]
    vmci = info["vmcoreinfo"]
    assert vmci["verified"] and vmci["osrelease"] == case.meta["kernel_version"]
    want = "vmcoreinfo device" if case.spec.vmcoreinfo_device else "guest RAM scan"
    assert vmci["source"] == want
    text = run_cli("info", case.core, check=True).stdout
    assert "arch         aarch64" in text and "ttbr1 0x" in text


@pytest.mark.parametrize("name", BOOTED)
def test_dmesg_prints_the_marker(rig_case, name):
    case = rig_case(name)
    out = run_cli("dmesg", case.core, check=True).stdout
    assert f"RIG-MARKER {case.marker}" in out


@pytest.mark.parametrize("name", BOOTED)
def test_drgn_reads_the_guest(rig_case, extracted, vmlinux, name):
    """drgn (cross-arch, on this x86_64 host) with the arm64 debug vmlinux."""
    case = rig_case(name)
    code = (
        "from drgn.helpers.linux.pid import for_each_task\n"
        "print(prog['init_uts_ns'].name.release.string_().decode())\n"
        "tasks = list(for_each_task(prog))\n"
        "print(len(tasks), [t.comm.string_().decode() for t in tasks if t.pid == 1])\n"
    )
    if case.spec.panic:
        code += "print([f.name for f in prog.crashed_thread().stack_trace()])\n"
    out = consumers.drgn(extracted(name), vmlinux, code).splitlines()
    assert out[0] == case.meta["kernel_version"]
    count, init = out[1].split(" ", 1)
    assert int(count) > 20 and init == "['init']"
    if case.spec.panic:
        frames = out[2]
        assert "'sysrq_handle_crash'" in frames and "'panic'" in frames


@pytest.mark.parametrize("name", BOOTED[:2])
def test_vmcore_dmesg_reads_the_foreign_arch_file(rig_case, extracted, name):
    """kexec-tools' vmcore-dmesg of this x86_64 host reads an arm64 vmcore:
    it needs only VMCOREINFO and the kernel-text load's virtual addresses."""
    case = rig_case(name)
    assert f"RIG-MARKER {case.marker}" in consumers.vmcore_dmesg(extracted(name))
    if case.spec.vmcoreinfo_device:  # QEMU's own dump: VMCOREINFO, but no virtual load
        with pytest.raises(consumers.ConsumerError, match="No program header covering vaddr"):
            consumers.vmcore_dmesg(case.reference)


@pytest.mark.parametrize("name", ["a10-virt-smp2", "a72-virt-512", "a10-virt-novmci"])
def test_crash_for_arm64_reads_sys_log_and_bt(rig_case, extracted, vmlinux, name):
    """crash 9.0.2 built for ARM64 (tests/rig/build-crash.sh): ``sys``, ``log``
    with the marker and ``bt`` of the task on CPU 0, from our notes. Without
    the vmcoreinfo device QEMU's own dump is refused ("kimage_voffset cannot
    be determined"); ours carries the VMCOREINFO found in RAM."""
    case = rig_case(name)
    out = consumers.crash(extracted(name), vmlinux, ["sys", "log", "bt"], arch="aarch64")
    assert f"RELEASE: {case.meta['kernel_version']}" in out and "MACHINE: aarch64" in out
    assert f"RIG-MARKER {case.marker}" in out
    # The stack of the task on CPU 0, unwound from our registers to its root:
    # start_kernel for the idle task (where in the idle loop TCG stopped the
    # vCPU varies from case to case: cpu_do_idle, default_idle_call...), or a
    # task's entry from fork or from user space.
    roots = ("start_kernel", "ret_from_fork", "el0t_64_sync")
    assert " #0 [" in out and any(f"] {r} at " in out for r in roots), out
    if not case.spec.vmcoreinfo_device:
        with pytest.raises(consumers.ConsumerError):
            consumers.crash(case.reference, vmlinux, ["sys"], arch="aarch64")


@pytest.mark.parametrize("name", PANIC)
def test_crash_for_arm64_on_a_panic_reads_as_qemus_dump(rig_case, extracted, vmlinux, name):
    """``sys`` names the panic and ``log`` ends with it. ``bt`` of the panic
    task shows no frames, on QEMU's own dump as on ours: crash's arm64 code
    takes a QEMU dump without a "QEMU" note (x86 only) for a kdump one, maps
    the NT_PRSTATUS notes to the CPUs still online (the panic stopped the
    other) only where the kernel's crash_notes are valid, and no kdump kernel
    filled them (crash arm64.c arm64_get_crash_notes, netdump.c
    map_cpus_to_prstatus). drgn gives the panic stack from the same notes."""
    case = rig_case(name)
    cmds = ["sys", "log", "bt"]
    ours = consumers.crash(extracted(name), vmlinux, cmds, arch="aarch64")
    theirs = consumers.crash(case.reference, vmlinux, cmds, arch="aarch64")
    assert 'PANIC: "Kernel panic - not syncing: sysrq triggered crash"' in ours
    assert "end Kernel panic - not syncing: sysrq triggered crash" in ours
    assert f"RIG-MARKER {case.marker}" in ours
    strip = [line for line in ours.splitlines() if "DUMPFILE" not in line]
    assert strip == [line for line in theirs.splitlines() if "DUMPFILE" not in line]


def test_gdb_backend_writes_the_same_bytes(rig_case, extracted, tmp_path):
    name = PANIC[0]
    out = tmp_path / "vmcore"
    run_cli("extract", "--backend", "gdb", rig_case(name).core, "-o", out, "-q", check=True)
    assert out.read_bytes() == extracted(name).read_bytes()


def test_gdb_command_takes_and_checks_qemu_arch_names(rig_case, tmp_path):
    """``dump-guest-memory FILE aarch64-le`` as QEMU's script takes it; an x86
    ARCH or the big-endian one is refused in one line, writing nothing."""
    case = rig_case(PANIC[0])
    script = run_cli("gdb-script", check=True).stdout.strip()
    ok, x86, be = tmp_path / "ok", tmp_path / "x86", tmp_path / "be"
    proc = consumers._run(
        [
            "gdb", "-batch", "-nx", "-ex", f"source {script}",
            "-ex", f"dump-guest-memory -q {ok} aarch64-le",
            "-ex", f"dump-guest-memory -q {x86} X86_64",
            "-ex", f"dump-guest-memory -q {be} aarch64-be",
            str(case.qemu_binary), str(case.core),
        ],
        timeout=600,
        merge_stderr=True,
    )  # fmt: skip
    out = proc[1]
    assert ok.is_file() and not x86.exists() and not be.exists()
    assert "ARCH X86_64 does not match this guest: it is an aarch64 guest" in out
    assert "ARCH aarch64-be does not match this guest: its kernel runs little-endian" in out
    cli = tmp_path / "cli"
    run_cli("extract", case.core, "-o", cli, "-q", check=True)
    assert ok.read_bytes() == cli.read_bytes()


FORMATS_CASE = "a10-virt-formats"
KDUMP = ["kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd"]


@pytest.mark.skipif(not kdumpfile_pages.available(), reason="no libkdumpfile bindings")
def test_every_kdump_format_holds_the_elf_pages(rig_case, extracted):
    """Each kdump file (4 KiB blocks, as makedumpfile writes an arm64 kernel
    with 4 KiB pages) holds exactly the ELF file's pages, read by libkdumpfile;
    QEMU's own kdump-zlib (64 KiB blocks, its aarch64 dump_info.page_size) too."""
    elf = extracted(FORMATS_CASE)
    files = [extracted(FORMATS_CASE, "--format", f) for f in KDUMP]
    results = kdumpfile_pages.compare(elf, *files)
    pages = sum(x.memsz for x in all_loads(elf) if x.vaddr == x.paddr) // 4096
    for name, r in zip(KDUMP, results, strict=True):
        assert r["format"] == "diskdump" and r["pages"] == r["pages_reference"] == pages, name
        assert r["only_in_reference"] == r["only_in_file"] == r["differing"] == [], (name, r)
    raw = files[0].read_bytes()
    assert raw.startswith(b"KDUMP   ") and b"aarch64" in raw[:4096]


def test_begin_length_equals_qemus_filtered_dump(rig_case, extracted):
    case = rig_case(FORMATS_CASE)
    ref = case.extra_reference("filter")
    args = rig.extra_reference_arguments("filter", "aarch64")
    out = extracted(FORMATS_CASE, "--begin", hex(args["begin"]), "--length", hex(args["length"]))
    cmp = compare_vmcores(out, ref)
    assert cmp.ranges_a == cmp.ranges_b and cmp.differing_pages == []


def test_paging_maps_the_kernel_and_the_linear_map(rig_case, extracted):
    """QEMU cannot write a paging dump on arm; ours walks TTBR0 and TTBR1.
    Every virtual load's bytes are the guest-physical page they map."""
    case = rig_case(FORMATS_CASE)
    out = extracted(FORMATS_CASE, "--paging")
    loads = all_loads(out)
    assert any(x.vaddr == 0xFFFF000000000000 and x.paddr == 0x40000000 for x in loads)
    assert any(x.vaddr >= 0xFFFF800000000000 for x in loads)
    ref = {x.paddr: x for x in all_loads(case.reference)}
    (ram,) = ref.values()
    with open(out, "rb") as a, open(case.reference, "rb") as b:
        for x in loads[:200]:
            n = min(x.memsz, 1 << 16)
            a.seek(x.offset)
            b.seek(ram.offset + x.paddr - ram.paddr)
            assert a.read(n) == b.read(n), hex(x.vaddr)


def test_a_vcpu_stopped_before_the_kernel(rig_case, extracted):
    """A guest paused before it ran (MMU off): the same dump as QEMU's, and
    no VMCOREINFO to confirm."""
    early = [n for n in CASES if rig.STANDARD_CASES[n].start_paused]
    if not early:
        pytest.skip("no such case in the rig")
    case = rig_case(early[0])
    info = json.loads(run_cli("info", "--json", case.core, check=True).stdout)
    assert info["arch"] == "aarch64"
    assert all(c["ttbr1"] == 0 for c in info["vcpu_states"])
