"""A short run of every bench/fuzz.py target: no failures, no hangs, bounded memory.

The full run (``.venv/bin/python bench/fuzz.py``, 10,000 cases per target)
takes minutes; this one runs each target in-process with a fixed seed, so
CI sees the same cases every time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_CASES = 200
SEED = 20240601
#: Generous for a loaded CI machine: a real hang still ends the case, and the
#: slowest cases of the full run take about a tenth of this.
BUDGET_MS = 5000


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz", module)
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()


@pytest.mark.parametrize("name", sorted(fuzz.TARGETS))
def test_fuzz_target_smoke(name, tmp_path):
    why_not = fuzz.TARGETS[name].available()
    if why_not:
        pytest.skip(why_not)
    stats = fuzz.fuzz_target(
        fuzz.TARGETS[name], cases=SMOKE_CASES, budget_ms=BUDGET_MS, seed=SEED, scratch=tmp_path
    )
    report = "\n".join(
        f"{s.outcome} (case {s.case}): {s.error}\n  input: {s.input}\n{s.traceback}"
        for s in stats.samples
    )
    assert stats.runner_error is None, stats.runner_error
    assert stats.cases >= SMOKE_CASES
    assert stats.passed + stats.rejected + stats.failures + stats.hangs == stats.cases
    assert (stats.failures, stats.hangs) == (0, 0), report
    assert stats.memory_ok, f"peak RSS grew {stats.peak_rss_growth_kib // 1024} MiB"
    # Each target must get past its parser's first check now and then: a
    # strategy whose every case is refused tests only that check.
    assert stats.passed > 0


def test_main_reports_json(tmp_path, capsys):
    """The command line: --json prints the counts, and the exit status says OK."""
    import json

    status = fuzz.main(["-n", "20", "-t", "notes", "-t", "paging", "--seed", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["ok"]
    assert [t["target"] for t in report["targets"]] == ["notes", "paging"]
    assert all(t["cases"] == 20 and t["failures"] == t["hangs"] == 0 for t in report["targets"])


def test_a_failing_and_a_hanging_case_are_counted(tmp_path):
    """The runner itself: other exceptions are failures, overruns are hangs."""
    from hypothesis import strategies as st

    from qemu_vmcore.errors import VmcoreError

    def run(n: int, scratch: Path) -> None:
        if n == 1:
            raise VmcoreError("refused")
        if n == 2:
            raise KeyError(n)
        if n == 3:
            while True:  # a real infinite loop: SIGALRM must end it
                pass

    target = fuzz.Target("toy", "test", lambda scratch: st.sampled_from([0, 1, 2, 3]), run)
    stats = fuzz.fuzz_target(target, cases=40, budget_ms=50, seed=1, scratch=tmp_path)
    assert stats.cases == 40
    assert min(stats.passed, stats.rejected, stats.failures, stats.hangs) > 0
    assert {s.outcome for s in stats.samples} <= {"failure", "hang"}
    assert not stats.ok
