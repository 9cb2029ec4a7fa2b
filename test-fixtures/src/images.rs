//! Small, bootable-shaped test images.
//!
//! They have what `bootc` and `bootc-initramfs-setup` look at: os-release, a kernel and
//! an initramfs under `/usr/lib/modules/<kver>/` (stand-ins), `/etc`, `/var`, `/boot`,
//! `/sysroot`, symlinks, odd modes, an owner, an xattr, an empty directory and a 20 MB
//! file. `v1` and `v2` share their large base layer; the top layer differs in a way the
//! /etc merge has something to do with (changed file under /usr, changed default in /etc,
//! new file in /etc, removed file in /etc).

use crate::oci::Layer;

/// The kernel version of the stand-in kernel.
pub const KVER: &str = "6.12.0-bootc-test";
/// Size of the large file in the base layer.
pub const BIG_FILE_SIZE: usize = 20 * 1024 * 1024;

/// `security.capability` granting cap_net_bind_service (effective): an xattr that
/// survives composefs' default xattr allowlist.
pub const FILE_CAPS: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// [`FILE_CAPS`] as `getfattr -e hex` prints it.
pub const FILE_CAPS_HEX: &str = "0x0100000200040000000000000000000000000000";

/// Deterministic, incompressible-looking bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The shared base layer.
pub fn base_layer() -> Layer {
    Layer::new()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/modules", 0o755)
        .dir(&format!("usr/lib/modules/{KVER}"), 0o755)
        .file(
            &format!("usr/lib/modules/{KVER}/vmlinuz"),
            pseudo_random(256 * 1024, 1),
            0o644,
        )
        .file(
            &format!("usr/lib/modules/{KVER}/initramfs.img"),
            pseudo_random(128 * 1024, 2),
            0o644,
        )
        .file("usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755)
        .file("usr/bin/setuid-tool", "binary\n", 0o4755)
        .dir("usr/share", 0o755)
        .dir("usr/share/big", 0o755)
        .file(
            "usr/share/big/blob.bin",
            pseudo_random(BIG_FILE_SIZE, 3),
            0o644,
        )
        .dir("usr/share/empty", 0o700)
        .file("usr/share/owned", "owned by 1000\n", 0o640)
        .owner(1000, 1000)
        .file("usr/bin/with-caps", "caps\n", 0o755)
        .xattr("security.capability", &FILE_CAPS)
        .symlink("bin", "usr/bin")
        .symlink("lib", "usr/lib")
        .dir("boot", 0o755)
        .dir("sysroot", 0o755)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .file("var/lib/seeded", "from the image\n", 0o644)
        .dir("etc", 0o755)
        .file("etc/hostname", "bootc-test\n", 0o644)
        .file("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600)
        .symlink("etc/localtime", "../usr/share/zoneinfo/UTC")
        .dir("etc/conf.d", 0o755)
        .file("etc/conf.d/keep.conf", "keep=1\n", 0o644)
        .file("etc/conf.d/removed-in-v2.conf", "old=1\n", 0o644)
}

/// The variant layer: `version` is 1 or 2.
pub fn variant_layer(version: u32) -> Layer {
    let os_release = format!(
        "NAME=\"Bootc Test OS\"\nID=bootc-test\nVERSION_ID={version}\nPRETTY_NAME=\"Bootc Test OS v{version}\"\n"
    );
    let mut l = Layer::new()
        .file("usr/lib/os-release", os_release, 0o644)
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("usr/share/version", format!("{version}\n"), 0o644)
        .file("etc/default.conf", format!("setting=v{version}\n"), 0o644);
    if version >= 2 {
        l = l
            .file("etc/new-in-v2.conf", "new=1\n", 0o644)
            .whiteout("etc/conf.d/removed-in-v2.conf");
    }
    l
}

/// The layers of test image `version` (1 or 2).
pub fn bootable(version: u32) -> Vec<Layer> {
    vec![base_layer(), variant_layer(version)]
}

/// An image without a kernel (for install's bad-input tests).
pub fn without_kernel() -> Vec<Layer> {
    vec![Layer::new()
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/os-release", "ID=nokernel\n", 0o644)
        .dir("etc", 0o755)
        .dir("var", 0o755)
        .dir("boot", 0o755)
        .dir("sysroot", 0o755)]
}
