"""Text made safe for a terminal.

Strings we print can come from the guest (its OSRELEASE, its log) or from a
core that may be corrupt (RAMBlock names, device ids, file paths in NT_FILE).
A guest must not be able to drive the user's terminal with escape sequences,
nor split our one-line error into several lines: every character that is not
printable is shown as an escape instead.
"""

from __future__ import annotations

import re

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
