#!/usr/bin/env bash
# Builds the static, size-optimised bootc-initramfs-setup that goes into initramfs
# images, and prints its size. glibc static (crt-static), OpenSSL linked statically.
#
#   initramfs-setup/build-static.sh [--with-bootc]
#
# --with-bootc also builds the release `bootc` (target/release/bootc): the two binaries
# the VM test image ships, built here once with these flags. CI runs this as one phase;
# tests-vm/ci.sh --no-build and mkosi/build.sh (BOOTC_SETUP_BIN, BOOTC_BIN) then take the
# binaries as they are instead of invoking cargo again with flags of their own.
#
# Output: target/x86_64-unknown-linux-gnu/initramfs/bootc-initramfs-setup (profile
# `initramfs`: opt-level z, fat LTO, panic=abort, stripped) and, with --with-bootc,
# target/release/bootc. The two share no compiled crate: the profiles and the target
# flags differ, so cargo compiles their common dependencies once for each.
set -euo pipefail
cd "$(dirname "$0")/.."
with_bootc=0
for a in "$@"; do
    case $a in
        --with-bootc) with_bootc=1 ;;
        *) echo "usage: initramfs-setup/build-static.sh [--with-bootc]" >&2; exit 2 ;;
    esac
done
target=x86_64-unknown-linux-gnu
OPENSSL_STATIC=1 RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --profile initramfs -p bootc-initramfs-setup --target "$target"
bin=target/$target/initramfs/bootc-initramfs-setup
size=$(stat -c %s "$bin")
echo "$bin: $size bytes"
# The binary must not need a dynamic loader: it runs before the root is mounted.
if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
fi
if [[ $with_bootc == 1 ]]; then
    cargo build --locked --release -p bootc
    echo "target/release/bootc: $(stat -c %s target/release/bootc) bytes"
fi
