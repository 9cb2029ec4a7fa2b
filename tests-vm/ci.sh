#!/bin/bash
# The VM phase of CI (after the unit and host tests): build the test image, run every
# VM scenario, print each phase's duration. Installs nothing: the packages are listed in
# tests-vm/install-deps.sh (CI installs them).
#
#   tests-vm/ci.sh [--no-build]
#
# Builds the static bootc-initramfs-setup and the release bootc with
# initramfs-setup/build-static.sh --with-bootc, and the harness. --no-build takes them as
# they are (.ci/test built them in earlier phases) and runs no cargo at all.
#
# Exit status: non-zero if a scenario failed. A scenario that returns pending prints
# `SKIP: <reason>` and does not fail the run, except under CI=true, where it fails it:
# CI cannot pass with a scenario skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ws=$(cd "$here/.." && pwd)
cd "$ws"
PATH="$PATH:/usr/sbin:/sbin"
build=1
for a in "$@"; do
    case $a in
        --no-build) build=0 ;;
        *) echo "usage: tests-vm/ci.sh [--no-build]" >&2; exit 2 ;;
    esac
done

phase() { printf '\n##### %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
t0=$(date +%s)

for tool in mkosi qemu-system-x86_64 mkfs.ext4 debugfs sfdisk fsverity losetup python3 strip; do
    command -v "$tool" >/dev/null || { echo "ci.sh: $tool is missing (run tests-vm/install-deps.sh)" >&2; exit 1; }
done
[[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ]] || { echo "ci.sh: OVMF is missing (apt-get install ovmf)" >&2; exit 1; }

export BOOTC_SETUP_BIN=$ws/target/x86_64-unknown-linux-gnu/initramfs/bootc-initramfs-setup
export BOOTC_BIN=$ws/target/release/bootc
# The debug build of the same bootc (it honours BOOTC_FAULT_AT): upgrade's power cuts
# run it as the guest's finalize. .ci/test's build phase (--workspace) builds it.
export BOOTC_DEBUG_BIN=$ws/target/debug/bootc
harness=$ws/target/debug/bootc-vm
if [[ $build == 1 ]]; then
    phase "build our binaries + harness"
    t=$(date +%s)
    initramfs-setup/build-static.sh --with-bootc >/dev/null
    cargo build -q --locked -p bootc-tests-vm -p bootc
    echo "phase cargo-build: $(( $(date +%s) - t )) s"
fi
for f in "$BOOTC_SETUP_BIN" "$BOOTC_BIN" "$BOOTC_DEBUG_BIN" "$harness"; do
    [[ -x $f ]] || { echo "ci.sh: $f is missing (run without --no-build)" >&2; exit 1; }
done

phase "image build (mkosi)"
t=$(date +%s)
mkosi/build.sh >/dev/null
echo "phase image-build: $(( $(date +%s) - t )) s"

phase "VM scenarios"
t=$(date +%s)
rc=0
"$harness" --no-build scenarios || rc=$?
echo "phase vm-scenarios: $(( $(date +%s) - t )) s"
echo "phase vm-total: $(( $(date +%s) - t0 )) s"
exit $rc
