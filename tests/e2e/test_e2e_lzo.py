"""kdump-lzo as a plain ``pip install`` writes it: with lzallright.

kdump-lzo has two LZO bindings (see writers/compress.py): lzallright, a core
dependency with wheels, and python-lzo, the optional ``lzo`` extra that is
preferred when installed (as it is by scripts/setup.sh). test_e2e_formats.py
has crash, makedumpfile and libkdumpfile read the files of the installed
one; here python-lzo is hidden (``sys.modules["lzo"] = None``, so that its
import fails as where it is not installed) and the same consumers read
lzallright's LZO1X, which is not lzo1x_1_compress's: lzokay's algorithm,
like lzo1x_999_compress.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import pytest
from support import consumers, kdumpfile_pages, rig
from support.runs import run_cli
from support.vmcore_compare import all_loads

from qemu_vmcore.writers import compress

CASE = "q10-q35-512"
WITHOUT_PYTHON_LZO = (
    "import sys; sys.modules['lzo'] = None; "
    "from qemu_vmcore.frontends.cli import main; raise SystemExit(main())"
)


def have_python_lzo() -> bool:
    try:
        import lzo  # noqa: F401
    except ImportError:
        return False
    return True


def pages() -> list[bytes]:
    """Pages like a guest's: zeros, text, small integers, random bytes, and mixtures."""
    rnd = random.Random(13)
    text = b"".join(b"[%8d.%06d] kernel: line %d\n" % (i, i * 7, i) for i in range(200))
    ints = b"".join(rnd.randrange(16).to_bytes(8, "little") for _ in range(512))
    noise = rnd.randbytes(4096)
    return [
        bytes(4096),
        text[:4096],
        ints,
        noise,
        noise[:2048] + bytes(2048),
        (b"\xff" * 3 + b"\x00") * 1024,
    ]


def test_without_python_lzo_kdump_lzo_uses_lzallright(monkeypatch):
    import lzallright

    monkeypatch.setitem(sys.modules, "lzo", None)
    assert compress.lzo_binding() == "lzallright"
    pack = compress.compressor(compress.METHODS["lzo"])
    for page in pages():
        packed = pack(page)
        assert lzallright.LZOCompressor.decompress(packed, output_size_hint=4096) == page


@pytest.mark.skipif(not have_python_lzo(), reason="python-lzo (the lzo extra) not installed")
def test_liblzo2_reads_lzallright_pages(monkeypatch):
    """lzo1x_decompress_safe (what makedumpfile and crash call) reads lzallright's pages."""
    import lzo

    real = lzo
    monkeypatch.setitem(sys.modules, "lzo", None)
    pack = compress.compressor(compress.METHODS["lzo"])
    for page in pages():
        assert real.decompress(pack(page), False, 4096) == page


@pytest.mark.skipif(not have_python_lzo(), reason="python-lzo (the lzo extra) not installed")
def test_python_lzo_is_preferred_and_writes_lzo1x_1():
    import lzo

    assert compress.lzo_binding() == "python-lzo"
    pack = compress.compressor(compress.METHODS["lzo"])
    for page in pages():
        assert pack(page) == lzo.compress(page, 1, False)


# -- real guest, real consumers -----------------------------------------------


@pytest.fixture(scope="module")
def case(rig_case):
    return rig_case(CASE)


@pytest.fixture(scope="module")
def dumps(case, tmp_path_factory):
    """lzallright's raw and flattened (reassembled) kdump-lzo of the case, and our ELF."""
    d = tmp_path_factory.mktemp("lzo")
    out = {name: d / name for name in ("raw", "flat", "flat.raw", "elf")}
    for name, extra in (("raw", []), ("flat", ["--flattened"])):
        argv = ["extract", case.core, "-o", out[name], "-q", "--format", "kdump-lzo", *extra]
        proc = subprocess.run([sys.executable, "-c", WITHOUT_PYTHON_LZO, *map(os.fspath, argv)],
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    with open(out["flat"], "rb") as stdin:
        subprocess.run([consumers.tool_path("makedumpfile"), "-R", str(out["flat.raw"])],
                       stdin=stdin, check=True, capture_output=True, timeout=300)  # fmt: skip
    run_cli("extract", case.core, "-o", out["elf"], "-q", check=True)
    yield out
    for path in out.values():
        path.unlink(missing_ok=True)


@pytest.mark.rig
def test_the_flattened_file_reassembles_to_the_raw_one(dumps):
    assert dumps["flat"].read_bytes().startswith(b"makedumpfile\0")
    assert dumps["flat.raw"].read_bytes() == dumps["raw"].read_bytes()


@pytest.mark.rig
@pytest.mark.parametrize("name", ["raw", "flat"])
def test_crash_reads_lzallrights_kdump_lzo(case, dumps, name):
    sys_out, log_out = consumers.crash_each(dumps[name], rig.vmlinux(), ["sys", "log"])
    assert f"RELEASE: {case.meta['kernel_version']}" in sys_out
    assert f"RIG-MARKER {case.marker}" in log_out


@pytest.mark.rig
def test_makedumpfile_reads_lzallrights_kdump_lzo(case, dumps):
    enabled = subprocess.run([consumers.tool_path("makedumpfile"), "-v"], capture_output=True,
                             text=True).stdout  # fmt: skip
    if not re.search(r"^lzo\s+enabled", enabled, re.MULTILINE):
        pytest.skip("this makedumpfile is built without lzo")
    assert f"RIG-MARKER {case.marker}" in consumers.makedumpfile_dmesg(dumps["raw"])


@pytest.mark.rig
@pytest.mark.skipif(not kdumpfile_pages.available(), reason="python3-libkdumpfile not installed")
def test_libkdumpfile_reads_the_pages_of_our_elf(dumps):
    (r,) = kdumpfile_pages.compare(dumps["elf"], dumps["raw"])
    elf_pages = sum(x.memsz for x in all_loads(dumps["elf"]) if x.vaddr == x.paddr) // 4096
    assert (r["reference_format"], r["format"]) == ("elf", "diskdump")
    assert r["pages_reference"] == r["pages"] == elf_pages
    assert r["only_in_reference"] == r["only_in_file"] == r["differing"] == [], r


@pytest.mark.rig
@pytest.mark.skipif(not have_python_lzo(), reason="python-lzo (the lzo extra) not installed")
def test_python_lzos_file_differs_in_bytes_not_in_pages(case, dumps, tmp_path):
    """The two bindings compress differently (so python-lzo really was hidden
    above); the pages libkdumpfile reads from either are the same."""
    theirs = tmp_path / "python-lzo"
    run_cli("extract", case.core, "-o", theirs, "-q", "--format", "kdump-lzo", check=True)
    assert theirs.stat().st_size != dumps["raw"].stat().st_size
    if kdumpfile_pages.available():
        (r,) = kdumpfile_pages.compare(dumps["raw"], theirs)
        assert r["pages_reference"] == r["pages"]
        assert r["only_in_reference"] == r["only_in_file"] == r["differing"] == [], r
