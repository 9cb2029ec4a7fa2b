//! Soft reboot: switch to another deployment without restarting the kernel.
//!
//! `systemctl soft-reboot` stops userspace and starts it again from `/run/nextroot`
//! when something is mounted there. That is only the same as a real reboot into the
//! deployment when the kernel and initramfs would be the same ones (the same boot
//! digest in both origins) and so would the kernel command line (apart from the
//! `composefs=` digest, which names the root). The root is then composed exactly as the
//! initramfs would compose it, by the same code ([`bootc_initramfs_setup::setup`]),
//! attached at `/run/nextroot` instead of the physical root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
use bootc_initramfs_setup::config::SetupConfig;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::setup::{setup_root, SetupArgs};

use crate::deploy::state::Origin;

/// Where systemd looks for the root of a soft reboot.
pub(crate) const NEXTROOT: &str = "nextroot";

/// One side of the comparison: a deployment's origin and its boot entry's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BootSide<'a> {
    /// The deployment.
    pub(crate) id: &'a DeploymentId,
    /// Its origin (None when unreadable).
    pub(crate) origin: Option<&'a Origin>,
    /// The options line of its boot entry (None when it has no entry we know of).
    pub(crate) options: Option<&'a str>,
}

/// Why a soft reboot into a deployment is not possible (None: it is).
pub(crate) fn incapable_reason(booted: BootSide<'_>, target: BootSide<'_>) -> Option<String> {
    if booted.id == target.id {
        return Some(format!("{} is the booted deployment", target.id.short()));
    }
    let digest = |s: BootSide<'_>| s.origin.and_then(|o| o.boot_digest.clone());
    let (Some(b), Some(t)) = (digest(booted), digest(target)) else {
        return Some("the boot digest of a deployment is not recorded in its origin".into());
    };
    if b != t {
        return Some(format!(
            "{} has another kernel or initramfs than the booted deployment",
            target.id.short()
        ));
    }
    if let (Some(b), Some(t)) = (booted.options, target.options) {
        if without_composefs(b) != without_composefs(t) {
            return Some(format!(
                "{} boots with other kernel arguments than the booted deployment",
                target.id.short()
            ));
        }
        let insecure = |o: &str| ComposefsKarg::from_cmdline(o).map(|k| k.insecure).ok();
        if insecure(b) != insecure(t) {
            return Some(format!(
                "{} has another fs-verity requirement (composefs=?) than the booted deployment",
                target.id.short()
            ));
        }
    }
    None
}

/// The kernel arguments without `composefs=…` (which names the deployment).
fn without_composefs(options: &str) -> Vec<&str> {
    options
        .split_whitespace()
        .filter(|a| !a.starts_with("composefs="))
        .collect()
}

/// Composes `target`'s root at `<run_dir>/nextroot` as the initramfs would at boot,
/// with the same fs-verity requirement (`options` is its entry's command line) and the
/// initramfs configuration of the booted system (`config`; None: the defaults). Refuses when something is
/// already mounted there.
pub(crate) fn prepare_nextroot(
    sysroot: &Path,
    run_dir: &Path,
    options: &str,
    config: Option<&Path>,
) -> Result<PathBuf> {
    let target = run_dir.join(NEXTROOT);
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let canon = std::fs::canonicalize(&target)?;
    if crate::sys::mount::mount_source(&canon)?.is_some() {
        anyhow::bail!(
            "{}: something is already mounted there (a soft reboot prepared before?); \
             unmount it first",
            target.display()
        );
    }
    let config = match config {
        Some(c) => SetupConfig::load(c)?,
        None => SetupConfig::default(),
    };
    setup_root(&SetupArgs {
        sysroot: sysroot.to_path_buf(),
        cmdline: options.to_string(),
        config,
        target: Some(target.clone()),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
    .with_context(|| format!("preparing the next root at {}", target.display()))?;
    Ok(target)
}

/// The initramfs configuration file of the booted system.
pub(crate) fn setup_config_path() -> &'static Path {
    Path::new(layout::SETUP_CONFIG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> DeploymentId {
        DeploymentId::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn origin(digest: Option<&str>) -> Origin {
        Origin {
            image_reference: "ostree-unverified-image:registry:x".into(),
            boot_type: "bls".into(),
            boot_digest: digest.map(str::to_string),
            bootloader: None,
            boot_tries: None,
            missing_verity_allowed: false,
            manifest_digest: None,
        }
    }

    #[test]
    fn capability() {
        let (a, b) = (id('a'), id('b'));
        let (o1, o2, o3) = (origin(Some("d1")), origin(Some("d1")), origin(Some("d2")));
        let none = origin(None);
        let side = |id, o, opts| BootSide {
            id,
            origin: Some(o),
            options: opts,
        };
        let oa = format!("composefs=sha256:{} rw quiet", "a".repeat(64));
        let ob = format!("composefs=sha256:{} rw quiet", "b".repeat(64));
        let obq = format!("composefs=?sha256:{} rw quiet", "b".repeat(64));
        let obk = format!("composefs=sha256:{} rw", "b".repeat(64));
        let booted = side(&a, &o1, Some(oa.as_str()));
        assert_eq!(incapable_reason(booted, side(&b, &o2, Some(&ob))), None);
        assert_eq!(incapable_reason(booted, side(&b, &o2, None)), None);
        assert!(incapable_reason(booted, side(&a, &o1, Some(&oa)))
            .unwrap()
            .contains("booted"));
        assert!(incapable_reason(booted, side(&b, &o3, Some(&ob)))
            .unwrap()
            .contains("kernel or initramfs"));
        assert!(incapable_reason(booted, side(&b, &none, Some(&ob)))
            .unwrap()
            .contains("not recorded"));
        assert!(incapable_reason(booted, side(&b, &o2, Some(&obk)))
            .unwrap()
            .contains("kernel arguments"));
        assert!(incapable_reason(booted, side(&b, &o2, Some(&obq)))
            .unwrap()
            .contains("fs-verity"));
    }
}
