//! `bootc rollback`: make the previous deployment the default.
//!
//! The first two entries of the boot order trade places, so running it twice restores
//! the original order. When an update is staged (not yet finalized), rolling back means
//! discarding it: the boot order is left as it is. The new order is written as a
//! complete set and exchanged atomically with the old one.
//!
//! "Staged" is what the entries say ([`Staged`]), not the marker alone: when the
//! marker's deployment is already the default (a finalize stopped after its exchange),
//! or the marker is stale, this is a normal rollback and the marker is cleared.

use std::os::fd::AsFd;

use anyhow::{bail, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;

use super::host::{Host, Staged};
use crate::boot::entries::EntrySet;

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RolledBack {
    /// The deployment that is now the default.
    pub(crate) default: DeploymentId,
    /// The staged deployment that was discarded, if any.
    pub(crate) discarded: Option<DeploymentId>,
}

/// What rollback will do, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Discard the staged update; the boot order stays.
    Discard(DeploymentId),
    /// Make this the current set (the first two entries traded places), so that this
    /// deployment boots next.
    Reorder(EntrySet, DeploymentId),
}

/// Decides from the current set and what is staged (pure: no I/O).
pub(crate) fn plan(current: &EntrySet, staged: &Staged) -> Result<Plan> {
    if let Some(id) = staged.pending() {
        return Ok(Plan::Discard(id.clone()));
    }
    if current.ours.len() < 2 {
        bail!(
            "there is no previous deployment to roll back to (only {} boot entry)",
            current.ours.len()
        );
    }
    let mut set = current.clone();
    set.ours.swap(0, 1);
    if let Some(c) = set.ours[0].counter.filter(|_| set.ours[0].failed()) {
        bail!(
            "the previous deployment {} failed to boot ({} tries): the boot loader would not boot it; `bootc switch` to its image to try it again",
            set.ours[0]
                .deployment
                .as_ref()
                .map(|d| d.short())
                .unwrap_or_else(|| set.ours[0].bls.file_stem.clone()),
            c.done.unwrap_or(0)
        );
    }
    let Some(default) = set.default_deployment().cloned() else {
        bail!(
            "the previous boot entry {} names no deployment (no valid composefs= argument): not rolling back to it",
            set.ours[0].bls.file_name()
        );
    };
    Ok(Plan::Reorder(set, default))
}

/// See the module documentation.
pub(crate) fn rollback(host: &Host) -> Result<RolledBack> {
    let staged = host.staged_state()?;
    let current = host.current_set()?;
    let plan = plan(&current, &staged)?;
    // A staged set that is not pending is stale (or the old set an interrupted finalize
    // left): removed, but it is no staged update.
    host.menu().discard_staged(host.boot.as_fd())?;
    if staged != Staged::None {
        host.clear_staged()?;
    }
    if let Staged::Finalized(_) = staged {
        // A recorded "did not complete" no longer applies: the marker is gone.
        host.clear_finalize_failure()?;
    }
    match plan {
        Plan::Discard(id) => Ok(RolledBack {
            default: current
                .default_deployment()
                .cloned()
                .unwrap_or_else(|| host.booted.clone()),
            discarded: Some(id),
        }),
        Plan::Reorder(set, default) => {
            host.menu().replace(host.boot.as_fd(), &set)?;
            Ok(RolledBack {
                default,
                discarded: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::entries::Entry;
    use crate::deploy::host::test_sets::*;

    fn reorder(current: &EntrySet, staged: &Staged) -> EntrySet {
        match plan(current, staged).unwrap() {
            Plan::Reorder(set, default) => {
                assert_eq!(set.default_deployment(), Some(&default));
                set
            }
            other => panic!("expected a reorder, got {other:?}"),
        }
    }

    #[test]
    fn rollback_twice_is_the_identity_and_keeps_foreign_entries() {
        let (a, b, c) = (id('a'), id('b'), id('c'));
        let current = set(&[&a, &b, &c]);
        let once = reorder(&current, &Staged::None);
        assert_eq!(once.deployments(), vec![b.clone(), a.clone(), c.clone()]);
        assert_eq!(once.foreign, current.foreign);
        assert_eq!(reorder(&once, &Staged::None), current);
    }

    #[test]
    fn a_pending_update_is_discarded_anything_else_is_a_normal_rollback() {
        let (a, b, x) = (id('a'), id('b'), id('c'));
        let current = set(&[&a, &b]);
        let pending = Staged::Pending {
            id: x.clone(),
            set: set(&[&x, &a, &b]),
        };
        assert_eq!(plan(&current, &pending).unwrap(), Plan::Discard(x.clone()));
        // The marker's deployment is already the default (an interrupted finalize): a
        // normal rollback to the previous one, never a "discard" of the default.
        let after = set(&[&x, &a]);
        assert_eq!(
            reorder(&after, &Staged::Finalized(x.clone())).deployments(),
            vec![a.clone(), x.clone()]
        );
        // A stale marker changes nothing either.
        assert_eq!(
            reorder(&current, &Staged::Stale(x.clone())).deployments(),
            vec![b.clone(), a.clone()]
        );
    }

    #[test]
    fn one_entry_or_a_previous_entry_without_deployment_is_refused() {
        let a = id('a');
        let e = plan(&set(&[&a]), &Staged::None).unwrap_err().to_string();
        assert!(e.contains("no previous deployment"), "{e}");
        let mut two = set(&[&a, &a]);
        two.ours[1] = Entry::new(crate::boot::bls::BlsEntry {
            efi: None,
            options: "rw".into(),
            ..two.ours[1].bls.clone()
        });
        let e = plan(&two, &Staged::None).unwrap_err().to_string();
        assert!(e.contains("names no deployment"), "{e}");
    }
}
