"""End to end: kdump-compressed output, --paging and --begin/--length on a real guest.

The rig case q10-q35-formats has, besides QEMU's core and its ELF dump,
QEMU's own ``kdump-zlib`` (flattened), ``paging: true`` and begin/length
dumps of the same paused guest. Our files are checked against them and
read by crash, makedumpfile and libkdumpfile (through the system Python,
see kdumpfile_pages.py).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from elftools.elf.elffile import ELFFile
from support import consumers, kdumpfile_pages, rig
from support.runs import run_cli
from support.vmcore_compare import all_loads, compare_vmcores

from qemu_vmcore.arch.x86.paging import merge
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts import kdump as K

pytestmark = pytest.mark.rig

CASE = "q10-q35-formats"
METHODS = ["zlib", "lzo", "snappy", "zstd"]
FLATTENED = ["zlib", "lzo", "zstd"]
VARIANTS = [f"kdump-{m}" for m in METHODS] + [f"kdump-{m}-flattened" for m in FLATTENED]


@pytest.fixture(scope="module")
def case(rig_case):
    return rig_case(CASE)


@pytest.fixture(scope="module")
def vmlinux():
    return rig.vmlinux()


def reassemble(flat, raw) -> None:
    with open(flat, "rb") as stdin:
        subprocess.run([consumers.tool_path("makedumpfile"), "-R", str(raw)], stdin=stdin,
                       check=True, capture_output=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def dumps(case, tmp_path_factory):
    """Our files of the case, by name; flattened ones also reassembled (NAME.raw)."""
    d = tmp_path_factory.mktemp("formats")
    out = {}

    def extract(name, *args):
        out[name] = d / name
        run_cli("extract", case.core, "-o", out[name], "-q", *args, check=True)

    extract("elf")
    extract("paging", "--paging")
    for m in METHODS:
        extract(f"kdump-{m}", "--format", f"kdump-{m}")
    for m in FLATTENED:
        name = f"kdump-{m}-flattened"
        extract(name, "--format", f"kdump-{m}", "--flattened")
        reassemble(out[name], d / f"{name}.raw")
        out[f"{name}.raw"] = d / f"{name}.raw"
    reassemble(case.extra_reference("kdump-zlib"), d / "qemu-kdump-zlib.raw")
    out["qemu-kdump-zlib.raw"] = d / "qemu-kdump-zlib.raw"
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_crash_reads_each_variant(case, dumps, vmlinux, variant):
    sys_out, log_out = consumers.crash_each(dumps[variant], vmlinux, ["sys", "log"])
    assert f"RELEASE: {case.meta['kernel_version']}" in sys_out
    assert f"RIG-MARKER {case.marker}" in log_out


@pytest.mark.skipif(not kdumpfile_pages.available(), reason="python3-libkdumpfile not installed")
def test_pages_equal_our_elf_and_qemus_kdump(dumps):
    """libkdumpfile: every variant, and QEMU's own kdump-zlib, holds the pages of our ELF."""
    names = [f"kdump-{m}" for m in METHODS] + ["qemu-kdump-zlib.raw"]
    results = kdumpfile_pages.compare(dumps["elf"], *(dumps[n] for n in names))
    elf_pages = sum(x.memsz for x in all_loads(dumps["elf"]) if x.vaddr == x.paddr) // 4096
    for name, r in zip(names, results, strict=True):
        assert (r["reference_format"], r["format"]) == ("elf", "diskdump"), name
        assert r["pages_reference"] == elf_pages, name
        assert r["pages"] == elf_pages, (name, r)
        assert r["only_in_reference"] == r["only_in_file"] == r["differing"] == [], (name, r)


@pytest.mark.parametrize("method", FLATTENED)
def test_flattened_reassembles_to_the_raw_file(dumps, method):
    raw = dumps[f"kdump-{method}"].read_bytes()
    assert dumps[f"kdump-{method}-flattened"].read_bytes().startswith(b"makedumpfile\0")
    assert dumps[f"kdump-{method}-flattened.raw"].read_bytes() == raw


def vmcoreinfo_fields(path) -> dict[str, str]:
    with open(path, "rb") as f:
        notes = next(ELFFile(f).iter_segments(type="PT_NOTE")).data()
    (note,) = [n for n in E.iter_notes(notes) if n.name == b"VMCOREINFO"]
    lines = note.desc.rstrip(b"\0").decode().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_kdump_zlib_is_qemus_but_for_two_header_fields(dumps):
    """Our raw kdump-zlib and QEMU's (reassembled) differ in exactly two fields.

    Both compress with Debian's zlib at level 1, so pages, descriptors,
    bitmaps, notes and layout are byte for byte the same. The two fields:
    utsname.machine, which QEMU 10.0 leaves "Unknown" (dump.c no longer
    sees the target's ELF_MACHINE_UNAME) and we set to "x86_64"; and
    phys_base, which QEMU parses from VMCOREINFO as hex although Linux
    prints it in decimal (here negative), where we take the kernel's value.
    """
    ours, qemu = dumps["kdump-zlib"].read_bytes(), dumps["qemu-kdump-zlib.raw"].read_bytes()
    assert len(ours) == len(qemu)
    machine = 12 + 4 * K.UTS_FIELD_LEN
    fields = {
        "utsname.machine": (machine, machine + K.UTS_FIELD_LEN),
        "phys_base": (K.PAGE_SIZE, K.PAGE_SIZE + 8),
    }
    diff = [
        i
        for i in range(0, len(ours), 1 << 20)
        if ours[i : i + (1 << 20)] != qemu[i : i + (1 << 20)]
    ]
    assert diff == [0], f"MiB blocks that differ: {diff}"
    differing = {i for i in range(1 << 20) if ours[i] != qemu[i]}
    assert differing <= {i for lo, hi in fields.values() for i in range(lo, hi)}, sorted(differing)
    lo, hi = fields["utsname.machine"]
    assert (ours[lo:hi].rstrip(b"\0"), qemu[lo:hi].rstrip(b"\0")) == (b"x86_64", b"Unknown")
    phys_base = int(vmcoreinfo_fields(dumps["elf"])["NUMBER(phys_base)"])
    assert int.from_bytes(ours[K.PAGE_SIZE : K.PAGE_SIZE + 8], "little") == phys_base % (1 << 64)


@pytest.mark.parametrize("method", METHODS)
def test_makedumpfile_reads_our_kdump(case, dumps, method):
    """makedumpfile --dump-dmesg prints the marker; Debian's makedumpfile
    1.7.2 is built without snappy and zstd, and says so."""
    enabled = subprocess.run([consumers.tool_path("makedumpfile"), "-v"], capture_output=True,
                             text=True).stdout  # fmt: skip
    if method == "zlib" or re.search(rf"^{method}\s+enabled", enabled, re.MULTILINE):
        assert f"RIG-MARKER {case.marker}" in consumers.makedumpfile_dmesg(dumps[f"kdump-{method}"])
        return
    with pytest.raises(consumers.ConsumerError) as info:
        consumers.makedumpfile_dmesg(dumps[f"kdump-{method}"])
    assert f"{method} compression unsupported" in info.value.output


def canonical(vaddr: int) -> int:
    """QEMU's 4-level walk puts 0xffff above every address (user half too);
    sign-extending bit 47 gives the canonical address."""
    low = vaddr & ((1 << 48) - 1)
    return low | (0xFFFF << 48) if low >> 47 else low


def covered(r, ranges) -> bool:
    """Whether ``r`` (vaddr, paddr, size, filesz) lies inside one of ``ranges``
    with the same virtual-to-physical offset."""
    v, p, n, _ = r
    return any(v - p == v2 - p2 and v2 <= v and v + n <= v2 + n2 for v2, p2, n2, _ in ranges)


def test_paging_ranges_equal_qemus(case, dumps):
    """Our PT_LOADs are QEMU's, once QEMU's addresses are made canonical.

    QEMU merges each vCPU's walk into its list in walk order, and can keep a
    range that a later one covers (the second vCPU walking the same
    process's pages); such a range must be inside one of ours.
    """
    qemu = {(canonical(x.vaddr), x.paddr, x.memsz, x.filesz) for x in all_loads(
        case.extra_reference("paging"))}  # fmt: skip
    ours = {(x.vaddr, x.paddr, x.memsz, x.filesz) for x in all_loads(dumps["paging"])}
    only_ours = sorted(ours - qemu)
    only_qemu = sorted(r for r in qemu - ours if not covered(r, ours))
    report = "\n".join(
        [f"only QEMU's: {v:#x} -> {p:#x} +{n:#x} (file {f:#x})" for v, p, n, f in only_qemu[:20]]
        + [f"only ours:   {v:#x} -> {p:#x} +{n:#x} (file {f:#x})" for v, p, n, f in only_ours[:20]]
    )
    assert not only_qemu and not only_ours, report
    assert len(ours) > 20 and any(v >= 0xFFFF_8000_0000_0000 for v, *_ in ours)
    # The same (virtual, physical) page pairs.
    assert merge([(v, p, n) for v, p, n, _ in ours]) == merge([(v, p, n) for v, p, n, _ in qemu])


def test_paging_file_bytes_are_guest_ram(dumps):
    """Each paging PT_LOAD's file bytes are the guest RAM at its p_paddr."""
    plain = {x.paddr: x for x in all_loads(dumps["elf"]) if x.vaddr == x.paddr}
    with open(dumps["paging"], "rb") as fp, open(dumps["elf"], "rb") as fe:
        for x in all_loads(dumps["paging"]):
            holder = next(p for p in plain.values() if p.paddr <= x.paddr < p.paddr + p.memsz)
            n = min(x.filesz, 1 << 16)
            fp.seek(x.offset)
            fe.seek(holder.offset + x.paddr - holder.paddr)
            assert fp.read(n) == fe.read(n), hex(x.vaddr)


def test_paging_resolves_init_uts_ns(case, dumps, vmlinux):
    """init_uts_ns (its vmlinux address + KERNELOFFSET) through our PT_LOAD
    virtual addresses: the release string, read straight from the file."""
    nm = subprocess.run(["nm", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    (link,) = [
        int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" init_uts_ns")
    ]
    fields = vmcoreinfo_fields(dumps["paging"])
    vaddr = link + int(fields["KERNELOFFSET"], 16)
    assert vaddr == int(fields["SYMBOL(init_uts_ns)"], 16)
    release_at = vaddr + int(fields["OFFSET(uts_namespace.name)"]) + 2 * K.UTS_FIELD_LEN
    (load,) = [x for x in all_loads(dumps["paging"]) if x.vaddr <= release_at < x.vaddr + x.filesz]
    with open(dumps["paging"], "rb") as f:
        f.seek(load.offset + (release_at - load.vaddr))
        release = f.read(K.UTS_FIELD_LEN).split(b"\0")[0].decode()
    assert release == case.meta["kernel_version"]


def test_begin_length_equals_qmps(case, tmp_path):
    args = case.meta["extra_references"]["filter"]["arguments"]
    out = tmp_path / "filtered"
    run_cli("extract", case.core, "-o", out, "-q", "--begin", hex(args["begin"]),
            "--length", str(args["length"]), check=True)  # fmt: skip
    cmp = compare_vmcores(out, case.extra_reference("filter"))
    assert cmp.ranges_a == cmp.ranges_b == [(args["begin"], args["length"])]
    assert cmp.differing_pages == []
    assert os.stat(out).st_size < 2 * args["length"]
