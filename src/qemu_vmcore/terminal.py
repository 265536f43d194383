"""Text made safe for a terminal, and a stderr that cannot stop a command.

Strings we print can come from the guest (its OSRELEASE, its log) or from a
core that may be corrupt (RAMBlock names, device ids, file paths in NT_FILE).
A guest must not be able to drive the user's terminal with escape sequences,
nor split our one-line error into several lines: every character that is not
printable is shown as an escape instead.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from typing import TextIO

# Not printable (controls, separators, unassigned, surrogates from
# ``surrogateescape``) or printable but reordering what the user sees: the
# bidirectional embeddings, overrides and isolates.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def safe(text: str) -> str:
    """``text`` with every character that is not printable shown as ``\\xNN``.

    ``\\uNNNN`` and ``\\UNNNNNNNN`` above 0xff. Tabs and newlines are escaped
    too: what we print from guest data is always meant to be one line.
    Undecodable bytes that Python kept as surrogates (``surrogateescape``)
    come out as ``\\udcNN``.
    """
    if text.isprintable() and not _BIDI.search(text):
        return text  # the common case, at C speed
    return "".join(c if c.isprintable() and not _BIDI.match(c) else _escape(c) for c in text)


def safe_data(value: object) -> object:
    """``value`` (dicts, lists, tuples and scalars) with every string made :func:`safe`."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        return {k: safe_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_data(v) for v in value]
    return value


def point_at_devnull(stream: object) -> None:
    """Reopen the descriptor under ``stream`` on /dev/null, and flush into it.

    After a write failed (a closed pipe, a full disk), what the stream still
    buffers would fail again at exit, where Python prints "Exception ignored
    ..." and exits with 120. A stream with no descriptor (pytest's capture)
    is left alone.
    """
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    with suppress(OSError, ValueError):
        stream.flush()  # type: ignore[attr-defined]


class MessageStream:
    """A text stream for messages (stderr) whose failures are ignored.

    Messages are not the result: ``2>/dev/full`` or a reader of stderr that
    went away must not stop a command writing its vmcore. After the first
    failure the messages are dropped, and the descriptor is put on /dev/null
    for whatever else writes there (libdw, rich, child processes).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lost = False

    def write(self, text: str) -> int:
        if not self._lost:
            try:
                self._stream.write(text)
            except OSError:
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self._lost:
            try:
                self._stream.flush()
            except OSError:
                self._lose()

    def _lose(self) -> None:
        self._lost = True
        point_at_devnull(self._stream)

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:
        return getattr(self._stream, "errors", None)

    def __getattr__(self, name: str) -> object:
        # Everything else (closed, buffer, ...) as the stream has it.
        return getattr(self._stream, name)
