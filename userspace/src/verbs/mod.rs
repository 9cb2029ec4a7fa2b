//! One driver per verb, each a thin layer over [`crate::deploy`], [`crate::boot`] and
//! [`crate::repo`]: open the host, take the writer lock, call the library, print.
//! What they share is here: opening the [`Host`] (or handing over to the OSTree
//! backend), the lock, asking for a reboot and starting the finalize unit.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use bootc_initramfs_setup::cmdline::DeploymentId;

use crate::cli::{Cli, SoftRebootMode};
use crate::deploy::host::{booted_from_cmdline, BootedError, Host, HostOpts};
use crate::deploy::soft_reboot;
use crate::deploy::state::Origin;
use crate::lock::{self, WriterLock};

pub(crate) mod config_diff;
pub(crate) mod container;
pub(crate) mod docs;
pub(crate) mod finalize;
pub(crate) mod gc;
pub(crate) mod install;
pub(crate) mod rollback;
pub(crate) mod status;
pub(crate) mod switch;
pub(crate) mod upgrade;
pub(crate) mod usr_overlay;

/// The unit whose `ExecStop=` runs `bootc composefs-finalize-staged` at shutdown.
pub(crate) const FINALIZE_UNIT: &str = "bootc-composefs-finalize-staged.service";

/// Where an OSTree-backend bootc may be installed next to us; `BOOTC_OSTREE_BIN`
/// overrides it.
pub(crate) const OSTREE_BOOTC: &str = "/usr/libexec/bootc-ostree";

/// Runs the verb the command line names.
pub(crate) fn run(cli: Cli) -> Result<()> {
    use crate::cli::{Command, InstallCommand};
    match &cli.command {
        Command::Install(InstallCommand::ToDisk(a)) => install::to_disk(&cli, a),
        Command::Install(InstallCommand::ToFilesystem(a)) => install::to_filesystem(&cli, a),
        Command::Install(InstallCommand::PrintConfiguration(a)) => install::print_configuration(a),
        Command::Upgrade(a) => upgrade::upgrade(&cli, a),
        Command::Switch(a) => switch::switch(&cli, a),
        Command::Rollback(a) => rollback::rollback(&cli, a),
        Command::Status(a) => status::status(&cli, a),
        Command::Gc(a) => gc::gc(&cli, a),
        Command::UsrOverlay(a) => usr_overlay::usr_overlay(a),
        Command::ComposefsFinalizeStaged => finalize::finalize(&cli),
        Command::Container(c) => container::container(c),
        Command::ConfigDiff(a) => config_diff::config_diff(&cli, a),
        Command::Completion(a) => docs::completion(a),
        Command::Man(a) => docs::man(a),
    }
}

/// Opens the host the command line names (handing over to the OSTree backend on a
/// system not booted from composefs, when one is installed).
pub(crate) fn host(cli: &Cli) -> Result<Host> {
    if cli.booted_deployment.is_none() {
        if let Err(BootedError::NotComposefs) = booted_from_cmdline() {
            hand_over_to_ostree()?;
        }
    }
    Host::open(&HostOpts {
        sysroot: cli.sysroot.clone(),
        boot_dir: cli.boot_dir.clone(),
        run_dir: cli.run_dir.clone(),
        booted: cli.booted_deployment.clone(),
    })
}

/// On a system not booted from composefs, runs the OSTree backend's bootc with our
/// arguments if one is installed; returns (and the caller reports the error) if not.
fn hand_over_to_ostree() -> Result<()> {
    let bin = std::env::var_os("BOOTC_OSTREE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| OSTREE_BOOTC.into());
    if !bin.is_file() {
        return Ok(());
    }
    tracing::info!(
        "not booted from composefs: handing over to {}",
        bin.display()
    );
    let err = std::process::Command::new(&bin)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

/// Takes the writer lock of the host's physical root.
pub(crate) fn locked(host: &Host) -> Result<WriterLock> {
    Ok(lock::lock(&host.sysroot, &host.sysroot_path)?)
}

/// Reboots the running system (only says so for another sysroot).
pub(crate) fn reboot(host: &Host) -> Result<()> {
    if !host.is_live() {
        println!(
            "Not rebooting: {} is not the running system.",
            host.sysroot_path.display()
        );
        return Ok(());
    }
    let st = std::process::Command::new("systemctl")
        .arg("reboot")
        .status()
        .context("running systemctl reboot")?;
    anyhow::ensure!(st.success(), "systemctl reboot failed ({st})");
    Ok(())
}

/// The unit `systemctl soft-reboot` starts; systemd without it cannot soft-reboot.
const SOFT_REBOOT_TARGET: &str = "/usr/lib/systemd/system/soft-reboot.target";

/// `--apply` and `--soft-reboot`: boots `target` next, by a soft reboot when `soft`
/// asks for one and the deployment allows it (see [`soft_reboot`]), else (with `now`)
/// by a reboot. Without `now` (`--soft-reboot` alone, as upstream) the next root is
/// only prepared: `systemctl soft-reboot` boots it later. With another --sysroot the
/// next root is prepared under --run-dir but nothing is restarted.
pub(crate) fn apply(
    host: &Host,
    target: &DeploymentId,
    soft: Option<SoftRebootMode>,
    now: bool,
) -> Result<()> {
    let Some(mode) = soft else {
        return if now { reboot(host) } else { Ok(()) };
    };
    let (mut refusal, target_options) = soft_reboot_check(host, target)?;
    if host.is_live() && !std::path::Path::new(SOFT_REBOOT_TARGET).exists() {
        refusal = Some(format!(
            "this systemd has no soft reboot ({SOFT_REBOOT_TARGET})"
        ));
    }
    if let Some(why) = refusal {
        match mode {
            SoftRebootMode::Required => anyhow::bail!(
                "cannot soft-reboot into {}: {why} (use --soft-reboot=auto to reboot instead)",
                target.short()
            ),
            SoftRebootMode::Auto if now => {
                println!("Soft reboot not possible ({why}); rebooting.");
                return reboot(host);
            }
            SoftRebootMode::Auto => {
                println!("Soft reboot not possible ({why}); it boots at the next reboot.");
                return Ok(());
            }
        }
    }
    // The target's own command line: the same fs-verity requirement as at its boot.
    let options = target_options.unwrap_or_else(|| {
        format!(
            "composefs={}{}",
            if host.booted_insecure { "?" } else { "" },
            target
        )
    });
    let config = host.is_live().then(soft_reboot::setup_config_path);
    let next = soft_reboot::prepare_nextroot(&host.sysroot_path, &host.run_dir, &options, config)?;
    println!("Prepared {} at {}.", target.short(), next.display());
    if !now {
        println!("`systemctl soft-reboot` boots it (a reboot boots it too).");
        return Ok(());
    }
    if !host.is_live() {
        println!(
            "Not soft-rebooting: {} is not the running system.",
            host.sysroot_path.display()
        );
        return Ok(());
    }
    let err = std::process::Command::new("systemctl")
        .arg("soft-reboot")
        .exec();
    Err(err).context("running systemctl soft-reboot")
}

/// Why `target` cannot be reached by a soft reboot (None: it can), and the options
/// of its boot entry.
fn soft_reboot_check(
    host: &Host,
    target: &DeploymentId,
) -> Result<(Option<String>, Option<String>)> {
    let current = host.current_set()?;
    let staged = host.staged_set()?;
    let options = |id: &DeploymentId| -> Option<String> {
        staged
            .as_ref()
            .and_then(|s| s.get(id))
            .or_else(|| current.get(id))
            .map(|e| e.bls.options.clone())
    };
    let load = |id: &DeploymentId| Origin::load(&host.sysroot, id).ok();
    let (bo, to) = (load(&host.booted), load(target));
    let (bopt, topt) = (options(&host.booted), options(target));
    let why = soft_reboot::incapable_reason(
        soft_reboot::BootSide {
            id: &host.booted,
            origin: bo.as_ref(),
            options: bopt.as_deref(),
        },
        soft_reboot::BootSide {
            id: target,
            origin: to.as_ref(),
            options: topt.as_deref(),
        },
    );
    Ok((why, topt))
}

/// On the running system, the finalize unit must be active so that its ExecStop
/// runs at shutdown.
pub(crate) fn start_finalize_unit(host: &Host) -> Result<()> {
    if !host.is_live() {
        println!("Run `bootc composefs-finalize-staged` (with the same --sysroot) to apply it.");
        return Ok(());
    }
    let st = std::process::Command::new("systemctl")
        .args(["start", FINALIZE_UNIT])
        .status()
        .with_context(|| format!("starting {FINALIZE_UNIT}"))?;
    anyhow::ensure!(st.success(), "starting {FINALIZE_UNIT} failed ({st})");
    Ok(())
}
