"""extract: the refusals and the written vmcore, on a synthetic core (no drgn, no QEMU)."""

from __future__ import annotations

import os
import stat
from dataclasses import replace

import pytest
from elftools.elf.elffile import ELFFile
from support import synth
from support.synth import G4, HI_DUMPED, HI_SIZE, PAGE, R0, R1, R2, R3

from qemu_vmcore.arch.x86 import ARCH as X86
from qemu_vmcore.arch.x86.cpu import HF_LMA_MASK, Segment, X86State
from qemu_vmcore.arch.x86.kernel import START_KERNEL_MAP
from qemu_vmcore.errors import CoreFileError, MissingMemoryError, OutputError, VmcoreError
from qemu_vmcore.extract import describe_missing, extract, kernel_text_load, minimal_notes
from qemu_vmcore.guest.paging import Mapping
from qemu_vmcore.guest.physmem import GuestPhysicalMemory, Piece, PieceKind
from qemu_vmcore.guest.vmcoreinfo import Search, VmcoreInfo
from qemu_vmcore.host.core import open_core
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.plan import DumpOptions
from qemu_vmcore.source import QemuCore


def fake_vcpu(long_mode: bool) -> X86State:
    seg = Segment(0, 0, 0, 0)
    return X86State(
        index=0, regs=tuple(range(16)), rip=0x1000, rflags=2, segs=(seg,) * 6,
        ldt=seg, tr=seg, gdt=seg, idt=seg, cr=(1, 0, 0, 0, 0), kernel_gs_base=0,
        hflags=HF_LMA_MASK if long_mode else 0,
    )  # fmt: skip


def open_fake(path, ranges, *, long_mode=True):
    host = open_core(path)
    qc = QemuCore(
        host=host,
        dbg=None,
        ranges=list(ranges),
        memory=GuestPhysicalMemory(ranges, host),
        arch=X86,
        vcpus=[fake_vcpu(long_mode)],
        executable=None,
        _vmcoreinfo=Search(None, "no vmcoreinfo device"),  # no debugger to ask
    )
    qc.accelerator = "tcg"  # no debugger to ask (a cached_property)
    return qc


@pytest.fixture
def made(tmp_path):
    core, ram, hi = synth.ram_core(tmp_path / "core")
    out = tmp_path / "out"
    out.mkdir()
    return core, ram, hi, out


def loads_of(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        head = (elf.elfclass, elf["e_machine"], elf["e_type"])
        loads = [(s["p_paddr"], s["p_memsz"], s.data()) for s in elf.iter_segments("PT_LOAD")]
        notes = [
            (n["n_name"], n["n_descsz"])
            for s in elf.iter_segments("PT_NOTE")
            for n in s.iter_notes()
        ]
    return head, loads, notes


def test_extract_a_complete_core(made):
    core, ram, hi, out = made
    done = []
    with open_fake(core.path, [R0, R1, R2]) as qc:
        result = extract(qc, out / "vmcore", progress=done.append)
    assert result.output == out / "vmcore"
    assert (result.ranges, result.ram_bytes, result.missing) == (3, R0.size + R1.size + HI_SIZE, [])
    assert result.file_size == os.path.getsize(out / "vmcore")
    assert result.seconds >= 0
    assert sum(done) == result.ram_bytes
    assert stat.S_IMODE((out / "vmcore").stat().st_mode) == 0o600
    head, loads, notes = loads_of(out / "vmcore")
    assert head == (64, "EM_X86_64", "ET_CORE")
    assert loads == [
        (0, R0.size, ram[: R0.size]),
        (0x100000, R1.size, ram[0x100000:]),
        (G4, HI_SIZE, hi + bytes(HI_SIZE - len(hi))),  # never-touched RAM is zeros
    ]
    assert notes == [("CORE", 336), ("QEMU", 440)]  # one long-mode vCPU, no VMCOREINFO
    assert os.listdir(out) == ["vmcore"]


def test_minimal_notes():
    assert list(E.iter_notes(minimal_notes())) == [E.Note(b"NONE", 0, b"EMPTY", 0)]


@pytest.mark.parametrize(
    ("long_mode", "ranges", "expected"),
    [
        (False, [R0, R1], (32, "EM_386")),
        (None, [R0, R1], (32, "EM_386")),
        (False, [R0, R1, R2], (64, "EM_386")),
    ],
)
def test_elf_class_follows_qemu(made, long_mode, ranges, expected):
    core, ram, _, out = made
    with open_fake(core.path, ranges, long_mode=long_mode) as qc:
        extract(qc, out / "vmcore")
    head, loads, _ = loads_of(out / "vmcore")
    assert head[:2] == expected
    assert loads[1] == (0x100000, R1.size, ram[0x100000:])


def test_missing_ram_is_refused_before_any_output(made):
    core, _, _, out = made
    ranges = [R0, replace(R2, dumpable=False), R3]
    with open_fake(core.path, ranges) as qc:
        with pytest.raises(MissingMemoryError) as info:
            extract(qc, out / "vmcore")
    msg = info.value.message
    assert "\n" not in msg
    assert f"{HI_DUMPED * PAGE + PAGE:,} bytes of guest RAM are not in the core" in msg
    assert f"{G4 + HI_DUMPED * PAGE:#x}-{G4 + HI_SIZE:#x} (not dumped)" in msg
    assert f"{2 * G4:#x}-{2 * G4 + PAGE:#x} (unmapped)" in msg
    assert "dump-guest-core=off" in msg and "outside every mapping" in msg
    assert "--allow-missing" in info.value.hint
    assert os.listdir(out) == []


def test_allow_missing_writes_zeros(made):
    core, ram, hi, out = made
    ranges = [R0, replace(R2, dumpable=False), R3]
    with open_fake(core.path, ranges) as qc:
        result = extract(qc, out / "vmcore", allow_missing=True)
    assert [(p.gpa, p.kind) for p in result.missing] == [
        (G4 + HI_DUMPED * PAGE, PieceKind.NOT_DUMPED),
        (2 * G4, PieceKind.UNMAPPED),
    ]
    _, loads, _ = loads_of(out / "vmcore")
    assert loads == [
        (0, R0.size, ram[: R0.size]),
        (G4, HI_SIZE, hi + bytes(HI_SIZE - len(hi))),
        (2 * G4, PAGE, bytes(PAGE)),
    ]


def test_truncated_core_is_refused_even_if_guest_ram_is_whole(made):
    core, _, _, out = made
    hi_load = core.loads[1]
    os.truncate(core.path, hi_load.offset + PAGE)  # into the HI segment
    with open_fake(core.path, [R0, R1]) as qc:  # ...which R0 and R1 do not use
        assert qc.memory.missing() == []
        with pytest.raises(CoreFileError, match="truncated core") as info:
            extract(qc, out / "vmcore")
    msg = info.value.message
    assert f"({hi_load.offset + PAGE:,} of {core.size:,} bytes)" in msg
    assert "all guest RAM is still present" in msg
    assert os.listdir(out) == []


def test_truncated_core_names_what_is_lost(made):
    core, _, hi, out = made
    hi_load = core.loads[1]
    os.truncate(core.path, hi_load.offset + PAGE)
    with open_fake(core.path, [R0, R2]) as qc:
        with pytest.raises(CoreFileError) as info:
            extract(qc, out / "vmcore")
        assert f"{G4 + PAGE:#x}-{G4 + HI_DUMPED * PAGE:#x} (truncated)" in info.value.message
        assert os.listdir(out) == []
        result = extract(qc, out / "vmcore", allow_missing=True)
    assert [(p.gpa, p.size, p.kind) for p in result.missing] == [
        (G4 + PAGE, (HI_DUMPED - 1) * PAGE, PieceKind.TRUNCATED)
    ]
    _, loads, _ = loads_of(out / "vmcore")
    assert loads[1] == (G4, HI_SIZE, hi[:PAGE] + bytes(HI_SIZE - PAGE))


def test_existing_output_is_refused_first(made):
    core, _, _, out = made
    (out / "vmcore").write_bytes(b"keep")
    with open_fake(core.path, [R0, R3]) as qc:  # R3 missing: the output check comes first
        with pytest.raises(OutputError, match="already exists"):
            extract(qc, out / "vmcore")
    assert (out / "vmcore").read_bytes() == b"keep"


def test_describe_missing_shortens_long_lists():
    pieces = [Piece(k * G4, PAGE, PieceKind.NOT_DUMPED, None) for k in range(6)]
    pieces.append(Piece(9 * G4, 1 << 20, PieceKind.TRUNCATED, None))
    text = describe_missing(pieces)
    assert text.startswith(f"{6 * PAGE + (1 << 20):,} bytes of guest RAM are not in the core: ")
    assert f"{3 * G4:#x}-{3 * G4 + PAGE:#x} (not dumped)" in text
    assert f"{4 * G4:#x}" not in text
    assert "and 3 more" in text
    # Each cause once, in order of first appearance.
    assert text.count("dump-guest-core=off") == 1
    assert text.index("dump-guest-core=off") < text.index("the core file is truncated")


@pytest.mark.parametrize("stext", [2**64, 2**64 + 0x100_0000, 2**72])
def test_kernel_text_load_refuses_stext_past_2_64(stext):
    """Found by bench/fuzz.py (elf-writer): a VMCOREINFO from guest RAM with
    SYMBOL(_stext) >= 2**64, a KERNEL_IMAGE_SIZE large enough and a phys_base
    putting it in guest RAM made build_image() raise struct.error on p_vaddr."""
    gpa = R1.gpa + PAGE
    fields = {
        "OSRELEASE": "6.1",
        "SYMBOL(_stext)": f"{stext:x}",
        "NUMBER(KERNEL_IMAGE_SIZE)": str(2**80),
        "NUMBER(phys_base)": str(gpa - (stext - START_KERNEL_MAP)),
    }
    info = VmcoreInfo(b"", 0, "test", fields=fields)
    assert kernel_text_load(X86.kernel_layout(info), [R0, R1], None) is None


class _Layout:
    """A kernel layout whose text load is what a test says (guest data)."""

    tables = None
    phys_base = 0

    def __init__(self, text: Mapping) -> None:
        self.text = text

    def image_pa(self, vaddr: int) -> int | None:
        return None

    def text_load(self, mem) -> Mapping:
        return self.text


@pytest.mark.parametrize("stext", [2**64, 2**64 + 0x100_0000, 2**72, 2**64 - 0x1000])
def test_kernel_text_load_refuses_a_load_past_2_64(stext):
    """Whatever an arch's layout says, a PT_LOAD must end by 2**64 (p_vaddr, p_memsz)."""
    gpa = R1.gpa + PAGE
    assert kernel_text_load(_Layout(Mapping(gpa, stext, 0x10_0000)), [R0, R1], None) is None
    fits = Mapping(gpa, 2**64 - 0x10_0000, 0x10_0000)
    assert kernel_text_load(_Layout(fits), [R0, R1], None) is not None


def test_kdump_of_a_kernel_with_other_pages_is_refused(made):
    """The kdump formats have 4 KiB blocks; makedumpfile's are the kernel's page
    size, so a 64 KiB-page kernel (arm64) gets a one-line refusal, nothing written."""
    core, _, _, out = made
    info = VmcoreInfo(E.note_bytes(b"VMCOREINFO", 0, b"OSRELEASE=6.1\nPAGESIZE=65536\n"),
                      0, "test", fields={"OSRELEASE": "6.1", "PAGESIZE": "65536"})  # fmt: skip
    with open_fake(core.path, [R0, R1]) as qc:
        qc._vmcoreinfo = Search(info, "test")
        with pytest.raises(VmcoreError, match="65536-byte pages") as e:
            extract(qc, out / "k", options=DumpOptions(format="kdump-zlib"))
        assert "\n" not in e.value.message and "--format elf" in (e.value.hint or "")
        assert not (out / "k").exists()
        extract(qc, out / "e")  # ELF has no block size: written
