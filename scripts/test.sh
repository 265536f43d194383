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
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider tests "$@"
