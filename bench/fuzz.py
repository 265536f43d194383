#!/usr/bin/env python3
# ruff: noqa: E402 -- the imports after sys.path is pointed at the test helpers
"""Fuzz every parser of untrusted input with hypothesis, and count what happens.

Each target draws inputs from a hypothesis strategy -- mostly mutations of a
valid synthetic structure from ``tests/support/synth.py`` and ``guestsynth.py``,
since random bytes rarely get past a first check -- and runs one entry point
on each, under a per-case time budget:

================  ==========================================================
hostcore          open_core() on mutated ELF cores, then what callers do next
notes             NT_FILE, NT_PRPSINFO, NT_AUXV notes: well-formed ones against
                  a model, corrupt ones for robustness
vmcoreinfo        parse_note() and parse_text() on note-like bytes
vmcoreinfo-find   find() on hostile guest RAM: planted, malformed, mutated notes
printk            the dmesg reader on a mutated printk ring, hostile VMCOREINFO
paging            arch.x86.paging.translate() on random tables, against a reference walk
mappings          arch.x86.paging.guest_mappings() on hostile tables, every paging mode
elf-writer        ELF vmcores of random guests, read back (pyelftools) and compared
kdump-writer      kdump-compressed vmcores of random guests, read back and compared
profile           a mutated QEMU profile (JSON): validated, its types built as drgn types
qemu-state        real rig cores (7.2, 10.0) with one field of QEMU's state mutated:
                  refused, or the pristine plan; never a silent difference
================  ==========================================================

A case *passes* when the entry point returns and its result checks out; is
*rejected* when it raises the target's error class (:class:`VmcoreError`, plus
the documented ``VmcoreInfoError`` for the note parsers); *fails* on any
other exception, a failed check included; and *hangs* when it runs over the
budget (SIGALRM interrupts it, so a real infinite loop is caught too).
Hypothesis runs in generate-only mode without a database, so every case is
counted, nothing is shrunk, and the first failing inputs are kept for the
report. Peak RSS is measured around each target; its growth is bounded.

Two targets run with smaller limits than the library's (MAX_TABLES and
MAX_MAPPINGS of the paging walk, MAX_COUNT_BITS of the printk ring): at
full size their designed worst cases take seconds per case, so a hostile
input would count as a hang and 10,000 cases would take hours. The code
paths are the same; the limits are listed with the results.

    .venv/bin/python bench/fuzz.py                        # 10,000 cases per target
    .venv/bin/python bench/fuzz.py -t printk -n 500 --seed 7
    .venv/bin/python bench/fuzz.py --json > fuzz.json

Exit status 0 only when no target has a failure, a hang or too much memory growth.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The strategies and builders live with the unit tests (synth, guestsynth,
# kdump_reader): share them rather than keep twins here.
sys.path.insert(0, str(ROOT / "tests"))  # the support package
sys.path.insert(0, str(ROOT / "src"))

from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from support import guestsynth as G
from support import synth
from support.kdump_reader import Kdump, unflatten

from qemu_vmcore.arch.x86 import ARCH as X86
from qemu_vmcore.arch.x86 import paging as M
from qemu_vmcore.arch.x86.kernel import START_KERNEL_MAP
from qemu_vmcore.arch.x86.notes import vcpu_notes
from qemu_vmcore.arch.x86.paging import X86PageTables, translate
from qemu_vmcore.errors import VmcoreError
from qemu_vmcore.extract import extract, kernel_text_load, minimal_notes
from qemu_vmcore.guest import printk, vmcoreinfo
from qemu_vmcore.guest.physmem import GuestPhysicalMemory
from qemu_vmcore.guest.vmcoreinfo import (
    Search,
    VmcoreInfo,
    VmcoreInfoError,
)
from qemu_vmcore.host.core import ExtentKind, FileMapping, ProcessInfo, open_core, parse_nt_file
from qemu_vmcore.layouts import elf as E
from qemu_vmcore.plan import DumpOptions
from qemu_vmcore.qemu.memory import GuestRange
from qemu_vmcore.source import QemuCore
from qemu_vmcore.writers import compress
from qemu_vmcore.writers.elf import build_image, write_elf

PAGE = 4096
DEFAULT_CASES = 10_000
DEFAULT_BUDGET_MS = 2000
DEFAULT_MAX_RSS_MB = 200
ROUND = 1000  # cases per hypothesis run (see fuzz_target)
SAMPLES_KEPT = 5  # failing inputs kept per target for the report
REPR_LIMIT = 600


# -- running cases ---------------------------------------------------------------------


class Unjudged(Exception):
    """A case whose result no independent fact can judge (counted apart, with why)."""


class Hang(BaseException):
    """A case ran over its time budget (raised from the SIGALRM handler).

    A BaseException, so that library code catching Exception cannot swallow it.
    """


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang()


@dataclass(frozen=True)
class Target:
    """One fuzz target.

    :param inputs: builds the hypothesis strategy (given a scratch directory,
        for targets that start from a file they write once).
    :param run: runs one case; returns normally when it passes, raises one of
        ``rejects`` when the input is refused, anything else is a failure.
    :param limits: ``(module, name, value)`` library limits lowered while
        the target runs (see the module docstring).
    """

    name: str
    about: str
    inputs: Callable[[Path], st.SearchStrategy]
    run: Callable[[Any, Path], None]
    rejects: tuple[type[BaseException], ...] = (VmcoreError,)
    limits: tuple[tuple[str, str, int], ...] = ()
    #: None when the target can run here, else why not (a rig case missing).
    available: Callable[[], str | None] = lambda: None


@dataclass
class Sample:
    """A failing or hanging case, for the report."""

    outcome: str
    case: int
    ms: float
    error: str
    input: str
    traceback: str


@dataclass
class Stats:
    """What happened on one target."""

    target: str
    cases: int = 0
    passed: int = 0
    rejected: int = 0
    failures: int = 0
    hangs: int = 0
    unjudged: int = 0
    slowest_ms: float = 0.0
    total_ms: float = 0.0
    seconds: float = 0.0
    peak_rss_growth_kib: int = 0
    rss_growth_kib: int = 0
    rss_limit_kib: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    rejected_by: Counter[str] = field(default_factory=Counter)
    unjudged_by: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    runner_error: str | None = None

    @property
    def memory_ok(self) -> bool:
        return self.peak_rss_growth_kib <= self.rss_limit_kib

    @property
    def ok(self) -> bool:
        """No failure, no hang, bounded memory, and the runner itself did not break."""
        return not self.failures and not self.hangs and self.memory_ok and self.runner_error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "cases": self.cases,
            "passed": self.passed,
            "rejected": self.rejected,
            "failures": self.failures,
            "hangs": self.hangs,
            "unjudged": self.unjudged,
            "unjudged_by": dict(self.unjudged_by.most_common()),
            "slowest_ms": round(self.slowest_ms, 2),
            "mean_ms": round(self.total_ms / self.cases, 3) if self.cases else 0.0,
            "seconds": round(self.seconds, 2),
            "peak_rss_growth_mib": round(self.peak_rss_growth_kib / 1024, 1),
            "rss_growth_mib": round(self.rss_growth_kib / 1024, 1),
            "limits": self.limits,
            "rejected_by": dict(self.rejected_by.most_common()),
            "samples": [vars(s) for s in self.samples],
            "runner_error": self.runner_error,
            "ok": self.ok,
        }


def run_case(target: Target, case: Any, scratch: Path, budget_s: float, stats: Stats) -> None:
    """Run one case under the time budget and count its outcome."""
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        signal.setitimer(signal.ITIMER_REAL, budget_s)
        try:
            target.run(case, scratch)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        outcome = "passed"
    except Hang as e:
        outcome, error = "hang", e
    except target.rejects as e:
        outcome = "rejected"
        stats.rejected_by[type(e).__name__] += 1
    except Unjudged as e:
        outcome = "unjudged"
        stats.unjudged_by[str(e)] += 1
    except Exception as e:  # counting these is the point
        outcome, error = "failure", e
    ms = (time.perf_counter() - start) * 1000
    if ms > budget_s * 1000 and outcome != "hang":
        # Stuck where Python could not run the handler (in C, or a signal-
        # blocking call): over budget is a hang all the same.
        outcome, error = "hang", error or Hang()
    stats.cases += 1
    stats.total_ms += ms
    stats.slowest_ms = max(stats.slowest_ms, ms)
    if outcome == "passed":
        stats.passed += 1
    elif outcome == "rejected":
        stats.rejected += 1
    elif outcome == "unjudged":
        stats.unjudged += 1
    else:
        if outcome == "hang":
            stats.hangs += 1
        else:
            stats.failures += 1
        if len(stats.samples) < SAMPLES_KEPT:
            stats.samples.append(_sample(outcome, stats.cases, ms, error, case))


def _sample(outcome: str, index: int, ms: float, error: BaseException | None, case: Any) -> Sample:
    text = repr(case)
    if len(text) > REPR_LIMIT:
        text = text[:REPR_LIMIT] + f"... ({len(text):,} characters)"
    if error is None or isinstance(error, Hang):
        what, tb = f"over the budget ({ms:.0f} ms)", ""
        if error is not None:
            tb = "".join(traceback.format_exception(error)[-6:])  # where it was interrupted
    else:
        what = f"{type(error).__name__}: {error}"[:300]
        tb = "".join(traceback.format_exception(error))
    return Sample(outcome, index, round(ms, 2), what, text, tb)


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


@contextlib.contextmanager
def _lowered(limits: tuple[tuple[str, str, int], ...]) -> Iterator[None]:
    saved = []
    for module, name, value in limits:
        mod = importlib.import_module(module)
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)


def fuzz_target(
    target: Target,
    *,
    cases: int = DEFAULT_CASES,
    budget_ms: float = DEFAULT_BUDGET_MS,
    seed: int = 0,
    scratch: Path,
    max_rss_mb: float = DEFAULT_MAX_RSS_MB,
) -> Stats:
    """Run ``cases`` cases of ``target``; never raises for what a case does."""
    stats = Stats(target.name, rss_limit_kib=int(max_rss_mb * 1024))
    stats.limits = {f"{m.rsplit('.', 1)[-1]}.{n}": v for m, n, v in target.limits}
    scratch.mkdir(parents=True, exist_ok=True)
    budget_s = budget_ms / 1000
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    gc.collect()
    peak0, rss0, t0 = _peak_rss_kib(), _rss_kib(), time.perf_counter()
    try:
        with _lowered(target.limits):
            strategy = target.inputs(scratch)

            def body(case: Any) -> None:
                run_case(target, case, scratch, budget_s, stats)

            # Rounds of at most ROUND cases, each with its own seed: hypothesis
            # keeps every case of a run (about 20 KiB each), which would grow
            # RSS by 200 MiB over 10,000 cases and hide the library's own
            # growth. A round may also stop short (a small input space).
            for round_ in range(-(-cases // ROUND) + 100):
                left = cases - stats.cases
                if left <= 0:
                    break
                test = settings(
                    max_examples=min(left, ROUND),
                    database=None,
                    deadline=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )(given(strategy)(body))
                before = stats.cases
                hypothesis_seed(seed * 1000 + round_)(test)()
                if stats.cases == before:
                    break
    except Exception:  # the runner's own breakage: reported, not raised
        stats.runner_error = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    stats.seconds = time.perf_counter() - t0
    gc.collect()
    stats.peak_rss_growth_kib = max(0, _peak_rss_kib() - peak0)
    stats.rss_growth_kib = _rss_kib() - rss0
    return stats


# -- hostcore: the ELF core itself -------------------------------------------------------


def _hostcore_inputs(scratch: Path) -> st.SearchStrategy[bytes]:
    base = synth.small_core(scratch / "base-core")
    elf_head = synth.ehdr64(phnum=3)
    mutated = synth.mutated_core(base)
    return st.one_of(
        mutated,
        mutated,
        mutated,
        st.binary(max_size=600).map(lambda b: elf_head + b),  # past the magic, then noise
        st.binary(max_size=200),
    )


def _hostcore_run(raw: bytes, scratch: Path) -> None:
    path = scratch / "core"
    path.write_bytes(raw)
    with open_core(path) as c:
        # What callers do next must not blow up either.
        c.executable, c.executable_base, c.truncated, c.expected_size  # noqa: B018
        c.executable_build_id()
        extents = c.extents(0, 1 << 64)
        pos = 0
        for e in extents:  # they tile the address space, in order
            assert e.hva == pos and e.size > 0, (hex(pos), e)
            pos = e.end
        assert pos == 1 << 64
        for e in extents[:256]:
            if e.kind is ExtentKind.DATA:
                n = min(e.size, PAGE)
                assert len(c.read(e.hva, n)) == n
        for path_name in sorted({m.path for m in c.mappings[:16]}):
            c.unsaved_file_ranges(path_name)


# -- notes: NT_FILE, NT_PRPSINFO, NT_AUXV ------------------------------------------------

CORE_TYPES = (E.NT_FILE, E.NT_PRPSINFO, E.NT_AUXV)


@dataclass(frozen=True)
class NotesCase:
    """A PT_NOTE of ``items`` (then maybe ``flips`` and a ``cut``), and a loose NT_FILE desc.

    Items: ``("file", entries, page_size)``, ``("psinfo", pid, uid, fname,
    args, extra)``, ``("auxv", pairs, ragged)``, ``("other", name, type, desc)``.
    """

    items: tuple[tuple, ...]
    flips: tuple[tuple[int, int], ...]
    cut: int | None
    loose_desc: bytes


u64 = st.integers(0, 2**64 - 1)
note_items = st.one_of(
    st.tuples(
        st.just("file"),
        synth.nt_entries,
        st.one_of(st.sampled_from([4096, 0, 1, 65536, 2**64 - 1]), u64),
    ),
    st.tuples(
        st.just("psinfo"),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=16),
        st.binary(max_size=80),
        st.one_of(st.just(0), st.integers(-8, 8)),  # < 0: cut short (ignored); > 0: longer
    ),
    st.tuples(
        st.just("auxv"),
        st.lists(st.tuples(st.one_of(st.sampled_from([0, 3, 5, 9, 31]), u64), u64), max_size=12),
        st.booleans(),
    ),
    st.tuples(
        st.just("other"),
        st.one_of(
            st.sampled_from([b"CORE", b"CORE\0", b"LINUX", b"GNU", b""]), st.binary(max_size=12)
        ),
        st.one_of(st.sampled_from([*CORE_TYPES, E.NT_PRSTATUS]), st.integers(0, 2**32 - 1)),
        st.binary(max_size=200),
    ),
)


@st.composite
def _notes_inputs_one(draw: st.DrawFn) -> NotesCase:
    items = tuple(draw(st.lists(note_items, max_size=6)))
    size = len(_notes_blob(items))
    flips: tuple[tuple[int, int], ...] = ()
    cut = None
    if size and draw(st.integers(0, 3)) == 0:  # a quarter of them corrupt
        pos = st.integers(0, size - 1)
        flips = tuple(draw(st.lists(st.tuples(pos, st.integers(0, 255)), max_size=6)))
        cut = draw(st.one_of(st.none(), st.integers(0, size)))
    return NotesCase(items, flips, cut, draw(st.binary(max_size=600)))


def _notes_inputs(scratch: Path) -> st.SearchStrategy[NotesCase]:
    return _notes_inputs_one()


def _note_desc(item: tuple) -> tuple[bytes, int, bytes]:
    """``(name, type, desc)`` of one item."""
    kind = item[0]
    if kind == "file":
        _, entries, page_size = item
        files = [synth.FileEntry(s, s + n, pg, p) for s, n, pg, p in entries]
        return b"CORE", E.NT_FILE, synth.nt_file(files, page_size)
    if kind == "psinfo":
        _, pid, uid, fname, args, extra = item
        desc = synth.prpsinfo(pid=pid, uid=uid, fname=fname, args=args)
        desc = desc[: len(desc) + extra] if extra < 0 else desc + bytes(extra)
        return b"CORE", E.NT_PRPSINFO, desc
    if kind == "auxv":
        _, pairs, ragged = item
        return b"CORE", E.NT_AUXV, synth.auxv(pairs) + (b"\x01\x02\x03" if ragged else b"")
    _, name, ntype, desc = item
    return name, ntype, desc


def _notes_blob(items: tuple[tuple, ...]) -> bytes:
    return b"".join(E.note_bytes(*_note_desc(i)) for i in items)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _notes_model(items: tuple[tuple, ...]):
    """What open_core must find in well-formed notes: (mappings, process, auxv).

    None when an item is a CORE note of a parsed type with a random desc:
    then only robustness is checked.
    """
    mappings: list[FileMapping] = []
    process = None
    aux: dict[int, int] = {}
    for item in items:
        kind = item[0]
        if kind == "file":
            _, entries, page_size = item
            for s, n, pg, p in entries:
                path = p.decode("utf-8", "surrogateescape")
                mappings.append(FileMapping(s, s + n, pg * page_size, path))
        elif kind == "psinfo":
            _, pid, uid, fname, args, extra = item
            if extra >= 0:
                process = ProcessInfo(pid, uid, _cstr(fname[:16]), _cstr(args[:80]).strip())
        elif kind == "auxv":
            for key, value in item[1]:
                if key == E.AT_NULL:
                    break
                aux.setdefault(key, value)
        elif item[1].rstrip(b"\0") == b"CORE" and item[2] in CORE_TYPES:
            return None
    return mappings, process, aux


def _notes_run(case: NotesCase, scratch: Path) -> None:
    # A desc on its own: whole entries only, bounded by the desc's size.
    loose = parse_nt_file(case.loose_desc)
    assert len(loose) <= max(0, (len(case.loose_desc) - 16) // 24)
    assert len(list(E.iter_notes(case.loose_desc))) <= len(case.loose_desc) // E.ELF64LE.nhdr.size

    blob = bytearray(_notes_blob(case.items))
    for pos, value in case.flips:
        blob[pos] = value
    if case.cut is not None:
        del blob[case.cut :]
    path = scratch / "core"
    synth.write_core(path, [synth.Load(0x1000, b"fuzz" * 4)], bytes(blob))
    with open_core(path) as c:
        assert all(m.end >= m.hva for m in c.mappings)
        assert len(c.mappings) <= len(blob) // 24
        if c.process is not None:
            assert len(c.process.fname) <= 16 and len(c.process.args) <= 80
        c.executable, c.executable_base, c.executable_build_id()  # noqa: B018
        model = None if case.flips or case.cut is not None else _notes_model(case.items)
        if model is not None:
            mappings, process, aux = model
            assert c.mappings == mappings, (c.mappings, mappings)
            assert c.process == process, (c.process, process)
            assert c.auxv == aux, (c.auxv, aux)


# -- VMCOREINFO ------------------------------------------------------------------------


@st.composite
def _kernel_note_mutations(draw: st.DrawFn) -> bytes:
    """The kernel's note with overwritten bytes, a cut, or bytes after it."""
    buf = bytearray(G.KERNEL_NOTE)
    for pos, value in draw(
        st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), max_size=6)
    ):
        buf[pos] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(buf))))
    if cut is not None:
        del buf[cut:]
    return bytes(buf) + draw(st.binary(max_size=16))


def _vmcoreinfo_inputs(scratch: Path) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.just("note"), G.note_like),
        st.tuples(st.just("note"), _kernel_note_mutations()),
        st.tuples(st.just("text"), G.note_descs),
        st.tuples(st.just("text"), st.binary(max_size=300).map(lambda b: b"OSRELEASE=" + b)),
    )


def _check_fields(fields: dict[str, str]) -> None:
    assert fields["OSRELEASE"]
    for key, value in fields.items():
        assert "\n" not in key + value and "\0" not in key + value
        assert (key + value).isascii()


def _vmcoreinfo_run(case: tuple[str, bytes], scratch: Path) -> None:
    kind, buf = case
    if kind == "text":
        _check_fields(vmcoreinfo.parse_text(buf))
        return
    note, desc = vmcoreinfo.parse_note(buf)
    h = E.ELF64LE.nhdr.unpack_from(buf)
    assert (h.namesz, h.type) == (11, 0)
    assert note == buf[: len(note)] and len(note) % 4 == 0
    assert desc == buf[24 : 24 + h.descsz] and len(desc) == h.descsz
    _check_fields(vmcoreinfo.parse_text(desc))  # what candidate_at() does next


@dataclass(frozen=True)
class FindCase:
    """Guest RAM, what QEMU's vmcoreinfo device says, and the vCPUs' CR3s."""

    ram: bytes
    device: tuple[int, int, int] | None
    roots: tuple[X86PageTables, ...]


_fake_notes = st.builds(
    lambda release, changes: G.fake_note(release, **changes),
    st.sampled_from([G.RELEASE, G.FAKE_RELEASE, "first"]),
    st.dictionaries(
        st.sampled_from(
            ["SYMBOL(init_uts_ns)", "OFFSET(uts_namespace.name)", "NUMBER(phys_base)", "OSRELEASE"]
        ),
        st.one_of(st.none(), G.hostile_values),
        max_size=3,
    ),
)


@st.composite
def _find_inputs_one(draw: st.DrawFn) -> FindCase:
    ram = G.kernel_ram(note_at=G.NOTE_AT if draw(st.booleans()) else None)
    tables = draw(st.sampled_from(["none", "kernel", "random"]))
    roots: tuple[X86PageTables, ...] = ()
    if tables == "kernel":
        roots = G.kernel_page_tables(ram)
    elif tables == "random":
        cr3 = st.one_of(st.integers(0, len(ram) // PAGE).map(lambda p: p * PAGE), u64)
        pairs = draw(st.lists(st.tuples(cr3, st.booleans()), min_size=1, max_size=3))
        roots = tuple(X86PageTables.ia32e(r, la57) for r, la57 in pairs)
    for at, data in draw(
        st.lists(
            st.tuples(st.integers(0, len(ram) - 1), st.one_of(G.note_like, _fake_notes)),
            max_size=4,
        )
    ):
        data = data[: len(ram) - at]
        ram[at : at + len(data)] = data
    hot = st.one_of(
        st.integers(G.NOTE_AT, G.NOTE_AT + len(G.KERNEL_NOTE) - 1),
        st.integers(G.RELEASE_PA - 140, G.RELEASE_PA + 64),
        st.integers(G.PGT_AT, G.PGT_AT + 4 * PAGE - 1),
        st.integers(0, len(ram) - 1),
    )
    for pos, value in draw(st.lists(st.tuples(hot, st.integers(0, 255)), max_size=8)):
        ram[pos] = value
    device = draw(
        st.one_of(
            st.none(),
            st.tuples(
                st.one_of(
                    st.sampled_from([G.NOTE_AT, 0, len(ram) - 8, 2**64 - 8]),
                    st.integers(0, len(ram) + 64),
                ),
                st.one_of(
                    st.sampled_from([len(G.KERNEL_NOTE), 0, 12, 1 << 30, 2**64 - 1]),
                    st.integers(0, 1 << 33),
                ),
                st.integers(0, 3),
            ),
        )
    )
    return FindCase(bytes(ram), device, roots)


def _find_inputs(scratch: Path) -> st.SearchStrategy[FindCase]:
    return _find_inputs_one()


def _find_run(case: FindCase, scratch: Path) -> None:
    with G.guest_ram(case.ram) as (mem, host):
        search = vmcoreinfo.find(
            mem, host.fd, case.device, "fuzz", case.roots, layout_of=X86.kernel_layout
        )
        assert search.candidates <= vmcoreinfo.MAX_CANDIDATES + 1
        info = search.chosen
        if info is None:
            return
        assert info.osrelease
        assert info.note == case.ram[info.gpa : info.gpa + len(info.note)]
        assert info.source == "guest RAM scan" or case.device is not None
        layout = X86.kernel_layout(info)
        assert vmcoreinfo.verify(mem, info, case.roots, layout=layout) == info.verified
        # Accessors of a chosen note, hostile or not, only ever give ints or None.
        layout.phys_base, layout.text_load(mem), info.kerneloffset  # noqa: B018
        for name in ("init_uts_ns", "_stext", "prb"):
            info.symbol(name)


# -- printk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PrintkCase:
    """A mutated standard ring (maybe with a new ring header) and VMCOREINFO changes."""

    layout: str
    header: tuple[int, int, int, int] | None
    mutations: tuple[tuple[str, int, bytes], ...]
    changes: dict[str, str]


def _printk_inputs(scratch: Path) -> st.SearchStrategy[PrintkCase]:
    header = st.tuples(
        st.one_of(st.integers(0, 24), st.sampled_from([64, 0xFFFFFFFF])),
        st.one_of(st.integers(0, 30), st.sampled_from([64, 0xFFFFFFFF])),
        G.ring_u64,
        G.ring_u64,
    )
    return st.builds(
        PrintkCase,
        st.sampled_from(["direct", "image"]),
        st.one_of(st.none(), header),
        st.lists(G.ring_mutation, max_size=12).map(tuple),
        st.one_of(st.just({}), G.printk_field_changes),
    )


def _printk_run(case: PrintkCase, scratch: Path) -> None:
    rr, _ = G.standard_ring(G.DIRECT if case.layout == "direct" else G.IMAGE)
    if case.header is not None:
        rr.ring(*case.header)
    G.mutate_ring(rr, case.mutations)
    keep = set(range(0x20, 0x7F)) | set(b"\t\n\v\f\r")
    with G.guest_ram(rr.ram) as (mem, _):
        count = 0
        info = G.printk_vmcoreinfo(**case.changes)
        for line in printk.records(mem, info, X86.kernel_layout(info)):
            count += 1
            assert count <= 1 << printk.MAX_COUNT_BITS
            assert line.startswith(b"[") and line.endswith(b"\n")
            assert set(line) <= keep
            assert len(line) < 20 + 4 * 0xFFFF


# -- page tables -------------------------------------------------------------------------

PT_PAGES = 8


def _paging_inputs(scratch: Path) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.integers(0, 2**32 - 1),
        G.pt_writes(PT_PAGES),
        st.one_of(st.integers(0, PT_PAGES + 1).map(lambda p: p * PAGE), u64),
        st.lists(G.pt_vaddrs, min_size=1, max_size=8),
        st.booleans(),
    )


def _paging_run(case: tuple, scratch: Path) -> None:
    seed, writes, root, vaddrs, la57 = case
    ram = G.random_ram(seed, PT_PAGES)
    for page, index, value in writes:
        G.put64(ram, page * PAGE + 8 * index, value)
    levels = 5 if la57 else 4
    with G.guest_ram(ram) as (mem, _):
        for vaddr in vaddrs:
            pa = translate(mem, root, vaddr, la57=la57)
            assert pa is None or 0 <= pa < 1 << 52
            assert pa is None or pa & 0xFFF == vaddr & 0xFFF
            assert pa == G.reference_walk(bytes(ram), root, vaddr, levels)


MODES = {  # (cr0, cr4, long mode) of each paging mode
    "off": (1, 0, False),
    "ia32e": (G.CR0_PE_PG, G.CR4_PAE, True),
    "la57": (G.CR0_PE_PG, G.CR4_PAE | G.CR4_LA57, True),
    "pae": (G.CR0_PE_PG, G.CR4_PAE, False),
    "legacy": (G.CR0_PE_PG, 0, False),
    "legacy-pse": (G.CR0_PE_PG, G.CR4_PSE, False),
}


@dataclass(frozen=True)
class MappingsCase:
    """Page tables in RAM, the vCPUs walking them, and what counts as guest RAM.

    ``fills``: ``(page, first index, count, target page, step, flags)`` --
    runs of entries pointing at tables, the fan-out that makes walks explode.
    """

    seed: int
    writes: tuple[tuple[int, int, int], ...]
    fills: tuple[tuple[int, int, int, int, int, int], ...]
    vcpus: tuple[tuple[int, str], ...]
    ranges: tuple[tuple[int, int], ...]
    window: tuple[int, int]


def _mappings_inputs(scratch: Path) -> st.SearchStrategy[MappingsCase]:
    page = st.integers(0, PT_PAGES - 1)
    flags = st.sampled_from([1, 3, 7, 0x87, 0x83])
    fill = st.tuples(page, st.integers(0, 511), st.integers(1, 512), page, st.integers(0, 2), flags)
    cr3 = st.one_of(
        st.builds(lambda p, low: p * PAGE | low, page, st.sampled_from([0, 0x20, 0x123])), u64
    )
    # Guest RAM after the tables' own: (gap, size) pairs, so ranges are sorted
    # and disjoint, as QEMU's are.
    more_ram = st.tuples(
        st.one_of(st.just(1 << 20), st.integers(1, 1 << 33)),
        st.one_of(st.just((1 << 32) - (1 << 20)), st.integers(1, 1 << 30)),
    )
    return st.builds(
        MappingsCase,
        st.integers(0, 2**32 - 1),
        st.lists(
            st.tuples(page, st.integers(0, 511), st.one_of(G.leaf_entries(PT_PAGES), u64)),
            max_size=24,
        ).map(tuple),
        st.lists(fill, max_size=3).map(tuple),
        st.lists(st.tuples(cr3, st.sampled_from(sorted(MODES))), min_size=1, max_size=3).map(tuple),
        st.lists(more_ram, max_size=2).map(_ram_ranges),
        st.tuples(st.integers(0, 1 << 33), st.integers(0, 1 << 33)),
    )


def _ram_ranges(more: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The tables' pages (and 20 more) as guest RAM, then ``(gap, size)`` ranges after it."""
    out = [(0, (PT_PAGES + 20) * PAGE)]
    for gap, size in more:
        start = out[-1][1] + gap
        out.append((start, start + size))
    return tuple(out)


def _mappings_run(case: MappingsCase, scratch: Path) -> None:
    ram = G.random_ram(case.seed, PT_PAGES)
    for page, index, value in case.writes:
        G.put64(ram, page * PAGE + 8 * index, value)
    for page, first, count, target, step, flags in case.fills:
        for i in range(first, min(512, first + count)):
            dest = (target + i * step) % PT_PAGES
            G.put64(ram, page * PAGE + 8 * i, dest * PAGE | flags)
    vcpus = []
    for index, (cr3, mode) in enumerate(case.vcpus):
        cr0, cr4, long_mode = MODES[mode]
        vcpus.append(G.vcpu_state(cr3, cr0=cr0, cr4=cr4, long_mode=long_mode, index=index))
    ranges = [GuestRange(a, b, 0, "ram", f"r{k}", k) for k, (a, b) in enumerate(case.ranges)]
    ram_index = M.RamIndex(ranges)
    with G.guest_ram(ram) as (mem, _):
        found = M.guest_mappings(mem, vcpus, ranges)
    assert len(found) <= max(M.MAX_MAPPINGS, len(ranges))
    assert found == M.merge([(m.vaddr, m.paddr, m.size) for m in found])  # canonical
    for m in found:
        assert m.size > 0 and 0 <= m.vaddr < 1 << 64, m
        assert ram_index.contains(m.paddr), m  # pages start in guest RAM
    begin, end = sorted(case.window)
    for m in M.filter_mappings(found, begin, end):
        assert begin <= m.paddr and m.end <= end and m.size > 0


# -- the writers: random guests, written and read back -----------------------------------

HVA = 0x7F50_0000_0000
TEXT = b"The quick brown fox jumps over the lazy dog. " * 91  # compresses well


@dataclass(frozen=True)
class GuestSpec:
    """A guest in a synthetic core: one PT_LOAD of :attr:`data` at :data:`HVA`.

    :param pages: what each page of the load holds (``zero``, ``text``,
        ``random`` or ``half``), made from ``seed``; the last page is short
        by ``tail`` bytes. Kept as a recipe, so a failing case prints short.
    :param memsz: the load's mapped size; past its data it was not dumped.
    :param cut: the core is truncated this many bytes into the load's data.
    :param ranges: guest RAM, in gpa order; its host addresses may point
        before, into, or past the load.
    """

    pages: tuple[str, ...]
    seed: int
    tail: int
    memsz: int
    cut: int | None
    ranges: tuple[GuestRange, ...]

    @cached_property
    def data(self) -> bytes:
        """The load's dumped bytes."""
        data = b"".join(_page(kind, self.seed + i) for i, kind in enumerate(self.pages))
        return data[: len(data) - self.tail]

    def bytes_at(self, hva: int, size: int) -> bytes:
        """What the guest holds at ``hva``: the dumped bytes, zeros elsewhere."""
        out = bytearray(size)
        held = len(self.data) if self.cut is None else min(self.cut, len(self.data))
        lo, hi = max(hva, HVA), min(hva + size, HVA + held)
        if lo < hi:
            out[lo - hva : hi - hva] = self.data[lo - HVA : hi - HVA]
        return bytes(out)

    def write(self, path: Path) -> None:
        notes = synth.core_notes(psinfo=synth.prpsinfo(fname=b"qemu-system-x86"))
        core = synth.write_core(path, [synth.Load(HVA, self.data, memsz=self.memsz)], notes)
        if self.cut is not None:
            os.truncate(path, core.loads[0].offset + self.cut)


def _page(kind: str, seed: int) -> bytes:
    if kind == "text":
        return (f"{seed:08d}".encode() + TEXT)[:PAGE]
    if kind == "random":
        return synth.pattern(PAGE, seed=seed)
    if kind == "half":
        return synth.pattern(PAGE // 2, seed=seed) + bytes(PAGE // 2)
    return bytes(PAGE)


# Strategies are built once: building them inside a composite costs more
# than drawing from them. Sizes that depend on earlier draws are scaled
# from a fraction (0..FRACTION), whose ends hypothesis tries often.
FRACTION = 1 << 16
_fraction = st.integers(0, FRACTION)
_index = st.integers(0, 255)
_kinds = st.lists(st.sampled_from(["zero", "text", "random", "half"]), min_size=1, max_size=12)
_seeds = st.integers(0, 2**16)
_tails = st.integers(0, PAGE - 1)
_extra_pages = st.integers(0, 3)
_maybe_fraction = st.one_of(st.none(), st.none(), _fraction)
_first_gpa = st.sampled_from([0, 0x9F000, 2**32 - 2 * PAGE, 2**32, 2**33])
_gpa_offsets = st.integers(0, 2 * PAGE)
_range_counts = st.integers(1, 5)
_range_sizes = st.integers(1, 5 * PAGE)
_gaps = st.sampled_from([0, 0, 1, PAGE, 3 * PAGE + 5, 2**32])
_booleans = st.booleans()


def _scaled(fraction: int, n: int) -> int:
    """``fraction / FRACTION`` of ``n``: 0 and ``n`` at the ends."""
    return fraction * n // FRACTION


@st.composite
def guests(draw: st.DrawFn) -> GuestSpec:
    """Random guests: zero, text, random and half pages; ranges of any size and alignment."""
    pages, seed, tail = tuple(draw(_kinds)), draw(_seeds), draw(_tails)
    size = len(pages) * PAGE - tail
    memsz = size + draw(_extra_pages) * PAGE
    cut = draw(_maybe_fraction)
    cut = None if cut is None else _scaled(cut, size)
    cursor = draw(_first_gpa) + draw(_gpa_offsets)
    ranges = []
    for k in range(draw(_range_counts)):
        size = draw(_range_sizes)
        # Host addresses from 2 pages before the load to one page past its end.
        hva = HVA - 2 * PAGE + _scaled(draw(_fraction), memsz + 3 * PAGE)
        ranges.append(GuestRange(cursor, cursor + size, hva, "pc.ram", f"r{k}", k, draw(_booleans)))
        cursor += size + draw(_gaps)
    return GuestSpec(pages, seed, tail, memsz, cut, tuple(ranges))


def _qemu_core(host, guest: GuestSpec, vcpus: list, info: VmcoreInfo | None) -> QemuCore:
    """What source.open_qemu_core() would build, from the synthetic core and the spec."""
    ranges = list(guest.ranges)
    qc = QemuCore(
        host=host,
        dbg=None,
        ranges=ranges,
        memory=GuestPhysicalMemory(ranges, host),
        arch=X86,
        vcpus=vcpus,
        executable=None,
        _vmcoreinfo=Search(info, "fuzz"),
    )
    qc.accelerator = "tcg"  # no debugger to ask (a cached_property)
    return qc


def _vcpus(long_mode: bool | None, count: int) -> list:
    if long_mode is None:
        return []
    return [G.vcpu_state(0, long_mode=long_mode, index=k) for k in range(count)]


def _window(options: DumpOptions, guest: GuestSpec) -> list[GuestRange]:
    """The ranges a begin/length filter keeps, clipped (the model of plan.select_ranges)."""
    if options.length is None:
        return list(guest.ranges)
    begin, end = options.begin, options.begin + options.length
    out = []
    for r in guest.ranges:
        lo, hi = max(r.gpa, begin), min(r.end, end)
        if lo < hi:
            out.append(GuestRange(lo, hi, r.hva + (lo - r.gpa), r.block, r.region, r.mr))
    return out


_window_lengths = st.integers(1, 8 * PAGE)


@st.composite
def windows(draw: st.DrawFn, guest: GuestSpec) -> tuple[int, int] | None:
    """None (no filter) or a ``(begin, length)`` filter, mostly overlapping the guest's RAM."""
    if draw(_index) % 3:
        return None
    r = guest.ranges[draw(_index) % len(guest.ranges)]
    begin = max(0, r.gpa - PAGE + _scaled(draw(_fraction), r.size + 2 * PAGE))
    return begin, draw(_window_lengths)


@dataclass(frozen=True)
class ElfCase:
    """A guest, its vCPUs' mode, an optional VMCOREINFO (for the kernel-text
    PT_LOAD), a begin/length filter, or paging mappings ``(vaddr, paddr, size)``."""

    guest: GuestSpec
    long_mode: bool | None
    ncpus: int
    fields: dict[str, str] | None
    window: tuple[int, int] | None
    paging: tuple[tuple[int, int, int], ...] | None


_stexts = st.one_of(
    st.integers(START_KERNEL_MAP, START_KERNEL_MAP + (1 << 31)),
    st.sampled_from([START_KERNEL_MAP, 2**64 - PAGE, 2**64, 2**64 + (1 << 24), 2**65]),
    st.integers(0, 2**65),
)
_image_sizes = st.one_of(
    st.none(), st.sampled_from(["1073741824", str(2**64), str(2**66), "0", "-1"]), G.hostile_values
)
# Mostly None (then the value that aims _stext at guest RAM), else hostile.
_maybe_hostile = st.one_of(st.none(), st.none(), st.none(), G.hostile_values)
_vaddrs = st.one_of(
    st.integers(0, 1 << 32).map(lambda v: v & ~(PAGE - 1)),
    st.integers(0, (1 << 47) - 1).map(lambda v: (v & ~(PAGE - 1)) | 0xFFFF_8000_0000_0000),
)
_map_sizes = st.one_of(st.integers(1, 4).map(lambda n: n * PAGE), st.just(2 << 20))
_mapping_counts = st.integers(0, 6)
# First vCPU in long mode (most guests), 32-bit, or no vCPU at all.
_long_modes = st.sampled_from([True, True, True, False, None])
_cpu_counts = st.integers(1, 3)


@st.composite
def _elf_inputs_one(draw: st.DrawFn) -> ElfCase:
    guest = draw(guests())
    fields = None
    if draw(_booleans):
        # SYMBOL(_stext), and a phys_base that puts its physical address in
        # guest RAM, or hostile values for either.
        stext = draw(_stexts)
        r = guest.ranges[draw(_index) % len(guest.ranges)]
        aimed = r.gpa + _scaled(draw(_fraction), r.size - 1) - (stext - START_KERNEL_MAP)
        fields = {
            "OSRELEASE": "6.1.0-fuzz",
            "SYMBOL(_stext)": draw(_maybe_hostile) or f"{stext:x}",
            "NUMBER(phys_base)": draw(_maybe_hostile) or str(aimed),
        }
        size = draw(_image_sizes)
        if size is not None:
            fields["NUMBER(KERNEL_IMAGE_SIZE)"] = size
    paging = None
    if draw(_index) % 4 == 0:
        paging = []
        for _ in range(draw(_mapping_counts)):
            r = guest.ranges[draw(_index) % len(guest.ranges)]
            paddr = (r.gpa + _scaled(draw(_fraction), 5 * PAGE)) & ~(PAGE - 1)
            paging.append((draw(_vaddrs), paddr, draw(_map_sizes)))
        paging = tuple(paging)
    return ElfCase(
        guest,
        draw(_long_modes),
        draw(_cpu_counts),
        fields,
        None if paging is not None else draw(windows(guest)),
        paging,
    )


def _elf_inputs(scratch: Path) -> st.SearchStrategy[ElfCase]:
    return _elf_inputs_one()


def _info(fields: dict[str, str] | None) -> VmcoreInfo | None:
    if fields is None:
        return None
    text = G.vmcoreinfo_text(fields)
    note = G.vmcoreinfo_note(text)
    return VmcoreInfo(note, 0, "fuzz", fields=vmcoreinfo.parse_text(text))


def _scratch_files(guest, scratch: Path) -> tuple[Path, Path]:
    """Write ``guest``'s core into ``scratch``; return (core, vmcore path, not yet there)."""
    core, out = scratch / "core", scratch / "vmcore"
    guest.write(core)
    out.unlink(missing_ok=True)
    return core, out


def _elf_run(case: ElfCase, scratch: Path) -> None:
    guest = case.guest
    core, out = _scratch_files(guest, scratch)
    vcpus = _vcpus(case.long_mode, case.ncpus)
    info = _info(case.fields)
    begin, length = case.window or (None, None)
    options = DumpOptions(begin=begin, length=length)
    with open_core(core) as host, _qemu_core(host, guest, vcpus, info) as qc:
        elfclass, machine = qc.dump_arch.elfclass, qc.dump_arch.machine
        expected_notes = vcpu_notes(vcpus, elfclass=elfclass) + (info.note if info else b"")
        if case.paging is None:
            result = extract(qc, out, allow_missing=True, options=options)
            assert result.file_size == out.stat().st_size
            loads = _expected_loads(guest, _window(options, guest), info, machine)
        else:
            mappings = M.merge(case.paging)
            image = build_image(
                qc.ranges,
                expected_notes or minimal_notes(),
                elf=E.for_class(elfclass),
                machine=machine,
                mappings=mappings,
            )
            fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_elf(fd, image, qc.memory, lambda n: None)
            finally:
                os.close(fd)
            assert image.file_size == out.stat().st_size
            loads = _expected_mapping_loads(guest, mappings, elfclass)
    with open(out, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == (64 if elfclass == E.ELFCLASS64 else 32)
        assert elf["e_type"] == "ET_CORE"
        segments = list(elf.iter_segments())
        assert segments[0]["p_type"] == "PT_NOTE"
        if expected_notes:
            assert segments[0].data() == expected_notes
        got = [
            (s["p_vaddr"], s["p_paddr"], s["p_memsz"], s["p_filesz"], s.data())
            for s in segments[1:]
        ]
    assert all(s["p_type"] == "PT_LOAD" for s in segments[1:])
    assert got == loads, _diff(got, loads)


def _expected_loads(
    guest: GuestSpec, ranges: list[GuestRange], info: VmcoreInfo | None, machine: int
) -> list[tuple]:
    """PT_LOADs of an ELF dump without paging: the ranges, and the kernel text."""
    loads = [(r.gpa, r.gpa, r.size, r.size, guest.bytes_at(r.hva, r.size)) for r in ranges]
    if info is not None and machine == E.EM_X86_64:
        v = kernel_text_load(X86.kernel_layout(info), ranges, None)
        if v is not None:
            r = next(r for r in ranges if r.gpa <= v.gpa < r.end)
            size = min(v.size, r.end - v.gpa)
            loads.append((v.vaddr, v.gpa, size, size, guest.bytes_at(r.hva + v.gpa - r.gpa, size)))
    return loads


def _expected_mapping_loads(guest: GuestSpec, mappings: list, elfclass: int) -> list[tuple]:
    """PT_LOADs of a paging dump: each mapping, with the RAM of the range it starts in."""
    if elfclass == E.ELFCLASS32:
        mappings = [m for m in mappings if m.vaddr + m.size <= 1 << 32 and m.end <= 1 << 32]
    loads = []
    for m in mappings:
        r = next((r for r in guest.ranges if r.gpa <= m.paddr < r.end), None)
        if r is None:
            loads.append((m.vaddr, m.paddr, m.size, 0, b""))
            continue
        filesz = min(m.size, r.end - m.paddr)
        data = guest.bytes_at(r.hva + (m.paddr - r.gpa), filesz)
        loads.append((m.vaddr, m.paddr, m.size, filesz, data))
    return loads


def _diff(got: list[tuple], want: list[tuple]) -> str:
    def brief(load: tuple) -> tuple:
        *head, data = load
        return (*map(hex, head), len(data))

    return f"got {[brief(x) for x in got]}, want {[brief(x) for x in want]}"


@dataclass(frozen=True)
class KdumpCase:
    """A guest written as kdump-METHOD (maybe flattened), with a VMCOREINFO text."""

    guest: GuestSpec
    long_mode: bool | None
    ncpus: int
    method: str
    flattened: bool
    threads: int
    text: bytes | None
    window: tuple[int, int] | None


def _available_methods() -> list[str]:
    out = []
    for name, method in sorted(compress.METHODS.items()):
        try:
            compress.compressor(method)
        except VmcoreError:  # a method whose binding is not installed
            continue
        out.append(name)
    return out


def _kdump_inputs(scratch: Path) -> st.SearchStrategy[KdumpCase]:
    line = st.text(st.sampled_from("ABCDEFGHIJ()_.0123456789abcdef=x"), max_size=40)
    text = st.builds(
        lambda phys_base, lines: (
            f"OSRELEASE=6.1.0-fuzz\nNUMBER(phys_base)={phys_base}\n" + "\n".join(lines)
        ).encode(),
        G.hostile_values,
        st.lists(line, max_size=5),
    )
    methods = st.sampled_from(_available_methods())
    threads = st.integers(1, 2)
    texts = st.one_of(st.none(), text)

    @st.composite
    def one(draw: st.DrawFn) -> KdumpCase:
        guest = draw(guests())
        return KdumpCase(
            guest,
            draw(_long_modes),
            draw(_cpu_counts),
            draw(methods),
            draw(_booleans),
            draw(threads),
            draw(texts),
            draw(windows(guest)),
        )

    return one()


class FastKdump(Kdump):
    """The test reader, with a bitmap scan at C speed (guests reach 8 GiB: 2M bits)."""

    def pfns(self) -> list[int]:
        bitmap = self.bitmaps()[0]
        out = []
        for m in re.finditer(rb"[^\0]", bitmap):
            byte = m.start()
            out += [byte * 8 + b for b in range(8) if bitmap[byte] >> b & 1]
        return [p for p in out if p < self.max_mapnr]


def _expected_pages(guest: GuestSpec, ranges: list[GuestRange]) -> dict[int, bytes]:
    """pfn -> page, as QEMU's get_next_page() builds them (zero-filled edges)."""
    pages: dict[int, bytearray] = {}
    for r in ranges:
        for pfn in range(r.gpa // PAGE, -(-r.end // PAGE)):
            page = pages.setdefault(pfn, bytearray(PAGE))
            lo, hi = max(pfn * PAGE, r.gpa), min((pfn + 1) * PAGE, r.end)
            page[lo - pfn * PAGE : hi - pfn * PAGE] = guest.bytes_at(r.hva + lo - r.gpa, hi - lo)
    return {pfn: bytes(page) for pfn, page in pages.items()}


def _kdump_run(case: KdumpCase, scratch: Path) -> None:
    guest = case.guest
    core, out = _scratch_files(guest, scratch)
    vcpus = _vcpus(case.long_mode, case.ncpus)
    info = None
    if case.text is not None:
        info = VmcoreInfo(
            G.vmcoreinfo_note(case.text), 0, "fuzz", fields=vmcoreinfo.parse_text(case.text)
        )
    begin, length = case.window or (None, None)
    options = DumpOptions(
        format=f"kdump-{case.method}",
        flattened=case.flattened,
        threads=case.threads,
        begin=begin,
        length=length,
    )
    with open_core(core) as host, _qemu_core(host, guest, vcpus, info) as qc:
        elfclass, machine = qc.dump_arch.elfclass, qc.dump_arch.machine
        result = extract(qc, out, allow_missing=True, options=options)
    raw = out.read_bytes()
    if case.flattened:
        raw = unflatten(raw)
    assert result.file_size == out.stat().st_size
    bits64 = elfclass == E.ELFCLASS64
    dump = FastKdump.parse(raw, bits64=bits64)
    method = compress.METHODS[case.method]
    assert (dump.version, dump.block_size, dump.status) == (6, PAGE, method.flag)
    assert dump.nr_cpus == len(vcpus)
    assert dump.machine == (b"x86_64" if machine == E.EM_X86_64 else b"i686")
    assert dump.max_mapnr == max(-(-r.end // PAGE) for r in guest.ranges)
    first, second = dump.bitmaps()
    assert first == second
    expected = _expected_pages(guest, _window(options, guest))
    assert dump.pfns() == sorted(expected)
    assert dump.pages() == expected
    phys_base = X86.kernel_layout(info).phys_base if info else 0
    assert dump.phys_base == phys_base % (1 << (64 if bits64 else 32))
    notes = vcpu_notes(vcpus, elfclass=elfclass) + (info.note if info else b"")
    assert dump.notes == notes
    assert dump.vmcoreinfo == (case.text if info else b"")


# -- the targets -------------------------------------------------------------------------


# -- qemu-state: QEMU's own structures in real rig cores ---------------------------------
#
# Mutants of real 7.2 and 10.0 cores (rig cases), each with one structural
# field of QEMU's state changed: the FlatView and its ranges, the
# MemoryRegions and RAMBlocks they name, the machine, the vCPU list. A case
# passes when the core opens to exactly the pristine plan (the guest ranges,
# where each piece's bytes come from in the core, the vCPUs, the ELF arch),
# is rejected with a VmcoreError (one line in the CLI) or by guest RAM the
# core lacks (extract refuses it without --allow-missing), and *fails* when
# it opens to a different plan without a word: a silent wrong vmcore.
# Register contents are not mutated: no independent fact can check them.

QEMU_STATE_CASES = {"q72-pc-512": "7.2", "q10-q35-512": "10.0"}


@dataclass(frozen=True)
class StateField:
    """One field to mutate: ``size`` bytes at ``offset`` in the copy of ``case``."""

    case: str
    name: str
    offset: int
    size: int


class _StateCores:
    """Sparse copies of the rig cores, the fields found with drgn, and the
    pristine plans; made once per scratch directory."""

    def __init__(self, scratch: Path) -> None:
        import subprocess

        from support import rig

        self.copies: dict[str, Path] = {}
        self.qemu: dict[str, Path] = {}
        self.fields: list[StateField] = []
        self.reference: dict[str, tuple] = {}
        for name, version in QEMU_STATE_CASES.items():
            core = rig.case_dir(name) / "core"
            if not core.exists():
                raise FileNotFoundError(f"rig case {name} not made (tests/rig/make_case.py)")
            copy = scratch / f"{name}.core"
            if not copy.exists():
                subprocess.run(["cp", "--sparse=always", core, copy], check=True)
            self.copies[name], self.qemu[name] = copy, rig.qemu_binary(version)
            self.fields += _state_fields(name, copy, self.qemu[name])
            self.reference[name] = _state_plan(copy, self.qemu[name])

    def value(self, f: StateField) -> bytes:
        with open(self.copies[f.case], "rb") as fh:
            fh.seek(f.offset)
            return fh.read(f.size)


def _state_fields(case: str, core: Path, qemu: Path) -> list[StateField]:
    import drgn

    from qemu_vmcore.qemu import versions

    prog = drgn.Program()
    prog.set_core_dump(os.fspath(core))
    prog.load_debug_info([os.fspath(qemu)], main=True)
    host = open_core(core)
    out: list[StateField] = []

    def add(name: str, obj: drgn.Object) -> None:
        size = drgn.sizeof(obj)
        ext = host.extents(obj.address_, size)
        if [e.kind for e in ext] == [ExtentKind.DATA]:
            out.append(StateField(case, name, ext[0].file_offset, size))

    try:
        view = prog["address_space_memory"].current_map
        for m in ("nr", "nr_allocated", "ranges"):
            add(f"FlatView.{m}", getattr(view, m))
        mrs, blocks = {}, {}
        for i in range(int(view.nr)):
            fr = view.ranges[i]
            for m in ("mr", "offset_in_region", "readonly", "romd_mode"):
                add(f"ranges[{i}].{m}", getattr(fr, m))
            add(f"ranges[{i}].addr.start", fr.addr.start)
            add(f"ranges[{i}].addr.size", fr.addr.size)
            mrs[fr.mr.value_()] = fr.mr
        for mr in mrs.values():
            if not mr.ram:
                continue
            label = mr.name.string_().decode(errors="replace")
            for m in ("ram", "ram_block", "alias", "alias_offset", "readonly", "ram_device",
                      "nonvolatile", "rdm", "owner"):  # fmt: skip
                add(f"mr {label}.{m}", getattr(mr, m))
        block = prog["ram_list"].blocks.lh_first
        while block.value_():
            blocks[block.idstr.string_().decode()] = block
            block = block.next.le_next
        for idstr, b in blocks.items():
            for m in ("host", "used_length", "max_length", "flags", "mr", "offset"):
                add(f"RAMBlock {idstr}.{m}", getattr(b, m))
            add(f"RAMBlock {idstr}.next", b.next.le_next)
        ms = prog["current_machine"]
        for m in ("ram_size", "ram", "dump_guest_core"):
            add(f"machine.{m}", getattr(ms, m))
        add("machine.smp.cpus", ms.smp.cpus)
        add("machine.smp.max_cpus", ms.smp.max_cpus)
        x86ms = drgn.cast("X86MachineState *", ms)
        add("x86 below_4g_mem_size", x86ms.below_4g_mem_size)
        add("x86 above_4g_mem_size", x86ms.above_4g_mem_size)
        cpus = next(a.name for a in versions.CPU_LIST if a.name in prog)
        add("cpu list tqh_first", prog[cpus].tqh_first)
        cpu, n = prog[cpus].tqh_first, 0
        while cpu.value_():
            add(f"cpu{n}.cpu_index", cpu.cpu_index)
            add(f"cpu{n}.node.tqe_next", cpu.node.tqe_next)
            add(f"cpu{n}.env.segs[cs].selector", drgn.cast("X86CPU *", cpu).env.segs[1].selector)
            cpu, n = cpu.node.tqe_next, n + 1
    finally:
        host.close()
    return out


def _state_plan(core: Path, qemu: Path) -> tuple:
    """What a vmcore of ``core`` would be made of: raises where extract refuses."""
    from qemu_vmcore.errors import MissingMemoryError
    from qemu_vmcore.source import open_qemu_core

    with open_qemu_core(core, qemu=qemu) as qc:
        missing = qc.memory.missing()
        if missing:
            raise MissingMemoryError(f"{len(missing)} pieces not in the core")
        notes = qc.arch.vcpu_notes(qc.vcpus, qc.dump_arch)  # may not raise struct.error
        pieces = tuple(
            (r.gpa, r.end, r.block, tuple((p.gpa, p.size, p.kind, p.file_offset)
                                          for p in qc.memory.pieces(r)))
            for r in qc.ranges
        )  # fmt: skip
        arch = qc.dump_arch
        return (pieces, len(qc.vcpus), arch.elfclass, arch.machine, len(notes))


def _outside_window(plan: tuple) -> tuple:
    """``plan`` with the bytes of the PC's legacy window cut out of every piece."""
    from qemu_vmcore.qemu.pc import PC_LEGACY_WINDOW

    lo, hi = PC_LEGACY_WINDOW
    pieces = []
    for _gpa, _end, block, parts in plan[0]:
        for gpa, size, kind, offset in parts:
            for a, b in ((gpa, min(gpa + size, lo)), (max(gpa, hi), gpa + size)):
                if b > a:
                    off = None if offset is None else offset + (a - gpa)
                    prev = pieces[-1] if pieces else None
                    if (prev and prev[1] == a and prev[2:4] == (block, kind)
                            and (off is None) == (prev[4] is None)
                            and (off is None or prev[4] + (a - prev[0]) == off)):  # fmt: skip
                        pieces[-1] = (prev[0], b, block, kind, prev[4])
                    else:
                        pieces.append((a, b, block, kind, off))
    return (tuple(pieces), *plan[1:])


_STATE_CORES: dict[Path, _StateCores] = {}


def _state_cores(scratch: Path) -> _StateCores:
    if scratch not in _STATE_CORES:
        _STATE_CORES[scratch] = _StateCores(scratch)
    return _STATE_CORES[scratch]


def _state_available() -> str | None:
    from support import rig

    for name, version in QEMU_STATE_CASES.items():
        if not (rig.case_dir(name) / "core").exists() or not rig.qemu_binary(version).exists():
            return f"rig case {name} not made (tests/rig/make_case.py)"
    return None


def _state_value(old: bytes, kind: str, n: int, other: bytes) -> bytes:
    size = len(old)
    bits = size * 8
    v = int.from_bytes(old, "little")
    mask = (1 << bits) - 1
    new = {
        "zero": 0,
        "ones": mask,
        "flip": v ^ (1 << (n % bits)),
        "add-page": v + PAGE * (1 + n % 64),
        "sub-page": v - PAGE * (1 + n % 64),
        "add-small": v + 1 + n % 16,
        "double": v * 2,
        "halve": v // 2,
        "random": n,
        "boundary": (1 << 31, 1 << 32, 1 << 63, mask, mask >> 1, 1)[n % 6],
        "other": int.from_bytes(other[:size].ljust(size, b"\0"), "little"),
    }[kind]
    return (new & mask).to_bytes(size, "little")


STATE_KINDS = ("zero", "ones", "flip", "add-page", "sub-page", "add-small", "double",
               "halve", "random", "boundary", "other")  # fmt: skip


def _state_inputs(scratch: Path) -> st.SearchStrategy[tuple]:
    cores = _state_cores(scratch)
    n = len(cores.fields)
    return st.tuples(
        st.integers(0, n - 1),
        st.sampled_from(STATE_KINDS),
        st.integers(0, (1 << 64) - 1),
        st.integers(0, n - 1),
    )


def _state_run(case: tuple, scratch: Path) -> None:
    from qemu_vmcore.errors import MissingMemoryError

    cores = _state_cores(scratch)
    i, kind, n, j = case
    f = cores.fields[i]
    old = cores.value(f)
    new = _state_value(old, kind, n, cores.value(cores.fields[j]))
    if new == old:
        return  # nothing changed: a pass by definition
    path = cores.copies[f.case]
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, new, f.offset)
        try:
            plan = _state_plan(path, cores.qemu[f.case])
        except MissingMemoryError:
            raise VmcoreError("guest RAM not in the core (extract refuses)") from None
        finally:
            os.pwrite(fd, old, f.offset)
    finally:
        os.close(fd)
    if plan != cores.reference[f.case]:
        if _outside_window(plan) == _outside_window(cores.reference[f.case]):
            # Only the PC's legacy window differs, where QEMU's chipset state
            # (VGA, PAM) decides whether RAM is mapped: crosscheck cannot judge.
            raise Unjudged(f"{f.case} {f.name}: only the legacy window 0xa0000-0x100000")
        raise AssertionError(
            f"silent difference: {f.case} {f.name} {old.hex()} -> {new.hex()} ({kind}) "
            "opened to another plan with no error"
        )


# -- profile: a QEMU profile (qemu-vmcore profile's JSON) as hostile input --------

#: A small valid profile: ints, a bool, a bit field, a char array, a struct
#: that points to itself, a union, a flexible array, an incomplete struct.
_PROFILE = {
    "format": "qemu-vmcore-profile",
    "version": 1,
    "build_id": "b13f00209137585d3da9c83e6f12bb6ed8f6fee1",
    "qemu_version": "10.0.0",
    "types": [
        {"kind": "int", "name": "unsigned int", "size": 4, "signed": False},
        {"kind": "bool", "name": "_Bool", "size": 1},
        {"kind": "int", "name": "char", "size": 1, "signed": True},
        {"kind": "array", "target": 2, "length": 16},
        {
            "kind": "struct",
            "name": "Node",
            "size": 40,
            "absent": ["gone"],
            "members": {
                "next": [0, 5, 0],
                "flag": [64, 1, 0],
                "bits": [72, 0, 3],
                "name": [96, 3, 0],
                "u": [224, 6, 0],
                "tail": [320, 7, 0],
            },
        },
        {"kind": "pointer", "size": 8, "target": 4},
        {
            "kind": "union",
            "name": "Node.u",
            "size": 8,
            "members": {"a": [0, 0, 0], "p": [0, 5, 0]},
            "absent": [],
        },
        {"kind": "array", "target": 0, "length": None},
        {"kind": "struct", "name": "Opaque", "size": None},
        {"kind": "pointer", "size": 8, "target": 8},
        {"kind": "float", "name": "double", "size": 8},
        {"kind": "void"},
        {"kind": "pointer", "size": 8, "target": 11},
    ],
    "names": {"Node": 4, "Opaque *": 9},
    "absent_types": ["ARMCPU"],
    "variables": {"head": [4096, 5], "d": [8192, 10], "vp": [8200, 12]},
    "absent_variables": ["cpus"],
    "static_locals": {"f::s": 12288, "g::t": None},
    "constants": {"ONE": 1},
    "absent_constants": ["TWO"],
}

_PROFILE_VALUES = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 16, 17, 63, 64, 65, -1, 1 << 32, 1 << 64]),
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["int", "bool", "float", "pointer", "array", "void", "struct", "union"]),
    st.just([]),
    st.just({}),
    st.floats(allow_nan=True),
)


@st.composite
def _profile_inputs_one(draw: st.DrawFn) -> bytes:
    import copy

    data = copy.deepcopy(_PROFILE)
    for _ in range(draw(st.integers(1, 4))):
        node, key = data, None
        while True:  # walk down to a random leaf (or stop at a container)
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                key = None
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if not isinstance(child, (dict, list)) or draw(st.integers(0, 3)) == 0:
                break
            node = child
        if key is not None:
            if draw(st.booleans()) and isinstance(node, dict):
                del node[key]
            else:
                node[key] = draw(_PROFILE_VALUES)
    raw = json.dumps(data).encode()
    if draw(st.integers(0, 4)) == 0:  # byte damage: a cut or a flip
        at = draw(st.integers(0, len(raw) - 1))
        if draw(st.booleans()):
            raw = raw[:at]
        else:
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    return raw


def _profile_inputs(scratch: Path) -> st.SearchStrategy[bytes]:
    return _profile_inputs_one()


def _profile_run(raw: bytes, scratch: Path) -> None:
    import drgn

    from qemu_vmcore.debugger.profile_backend import ProfileDebugger
    from qemu_vmcore.debugger.profile_format import parse_profile

    profile = parse_profile(raw, Path("fuzz.json"))
    dbg = ProfileDebugger(drgn.Program(drgn.host_platform), None, profile, 0x5555_0000_0000)
    # Build every type, and look at every object the profile names, as the
    # qemu/ layer would (no memory: nothing is read).
    for i in range(len(profile.types)):
        dbg._type(i)
    for name in profile.variables:
        dbg.variable(name).sizeof()
    for name in profile.names:
        v = dbg.object_at(name, 0x1000)
        v.sizeof()
        if v._obj.type_.unaliased_kind().name in ("STRUCT", "UNION"):
            for member in sorted(dbg.value.known.get(_tag(v), ())):
                if v.has_member(member):
                    m = v.member(member)
                    if m._obj.bit_field_size_ is None and m._obj.type_.is_complete():
                        m.sizeof()
    for key in profile.static_locals:
        function, _, var = key.partition("::")
        dbg.static_local(function, var, next(iter(profile.names), "Node"))


def _tag(v: Any) -> str:
    t = v._obj.type_.unaliased()
    if t.kind.name == "POINTER":
        t = t.type.unaliased()
    return getattr(t, "tag", None) or ""


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "hostcore",
            "open_core() on mutated cores; extents, reads, build-id",
            _hostcore_inputs,
            _hostcore_run,
        ),
        Target(
            "notes",
            "NT_FILE / NT_PRPSINFO / NT_AUXV in a core, against a model",
            _notes_inputs,
            _notes_run,
        ),
        Target(
            "vmcoreinfo",
            "parse_note(), parse_text() on note-like bytes",
            _vmcoreinfo_inputs,
            _vmcoreinfo_run,
            rejects=(VmcoreInfoError, VmcoreError),
        ),
        Target(
            "vmcoreinfo-find",
            "find() on hostile guest RAM, device and CR3s",
            _find_inputs,
            _find_run,
        ),
        Target(
            "printk",
            "dmesg records of a mutated ring, hostile VMCOREINFO",
            _printk_inputs,
            _printk_run,
            limits=(("qemu_vmcore.guest.printk", "MAX_COUNT_BITS", 16),),
        ),
        Target(
            "paging",
            "translate() on random tables, against a reference walk",
            _paging_inputs,
            _paging_run,
        ),
        Target(
            "mappings",
            "guest_mappings() on hostile tables, all paging modes",
            _mappings_inputs,
            _mappings_run,
            limits=(
                ("qemu_vmcore.arch.x86.paging", "MAX_TABLES", 1 << 12),
                ("qemu_vmcore.arch.x86.paging", "MAX_MAPPINGS", 1 << 12),
            ),
        ),
        Target(
            "profile",
            "a QEMU profile: validation, then every type built and named object looked at",
            _profile_inputs,
            _profile_run,
        ),
        Target(
            "elf-writer",
            "extract() to ELF (and paging PT_LOADs), read back and compared",
            _elf_inputs,
            _elf_run,
        ),
        Target(
            "kdump-writer",
            "extract() to kdump-*, raw and flattened, read back and compared",
            _kdump_inputs,
            _kdump_run,
        ),
        Target(
            "qemu-state",
            "open real 7.2/10.0 rig cores with one QEMU field mutated; no silent difference",
            _state_inputs,
            _state_run,
            available=_state_available,
        ),
    )
}


# -- the report ---------------------------------------------------------------------------


def print_report(
    results: list[Stats], *, seed: int, cases: int, budget_ms: float, seconds: float
) -> None:
    """A table of the counts per target, then the failing and hanging cases."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.width < 130:  # a pipe or a narrow terminal: do not squeeze the table
        console = Console(width=130)
    table = Table(title=f"bench/fuzz: seed {seed}, budget {budget_ms:g} ms per case")
    for name, justify in [
        ("target", "left"),
        ("cases", "right"),
        ("passed", "right"),
        ("rejected", "right"),
        ("failures", "right"),
        ("hangs", "right"),
        ("slowest ms", "right"),
        ("mean ms", "right"),
        ("peak RSS +MiB", "right"),
        ("time s", "right"),
    ]:
        table.add_column(name, justify=justify)
    for s in results:
        bad = "bold red"
        table.add_row(
            s.target,
            f"{s.cases:,}",
            f"{s.passed:,}",
            f"{s.rejected:,}",
            f"[{bad}]{s.failures:,}[/]" if s.failures else "0",
            f"[{bad}]{s.hangs:,}[/]" if s.hangs else "0",
            f"{s.slowest_ms:,.1f}",
            f"{s.total_ms / s.cases:.2f}" if s.cases else "-",
            f"[{bad}]{s.peak_rss_growth_kib / 1024:.1f}[/]"
            if not s.memory_ok
            else f"{s.peak_rss_growth_kib / 1024:.1f}",
            f"{s.seconds:.1f}",
        )
    console.print(table)
    limits = {k: v for s in results for k, v in s.limits.items()}
    if limits:
        console.print("lowered limits: " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    for s in results:
        if s.rejected_by:
            why = ", ".join(f"{n} {c:,}" for n, c in s.rejected_by.most_common())
            console.print(f"[dim]{s.target} rejected: {why}[/]")
        if s.unjudged:
            console.print(
                f"[dim]{s.target} unjudged: {s.unjudged:,} ({', '.join(s.unjudged_by)})[/]"
            )
    for s in results:
        if s.runner_error:
            console.print(f"[bold red]{s.target}: the runner broke[/]\n{s.runner_error}")
        if not s.memory_ok:
            console.print(
                f"[bold red]{s.target}: peak RSS grew {s.peak_rss_growth_kib / 1024:.1f} MiB "
                f"(limit {s.rss_limit_kib / 1024:.0f} MiB)[/]"
            )
        for sample in s.samples:
            console.print(f"[bold red]{s.target} case {sample.case}: {sample.outcome}[/]")
            console.print(f"  {sample.error}")
            console.print(f"  input: {sample.input}", markup=False, highlight=False)
            if sample.traceback:
                console.print(sample.traceback, markup=False, highlight=False)
        if s.samples:
            # The same seed and count give the same cases.
            console.print(f"rerun: bench/fuzz.py -t {s.target} --seed {seed} -n {cases}")
    verdict = "OK" if all(s.ok for s in results) else "FAILED"
    console.print(f"{verdict}: {sum(s.cases for s in results):,} cases in {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Run the targets and report; returns the exit status."""
    ap = argparse.ArgumentParser(
        description="Property-based fuzzing of the parsers and writers (hypothesis).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="targets:\n" + "\n".join(f"  {t.name:16} {t.about}" for t in TARGETS.values()),
    )
    ap.add_argument("-n", "--cases", type=int, default=DEFAULT_CASES, help="cases per target")
    ap.add_argument(
        "-t", "--target", action="append", choices=sorted(TARGETS), help="repeatable; default all"
    )
    ap.add_argument("--budget-ms", type=float, default=DEFAULT_BUDGET_MS, help="time per case")
    ap.add_argument("--seed", type=int, help="hypothesis seed (default: random, printed)")
    ap.add_argument(
        "--max-rss-mb",
        type=float,
        default=DEFAULT_MAX_RSS_MB,
        help="largest peak RSS growth allowed per target",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--json-out", type=Path, help="also write the JSON results to this file")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    names = args.target or list(TARGETS)
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qemu-vmcore-fuzz-") as tmp:
        for name in names:
            if not args.json:
                print(f"{name}: {args.cases:,} cases ...", file=sys.stderr, flush=True)
            stats = fuzz_target(
                TARGETS[name],
                cases=args.cases,
                budget_ms=args.budget_ms,
                seed=seed,
                scratch=Path(tmp) / name,
                max_rss_mb=args.max_rss_mb,
            )
            results.append(stats)
            if not args.json:
                print(
                    f"  {stats.cases:,} cases, {stats.failures} failures, {stats.hangs} hangs, "
                    f"{stats.seconds:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    seconds = time.perf_counter() - start
    ok = all(s.ok for s in results)
    report = {
        "seed": seed,
        "cases_per_target": args.cases,
        "budget_ms": args.budget_ms,
        "max_rss_mb": args.max_rss_mb,
        "seconds": round(seconds, 1),
        "ok": ok,
        "targets": [s.to_json() for s in results],
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print_report(
            results, seed=seed, cases=args.cases, budget_ms=args.budget_ms, seconds=seconds
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
