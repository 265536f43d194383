"""Corrupted QEMU structures: bytes patched in a real rig core.

Each row corrupts one field of QEMU's state in a copy of a rig core (QEMU 7.2
and 10.0, whose structures differ) and runs the CLI on it. A corrupt core
must give exactly one ``error:`` line naming the problem, a non-zero exit,
no traceback, no hang, no output or temporary file, and no memory that grows
with the corrupted number.

The fields are found with drgn on the pristine core; their host addresses
are turned into core file offsets through the core's PT_LOADs
(:meth:`HostCore.extents`). The core is copied once per QEMU version
(sparsely, ~200-450 MB on disk) and each test patches its bytes and puts the
original bytes back afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import drgn
import pytest
from support.runs import assert_one_line_error

from qemu_vmcore.host.core import ExtentKind, open_core
from qemu_vmcore.qemu import versions

pytestmark = pytest.mark.rig

#: One case per QEMU version: 7.2 has ``cpus``, 10.0 ``cpus_queue``.
CASES = {"7.2": "q72-pc-512", "10.0": "q10-q35-512"}

#: The commands every row runs: info, and extract with either backend (the
#: gdb backend runs the same qemu/ code inside gdb).
COMMANDS = {
    "info": ("info",),
    "extract": ("extract",),
    "extract-gdb": ("extract", "--backend", "gdb"),
}

#: Cap on each run's data segment (heap and anonymous mappings). A real core
#: needs ~80 MB (drgn) or ~150 MB (gdb); building anything per corrupted
#: count (2**31 FlatRanges) would need gigabytes and fail with MemoryError.
DATA_LIMIT = 512 << 20
#: A run that takes longer than this has hung (a good one takes ~1 s).
TIMEOUT = 60


@dataclass(frozen=True)
class Targets:
    """Host addresses of the fields the rows corrupt, in the pristine core.

    :param nr: ``address_space_memory.current_map->nr`` (unsigned int).
    :param nr_allocated: the same FlatView's ``nr_allocated``.
    :param ram_host: ``RAMBlock.host`` of ``pc.ram`` (a pointer).
    :param ram_max_length: that RAMBlock's ``max_length``.
    :param cpu_list: the vCPU list variable's name (``cpus``/``cpus_queue``).
    :param first_cpu: the first CPUState (``tqh_first``).
    :param last_cpu_next: ``node.tqe_next`` of the last CPUState (NULL).
    :param ram_range: index in the FlatView of ``pc.ram``'s range at 1 MiB.
    :param ram_range_start: that FlatRange's ``addr.start`` value.
    :param ram_range_size: that FlatRange's ``addr.size`` (an Int128).
    :param ram_used_length: ``pc.ram``'s ``RAMBlock.used_length``.
    :param ram_size: ``current_machine->ram_size`` (``-m``).
    :param cpu_index: the first vCPU's ``cpu_index`` (int).
    :param cs_selector: the first vCPU's ``env.segs[R_CS].selector``.
    :param cpu_list_first: the vCPU list's ``tqh_first``.
    (``*_value``: the pristine value there.)
    """

    nr: int
    nr_allocated: int
    ram_host: int
    ram_max_length: int
    cpu_list: str
    first_cpu: int
    last_cpu_next: int
    ram_range: int
    ram_range_start: int
    ram_range_size: int
    ram_range_size_value: int = 0
    ram_used_length: int = 0
    ram_used_length_value: int = 0
    ram_size: int = 0
    ram_size_value: int = 0
    cpu_index: int = 0
    cs_selector: int = 0
    cpu_list_first: int = 0
    ram_range_offset: int = 0
    ram_range_offset_value: int = 0
    ram_range_mr: int = 0
    ram_range_mr_value: int = 0
    first_cpu_value: int = 0


def _int128(prog: drgn.Program, obj: drgn.Object) -> int:
    return int.from_bytes(prog.read(obj.address_, 16), "little", signed=True)


def find_targets(core: Path, qemu_binary: Path) -> Targets:
    """Find the fields with drgn, as QEMU's own code would name them."""
    prog = drgn.Program()
    prog.set_core_dump(os.fspath(core))
    prog.load_debug_info([os.fspath(qemu_binary)], main=True)
    view = prog["address_space_memory"].current_map
    ram_range = next(
        i
        for i in range(int(view.nr))
        if view.ranges[i].mr.name.string_() == b"pc.ram"
        and _int128(prog, view.ranges[i].addr.start) == 1 << 20
    )
    fr = view.ranges[ram_range]
    block = prog["ram_list"].blocks.lh_first
    while block.idstr.string_() != b"pc.ram":
        block = block.next.le_next
    cpu_list = next(a.name for a in versions.CPU_LIST if a.name in prog)
    cpu = first = prog[cpu_list].tqh_first
    while cpu.node.tqe_next.value_():
        cpu = cpu.node.tqe_next
    return Targets(
        nr=view.nr.address_,
        nr_allocated=view.nr_allocated.address_,
        ram_host=block.host.address_,
        ram_max_length=int(block.max_length),
        cpu_list=cpu_list,
        first_cpu=first.value_(),
        last_cpu_next=cpu.node.tqe_next.address_,
        ram_range=ram_range,
        ram_range_start=_int128(prog, fr.addr.start),
        ram_range_size=fr.addr.size.address_,
        ram_range_size_value=_int128(prog, fr.addr.size),
        ram_used_length=block.used_length.address_,
        ram_used_length_value=int(block.used_length),
        ram_size=prog["current_machine"].ram_size.address_,
        ram_size_value=int(prog["current_machine"].ram_size),
        cpu_index=first.cpu_index.address_,
        cs_selector=drgn.cast("X86CPU *", first).env.segs[1].selector.address_,
        cpu_list_first=prog[cpu_list].tqh_first.address_,
        ram_range_offset=fr.offset_in_region.address_,
        ram_range_offset_value=int(fr.offset_in_region),
        ram_range_mr=fr.mr.address_,
        ram_range_mr_value=fr.mr.value_(),
        first_cpu_value=first.value_(),
    )


class CorruptibleCore:
    """A private copy of a rig core whose bytes can be patched for a while."""

    def __init__(self, path: Path, targets: Targets) -> None:
        self.path = path
        self.targets = targets
        self._host = open_core(path)

    def file_offset(self, hva: int, size: int) -> int:
        """Where ``[hva, hva + size)`` is in the core file; it must be dumped."""
        extents = self._host.extents(hva, size)
        assert [e.kind for e in extents] == [ExtentKind.DATA], (hex(hva), extents)
        return extents[0].file_offset

    @contextmanager
    def patched(self, hva: int, data: bytes) -> Iterator[None]:
        """The core with ``data`` at host address ``hva``; restored on exit."""
        offset = self.file_offset(hva, len(data))
        fd = os.open(self.path, os.O_RDWR)
        try:
            old = os.pread(fd, len(data), offset)
            assert old != data
            os.pwrite(fd, data, offset)
            try:
                yield
            finally:
                os.pwrite(fd, old, offset)
                assert os.pread(fd, len(data), offset) == old
        finally:
            os.close(fd)

    def unmapped_gap(self, size: int) -> int:
        """A 2 MiB-aligned user-space address with ``size`` bytes no PT_LOAD covers."""
        align = 2 << 20
        segments = self._host.segments
        for a, b in itertools.pairwise(segments):
            start = (a.end + align - 1) // align * align
            if start + size <= b.hva and start + size < 1 << 47:
                return start
        raise AssertionError("no gap in the core's address space")

    @contextmanager
    def patched_file(self, offset: int, data: bytes) -> Iterator[None]:
        """The core with ``data`` at file ``offset`` (headers, say); restored on exit."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            old = os.pread(fd, len(data), offset)
            os.pwrite(fd, data, offset)
            try:
                yield
            finally:
                os.pwrite(fd, old, offset)
        finally:
            os.close(fd)

    def phdr_offset(self, hva: int) -> int:
        """File offset of the program header of the PT_LOAD that maps ``hva``."""
        with open(self.path, "rb") as f:
            head = f.read(64)
            phoff, phnum = (
                struct.unpack_from("<Q", head, 0x20)[0],
                struct.unpack_from("<H", head, 0x38)[0],
            )
            f.seek(phoff)
            table = f.read(phnum * 56)
        for i in range(phnum):
            p_type, _, _, vaddr, _, _, memsz = struct.unpack_from("<IIQQQQQ", table, i * 56)
            if p_type == 1 and vaddr <= hva < vaddr + memsz:
                return phoff + i * 56
        raise AssertionError(f"no PT_LOAD maps {hva:#x}")

    def code_segment(self) -> int:
        """The start of a read-only, executable mapping of the core (QEMU's text)."""
        return next(s.hva for s in self._host.segments if s.flags & 7 == 5)

    def close(self) -> None:
        self._host.close()


@pytest.fixture(scope="module", params=sorted(CASES), ids=lambda v: f"qemu{v}")
def core(request, rig_case, tmp_path_factory) -> Iterator[CorruptibleCore]:
    """A sparse copy of the version's rig core, deleted after the module.

    Module scope with a parameter: pytest runs all tests of one version, then
    tears this down before copying the next, so one copy exists at a time.
    """
    case = rig_case(CASES[request.param])
    targets = find_targets(case.core, case.qemu_binary)
    copy = tmp_path_factory.mktemp(f"corrupt-{request.param}") / "core"
    subprocess.run(["cp", "--sparse=always", case.core, copy], check=True)
    c = CorruptibleCore(copy, targets)
    try:
        yield c
    finally:
        c.close()
        shutil.rmtree(copy.parent, ignore_errors=True)


@pytest.fixture(params=sorted(COMMANDS))
def command(request) -> tuple[str, ...]:
    return COMMANDS[request.param]


def _limit_data() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))


def run(command: tuple[str, ...], core: Path, out_dir: Path) -> subprocess.CompletedProcess:
    """``python -m qemu_vmcore COMMAND CORE [-o OUT]`` with capped memory and time.

    A hang raises TimeoutExpired; an allocation that grows with a corrupted
    count dies of MemoryError (a traceback, which the one-line check rejects).
    """
    args = [*command, os.fspath(core)]
    if command[0] == "extract":
        args += ["-o", os.fspath(out_dir / "vmcore")]
    return subprocess.run(
        [sys.executable, "-m", "qemu_vmcore", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limit_data,
    )


def assert_refused(proc: subprocess.CompletedProcess, out_dir: Path, *needles: str) -> None:
    """One ``error:`` line naming ``needles``, and nothing left in ``out_dir``."""
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2, proc  # bad input
    assert list(out_dir.iterdir()) == []  # neither the vmcore nor a temporary file


@pytest.fixture
def out_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_pristine_copy_is_accepted(core, command, out_dir):
    """Control: the unpatched copy works, within the same memory cap.

    So each row's failure is its corruption's, and the cap leaves room for a
    real core.
    """
    proc = run((*command, "-q") if command[0] == "extract" else command, core.path, out_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for f in out_dir.iterdir():  # a 512 MiB vmcore: keep the disk free
        f.unlink()


@pytest.mark.parametrize("also_allocated", [False, True], ids=["nr", "nr-and-allocated"])
def test_flatview_nr_2_31(core, command, out_dir, also_allocated):
    """FlatView ``nr`` = 2**31 (``address_space_memory.current_map->nr``).

    Refused before reading or allocating anything for the ranges:
    ``error: implausible FlatView address_space_memory.current_map:
    nr=2147483648 ranges (nr_allocated=20, limit 65536)``. With
    ``nr_allocated`` corrupted to match, the absolute limit still holds.
    """
    t = core.targets
    huge = (1 << 31).to_bytes(4, "little")
    with core.patched(t.nr, huge):
        if also_allocated:
            with core.patched(t.nr_allocated, huge):
                proc = run(command, core.path, out_dir)
        else:
            proc = run(command, core.path, out_dir)
    assert_refused(
        proc,
        out_dir,
        "implausible FlatView address_space_memory.current_map",
        "nr=2147483648",
        "limit 65536",
    )


def test_ramblock_host_outside_user_space(core, command, out_dir):
    """``pc.ram``'s ``RAMBlock.host`` = 0x7ff0_0000_0000_0000, beyond user space.

    mmap() never returns such an address, so QEMU's state is corrupt and
    even ``info`` refuses: ``error: RAMBlock 'pc.ram': host address
    0x7ff0000000000000 is not a user-space address; QEMU cannot have mapped
    guest RAM 0x0-0xc3000 there``.
    """
    bogus = 0x7FF0_0000_0000_0000
    with core.patched(core.targets.ram_host, bogus.to_bytes(8, "little")):
        proc = run(command, core.path, out_dir)
    assert_refused(
        proc, out_dir, "RAMBlock 'pc.ram'", f"host address {bogus:#x}", "not a user-space address"
    )


def test_ramblock_host_in_unmapped_gap(core, command, out_dir):
    """``pc.ram``'s ``RAMBlock.host`` moved into a gap no PT_LOAD covers.

    A plausible address the core has no segment for is guest RAM the core
    lacks, not necessarily corruption: gdb's ``gcore`` leaves MADV_DONTDUMP
    mappings (``dump-guest-core=off``) out of its cores entirely. So extract
    refuses, naming the RAM and the cause (``error: 536,870,912 bytes of
    guest RAM are not in the core: 0x0-0x20000000 (unmapped). Likely cause:
    QEMU's RAMBlock points outside every mapping in the core (hint:
    --allow-missing writes zeros there instead)``), while ``info``, the
    diagnostic, succeeds and reports the range as not in the core.
    """
    t = core.targets
    gap = core.unmapped_gap(t.ram_max_length)
    info = command[0] == "info"
    with core.patched(t.ram_host, gap.to_bytes(8, "little")):
        proc = run((*command, "--json") if info else command, core.path, out_dir)
    if info:
        assert proc.returncode == 0, proc.stderr
        ram = [r for r in json.loads(proc.stdout)["ranges"] if r["block"] == "pc.ram"]
        assert ram and all(r["hva"] >= gap and r["in_core"] == "no" for r in ram), ram
        missing = json.loads(proc.stdout)["missing"]
        assert {m["why"] for m in missing} == {"unmapped"}
        return
    assert_refused(
        proc,
        out_dir,
        "bytes of guest RAM are not in the core: 0x0-",
        "(unmapped)",
        "QEMU's RAMBlock points outside every mapping in the core",
    )


def test_cyclic_vcpu_list(core, command, out_dir):
    """The last vCPU's ``node.tqe_next`` points back at the first vCPU.

    With one vCPU (7.2 case) that CPU is its own successor; with two (10.0
    case) the second leads back to the first. The walk stops at the first
    repeated CPUState: ``error: cycle in QEMU's vCPU list cpus: entry 1 is
    entry 0 again (0x55b157720520); the list's next pointers loop``.
    """
    t = core.targets
    with core.patched(t.last_cpu_next, t.first_cpu.to_bytes(8, "little")):
        proc = run(command, core.path, out_dir)
    assert_refused(
        proc,
        out_dir,
        f"cycle in QEMU's vCPU list {t.cpu_list}:",
        f"is entry 0 again ({t.first_cpu:#x})",
    )


@pytest.mark.parametrize(
    "size", [(1 << 127) - 1, (1 << 64) - 0x1000], ids=["int128-max", "u64-wrap"]
)
def test_flatrange_int128_size_overflows(core, command, out_dir, size):
    """``pc.ram``'s FlatRange at 1 MiB gets an ``addr.size`` (Int128) whose end
    overflows 2**64: the largest Int128, and a size that fits in 64 bits but
    wraps once added to the start.

    ``error: implausible FlatRange address_space_memory.current_map->ranges[4]
    (region 'pc.ram'): start=0x100000 size=0x7fff...ffff: start+size=0x8000...
    0fffff overflows 2**64``.
    """
    t = core.targets
    with core.patched(t.ram_range_size, size.to_bytes(16, "little")):
        proc = run(command, core.path, out_dir)
    assert_refused(
        proc,
        out_dir,
        "implausible FlatRange address_space_memory.current_map->ranges"
        f"[{t.ram_range}] (region 'pc.ram')",
        f"start={t.ram_range_start:#x} size={size:#x}",
        f"start+size={t.ram_range_start + size:#x} overflows 2**64",
    )


# -- QEMU's state against independent facts (qemu/crosscheck.py) ----------------------------
#
# Each of these cores is readable and, field by field, plausible: only a
# second source (the machine's ram_size, the RAMBlock's length, the core's
# own mappings, smp) shows it is wrong. Without the checks each made a
# plausible vmcore: an empty one, one with a hole, or QEMU's code as RAM.


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "little")


def test_flatview_with_no_ranges_is_an_error(core, command, out_dir):
    """FlatView ``nr`` = 0: once ``wrote v: 0 ranges, 0 bytes of guest RAM``."""
    with core.patched(core.targets.nr, bytes(4)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "holds no guest RAM", "address_space_memory.current_map")


def test_ram_size_disagrees_with_the_flatview(core, command, out_dir):
    """``MachineState.ram_size`` doubled: the map holds half of it."""
    t = core.targets
    with core.patched(t.ram_size, _u64(2 * t.ram_size_value)):
        proc = run(command, core.path, out_dir)
    assert_refused(
        proc, out_dir, "MachineState.ram_size", f"{2 * t.ram_size_value:#x}", "used_length"
    )


def test_a_flatrange_shrunk_leaves_ram_out(core, command, out_dir):
    """``pc.ram``'s FlatRange at 1 MiB made 256 MiB shorter: a hole in the
    dump that no other field betrays."""
    t = core.targets
    size = t.ram_range_size_value - (256 << 20)
    with core.patched(t.ram_range_size, size.to_bytes(16, "little")):
        proc = run(command, core.path, out_dir)
    hole = t.ram_range_start + size
    assert_refused(proc, out_dir, f"lacks the machine's RAM at {hole:#x}",
                   "(and 1 more)")  # fmt: skip


def test_ramblock_used_length_shrunk(core, command, out_dir):
    """``pc.ram``'s ``used_length`` halved: the map holds more than the block."""
    t = core.targets
    with core.patched(t.ram_used_length, _u64(t.ram_used_length_value // 2)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "RAMBlock 'pc.ram'",
                   f"{t.ram_used_length_value // 2:#x} bytes long (used_length)")  # fmt: skip


def test_ramblock_host_in_qemus_code(core, command, out_dir):
    """``pc.ram``'s ``host`` moved onto QEMU's own r-x text: a readable,
    dumped, user-space address, so only the mapping's permissions betray it."""
    text = core.code_segment()
    with core.patched(core.targets.ram_host, _u64(text)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "RAMBlock 'pc.ram'", "lies in a r- mapping",
                   "QEMU's guest RAM is mapped rw")  # fmt: skip


def test_ramblock_host_not_page_aligned(core, command, out_dir):
    t = core.targets
    with open(core.path, "rb") as f:
        f.seek(core.file_offset(t.ram_host, 8))
        host = int.from_bytes(f.read(8), "little")
    with core.patched(t.ram_host, _u64(host + 8)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "RAMBlock 'pc.ram'", "not page-aligned")


def test_empty_vcpu_list(core, command, out_dir):
    """``tqh_first`` = NULL: a machine with vCPUs (smp.cpus) and none in the list."""
    with core.patched(core.targets.cpu_list_first, bytes(8)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "vCPU list is empty, but the machine has")


def test_cpu_index_out_of_range(core, command, out_dir):
    """The first vCPU's ``cpu_index`` = 4096, beyond ``smp.max_cpus``: no
    note can carry it (pr_pid is cpu_index + 1), so not even
    --accept-inconsistent writes a vmcore."""
    with core.patched(core.targets.cpu_index, (4096).to_bytes(4, "little")):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "cpu_index 4096 outside 0..")
    assert "--accept-inconsistent" not in proc.stderr


def test_segment_selector_beyond_16_bits(core, command, out_dir):
    """``cs.selector`` = 0x10000: once a ``struct.error`` traceback."""
    with core.patched(core.targets.cs_selector, (0x10000).to_bytes(4, "little")):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, "segment selector cs = 0x10000", "does not fit 16 bits")


def test_accept_inconsistent_writes_with_a_warning(core, command, out_dir):
    """With --accept-inconsistent the shrunk FlatRange gives what the map
    holds, and says so on stderr (and in --json): never silently."""
    t = core.targets
    size = t.ram_range_size_value - (256 << 20)
    with core.patched(t.ram_range_size, size.to_bytes(16, "little")):
        proc = run((*command, "--accept-inconsistent", "--json"), core.path, out_dir)
    assert proc.returncode == 0, proc.stderr
    said = "warning: QEMU's state disagrees with itself: "
    # (The VMCOREINFO may be unconfirmed too: the hole can hold init_uts_ns.)
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith(said)]
    assert len(warnings) == 2, proc.stderr
    assert "lacks the machine's RAM at" in warnings[0]
    assert "holds" in warnings[1] and "bytes of the machine's RAM 'pc.ram'" in warnings[1]
    data = json.loads(proc.stdout)
    assert data["inconsistencies"] == [w.removeprefix(said) for w in warnings]
    if command[0] == "extract":
        assert data["ram_bytes"] == t.ram_size_value - (256 << 20) + 0x40000  # + pc.bios
        (out_dir / "vmcore").unlink()
    assert list(out_dir.iterdir()) == []


def test_a_flatrange_pointing_elsewhere_in_its_ramblock(core, command, out_dir):
    """The 1 MiB range's ``offset_in_region`` moved down 64 KiB: same sizes, same
    block, but guest page N would hold page N-16's bytes. Only the PC's own
    layout rule (pc_memory_init) says where the RAM must be."""
    t = core.targets
    moved = t.ram_range_offset_value - 0x10000  # up would run past the block
    with core.patched(t.ram_range_offset, _u64(moved)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, f"maps 'pc.ram' at offset {moved:#x}",
                   f"maps RAMBlock offset {t.ram_range_start:#x} there")  # fmt: skip


def test_a_flatrange_region_pointer_moved(core, command, out_dir):
    """The range's ``mr`` moved by a page: the bytes there are no MemoryRegion
    (their QOM type says so), where once the range quietly vanished."""
    t = core.targets
    with core.patched(t.ram_range_mr, _u64(t.ram_range_mr_value + 4096)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, f"ranges[{t.ram_range}].mr", "is not a MemoryRegion")


def test_a_vcpu_pointer_moved(core, command, out_dir):
    """The vCPU list's head moved by a page: not a CPU by its QOM type."""
    t = core.targets
    with core.patched(t.cpu_list_first, _u64(t.first_cpu_value + 4096)):
        proc = run(command, core.path, out_dir)
    assert_refused(proc, out_dir, f"entry 0 of QEMU's vCPU list {t.cpu_list}", "is not a CPU")


def test_ram_segment_with_no_file_bytes(core, command, out_dir):
    """The guest-RAM PT_LOAD's ``p_filesz`` set to 0: the kernel's way of
    saying "never touched", so all of ``pc.ram`` would be written as zeros
    and ``info`` said "in core: yes". Firmware always writes the machine's
    RAM, so that cannot be."""
    t = core.targets
    with open(core.path, "rb") as f:
        f.seek(core.file_offset(t.ram_host, 8))
        host = int.from_bytes(f.read(8), "little")
    with core.patched_file(core.phdr_offset(host) + 32, bytes(8)):
        proc = run(command, core.path, out_dir)
    assert_one_line_error(proc)
    assert proc.returncode == 2 and list(out_dir.iterdir()) == []
    line = proc.stderr.strip()
    # The core's own layout check (hostcore) may see it first: the file
    # bytes of the segment then belong to no PT_LOAD.
    assert "not one byte of the machine's RAM 'pc.ram'" in line or "PT_LOAD" in line, line
