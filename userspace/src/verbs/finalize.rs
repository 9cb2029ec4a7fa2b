//! `bootc composefs-finalize-staged`: at shutdown, merge /etc into the staged
//! deployment, make it the default, then collect garbage.

use anyhow::Result;

use crate::cli::Cli;
use crate::deploy::finalize::{self, Finalized};
use crate::deploy::gc;

use super::{host, locked};

/// `bootc composefs-finalize-staged`.
pub(crate) fn finalize(cli: &Cli) -> Result<()> {
    let host = host(cli)?;
    let _lock = locked(&host)?;
    match finalize::finalize(&host)? {
        Finalized::NothingStaged => println!("No staged deployment."),
        Finalized::Done(id) => {
            println!(
                "Finalized {}: it is the default for the next boot.",
                id.short()
            );
            match gc::gc(&host, false) {
                Ok(r) => println!("Removed: {r}"),
                Err(e) => tracing::warn!("garbage collection after finalize failed: {e:#}"),
            }
        }
    }
    Ok(())
}
