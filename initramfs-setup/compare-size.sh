#!/usr/bin/env bash
# Builds bootc-initramfs-setup and its peer, composefs-setup-root 0.9.4 from crates.io
# (--no-default-features), the same way (static glibc, opt-level z, fat LTO, one codegen
# unit, panic=abort, stripped), and prints both sizes and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
initramfs-setup/build-static.sh >/dev/null
ours=$(stat -c %s "target/$target/initramfs/bootc-initramfs-setup")

peer_root=${BOOTC_CACHE:-/var/cache/bootc-dev}/peer-composefs-setup-root
OPENSSL_STATIC=1 RUSTFLAGS="-C target-feature=+crt-static" \
CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install --quiet --locked composefs-setup-root --version 0.9.4 \
        --no-default-features --target "$target" --root "$peer_root"
peer=$(stat -c %s "$peer_root/bin/composefs-setup-root")

echo "bootc-initramfs-setup: $ours bytes"
echo "composefs-setup-root 0.9.4: $peer bytes"
awk -v a="$ours" -v b="$peer" 'BEGIN { printf "ratio (ours / peer): %.3f\n", a / b }'
