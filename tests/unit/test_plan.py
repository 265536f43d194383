"""plan: --format/--paging/--begin/--length by QMP's rules, and what they select."""

from __future__ import annotations

import pytest
from support.runs import assert_one_line_error, run_cli

from qemu_vmcore.guest.paging import Mapping
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.plan import DumpOptions, OptionError, parse_size, select_ranges
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.writers.elf import build_image

G4 = 1 << 32
R0 = GuestRange(0, 0xA0000, 0x7000_0000_0000, "pc.ram", "lo", 1)
R1 = GuestRange(0x100000, 0x8000000, 0x7000_0010_0000, "pc.ram", "lo", 1)
R2 = GuestRange(G4, G4 + 0x100000, 0x7100_0000_0000, "hi", "hi", 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DumpOptions(begin=0x1000), "--begin needs --length"),
        (DumpOptions(length=0x1000), "--length needs --begin"),
        (DumpOptions(begin=0, length=0), "--length must be greater than 0"),
        (DumpOptions(begin=0, length=-4096), "--length must be greater than 0"),
        (DumpOptions(begin=-1, length=1), "is not a guest-physical address"),
        (DumpOptions(format="kdump-zstd", paging=True), "--paging applies to --format elf only"),
        (DumpOptions(flattened=True), "--flattened applies to the kdump formats only"),
        (DumpOptions(format="kdump-gzip"), "unknown format"),
        (DumpOptions(format="kdump-lzo", threads=-1), "--threads"),
        (DumpOptions(format="kdump-lzo", threads=1000), "--threads must be 0"),
    ],
)
def test_option_rules(options, message):
    with pytest.raises(OptionError, match=message):
        options.check()


@pytest.mark.parametrize(
    "options",
    [
        DumpOptions(),
        DumpOptions(paging=True, begin=0, length=1),
        DumpOptions(format="kdump-zlib", flattened=True, begin=0x1000, length=0x1000),
        DumpOptions(format="kdump-snappy", threads=3),
    ],
)
def test_valid_options(options):
    options.check()


def test_properties():
    o = DumpOptions(format="kdump-zstd", begin=0x1000, length=0x2000)
    assert (o.kdump, o.compression, o.filtered, o.end) == (True, "zstd", True, 0x3000)
    assert (DumpOptions().kdump, DumpOptions().compression, DumpOptions().end) == (
        False,
        None,
        None,
    )
    assert DumpOptions(threads=3).thread_count() == 3
    assert DumpOptions().thread_count() >= 1


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("0x100000", 0x100000),
        ("0X1F", 0x1F),
        ("16M", 16 << 20),
        ("16MiB", 16 << 20),
        ("4g", 4 << 30),
        ("0x10K", 0x10 << 10),
        (" 2T ", 2 << 40),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "0x", "1.5G", "-4096", "16X", "0x10 0x20"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_select_ranges_clips_as_qmp():
    ranges = [R0, R1, R2]
    assert select_ranges(ranges, DumpOptions()) is ranges
    got = select_ranges(ranges, DumpOptions(begin=0x9F000, length=0x62000))
    assert [(r.gpa, r.end, r.hva) for r in got] == [
        (0x9F000, 0xA0000, R0.hva + 0x9F000),
        (0x100000, 0x101000, R1.hva),
    ]
    assert select_ranges(ranges, DumpOptions(begin=G4 + 5, length=1 << 40))[0].gpa == G4 + 5
    with pytest.raises(OptionError, match=r"no guest RAM in \[0xa0000, 0x100000\)"):
        select_ranges(ranges, DumpOptions(begin=0xA0000, length=0x60000))


# -- the ELF layout with paging ----------------------------------------------------


def test_paging_loads_follow_qemus_offset_rules():
    mappings = [
        Mapping(0x1000, 0xFFFF_8880_0000_1000, 0x2000),
        Mapping(0x9F000, 0xFFFF_8880_0009_F000, 0x200000),  # runs past its range: clipped filesz
        Mapping(0xC0000, 0xFFFF_8880_000C_0000, 0x1000),  # not in any range: no file bytes
        Mapping(G4, 0xFFFF_C900_0000_0000, 0x1000),
    ]
    image = build_image([R0, R1, R2], b"notes", mappings=mappings)
    place = {p.range.gpa: p.file_offset for p in image.placements}
    phdrs = parse_phdrs(image.head)
    assert [p.type for p in phdrs] == [E.PT_NOTE] + [E.PT_LOAD] * 4
    assert [(p.vaddr, p.paddr, p.offset, p.filesz, p.memsz) for p in phdrs[1:]] == [
        (0xFFFF_8880_0000_1000, 0x1000, place[0] + 0x1000, 0x2000, 0x2000),
        (0xFFFF_8880_0009_F000, 0x9F000, place[0] + 0x9F000, 0x1000, 0x200000),
        (0xFFFF_8880_000C_0000, 0xC0000, 0, 0, 0x1000),
        (0xFFFF_C900_0000_0000, G4, place[G4], 0x1000, 0x1000),
    ]
    assert image.placements[0].file_offset % 4096 == 0


def test_elf32_leaves_out_what_it_cannot_hold():
    mappings = [
        Mapping(0x1000, 0xC000_1000, 0x1000),
        Mapping(0x2000, 0xFFFF_8880_0000_2000, 0x1000),
    ]
    image = build_image([R0, R1], b"n", elf=E.ELF32LE, machine=E.EM_386, mappings=mappings)
    phdrs = parse_phdrs(image.head, elf32=True)
    assert [(p.vaddr, p.paddr) for p in phdrs[1:]] == [(0xC000_1000, 0x1000)]


def parse_phdrs(head: bytes, elf32: bool = False) -> list[E.Phdr]:
    elf = E.ELF32LE if elf32 else E.ELF64LE
    ehdr = elf.ehdr.unpack_from(head)
    return [elf.phdr.unpack_from(head, ehdr.phoff + i * elf.phdr.size) for i in range(ehdr.phnum)]


# -- the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--begin", "0x1000"], ["--begin needs --length"]),
        (["--length", "4096"], ["--length needs --begin"]),
        (["--begin", "0", "--length", "0"], ["--length must be greater than 0"]),
        (["--format", "kdump-zstd", "--paging"], ["--paging applies to --format elf only"]),
        (["--flattened"], ["--flattened applies to the kdump formats only"]),
    ],
)
def test_cli_option_errors_come_before_the_core(tmp_path, args, needles):
    # The core does not even exist: the options are refused first.
    proc = run_cli("extract", tmp_path / "no-core", "-o", tmp_path / "out", *args)
    assert_one_line_error(proc, *needles)
    assert proc.returncode == 2
    assert not (tmp_path / "out").exists()


def test_cli_bad_size_is_a_usage_error(tmp_path):
    proc = run_cli(
        "extract", tmp_path / "c", "-o", tmp_path / "o", "--begin", "lots", "--length", "1"
    )
    assert proc.returncode == 2 and "not an address or size" in proc.stderr


def test_cli_help_lists_the_formats():
    out = run_cli("extract", "--help", check=True).stdout
    for word in ("kdump-zlib", "kdump-lzo", "kdump-snappy", "kdump-zstd", "--flattened",
                 "--paging", "--begin", "--length", "--threads"):  # fmt: skip
        assert word in out, word
