"""cli: the mount and drgn commands' arguments (no core needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qemu_vmcore.frontends.cli import _split_script, build_parser


def parse(*argv: str):
    parser = build_parser()
    own, script = _split_script(parser, list(argv))
    args = parser.parse_args(own)
    if script:
        args.args = script
    return args


@pytest.mark.parametrize(
    "argv, core, symbols, exec_, script",
    [
        (["drgn", "c"], "c", None, None, []),
        (["drgn", "c", "-s", "v"], "c", ["v"], None, []),
        (["drgn", "-s", "v", "c", "s.py", "-s", "x"], "c", ["v"], None, ["s.py", "-s", "x"]),
        (["drgn", "c", "-s", "v", "-e", "print(1)", "a", "-b"], "c", ["v"], "print(1)",
         ["a", "-b"]),
        (["drgn", "c", "--symbols=v", "--", "-weird.py", "x"], "c", ["v"], None,
         ["-weird.py", "x"]),
        (["drgn", "--coredump", "qemu", "s.py", "a"], None, None, None, ["s.py", "a"]),
        (["drgn", "--coredump", "--tmpdir", "/t", "s.py"], None, None, None, ["s.py"]),
        (["drgn", "c", "--qemu", "q", "s.py"], "c", None, None, ["s.py"]),
    ],
)  # fmt: skip
def test_drgn_arguments(argv, core, symbols, exec_, script):
    args = parse(*argv)
    assert args.core == (Path(core) if core else None)
    assert args.symbols == ([Path(s) for s in symbols] if symbols else None)
    assert args.exec == exec_
    assert args.args == script


def test_other_commands_are_left_alone():
    args = parse("extract", "c", "-o", "drgn")
    assert args.output == Path("drgn")


def test_mount_arguments():
    args = parse("mount", "core", "/mnt", "--format", "kdump-zstd", "--threads", "2", "-q")
    assert (args.core, args.mountpoint, args.format, args.threads, args.quiet) == (
        Path("core"), Path("/mnt"), "kdump-zstd", 2, True,
    )  # fmt: skip
    args = parse("mount", "--coredump", "qemu", "/mnt")
    assert (args.core, args.coredump, args.mountpoint) == (None, "qemu", Path("/mnt"))
