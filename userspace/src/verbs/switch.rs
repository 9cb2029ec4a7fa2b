//! `bootc switch`: stage another image and follow it from now on.

use anyhow::{Context, Result};

use crate::cli::{Cli, SwitchArgs};
use crate::deploy::host::Host;
use crate::deploy::stage::{self, StageOutcome};
use crate::deploy::state::Origin;
use crate::imgref::ImageReference;
use crate::repo;

use super::upgrade::{report, stage_opts};
use super::{host, locked};

/// `bootc switch`.
pub(crate) fn switch(cli: &Cli, a: &SwitchArgs) -> Result<()> {
    let host = host(cli)?;
    let imgref = ImageReference::parse_with_default(&a.target, a.transport.as_deref())
        .with_context(|| format!("bootc switch {}", a.target))?;
    let _lock = locked(&host)?;
    let outcome = stage::stage(&host, &stage_opts(cli, &a.common, Some(imgref), false))?;
    if a.retain && matches!(outcome, StageOutcome::Staged(_)) {
        let tag = retain_booted(&host)?;
        println!("Retained the booted image as {tag}.");
    }
    report(&host, outcome, a.apply, a.soft_reboot)
}

/// Prefix of the repository tag `switch --retain` gives the booted image. It is not a
/// deployment tag, so gc treats it as a root and keeps the image.
pub(crate) const RETAINED_TAG_PREFIX: &str = "bootc-retained-";

/// `--retain`: the booted image gets a repository tag of its own, so it stays stored
/// (switching back downloads nothing) after its deployment leaves the entry set.
fn retain_booted(host: &Host) -> Result<String> {
    let origin = Origin::load(&host.sysroot, &host.booted)
        .with_context(|| format!("reading the origin of {}", host.booted.short()))?;
    let digest = origin.manifest_digest.with_context(|| {
        format!(
            "the origin of {} has no [image] manifest_digest: cannot retain its image",
            host.booted.short()
        )
    })?;
    let manifest: composefs_oci::OciDigest = digest
        .as_str()
        .try_into()
        .with_context(|| format!("invalid manifest digest {digest}"))?;
    let tag = format!("{RETAINED_TAG_PREFIX}{}", host.booted.hex());
    bootc_initramfs_setup::with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => {
        let r = repo::open::<H>(&host.sysroot)?;
        composefs_oci::tag_image(&r, &manifest, &tag)
            .with_context(|| format!("tagging the booted image as {tag}"))
    })?;
    Ok(tag)
}
