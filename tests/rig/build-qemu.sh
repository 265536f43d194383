#!/usr/bin/env bash
# Builds qemu-system-x86_64 and qemu-system-aarch64 with debug info from
# Debian's source packages, both targets in one tree per version: the
# target-independent half of QEMU (util, block, most of hw/, the QAPI code) is
# then compiled once, which keeps a cold CI run short.
# Usage: build-qemu.sh [7.2|10.0 ...]   (default: all rig versions)
# Result: $RIG_CACHE/qemu-<short>/{src,build}/ ; the binaries are
#         $RIG_CACHE/qemu-<short>/build/qemu-system-{x86_64,aarch64} and the
#         source tree (with scripts/dump-guest-memory.py) is .../src.
# A finished build leaves a stamp naming the Debian version and the targets,
# so re-runs are free.
set -euo pipefail
. "$(dirname "$0")/common.sh"

want=("$@")
meson_venv="$RIG_CACHE/meson-venv"

targets=(x86_64 aarch64)
# -O1, not QEMU's default -O2: the cold build is the longest step of a fresh
# CI run, and -O1 compiles markedly faster. The DWARF types and globals the
# tool reads are the same at any level; only TCG runs a little slower.
cflags=-O1

build_one() {
  local short=$1 debver=$2 dir="$RIG_CACHE/qemu-$1"
  local stamp="$debver targets=${targets[*]} cflags=$cflags"
  if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ]; then
    log "QEMU $short ($debver) already built"
    return
  fi
  log "building QEMU $short from Debian source qemu=$debver"
  rm -rf "$dir" && mkdir -p "$dir/dl"
  (cd "$dir/dl" && apt-get source -qq --only-source "qemu=$debver" >/dev/null)
  local srcdir
  srcdir=$(find "$dir/dl" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -1)
  mv "$srcdir" "$dir/src" && rm -rf "$dir/dl"
  local extra=()
  case "$short" in
    7.2) ;;
    *)
      # QEMU >= 8.1 insists on a newer meson than bookworm ships and, in the
      # Debian tarball, brings no bundled wheel; a private venv provides one.
      if [ ! -x "$meson_venv/bin/meson" ]; then
        python3 -m venv "$meson_venv"
        "$meson_venv/bin/pip" install -q meson==1.5.0
      fi
      export PATH="$meson_venv/bin:$PATH"
      extra+=(--disable-rust --disable-install-blobs)
      ;;
  esac
  mkdir -p "$dir/build"
  (cd "$dir/build" && "$dir/src/configure" --target-list="$(printf '%s-softmmu,' "${targets[@]}" | sed 's/,$//')" \
      --enable-debug-info --extra-cflags="$cflags" --disable-werror --disable-docs --enable-kvm \
      --disable-user --disable-gtk --disable-sdl --disable-vnc --disable-opengl \
      --disable-spice --disable-curses "${extra[@]}" >"$dir/configure.log" 2>&1) || {
    tail -30 "$dir/configure.log" >&2; exit 1; }
  (cd "$dir/build" && ninja -j"$(nproc)" $(printf 'qemu-system-%s ' "${targets[@]}") >"$dir/build.log" 2>&1) || {
    tail -30 "$dir/build.log" >&2; exit 1; }
  echo "$stamp" >"$dir/stamp"
  log "QEMU $short built: $(printf "$dir/build/qemu-system-%s " "${targets[@]}")"
}

for entry in "${RIG_QEMU_VERSIONS[@]}"; do
  short=${entry%%=*} debver=${entry#*=}
  if [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " == *" $short "* ]]; then
    build_one "$short" "$debver"
  fi
done
