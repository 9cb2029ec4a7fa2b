#!/usr/bin/env bash
# Builds the static, size-optimised bootc-initramfs-setup that goes into initramfs
# images, and prints its size. glibc static (crt-static), OpenSSL linked statically.
set -euo pipefail
cd "$(dirname "$0")/.."
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
