//! The command line: the clap definitions only (no logic); `verbs::run` hands each parsed
//! verb to its driver, so this module imports nothing above it.

use std::path::PathBuf;

use anyhow::Result;
use bootc_initramfs_setup::cmdline::{Algorithm, DeploymentId};
use bootc_initramfs_setup::layout;
use clap::{Args, Parser, Subcommand};

use crate::boot::BootloaderKind;
use crate::imgref::ImageReference;
use crate::install::disk::Filesystem;

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
    pub(crate) sysroot: PathBuf,

    /// Don't display progress.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// The boot partition (ESP) holding loader/entries [default: /boot on the booted
    /// system, SYSROOT/boot with another --sysroot].
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) boot_dir: Option<PathBuf>,

    /// Act as if this deployment were booted, instead of reading /proc/cmdline (for
    /// operating on a mounted disk image).
    #[arg(long, global = true, value_name = "ID", value_parser = parse_id)]
    pub(crate) booted_deployment: Option<DeploymentId>,

    /// Runtime directory holding composefs/staged-deployment.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/run",
        hide = true
    )]
    pub(crate) run_dir: PathBuf,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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

    /// Download and deploy updates to the booted image.
    ///
    /// The new deployment is staged: it becomes the default when the system shuts
    /// down, after the local changes to /etc are merged into it. Only one upgrade can
    /// be staged at a time; a new upgrade replaces the staged one.
    #[command(alias = "update")]
    Upgrade(UpgradeArgs),

    /// Target a new container image reference to boot.
    ///
    /// Like upgrade, but follows IMGREF from now on.
    Switch(SwitchArgs),

    /// Change the bootloader entry ordering; the deployment under `rollback` will be
    /// queued for the next boot, and the current will become rollback. A staged
    /// deployment is discarded. Running it again undoes it.
    Rollback(RollbackArgs),

    /// Display status.
    ///
    /// Shows the booted, staged and rollback deployments: image, digest, version,
    /// timestamp. `--format json` (or yaml) prints a `BootcHost` object
    /// (org.containers.bootc/v1) for programs.
    Status(StatusArgs),

    /// Remove deployments, boot files and repository content no deployment needs.
    Gc(GcArgs),

    /// Add a transient overlayfs on `/usr`.
    ///
    /// Allows temporary package installation that will be discarded on reboot: the
    /// writes land in memory, the deployment's image is unchanged.
    #[command(alias = "usroverlay", alias = "unlock")]
    UsrOverlay(UsrOverlayArgs),

    /// Merge /etc into the staged deployment and make it the default (run at shutdown
    /// by bootc-composefs-finalize-staged.service).
    #[command(hide = true)]
    ComposefsFinalizeStaged,

    /// Operations on a container image's root, run while building it.
    #[command(subcommand)]
    Container(ContainerCommand),

    /// Diff current /etc configuration versus default: the files added, modified and
    /// removed locally, against the booted image's /etc (what the next update carries
    /// over).
    ConfigDiff(ConfigDiffArgs),

    /// Generate a shell completion script (bash, zsh, fish) on stdout.
    ///
    /// Example: `bootc completion bash > /usr/share/bash-completion/completions/bootc`.
    Completion(CompletionArgs),

    /// Write the man pages (bootc.8 and one per verb, e.g. bootc-upgrade.8) into a
    /// directory.
    #[command(hide = true)]
    Man(ManArgs),
}

/// `bootc container` verbs: run on an image's root, typically inside its Containerfile.
#[derive(Debug, Subcommand)]
pub(crate) enum ContainerCommand {
    /// Perform relatively inexpensive static analysis checks as part of a container
    /// build.
    ///
    /// This is intended to be invoked via e.g. `RUN bootc container lint` as part of a
    /// build process; it will error if any problems are detected. Every problem is
    /// listed, one line each.
    Lint(LintArgs),

    /// Print the deployment id (composefs digest) the image at PATH will have once
    /// installed: `sha256:<hex>`, the value of `composefs=` on its command line.
    ///
    /// Mounts below PATH (/proc, /sys, /dev, /run, /tmp, files bind-mounted by the
    /// container engine) are not part of the image and are left out.
    ComputeComposefsDigest(ComputeDigestArgs),

    /// Build a sealed Unified Kernel Image with systemd's ukify: the image's kernel and
    /// initramfs, and a command line of its kargs.d arguments and
    /// `composefs=sha256:<digest of ROOTFS>`.
    ///
    /// Example: bootc container ukify --rootfs /target -- --output /out/uki.efi
    Ukify(UkifyArgs),
}

/// `bootc container lint`.
#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// Operate on the provided rootfs.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub(crate) rootfs: PathBuf,

    /// Make warnings fatal.
    #[arg(long)]
    pub(crate) fatal_warnings: bool,

    /// Instead of executing the lints, just print all available lints (YAML for people;
    /// do not parse it).
    #[arg(long)]
    pub(crate) list: bool,

    /// Skip checking the targeted lints, by name. Use `--list` to discover the set of
    /// available lints.
    ///
    /// Example: --skip nonempty-boot --skip var-log
    #[arg(long, value_name = "LINT")]
    pub(crate) skip: Vec<String>,

    /// Don't truncate the output. By default, only a limited number of entries are
    /// shown for each lint, followed by a count of remaining entries.
    #[arg(long)]
    pub(crate) no_truncate: bool,
}

/// `bootc config-diff`.
#[derive(Debug, Args)]
pub(crate) struct ConfigDiffArgs {
    /// The output format [default: human].
    #[arg(long, value_enum)]
    pub(crate) format: Option<ConfigDiffFormat>,
}

/// Output formats of `bootc config-diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConfigDiffFormat {
    /// One line per changed path (`Added`, `Modified`, `Removed`); may change between
    /// versions.
    #[value(alias = "humanreadable")]
    Human,
    /// JSON: an object with the lists `added`, `modified` and `removed` (paths under /etc).
    Json,
    /// YAML: the same object as json.
    Yaml,
}

/// `bootc completion`.
#[derive(Debug, Args)]
pub(crate) struct CompletionArgs {
    /// Shell type to generate.
    #[arg(value_enum, value_name = "SHELL")]
    pub(crate) shell: clap_complete::Shell,
}

/// `bootc man`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Where to write the pages (created if missing), e.g. /usr/share/man/man8.
    #[arg(long, value_name = "DIR")]
    pub(crate) directory: PathBuf,
}

/// `bootc upgrade`.
#[derive(Debug, Args)]
pub(crate) struct UpgradeArgs {
    /// Check if an update is available without applying it.
    #[arg(long, conflicts_with_all = ["apply", "download_only"])]
    pub(crate) check: bool,

    /// Restart or reboot into the new target image once it is staged.
    #[arg(long)]
    pub(crate) apply: bool,

    /// Soft-reboot (restart userspace only, keeping the kernel) into the next deployment
    /// when it has the booted kernel, initramfs and kernel arguments: prepared at
    /// /run/nextroot, so that `systemctl soft-reboot` boots it; with --apply, now.
    /// `required` refuses when it cannot; `auto` reboots instead (with --apply).
    #[arg(long, value_enum, value_name = "MODE", conflicts_with_all = ["check", "download_only"])]
    pub(crate) soft_reboot: Option<SoftRebootMode>,

    /// Download and stage the update without applying it: it is not applied at
    /// shutdown until `upgrade --from-downloaded`, and a reboot before that discards it.
    #[arg(long, conflicts_with = "apply")]
    pub(crate) download_only: bool,

    /// Upgrade to another tag of the booted image (the same reference with its tag
    /// replaced), and follow that tag from now on.
    #[arg(long, value_name = "TAG")]
    pub(crate) tag: Option<String>,
    /// Stage the image even if its deployment already failed to boot (ran out of boot
    /// tries); without it, upgrade says so and stages nothing.
    #[arg(long, conflicts_with_all = ["check", "from_downloaded"])]
    pub(crate) force: bool,

    /// Apply a staged deployment that was previously downloaded with --download-only,
    /// without fetching anything: it is applied at the next shutdown or reboot (with
    /// --apply, now).
    #[arg(long, conflicts_with_all = ["check", "download_only"])]
    pub(crate) from_downloaded: bool,

    #[command(flatten)]
    pub(crate) common: StageArgs,
}

/// `bootc switch`.
#[derive(Debug, Args)]
pub(crate) struct SwitchArgs {
    /// Target image to use for the next boot, e.g. quay.io/example/os:latest (a
    /// registry image, as with --transport registry), oci:/path/to/layout:tag,
    /// oci-archive:/path/to/image.tar or containers-storage:name.
    #[arg(value_name = "IMGREF")]
    pub(crate) target: String,

    /// The transport; e.g. registry, oci, oci-archive, containers-storage. Defaults to
    /// `registry` (or the transport IMGREF starts with).
    #[arg(long, value_name = "TRANSPORT")]
    pub(crate) transport: Option<String>,

    /// Restart or reboot into the new target image once it is staged.
    #[arg(long)]
    pub(crate) apply: bool,

    /// Soft-reboot (restart userspace only, keeping the kernel) into the next deployment
    /// when it has the booted kernel, initramfs and kernel arguments: prepared at
    /// /run/nextroot, so that `systemctl soft-reboot` boots it; with --apply, now.
    /// `required` refuses when it cannot; `auto` reboots instead (with --apply).
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) soft_reboot: Option<SoftRebootMode>,

    /// Retain reference to currently booted image: its image stays in the repository
    /// after its deployment leaves the boot entries.
    #[arg(long)]
    pub(crate) retain: bool,

    #[command(flatten)]
    pub(crate) common: StageArgs,
}

/// How a registry is read: one option, spelled as podman and skopeo do.
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// Require HTTPS and verify certificates when pulling from a registry;
    /// --tls-verify=false disables it (e.g. a registry on 127.0.0.1).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub(crate) tls_verify: bool,

    /// Same as --tls-verify=false (the older spellings, kept for scripts).
    #[arg(long, alias = "insecure-registry", hide = true)]
    pub(crate) tls_verify_false: bool,
}

impl TlsArgs {
    /// TLS verification is off.
    pub(crate) fn insecure(&self) -> bool {
        !self.tls_verify || self.tls_verify_false
    }
}

/// Options of every verb that stages a deployment.
#[derive(Debug, Args)]
pub(crate) struct StageArgs {
    #[command(flatten)]
    pub(crate) tls: TlsArgs,

    /// How many previous deployments keep a boot entry after the new one (at least 1:
    /// the booted deployment stays as the rollback).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = parse_keep_previous)]
    pub(crate) keep_previous: usize,

    /// Boot counting: the new deployment gets N tries to reach boot-complete.target;
    /// after that the boot loader falls back to the previous deployment by itself. 0
    /// turns it off. Default: the setting the booted deployment was staged or installed
    /// with, else 3. systemd-boot only.
    #[arg(long, value_name = "N")]
    pub(crate) boot_tries: Option<u32>,

    /// Write progress as JSON lines (upstream bootc's format: a `Start` line, then
    /// `ProgressBytes` lines for the pull) to this already open file descriptor.
    #[arg(long, value_name = "FD")]
    pub(crate) progress_fd: Option<crate::progress::ProgressFd>,
}

fn parse_keep_previous(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(
            "must be at least 1: the booted deployment always keeps its entry \
                       (it is the rollback)"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of entries")),
    }
}

/// `--soft-reboot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SoftRebootMode {
    /// Soft-reboot, or refuse when the new deployment cannot be reached that way.
    Required,
    /// Soft-reboot when possible, else reboot.
    Auto,
}

/// `bootc rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// Reboot into the rollback deployment.
    #[arg(long)]
    pub(crate) apply: bool,

    /// Soft-reboot (restart userspace only, keeping the kernel) into the next deployment
    /// when it has the booted kernel, initramfs and kernel arguments: prepared at
    /// /run/nextroot, so that `systemctl soft-reboot` boots it; with --apply, now.
    /// `required` refuses when it cannot; `auto` reboots instead (with --apply).
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) soft_reboot: Option<SoftRebootMode>,
}

/// Output formats of `bootc status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// For people; may change between versions.
    #[value(alias = "humanreadable")]
    Human,
    /// JSON (BootcHost).
    Json,
    /// YAML (BootcHost).
    Yaml,
}

/// `bootc status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The output format [default: human].
    #[arg(long, value_enum)]
    pub(crate) format: Option<OutputFormat>,

    /// Same as --format=json.
    #[arg(long, conflicts_with = "format", hide = true)]
    pub(crate) json: bool,

    /// The desired format version. There is currently one supported version, which is
    /// exposed as both `0` and `1`.
    #[arg(long, value_name = "N", value_parser = parse_format_version)]
    pub(crate) format_version: Option<u32>,

    /// Only display status for the booted deployment.
    #[arg(long)]
    pub(crate) booted: bool,

    /// Include additional fields in the human-readable format (whether each deployment
    /// can be soft-rebooted into, whether it is download-only).
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
}

/// `bootc usr-overlay`.
#[derive(Debug, Args)]
pub(crate) struct UsrOverlayArgs {
    /// Mount the overlayfs as read-only. A read-only overlayfs is useful since it may be
    /// remounted as read/write in a private mount namespace and written to while the
    /// mount point remains read-only to the rest of the system.
    #[arg(long)]
    pub(crate) read_only: bool,

    /// The root whose /usr gets the overlay (for tests on a tree other than /).
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub(crate) root: PathBuf,
}

/// `bootc gc`.
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Only print what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

fn parse_format_version(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v @ (0 | 1)) => Ok(v),
        _ => Err(format!(
            "unsupported format version {s:?} (supported: 0 and 1, which are the same)"
        )),
    }
}

fn parse_id(s: &str) -> Result<DeploymentId, String> {
    DeploymentId::parse(s).map_err(|e| e.to_string())
}

/// `bootc install` verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum InstallCommand {
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
    /// Output JSON to stdout containing the merged installation configuration
    /// (`bootc/install/*.toml` under /usr/lib, /usr/local/lib, /etc and /run) as it
    /// applies to this architecture.
    PrintConfiguration(PrintConfigurationArgs),
}

/// `bootc install print-configuration`.
#[derive(Debug, Args)]
pub(crate) struct PrintConfigurationArgs {
    /// Print all configuration, including what install handles internally (kargs,
    /// karg-deletes).
    #[arg(long)]
    pub(crate) all: bool,

    /// Read the configuration of the tree at DIR instead of the running root.
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub(crate) root: PathBuf,
}

/// Options shared by every install target.
#[derive(Debug, Args)]
pub(crate) struct InstallConfigOpts {
    /// The container image to install, e.g. docker://quay.io/example/os:latest,
    /// oci:/path/to/layout:tag, oci-archive:/path/to/image.tar, containers-storage:name.
    #[arg(long, value_name = "IMGREF", help_heading = "Source options")]
    pub(crate) source_imgref: ImageReference,

    /// Specify the image to fetch for subsequent updates (default: the source image),
    /// a registry image unless --target-transport or a transport prefix says otherwise.
    #[arg(long, value_name = "IMGREF", help_heading = "Source options")]
    pub(crate) target_imgref: Option<String>,

    /// The transport of --target-imgref; e.g. registry, oci, oci-archive,
    /// containers-storage. Defaults to `registry`.
    #[arg(
        long,
        value_name = "TRANSPORT",
        requires = "target_imgref",
        help_heading = "Source options"
    )]
    pub(crate) target_transport: Option<String>,

    #[command(flatten, next_help_heading = "Source options")]
    pub(crate) tls: TlsArgs,

    /// Add a kernel argument. This option can be provided multiple times.
    ///
    /// Example: --karg=nosmt --karg=console=ttyS0,115200n8
    #[arg(long, value_name = "KARG")]
    pub(crate) karg: Vec<String>,

    /// Remove a kernel argument: by name (every argument of that name), or an exact
    /// name=value. It applies to the install configuration's and the image's kargs.d
    /// arguments, not to --karg. This option can be provided multiple times.
    ///
    /// Example: --karg-delete=nosmt --karg-delete=console=ttyS0
    #[arg(long, value_name = "KARG")]
    pub(crate) karg_delete: Vec<String>,

    /// The path to an `authorized_keys` that will be injected into the `root` account:
    /// written to root's home in /var (the image's /root must be a symlink into /var,
    /// e.g. /root -> var/roothome).
    #[arg(long, value_name = "FILE")]
    pub(crate) root_ssh_authorized_keys: Option<PathBuf>,

    /// The bootloader to use.
    #[arg(long, value_enum, default_value = "systemd")]
    pub(crate) bootloader: BootloaderKind,

    /// Boot counting for later updates: each new deployment gets N tries to reach
    /// boot-complete.target before the boot loader falls back (0: off; default 3).
    /// Recorded in the origin; `upgrade/switch --boot-tries` override it.
    #[arg(long, value_name = "N")]
    pub(crate) boot_tries: Option<u32>,

    /// The fs-verity hash algorithm of the composefs repository.
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_algorithm)]
    pub(crate) composefs_algorithm: Algorithm,

    /// Fail if the target filesystem or kernel cannot enable fs-verity (by default this
    /// is a warning and the system boots with composefs=?).
    #[arg(long)]
    pub(crate) require_verity: bool,

    /// Use the composefs backend. It is the only backend of this bootc: accepted so that
    /// upstream's install scripts run unchanged.
    #[arg(long)]
    pub(crate) composefs_backend: bool,

    /// Make fs-verity validation optional in case the filesystem doesn't support it.
    /// This is the default here (a warning, and the system boots with composefs=?).
    #[arg(long, conflicts_with = "require_verity")]
    pub(crate) allow_missing_verity: bool,

    /// Write progress as JSON lines (upstream bootc's format: a `Start` line, then
    /// `ProgressBytes` lines for the pull) to this already open file descriptor.
    #[arg(long, value_name = "FD")]
    pub(crate) progress_fd: Option<crate::progress::ProgressFd>,
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse::<Algorithm>()
        .map_err(|_| format!("unknown algorithm {s:?} (expected sha256 or sha512)"))
}

/// `bootc install to-disk`.
#[derive(Debug, Args)]
pub(crate) struct ToDiskArgs {
    /// Target block device for installation. The entire device will be wiped.
    #[arg(value_name = "DEVICE")]
    pub(crate) device: PathBuf,

    /// Instead of targeting a block device, write to a file via loopback.
    #[arg(long)]
    pub(crate) via_loopback: bool,

    /// Automatically wipe all existing data on device.
    #[arg(long)]
    pub(crate) wipe: bool,

    /// Target root filesystem type [default: the image's install configuration
    /// (root-fs-type), else ext4].
    #[arg(long, value_enum)]
    pub(crate) filesystem: Option<Filesystem>,

    #[command(flatten)]
    pub(crate) config: InstallConfigOpts,
}

/// `bootc install to-filesystem`.
#[derive(Debug, Args)]
pub(crate) struct ToFilesystemArgs {
    /// Path to the mounted root filesystem.
    #[arg(value_name = "ROOT_PATH")]
    pub(crate) root_path: PathBuf,

    /// Source device specification for the root filesystem (e.g. UUID=…); by default
    /// the UUID of the filesystem mounted at ROOT_PATH.
    #[arg(long, value_name = "SPEC")]
    pub(crate) root_mount_spec: Option<String>,

    /// Remove existing contents of ROOT_PATH (except lost+found and boot).
    #[arg(long)]
    pub(crate) wipe: bool,

    #[command(flatten)]
    pub(crate) config: InstallConfigOpts,
}

/// `bootc container compute-composefs-digest`.
#[derive(Debug, Args)]
pub(crate) struct ComputeDigestArgs {
    /// The root filesystem of the image.
    #[arg(value_name = "PATH", default_value = "/")]
    pub(crate) path: PathBuf,

    /// The fs-verity algorithm of the repository the image will be installed into
    /// (`install --composefs-algorithm`).
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_algorithm)]
    pub(crate) algorithm: Algorithm,

    /// Also write the boot-transformed tree as a composefs dumpfile to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) write_dumpfile_to: Option<PathBuf>,
}

/// `bootc container ukify`.
#[derive(Debug, Args)]
pub(crate) struct UkifyArgs {
    /// The root filesystem of the image.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub(crate) rootfs: PathBuf,

    /// The kernel version (a directory under /usr/lib/modules) when the image has more
    /// than one.
    #[arg(long, value_name = "K")]
    pub(crate) kver: Option<String>,

    /// Write `composefs=?…`: the booted root does not require fs-verity (for
    /// filesystems without it).
    #[arg(long)]
    pub(crate) allow_missing_verity: bool,

    /// The fs-verity algorithm of the repository the image will be installed into.
    #[arg(long, value_name = "ALG", default_value = "sha256", value_parser = parse_algorithm)]
    pub(crate) algorithm: Algorithm,

    /// Arguments passed to `ukify build` as they are (e.g. --output, signing keys).
    #[arg(last = true, value_name = "UKIFY_ARGS")]
    pub(crate) ukify_args: Vec<std::ffi::OsString>,
}
