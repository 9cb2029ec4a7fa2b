#!/bin/bash
# Benchmarks of bootc against its peers (tar, OSTree, mkfs.erofs, composefs-setup-root),
# written to bench/RESULTS.md as medians, ranges and ratios.
#
#   bench/run.sh [--quick] [--cases import,incremental,storage,initramfs,etc,boot,incremental-gen]
#                [--etc-sizes 1000,10000,50000] [--runs N] [--baseline OTHER-BOOTC] [--no-perf]
#                [--reuse-image] [--baseline-setup OTHER-INITRAMFS-SETUP]
#
# --cases picks cases (default: all but incremental-gen). `etc` and `incremental-gen`
# build their own small images, so with only those the mkosi image and the peer
# composefs-setup-root are not built (only the release bootc). --baseline runs another
# bootc binary (say, a release build of an earlier commit) as an extra tool in those two
# cases, alternating with ours round by round: a before/after in one sitting, e.g.
#   bench/run.sh --quick --no-perf --cases etc,incremental-gen --etc-sizes 10000 \
#       --baseline /var/tmp/bootc-before
# --baseline-setup does the same with another static bootc-initramfs-setup in the
# initramfs case.
#
# --reuse-image: take the test OS image already in target/vm-images (e.g. a copy of
# CI's) as it is, building only our binaries (initramfs-setup/build-static.sh
# --with-bootc): mkosi/build.sh would rebuild the image whenever bootc changed, and the
# image's own bootc plays no part in the measurements. (For `boot` the image's bootc and
# bootc-initramfs-setup are the ones booted: with --reuse-image, those of the copy.)
#
# Run as root on Debian 12. It installs the tools it compares against (ostree, time, strace,
# erofs-utils, zstd, linux-perf) from Debian, builds its inputs (the static
# bootc-initramfs-setup and release bootc via mkosi/build.sh, the mkosi test OS image,
# gzip and zstd copies of it, the peer composefs-setup-root 0.9.x from crates.io into
# the scratch directory) and then runs every case with its peers alternating: one
# warm-up and 5 measured runs each (--quick: one warm-up and 3, for trying it out;
# --quick does not write bench/RESULTS.md but bench/RESULTS.quick.md).
#
# `boot` (issue 14, case 5: the composefs root vs the same image on a plain ext4 root)
# boots QEMU (TCG) through the VM harness, `target/debug/bootc-vm --no-build bench-boot
# --runs N --json FILE` (tests-vm/src/bench_boot.rs), which this builds
# (`cargo build -p bootc-tests-vm`); its tools (qemu, OVMF, mtools, sfdisk) are the VM
# tests' (tests-vm/install-deps.sh), not installed here. One boot takes a minute or two.
#
# The hand-written before/after notes live in bench/HISTORY.md: RESULTS.md is rewritten
# whole by every full run.
#
# Scratch: $BOOTC_BENCH_DIR (default /var/tmp/bootc-bench): loop-file filesystems, the
# re-packed layouts, the peer's build. Nothing outside it and the workspace's target/
# is written.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ws=$(cd "$here/.." && pwd)
PATH="$PATH:/usr/sbin:/sbin"
[[ $(id -u) == 0 ]] || { echo "bench/run.sh: run as root (it mounts loop files)" >&2; exit 1; }

# 1. The peers and measuring tools.
need=()
command -v ostree >/dev/null || need+=(ostree)
[[ -x /usr/bin/time ]] || need+=(time)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v perf >/dev/null || need+=(linux-perf)
command -v unshare >/dev/null || need+=(util-linux)
command -v strace >/dev/null || need+=(strace)
if (( ${#need[@]} )); then
    echo "bench/run.sh: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi

# 2. The inputs: our binaries and the test OS image (a no-op when nothing changed).
cases=import,incremental,storage,initramfs,etc,boot
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --cases) cases=${args[i + 1]:-} ;;
        --cases=*) cases=${args[i]#--cases=} ;;
    esac
done
reuse_image=0
[[ " $* " == *" --reuse-image "* ]] && reuse_image=1
image_cases=',(import|incremental|storage|initramfs|boot),'
if [[ ,$cases, =~ $image_cases ]] && (( reuse_image )); then
    [[ -e $ws/target/vm-images/oci/index.json ]] \
        || { echo "bench/run.sh: --reuse-image: no $ws/target/vm-images/oci" >&2; exit 1; }
    echo "bench/run.sh: building the binaries (initramfs-setup/build-static.sh --with-bootc), reusing the test image" >&2
    "$ws/initramfs-setup/build-static.sh" --with-bootc >&2
elif [[ ,$cases, =~ $image_cases ]]; then
    echo "bench/run.sh: building the binaries and the test image (mkosi/build.sh)" >&2
    "$ws/mkosi/build.sh" >&2
else
    echo "bench/run.sh: building the release bootc (cases $cases need no OS image)" >&2
    (cd "$ws" && cargo build --quiet --locked --release -p bootc) >&2
fi

if [[ ,$cases, == *,boot,* ]]; then
    for tool in qemu-system-x86_64 mcopy sfdisk mkfs.ext4; do
        command -v "$tool" >/dev/null \
            || { echo "bench/run.sh: boot: $tool is missing (run tests-vm/install-deps.sh)" >&2; exit 1; }
    done
    [[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ]] \
        || { echo "bench/run.sh: boot: OVMF is missing (run tests-vm/install-deps.sh)" >&2; exit 1; }
    echo "bench/run.sh: building the VM harness (cargo build -p bootc-tests-vm)" >&2
    (cd "$ws" && cargo build --quiet --locked -p bootc-tests-vm) >&2
fi

# 3. The peer initramfs binary, built like ours (static glibc, size-optimised), outside
# the repository.
scratch=${BOOTC_BENCH_DIR:-/var/tmp/bootc-bench}
mkdir -p "$scratch"
peer_root=$scratch/peer-composefs-setup-root
initramfs=0
[[ ,$cases, == *,initramfs,* ]] && initramfs=1
if (( initramfs )) && [[ ! -x $peer_root/bin/composefs-setup-root ]]; then
    echo "bench/run.sh: building composefs-setup-root 0.9.x from crates.io" >&2
    OPENSSL_STATIC=1 RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
    CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install --quiet --locked composefs-setup-root --version '^0.9' \
            --no-default-features --target x86_64-unknown-linux-gnu --root "$peer_root" >&2
fi

# 4. For the profiles (unless --no-perf): both initramfs binaries built the same way but
# with their symbols kept, in the scratch directory; the measured ones stay stripped.
if (( initramfs )) && [[ " $* " != *" --no-perf "* ]]; then
    # Always through cargo (a no-op when up to date): a build kept from an earlier
    # checkout would profile code that is no longer ours.
    echo "bench/run.sh: building bootc-initramfs-setup with symbols (for perf)" >&2
    (cd "$ws" && OPENSSL_STATIC=1 RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_PROFILE_INITRAMFS_STRIP=false CARGO_TARGET_DIR=$scratch/unstripped-ours \
        cargo build --quiet --locked --profile initramfs -p bootc-initramfs-setup \
            --target x86_64-unknown-linux-gnu) >&2
    if [[ ! -x $scratch/unstripped-peer/bin/composefs-setup-root ]]; then
        echo "bench/run.sh: building composefs-setup-root with symbols (for perf)" >&2
        OPENSSL_STATIC=1 RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=fat \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort \
        CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=0 \
            cargo install --quiet --locked composefs-setup-root --version '^0.9' \
                --no-default-features --target x86_64-unknown-linux-gnu \
                --root "$scratch/unstripped-peer" >&2
    fi
fi

exec python3 "$here/bench.py" --workspace "$ws" --scratch "$scratch" \
    --peer-setup-root "$peer_root/bin/composefs-setup-root" --argv "bench/run.sh $*" "$@"
