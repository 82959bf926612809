#!/usr/bin/env bash
# What the emulated-RUN tests need beyond Debian packages (called by `make setup`):
#  * busybox-static for arm64, downloaded (not installed: it would replace the host's)
#    to target/testdeps/busybox-static_arm64.deb, which needs arm64 in dpkg's list;
#  * the kernel's binfmt_misc mounted and qemu-user-static's aarch64 handler registered
#    (Debian registers it at install only where binfmt_misc is already mounted). The
#    handler's F flag opens the emulator now, so it also runs inside containers.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=target/testdeps/busybox-static_arm64.deb
if [ ! -s "$deb" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || {
    dpkg --add-architecture arm64
    apt-get update -qq
  }
  mkdir -p target/testdeps
  tmp=$(mktemp -d)
  # apt's sandbox user cannot write to a root-owned temp dir: let it.
  chmod 777 "$tmp"
  (cd "$tmp" && apt-get download -qq busybox-static:arm64)
  mv "$tmp"/busybox-static_*_arm64.deb "$deb"
  rm -rf "$tmp"
fi
binfmt=/proc/sys/fs/binfmt_misc
[ -e $binfmt/register ] || mount -t binfmt_misc binfmt_misc $binfmt
[ -e $binfmt/qemu-aarch64 ] || cat /usr/lib/binfmt.d/qemu-aarch64.conf > $binfmt/register
