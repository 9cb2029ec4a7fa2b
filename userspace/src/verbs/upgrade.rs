//! `bootc upgrade` (and `upgrade --check`): stage the newest image the booted
//! deployment follows.

use anyhow::Result;

use crate::cli::{Cli, StageArgs, UpgradeArgs};
use crate::deploy::check;
use crate::deploy::host::Host;
use crate::deploy::stage::{self, StageOpts, StageOutcome};
use crate::imgref::ImageReference;

use super::{host, locked, reboot, start_finalize_unit};

/// `bootc upgrade`.
pub(crate) fn upgrade(cli: &Cli, a: &UpgradeArgs) -> Result<()> {
    let host = host(cli)?;
    if a.check {
        let imgref = stage::booted_imgref(&host)?;
        let c = check::check(&host, &imgref, a.common.tls.insecure())?;
        println!("{c}");
        return Ok(());
    }
    let _lock = locked(&host)?;
    let outcome = stage::stage(&host, &stage_opts(cli, &a.common, None, a.download_only))?;
    report(&host, outcome, a.apply)
}

/// The staging options of `upgrade` and `switch`.
pub(crate) fn stage_opts(
    cli: &Cli,
    a: &StageArgs,
    switch_to: Option<ImageReference>,
    download_only: bool,
) -> StageOpts {
    StageOpts {
        switch_to,
        insecure_registry: a.tls.insecure(),
        quiet: cli.quiet,
        retain: a.keep_previous,
        download_only,
    }
}

/// Prints what staging did; starts the finalize unit (and reboots with `--apply`).
pub(crate) fn report(host: &Host, outcome: StageOutcome, apply: bool) -> Result<()> {
    match outcome {
        StageOutcome::NoUpdate(id) => println!("No update available (booted: {}).", id.short()),
        StageOutcome::Downloaded(id) => println!("Downloaded {}; not staged.", id.short()),
        StageOutcome::Staged(id) => {
            println!(
                "Staged deployment {}; it becomes the default at the next reboot.",
                id.short()
            );
            start_finalize_unit(host)?;
            if apply {
                reboot(host)?;
            }
        }
    }
    Ok(())
}
