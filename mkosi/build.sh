#!/bin/bash
# Build the VM test OS image and emit it as an OCI layout with tags v1, v2 and v2-bad.
#
#   mkosi/build.sh [--force]
#
# Output (under $BOOTC_VM_OUT, default <workspace>/target/vm-images):
#   oci/            OCI image layout: tags v1 (one layer: mkosi's rootfs), v2 (v1 plus a
#                   small layer from mkosi/v2/ and mkosi/v2.remove) and v2-bad (v1 plus a
#                   layer from mkosi/v2-bad/: a marker that fails the image's health
#                   check), uncompressed layers
#   kver            the image's kernel release
#   vmlinuz, initramfs.img   copies of the image's /usr/lib/modules/<kver>/ boot files
#   build-stamp     hash of the inputs: a later run with the same inputs does nothing
#   mkosi.log       mkosi's output
#
# Inputs: this directory, the static bootc-initramfs-setup and the release `bootc` (both
# built here by initramfs-setup/build-static.sh --with-bootc unless BOOTC_SETUP_BIN and
# BOOTC_BIN name them; BOOTC_BIN=none leaves bootc out of the image), dracut/51bootc and
# systemd/*.service.
# Packages are cached in ${BOOTC_CACHE:-/var/cache/bootc-dev}/mkosi-packages when that
# directory can be created; nothing requires it.
# Needs: mkosi (24, bookworm-backports), python3, cargo, and apt access to the Debian mirror.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ws=$(cd "$here/.." && pwd)
out=${BOOTC_VM_OUT:-$ws/target/vm-images}
force=0
[[ ${1:-} == --force ]] && force=1
log() { printf 'mkosi/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
PATH="$PATH:/usr/sbin:/sbin"
command -v mkosi >/dev/null || die "mkosi is not installed (apt-get install -t bookworm-backports mkosi)"

t0=$(date +%s)
mkdir -p "$out"

# 1. Our binaries: given (BOOTC_SETUP_BIN and BOOTC_BIN, e.g. by tests-vm/ci.sh), or built
# by initramfs-setup/build-static.sh, the one definition of how they are built.
setup_bin=${BOOTC_SETUP_BIN:-}
bootc_bin=${BOOTC_BIN:-}
if [[ -z $setup_bin ]]; then
    build_args=()
    [[ -z $bootc_bin ]] && build_args=(--with-bootc)
    log "building our binaries (initramfs-setup/build-static.sh ${build_args[*]})"
    "$ws/initramfs-setup/build-static.sh" "${build_args[@]}" >&2 \
        || die "initramfs-setup/build-static.sh failed (BOOTC_BIN=none leaves bootc out)"
    setup_bin=$ws/target/x86_64-unknown-linux-gnu/initramfs/bootc-initramfs-setup
    bootc_bin=${bootc_bin:-$ws/target/release/bootc}
elif [[ -z $bootc_bin ]]; then
    die "BOOTC_SETUP_BIN is set but BOOTC_BIN is not: give both (or neither)"
fi
[[ -x $setup_bin ]] || die "no executable $setup_bin"
[[ $bootc_bin == none || -x $bootc_bin ]] || die "no executable $bootc_bin"

# 2. Stage them as an extra tree.
stage=$out/stage
rm -rf "$stage"
install -D -m 0755 "$setup_bin" "$stage/usr/lib/bootc/initramfs-setup"
if [[ $bootc_bin != none ]]; then
    install -D -m 0755 "$bootc_bin" "$stage/usr/bin/bootc"
fi
install -d "$stage/usr/lib/dracut/modules.d/51bootc" "$stage/usr/lib/systemd/system"
cp -a "$ws/dracut/51bootc/." "$stage/usr/lib/dracut/modules.d/51bootc/"
for u in "$ws"/systemd/*.service "$ws"/systemd/*.timer; do
    [[ -e $u ]] && install -m 0644 "$u" "$stage/usr/lib/systemd/system/"
done

# 3. Skip the build when nothing changed.
stamp=$( (cd "$here" && find . -type f -print0 | sort -z | xargs -0 sha256sum; \
          cd "$stage" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
if [[ $force == 0 && -e $out/build-stamp && $(cat "$out/build-stamp") == "$stamp" && -e $out/oci/index.json ]]; then
    log "image inputs unchanged, reusing $out/oci"
    exit 0
fi
rm -f "$out/build-stamp"

# 4. mkosi.
cache_args=()
cache=${BOOTC_CACHE:-/var/cache/bootc-dev}/mkosi-packages
if mkdir -p "$cache" 2>/dev/null; then
    cache_args=(--cache-dir="$cache")
fi
rm -rf "$out/mkosi"
mkdir -p "$out/mkosi"
log "running mkosi"
t1=$(date +%s)
if ! mkosi -C "$here" --force --output-dir="$out/mkosi" --extra-tree="$stage" "${cache_args[@]}" build \
        >"$out/mkosi.log" 2>&1; then
    tail -n 40 "$out/mkosi.log" >&2
    die "mkosi failed (full log: $out/mkosi.log)"
fi
t2=$(date +%s)
tree=$out/mkosi/bootc-test
[[ -d $tree/usr ]] || die "mkosi produced no $tree"
rootfs=$out/mkosi/bootc-test.tar
# A pax tar with xattrs and numeric owners, sorted (reproducible order), no sparse entries.
tar --create --file "$rootfs" --directory "$tree" --format=pax --xattrs --xattrs-include='*' \
    --numeric-owner --sort=name --pax-option=delete=atime,delete=ctime .

# 5. Boot files for direct kernel boot (installer VM), then the OCI layout.
# (No `| head`: with pipefail its early exit would fail the pipeline with SIGPIPE.)
kver=$(tar -tf "$rootfs" | sed -nE 's#^\./usr/lib/modules/([^/]+)/vmlinuz$#\1#p')
kver=${kver%%$'\n'*}
[[ -n $kver ]] || die "no usr/lib/modules/<kver>/vmlinuz in the image"
tar -xf "$rootfs" -C "$out" --strip-components=5 \
    "./usr/lib/modules/$kver/vmlinuz" "./usr/lib/modules/$kver/initramfs.img"
echo "$kver" > "$out/kver"
python3 "$here/oci-layout.py" "$rootfs" "$here/v2" "$here/v2.remove" "$here/v2-bad" "$out/oci" >&2
rm -rf "$out/mkosi"
echo "$stamp" > "$out/build-stamp"
t3=$(date +%s)
log "kernel $kver; mkosi $((t2 - t1)) s, total $((t3 - t0)) s"
log "image: $(du -sh --apparent-size "$out/oci" | cut -f1) OCI layout, initramfs $(du -h "$out/initramfs.img" | cut -f1)"
echo "$out/oci"
