"""gdb command script of qemu-vmcore: ``dump-guest-memory FILE [ARCH]`` on our engine.

Use it as QEMU's own scripts/dump-guest-memory.py is used::

    $ gdb qemu-system-x86_64 core
    (gdb) source /path/printed/by/qemu-vmcore-gdb-script
    (gdb) dump-guest-memory guest.vmcore

``qemu-vmcore gdb-script`` prints this file's path. gdb runs it with its own
Python (on Debian /usr/bin/python3), which may not see the virtualenv
qemu-vmcore is installed in: so this script loads the ``qemu_vmcore`` package
it sits in from its own location, whatever gdb's ``sys.path`` says. The
engine needs nothing beyond the standard library for this command; ``rich``,
if gdb's Python has it, draws the progress bar.

If something is missing, sourcing prints one line saying how to fix it, and
the command repeats that line instead of running.
"""

import importlib.util
import os
import sys

import gdb

_MIN_PYTHON = (3, 11)
_DEBIAN_PACKAGES = {"elftools": "python3-pyelftools", "rich": "python3-rich"}


def _qemu_vmcore_problem(exc):
    """One line saying what is wrong with gdb's Python for qemu-vmcore, and the fix."""
    python = f"{sys.executable or 'python'} {sys.version.split()[0]}"
    if isinstance(exc, ImportError) and exc.name and not exc.name.startswith("qemu_vmcore"):
        top = exc.name.split(".")[0]
        package = _DEBIAN_PACKAGES.get(top, f"python3-{top}")
        return (
            f"dump-guest-memory: gdb's Python ({python}) cannot import {top!r}; "
            f"install it for that Python (Debian/Ubuntu: apt install {package}; "
            f"or: {sys.executable or 'python3'} -m pip install {top})"
        )
    return f"dump-guest-memory: cannot load qemu-vmcore in gdb's Python ({python}): {exc}"


def _qemu_vmcore_load():
    """Import ``qemu_vmcore`` from the directory holding this script's package."""
    here = os.path.dirname(os.path.realpath(__file__))  # .../qemu_vmcore/frontends/gdb
    package_dir = os.path.dirname(os.path.dirname(here))  # .../qemu_vmcore
    loaded = sys.modules.get("qemu_vmcore")
    if loaded is not None:
        where = os.path.dirname(os.path.realpath(loaded.__file__ or ""))
        if where != package_dir:
            raise ImportError(
                f"another qemu_vmcore ({where}) is already loaded in this gdb; restart gdb"
            )
        return
    spec = importlib.util.spec_from_file_location(
        "qemu_vmcore",
        os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["qemu_vmcore"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["qemu_vmcore"]
        raise


class _Unavailable(gdb.Command):
    """dump-guest-memory is unavailable: qemu-vmcore could not be loaded (see the message)."""

    def __init__(self, message):
        super().__init__("dump-guest-memory", gdb.COMMAND_DATA, gdb.COMPLETE_FILENAME)
        self.message = message

    def invoke(self, arg, from_tty):
        self.dont_repeat()
        raise gdb.GdbError(self.message)


def _qemu_vmcore_main():
    if sys.version_info < _MIN_PYTHON:
        need = ".".join(map(str, _MIN_PYTHON))
        message = (
            f"dump-guest-memory: qemu-vmcore needs Python {need} or newer, but this gdb runs "
            f"{sys.executable or 'python'} {sys.version.split()[0]}; use a gdb built with a "
            "newer Python, or run `qemu-vmcore extract` instead"
        )
    else:
        try:
            _qemu_vmcore_load()
            from qemu_vmcore.frontends.gdb.command import register

            register()
            return
        except Exception as exc:  # noqa: BLE001 - reported as one line, as gdb errors are
            message = _qemu_vmcore_problem(exc)
    gdb.write(message + "\n", gdb.STDERR)
    _Unavailable(message)


_qemu_vmcore_main()
