//! `bootc upgrade` (and `upgrade --check`): stage the newest image the booted
//! deployment follows.

use anyhow::{bail, Result};

use crate::cli::{Cli, SoftRebootMode, StageArgs, UpgradeArgs};
use crate::deploy::check;
use crate::deploy::host::Host;
use crate::deploy::stage::{self, StageOpts, StageOutcome};
use crate::imgref::ImageReference;

use super::{apply, host, locked, start_finalize_unit};

/// `bootc upgrade`.
pub(crate) fn upgrade(cli: &Cli, a: &UpgradeArgs) -> Result<()> {
    let host = host(cli)?;
    let mut opts = stage_opts(cli, &a.common, None, a.download_only);
    opts.tag = a.tag.clone();
    opts.force = a.force;
    if a.check {
        let imgref = stage::target(&host, &opts)?;
        let c = check::check(&host, &imgref, a.common.tls.insecure())?;
        println!("{c}");
        return Ok(());
    }
    let _lock = locked(&host)?;
    if a.from_downloaded {
        return from_downloaded(&host, a.apply, a.soft_reboot);
    }
    let outcome = stage::stage(&host, &opts)?;
    report(&host, outcome, a.apply, a.soft_reboot)
}

/// `upgrade --from-downloaded`: unlocks the deployment `--download-only` staged.
fn from_downloaded(host: &Host, now: bool, soft: Option<SoftRebootMode>) -> Result<()> {
    let Some(id) = host.staged_state()?.pending().cloned() else {
        bail!("no update is staged: run `bootc upgrade --download-only` first");
    };
    if host.staged_download_only() {
        host.set_staged(&id)?;
        println!(
            "Staged deployment {} is no longer download-only; it becomes the default at the next reboot.",
            id.short()
        );
    } else {
        println!(
            "Staged deployment {} is not download-only; it becomes the default at the next reboot.",
            id.short()
        );
    }
    start_finalize_unit(host)?;
    apply(host, &id, soft, now)
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
        tag: None,
        insecure_registry: a.tls.insecure(),
        quiet: cli.quiet,
        progress_fd: a.progress_fd,
        retain: a.keep_previous,
        download_only,
        boot_tries: a.boot_tries,
        force: false,
    }
}

/// Prints what staging did; starts the finalize unit (and reboots, or soft-reboots,
/// with `--apply`).
pub(crate) fn report(
    host: &Host,
    outcome: StageOutcome,
    now: bool,
    soft: Option<SoftRebootMode>,
) -> Result<()> {
    match outcome {
        StageOutcome::NoUpdate(id) => println!("No update available (booted: {}).", id.short()),
        StageOutcome::Unchanged(_) => println!("Image specification is unchanged."),
        StageOutcome::FailedBefore { id, tries } => println!(
            "Not staging {}: it failed to boot{} and the boot loader fell back; \
             `bootc upgrade --force` tries it again.",
            id.short(),
            tries.map(|t| format!(" ({t} tries)")).unwrap_or_default()
        ),
        StageOutcome::Downloaded(id) => println!(
            "Staged deployment {} (download-only): it is not applied until `bootc upgrade --from-downloaded`.",
            id.short()
        ),
        StageOutcome::Staged(id) => {
            println!(
                "Staged deployment {}; it becomes the default at the next reboot.",
                id.short()
            );
            start_finalize_unit(host)?;
            apply(host, &id, soft, now)?;
        }
    }
    Ok(())
}
