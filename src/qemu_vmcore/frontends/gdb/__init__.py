"""The gdb front end: a ``dump-guest-memory`` command for gdb, on qemu-vmcore's engine.

* :mod:`.dump_guest_memory` is the script to ``source`` in gdb (its path:
  ``qemu-vmcore gdb-script``); it finds this package and registers the command;
* :mod:`.command` is the command itself (runs in gdb's Python).

:mod:`qemu_vmcore.debugger.gdb_batch` runs the command in ``gdb -batch`` for
``qemu-vmcore extract --backend gdb`` (in the CLI's Python), and knows where
the script is. Only :mod:`.command` and :mod:`qemu_vmcore.debugger.gdb_backend`
import ``gdb``.
"""
