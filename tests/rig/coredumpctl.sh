#!/usr/bin/env bash
# Provides systemd's coredumpctl for the tests, without installing
# systemd-coredump: installing it points kernel.core_pattern at
# systemd-coredump, which needs a running systemd (there is none here) and
# would take the rig's cores away. Prints the binary's path.
set -euo pipefail
. "$(dirname "$0")/common.sh"
dir="$RIG_CACHE/systemd"
bin="$dir/usr/bin/coredumpctl"
ver=$(dpkg-query -W -f '${Version}' libsystemd-shared 2>/dev/null || true)
if [ -x "$bin" ] && [ "$(cat "$dir/version" 2>/dev/null)" = "$ver" ]; then
  echo "$bin"
  exit 0
fi
[ -n "$ver" ] || { log "libsystemd-shared is not installed (run setup-apt.sh)"; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "systemd-coredump=$ver" >/dev/null)
dpkg-deb --fsys-tarfile "$tmp"/systemd-coredump_*.deb | tar -x -C "$dir" ./usr/bin/coredumpctl
echo "$ver" >"$dir/version"
log "coredumpctl $ver extracted to $bin"
echo "$bin"
