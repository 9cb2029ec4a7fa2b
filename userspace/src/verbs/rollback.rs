//! `bootc rollback`: boot the previous deployment next (or discard a staged update).

use anyhow::Result;

use crate::cli::{Cli, RollbackArgs};
use crate::deploy::rollback;

use super::{apply, host, locked};

/// `bootc rollback`.
pub(crate) fn rollback(cli: &Cli, a: &RollbackArgs) -> Result<()> {
    let host = host(cli)?;
    let _lock = locked(&host)?;
    let r = rollback::rollback(&host)?;
    if let Some(d) = &r.discarded {
        println!("Discarded the staged deployment {}.", d.short());
    }
    println!("Next boot: {}.", r.default.short());
    apply(&host, &r.default, a.soft_reboot, a.apply)
}
