"""The one error family the library raises.

Library code never prints or exits; the CLI turns a :class:`VmcoreError` into a
one-line ``error: ...`` message (plus its hint) and a non-zero exit status.
Context travels in keyword-only fields so callers and tests can inspect it.
"""

from __future__ import annotations


class VmcoreError(Exception):
    """Base class: a problem with the input or the environment, not a bug.

    :param message: one line, says what went wrong.
    :param hint: optional one line, says what to do about it.
    :param exit_code: process exit status the CLI uses (2 = bad input).
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = context


class CoreFileError(VmcoreError):
    """The input is not a usable ELF core of an x86_64 process."""


class NotQemuError(VmcoreError):
    """The core is a core, but not of QEMU (or not of a QEMU we understand)."""


class DebugInfoError(VmcoreError):
    """QEMU's debug info is missing or does not belong to this core."""


class QemuStateError(VmcoreError):
    """QEMU's data structures in the core are inconsistent or implausible."""


class MissingMemoryError(VmcoreError):
    """Guest RAM is not in the core (not dumped, truncated, or unmapped)."""


class ProcessError(VmcoreError):
    """A live process (``--pid``) cannot be read: gone, not allowed, already traced."""


class OutputError(VmcoreError):
    """The output file cannot be created or written."""

    exit_code = 3
