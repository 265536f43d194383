"""A synthetic QEMU guest for the served-vmcore tests (no drgn, no QEMU):
compressible, random, zero and never-touched pages, holes in the core, a
range above 4 GiB that ends mid-page, and a range the core lacks (GONE).

:func:`main` writes such a core into DIR, extracts FORMAT to DIR/extracted
and serves the same decision at DIR/mnt, the FUSE server of
tests/unit/test_mount.py (see :data:`SERVE`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qemu_vmcore.arch.x86 import ARCH as X86
from qemu_vmcore.arch.x86.cpu import HF_LMA_MASK, Segment, X86State
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.guest.vmcoreinfo import Search, VmcoreInfo, parse_text
from qemu_vmcore.host.core import open_core
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.source import QemuCore
from support import synth
from support.synth import PAGE

LO_HVA, HI_HVA, GONE_HVA = 0x7F10_0000_0000, 0x7F20_0000_0000, 0x10000
LO_PAGES, HI_PAGES = 700, 12
G4 = 1 << 32
TEXT = b"The quick brown fox jumps over the lazy dog. " * 91
VMCI_TEXT = b"OSRELEASE=6.1.0-test\nNUMBER(phys_base)=-73400320\nSYMBOL(_stext)=ffffffff81000000\n"

RANGES = [
    GuestRange(0, 0xA0000, LO_HVA, "pc.ram", "ram-below-4g", 1),
    GuestRange(0x100000, LO_PAGES * PAGE - 0x800, LO_HVA + 0x100000, "pc.ram", "ram-below-4g", 1),
    GuestRange(G4, G4 + HI_PAGES * PAGE - 0x100, HI_HVA, "hi", "ram-above-4g", 2),
]
GONE = GuestRange(2 * G4, 2 * G4 + 4 * PAGE, GONE_HVA, "gone", "gone", 3)


def page_of(kind: str, seed: int) -> bytes:
    if kind == "text":
        return (f"{seed:08d}".encode() + TEXT)[:PAGE]
    return synth.pattern(PAGE, seed=seed)


def guest_ram() -> tuple[bytes, bytes]:
    lo = bytearray(LO_PAGES * PAGE)
    for p in (0, 1, 2, 7, 255, 256, 257, 300, 511, 512, 599, 650, 651):
        lo[p * PAGE : (p + 1) * PAGE] = page_of("text", p)
    for p in (3, 4, 100, 258, 513, 652):
        lo[p * PAGE : (p + 1) * PAGE] = page_of("random", p)
    lo[400 * PAGE + 17] = 1  # a page of almost nothing
    hi = b"".join(page_of("text" if p % 2 else "random", 1000 + p) for p in range(HI_PAGES))
    return bytes(lo), hi


def vcpu(index: int, long_mode: bool = True) -> X86State:
    seg = Segment(0, 0, 0, 0)
    return X86State(
        index=index, regs=tuple(range(16)), rip=0x1000, rflags=2, segs=(seg,) * 6,
        ldt=seg, tr=seg, gdt=seg, idt=seg, cr=(1, 0, 0, 0, 0), kernel_gs_base=0,
        hflags=HF_LMA_MASK if long_mode else 0,
    )  # fmt: skip


def vmcoreinfo() -> VmcoreInfo:
    note = E.note_bytes(b"VMCOREINFO", 0, VMCI_TEXT)
    return VmcoreInfo(note=note, gpa=0, source="test", verified=True, fields=parse_text(VMCI_TEXT))


def write_core(path: Path) -> Path:
    """The guest's core at ``path``; its zero pages are holes, as the kernel leaves them."""
    lo, hi = guest_ram()
    notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
    synth.write_core(path, [synth.Load(LO_HVA, lo), synth.Load(HI_HVA, hi)], notes)
    return path


def open_fake(path, ranges, *, info=None, ncpus=2, long_mode=True):
    """A QemuCore over the synthetic core at ``path``: what source.py would open."""
    host = open_core(path)
    qc = QemuCore(
        host=host, dbg=None, ranges=list(ranges),
        memory=GuestPhysicalMemory(list(ranges), host), arch=X86,
        vcpus=[vcpu(i, long_mode) for i in range(ncpus)], executable=None,
        _vmcoreinfo=Search(info, "test"),
    )  # fmt: skip
    qc.accelerator = "tcg"  # no debugger to ask (a cached_property)
    return qc


def main(directory: str, fmt: str) -> None:
    from qemu_vmcore.extract import prepare, write
    from qemu_vmcore.frontends import mount
    from qemu_vmcore.plan import DumpOptions
    from qemu_vmcore.serve import open_view

    d = Path(directory)
    core = write_core(d / "core")
    qc = open_fake(core, RANGES, info=vmcoreinfo())
    options = DumpOptions(format=fmt)
    write(prepare(qc, d / "extracted", force=True, options=options))
    view = open_view(prepare(qc, None, options=options))
    mount.check_fuse()
    mount.serve(view, d / "mnt", source=core, warn=lambda line: print(line, file=sys.stderr))
    qc.close()


#: ``python -c SERVE DIR FORMAT`` (tests/ on sys.path) runs :func:`main`.
SERVE = "import sys; from support.viewsynth import main; main(*sys.argv[1:])"
