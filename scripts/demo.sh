#!/usr/bin/env bash
# The demo, end to end: set up (cached), boot a Linux guest under a QEMU built
# with debug info, have the guest log a marker, crash QEMU with SIGABRT,
# then rebuild the guest's vmcore from QEMU's core and look inside it.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
