//! `bootc rollback`: make the previous deployment the default.
//!
//! The first two entries of the boot order trade places, so running it twice restores
//! the original order. When an update is staged (not yet finalized), rolling back means
//! discarding it: the boot order is left as it is. The new order is written as a
//! complete set and exchanged atomically with the old one.

use anyhow::{bail, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;

use super::host::Host;
use crate::boot::entries;

/// What rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RolledBack {
    /// The deployment that is now the default.
    pub(crate) default: DeploymentId,
    /// The staged deployment that was discarded, if any.
    pub(crate) discarded: Option<DeploymentId>,
}

/// See the module documentation.
pub(crate) fn rollback(host: &Host) -> Result<RolledBack> {
    // A staged set without the marker is stale: removed, but it is no staged update.
    entries::discard_staged(&host.boot)?;
    if let Some(staged) = host.staged() {
        host.clear_staged()?;
        let set = entries::read_current(&host.boot)?;
        let default = set
            .default_deployment()
            .cloned()
            .unwrap_or_else(|| host.booted.clone());
        return Ok(RolledBack {
            default,
            discarded: Some(staged),
        });
    }
    let mut set = entries::read_current(&host.boot)?;
    if set.ours.len() < 2 {
        bail!(
            "there is no previous deployment to roll back to (only {} boot entry)",
            set.ours.len()
        );
    }
    set.ours.swap(0, 1);
    entries::replace(&host.boot, &set)?;
    let default = set.default_deployment().cloned().expect("two entries");
    Ok(RolledBack {
        default,
        discarded: None,
    })
}
