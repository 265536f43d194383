#!/usr/bin/env bash
# All the set-up the demo and the tests need, on a fresh Debian 12 machine:
# Debian packages and deb-src entries, the project's virtualenv, QEMU 7.2 and
# 10.0 built with debug info from Debian's sources, crash built for ARM64 (for
# arm64 guests), and the guest kernels and initramfs images (amd64 and arm64).
# Everything heavy is cached in $QEMU_VMCORE_RIG_CACHE (default
# /var/cache/qemu-vmcore-rig), so a second run takes seconds.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
cd "$top"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages and builds into /var/cache)" >&2
  exit 1
fi
bash tests/rig/setup-apt.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,lzo]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import qemu_vmcore, drgn, rich, elftools" # fail early if the install did not work
# pip compiles bytecode on a normal install but not for an editable one, and
# PYTHONDONTWRITEBYTECODE may forbid writing it later: compile it once here
# so start-up (which benchmarks measure) is that of an installed package.
.venv/bin/python -m compileall -q src
# crash's build (gdb's configure and make) keeps one core busy for most of
# its ~15 minutes (measured: CPU time = wall time), so on a cold machine it
# runs beside the QEMU builds and the guest downloads, which use the rest;
# its output is shown when it ends. A set-up that fails stops it too.
crash_log=$(mktemp)
setsid bash tests/rig/build-crash.sh >"$crash_log" 2>&1 &
crash_pid=$!  # its own process group: make and gcc stop with it
trap 'kill -- "-$crash_pid" 2>/dev/null; rm -f "$crash_log"' EXIT
bash tests/rig/build-qemu.sh
bash tests/rig/guest.sh amd64
bash tests/rig/guest.sh arm64
if ! wait "$crash_pid"; then
  cat "$crash_log" >&2
  echo "setup.sh: tests/rig/build-crash.sh failed" >&2
  exit 1
fi
trap - EXIT
cat "$crash_log" >&2
rm -f "$crash_log"
