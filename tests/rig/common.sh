# Shared settings for the rig scripts; sourced, not run.
# The cache lives outside the work tree so that CI's fresh clones reuse it.
RIG_CACHE="${QEMU_VMCORE_RIG_CACHE:-/var/cache/qemu-vmcore-rig}"
RIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# name=debian-source-version; the short names are what tests and cases use.
RIG_QEMU_VERSIONS=(
  "7.2=1:7.2+dfsg-7+deb12u18"
  "10.0=1:10.0.13+ds-0+deb13u1"
)
mkdir -p "$RIG_CACHE"
log() { printf '[rig] %s\n' "$*" >&2; }
