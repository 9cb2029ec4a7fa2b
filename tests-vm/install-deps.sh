#!/bin/bash
# Install the Debian packages the VM tests need (bookworm with bookworm-backports in the
# apt sources). CI's image installs the same list; ci.sh itself installs nothing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q -t bookworm-backports mkosi qemu-system-x86 ovmf
apt-get install -y -q e2fsprogs dosfstools mtools fdisk util-linux fsverity \
    systemd-boot systemd-boot-efi python3 zstd cpio debian-archive-keyring \
    libssl-dev pkg-config zlib1g-dev
