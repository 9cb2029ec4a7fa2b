//! The on-disk layout of the physical root (docs/architecture.md section 2).
//!
//! Every path here is relative to the physical root (`/sysroot` on a booted system,
//! `--sysroot DIR` for tools and tests), so callers open them relative to a directory
//! file descriptor instead of joining absolute strings.

use std::path::PathBuf;

use crate::cmdline::DeploymentId;

/// The physical root as seen from the initramfs and from the booted system.
pub const DEFAULT_SYSROOT: &str = "/sysroot";
/// The composefs repository (mode 0700): `objects/`, `images/`, `streams/`.
pub const REPOSITORY: &str = "composefs";
/// Inside the repository: the EROFS images, named by their fs-verity digest.
pub const REPO_IMAGES: &str = "images";
/// Inside the repository: the content-addressed object store.
pub const REPO_OBJECTS: &str = "objects";
/// One directory per deployment: `state/deploy/<hex>/`.
pub const STATE_DEPLOY: &str = "state/deploy";
/// Per-machine state: deployments, the shared var, the writer lock.
pub const STATE: &str = "state";
/// The lock that keeps two `bootc` writers apart.
pub const LOCK_FILE: &str = "state/bootc.lock";
/// Why the last staged update was not applied (read by `bootc status`).
pub const FINALIZE_FAILURE: &str = "state/finalize-failure";
/// The one shared `/var`.
pub const SHARED_VAR: &str = "state/os/default/var";
/// Target of each deployment's `var` symlink, relative to the deployment directory.
pub const DEPLOY_VAR_LINK: &str = "../../os/default/var";
/// A deployment's writable `/etc`, inside its state directory.
pub const DEPLOY_ETC: &str = "etc";
/// A deployment's `var` symlink, inside its state directory.
pub const DEPLOY_VAR: &str = "var";
/// Where the physical root is kept visible inside the composed root.
pub const SYSROOT_IN_ROOT: &str = "sysroot";
/// Where the deployment's `/etc` is mounted inside the composed root.
pub const ETC_IN_ROOT: &str = "etc";
/// Where the shared `/var` is mounted inside the composed root.
pub const VAR_IN_ROOT: &str = "var";
/// The initramfs setup configuration inside the booted image.
pub const SETUP_CONFIG: &str = "/usr/lib/composefs/setup-root-conf.toml";
/// Where the initramfs binary is installed in images. The dracut module, the initrd
/// unit and the test image recipe spell it too (shell and unit files); a test checks
/// that they agree with this.
pub const INITRAMFS_SETUP_BIN: &str = "/usr/lib/bootc/initramfs-setup";
/// BLS Type #1 entries, relative to the boot partition (or ESP) root.
pub const LOADER_ENTRIES: &str = "loader/entries";
/// The staged entry set, swapped with [`LOADER_ENTRIES`] at finalize.
pub const LOADER_ENTRIES_STAGED: &str = "loader/entries.staged";
/// GRUB menu entries, relative to the boot partition.
pub const GRUB_USER_CFG: &str = "grub2/user.cfg";
/// The staged GRUB menu, exchanged with [`GRUB_USER_CFG`] at finalize.
pub const GRUB_USER_CFG_STAGED: &str = "grub2/user.cfg.staged";
/// Prefix of the per-deployment boot directory and of our entry file names.
pub const BOOT_PREFIX: &str = "bootc_composefs-";
/// Marker of the staged deployment; on tmpfs so it is gone after a reboot.
pub const STAGED_MARKER: &str = "/run/composefs/staged-deployment";

/// `composefs/images/<hex>`.
pub fn image_path(id: &DeploymentId) -> PathBuf {
    [REPOSITORY, REPO_IMAGES, id.hex()].iter().collect()
}

/// `composefs/objects/<first two hex digits>/<rest>`: the object that holds image `id`.
/// `images/<hex>` is a symlink to it (see [`image_link_target`]).
pub fn image_object_path(id: &DeploymentId) -> PathBuf {
    let (dir, rest) = id.hex().split_at(2);
    [REPOSITORY, REPO_OBJECTS, dir, rest].iter().collect()
}

/// The one target `composefs/images/<hex>` may have when it is a symlink:
/// `../objects/<first two hex digits>/<rest>`, the object named by the same digest.
pub fn image_link_target(id: &DeploymentId) -> PathBuf {
    let (dir, rest) = id.hex().split_at(2);
    ["..", REPO_OBJECTS, dir, rest].iter().collect()
}

/// `state/deploy/<hex>`.
pub fn deploy_dir(id: &DeploymentId) -> PathBuf {
    PathBuf::from(STATE_DEPLOY).join(id.hex())
}

/// `state/deploy/<hex>/etc`.
pub fn deploy_etc(id: &DeploymentId) -> PathBuf {
    deploy_dir(id).join(DEPLOY_ETC)
}

/// `state/deploy/<hex>/var` (a symlink to the shared var).
pub fn deploy_var(id: &DeploymentId) -> PathBuf {
    deploy_dir(id).join(DEPLOY_VAR)
}

/// `state/deploy/<hex>/<hex>.origin`.
pub fn origin_file(id: &DeploymentId) -> PathBuf {
    deploy_dir(id).join(format!("{}.origin", id.hex()))
}

/// Where UKI deployments' Unified Kernel Images live on the ESP: a directory *below*
/// `EFI/Linux`, so systemd-boot does not list them a second time as Type #2 entries
/// (it scans `EFI/Linux` itself, not its subdirectories); each is booted by a Type #1
/// entry's `efi` line, which keeps bootc's order, staging and rollback.
pub const EFI_LINUX_BOOTC: &str = "EFI/Linux/bootc";

/// `bootc_composefs-<hex>.efi`: a UKI deployment's UKI, in [`EFI_LINUX_BOOTC`]; its
/// addons are in `<that>.extra.d/`, where systemd-stub looks for them.
pub fn uki_file_name(id: &DeploymentId) -> String {
    format!("{BOOT_PREFIX}{}.efi", id.hex())
}

/// `bootc_composefs-<hex>`: the boot directory holding a BLS deployment's kernel+initrd.
pub fn boot_dir_name(id: &DeploymentId) -> String {
    format!("{BOOT_PREFIX}{}", id.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = DeploymentId::parse(&"ab".repeat(32)).unwrap();
        let hex = "ab".repeat(32);
        assert_eq!(
            image_path(&id),
            PathBuf::from(format!("composefs/images/{hex}"))
        );
        assert_eq!(
            image_object_path(&id),
            PathBuf::from(format!("composefs/objects/ab/{}", &hex[2..]))
        );
        assert_eq!(
            image_link_target(&id),
            PathBuf::from(format!("../objects/ab/{}", &hex[2..]))
        );
        assert_eq!(
            deploy_etc(&id),
            PathBuf::from(format!("state/deploy/{hex}/etc"))
        );
        assert_eq!(
            origin_file(&id),
            PathBuf::from(format!("state/deploy/{hex}/{hex}.origin"))
        );
        // The var symlink, resolved from the deployment directory, lands on the shared var.
        let resolved = PathBuf::from(STATE_DEPLOY).join(hex).join(DEPLOY_VAR_LINK);
        let mut norm = PathBuf::new();
        for c in resolved.components() {
            match c {
                std::path::Component::ParentDir => {
                    norm.pop();
                }
                c => norm.push(c),
            }
        }
        assert_eq!(norm, PathBuf::from(SHARED_VAR));
    }

    #[test]
    fn packaging_installs_the_binary_where_this_says() {
        let ws = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for f in [
            "dracut/51bootc/module-setup.sh",
            "systemd/bootc-root-setup.service",
            "mkosi/build.sh",
        ] {
            let text = std::fs::read_to_string(ws.join(f)).unwrap();
            assert!(
                text.contains(INITRAMFS_SETUP_BIN),
                "{f} does not name {INITRAMFS_SETUP_BIN}"
            );
        }
    }
}
