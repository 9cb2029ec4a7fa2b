//! `bootc install to-disk` and `install to-filesystem`: drivers over [`crate::install`].

use anyhow::{Context, Result};

use crate::cli::{Cli, InstallConfigOpts, ToDiskArgs, ToFilesystemArgs};
use crate::imgref::ImageReference;
use crate::install::{self, InstallOpts};

fn install_opts(c: &InstallConfigOpts, quiet: bool) -> Result<InstallOpts> {
    let target_imgref = c
        .target_imgref
        .as_deref()
        .map(|t| ImageReference::parse_with_default(t, c.target_transport.as_deref()))
        .transpose()
        .context("--target-imgref")?;
    Ok(InstallOpts {
        source_imgref: c.source_imgref.clone(),
        target_imgref,
        bootloader: c.bootloader,
        boot_tries: c.boot_tries,
        kargs: c.karg.clone(),
        algorithm: c.composefs_algorithm,
        require_verity: c.require_verity,
        insecure_registry: c.tls.insecure(),
        quiet,
    })
}

/// `bootc install to-disk`.
pub(crate) fn to_disk(cli: &Cli, a: &ToDiskArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet)?;
    let done = install::to_disk(&opts, &a.device, a.via_loopback, a.wipe, a.filesystem)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}

/// `bootc install to-filesystem`.
pub(crate) fn to_filesystem(cli: &Cli, a: &ToFilesystemArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet)?;
    let done = install::to_filesystem(&opts, &a.root_path, a.root_mount_spec.as_deref(), a.wipe)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}
