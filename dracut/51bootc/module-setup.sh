#!/bin/bash
# dracut module "bootc": boot a composefs deployment from the initramfs.
#
# Installs /usr/lib/bootc/initramfs-setup (the static bootc-initramfs-setup
# binary), its unit bootc-root-setup.service (pulled in by
# initrd-root-fs.target), bootc-root-modules.service (pulled in by the former: loads
# erofs and overlay while the root filesystem is mounted), the optional
# /usr/lib/composefs/setup-root-conf.toml, and the erofs, overlay and loop kernel
# modules (loop: the fallback for a repository on tmpfs, loaded on demand).
#
# Usage: copy this directory to /usr/lib/dracut/modules.d/51bootc. The module
# is opt-in; enable it in an image with a dracut.conf.d drop-in containing
#   add_dracutmodules+=" bootc "
# or with `dracut --add bootc`.
#
# Environment overrides (for building an initramfs from a workspace build):
#   BOOTC_INITRAMFS_SETUP  binary to install (default /usr/lib/bootc/initramfs-setup)
#   BOOTC_UNIT_DIR         directory holding bootc-root-setup.service and
#                          bootc-root-modules.service
#                          (default $systemdsystemunitdir)

# shellcheck shell=bash
# shellcheck disable=SC2154 # initdir, systemdsystemunitdir, dracutsysrootdir come from dracut

check() {
    # Only when asked for.
    return 255
}

depends() {
    echo systemd
}

installkernel() {
    # hostonly='': the build host need not have these loaded.
    hostonly='' instmods erofs overlay loop
}

install() {
    local unit=bootc-root-setup.service u
    local conf=/usr/lib/composefs/setup-root-conf.toml

    # dracut ignores install()'s status: a missing piece must fail the build.
    inst_binary "${BOOTC_INITRAMFS_SETUP:-/usr/lib/bootc/initramfs-setup}" \
        /usr/lib/bootc/initramfs-setup \
        || { dfatal "bootc: cannot install the initramfs-setup binary"; exit 1; }
    for u in "$unit" bootc-root-modules.service; do
        inst_simple "${BOOTC_UNIT_DIR:-$systemdsystemunitdir}/$u" \
            "$systemdsystemunitdir/$u" \
            || { dfatal "bootc: cannot install $u"; exit 1; }
    done
    # bootc-root-modules.service runs it.
    inst_multiple modprobe \
        || { dfatal "bootc: cannot install modprobe"; exit 1; }
    inst_dir "$systemdsystemunitdir/initrd-root-fs.target.wants"
    ln_r "$systemdsystemunitdir/$unit" \
        "$systemdsystemunitdir/initrd-root-fs.target.wants/$unit"
    if [[ -e $dracutsysrootdir$conf ]]; then
        inst_simple "$conf"
    fi
}
