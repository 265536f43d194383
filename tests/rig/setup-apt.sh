#!/usr/bin/env bash
# Installs the Debian packages the rig and the tests need, and the deb-src
# entries for the QEMU source packages. Idempotent; re-runs are quick.
set -euo pipefail
. "$(dirname "$0")/common.sh"

src=/etc/apt/sources.list.d/qemu-vmcore-src.sources
stamp="$RIG_CACHE/apt.stamp"
want_pkgs=(
  # QEMU build (a minimal x86_64-softmmu with debug info)
  build-essential dpkg-dev ninja-build pkg-config meson flex bison python3-venv
  libglib2.0-dev libpixman-1-dev zlib1g-dev libfdt-dev libzstd-dev
  libslirp-dev libcap-ng-dev libattr1-dev
  # firmware for the guest
  seabios ipxe-qemu qemu-system-data
  # guest kernel and userland for the initramfs
  busybox-static cpio xz-utils zstd lz4
  # consumers and tools used by tests and bench
  gdb binutils crash makedumpfile kexec-tools
  # python-lzo's build (the faster kdump-lzo binding, the lzo extra); libkdumpfile for the tests (system Python)
  liblzo2-dev python3-dev python3-libkdumpfile
  # qemu-vmcore mount (libfuse 3 for mfusepy, fusermount3) and its tests
  fuse3 libfuse3-3
  # a journal with coredump entries for the coredumpctl test (the daemon is
  # not started; coredumpctl itself comes from tests/rig/coredumpctl.sh)
  systemd-journal-remote
)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${want_pkgs[*]}" ] && [ -f "$src" ]; then
  log "apt packages already installed"
  exit 0
fi
if [ ! -f "$src" ]; then
  log "adding deb-src entries ($src)"
  cat >"$src" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
log "apt-get update"
apt-get update -qq
log "installing ${#want_pkgs[@]} packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want_pkgs[@]}" >/dev/null
echo "${want_pkgs[*]}" >"$stamp"
