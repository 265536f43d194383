#!/usr/bin/python3
"""Compare the guest pages of dump files with libkdumpfile (Debian's python3-libkdumpfile).

Runs under the system Python (/usr/bin/python3), which has the ``kdumpfile``
module; the tests call it in a subprocess (see :func:`compare`, importable
from the venv: it runs this file). libkdumpfile reads ELF vmcores and raw
kdump-compressed files; a flattened file must be reassembled first
(``makedumpfile -R``).

    /usr/bin/python3 tests/support/kdumpfile_pages.py REFERENCE FILE...

prints one JSON object per FILE: its format as libkdumpfile sees it, the
number of pages in REFERENCE and in FILE, and the first few page frame
numbers only in one of them or whose contents differ.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

PAGE = 4096
REPORT = 16
SYSTEM_PYTHON = "/usr/bin/python3"


#: Page frames read from the pagemap at a time (bits; 8 KiB of bitmap).
CHUNK = 1 << 16


def _runs(ctx, max_pfn: int):
    """``(first, end)`` runs of the page frames the file has (its pagemap).

    Read with ``get_bits`` rather than ``find_set``/``find_clear``: on an ELF
    file with overlapping PT_LOADs (the kernel-text load lies inside the RAM
    load) libkdumpfile 0.5's ``find_clear`` returns the end of the inner
    load for every index past it, a set bit, and a walk by it never ends.
    """
    bitmap = ctx.attr["file.pagemap"]
    start = None
    for base in range(0, max_pfn, CHUNK):
        last = min(base + CHUNK, max_pfn) - 1
        bits = int.from_bytes(bitmap.get_bits(base, last), "little")
        for i in range(last - base + 1):
            if bits >> i & 1:
                if start is None:
                    start = base + i
            elif start is not None:
                yield start, base + i
                start = None
    if start is not None:
        yield start, max_pfn


def page_digests(path: str) -> tuple[str, dict[int, bytes]]:
    """libkdumpfile's format name and a digest of every page the file has."""
    import kdumpfile

    ctx = kdumpfile.kdumpfile(path)
    max_pfn = int(ctx.attr["max_pfn"])
    out = {}
    for start, end in _runs(ctx, max_pfn):
        for pfn in range(start, end):
            data = ctx.read(kdumpfile.KDUMP_MACHPHYSADDR, pfn * PAGE, PAGE)
            out[pfn] = hashlib.blake2b(data, digest_size=16).digest()
    return str(ctx.attr["file.format"]), out


def compare_digests(ref: dict[int, bytes], other: dict[int, bytes]) -> dict:
    only_ref = sorted(set(ref) - set(other))
    only_other = sorted(set(other) - set(ref))
    differ = sorted(p for p in set(ref) & set(other) if ref[p] != other[p])
    return {
        "pages_reference": len(ref),
        "pages": len(other),
        "only_in_reference": only_ref[:REPORT],
        "only_in_file": only_other[:REPORT],
        "differing": differ[:REPORT],
        "only_in_reference_count": len(only_ref),
        "only_in_file_count": len(only_other),
        "differing_count": len(differ),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    ref_format, ref = page_digests(argv[0])
    for path in argv[1:]:
        fmt, pages = page_digests(path)
        print(json.dumps({"file": path, "format": fmt, "reference_format": ref_format,
                          **compare_digests(ref, pages)}))  # fmt: skip
    return 0


def compare(reference: Path, *files: Path, timeout: float = 600) -> list[dict]:
    """Run this script with the system Python; one result dict per file."""
    cmd = [SYSTEM_PYTHON, __file__, str(reference), *map(str, files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines()]


def available() -> bool:
    """Whether the system Python has libkdumpfile's bindings."""
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", "import kdumpfile"], capture_output=True)
    except OSError:
        return False
    return proc.returncode == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
