#!/bin/bash
# Fetch the newest Debian bookworm 6.12 amd64 kernel (linux-image-6.12.*+deb12*-amd64,
# signed or -unsigned) with apt-get download, unpack it with dpkg-deb -x into a
# cache (never installed into the host), run depmod there, and print exactly one
# line on stdout:
#
#   KVER=<kver> ROOT=<extract dir>
#
# vmlinuz is $ROOT/boot/vmlinuz-$KVER, modules are under $ROOT/lib/modules/$KVER.
# Progress goes to stderr. Idempotent: an existing complete extraction is reused.
#
# Environment:
#   BOOTC_CACHE  cache directory (default /var/cache/bootc-dev); uses $BOOTC_CACHE/kernel/
#   BOOTC_KVER   pin a kernel release (e.g. 6.12.117+deb12-amd64) instead of the newest
#
# Needs: apt-get (after apt-get update, with bookworm-security or -backports
# configured), dpkg-deb, depmod (kmod), flock (util-linux).
set -euo pipefail

log() { printf 'fetch-kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# depmod lives in sbin, which a non-login PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
for tool in apt-cache apt-get dpkg-deb depmod flock; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
cache="${BOOTC_CACHE:-/var/cache/bootc-dev}/kernel"
mkdir -p "$cache/debs"
# One fetch at a time per cache (tests may run in parallel).
exec 9>"$cache/.lock"
flock 9

# Kernel releases (ABI names) apt knows, e.g. "6.12.117+deb12-amd64", newest last.
available_kvers() {
    apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12' 2>/dev/null \
        | awk '{print $1}' \
        | sed -nE 's/^linux-image-(6\.12\.[0-9]+\+deb12(\.[0-9]+)?-amd64)(-unsigned)?$/\1/p' \
        | sort -uV
}

# A package name is downloadable if apt has a candidate version for it.
has_candidate() {
    local c
    c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $c && $c != "(none)" ]]
}

kver="${BOOTC_KVER:-}"
if [[ -z $kver ]]; then
    kver=$(available_kvers | tail -n 1)
fi
if [[ -z $kver ]]; then
    # No apt lists (offline): fall back to the newest complete extraction.
    kver=$(find "$cache" -mindepth 2 -maxdepth 2 -name .complete -printf '%h\n' 2>/dev/null \
        | xargs -r -n1 basename | sort -V | tail -n 1)
    [[ -n $kver ]] || die "no linux-image-6.12.*+deb12-amd64 known to apt; run apt-get update (bookworm-security or bookworm-backports needed)"
    log "apt knows no 6.12 kernel; reusing cached $kver"
fi

root="$cache/$kver"
if [[ -e $root/.complete ]]; then
    log "reusing $root"
    echo "KVER=$kver ROOT=$root"
    exit 0
fi

# Prefer the signed image; the -unsigned one has the same kernel and modules.
pkgs=()
if has_candidate "linux-image-$kver"; then
    pkgs+=("linux-image-$kver")
elif has_candidate "linux-image-$kver-unsigned"; then
    pkgs+=("linux-image-$kver-unsigned")
else
    die "neither linux-image-$kver nor linux-image-$kver-unsigned is downloadable; run apt-get update"
fi
# Modules in a separate package (not the case for Debian 6.12, but cheap to handle).
if has_candidate "linux-modules-$kver"; then
    pkgs+=("linux-modules-$kver")
fi

debs=()
for pkg in "${pkgs[@]}"; do
    existing=$(find "$cache/debs" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort -V | tail -n 1)
    if [[ -z $existing ]]; then
        log "downloading $pkg"
        # apt-get download writes into the current directory: use a scratch one so an
        # interrupted download never leaves a truncated .deb that looks reusable, and
        # keep stdout clean.
        dl="$cache/debs/.download.$$"
        rm -rf "$dl"
        mkdir "$dl"
        (cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) \
            || { rm -rf "$dl"; die "apt-get download $pkg failed"; }
        mv "$dl"/*.deb "$cache/debs/"
        rm -rf "$dl"
        existing=$(find "$cache/debs" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort -V | tail -n 1)
        [[ -n $existing ]] || die "apt-get download $pkg produced no .deb"
    else
        log "reusing $existing"
    fi
    debs+=("$existing")
done

# Extract into a scratch directory and rename it into place when complete, so an
# interrupted run never leaves a half extraction that looks usable.
tmp="$cache/.$kver.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
for deb in "${debs[@]}"; do
    log "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$tmp"
done
# Packages built for a merged /usr ship usr/lib/modules only; keep $ROOT/lib/modules valid.
if [[ ! -e $tmp/lib && -d $tmp/usr/lib/modules ]]; then
    ln -s usr/lib "$tmp/lib"
fi
[[ -f $tmp/boot/vmlinuz-$kver ]] || die "no boot/vmlinuz-$kver in ${pkgs[*]}"
[[ -d $tmp/lib/modules/$kver ]] || die "no lib/modules/$kver in ${pkgs[*]}"
# The packages leave modules.dep to postinst; dracut and modprobe need it.
sysmap=()
[[ -f $tmp/boot/System.map-$kver ]] && sysmap=(-F "$tmp/boot/System.map-$kver")
depmod -a -b "$tmp" "${sysmap[@]}" "$kver"
touch "$tmp/.complete"

rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
log "kernel $kver ready in $root"
echo "KVER=$kver ROOT=$root"
