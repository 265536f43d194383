"""Terminal safety: text from the guest or a corrupt core cannot drive the terminal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qemu_vmcore import report
from qemu_vmcore.terminal import safe, safe_data

ESC = "\x1b"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("title\x1b]0;pwned\x07", "title\\x1b]0;pwned\\x07"),
        ("two\nlines\r", "two\\x0alines\\x0d"),
        ("tab\there", "tab\\x09here"),
        ("c1\x9bcsi", "c1\\x9bcsi"),
        ("del\x7f", "del\\x7f"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("bytes\udcff", "bytes\\udcff"),  # surrogateescape'd 0xff
        ("caf\u00e9 ok", "caf\u00e9 ok"),
    ],
)
def test_safe(text, shown):
    assert safe(text) == shown


@given(st.text())
def test_safe_output_is_printable_and_one_line(text):
    out = safe(text)
    assert out.isprintable()
    assert "\n" not in out and ESC not in out


def test_safe_data_walks_containers():
    data = {"a": ["x\x1b", ("y\n", 3)], "b": None, "c": {"d": "\x07"}}
    assert safe_data(data) == {"a": ["x\\x1b", ["y\\x0a", 3]], "b": None, "c": {"d": "\\x07"}}


def _info(osrelease: str, device_id: str, path: str) -> dict:
    return {
        "core": path,
        "qemu": {"version": "10.0.0", "executable": path, "pid": 1},
        "machine": "pc-q35-10.0 (q35)",
        "accelerator": "tcg",
        "arch": "x86_64",
        "vcpus": 1,
        "vcpu_states": [
            {
                "index": 0,
                "mode": "long",
                "pc": 0xFFFFFFFF81000000,
                "rip": 0xFFFFFFFF81000000,
                "cr3": 0x1000,
                "stale": False,
            }
        ],
        "vmcoreinfo": {
            "device": "no vmcoreinfo device",
            "source": "guest RAM scan",
            "gpa": 0x11E0000,
            "verified": False,
            "osrelease": osrelease,
            "candidates_scanned": 1,
            "rejected": [],
        },
        "map": {"kind": "flatview", "expr": "address_space_memory.current_map", "why": None},
        "ram_bytes": 1 << 20,
        "ranges": [
            {
                "gpa": 0,
                "end": 1 << 20,
                "size": 1 << 20,
                "hva": 0x7F0000000000,
                "block": "pc.ram",
                "region": "pc.ram",
                "device": {"device": "pc-dimm", "device_id": device_id},
                "in_core": "yes",
                "backing_file": path,
            }
        ],
        "missing": [],
    }


def test_info_escapes_guest_text_and_ignores_markup(capsys):
    """An OSRELEASE with escapes and rich markup, a device id and a path with them."""
    report.print_info(
        _info("6.6\x1b]0;owned\x07[bold red]x[/bold red]", "d\x1b[2J[link=x]", "/tmp/\x1b[31mf\nx")
    )
    out = capsys.readouterr().out
    assert ESC not in out and "\x07" not in out
    assert "6.6\\x1b]0;owned\\x07[bold red]x[/bold red]" in out  # markup shown, not applied
    assert "d\\x1b[2J[link=x]" in out
    assert "/tmp/\\x1b[31mf\\x0ax" in out


def test_an_error_message_stays_one_line():
    from qemu_vmcore.errors import VmcoreError
    from qemu_vmcore.report import error_report

    line, _ = error_report(VmcoreError("bad RAMBlock name 'a\nerror: fake\x1b[2J'", hint="x\ny"))
    err = f"error: {line}\n"
    assert err.count("\n") == 1 and ESC not in err
    assert err.startswith("error: bad RAMBlock name 'a\\x0aerror: fake\\x1b[2J'")


def test_warning_and_summary_lines_are_terminal_safe():
    """Backing-file paths, inconsistencies, the accelerator name and the output
    path come from the core or the command line: escaped in report's lines."""
    data = {
        "output": "/tmp/v\x1b[31m",
        "format": "elf",
        "file_size": 1,
        "ram_bytes": 4096,
        "ranges": 1,
        "seconds": 0.5,
        "inconsistencies": ["RAMBlock 'a\x1b[2J' is odd"],
        "accelerator": "kvm\x1b]0;x\x07",
        "missing": [],
        "backing_files": [
            {"path": "/dev/shm/m\x1b[5m", "size": 4096, "ranges": [{"gpa": 0, "end": 4096}]}
        ],
        "vmcoreinfo": None,
    }
    lines = [*report.warning_lines(data), report.summary_line(data)]
    assert len(lines) == 4
    for line in lines:
        assert ESC not in line and "\x07" not in line and "\n" not in line
    assert "/dev/shm/m\\x1b[5m" in lines[2] and lines[3].startswith("wrote /tmp/v\\x1b[31m: ")
