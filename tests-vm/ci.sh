#!/bin/bash
# The VM phase of CI (after the unit and host tests): build the test image, run every
# VM scenario, print each phase's duration. Installs nothing: the packages are listed in
# tests-vm/install-deps.sh (CI installs them). Exit status: non-zero if a scenario failed;
# pending scenarios print their reason and count as skipped.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ws=$(cd "$here/.." && pwd)
cd "$ws"
PATH="$PATH:/usr/sbin:/sbin"

phase() { printf '\n##### %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
t0=$(date +%s)

for tool in mkosi qemu-system-x86_64 mkfs.ext4 debugfs sfdisk fsverity losetup python3; do
    command -v "$tool" >/dev/null || { echo "ci.sh: $tool is missing (run tests-vm/install-deps.sh)" >&2; exit 1; }
done
[[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ]] || { echo "ci.sh: OVMF is missing (apt-get install ovmf)" >&2; exit 1; }

phase "build bootc + harness"
t=$(date +%s)
cargo build -q --release -p bootc
cargo build -q -p bootc-tests-vm
echo "phase cargo-build: $(( $(date +%s) - t )) s"

phase "image build (mkosi)"
t=$(date +%s)
BOOTC_BIN="$ws/target/release/bootc" mkosi/build.sh >/dev/null
echo "phase image-build: $(( $(date +%s) - t )) s"

phase "VM scenarios"
t=$(date +%s)
rc=0
BOOTC_BIN="$ws/target/release/bootc" target/debug/bootc-vm --no-build scenarios || rc=$?
echo "phase vm-scenarios: $(( $(date +%s) - t )) s"
echo "phase vm-total: $(( $(date +%s) - t0 )) s"
exit $rc
