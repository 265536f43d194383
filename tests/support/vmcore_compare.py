"""Page-by-page comparison of two ELF vmcores (ours against QEMU's own dump).

Used by the end-to-end tests and the demo. Reads the PT_LOADs with pyelftools
and compares guest-physical ranges and every page's bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

PAGE = 4096
CHUNK = 16 << 20


@dataclass(frozen=True)
class Load:
    paddr: int
    vaddr: int
    memsz: int
    filesz: int
    offset: int


def all_loads(path: Path) -> list[Load]:
    """Every PT_LOAD of a vmcore, in file order."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [
            Load(s["p_paddr"], s["p_vaddr"], s["p_memsz"], s["p_filesz"], s["p_offset"])
            for s in elf.iter_segments(type="PT_LOAD")
        ]


def note_segment(path: Path) -> bytes:
    """The bytes of a vmcore's (first) PT_NOTE segment."""
    with open(path, "rb") as f:
        return next(ELFFile(f).iter_segments(type="PT_NOTE")).data()


def ram_loads(path: Path) -> list[Load]:
    """The PT_LOADs that hold guest RAM, sorted by guest-physical address.

    Left out: extra loads that only give RAM already covered by a physical
    load (p_vaddr == p_paddr) a virtual address, like the kernel-text load.
    """
    loads = all_loads(path)
    physical = [x for x in loads if x.vaddr == x.paddr]
    extra = [
        x
        for x in loads
        if x.vaddr != x.paddr
        and not any(p.paddr <= x.paddr and x.paddr + x.memsz <= p.paddr + p.memsz for p in physical)
    ]
    return sorted(physical + extra, key=lambda x: x.paddr)


@dataclass
class Comparison:
    ranges_a: list[tuple[int, int]]
    ranges_b: list[tuple[int, int]]
    pages: int = 0
    differing_pages: list[int] | None = None

    @property
    def equal(self) -> bool:
        return self.ranges_a == self.ranges_b and not self.differing_pages


def compare_vmcores(a: Path, b: Path, *, max_report: int = 16) -> Comparison:
    """Compare the guest RAM of two vmcores; lists up to ``max_report`` differing pages."""
    la, lb = ram_loads(a), ram_loads(b)
    result = Comparison([(x.paddr, x.memsz) for x in la], [(x.paddr, x.memsz) for x in lb], 0, [])
    if result.ranges_a != result.ranges_b:
        return result
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        for x, y in zip(la, lb, strict=True):
            for rel in range(0, x.memsz, CHUNK):
                n = min(CHUNK, x.memsz - rel)
                da = _read(fa, x, rel, n)
                db = _read(fb, y, rel, n)
                result.pages += (n + PAGE - 1) // PAGE
                if da != db:
                    for p in range(0, n, PAGE):
                        if da[p : p + PAGE] != db[p : p + PAGE]:
                            if len(result.differing_pages) < max_report:
                                result.differing_pages.append(x.paddr + rel + p)
    finally:
        os.close(fa)
        os.close(fb)
    return result


def _read(fd: int, load: Load, rel: int, n: int) -> bytes:
    """Bytes ``[rel, rel+n)`` of a load; beyond p_filesz reads as zeros (ELF rule)."""
    in_file = max(0, min(n, load.filesz - rel))
    data = os.pread(fd, in_file, load.offset + rel) if in_file else b""
    return data.ljust(n, b"\0")


def compare_present(
    ours: Path, reference: Path, missing: list[tuple[int, int]]
) -> tuple[int, list[int]]:
    """Compare a vmcore of a cut core with the reference, page for page, outside
    ``missing`` (``[gpa, end)`` ranges, which must read as zeros in ``ours``).

    Returns (pages compared, up to 16 differing guest-physical page addresses).
    The two must have the same ranges (checked).
    """
    la, lb = ram_loads(ours), ram_loads(reference)
    assert [(x.paddr, x.memsz) for x in la] == [(x.paddr, x.memsz) for x in lb]
    compared, differing = 0, []
    fa, fb = os.open(ours, os.O_RDONLY), os.open(reference, os.O_RDONLY)
    try:
        for x, y in zip(la, lb, strict=True):
            for rel in range(0, x.memsz, CHUNK):
                n = min(CHUNK, x.memsz - rel)
                da, db = _read(fa, x, rel, n), _read(fb, y, rel, n)
                start = x.paddr + rel
                if da == db and not any(s < start + n and start < e for s, e in missing):
                    compared += (n + PAGE - 1) // PAGE  # the usual chunk: all present, equal
                    continue
                for p in range(0, n, PAGE):
                    gpa = x.paddr + rel + p
                    lost = any(s <= gpa < e for s, e in missing)
                    want = bytes(PAGE) if lost else db[p : p + PAGE]
                    compared += not lost
                    if da[p : p + PAGE] != want and len(differing) < 16:
                        differing.append(gpa)
    finally:
        os.close(fa)
        os.close(fb)
    return compared, differing
