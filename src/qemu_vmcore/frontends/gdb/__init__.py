"""The gdb front end: a ``dump-guest-memory`` command for gdb, on qemu-vmcore's engine.

* :mod:`.dump_guest_memory` is the script to ``source`` in gdb (its path:
  ``qemu-vmcore gdb-script``); it finds this package and registers the command;
* :mod:`.command` is the command itself (runs in gdb's Python);
* :mod:`.runner` runs that command in ``gdb -batch`` for
  ``qemu-vmcore extract --backend gdb`` (runs in the CLI's Python).

Only :mod:`.command` and :mod:`qemu_vmcore.debugger.gdb_backend` import ``gdb``.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_NAME = "dump_guest_memory.py"


def script_path() -> Path:
    """The gdb command script shipped in this package."""
    return Path(__file__).resolve().parent / SCRIPT_NAME
