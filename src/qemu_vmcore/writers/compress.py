"""Page compressors of the kdump-compressed format: zlib, lzo, snappy, zstd.

Each is a function ``page -> compressed bytes``, one per thread (a zstd
context is not thread-safe), made by :func:`compressor`. Libraries are
imported only when a kdump format is chosen, so ``extract`` to ELF never
pays for them. Every one of them releases the GIL while it compresses,
which is what lets :mod:`qemu_vmcore.writers.kdump` compress in threads.

The output of each is what makedumpfile, crash and libkdumpfile decompress
per page: a zlib stream (``compress2``), raw LZO1X (no header), raw snappy
(not framed) and one zstd frame.

LZO has two bindings. lzallright (a core dependency: wheels, no compiler)
writes LZO1X like lzo1x_999_compress, which every LZO1X decompressor
(lzo1x_decompress_safe in makedumpfile, crash, libkdumpfile) reads; it is
slow, about 40 MiB/s a thread on guest memory. python-lzo (the ``lzo`` extra,
built against liblzo2-dev) calls liblzo2's lzo1x_1_compress, QEMU's and
makedumpfile's choice: some 20 times faster (1.5% larger pages), and used
whenever it is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.layouts import kdump as K

Compress = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Method:
    """One compression method of the kdump format.

    :param name: the ``--format`` suffix (``kdump-NAME``).
    :param flag: the page descriptor and header flag (DUMP_DH_COMPRESSED_*).
    :param module: the Python module it needs, for error messages.
    """

    name: str
    flag: int
    module: str
    factory: Callable[[], Compress]
    #: Store runs of pages that do not shrink raw without trying each
    #: (writers/kdump.py). Off where the output must be QEMU's byte for byte
    #: (kdump-zlib: QEMU tries every page).
    skip_raw_runs: bool = False


def _zlib() -> Compress:
    import zlib

    # Z_BEST_SPEED, as QEMU's compress2() call.
    return lambda page: zlib.compress(page, 1)


def _lzo() -> Compress:
    try:
        import lzo
    except ImportError:
        return _lzallright()
    # Level 1 is lzo1x_1_compress, QEMU's and makedumpfile's choice; no header.
    return lambda page: lzo.compress(page, 1, False)


def _lzallright() -> Compress:
    import lzallright

    # Raw LZO1X, no header. One compressor per thread keeps its work memory.
    return lzallright.LZOCompressor().compress


def lzo_binding() -> str:
    """The LZO binding kdump-lzo uses here: ``python-lzo`` or ``lzallright``."""
    try:
        import lzo  # noqa: F401
    except ImportError:
        return "lzallright"
    return "python-lzo"


def _snappy() -> Compress:
    from cramjam import snappy

    return lambda page: bytes(snappy.compress_raw(page))


#: zstd for one 4 KiB page at a time, tuned on the rig guests' memory
#: (q10-q35-2g-kdump, q10-q35-formats). A fast pass (level 3) first: a page
#: it cannot shrink (random data, already compressed) is stored as is, and
#: its result is kept unless it lies in [PROBE_SMALL, PROBE_LARGE). Only those
#: pages, which shrink well but not to almost nothing, get the optimal parser
#: with 3-byte matches and a small search (zstd's btopt, some 140 us a page
#: against level 3's 25): that is what gets zstd past zlib level 1 on kernel
#: tables of small integers. Pages that stay above PROBE_LARGE gain about 3%
#: from btopt, not worth six times the time. Measured (2 cores, to tmpfs):
#: the file is no larger than QEMU's kdump-zlib on both guests, and 4.6-5.2x
#: faster than QEMU's on the 2 GiB one (README, Performance).
#: No content size, no checksum: the page descriptor says how large a page is.
ZSTD_FAST_LEVEL = 3
ZSTD_BEST = {
    "window_log": 12,
    "chain_log": 12,
    "hash_log": 12,
    "search_log": 1,
    "min_match": 3,
    "target_length": 8,
}
PROBE_SMALL = 1024
PROBE_LARGE = 2048


def _zstd() -> Compress:
    import zstandard

    frame = {"write_content_size": False, "write_checksum": False, "write_dict_id": False}
    fast = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(
            ZSTD_FAST_LEVEL, source_size=K.PAGE_SIZE, **frame
        )
    ).compress
    best = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters(
            **ZSTD_BEST, strategy=zstandard.STRATEGY_BTOPT, **frame
        )
    ).compress

    def compress(page: bytes) -> bytes:
        quick = fast(page)
        if not PROBE_SMALL <= len(quick) < PROBE_LARGE:
            return quick
        better = best(page)
        return better if len(better) < len(quick) else quick

    return compress


METHODS = {
    m.name: m
    for m in (
        Method("zlib", K.DUMP_DH_COMPRESSED_ZLIB, "zlib", _zlib),
        Method("lzo", K.DUMP_DH_COMPRESSED_LZO, "lzallright", _lzo),
        Method("snappy", K.DUMP_DH_COMPRESSED_SNAPPY, "cramjam", _snappy),
        Method("zstd", K.DUMP_DH_COMPRESSED_ZSTD, "zstandard", _zstd, skip_raw_runs=True),
    )
}


def compressor(method: Method) -> Compress:
    """A new compress function for ``method`` (use one per thread).

    :raises VmcoreError: the library it needs is not installed.
    """
    try:
        return method.factory()
    except ImportError as e:
        raise VmcoreError(
            f"kdump-{method.name} needs the Python module {method.module}: {e}",
            hint="reinstall qemu-vmcore with its dependencies",
        ) from None
