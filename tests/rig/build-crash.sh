#!/usr/bin/env bash
# Builds crash for arm64 guests on this x86_64 host (`make target=ARM64`: an
# x86_64 binary whose embedded gdb reads aarch64 kernels), from Debian's
# source package. Debian's crash binary (/usr/bin/crash) only reads x86_64.
# The source package carries gdb as its second tarball (orig-gdb) and a patch
# that makes crash's Makefile use it instead of downloading gdb, so the build
# needs no network: it runs in an empty network namespace when unshare can
# make one, which turns any download attempt into a failure.
# Result: $RIG_CACHE/crash-arm64/crash (stripped, ~14 MB) and a stamp naming
#         the Debian version and the target, so re-runs are free. The build
#         tree (~400 MB) is deleted afterwards, and build.log unless the
#         build failed.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# sid's: bookworm's 8.0.2 source answers 404 from the archive and trixie's
# 8.0.6 lacks its .dsc there. 9.0.2 embeds gdb 16.3.
debver="9.0.2+~16.3-1"
target=ARM64
dir="$RIG_CACHE/crash-arm64"
stamp="crash=$debver target=$target cflags=-O1"

if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$stamp" ] && [ -x "$dir/crash" ]; then
  log "crash $debver for $target already built"
  exit 0
fi
log "building crash for $target from Debian source crash=$debver"
rm -rf "$dir" && mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get source -qq --only-source "crash=$debver" >/dev/null)
src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'crash-*' | head -1)
[ -f "$src/gdb/gdb/symtab.c" ] || { log "no gdb source in $src"; exit 1; }

offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
else
  log "unshare -n is not available: building with the network reachable"
fi
# crash's configure would pass gdb --target=aarch64-elf-linux alone; the
# rest leaves out what crash never uses: gdb's TUI, CTF type info,
# libbacktrace (for gdb's own crash reports) and debuginfod (a downloader).
gdb_conf="--target=aarch64-elf-linux --disable-tui --disable-libctf --disable-libbacktrace --without-debuginfod"
# lzo snappy zstd: goals that add those libraries (the kdump-compressed
# formats the tool writes) to the one build. CFLAGS -O1 without -g: gdb compiles
# faster (it runs beside the QEMU builds on a cold machine), and the binary is
# stripped anyway. MAKEINFO=true reaches gdb's make
# (command-line variables pass to sub-makes) and skips its manual, which the
# Debian tarball ships as texinfo only; crash never needs it.
start=$SECONDS
(cd "$src" && CFLAGS=-O1 CXXFLAGS=-O1 "${offline[@]}" \
    make -j"$(nproc)" target="$target" GDB_CONF_FLAGS="$gdb_conf" MAKEINFO=true \
      lzo snappy zstd >"$dir/build.log" 2>&1) || {
  tail -30 "$dir/build.log" >&2; exit 1; }
[ -x "$src/crash" ] || { tail -30 "$dir/build.log" >&2; log "no crash binary"; exit 1; }
install -s -m 0755 "$src/crash" "$dir/crash"
"$dir/crash" --version >/dev/null
# gdb's configured target, the one string that tells this build from Debian's
grep -aq 'aarch64-elf-linux' "$dir/crash" || { log "$dir/crash has no aarch64 gdb"; exit 1; }
rm -f "$dir/build.log"
echo "$stamp" >"$dir/stamp"
log "crash for $target built in $((SECONDS - start)) s: $dir/crash"
