//! `bootc install to-disk` and `install to-filesystem`: drivers over [`crate::install`].

use anyhow::{Context, Result};

use crate::cli::{Cli, InstallConfigOpts, PrintConfigurationArgs, ToDiskArgs, ToFilesystemArgs};
use crate::imgref::ImageReference;
use crate::install::disk::Filesystem;
use crate::install::{self, config, InstallOpts};

/// The install options; `root_fs_chosen`: see [`InstallOpts::root_fs_chosen`]. Files
/// named by options are read now, so a wrong path fails before anything is written.
fn install_opts(c: &InstallConfigOpts, quiet: bool, root_fs_chosen: bool) -> Result<InstallOpts> {
    if let Some(fd) = c.progress_fd {
        fd.check().context("--progress-fd")?;
    }
    for d in &c.karg_delete {
        config::check_delete(d).context("--karg-delete")?;
    }
    let root_ssh_authorized_keys = c
        .root_ssh_authorized_keys
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("--root-ssh-authorized-keys: reading {}", p.display()))
        })
        .transpose()?;
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
        karg_delete: c.karg_delete.clone(),
        root_ssh_authorized_keys,
        root_fs_chosen,
        algorithm: c.composefs_algorithm,
        require_verity: c.require_verity,
        insecure_registry: c.tls.insecure(),
        quiet,
        progress_fd: c.progress_fd,
    })
}

/// `bootc install to-disk`.
pub(crate) fn to_disk(cli: &Cli, a: &ToDiskArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet, a.filesystem.is_some())?;
    let fs = a.filesystem.unwrap_or(Filesystem::Ext4);
    let done = install::to_disk(&opts, &a.device, a.via_loopback, a.wipe, fs)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}

/// `bootc install to-filesystem`.
pub(crate) fn to_filesystem(cli: &Cli, a: &ToFilesystemArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet, true)?;
    let done = install::to_filesystem(&opts, &a.root_path, a.root_mount_spec.as_deref(), a.wipe)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}

/// `bootc install print-configuration`: the merged configuration as one line of JSON.
pub(crate) fn print_configuration(a: &PrintConfigurationArgs) -> Result<()> {
    let c = config::from_root(&a.root)?.unwrap_or_default();
    println!("{}", c.to_json(a.all));
    Ok(())
}
