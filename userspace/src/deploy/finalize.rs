//! `bootc composefs-finalize-staged`: run at shutdown (the `ExecStop=` of
//! `bootc-composefs-finalize-staged.service`) to merge /etc into the staged deployment
//! and make it the default.
//!
//! The merge is three-way (see [`super::etc_merge`]): pristine = the booted image's
//! /etc, current = the live /etc (the booted deployment's `state/deploy/<id>/etc`, which
//! is what is bound on /etc), new = the staged deployment's `etc/`. On a conflict or any
//! error the staged entries are not swapped: the old deployment stays the default, and
//! the reason goes to the journal (stderr) and to `state/finalize-failure`, which
//! `bootc status` shows. On success the entry sets are exchanged atomically, then
//! unreferenced boot binaries and deployments are collected.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;

use super::etc_merge;
use super::host::Host;
use super::stage::plan_merge;
use crate::boot::entries;
use crate::repo;
use crate::sys::durable;

/// What finalize did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finalized {
    /// No staged deployment.
    NothingStaged,
    /// The staged deployment is now the default.
    Done(DeploymentId),
}

/// Finalizes the staged deployment; records the failure reason when it cannot.
pub(crate) fn finalize(host: &Host) -> Result<Finalized> {
    let Some(staged) = host.staged() else {
        return Ok(Finalized::NothingStaged);
    };
    let result = repo::read_algorithm(&host.sysroot)
        .and_then(|alg| with_algorithm!(alg, H => finalize_typed::<H>(host, &staged)));
    match result {
        Ok(()) => {
            host.clear_staged()?;
            host.clear_finalize_failure()?;
            Ok(Finalized::Done(staged))
        }
        Err(e) => {
            let reason = format!(
                "finalizing {} failed, {} stays the default: {e:#}",
                staged.short(),
                host.booted.short()
            );
            // Printed once, by the caller (stderr goes to the journal).
            if let Err(w) = host.set_finalize_failure(&reason) {
                tracing::error!("recording the failure: {w:#}");
            }
            Err(anyhow::anyhow!(reason))
        }
    }
}

fn finalize_typed<H: FsVerityHashValue>(host: &Host, staged: &DeploymentId) -> Result<()> {
    let staged_set = entries::read_staged(&host.boot)?
        .context("the staged marker is set but loader/entries.staged is missing")?;
    if staged_set.default_deployment() != Some(staged) {
        bail!(
            "loader/entries.staged does not boot the staged deployment {} first",
            staged.short()
        );
    }
    let repo = repo::open::<H>(&host.sysroot)?;
    let (plan, _pristine) = plan_merge(host, &repo, staged)?;
    if !plan.conflicts.is_empty() {
        bail!("/etc cannot be merged: {}", plan.conflict_summary());
    }
    let current = durable::open_dir(&host.sysroot, layout::deploy_etc(&host.booted))?;
    let new = durable::open_dir(&host.sysroot, layout::deploy_etc(staged))?;
    // Temporaries go to state/, never inside the /etc that will boot.
    let scratch = durable::open_dir(&host.sysroot, layout::STATE)?;
    etc_merge::apply(&plan, current.as_fd(), new.as_fd(), scratch.as_fd())?;
    for p in &plan.skipped {
        tracing::info!(
            "/etc/{}: not carried over (socket, FIFO or device node)",
            p.display()
        );
    }
    durable::syncfs(host.sysroot.as_fd())?;
    entries::swap_staged(&host.boot)?;
    durable::syncfs(host.boot.as_fd())?;
    tracing::info!(
        "finalized {}: {} local /etc changes carried over",
        staged.short(),
        plan.actions.len()
    );
    Ok(())
}
