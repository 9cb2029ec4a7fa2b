//! `bootc gc`: remove what no deployment needs.
//!
//! The live deployments are those with an entry in `loader/entries` or
//! `loader/entries.staged`, plus the booted one and the staged one. Everything else
//! goes: their state directories, the `bootc_composefs-*` boot directories no live
//! entry boots from, their repository tags, and then (by the repository's own GC) every
//! image, stream and object no remaining tag reaches. Tags that are not ours are GC
//! roots too and are never touched.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;

use crate::boot::entries;
use crate::deploy::host::Host;
use crate::deploy::state;
use crate::repo::{self, DEPLOYMENT_TAG_PREFIX};
use crate::sys::durable;

/// What was (or, with `--dry-run`, would be) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GcReport {
    /// Deployment state directories.
    pub(crate) deployments: Vec<String>,
    /// Boot directories on the boot partition.
    pub(crate) boot_dirs: Vec<String>,
    /// Repository tags.
    pub(crate) tags: Vec<String>,
    /// Objects removed from the repository.
    pub(crate) objects: u64,
    /// Their size in bytes.
    pub(crate) bytes: u64,
    /// Dangling image and stream links pruned.
    pub(crate) links: u64,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deployments, {} boot directories, {} tags, {} objects ({:.1} MiB), {} dangling links",
            self.deployments.len(),
            self.boot_dirs.len(),
            self.tags.len(),
            self.objects,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.links
        )
    }
}

/// The deployments that must be kept.
pub(crate) fn live_deployments(host: &Host) -> Result<BTreeSet<DeploymentId>> {
    let mut live: BTreeSet<DeploymentId> = BTreeSet::new();
    live.insert(host.booted.clone());
    if let Some(s) = host.staged() {
        live.insert(s);
    }
    live.extend(entries::read_current(&host.boot)?.deployments());
    if let Some(staged) = host.staged_set()? {
        live.extend(staged.deployments());
    }
    Ok(live)
}

/// Collects garbage; with `dry_run` only reports.
pub(crate) fn gc(host: &Host, dry_run: bool) -> Result<GcReport> {
    with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => gc_typed::<H>(host, dry_run))
}

fn gc_typed<H: FsVerityHashValue>(host: &Host, dry_run: bool) -> Result<GcReport> {
    let live = live_deployments(host)?;
    let mut report = GcReport::default();

    // Boot directories referenced by any live entry (deduplicated kernels are shared).
    let mut boot_refs: BTreeSet<String> = BTreeSet::new();
    let mut sets = vec![entries::read_current(&host.boot)?];
    sets.extend(host.staged_set()?);
    for set in &sets {
        for e in &set.ours {
            for p in std::iter::once(&e.bls.linux).chain(e.bls.initrd.iter()) {
                if let Some(dir) = p.trim_start_matches('/').split('/').next() {
                    boot_refs.insert(dir.to_string());
                }
            }
        }
    }
    for name in list_names(&host.boot)? {
        // (A kernel directory interrupted while being copied has a temporary name.)
        let ours = name.starts_with(layout::BOOT_PREFIX) || durable::is_tmp_name(&name);
        if ours && !boot_refs.contains(&name) && !name.ends_with(".efi") {
            report.boot_dirs.push(name);
        }
    }

    // State directories (and leftovers of interrupted writes).
    let deploy_root = durable::open_dir(&host.sysroot, layout::STATE_DEPLOY)?;
    for id in state::list_deployments(&host.sysroot)? {
        if !live.contains(&id) {
            report.deployments.push(id.hex().to_string());
        }
    }
    let leftovers: Vec<String> = list_names(&deploy_root)?
        .into_iter()
        .filter(|n| durable::is_tmp_name(n))
        .collect();

    // Our tags for dead deployments.
    let repo = repo::open::<H>(&host.sysroot)?;
    for (tag, _) in composefs_oci::oci_image::list_refs(&repo)? {
        if let Some(hex) = tag.strip_prefix(DEPLOYMENT_TAG_PREFIX) {
            if !live.iter().any(|d| d.hex() == hex) {
                report.tags.push(tag);
            }
        }
    }

    if dry_run {
        // What the repository GC would free once the tags are gone cannot be computed
        // without removing them; report what it would free now as a lower bound.
        let r = repo
            .gc_dry_run(&[])
            .context("computing repository garbage")?;
        report.objects = r.objects_removed;
        report.bytes = r.objects_bytes;
        report.links = r.images_pruned + r.streams_pruned;
        return Ok(report);
    }

    for d in &report.deployments {
        durable::remove_all(&deploy_root, d)
            .with_context(|| format!("removing state/deploy/{d}"))?;
    }
    for l in &leftovers {
        durable::remove_all(&deploy_root, l)?;
    }
    for b in &report.boot_dirs {
        durable::remove_all(&host.boot, b)
            .with_context(|| format!("removing {b} from the boot partition"))?;
    }
    durable::fsync_dir(&host.boot)?;
    for t in &report.tags {
        composefs_oci::oci_image::untag_image(&repo, t)?;
    }
    let r = repo.gc(&[]).context("collecting repository garbage")?;
    report.objects = r.objects_removed;
    report.bytes = r.objects_bytes;
    report.links = r.images_pruned + r.streams_pruned;
    durable::syncfs(&host.sysroot)?;
    Ok(report)
}

fn list_names(dir: impl std::os::fd::AsFd) -> Result<Vec<String>> {
    let fd = rustix::fs::openat(
        &dir,
        ".",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut out = vec![];
    let mut d = rustix::fs::Dir::read_from(&fd)?;
    while let Some(e) = d.read() {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            out.push(n);
        }
    }
    Ok(out)
}
