#!/bin/bash
# Install the Debian packages the VM tests need: the project's .ci/install-deps is the one
# list (it adds bookworm-backports when missing). What the VM tests use from it:
#   backports: mkosi (+ bubblewrap, systemd-container), qemu-system-x86, systemd-boot,
#              systemd-boot-efi, dracut
#   bookworm:  ovmf, e2fsprogs (mkfs.ext4 -d, debugfs, dumpe2fs), mtools, fdisk (sfdisk),
#              util-linux (losetup), fsverity, dosfstools, python3, zstd, cpio,
#              debian-archive-keyring, python3-pefile (ukify), sbsigntool + openssl (the
#              Secure Boot variants, signed with ovmf's snakeoil key)
set -euo pipefail
exec "$(dirname "$0")/../.ci/install-deps"
