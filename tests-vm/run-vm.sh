#!/bin/bash
# Build the test image (mkosi), install v1 with `bootc install to-disk --require-verity`
# inside an installer VM (fs-verity enforced; --insecure: from the host with
# --via-loopback, composefs=?), and boot it under QEMU (TCG, OVMF, systemd-boot).
#
#   tests-vm/run-vm.sh [--batch] [--insecure] [--tag v1|v2] [--install-deps]
#
# Without --batch the serial console is this terminal (root autologin; leave with
# `poweroff` or Ctrl-a x). --batch prints the kernel command line, the mounts and
# `bootc status`, checks they show what the install promises, then powers off. --install-deps first apt-get installs what is needed
# (see tests-vm/README.md). Runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ws=$(cd "$here/.." && pwd)

args=()
for a in "$@"; do
    if [[ $a == --install-deps ]]; then
        "$here/install-deps.sh"
    else
        args+=("$a")
    fi
done
[[ $(id -u) == 0 ]] || { echo "run-vm.sh: must run as root (loop devices, mounts)" >&2; exit 1; }
cd "$ws"
cargo build -q -p bootc-tests-vm
exec "$ws/target/debug/bootc-vm" run "${args[@]}"
