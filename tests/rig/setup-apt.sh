#!/usr/bin/env bash
# Installs the Debian packages the rig and the tests need, and the deb-src
# entries for the QEMU and crash source packages, and adds the foreign
# architectures whose guest kernels and busybox guest.sh downloads (never
# installs) to dpkg. Idempotent; re-runs are quick.
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
  # a real debuginfod server (and its client library) for the stripped-QEMU case
  debuginfod
  # crash for arm64 guests (tests/rig/build-crash.sh; the gdb it embeds needs
  # GMP, MPFR and a termcap library; lzo, snappy and zstd read kdump pages)
  libncurses-dev libgmp-dev libmpfr-dev libsnappy-dev
)
# Guest architectures besides the host's (guest.sh ARCH).
foreign_archs=(arm64)
missing_archs=()
for a in "${foreign_archs[@]}"; do
  dpkg --print-foreign-architectures | grep -qx "$a" || missing_archs+=("$a")
done
# sid only for crash: the archive answers 404 for bookworm's crash 8.0.2 source
# and trixie's 8.0.6 is incomplete; build-crash.sh takes sid's, which carries
# its gdb as a second tarball. deb-src only, so no binary comes from sid.
want_src=$(cat <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${want_pkgs[*]}" ] &&
   [ -f "$src" ] && [ "$(cat "$src")" = "$want_src" ] && [ ${#missing_archs[@]} -eq 0 ]; then
  log "apt packages already installed"
  exit 0
fi
if [ ! -f "$src" ] || [ "$(cat "$src")" != "$want_src" ]; then
  log "writing deb-src entries ($src)"
  printf '%s\n' "$want_src" >"$src"
fi
for a in "${missing_archs[@]}"; do
  log "adding architecture $a to dpkg (for guest.sh $a)"
  dpkg --add-architecture "$a"
done
log "apt-get update"
apt-get update -qq
log "installing ${#want_pkgs[@]} packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want_pkgs[@]}" >/dev/null
echo "${want_pkgs[*]}" >"$stamp"
