#!/usr/bin/env bash
# Prepares the rig's guest: a Debian cloud kernel and a busybox initramfs.
# Idempotent; results are cached in $RIG_CACHE/guest/:
#   vmlinuz          the kernel (from linux-image-6.1.0-*-cloud-amd64)
#   kernel-version   e.g. 6.1.0-56-cloud-amd64
#   kernel-package   package name and version, e.g. "linux-image-6.1.0-56-cloud-amd64 6.1.192-2"
#   kernel-config    the kernel's /boot/config-*
#   qemu_fw_cfg.ko   the fw_cfg module (=m in the cloud kernel; the guest
#                    needs it to fill QEMU's vmcoreinfo device)
#   vmlinux          the kernel's debug vmlinux (for crash and drgn), from the
#                    matching linux-image-*-dbg package (a ~283 MB download of
#                    which only usr/lib/debug/boot/vmlinux-* is kept)
#   vmlinux-package  package name and version of the -dbg package
#   initramfs.cpio.gz  busybox + tests/rig/init (+ qemu_fw_cfg.ko)
#   initramfs.inputs   hash of what went into the initramfs; it is rebuilt
#                      only when that changes
set -euo pipefail
. "$(dirname "$0")/common.sh"

gdir="$RIG_CACHE/guest"
mkdir -p "$gdir"
exec 9>"$gdir/.lock"
flock 9

busybox=/bin/busybox
init_src="$RIG_DIR/init"

tmp=$(mktemp -d "$gdir/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

resolve_kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-amd64\)$/\1/p' | head -1
}

if [ -f "$gdir/vmlinuz" ] && [ -s "$gdir/kernel-version" ] && [ -s "$gdir/kernel-package" ] &&
   [ -f "$gdir/qemu_fw_cfg.ko" ]; then
  log "guest kernel cached: $(cat "$gdir/kernel-version")"
else
  pkg=$(resolve_kernel_pkg)
  if [ -z "$pkg" ]; then
    log "linux-image-cloud-amd64 not known to apt; running apt-get update"
    apt-get update -qq
    pkg=$(resolve_kernel_pkg)
  fi
  [ -n "$pkg" ] || { log "cannot resolve the cloud kernel package"; exit 1; }
  log "downloading $pkg"
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
  deb=$(ls "$tmp"/*.deb)
  mkdir "$tmp/x"
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' './boot/config-*' \
      './lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko*'
  vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -1)
  kver=${vmlinuz##*/vmlinuz-}
  ko=$(find "$tmp/x/lib/modules" -name 'qemu_fw_cfg.ko*' | head -1)
  case "$ko" in
    *.ko) ;;
    *.ko.xz) xz -d "$ko" && ko=${ko%.xz} ;;
    *.ko.zst) zstd -q -d --rm "$ko" && ko=${ko%.zst} ;;
    *) log "qemu_fw_cfg module not found in $pkg"; exit 1 ;;
  esac
  install -m 0644 "$tmp"/x/boot/config-* "$gdir/kernel-config"
  install -m 0644 "$ko" "$gdir/qemu_fw_cfg.ko"
  install -m 0644 "$vmlinuz" "$gdir/vmlinuz"
  echo "$kver" >"$gdir/kernel-version.tmp" && mv "$gdir/kernel-version.tmp" "$gdir/kernel-version"
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >"$gdir/kernel-package.tmp"
  mv "$gdir/kernel-package.tmp" "$gdir/kernel-package"
  log "guest kernel $kver ($(cat "$gdir/kernel-package"))"
fi

# The debug vmlinux must come from the -dbg package of exactly the same
# version as the kernel package.
read -r kpkg kpkg_ver <"$gdir/kernel-package"
want_dbg="$kpkg-dbg $kpkg_ver"
if [ -f "$gdir/vmlinux" ] && [ -f "$gdir/vmlinux-package" ] &&
   [ "$(cat "$gdir/vmlinux-package")" = "$want_dbg" ]; then
  log "guest debug vmlinux cached: $want_dbg"
else
  log "downloading $kpkg-dbg=$kpkg_ver (~283 MB; only the vmlinux is kept)"
  if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg-dbg=$kpkg_ver" >/dev/null); then
    log "apt-get download failed; running apt-get update and retrying"
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg-dbg=$kpkg_ver" >/dev/null)
  fi
  dbg_deb=$(ls "$tmp"/"$kpkg"-dbg_*.deb)
  mkdir -p "$tmp/dbg"
  dpkg-deb --fsys-tarfile "$dbg_deb" |
    tar -x -C "$tmp/dbg" --wildcards './usr/lib/debug/boot/vmlinux-*'
  rm -f "$dbg_deb"
  vmlinux=$(ls "$tmp"/dbg/usr/lib/debug/boot/vmlinux-* | head -1)
  [ -n "$vmlinux" ] || { log "no usr/lib/debug/boot/vmlinux-* in $kpkg-dbg"; exit 1; }
  [ "${vmlinux##*/vmlinux-}" = "$(cat "$gdir/kernel-version")" ] ||
    { log "debug vmlinux $vmlinux does not match kernel $(cat "$gdir/kernel-version")"; exit 1; }
  install -m 0644 "$vmlinux" "$gdir/vmlinux.tmp"
  mv "$gdir/vmlinux.tmp" "$gdir/vmlinux"
  rm -rf "$tmp/dbg"
  echo "$want_dbg" >"$gdir/vmlinux-package.tmp" && mv "$gdir/vmlinux-package.tmp" "$gdir/vmlinux-package"
  log "guest debug vmlinux: $gdir/vmlinux ($(stat -c %s "$gdir/vmlinux") bytes)"
fi

[ -x "$busybox" ] || { log "$busybox missing (install busybox-static)"; exit 1; }
[ -f "$init_src" ] || { log "$init_src missing"; exit 1; }
# Bump the layout version when the way the image is put together changes.
inputs="layout=1
init=$(sha256sum <"$init_src" | cut -d' ' -f1)
busybox=$(sha256sum <"$busybox" | cut -d' ' -f1)
qemu_fw_cfg.ko=$(sha256sum <"$gdir/qemu_fw_cfg.ko" | cut -d' ' -f1)"
if [ -f "$gdir/initramfs.cpio.gz" ] && [ -f "$gdir/initramfs.inputs" ] &&
   [ "$(cat "$gdir/initramfs.inputs")" = "$inputs" ]; then
  log "guest initramfs up to date"
  exit 0
fi
log "building guest initramfs"
root="$tmp/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,fill,tmp,lib/modules}
install -m 0755 "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$init_src" "$root/init"
install -m 0644 "$gdir/qemu_fw_cfg.ko" "$root/lib/modules/qemu_fw_cfg.ko"
# The kernel's built-in rootfs already has /dev/console; this is a fallback.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
  gzip -9n >"$tmp/initramfs.cpio.gz"
mv "$tmp/initramfs.cpio.gz" "$gdir/initramfs.cpio.gz"
printf '%s\n' "$inputs" >"$gdir/initramfs.inputs.tmp"
mv "$gdir/initramfs.inputs.tmp" "$gdir/initramfs.inputs"
log "guest initramfs: $gdir/initramfs.cpio.gz ($(stat -c %s "$gdir/initramfs.cpio.gz") bytes)"
