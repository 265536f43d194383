#!/usr/bin/env bash
# The whole test suite: set-up (cached), lint, unit tests, then the
# end-to-end tests on real QEMU cores made by the rig (cached between runs).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
bash scripts/setup.sh
echo "== lint"
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
echo "== rig cases"
.venv/bin/python tests/rig/make_case.py
echo "== tests"
# -rs: say why a test was skipped (e.g. the KVM case where KVM does not work).
# -n: one worker per core (pytest-xdist). Most tests wait on one process at a
# time (a consumer, a CLI run, a TCG guest), so a single worker left the
# second core idle. --dist loadfile keeps a file's tests on one worker, so a
# module's fixtures (its extractions) are made once, not once per worker.
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider -n "$(nproc)" --dist loadfile tests "$@"
