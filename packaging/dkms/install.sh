#!/bin/sh
# SPDX-License-Identifier: GPL-2.0 OR MIT
# Registers ksight.ko with DKMS and builds and installs it for a kernel.
#   packaging/dkms/install.sh [KERNEL]      # default: the running kernel
# Needs: dkms, and the kernel's headers (linux-headers-<version> on Debian).
# Undo: dkms remove ksight/<version> --all; rm -r /usr/src/ksight-<version>
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../../kmod-c
kernel=${1:-$(uname -r)}
version=$(sed -n 's/^MODULE_VERSION("\(.*\)");/\1/p' "$src/ks_main.c")
[ -n "$version" ] || { echo "install.sh: no MODULE_VERSION in $src/ks_main.c" >&2; exit 1; }
dest=/usr/src/ksight-$version

rm -rf "$dest"
mkdir -p "$dest"
cp "$src"/Kbuild "$src"/Makefile "$src"/*.c "$src"/*.h "$dest"/
sed "s/@VERSION@/$version/" "$here/dkms.conf" > "$dest/dkms.conf"

# `add` fails when this version is already registered: that is fine.
dkms add -m ksight -v "$version" 2>/dev/null || true
dkms build -m ksight -v "$version" -k "$kernel"
dkms install -m ksight -v "$version" -k "$kernel"
echo "ksight $version installed for $kernel: modprobe ksight"
