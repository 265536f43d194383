#!/usr/bin/env bash
# Prepares the rig's guest: a Debian cloud kernel and a busybox initramfs.
# Usage: guest.sh [amd64|arm64]   (the guest's Debian architecture; default amd64)
# Idempotent; results are cached in $RIG_CACHE/guest/ (amd64) or
# $RIG_CACHE/guest-<arch>/ (arm64), with the same file names:
#   vmlinuz          the kernel (from linux-image-6.1.0-*-cloud-<arch>; on
#                    arm64 an uncompressed Image, which QEMU's -kernel loads)
#   kernel-version   e.g. 6.1.0-56-cloud-amd64
#   kernel-package   package name and version, e.g. "linux-image-6.1.0-56-cloud-amd64 6.1.192-2"
#   kernel-config    the kernel's /boot/config-*
#   modules/         kernel modules the guest loads (from the same kernel
#                    package), and modules/order, their load order with
#                    dependencies first: qemu_fw_cfg (the guest needs it to
#                    fill QEMU's vmcoreinfo device), virtio_pci and
#                    virtio_mem (for the virtio-mem cases)
#   vmlinux          the kernel's debug vmlinux (for crash and drgn), from the
#                    matching linux-image-*-dbg package (a ~283 MB download of
#                    which only usr/lib/debug/boot/vmlinux-* is kept)
#   vmlinux-package  package name and version of the -dbg package
#   busybox, busybox-package  (not amd64) busybox-static of the guest's
#                    architecture, taken from its package without installing it
#   initramfs.cpio.gz  busybox + tests/rig/init + modules/
#   initramfs.inputs   hash of what went into the initramfs; it is rebuilt
#                      only when that changes
# Packages of another architecture need it in dpkg (setup-apt.sh adds arm64);
# they are only downloaded (apt-get download) and unpacked, never installed.
set -euo pipefail
. "$(dirname "$0")/common.sh"

arch=${1:-amd64}
case "$arch" in
  # amd64 keeps the cache directory it always had, so its cases stay valid.
  amd64) gdir="$RIG_CACHE/guest" pkg_arch="" ;;
  arm64) gdir="$RIG_CACHE/guest-$arch" pkg_arch=":$arch" ;;
  *) log "unknown guest architecture $arch (amd64 or arm64)"; exit 2 ;;
esac
mkdir -p "$gdir"
exec 9>"$gdir/.lock"
flock 9

init_src="$RIG_DIR/init"

tmp=$(mktemp -d "$gdir/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

resolve_kernel_pkg() {
  # A foreign architecture's dependency is printed as NAME:ARCH.
  apt-cache depends "linux-image-cloud-$arch$pkg_arch" 2>/dev/null |
    sed -n "s/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-cloud-$arch\)\(:$arch\)\?\$/\1/p" | head -1
}

# download PKG[=VERSION]: apt-get download into $tmp (apt-get update and one
# retry if apt does not know it).
download() {
  if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$1" >/dev/null); then
    log "apt-get download $1 failed; running apt-get update and retrying"
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$1" >/dev/null)
  fi
}

# Modules the guest's init loads (=m in the cloud kernel); their dependencies
# are added from each module's modinfo "depends=" field.
want_modules="qemu_fw_cfg virtio_pci virtio_mem"

kernel_cached() {
  [ -f "$gdir/vmlinuz" ] && [ -s "$gdir/kernel-version" ] && [ -s "$gdir/kernel-package" ]
}
modules_cached() {
  [ -f "$gdir/modules/order" ] && [ "$(head -1 "$gdir/modules/order")" = "# $want_modules" ]
}

# install_modules DIR: copy $want_modules and their dependencies from the
# unpacked lib/modules/<version> DIR into $gdir/modules, with their load order.
install_modules() {
  local dir=$1 order="" out="$tmp/modules"
  find "$dir" -name '*.ko.xz' -exec xz -d {} +
  find "$dir" -name '*.ko.zst' -exec zstd -q -d --rm {} +
  mkdir -p "$out"
  visit() {
    local m=$1 f d
    case " $order " in *" $m "*) return ;; esac
    f=$(find "$dir" -name "$m.ko" | head -1)
    [ -n "$f" ] || { log "module $m not found in the kernel package"; exit 1; }
    for d in $(tr '\0' '\n' <"$f" | sed -n 's/^depends=//p' | tr ',' ' '); do
      visit "$d"
    done
    order="$order $m"
    install -m 0644 "$f" "$out/$m.ko"
  }
  for m in $want_modules; do visit "$m"; done
  { echo "# $want_modules"; printf '%s\n' $order; } >"$out/order"
  rm -rf "$gdir/modules" && mv "$out" "$gdir/modules"
  log "guest modules:$order"
}

if kernel_cached && modules_cached; then
  log "guest kernel cached: $(cat "$gdir/kernel-version")"
else
  if kernel_cached; then
    # Only the modules are missing: take them from the very same package, so
    # that the kernel (and its debug vmlinux) stay as they are.
    read -r pkg pkg_ver <"$gdir/kernel-package"
    want="$pkg$pkg_arch=$pkg_ver"
  else
    pkg=$(resolve_kernel_pkg)
    if [ -z "$pkg" ]; then
      log "linux-image-cloud-$arch not known to apt; running apt-get update"
      apt-get update -qq
      pkg=$(resolve_kernel_pkg)
    fi
    [ -n "$pkg" ] || { log "cannot resolve the cloud kernel package"; exit 1; }
    want=$pkg$pkg_arch
  fi
  log "downloading $want"
  download "$want"
  deb=$(ls "$tmp"/*.deb)
  mkdir "$tmp/x"
  dpkg-deb --fsys-tarfile "$deb" |
    tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' './boot/config-*' \
      './lib/modules/*/kernel/drivers/firmware/*' './lib/modules/*/kernel/drivers/virtio/*'
  vmlinuz=$(ls "$tmp"/x/boot/vmlinuz-* | head -1)
  kver=${vmlinuz##*/vmlinuz-}
  install_modules "$tmp/x/lib/modules/$kver"
  if ! kernel_cached; then
    install -m 0644 "$tmp"/x/boot/config-* "$gdir/kernel-config"
    install -m 0644 "$vmlinuz" "$gdir/vmlinuz"
    echo "$kver" >"$gdir/kernel-version.tmp" && mv "$gdir/kernel-version.tmp" "$gdir/kernel-version"
    echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >"$gdir/kernel-package.tmp"
    mv "$gdir/kernel-package.tmp" "$gdir/kernel-package"
  fi
  rm -f "$deb"
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
  log "downloading $kpkg-dbg$pkg_arch=$kpkg_ver (~283 MB; only the vmlinux is kept)"
  download "$kpkg-dbg$pkg_arch=$kpkg_ver"
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

if [ -z "$pkg_arch" ]; then
  busybox=/bin/busybox
  [ -x "$busybox" ] || { log "$busybox missing (install busybox-static)"; exit 1; }
else
  # Another architecture's busybox: unpacked from busybox-static:ARCH, once.
  busybox="$gdir/busybox"
  if [ -x "$busybox" ] && [ -s "$gdir/busybox-package" ]; then
    log "guest busybox cached: $(cat "$gdir/busybox-package")"
  else
    log "downloading busybox-static$pkg_arch"
    download "busybox-static$pkg_arch"
    bb_deb=$(ls "$tmp"/busybox-static_*.deb)
    mkdir "$tmp/bb"
    dpkg-deb -x "$bb_deb" "$tmp/bb"
    bb=$(find "$tmp/bb" -name busybox -type f -perm -u+x | head -1)
    [ -n "$bb" ] || { log "no busybox binary in $bb_deb"; exit 1; }
    install -m 0755 "$bb" "$busybox.tmp" && mv "$busybox.tmp" "$busybox"
    echo "$(dpkg-deb -f "$bb_deb" Package) $(dpkg-deb -f "$bb_deb" Version)" >"$gdir/busybox-package"
    rm -rf "$bb_deb" "$tmp/bb"
    log "guest busybox: $(cat "$gdir/busybox-package")"
  fi
fi
[ -f "$init_src" ] || { log "$init_src missing"; exit 1; }
# Bump the layout version when the way the image is put together changes.
inputs="layout=2
init=$(sha256sum <"$init_src" | cut -d' ' -f1)
busybox=$(sha256sum <"$busybox" | cut -d' ' -f1)
modules=$(cd "$gdir/modules" && cat order $(grep -v '^#' order | sed 's/$/.ko/') | sha256sum | cut -d' ' -f1)"
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
install -m 0644 "$gdir"/modules/* "$root/lib/modules/"
# The kernel's built-in rootfs already has /dev/console; this is a fallback.
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
  gzip -9n >"$tmp/initramfs.cpio.gz"
mv "$tmp/initramfs.cpio.gz" "$gdir/initramfs.cpio.gz"
printf '%s\n' "$inputs" >"$gdir/initramfs.inputs.tmp"
mv "$gdir/initramfs.inputs.tmp" "$gdir/initramfs.inputs"
log "guest initramfs: $gdir/initramfs.cpio.gz ($(stat -c %s "$gdir/initramfs.cpio.gz") bytes)"
