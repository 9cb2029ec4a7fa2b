//! `bootc composefs-finalize-staged`: at shutdown, merge /etc into the staged
//! deployment, make it the default, then collect garbage (or complete an interrupted
//! finalize).

use anyhow::Result;

use crate::cli::Cli;
use crate::deploy::finalize::{self, Finalized};

use super::{host, locked};

/// `bootc composefs-finalize-staged`.
pub(crate) fn finalize(cli: &Cli) -> Result<()> {
    let host = host(cli)?;
    let _lock = locked(&host)?;
    match finalize::finalize(&host)? {
        Finalized::NothingStaged => println!("No staged deployment."),
        Finalized::StaleMarker(id) => println!(
            "No staged deployment: the stale marker for {} was removed.",
            id.short()
        ),
        Finalized::DownloadOnly(id) => println!(
            "The staged deployment {} is download-only: not applied (bootc upgrade --from-downloaded applies it).",
            id.short()
        ),
        Finalized::Done { id, resumed, gc } => {
            if resumed {
                println!(
                    "Completed the interrupted finalize of {}: it is the default for the next boot.",
                    id.short()
                );
            } else {
                println!(
                    "Finalized {}: it is the default for the next boot.",
                    id.short()
                );
            }
            if let Some(r) = gc {
                println!("Removed: {r}");
            }
        }
    }
    Ok(())
}
