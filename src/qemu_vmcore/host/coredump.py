"""Finding a core through systemd's coredumpctl (``--coredump MATCH``).

systemd-coredump keeps cores compressed under /var/lib/systemd/coredump and
their metadata in the journal; coredumpctl lists both. We ask it for the
list as JSON, choose the entry here (by PID, executable name or path, or
the newest), and ask it for that entry's file. The file is then opened like
any compressed core, streamed sparsely, not through ``coredumpctl dump``
(which would write every byte of a multi-gigabyte core).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qemu_vmcore.errors import VmcoreError

TIMEOUT = 60  # seconds for one coredumpctl call


class CoredumpError(VmcoreError):
    """No core matches, or coredumpctl cannot give it to us."""


@dataclass(frozen=True)
class Entry:
    """One row of ``coredumpctl --json=short list``."""

    time: int  # microseconds since the epoch
    pid: int
    exe: str
    corefile: str  # "present", "missing", "journal", "none", ...

    @classmethod
    def from_json(cls, row: dict) -> Entry:
        """One listed row; a missing field is 0 or empty, a malformed one an error.

        :raises CoredumpError: a field holds what no coredumpctl prints
            (``"pid": null``, ``"time": "x"``, ``1e400``...).
        """
        return cls(_number(row, "time"), _number(row, "pid"), _text(row, "exe"),
                   _text(row, "corefile"))  # fmt: skip


def _number(row: dict, key: str) -> int:
    """``row[key]`` as a non-negative integer (digits in a string will do)."""
    value = row.get(key, 0)
    number: int | None = None
    # int() would take True as 1 and 1.5 as 1; null, lists and objects are no numbers.
    if (
        isinstance(value, (int, str))
        and not isinstance(value, bool)
        or (isinstance(value, float) and value.is_integer())
    ):
        try:
            number = int(value)
        except ValueError:  # "x"; 1e400 is inf, not is_integer()
            number = None
    if number is None or number < 0:
        raise CoredumpError(
            f"coredumpctl listed a core whose {key!r} is {json.dumps(value)[:40]}, not a number"
        )
    return number


def _text(row: dict, key: str) -> str:
    value = row.get(key, "")
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("coredumpctl")
    if exe is None:
        raise CoredumpError(
            "coredumpctl not found; --coredump needs systemd-coredump",
            hint="pass the core file's path instead",
        )
    try:
        return subprocess.run(
            [exe, "--no-pager", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CoredumpError(f"coredumpctl did not answer within {TIMEOUT} s") from None


def list_entries() -> list[Entry]:
    """Every core systemd-coredump knows of."""
    proc = _run(["--json=short", "list"])
    if proc.returncode != 0:
        if "No coredumps found" in proc.stderr:
            return []
        raise CoredumpError(f"coredumpctl list failed: {proc.stderr.strip()[:200]}")
    try:
        rows = json.loads(proc.stdout or "[]")
    except (ValueError, RecursionError) as e:  # JSONDecodeError; nesting too deep
        raise CoredumpError(f"coredumpctl printed no JSON ({str(e)[:100]})") from None
    if not isinstance(rows, list):
        raise CoredumpError(f"coredumpctl printed JSON {type(rows).__name__}, not a list of cores")
    bad = next((r for r in rows if not isinstance(r, dict)), None)
    if bad is not None:
        raise CoredumpError(
            f"coredumpctl listed {json.dumps(bad)[:40]} as a core, not an object with its fields"
        )
    return [Entry.from_json(r) for r in rows]


def select(entries: list[Entry], match: str) -> Entry:
    """The newest entry that ``match`` names.

    ``match`` is a PID (digits), an executable path (with a ``/``), an
    executable name (e.g. ``qemu-system-x86_64``), or empty for the newest
    core of a QEMU.
    """
    if match.isdigit():
        found = [e for e in entries if e.pid == int(match)]
    elif "/" in match:
        found = [e for e in entries if e.exe == match]
    elif match:
        found = [e for e in entries if os.path.basename(e.exe) == match]
    else:
        found = [e for e in entries if "qemu" in os.path.basename(e.exe)]
    if not found:
        what = f"matching {match!r}" if match else "of a QEMU"
        raise CoredumpError(f"coredumpctl knows no core {what} ({len(entries)} cores listed)")
    return max(found, key=lambda e: e.time)


def storage(entry: Entry) -> Path:
    """The file systemd-coredump stored ``entry``'s core in."""
    if entry.corefile != "present":
        raise CoredumpError(
            f"the core of pid {entry.pid} ({entry.exe}) is {entry.corefile or 'not stored'}",
            hint="coredumpctl dump -o FILE may still export it; then pass FILE",
        )
    proc = _run(["-F", "COREDUMP_FILENAME", "list", f"COREDUMP_PID={entry.pid}"])
    names = [line for line in proc.stdout.splitlines() if line.strip()]
    # The same PID may recur across boots; systemd names files
    # core.COMM.UID.BOOT_ID.PID.TIMESTAMP[.zst|.lz4|.xz].
    tagged = [n for n in names if f".{entry.pid}.{entry.time}" in os.path.basename(n)]
    chosen = (tagged or names)[:1]
    if not chosen:
        raise CoredumpError(f"coredumpctl names no file for the core of pid {entry.pid}")
    return Path(chosen[0])


def find_core(match: str) -> Path:
    """Path of the stored core that ``match`` names (see :func:`select`)."""
    return storage(select(list_entries(), match))
