//! The command line: clap definitions and one function per verb, no logic.

use std::path::PathBuf;

use anyhow::Result;
use bootc_initramfs_setup::cmdline::Algorithm;
use bootc_initramfs_setup::layout;
use clap::{Args, Parser, Subcommand};

use crate::boot::BootloaderKind;
use crate::imgref::ImageReference;
use crate::install::{self, disk::Filesystem, InstallOpts};

/// Deploy and transactionally in-place with bootable container images.
///
/// This `bootc` uses composefs as its backend: images are pulled into a composefs
/// repository on the physical root and booted directly from a composefs image
/// (EROFS metadata over a content-addressed object store, protected by fs-verity).
#[derive(Debug, Parser)]
#[command(name = "bootc", version, about, long_about)]
pub struct Cli {
    /// The physical root filesystem (holds composefs/ and state/).
    #[arg(long, global = true, value_name = "DIR", default_value = layout::DEFAULT_SYSROOT)]
    pub sysroot: PathBuf,

    /// Don't display progress.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the running container to a target.
    ///
    /// ## Understanding installations
    ///
    /// OCI containers are effectively layers of tarballs with JSON for metadata; they
    /// cannot be booted directly. The `bootc install` flow creates the composefs
    /// repository on the target, pulls the image into it, commits its boot image, writes
    /// the deployment state and installs a boot loader with an entry that boots it.
    #[command(subcommand)]
    Install(InstallCommand),
}

/// `bootc install` verbs.
#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// Install to the target block device.
    ///
    /// The device is partitioned (GPT: an EFI System Partition and a root partition of
    /// the discoverable-partitions root type), formatted, and populated with the image.
    ToDisk(ToDiskArgs),
    /// Install to an externally created filesystem structure.
    ///
    /// The root filesystem must be mounted at ROOT_PATH and the EFI System Partition at
    /// ROOT_PATH/boot.
    ToFilesystem(ToFilesystemArgs),
}

/// Options shared by every install target.
#[derive(Debug, Args)]
pub struct InstallConfigOpts {
    /// The container image to install, e.g. docker://quay.io/example/os:latest,
    /// oci:/path/to/layout:tag, oci-archive:/path/to/image.tar, containers-storage:name.
    #[arg(long, value_name = "IMGREF", help_heading = "Source options")]
    pub source_imgref: ImageReference,

    /// Specify the image to fetch for subsequent updates (default: the source image).
    #[arg(long, value_name = "IMGREF", help_heading = "Source options")]
    pub target_imgref: Option<ImageReference>,

    /// Disable TLS verification when pulling from a registry (e.g. on 127.0.0.1).
    #[arg(long = "insecure-registry", help_heading = "Source options")]
    pub insecure_registry: bool,

    /// Verify TLS when pulling from a registry (--tls-verify=false disables it).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Source options")]
    pub tls_verify: bool,

    /// Add a kernel argument. This option can be provided multiple times.
    ///
    /// Example: --karg=nosmt --karg=console=ttyS0,115200n8
    #[arg(long, value_name = "KARG")]
    pub karg: Vec<String>,

    /// The bootloader to use.
    #[arg(long, value_enum, default_value = "systemd")]
    pub bootloader: BootloaderKind,

    /// The fs-verity hash algorithm of the composefs repository.
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_algorithm)]
    pub composefs_algorithm: Algorithm,

    /// Fail if the target filesystem or kernel cannot enable fs-verity (by default this
    /// is a warning and the system boots with composefs=?).
    #[arg(long)]
    pub require_verity: bool,
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm {s:?} (expected sha256 or sha512)"))
}

/// `bootc install to-disk`.
#[derive(Debug, Args)]
pub struct ToDiskArgs {
    /// Target block device for installation. The entire device will be wiped.
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,

    /// Instead of targeting a block device, write to a file via loopback.
    #[arg(long)]
    pub via_loopback: bool,

    /// Automatically wipe all existing data on device.
    #[arg(long)]
    pub wipe: bool,

    /// Target root filesystem type.
    #[arg(long, value_enum, default_value = "ext4")]
    pub filesystem: Filesystem,

    #[command(flatten)]
    pub config: InstallConfigOpts,
}

/// `bootc install to-filesystem`.
#[derive(Debug, Args)]
pub struct ToFilesystemArgs {
    /// Path to the mounted root filesystem.
    #[arg(value_name = "ROOT_PATH")]
    pub root_path: PathBuf,

    /// Source device specification for the root filesystem (e.g. UUID=…); by default
    /// the UUID of the filesystem mounted at ROOT_PATH.
    #[arg(long, value_name = "SPEC")]
    pub root_mount_spec: Option<String>,

    /// Remove existing contents of ROOT_PATH (except lost+found and boot).
    #[arg(long)]
    pub wipe: bool,

    #[command(flatten)]
    pub config: InstallConfigOpts,
}

fn install_opts(c: &InstallConfigOpts, quiet: bool) -> InstallOpts {
    InstallOpts {
        source_imgref: c.source_imgref.clone(),
        target_imgref: c.target_imgref.clone(),
        bootloader: c.bootloader,
        kargs: c.karg.clone(),
        algorithm: c.composefs_algorithm,
        require_verity: c.require_verity,
        insecure_registry: c.insecure_registry || !c.tls_verify,
        quiet,
    }
}

/// `bootc install to-disk`.
pub fn install_to_disk(cli: &Cli, a: &ToDiskArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet);
    let done = install::to_disk(&opts, &a.device, a.via_loopback, a.wipe, a.filesystem)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}

/// `bootc install to-filesystem`.
pub fn install_to_filesystem(cli: &Cli, a: &ToFilesystemArgs) -> Result<()> {
    let opts = install_opts(&a.config, cli.quiet);
    let done = install::to_filesystem(&opts, &a.root_path, a.root_mount_spec.as_deref(), a.wipe)?;
    println!("Installation complete: deployment {}", done.id);
    Ok(())
}

/// Dispatches to the verb.
pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Install(InstallCommand::ToDisk(a)) => install_to_disk(&cli, a),
        Command::Install(InstallCommand::ToFilesystem(a)) => install_to_filesystem(&cli, a),
    }
}
