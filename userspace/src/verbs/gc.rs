//! `bootc gc`: remove what no deployment needs.

use anyhow::Result;

use crate::cli::{Cli, GcArgs};
use crate::deploy::gc;

use super::{host, locked};

/// `bootc gc`.
pub(crate) fn gc(cli: &Cli, a: &GcArgs) -> Result<()> {
    let host = host(cli)?;
    let _lock = locked(&host)?;
    let r = gc::gc(&host, a.dry_run)?;
    let verb = if a.dry_run { "Would remove" } else { "Removed" };
    println!("{verb}: {r}");
    for d in &r.deployments {
        println!("  deployment {d}");
    }
    for b in &r.boot_dirs {
        println!("  boot directory {b}");
    }
    for t in &r.debris {
        println!("  leftover {t}");
    }
    for k in &r.kept {
        println!("Kept {k}");
    }
    Ok(())
}
