"""The named binary layouts: C sizes, field order, and pack/unpack round trips
in both ELF classes and both byte orders (big-endian ones are not written yet,
but the next guests need them)."""

from __future__ import annotations

import struct

import pytest

from qemu_vmcore.layouts import elf as E
from qemu_vmcore.layouts import kdump as K
from qemu_vmcore.layouts.cstruct import Layout

CLASSES = [E.ELFCLASS32, E.ELFCLASS64]
ORDERS = [E.ELFDATA2LSB, E.ELFDATA2MSB]
ELF_NAMES = ["ehdr", "phdr", "shdr", "nhdr", "auxv", "nt_file_header", "nt_file_entry", "prpsinfo"]
KDUMP_NAMES = ["disk_dump_header", "kdump_sub_header", "page_desc"]

#: sizeof() of each C struct, per class (the ELF spec, elfcore.h, diskdump_mod.h).
SIZES = {
    E.ELFCLASS64: {
        "ehdr": 64, "phdr": 56, "shdr": 64, "nhdr": 12, "auxv": 16, "nt_file_header": 16,
        "nt_file_entry": 24, "prpsinfo": 136, "disk_dump_header": 464, "kdump_sub_header": 104,
        "page_desc": 24,
    },
    E.ELFCLASS32: {
        "ehdr": 52, "phdr": 32, "shdr": 40, "nhdr": 12, "auxv": 8, "nt_file_header": 8,
        "nt_file_entry": 12, "prpsinfo": 128, "disk_dump_header": 452, "kdump_sub_header": 80,
        "page_desc": 24,
    },
}  # fmt: skip


def _layouts(elfclass: int, data: int) -> dict[str, Layout]:
    elf, kd = E.for_class(elfclass, data), K.for_class(elfclass, data)
    out = {n: getattr(elf, n) for n in ELF_NAMES}
    out.update({n: getattr(kd, n) for n in KDUMP_NAMES})
    return out


def _sample(layout: Layout) -> tuple:
    """A record with every field distinct and non-zero, fitting its format."""
    values = {}
    for k, (name, code) in enumerate(zip(layout.names, _codes(layout), strict=True)):
        if code.endswith("s"):
            values[name] = bytes([0x41 + k]) * int(code[:-1])
        elif code == "c":
            values[name] = bytes([0x41 + k])
        else:
            bits = 8 * struct.calcsize(code)
            values[name] = (0x5A + k) << (bits - 8) | k + 1 if code.isupper() else k + 1
    return layout.record(**values)


def _codes(layout: Layout) -> list[str]:
    """The struct code of each named field, in file order ("16s", "Q", ...)."""
    codes, count = [], ""
    for ch in layout.struct.format[1:]:
        if ch.isdigit():
            count += ch
        elif ch == "x":
            count = ""
        else:
            codes.append(count + ch if ch == "s" else ch)
            count = ""
    return codes


@pytest.mark.parametrize("elfclass", CLASSES)
@pytest.mark.parametrize("data", ORDERS)
def test_sizes_are_the_c_structs(elfclass, data):
    sizes = {name: layout.size for name, layout in _layouts(elfclass, data).items()}
    assert sizes == SIZES[elfclass]


@pytest.mark.parametrize("elfclass", CLASSES)
@pytest.mark.parametrize("data", ORDERS)
@pytest.mark.parametrize("name", ELF_NAMES + KDUMP_NAMES)
def test_round_trip(elfclass, data, name):
    layout = _layouts(elfclass, data)[name]
    record = _sample(layout)
    raw = layout.pack(record)
    assert len(raw) == layout.size
    assert layout.unpack(raw) == record
    assert layout.unpack_from(b"xyz" + raw, 3) == record
    assert list(layout.iter_unpack(raw * 3)) == [record] * 3
    assert layout.pack(**record._asdict()) == raw
    # The byte order is the one asked for: the other one reads something else.
    other = _layouts(elfclass, E.ELFDATA2LSB + E.ELFDATA2MSB - data)[name]
    if any(
        c not in "cs" and not c.endswith("s") and struct.calcsize(c) > 1 for c in _codes(layout)
    ):
        assert other.pack(record) != raw


def test_fields_default_to_zero():
    phdr = E.ELF64LE.phdr
    assert phdr.pack(type=E.PT_LOAD) == struct.pack("<I52x", E.PT_LOAD)
    assert phdr.pack(phdr.unpack(bytes(56)), filesz=7) == struct.pack("<32xQ16x", 7)


def test_elf32_phdr_field_order():
    """Elf32_Phdr puts p_flags after p_memsz; the record is the same either way."""
    p = E.Phdr(
        type=1, flags=E.PF_R | E.PF_X, offset=2, vaddr=3, paddr=4, filesz=5, memsz=6, align=7
    )
    raw32 = E.ELF32LE.phdr.pack(p)
    assert struct.unpack("<8I", raw32) == (1, 2, 3, 4, 5, 6, 5, 7)
    assert struct.unpack("<IIQQQQQQ", E.ELF64LE.phdr.pack(p)) == (1, 5, 2, 3, 4, 5, 6, 7)
    assert E.ELF32LE.phdr.unpack(raw32) == p


def test_field_offsets():
    """A few fields at their C offsets (as pyelftools and gdb read them)."""
    ehdr = E.ELF64LE.ehdr.pack(phoff=0x1122, phnum=0x33)
    assert ehdr[32:40] == (0x1122).to_bytes(8, "little") and ehdr[56:58] == b"\x33\0"
    sh = E.for_class(E.ELFCLASS64, E.ELFDATA2MSB).shdr.pack(info=0x10203)
    assert sh[44:48] == (0x10203).to_bytes(4, "big")  # sh_info
    ps = E.ELF64LE.prpsinfo.pack(pid=77, fname=b"qemu")
    assert ps[24:28] == (77).to_bytes(4, "little") and ps[40:44] == b"qemu"
    hdr = K.for_class(E.ELFCLASS64).disk_dump_header.pack(block_size=4096, nr_cpus=3)
    assert hdr[428:432] == (4096).to_bytes(4, "little") and hdr[460:464] == b"\3\0\0\0"
    sub = K.for_class(E.ELFCLASS32).kdump_sub_header.pack(max_mapnr_64=9)
    assert sub[72:80] == (9).to_bytes(8, "little")


def test_flattened_headers_are_big_endian():
    assert K.MDF_HEADER.size == 32 and K.MDF_DATA_HEADER.size == 16
    assert K.MDF_DATA_HEADER.pack(offset=1, buf_size=-1) == (1).to_bytes(8, "big") + b"\xff" * 8


def test_chooser_refuses_unknown_classes():
    with pytest.raises(ValueError, match="class 3"):
        E.for_class(3, E.ELFDATA2LSB)
    with pytest.raises(ValueError, match="data 0"):
        K.for_class(E.ELFCLASS64, 0)


def test_fields_must_match_the_record():
    with pytest.raises(ValueError, match="do not match"):
        Layout("bad", E.Nhdr, "<", [("namesz", "I"), ("descsz", "I")])


def test_vcpu_note_layouts_are_qemus():
    """sizeof() in target/i386/arch_dump.c, and the formats QEMU's structs pack to."""
    assert E.X86_64_PRSTATUS.size == 336
    assert E.X86_64_PRSTATUS.struct.format == "<32xI76x" + "Q" * 27 + "8x"
    assert E.I386_PRSTATUS.size == 144
    assert E.QEMU_CPU_SEGMENT.size == 24
    assert E.QEMU_CPU_STATE_SIZE == 440
    regs = E.X86_64_PRSTATUS.pack(pid=2, r15=0x15, gs=0x6B)
    assert regs[32:36] == b"\2\0\0\0" and regs[112:120] == b"\x15" + bytes(7)
    assert regs[320:328] == b"\x6b" + bytes(7)  # gs, the last register
