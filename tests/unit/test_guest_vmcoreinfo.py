"""guest.vmcoreinfo: finding, parsing and verifying the guest's VMCOREINFO note.

Guest RAM is attacker-controlled: besides the kernel's own note, the tests
plant malformed notes, fakes with another OSRELEASE, floods of candidates and
RAM full of note names, and check that :func:`find` picks the verified note,
stays bounded, and raises nothing.
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.guestsynth import (
    FAKE_RELEASE,
    KERNEL_NOTE,
    KERNEL_TEXT,
    KIMG,
    NAME_OFF,
    NOTE_AT,
    PAGE,
    RELEASE,
    RELEASE_PA,
    UTS_VADDR,
    fake_note,
    guest_ram,
    kernel_fields,
    kernel_page_tables,
    kernel_ram,
    note_like,
    put,
    raw_note,
    vmcoreinfo_note,
    vmcoreinfo_text,
)
from support.guestsynth import KERNEL_PHYS_BASE as PHYS_BASE
from support.guestsynth import KERNEL_RAM_PAGES as RAM_PAGES
from support.guestsynth import note_descs as descs

from qemu_vmcore.arch.x86 import ARCH as X86
from qemu_vmcore.guest import vmcoreinfo as V
from qemu_vmcore.guest.vmcoreinfo import (
    MAX_CANDIDATES,
    MAX_LINES,
    MAX_NOTE_SIZE,
    Search,
    VmcoreInfo,
    VmcoreInfoError,
    parse_note,
    parse_text,
    scan_candidates,
)
from qemu_vmcore.layouts import elf as E

# The synthetic guest is an x86_64 kernel: its notes are read with x86's layout.


def find(mem, host_fd, device, state, roots=()):
    return V.find(mem, host_fd, device, state, roots, layout_of=X86.kernel_layout)


def candidate_at(mem, gpa, source, limit, roots=()):
    return V.candidate_at(mem, gpa, source, limit, roots, layout_of=X86.kernel_layout)


def verify(mem, info, roots=()):
    return V.verify(mem, info, roots, layout=X86.kernel_layout(info))


HEADER = E.ELF64LE.nhdr.size + 12  # header + "VMCOREINFO\0" padded


def run_find(ram, device=None, state="no vmcoreinfo device", roots=()) -> Search:
    with guest_ram(ram) as (mem, host):
        return find(mem, host.fd, device, state, roots)


# -- parsing -----------------------------------------------------------------------------


def test_parse_note_splits_the_kernel_note():
    note, desc = parse_note(KERNEL_NOTE + b"trailing bytes of the page")
    assert note == KERNEL_NOTE
    assert desc == KERNEL_TEXT
    assert len(note) % 4 == 0


def test_parse_text_and_accessors():
    fields = parse_text(KERNEL_TEXT + b"\0\0\0")
    info = VmcoreInfo(KERNEL_NOTE, NOTE_AT, "test", fields=fields)
    assert info.osrelease == RELEASE
    assert info.symbol("init_uts_ns") == UTS_VADDR  # hex
    assert info.symbol("prb") == 0xFFFFFFFF82A1C2E8
    assert info.offset("uts_namespace.name") == NAME_OFF  # decimal
    assert info.size("printk_info") == 88
    assert info.number("KERNEL_IMAGE_SIZE") == 1 << 30  # decimal
    assert info.number("phys_base") == PHYS_BASE == 32768  # decimal, not 0x32768
    assert info.kerneloffset == 0x1E000000  # hex
    assert X86.kernel_layout(info).image_pa(KIMG + 0x1234) == 0x1234 + PHYS_BASE
    assert info.symbol("nothing") is None
    assert info.offset("nothing.here") is None
    assert info.size("nothing") is None
    assert info.number("nothing") is None


def test_accessors_of_malformed_values_are_none():
    fields = parse_text(
        vmcoreinfo_text(
            [
                ("OSRELEASE", "x"),
                ("SYMBOL(a)", "not-hex"),
                ("OFFSET(b.c)", "ff"),  # hex where decimal is due
                ("SIZE(d)", ""),
                ("NUMBER(phys_base)", "1000h"),
                ("NUMBER(hex)", "0x1000"),  # as arm64 prints PHYS_OFFSET
                ("NUMBER(badhex)", "0xzz"),
                ("KERNELOFFSET", "zz"),
            ]
        )
    )
    info = VmcoreInfo(b"", 0, "test", fields=fields)
    assert info.symbol("a") is None
    assert info.offset("b.c") is None
    assert info.size("d") is None
    assert info.number("phys_base") is None
    assert X86.kernel_layout(info).phys_base == 0
    assert info.number("hex") == 0x1000
    assert info.number("badhex") is None
    assert info.kerneloffset == 0


def test_parse_text_keeps_the_first_of_repeated_keys():
    fields = parse_text(b"OSRELEASE=real\nOSRELEASE=second\nA=1\nA=2\nno equals sign\n=x\n")
    assert fields["OSRELEASE"] == "real"
    assert fields["A"] == "1"


def test_parse_text_stops_at_nul():
    assert parse_text(b"OSRELEASE=1.2\nA=b\0\xff\xfe binary after the text")["A"] == "b"


@pytest.mark.parametrize(
    "desc, reason",
    [
        (b"", "does not start with OSRELEASE="),
        (b"\0OSRELEASE=1", "does not start with OSRELEASE="),
        (b"BUILD-ID=1\nOSRELEASE=1\n", "does not start with OSRELEASE="),
        (b"osrelease=1\n", "does not start with OSRELEASE="),
        (b"OSRELEASE=6.1\nA=\x01\x02\x03", "non-printable"),
        (b"OSRELEASE=6.1\nA=\xc3\xa9", "non-printable"),
        (b"OSRELEASE=6.1\r\n", "non-printable"),
        (b"OSRELEASE=\nB=1\n", "empty OSRELEASE"),
        (b"OSRELEASE=", "empty OSRELEASE"),
        (b"OSRELEASE=1\n" + b"A=1\n" * MAX_LINES, f"more than {MAX_LINES} lines"),
    ],
)
def test_parse_text_rejects(desc, reason):
    with pytest.raises(VmcoreInfoError, match=reason):
        parse_text(desc)


def test_parse_text_line_cap_is_inclusive():
    text = b"OSRELEASE=1" + b"\nA=1" * (MAX_LINES - 1)
    assert len(text.split(b"\n")) == MAX_LINES
    assert parse_text(text)["OSRELEASE"] == "1"


@pytest.mark.parametrize(
    "buf, reason",
    [
        (b"", "shorter than a note header"),
        (b"\x0b\0\0\0\x10\0\0", "shorter than a note header"),
        (raw_note(4, b"OSRE", namesz=12), "not a VMCOREINFO note"),
        (raw_note(4, b"OSRE", ntype=1), "not a VMCOREINFO note"),
        (raw_note(0xFFFFFFF0), "over the"),
        (raw_note(MAX_NOTE_SIZE + 1), "over the"),
        (
            E.ELF64LE.nhdr.pack(namesz=11, descsz=4) + b"VMCOREINFX\0\0OSRE",
            "name is not VMCOREINFO",
        ),
        (
            E.ELF64LE.nhdr.pack(namesz=11, descsz=4) + b"VMCOREINFO",
            "name is not VMCOREINFO",
        ),  # cut name
        (raw_note(100, b"OSRELEASE=1\n"), "runs past"),
        (raw_note(5, b"OSREL"), "runs past"),  # desc padding is part of the note
    ],
)
def test_parse_note_rejects(buf, reason):
    with pytest.raises(VmcoreInfoError, match=reason):
        parse_note(buf)


# -- finding the kernel's note -------------------------------------------------------------


def test_scan_finds_and_verifies_the_kernel_note():
    ram = kernel_ram()
    with guest_ram(ram) as (mem, host):
        assert list(scan_candidates(mem, host.fd)) == [NOTE_AT]
        search = find(mem, host.fd, None, "the guest never wrote it")
    assert search.device_state == "the guest never wrote it"
    assert search.candidates == 1
    assert search.rejected == []
    info = search.chosen
    assert info is not None
    assert (info.gpa, info.source, info.verified) == (NOTE_AT, "guest RAM scan", True)
    assert info.note == KERNEL_NOTE
    assert info.osrelease == RELEASE
    assert info.fields == kernel_fields()


def test_scan_finds_notes_at_any_4_byte_offset_and_page_end():
    ram = kernel_ram(note_at=None)
    at = 5 * PAGE - 36  # the note's header and name straddle a page boundary
    put(ram, at, KERNEL_NOTE)
    with guest_ram(ram) as (mem, host):
        assert list(scan_candidates(mem, host.fd)) == [at]
        assert find(mem, host.fd, None, "").chosen.verified


def test_a_page_of_text_is_accepted():
    # Linux's note holds up to VMCOREINFO_BYTES (a page) of text.
    fields = kernel_fields()
    k = 0
    while len(vmcoreinfo_text(fields)) < PAGE - 40:
        fields[f"OFFSET(some_struct.member_{k})"] = str(k)
        k += 1
    note = vmcoreinfo_note(vmcoreinfo_text(fields))
    ram = kernel_ram(note_at=None)
    put(ram, NOTE_AT, note)
    search = run_find(ram)
    assert search.chosen.verified and search.chosen.note == note
    assert search.chosen.fields == fields


def test_verification_uses_decimal_phys_base_and_the_offsets():
    # The same note, with phys_base as hex text: the release is looked up
    # 0x8000 - 8000 bytes away and does not match.
    wrong = [
        fake_note(RELEASE, **{"NUMBER(phys_base)": f"{PHYS_BASE:x}"}),
        fake_note(RELEASE, **{"OFFSET(uts_namespace.name)": str(NAME_OFF + 1)}),
        fake_note(RELEASE, **{"SYMBOL(init_uts_ns)": f"{UTS_VADDR + 65:x}"}),
        fake_note(RELEASE, **{"SYMBOL(init_uts_ns)": None}),
        fake_note(RELEASE, **{"OFFSET(uts_namespace.name)": None}),
        fake_note(RELEASE, **{"SYMBOL(init_uts_ns)": "2000"}),  # below __START_KERNEL_map
        fake_note(RELEASE, **{"SYMBOL(init_uts_ns)": "ffffffffffff0000"}),  # outside RAM
        fake_note(RELEASE, **{"NUMBER(phys_base)": "-100000"}),
        fake_note(RELEASE, **{"OFFSET(uts_namespace.name)": "9" * 5000}),  # int() digit cap
        fake_note(RELEASE + "x"),
        fake_note(RELEASE[:-1]),
    ]
    for note in wrong:
        ram = kernel_ram(note_at=None)
        put(ram, NOTE_AT, note)
        search = run_find(ram)
        assert search.chosen is not None, note
        assert search.chosen.gpa == NOTE_AT
        assert not search.chosen.verified, note
        assert search.rejected == [f"{NOTE_AT:#x}: init_uts_ns disagrees with OSRELEASE"]


def test_verify_direct():
    ram = kernel_ram()
    with guest_ram(ram) as (mem, _):
        info = VmcoreInfo(KERNEL_NOTE, NOTE_AT, "x", fields=kernel_fields())
        assert verify(mem, info)
        assert candidate_at(mem, NOTE_AT, "x", PAGE).verified
        fake = VmcoreInfo(b"", 0, "x", fields=kernel_fields(FAKE_RELEASE))
        assert not verify(mem, fake)


def test_device_note_is_taken_without_scanning():
    device = (NOTE_AT, len(KERNEL_NOTE), V.FW_CFG_VMCOREINFO_FORMAT_ELF)
    search = run_find(kernel_ram(), device, "guest wrote it")
    assert search.chosen is not None
    assert (search.chosen.gpa, search.chosen.source) == (NOTE_AT, "vmcoreinfo device")
    assert search.chosen.verified
    assert search.chosen.note == KERNEL_NOTE
    assert (search.candidates, search.rejected, search.device_state) == (0, [], "guest wrote it")


def test_device_size_larger_than_the_note_is_fine():
    # Linux gives fw_cfg VMCOREINFO_NOTE_SIZE, larger than the note itself.
    search = run_find(kernel_ram(), (NOTE_AT, 1 << 30, 1))
    assert search.chosen.source == "vmcoreinfo device"


FAKE_AT = 0x1000


@pytest.mark.parametrize(
    "device, reason",
    [
        ((NOTE_AT, len(KERNEL_NOTE), 0), "guest format 0 is not ELF"),
        ((NOTE_AT, len(KERNEL_NOTE), 2), "guest format 2 is not ELF"),
        ((NOTE_AT, len(KERNEL_NOTE) - 4, 1), "byte bound"),
        ((NOTE_AT, 0, 1), "byte bound"),
        ((1 << 40, len(KERNEL_NOTE), 1), "not guest RAM"),
        ((RAM_PAGES * PAGE - 8, 4096, 1), "not guest RAM"),  # header runs off the end
        ((2**64 - 8, 4096, 1), "not guest RAM"),
        ((0x3000, len(KERNEL_NOTE), 1), "not a VMCOREINFO note"),  # zeros there
        ((FAKE_AT, 4096, 1), "init_uts_ns disagrees"),
    ],
)
def test_bad_device_note_is_rejected_and_the_scan_takes_over(device, reason):
    ram = kernel_ram()
    put(ram, FAKE_AT, fake_note())
    search = run_find(ram, device, "guest wrote it")
    assert search.rejected[0].startswith(f"device note at {device[0]:#x}: ")
    assert reason in search.rejected[0]
    assert search.chosen is not None
    assert search.chosen.gpa == NOTE_AT
    assert search.chosen.source == "guest RAM scan"
    assert search.chosen.verified


# -- hostile RAM ---------------------------------------------------------------------------


def test_malformed_notes_before_the_real_one_are_rejected():
    ram = kernel_ram()
    planted = {
        0x1000: (raw_note(0xFFFFFFF0, b"OSRELEASE=" + RELEASE.encode()), "over its"),
        # Under the note cap, over the bound of a scanned note.
        0x1100: (raw_note(MAX_NOTE_SIZE - 4, b"OSRELEASE=x\n"), "over its"),
        0x1200: (vmcoreinfo_note(b"OSRELEASE=" + bytes(range(1, 64))), "non-printable"),
        0x1300: (vmcoreinfo_note(b"OSRELEASE=\n"), "empty OSRELEASE"),
        0x1400: (
            vmcoreinfo_note(b"OSRELEASE=1\n" + b"A\n" * (MAX_LINES + 1)),
            f"more than {MAX_LINES} lines",
        ),
    }
    # Names with other descs: not candidates, or candidates rejected for it.
    optional = {
        0x1380: raw_note(12, b"OSRELEASE=1\n", ntype=7),  # wrong type: not even a hit
        0x4000: vmcoreinfo_note(bytes(range(256))),
        0x4200: vmcoreinfo_note(b"BUILD-ID=123\nOSRELEASE=" + RELEASE.encode() + b"\n"),
        0x4400: vmcoreinfo_note(b"osrelease=" + RELEASE.encode() + b"\n"),
    }
    for at, (data, _) in planted.items():
        put(ram, at, data)
    for at, data in optional.items():
        put(ram, at, data)
    search = run_find(ram)
    assert search.chosen.gpa == NOTE_AT and search.chosen.verified
    reasons = dict(r.split(": ", 1) for r in search.rejected)
    assert set(reasons) >= {f"{at:#x}" for at in planted}
    assert set(reasons) <= {f"{at:#x}" for at in [*planted, *optional]}
    assert list(reasons) == sorted(reasons, key=lambda at: int(at, 16))  # in gpa order
    for at, (_, reason) in planted.items():
        assert reason in reasons[f"{at:#x}"]
    for at in optional:
        if f"{at:#x}" in reasons:
            assert "does not start with OSRELEASE=" in reasons[f"{at:#x}"]
    assert search.candidates == len(reasons) + 1


def test_truncated_note_at_the_end_of_ram():
    ram = kernel_ram(note_at=None)
    note = raw_note(200, b"OSRELEASE=1\n")
    at = len(ram) - len(note)
    put(ram, at, note)
    with guest_ram(ram) as (mem, host):
        assert list(scan_candidates(mem, host.fd)) == [at]
        with pytest.raises(VmcoreInfoError, match="not guest RAM"):
            candidate_at(mem, at, "x", MAX_NOTE_SIZE)
        search = find(mem, host.fd, None, "")
    assert search.chosen is None
    assert search.rejected == [f"{at:#x}: guest-physical {len(ram):#x} is not guest RAM"]


def test_name_without_room_for_a_header_is_not_a_candidate():
    ram = kernel_ram(note_at=None)
    put(ram, 0, b"VMCOREINFO\0\0OSRELEASE=1\n")  # its header would be at -12
    put(ram, 0x100, b"VMCOREINFO\0\0OSRELEASE=1\n")  # no namesz before it
    put(ram, len(ram) - 20, b"\x0b\0\0\0\x10\0\0\0\0\0\0\0VMCOREIN")  # cut by the end
    search = run_find(ram)
    assert (search.chosen, search.candidates, search.rejected) == (None, 0, [])


def test_dozens_of_fakes_before_the_real_note():
    ram = kernel_ram(pages=64)
    fakes = [0x1000 + 0x200 * k for k in range(40)]
    for k, at in enumerate(fakes):
        # Fakes that agree with each other, other kernels, and the real one's
        # release with a wrong init_uts_ns.
        release = [FAKE_RELEASE, f"5.{k}.0", RELEASE][k % 3]
        bad = {"SYMBOL(init_uts_ns)": f"{UTS_VADDR + 0x100:x}"} if release == RELEASE else {}
        put(ram, at, fake_note(release, **bad))
    assert fakes[-1] + 0x200 < RELEASE_PA - NAME_OFF - 130
    search = run_find(ram)
    assert search.chosen.gpa == NOTE_AT
    assert search.chosen.verified
    assert search.chosen.osrelease == RELEASE
    assert search.candidates == len(fakes) + 1
    assert search.rejected == [f"{at:#x}: init_uts_ns disagrees with OSRELEASE" for at in fakes]


def test_unverified_note_is_kept_when_none_verifies():
    ram = kernel_ram(note_at=None)
    put(ram, 0x1000, fake_note("first"))
    put(ram, 0x1200, fake_note("second"))
    search = run_find(ram)
    assert search.chosen.gpa == 0x1000
    assert search.chosen.osrelease == "first"
    assert not search.chosen.verified
    assert len(search.rejected) == 2


def test_flood_of_fakes_is_bounded():
    n = MAX_CANDIDATES + 44
    note = fake_note()
    step = E.align_up(len(note), 16)
    ram = bytearray(E.align_up(n * step, PAGE) + 2 * PAGE)
    for k in range(n):
        put(ram, k * step, note)
    real_at = E.align_up(n * step, PAGE)
    put(ram, real_at, KERNEL_NOTE)
    # The real note lies past the cap, so it is not reached.
    start = time.perf_counter()
    search = run_find(ram)
    assert time.perf_counter() - start < 5
    assert search.candidates == MAX_CANDIDATES + 1
    assert search.rejected[-1] == f"more than {MAX_CANDIDATES} candidates; stopped scanning"
    assert search.capped
    assert len(search.rejected) == MAX_CANDIDATES + 1
    assert search.chosen is not None and not search.chosen.verified
    assert search.chosen.gpa == 0
    # The vmcoreinfo device is not affected by the flood (the release string
    # overwrites one of the fakes).
    put(ram, RELEASE_PA, RELEASE.encode() + b"\0")
    search = run_find(ram, (real_at, len(KERNEL_NOTE), 1))
    assert search.chosen.source == "vmcoreinfo device" and search.chosen.verified


def test_ram_full_of_note_headers_is_bounded():
    header = raw_note(0xFFFFFFF0, b"OSRELEASE=\0\0")
    ram = header * ((8 << 20) // len(header))
    start = time.perf_counter()
    search = run_find(ram)
    assert time.perf_counter() - start < 5
    assert search.chosen is None
    assert search.candidates == MAX_CANDIDATES + 1
    assert search.rejected[-1].startswith(f"more than {MAX_CANDIDATES} candidates")


# What a scan searches for: the note's name, padded, and the start of its
# text. Without the namesz before it, no copy of it is a candidate.
NEEDLE = b"VMCOREINFO\0\0OSRELEASE="


@pytest.mark.parametrize("needle", [NEEDLE[:12], NEEDLE], ids=["name", "name-and-text"])
def test_ram_full_of_note_names_finishes(needle):
    ram = needle * ((32 << 20) // len(needle))
    start = time.perf_counter()
    search = run_find(ram)
    assert time.perf_counter() - start < 5
    assert (search.chosen, search.candidates) == (None, 0)


def test_ram_full_of_note_names_scans_at_memory_speed():
    """BUG (performance): the scan's cost grows with planted names, unbounded by the cap.

    scan_candidates() runs a Python loop iteration (mmap.find, a slice, a
    compare) for every occurrence of its needle, and only then checks the
    namesz before it; MAX_CANDIDATES bounds candidates, not hits. A guest user
    filling its memory with the needle makes the scan 40 to 100 times slower
    than over ordinary RAM: ~20-30 ms per MiB here, ~20-30 s per GiB of guest
    RAM. Lengthening the needle (``VMCOREINFO\\0\\0`` then
    ``VMCOREINFO\\0\\0OSRELEASE=``) only changes what the guest fills RAM
    with. Matching namesz, name and text start together (one compiled
    ``re`` over the mmap: ``\\x0b\\0\\0\\0.{8}VMCOREINFO\\0\\0OSRELEASE=``,
    re.DOTALL) makes every hit a candidate, which the cap does bound.
    """
    size = 64 << 20
    clean = bytes(range(256)) * (size // 256)
    hostile = NEEDLE * (size // len(NEEDLE))
    timings = []
    for ram in (clean, hostile):
        with guest_ram(ram) as (mem, host):
            start = time.perf_counter()
            assert find(mem, host.fd, None, "").candidates == 0
            timings.append(time.perf_counter() - start)
    clean_s, hostile_s = timings
    assert hostile_s < 10 * clean_s + 0.25, f"clean {clean_s:.3f} s, hostile {hostile_s:.3f} s"


def test_fake_note_with_its_own_init_uts_ns_is_not_verified():
    """A fake note cannot verify itself with a planted release string.

    Verification reads ``init_uts_ns.name.release`` through the candidate's
    *own* SYMBOL(init_uts_ns), OFFSET(uts_namespace.name) and NUMBER(phys_base),
    all of which the planter chooses. A user process that writes, next to its
    fake note, a 65-byte field holding the fake OSRELEASE, and points the
    note's symbol/phys_base at it, gets ``verified=True`` and is chosen over
    the kernel's note when it comes first in the scan. The planter must guess
    a physical address of its own memory, which spraying many pages (and up
    to MAX_CANDIDATES notes with different guesses) makes likely. So the
    module docstring's "a user process can plant a note, but cannot make the
    kernel's init_uts_ns agree with it" does not hold for the check as
    written; the check needs an anchor the guest user cannot choose: the
    vCPUs' page tables, which must map the symbol where the note says.
    """
    ram = kernel_ram()
    planted_uts = 0x6000  # user memory the planter controls
    put(ram, planted_uts + 2 * 65, FAKE_RELEASE.encode() + b"\0")
    put(
        ram,
        0x1000,
        fake_note(
            **{
                "SYMBOL(init_uts_ns)": f"{KIMG:x}",
                "OFFSET(uts_namespace.name)": "0",
                "NUMBER(phys_base)": str(planted_uts),
            }
        ),
    )
    roots = kernel_page_tables(ram)
    search = run_find(ram, roots=roots)
    assert search.chosen.gpa == NOTE_AT, (
        f"picked the planted note at {search.chosen.gpa:#x} "
        f"(OSRELEASE={search.chosen.osrelease}, verified={search.chosen.verified})"
    )


# -- properties (hypothesis) ---------------------------------------------------------------


@given(note_like)
def test_parse_note_raises_only_vmcoreinfo_error(buf):
    try:
        note, desc = parse_note(buf)
    except VmcoreInfoError:
        return
    h = E.ELF64LE.nhdr.unpack_from(buf)
    assert (h.namesz, h.type) == (11, 0)
    assert note == buf[: len(note)] and len(note) % 4 == 0
    assert desc == buf[HEADER : HEADER + h.descsz] and len(desc) == h.descsz


@given(descs)
def test_parse_text_raises_only_vmcoreinfo_error(desc):
    try:
        fields = parse_text(desc)
    except VmcoreInfoError:
        return
    assert fields["OSRELEASE"]
    assert desc.startswith(b"OSRELEASE=")
    for key, value in fields.items():
        assert "\n" not in key + value and "\0" not in key + value
        assert (key + value).isascii()


hyp_ram_size = 2 * PAGE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, hyp_ram_size - 1), note_like), max_size=4),
    st.lists(st.integers(-16, hyp_ram_size + 16), min_size=1, max_size=6),
    st.sampled_from([0, 12, 24, 64, PAGE, MAX_NOTE_SIZE]),
    st.one_of(
        st.none(),
        st.tuples(st.integers(0, hyp_ram_size + 64), st.integers(0, 1 << 33), st.integers(0, 3)),
    ),
)
def test_candidate_at_and_find_on_random_ram(placed, gpas, limit, device):
    ram = bytearray(hyp_ram_size)
    for at, data in placed:
        data = data[: hyp_ram_size - at]
        ram[at : at + len(data)] = data
    with guest_ram(ram) as (mem, host):
        for gpa in gpas:
            if gpa < 0:
                continue
            try:
                info = candidate_at(mem, gpa, "x", limit)
            except VmcoreInfoError:
                continue
            assert info.note == bytes(ram[gpa : gpa + len(info.note)])
            assert len(info.note) <= limit
            assert info.osrelease
        search = find(mem, host.fd, device, "state")
        found = list(scan_candidates(mem, host.fd))
    assert isinstance(search, Search)
    assert search.candidates <= MAX_CANDIDATES + 1
    if search.chosen is None or not search.chosen.verified:  # the scan ran to its end
        assert search.candidates == min(len(found), MAX_CANDIDATES + 1)
    for gpa in found:
        assert ram[gpa + 12 : gpa + 24] == b"VMCOREINFO\0\0"
        assert struct.unpack_from("<I", ram, gpa)[0] == 11
    if search.chosen is not None:
        assert search.chosen.osrelease
