"""Test rig: real QEMU process cores with a matching reference guest dump.

A *case* is made by booting a small Linux guest (Debian cloud kernel plus a
busybox initramfs, see guest.sh and init; an x86_64 or an aarch64 guest, see
ARCHES) under QEMU/TCG, waiting for it to
print RIG-READY, pausing it, having QEMU write the guest memory over QMP
(``dump-guest-memory``, ELF, paging off: the reference) and finally killing
QEMU with SIGABRT so that the kernel writes QEMU's process core. In a *panic*
case the guest panics (sysrq 'c') after RIG-READY and is paused in panic().
A case may also run QMP commands before the pause (memory hotplug, resizing
virtio-mem), boot no kernel at all (SeaBIOS only; ready when it finds nothing
to boot), start paused (-S: the vCPUs never ran, ready as soon as QEMU is up),
keep or delete files QEMU made in the case directory (a RAM
backing file), or run under KVM: where KVM does not boot the guest, making
the case raises RigUnavailable (remembered until the next boot) and its
tests are skipped.

The guest's debug vmlinux (for crash and drgn) is ``vmlinux(arch)``, or a
case's ``Case.vmlinux``; ``case_names(arch)`` lists the standard cases of one
guest architecture.

Cases are cached in ``$RIG_CACHE/cases/<name>/``; ``ensure_case`` makes one
only when it is missing or stale. Only the standard library is used, so that
Tests import it as ``support.rig``; its shell scripts stay in tests/rig.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "CaseSpec",
    "Case",
    "GuestArch",
    "ARCHES",
    "RigError",
    "QMPError",
    "RigUnavailable",
    "QMP",
    "STANDARD_CASES",
    "AARCH64_CASES",
    "case_names",
    "RIG_DIR",
    "rig_cache",
    "guest_dir",
    "cases_dir",
    "case_dir",
    "qemu_dir",
    "qemu_binary",
    "stripped_qemu",
    "kept_debug_file",
    "case_qemu_binary",
    "STRIPPED_CASES",
    "DWARF_CASES",
    "qemu_src",
    "qemu_stamp",
    "wait_for_qemu_build",
    "ensure_guest",
    "vmlinux",
    "cached_case",
    "ensure_case",
    "qemu_argv",
    "extra_reference_arguments",
]

RIG_DIR = Path(__file__).resolve().parent.parent / "rig"  # the shell scripts
DEFAULT_CACHE = "/var/cache/qemu-vmcore-rig"
# Bump when the way cases are made or what meta.json holds changes: cached
# cases with another format are made again.
CASE_FORMAT = 1


class RigError(RuntimeError):
    """A case could not be made (missing build, guest never ready, ...)."""


class QMPError(RigError):
    """QEMU answered a QMP command with an error."""


class RigUnavailable(RigError):
    """This machine cannot make the case (e.g. KVM does not boot the guest here)."""


# --------------------------------------------------------------------------
# guest architectures


@dataclass(frozen=True)
class GuestArch:
    """What differs between the rig's guest architectures (CaseSpec.arch)."""

    name: str  # QEMU's: qemu-system-<name>, and CaseSpec.arch
    debian: str  # Debian's: guest.sh's argument, the linux-image-*-cloud-<debian> kernel
    guest_subdir: str  # the guest's cache directory under rig_cache()
    console: str  # the kernel's console= (the machine's first serial port)
    ram_base: int  # guest-physical address where the machine's RAM starts
    # QEMU arguments before -machine (firmware search paths) and after it (-cpu).
    firmware_args: tuple[str, ...] = ()
    cpu_args: tuple[str, ...] = ()


ARCHES: dict[str, GuestArch] = {
    a.name: a
    for a in (
        GuestArch(
            "x86_64", "amd64", "guest", "ttyS0", 0,
            firmware_args=("-L", "/usr/share/seabios", "-L", "/usr/share/qemu"),
        ),
        # virt boots -kernel with QEMU's own boot stub: no firmware. pauth-impdef:
        # QARMA5 pointer authentication is slow to emulate (on 7.2 the guest took
        # 8.5 s to RIG-READY, 3.8 s with impdef); QEMU's own algorithm keeps PAuth
        # for the guest. 7.2's max defaults to QARMA5, 10.0's to impdef already
        # (since 10.0, for virt-10.0 on; hw_compat_9_2): the flag makes both alike.
        GuestArch(
            "aarch64", "arm64", "guest-arm64", "ttyAMA0", 0x40000000,
            cpu_args=("-cpu", "max,pauth-impdef=on"),
        ),
    )
}  # fmt: skip


def _arch(name: str) -> GuestArch:
    try:
        return ARCHES[name]
    except KeyError:
        raise RigError(f"unknown guest architecture {name!r}; known: {', '.join(ARCHES)}") from None


# --------------------------------------------------------------------------
# specs and cases


@dataclass(frozen=True)
class CaseSpec:
    name: str  # e.g. "q72-pc-512"; also the directory name under cases/
    qemu: str  # "7.2" or "10.0" (short names from common.sh)
    machine: str = "pc"  # "pc" or "q35"; "virt" for aarch64
    mem_mib: int = 512
    smp: int = 1
    fill_mib: int = 0  # MiB of random data the guest puts into a tmpfs
    panic: bool = False  # the guest panics (sysrq 'c') after RIG-READY
    dump_guest_core: bool = True  # -machine ...,dump-guest-core=on|off
    vmcoreinfo_device: bool = True  # -device vmcoreinfo
    reference: bool = True  # make the QMP reference dump
    # Extra QEMU args (dimms etc.); "{dir}" in them is the case directory.
    extra_args: tuple[str, ...] = ()
    # More QMP dumps of the paused guest, by name from EXTRA_REFERENCES, each
    # written to reference-<name> (e.g. QEMU's own kdump-zlib, a paging dump).
    extra_references: tuple[str, ...] = ()
    mem_opts: str = ""  # appended to -m SIZE, e.g. ",slots=4,maxmem=4G"
    accel: str = "tcg"  # "kvm": made only where KVM boots the guest, else RigUnavailable
    # No kernel: the guest stays in SeaBIOS, which finds no boot device.
    firmware_only: bool = False
    # QMP commands run once the guest is ready, before `stop` (hotplug,
    # virtio-mem resizing); ("wait-qom", {path, property, value}) polls qom-get.
    qmp_after_ready: tuple[tuple[str, dict[str, Any]], ...] = ()
    wait_mem_mib: int = 0  # the guest waits until MemTotal grew by this much, then fills
    # Files of the case directory deleted once the core is written.
    delete_after_core: tuple[str, ...] = ()
    # A guest user process plants this many fake VMCOREINFO notes (init).
    hostile_notes: int = 0
    arch: str = "x86_64"  # the guest's architecture, a key of ARCHES
    # -S: the vCPUs never run (still at the reset vector or -kernel's boot
    # stub, MMU off); the case is ready as soon as QEMU's QMP socket is there.
    start_paused: bool = False
    # QEMU runs from a stripped copy of the build (see stripped_qemu), as a
    # distribution ships it: the core's executable carries no debug info.
    stripped: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The spec as it is stored in meta.json (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def matches(self, stored: Any) -> bool:
        """Whether `stored` (a spec from meta.json) describes this spec.

        A field added to CaseSpec after a case was made is missing from its
        stored spec; the case was made with that field's default, so it still
        matches a spec that has the default."""
        if not isinstance(stored, dict):
            return False
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        missing = {k: v for k, v in defaults.items() if k not in stored}
        return {**json.loads(json.dumps(missing)), **stored} == self.as_dict()


@dataclass
class Case:
    """A finished, cached case."""

    spec: CaseSpec
    dir: Path
    core: Path  # QEMU's process core
    reference: Path | None  # QMP dump-guest-memory ELF (format elf, paging false)
    qemu_binary: Path
    qemu_src: Path  # $RIG_CACHE/qemu-<v>/src
    meta: dict  # contents of meta.json

    def extra_reference(self, name: str) -> Path:
        """The file of extra reference `name` (one of spec.extra_references)."""
        if name not in self.spec.extra_references:
            raise RigError(f"case {self.spec.name} has no {name!r} reference")
        return self.dir / f"reference-{name}"

    @property
    def marker(self) -> str:
        """The unique string the guest wrote to its kernel log."""
        return self.meta["marker"]

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def arch(self) -> GuestArch:
        """The guest's architecture (spec.arch)."""
        return _arch(self.spec.arch)

    @property
    def vmlinux(self) -> Path:
        """The debug vmlinux of this case's guest kernel (for crash and drgn)."""
        return guest_dir(self.spec.arch) / "vmlinux"

    def extra_reference_arguments(self, name: str) -> dict[str, Any]:
        """The dump-guest-memory arguments extra reference `name` was made with."""
        self.extra_reference(name)  # checks the name
        return dict(self.meta["extra_references"][name]["arguments"])


#: QMP dump-guest-memory arguments of each extra reference a case can have
#: (on x86_64; see extra_reference_arguments for other guests).
#: "kdump-zlib" is QEMU's flattened kdump (makedumpfile -R reassembles it);
#: "filter" is an ELF dump of [FILTER_BEGIN, FILTER_BEGIN + FILTER_LENGTH):
#: neither end on a range boundary (on pc, it would span the hole at 0xa0000).
#: "paging" is x86 only. target/arm has neither get_paging_enabled nor
#: get_memory_mapping, so on aarch64 QEMU (7.2 and 10.0) finds no vCPU with
#: paging on and, with no error, writes p_vaddr = p_paddr: the very bytes of
#: paging=false ("Obtaining memory mappings is unsupported on this CPU." is
#: only said for a vCPU that has paging on but no get_memory_mapping).
FILTER_BEGIN = 0x9F000
FILTER_LENGTH = 0x3FF0000
EXTRA_REFERENCES: dict[str, dict[str, Any]] = {
    "kdump-zlib": {"format": "kdump-zlib", "paging": False},
    "paging": {"format": "elf", "paging": True},
    "filter": {"format": "elf", "paging": False, "begin": FILTER_BEGIN, "length": FILTER_LENGTH},
}


def extra_reference_arguments(name: str, arch: str = "x86_64") -> dict[str, Any]:
    """QMP dump-guest-memory arguments of extra reference `name` for a guest of `arch`.

    The filter range lies at the same offset into RAM on every machine:
    [ram_base + FILTER_BEGIN, ... + FILTER_LENGTH), on aarch64's virt
    [0x4009f000, 0x4408f000), inside its RAM (which starts at 0x40000000)."""
    arguments = dict(EXTRA_REFERENCES[name])
    if "begin" in arguments:
        arguments["begin"] += _arch(arch).ram_base
    return arguments


MIB = 1 << 20
_VM0 = "/machine/peripheral/vm0"


def _virtio_mem_case(name: str, qemu: str, machine: str) -> CaseSpec:
    """virtio-mem with part of its 512 MiB plugged: 128 MiB at boot (the guest
    fills memory once it has them), 320 MiB after RIG-READY."""
    return CaseSpec(
        name, qemu=qemu, machine=machine, mem_mib=512, smp=1, fill_mib=128,
        mem_opts=",maxmem=2G", wait_mem_mib=32,
        extra_args=("-object", "memory-backend-ram,id=vmem0,size=512M",
                    "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=128M"),
        qmp_after_ready=(
            ("qom-set", {"path": _VM0, "property": "requested-size", "value": 320 * MIB}),
            ("wait-qom", {"path": _VM0, "property": "size", "value": 320 * MIB}),
        ),
    )  # fmt: skip


def _main_ram_backend(backend: str) -> tuple[str, ...]:
    """Guest RAM (the machine's memory backend) from ``backend`` (id ram0)."""
    return ("-object", f"{backend},id=ram0,size=512M", "-machine", "memory-backend=ram0")


#: The memory layouts people run (README, "Tests"): machine types x QEMU
#: versions x vCPUs, RAM above 4 GiB, memory devices, shared and file-backed
#: RAM, a guest still in its firmware, KVM.
LAYOUT_CASES: tuple[CaseSpec, ...] = (
    CaseSpec("q72-q35-smp4", qemu="7.2", machine="q35", mem_mib=512, smp=4, fill_mib=32),
    CaseSpec("q10-pc-smp4", qemu="10.0", machine="pc", mem_mib=512, smp=4, fill_mib=32),
    # pc on 7.2 with 256 MiB below the PCI hole and 256 MiB above 4 GiB.
    CaseSpec(
        "q72-pc-hi",
        qemu="7.2",
        machine="pc",
        mem_mib=512,
        fill_mib=64,
        extra_args=("-machine", "max-ram-below-4g=256M"),
    ),  # fmt: skip
    # A pc-dimm plugged at boot (device memory starts at 4 GiB).
    CaseSpec(
        "q10-q35-dimm",
        qemu="10.0",
        machine="q35",
        mem_mib=512,
        fill_mib=64,
        mem_opts=",slots=4,maxmem=4G",
        extra_args=(
            "-object",
            "memory-backend-ram,id=mem1,size=256M",
            "-device",
            "pc-dimm,id=dimm1,memdev=mem1",
        ),
    ),  # fmt: skip
    # One pc-dimm plugged at boot, a second hot-plugged over QMP.
    CaseSpec(
        "q72-pc-dimm-hotplug",
        qemu="7.2",
        machine="pc",
        mem_mib=512,
        fill_mib=64,
        mem_opts=",slots=4,maxmem=4G",
        extra_args=(
            "-object",
            "memory-backend-ram,id=mem1,size=128M",
            "-device",
            "pc-dimm,id=dimm1,memdev=mem1",
        ),
        qmp_after_ready=(
            ("object-add", {"qom-type": "memory-backend-ram", "id": "mem2", "size": 128 * MIB}),
            ("device_add", {"driver": "pc-dimm", "id": "dimm2", "memdev": "mem2"}),
        ),
    ),  # fmt: skip
    _virtio_mem_case("q10-q35-virtiomem", "10.0", "q35"),
    _virtio_mem_case("q72-pc-virtiomem", "7.2", "pc"),
    # Guest RAM in a memfd (share=on), as vhost-user setups have it.
    CaseSpec(
        "q10-pc-memfd",
        qemu="10.0",
        machine="pc",
        mem_mib=512,
        fill_mib=64,
        extra_args=_main_ram_backend("memory-backend-memfd,share=on"),
    ),  # fmt: skip
    # Guest RAM in a shared file, which a default core leaves out: kept in the
    # case directory, so qemu-vmcore reads it from there ...
    CaseSpec(
        "q10-q35-file",
        qemu="10.0",
        machine="q35",
        mem_mib=512,
        fill_mib=64,
        extra_args=_main_ram_backend("memory-backend-file,share=on,mem-path={dir}/guest-ram"),
    ),  # fmt: skip
    # ... or deleted once the core is written.
    CaseSpec(
        "q72-pc-file-gone",
        qemu="7.2",
        machine="pc",
        mem_mib=512,
        fill_mib=64,
        reference=False,
        delete_after_core=("guest-ram",),
        extra_args=_main_ram_backend("memory-backend-file,share=on,mem-path={dir}/guest-ram"),
    ),  # fmt: skip
    # No kernel: SeaBIOS found nothing to boot; the vCPUs never left 32-bit mode.
    CaseSpec("q72-pc-bios", qemu="7.2", machine="pc", mem_mib=128, firmware_only=True),
    CaseSpec("q10-q35-bios", qemu="10.0", machine="q35", mem_mib=128, smp=2, firmware_only=True),
    # q72-pc-512 under KVM, where KVM boots the guest (see KVM_READY_TIMEOUT).
    CaseSpec("q72-pc-kvm", qemu="7.2", machine="pc", mem_mib=512, accel="kvm"),
)


def _virt(name: str, qemu: str, **kw: Any) -> CaseSpec:
    """An aarch64 guest on QEMU's virt machine (-cpu max), 512 MiB unless told."""
    return CaseSpec(name, qemu=qemu, machine="virt", arch="aarch64", **{"mem_mib": 512, **kw})


#: The aarch64 guests (-machine virt -cpu max, RAM from 0x40000000), each
#: compared with QMP's dump like the x86 ones. No "paging" reference: on
#: arm QEMU writes no virtual addresses (see EXTRA_REFERENCES).
AARCH64_CASES: tuple[CaseSpec, ...] = (
    _virt("a10-virt-512", "10.0", fill_mib=32),
    _virt("a72-virt-512", "7.2", fill_mib=32),
    _virt("a10-virt-smp2", "10.0", smp=2, fill_mib=64),
    # 4 GiB: RAM 0x40000000-0x140000000 crosses 4 GiB.
    _virt("a10-virt-4g", "10.0", mem_mib=4096, fill_mib=64),
    # The guest panics (sysrq 'c') and QEMU is stopped in panic().
    _virt("a10-virt-panic", "10.0", smp=2, panic=True),
    _virt("a72-virt-panic", "7.2", smp=2, panic=True),
    # No -device vmcoreinfo: QEMU's own dump then has no VMCOREINFO note.
    _virt("a10-virt-novmci", "10.0", smp=2, vmcoreinfo_device=False),
    # QEMU's own kdump-zlib and begin/length dumps, to check ours against.
    _virt("a10-virt-formats", "10.0", smp=2, fill_mib=64,
          extra_references=("kdump-zlib", "filter")),
    # Started with -S: the vCPUs never ran. RAM holds what -kernel put there
    # (QEMU's boot stub, the kernel, the initrd, the DTB), the MMU is off, the
    # vmcoreinfo device is empty and the console log is empty.
    _virt("a10-virt-early", "10.0", smp=2, start_paused=True),
)  # fmt: skip

#: Guests run under a stripped QEMU (tests/e2e/test_e2e_debuginfo.py): their
#: cores need the debug info found elsewhere (debuginfod, /usr/lib/debug,
#: .gnu_debuglink, --debug-file) or a profile, so the tests that read every
#: case with the build's own DWARF leave them out (case_names, DWARF_CASES).
STRIPPED_CASES: tuple[CaseSpec, ...] = (
    CaseSpec("q10-q35-stripped", qemu="10.0", machine="q35", mem_mib=512, smp=2, fill_mib=32,
             stripped=True),
)  # fmt: skip

#: Cases only the benchmarks use: make_case.py (and so CI) makes them only
#: when named, since they cost minutes and tens of GB of disk.
BENCH_ONLY = frozenset({"q10-q35-16g", "q10-q35-2g-kdump"})

STANDARD_CASES: dict[str, CaseSpec] = {
    s.name: s
    for s in (
        CaseSpec("q72-pc-512", qemu="7.2", machine="pc", mem_mib=512, smp=1),
        CaseSpec("q10-q35-512", qemu="10.0", machine="q35", mem_mib=512, smp=2, fill_mib=256),
        # 4608 MiB on q35: 2 GiB below 4 GiB, 2.5 GiB above.
        CaseSpec("q10-q35-4608", qemu="10.0", machine="q35", mem_mib=4608, smp=1, fill_mib=64),
        # The large case of the scale benchmark (bench/scale.py): 16 GiB, of which
        # the guest writes 2 GiB. Its QMP reference alone is 16 GB (see BENCH_ONLY).
        CaseSpec("q10-q35-16g", qemu="10.0", machine="q35", mem_mib=16384, smp=2, fill_mib=2048),
        # The kdump benchmark's guest (bench/extract.py --formats-case): 2 GiB,
        # 600 MiB of random data, with QEMU's own kdump-zlib dump to race.
        CaseSpec(
            "q10-q35-2g-kdump",
            qemu="10.0",
            machine="q35",
            mem_mib=2048,
            smp=2,
            fill_mib=600,
            extra_references=("kdump-zlib",),
        ),  # fmt: skip
        CaseSpec(
            "q72-pc-nodump",
            qemu="7.2",
            machine="pc",
            mem_mib=512,
            dump_guest_core=False,
            reference=False,
        ),
        # The guest panics (sysrq 'c') and QEMU is stopped in panic().
        CaseSpec("q10-q35-panic", qemu="10.0", machine="q35", mem_mib=512, smp=2, panic=True),
        CaseSpec("q72-pc-panic", qemu="7.2", machine="pc", mem_mib=512, smp=2, panic=True),
        CaseSpec("q72-pc-smp2", qemu="7.2", machine="pc", mem_mib=512, smp=2, fill_mib=32),
        # No -device vmcoreinfo: QEMU's own dump then has no VMCOREINFO note.
        # QEMU's own kdump-zlib, paging and begin/length dumps, to check ours against.
        CaseSpec(
            "q10-q35-formats",
            qemu="10.0",
            machine="q35",
            mem_mib=512,
            smp=2,
            fill_mib=128,
            extra_references=("kdump-zlib", "paging", "filter"),
        ),
        CaseSpec(
            "q10-q35-novmci",
            qemu="10.0",
            machine="q35",
            mem_mib=512,
            smp=2,
            vmcoreinfo_device=False,
        ),
        # A hostile guest: user space plants 60 fake VMCOREINFO notes in tmpfs
        # pages; with no vmcoreinfo device, only the RAM scan finds the real one.
        CaseSpec(
            "q10-q35-hostile",
            qemu="10.0",
            machine="q35",
            mem_mib=512,
            smp=2,
            fill_mib=64,
            vmcoreinfo_device=False,
            hostile_notes=60,
        ),
    )
    + LAYOUT_CASES
    + AARCH64_CASES
    + STRIPPED_CASES
}


def case_names(arch: str = "x86_64") -> list[str]:
    """Names of the standard cases of guest architecture `arch`, in STANDARD_CASES order.

    Leaves out the stripped-QEMU cases, whose debug info is not with the core."""
    _arch(arch)
    return [n for n, s in STANDARD_CASES.items() if s.arch == arch and not s.stripped]


#: Every case whose QEMU carries its debug info (all but STRIPPED_CASES and
#: BENCH_ONLY): what the tests that read every case through DWARF take.
DWARF_CASES: tuple[str, ...] = tuple(
    n for n, s in STANDARD_CASES.items() if not s.stripped and n not in BENCH_ONLY
)


# --------------------------------------------------------------------------
# paths


def rig_cache() -> Path:
    """The rig's cache directory (same rule as common.sh)."""
    return Path(os.environ.get("QEMU_VMCORE_RIG_CACHE") or DEFAULT_CACHE)


def guest_dir(arch: str = "x86_64") -> Path:
    """The cache directory guest.sh fills for a guest of `arch` (guest/ for x86_64)."""
    return rig_cache() / _arch(arch).guest_subdir


def cases_dir() -> Path:
    return rig_cache() / "cases"


def case_dir(name: str) -> Path:
    return cases_dir() / name


def qemu_dir(version: str) -> Path:
    return rig_cache() / f"qemu-{version}"


def qemu_binary(version: str, arch: str = "x86_64") -> Path:
    """QEMU `version`'s qemu-system-<arch> (build-qemu.sh builds both in one tree)."""
    return qemu_dir(version) / "build" / f"qemu-system-{_arch(arch).name}"


def stripped_dir(version: str) -> Path:
    """Where stripped_qemu() puts QEMU `version`'s stripped binaries."""
    return qemu_dir(version) / "stripped"


def kept_debug_file(version: str, arch: str = "x86_64") -> Path:
    """The debug info stripped from qemu-system-<arch>, kept where no debugger looks."""
    return qemu_dir(version) / "debug-kept" / f"qemu-system-{_arch(arch).name}.debug"


def stripped_qemu(version: str, arch: str = "x86_64") -> Path:
    """A stripped copy of QEMU `version`'s qemu-system-<arch>, made once per build.

    As distributions ship it: ``objcopy --strip-debug`` keeps the build-id,
    and a ``.gnu_debuglink`` names ``qemu-system-<arch>.debug`` (the file
    kept_debug_file() holds, which is neither next to the binary nor under
    /usr/lib/debug, so nothing finds it unless a test puts it there).
    """
    binary = qemu_binary(version, arch)
    out = stripped_dir(version) / binary.name
    debug = kept_debug_file(version, arch)
    stamp = out.with_name(binary.name + ".stamp")
    want = f"{qemu_stamp(version)} {binary.stat().st_size} {binary.stat().st_mtime_ns}"
    with _case_lock(f"stripped-{version}-{binary.name}"):
        if out.is_file() and debug.is_file() and stamp.is_file() and stamp.read_text() == want:
            return out
        for d in (out.parent, debug.parent):
            d.mkdir(parents=True, exist_ok=True)
        tmp_debug, tmp_out = debug.with_suffix(".tmp"), out.with_suffix(".tmp")
        subprocess.run(["objcopy", "--only-keep-debug", binary, tmp_debug], check=True)
        # The debuglink records the base name and a CRC of the debug file.
        link = tmp_debug.with_name(debug.name)
        os.replace(tmp_debug, link)
        subprocess.run(
            ["objcopy", "--strip-debug", f"--add-gnu-debuglink={link}", binary, tmp_out],
            check=True,
        )
        os.replace(tmp_out, out)
        stamp.write_text(want)
        return out


def case_qemu_binary(spec: CaseSpec) -> Path:
    """The QEMU executable a case's guest runs under (stripped for spec.stripped)."""
    if spec.stripped:
        return stripped_dir(spec.qemu) / qemu_binary(spec.qemu, spec.arch).name
    return qemu_binary(spec.qemu, spec.arch)


def qemu_src(version: str) -> Path:
    return qemu_dir(version) / "src"


def qemu_stamp(version: str) -> str | None:
    """The Debian version of a finished QEMU build, None if not built (yet)."""
    try:
        return (qemu_dir(version) / "stamp").read_text().strip()
    except FileNotFoundError:
        return None


def wait_for_qemu_build(version: str, timeout: float, arch: str = "x86_64") -> str:
    """Wait until build-qemu.sh has finished QEMU `version`; returns the stamp."""
    deadline = time.monotonic() + timeout
    while True:
        stamp = qemu_stamp(version)
        if stamp is not None and qemu_binary(version, arch).is_file():
            return stamp
        if time.monotonic() >= deadline:
            raise RigError(
                f"QEMU {version} not built after {timeout:.0f} s "
                f"({qemu_dir(version)}/stamp missing)"
            )
        time.sleep(10)


def _check_qemu_build(version: str, arch: str = "x86_64") -> str:
    stamp = qemu_stamp(version)
    binary = qemu_binary(version, arch)
    if stamp is None or not binary.is_file():
        raise RigError(
            f"QEMU {version} is not built: {qemu_dir(version)}/stamp or {binary} missing; "
            f"run tests/rig/build-qemu.sh {version}"
        )
    return stamp


# --------------------------------------------------------------------------
# guest


def _read(path: Path) -> str:
    return path.read_text().strip()


def ensure_guest(arch: str = "x86_64") -> dict[str, str]:
    """Run guest.sh for `arch` (idempotent) and describe the guest it left in the cache."""
    env = dict(os.environ, QEMU_VMCORE_RIG_CACHE=str(rig_cache()))
    res = subprocess.run(
        ["bash", str(RIG_DIR / "guest.sh"), _arch(arch).debian],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if res.returncode != 0:
        raise RigError(f"guest.sh failed ({res.returncode}):\n{res.stdout[-4000:]}")
    return _guest_info(arch)


def vmlinux(arch: str = "x86_64") -> Path:
    """The `arch` guest kernel's debug vmlinux (runs guest.sh first; idempotent)."""
    ensure_guest(arch)
    return guest_dir(arch) / "vmlinux"


def _guest_info(arch: str = "x86_64") -> dict[str, str]:
    g = guest_dir(arch)
    return {
        "kernel_version": _read(g / "kernel-version"),
        "kernel_package": _read(g / "kernel-package"),
        "initramfs_inputs": _read(g / "initramfs.inputs"),
    }


# --------------------------------------------------------------------------
# QMP


class QMP:
    """A minimal synchronous QMP client over a unix socket."""

    def __init__(self, path: Path | str, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._rfile = self.sock.makefile("rb")
        self._id = 0
        self.events: list[dict] = []
        self.greeting = self._recv()
        if "QMP" not in self.greeting:
            raise RigError(f"unexpected QMP greeting: {self.greeting!r}")
        self.execute("qmp_capabilities")

    def _recv(self) -> dict:
        line = self._rfile.readline()
        if not line:
            raise RigError("QMP connection closed by QEMU")
        return json.loads(line)

    def execute(
        self, command: str, arguments: dict | None = None, timeout: float | None = None
    ) -> Any:
        self._id += 1
        msg: dict[str, Any] = {"execute": command, "id": self._id}
        if arguments:
            msg["arguments"] = arguments
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                resp = self._recv()
                if "event" in resp:
                    self.events.append(resp)
                    continue
                if resp.get("id") != self._id:
                    continue
                if "error" in resp:
                    err = resp["error"]
                    raise QMPError(f"QMP {command} failed: {err.get('class')}: {err.get('desc')}")
                return resp.get("return")
        finally:
            self.sock.settimeout(old)

    def close(self) -> None:
        try:
            self._rfile.close()
        finally:
            self.sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# cases


def qemu_argv(spec: CaseSpec, dir: Path, marker: str) -> list[str]:
    """The QEMU command line for a case (absolute paths; cwd is `dir`)."""
    arch = _arch(spec.arch)
    g = guest_dir(spec.arch)
    argv = [
        str(case_qemu_binary(spec)),
        *arch.firmware_args,
        "-machine",
        f"{spec.machine},dump-guest-core={'on' if spec.dump_guest_core else 'off'}",
        *arch.cpu_args,
        "-accel",
        spec.accel,
        "-m",
        f"{spec.mem_mib}{spec.mem_opts}",
        "-smp",
        str(spec.smp),
        *_boot_args(spec, dir, marker, g),
        "-display",
        "none",
        "-nodefaults",
        "-serial",
        f"file:{dir / 'serial.log'}",
        "-qmp",
        f"unix:{dir / 'qmp.sock'},server=on,wait=off",
        "-no-reboot",
    ]
    if spec.start_paused:
        argv.append("-S")
    if spec.vmcoreinfo_device:
        argv += ["-device", "vmcoreinfo"]
    argv += [a.replace("{dir}", str(dir)) for a in spec.extra_args]
    return argv


#: SeaBIOS's last words when it finds nothing to boot (on its debug port,
#: 0x402), the readiness line of a firmware-only case.
FIRMWARE_READY = b"No bootable device"


def _boot_args(spec: CaseSpec, dir: Path, marker: str, g: Path) -> list[str]:
    if spec.firmware_only:
        if spec.arch != "x86_64":
            raise RigError(f"{spec.name}: firmware_only is SeaBIOS's, x86_64 only")
        return ["-chardev", f"file,id=fwlog,path={dir / 'firmware.log'}",
                "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]  # fmt: skip
    console = _arch(spec.arch).console
    append = f"console={console} panic=0 rig.marker={marker} rig.fill={spec.fill_mib}"
    append += " rig.panic=1" if spec.panic else ""
    append += f" rig.waitmem={spec.wait_mem_mib}" if spec.wait_mem_mib else ""
    append += f" rig.hostile={spec.hostile_notes}" if spec.hostile_notes else ""
    return ["-kernel", str(g / "vmlinuz"), "-initrd", str(g / "initramfs.cpio.gz"),
            "-append", append]  # fmt: skip


def case_files(spec: CaseSpec) -> list[str]:
    """Files QEMU makes in the case directory ("{dir}/NAME" in extra_args) that stay."""
    names = []
    for arg in spec.extra_args:
        for part in arg.split(","):
            _, sep, rest = part.partition("{dir}/")
            if sep and rest and rest not in spec.delete_after_core:
                names.append(rest)
    return names


@contextmanager
def _case_lock(name: str) -> Iterator[None]:
    cases_dir().mkdir(parents=True, exist_ok=True)
    with open(cases_dir() / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _case_from_meta(spec: CaseSpec, d: Path, meta: dict) -> Case:
    return Case(
        spec=spec,
        dir=d,
        core=d / "core",
        reference=(d / "reference.elf") if spec.reference else None,
        qemu_binary=case_qemu_binary(spec),
        qemu_src=qemu_src(spec.qemu),
        meta=meta,
    )


def _valid_cached(spec: CaseSpec, guest: dict[str, str], stamp: str) -> Case | None:
    d = case_dir(spec.name)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    if (
        meta.get("case_format") != CASE_FORMAT
        or not spec.matches(meta.get("spec"))
        or meta.get("qemu_version_stamp") != stamp
        or meta.get("kernel_version") != guest["kernel_version"]
        or meta.get("initramfs_inputs") != guest["initramfs_inputs"]
    ):
        return None
    case = _case_from_meta(spec, d, meta)
    if not case.core.is_file() or case.core.stat().st_size != meta["core"]["size"]:
        return None
    if case.reference is not None and (
        not case.reference.is_file() or case.reference.stat().st_size != meta["reference"]["size"]
    ):
        return None
    extra = meta.get("extra_references") or {}
    for name in spec.extra_references:
        path = case.extra_reference(name)
        if name not in extra or not path.is_file() or path.stat().st_size != extra[name]["size"]:
            return None
    files = meta.get("files") or {}
    for name in case_files(spec):
        path = d / name
        if name not in files or not path.is_file() or path.stat().st_size != files[name]["size"]:
            return None
    return case


def cached_case(spec: CaseSpec) -> Case | None:
    """The cached case for `spec` if it is there and up to date, else None.

    Makes nothing (but does not run guest.sh either, so a changed init script
    is only noticed by ensure_case)."""
    stamp = qemu_stamp(spec.qemu)
    if stamp is None:
        return None
    try:
        guest = _guest_info(spec.arch)
    except FileNotFoundError:
        return None
    return _valid_cached(spec, guest, stamp)


def ensure_case(spec: CaseSpec, force: bool = False) -> Case:
    """Return the case for `spec`, making it if missing or stale (or `force`)."""
    guest = ensure_guest(spec.arch)
    stamp = _check_qemu_build(spec.qemu, spec.arch)
    if spec.stripped:
        stripped_qemu(spec.qemu, spec.arch)
    with _case_lock(spec.name):
        if not force:
            case = _valid_cached(spec, guest, stamp)
            if case is not None:
                return case
            _check_unavailable(spec, guest, stamp)
        return _make_case(spec, guest, stamp)


# -- cases this machine cannot make (KVM) ------------------------------------

#: How long a KVM guest may take to boot before KVM counts as not working
#: here (TCG boots the rig guest in about 5 s).
KVM_READY_TIMEOUT = 90.0
#: What QEMU prints when KVM cannot run the guest (e.g. nested KVM's
#: emulation failures); QEMU then pauses the guest, so stop waiting at once.
KVM_FAILURE_LINES = (b"KVM internal error", b"emulation failure", b"Could not access KVM")


def _unavailable_file(spec: CaseSpec) -> Path:
    return cases_dir() / f".{spec.name}.unavailable.json"


def _unavailable_key(spec: CaseSpec, guest: dict[str, str], stamp: str) -> dict[str, Any]:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return {"spec": spec.as_dict(), "boot_id": boot_id, "stamp": stamp, **guest}


def _check_unavailable(spec: CaseSpec, guest: dict[str, str], stamp: str) -> None:
    """Raise RigUnavailable if making `spec` already failed that way since this boot."""
    if spec.accel == "tcg":
        return
    try:
        noted = json.loads(_unavailable_file(spec).read_text())
    except (FileNotFoundError, ValueError):
        return
    if noted.get("key") == _unavailable_key(spec, guest, stamp):
        raise RigUnavailable(
            f"{noted['reason']} (found on {noted['when']}; delete "
            f"{_unavailable_file(spec)} to try again)"
        )


def _unavailable(spec: CaseSpec, guest: dict[str, str], stamp: str, reason: str) -> RigError:
    """Note (for this boot) that `spec` cannot be made here; the error to raise."""
    note = {
        "key": _unavailable_key(spec, guest, stamp),
        "reason": reason,
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _unavailable_file(spec).write_text(json.dumps(note, indent=2) + "\n")
    return RigUnavailable(reason)


def _file_sizes(p: Path) -> dict[str, int]:
    st = p.stat()
    return {"size": st.st_size, "disk_bytes": st.st_blocks * 512}


def _tail(p: Path, n: int = 40) -> str:
    try:
        lines = p.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no file)"
    return "\n".join(lines[-n:])


def _check_core_pattern() -> str:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern or "%" in pattern:
        raise RigError(
            f"kernel.core_pattern is {pattern!r}; the rig needs a plain file name "
            "such as 'core' (sysctl -w kernel.core_pattern=core)"
        )
    return pattern


def _preexec() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


# What the guest's console shows once it panicked: panic()'s first line, and
# the last one it prints before it spins (panic=0: no reboot). The arm64
# kernel prints the same two lines (sysrq 'c' calls panic() on both).
PANIC_LINES = ("Kernel panic - not syncing", "sysrq triggered crash")
PANIC_END_LINE = "---[ end Kernel panic"


def _wait_for_panic(serial: Path, proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """Wait until the guest's console shows its panic, then ~1 s more.

    Returns what meta.json records under "panic"; ``seen`` is False if no
    panic line appeared within `timeout` seconds (the case is still made)."""
    t0 = time.monotonic()
    t_seen: float | None = None
    ended = False
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        text = serial.read_text(errors="replace")
        if t_seen is None and any(p in text for p in PANIC_LINES):
            t_seen = time.monotonic()
        ended = PANIC_END_LINE in text
        # panic() prints its end line after stopping the other CPUs; give it
        # a few seconds once the first line is there.
        if ended or (t_seen is not None and time.monotonic() - t_seen > 10.0):
            break
        time.sleep(0.25)
    seen = t_seen is not None
    if proc.poll() is not None:
        raise RigError(f"QEMU exited ({proc.returncode}) after the guest's panic\n{_tail(serial)}")
    if seen:
        time.sleep(1.0)  # let the last console output and the CPUs settle
    lines = [
        ln.strip()
        for ln in serial.read_text(errors="replace").splitlines()
        if any(p in ln for p in PANIC_LINES)
    ]
    return {
        "seen": seen,
        "end_line_seen": ended,
        "message": lines[0] if lines else None,
        "wait_seconds": round(time.monotonic() - t0, 3),
    }


def _elf_references(spec: CaseSpec, d: Path) -> list[Path]:
    """The case's ELF references (QMP's dumps in format elf)."""
    paths = [d / "reference.elf"] if spec.reference else []
    for name in spec.extra_references:
        if extra_reference_arguments(name, spec.arch)["format"] == "elf":
            paths.append(d / f"reference-{name}")
    return paths


def _dig_holes(paths: list[Path]) -> None:
    """Turn the zero blocks of each file into holes (fallocate --dig-holes).

    QEMU writes every byte of guest RAM into an ELF dump, never-touched RAM
    too; the bytes read back are the same, and a mostly empty guest (the
    4 GiB ones) then takes little disk. Where the file system cannot punch
    holes the file simply stays as it is."""
    for path in paths:
        subprocess.run(
            ["fallocate", "--dig-holes", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def _extra_references(qmp: QMP, spec: CaseSpec, d: Path, timeout: float) -> dict[str, Any]:
    """Write each of the spec's extra references with QMP; what meta.json records."""
    out: dict[str, Any] = {}
    for name in spec.extra_references:
        arguments = extra_reference_arguments(name, spec.arch)
        path = d / f"reference-{name}"
        t = time.monotonic()
        qmp.execute("dump-guest-memory", {**arguments, "protocol": f"file:{path}"}, timeout=timeout)
        seconds = time.monotonic() - t
        out[name] = {
            "path": path.name,
            "arguments": arguments,
            "seconds": round(seconds, 3),
            **_file_sizes(path),
        }
    return out


def _wait_ready(spec: CaseSpec, d: Path, proc: subprocess.Popen, t0: float, timeout: float) -> None:
    """Wait for the guest's readiness line: RIG-READY on its console, or, with
    no kernel, SeaBIOS giving up on its debug port; a guest started paused
    (-S) is ready once QEMU listens on its QMP socket.

    :raises RigError: QEMU exited, failed (KVM), or the guest was not ready in time.
    """
    watch, line = (d / "firmware.log", FIRMWARE_READY) if spec.firmware_only else (
        d / "serial.log", b"RIG-READY")  # fmt: skip
    if spec.accel != "tcg":
        timeout = min(timeout, KVM_READY_TIMEOUT)
    while True:
        if spec.start_paused and (d / "qmp.sock").exists():
            return
        if not spec.start_paused and watch.exists() and line in watch.read_bytes():
            return
        log = (d / "qemu.log").read_bytes()
        failed = next((x for x in KVM_FAILURE_LINES if x in log), None)
        if proc.poll() is not None or failed:
            what = f"exited ({proc.returncode})" if failed is None else f"said {failed.decode()!r}"
            raise RigError(
                f"QEMU {what} before {line.decode()}\n"
                f"qemu.log:\n{_tail(d / 'qemu.log')}\n{watch.name}:\n{_tail(watch)}"
            )
        if time.monotonic() - t0 > timeout:
            empty = not watch.exists() or watch.stat().st_size == 0
            seen = f"{watch.name} is empty" if empty else f"{watch.name}:\n{_tail(watch)}"
            raise RigError(
                f"guest not ready after {timeout:.0f} s; {seen}\nqemu.log:\n{_tail(d / 'qemu.log')}"
            )
        time.sleep(0.25)


#: How long a "wait-qom" step waits for the property by default (seconds).
QOM_WAIT_TIMEOUT = 120.0


def _run_qmp_steps(qmp: QMP, steps: tuple[tuple[str, dict[str, Any]], ...]) -> list[dict]:
    """Run a case's QMP steps; what meta.json records of them.

    ("wait-qom", {"path", "property", "value"[, "timeout"]}) polls qom-get
    until the property has the value (e.g. virtio-mem's ``size`` once the
    guest plugged what ``requested-size`` asks for).
    """
    out = []
    for command, arguments in steps:
        t = time.monotonic()
        if command == "wait-qom":
            want, timeout = arguments["value"], arguments.get("timeout", QOM_WAIT_TIMEOUT)
            query = {"path": arguments["path"], "property": arguments["property"]}
            while (got := qmp.execute("qom-get", query)) != want:
                if time.monotonic() - t > timeout:
                    raise RigError(f"{query} is {got!r}, not {want!r}, after {timeout:.0f} s")
                time.sleep(0.25)
            result: Any = got
        else:
            result = qmp.execute(command, arguments)
        out.append({"command": command, "arguments": arguments, "return": result,
                    "seconds": round(time.monotonic() - t, 3)})  # fmt: skip
    return out


def _make_case(spec: CaseSpec, guest: dict[str, str], stamp: str) -> Case:
    pattern = _check_core_pattern()
    d = case_dir(spec.name)
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    # reference (~RAM size) plus a core of up to RAM size plus QEMU itself
    need = (spec.mem_mib * (2 + len(spec.extra_references) if spec.reference else 1) + 1024) << 20
    free = shutil.disk_usage(d).free
    if free < need:
        raise RigError(
            f"not enough disk for case {spec.name}: {free >> 20} MiB free, ~{need >> 20} MiB needed"
        )

    marker = f"{spec.name}-{uuid.uuid4().hex[:12]}"
    argv = qemu_argv(spec, d, marker)
    serial = d / "serial.log"
    qmp_sock = d / "qmp.sock"
    ready_timeout = 120.0 + spec.fill_mib / 10.0 + spec.mem_mib / 100.0
    dump_timeout = 300.0 + spec.mem_mib / 20.0
    exit_timeout = 300.0 + spec.mem_mib / 20.0

    t0 = time.monotonic()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    qemu_log = open(d / "qemu.log", "wb")
    proc = subprocess.Popen(
        argv,
        cwd=d,
        stdin=subprocess.DEVNULL,
        stdout=qemu_log,
        stderr=subprocess.STDOUT,
        preexec_fn=_preexec,
        start_new_session=True,
    )
    qemu_log.close()
    qmp: QMP | None = None
    aborted = False
    try:
        # 1. wait for the guest
        try:
            _wait_ready(spec, d, proc, t0, ready_timeout)
        except RigError as e:
            if spec.accel == "tcg":
                raise
            reason = f"{spec.accel} does not run the guest here: {e}"
            raise _unavailable(spec, guest, stamp, reason) from None
        t_ready = time.monotonic()
        panic_info = _wait_for_panic(serial, proc, timeout=60.0) if spec.panic else None
        serial_text = serial.read_text(errors="replace")
        if "RIG-ERROR" in serial_text:
            raise RigError(f"guest reported an error\nserial.log:\n{_tail(serial)}")

        # 2. QMP: pause, reference dump
        qmp = QMP(qmp_sock)
        qmp_info: dict[str, Any] = {"greeting": qmp.greeting}
        qmp_info["version"] = qmp.execute("query-version")
        qmp_info["after_ready"] = _run_qmp_steps(qmp, spec.qmp_after_ready)
        qmp_info["status_before_stop"] = qmp.execute("query-status")
        qmp.execute("stop")
        qmp_info["status"] = qmp.execute("query-status")
        qmp_info["dump_capability"] = qmp.execute("query-dump-guest-memory-capability")
        dump_seconds = None
        if spec.reference:
            t = time.monotonic()
            qmp.execute(
                "dump-guest-memory",
                {"paging": False, "protocol": f"file:{d / 'reference.elf'}", "format": "elf"},
                timeout=dump_timeout,
            )
            dump_seconds = time.monotonic() - t
            qmp_info["query_dump"] = qmp.execute("query-dump")
        extra_refs = _extra_references(qmp, spec, d, dump_timeout)
        qmp_info["events"] = qmp.events
        qmp.close()
        qmp = None

        # 3. SIGABRT -> process core
        core = d / "core"
        t = time.monotonic()
        aborted = True
        proc.send_signal(signal.SIGABRT)
        try:
            rc = proc.wait(timeout=exit_timeout)
        except subprocess.TimeoutExpired:
            raise RigError(f"QEMU did not exit within {exit_timeout:.0f} s of SIGABRT") from None
        abort_seconds = time.monotonic() - t
        if rc != -signal.SIGABRT:
            raise RigError(
                f"QEMU ended with {rc}, not by SIGABRT\nqemu.log:\n{_tail(d / 'qemu.log')}"
            )
        if not core.exists():
            alt = d / f"{pattern}.{proc.pid}"
            if alt.exists():
                alt.rename(core)
            else:
                raise RigError(
                    f"no core file in {d} after SIGABRT (core_pattern={pattern!r}, "
                    f"check RLIMIT_CORE and kernel.core_pattern)"
                )
        with open(core, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise RigError(f"{core} is not an ELF file")
        for name in spec.delete_after_core:  # e.g. a backing file that is "gone"
            (d / name).unlink()
        t = time.monotonic()
        _dig_holes(_elf_references(spec, d))
        sparsify_seconds = time.monotonic() - t
        for info in extra_refs.values():  # their disk_bytes, now with the holes
            info.update(_file_sizes(d / info["path"]))
    except BaseException:
        if qmp is not None:
            qmp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not aborted and (d / "core").exists():
            (d / "core").unlink()
        raise
    finally:
        if qmp_sock.exists():
            qmp_sock.unlink()

    meta: dict[str, Any] = {
        "case_format": CASE_FORMAT,
        "spec": spec.as_dict(),
        "name": spec.name,
        "arch": spec.arch,
        "marker": marker,
        "qemu_version": spec.qemu,
        "qemu_version_stamp": stamp,
        "qemu_binary": str(case_qemu_binary(spec)),
        "qemu_src": str(qemu_src(spec.qemu)),
        "qemu_argv": argv,
        "pid": proc.pid,
        "exit_signal": "SIGABRT",
        "kernel_version": guest["kernel_version"],
        "kernel_package": guest["kernel_package"],
        "initramfs_inputs": guest["initramfs_inputs"],
        "qmp": qmp_info,
        "panic": panic_info,
        "timings": {
            "boot_seconds": round(t_ready - t0, 3),
            "qmp_dump_seconds": None if dump_seconds is None else round(dump_seconds, 3),
            "abort_seconds": round(abort_seconds, 3),
            "sparsify_seconds": round(sparsify_seconds, 3),
            "total_seconds": round(time.monotonic() - t0, 3),
        },
        "core": {"path": "core", **_file_sizes(d / "core")},
        "reference": (
            {"path": "reference.elf", **_file_sizes(d / "reference.elf")}
            if spec.reference
            else None
        ),
        "extra_references": extra_refs,
        "files": {name: _file_sizes(d / name) for name in case_files(spec)},
        "created": created,
        "host": {"kernel": platform.release(), "core_pattern": pattern},
    }
    tmp = d / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, d / "meta.json")
    return _case_from_meta(spec, d, meta)
