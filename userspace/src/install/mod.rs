//! `bootc install to-disk` and `install to-filesystem`: partition and format (to-disk),
//! create the repository, pull the image, commit its boot image, write the deployment
//! state, install the boot loader and write the boot entry.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{Algorithm, ComposefsKarg};
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags, CWD};

use crate::boot::bls::BlsEntry;
use crate::boot::entries::Entry;
use crate::boot::{bls, uki_deploy};
use crate::boot::{esp_in_root, Bootloader, BootloaderKind};
use crate::deploy::state::{self, Origin};
use crate::imgref::ImageReference;
use crate::repo::{self, PullOpts};
use crate::sys::cmd::{cap, which};
use crate::sys::durable;
use crate::sys::loopdev::Loopback;
use crate::sys::mount::{mount_source, Mount, MountPoint};

pub(crate) mod config;
pub(crate) mod disk;
pub(crate) mod ssh;

/// What every install needs, whatever the target.
#[derive(Debug, Clone)]
pub(crate) struct InstallOpts {
    /// The image to install.
    pub(crate) source_imgref: ImageReference,
    /// What the origin records for upgrades (default: the source).
    pub(crate) target_imgref: Option<ImageReference>,
    /// The boot loader.
    pub(crate) bootloader: BootloaderKind,
    /// Boot tries later updates get (recorded in the origin).
    pub(crate) boot_tries: Option<u32>,
    /// Extra kernel arguments (`--karg`).
    pub(crate) kargs: Vec<String>,
    /// Kernel arguments to remove (`--karg-delete`): a name, or an exact `name=value`.
    pub(crate) karg_delete: Vec<String>,
    /// The content of an `authorized_keys` file for root (`--root-ssh-authorized-keys`).
    pub(crate) root_ssh_authorized_keys: Option<String>,
    /// The root filesystem type was chosen by the user (`to-disk --filesystem`) or
    /// exists already (`to-filesystem`): the image's `root-fs-type` is not followed.
    pub(crate) root_fs_chosen: bool,
    /// The repository's fs-verity algorithm.
    pub(crate) algorithm: Algorithm,
    /// Fail instead of warning when fs-verity is unavailable.
    pub(crate) require_verity: bool,
    /// Skip TLS verification for the registry.
    pub(crate) insecure_registry: bool,
    /// No progress output.
    pub(crate) quiet: bool,
    /// `--progress-fd`: JSON progress lines on this descriptor.
    pub(crate) progress_fd: Option<crate::progress::ProgressFd>,
}

/// What was installed.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    /// The deployment id.
    pub(crate) id: bootc_initramfs_setup::cmdline::DeploymentId,
}

/// `install to-disk`.
pub(crate) fn to_disk(
    opts: &InstallOpts,
    target: &Path,
    via_loopback: bool,
    wipe: bool,
    filesystem: disk::Filesystem,
) -> Result<Installed> {
    opts.bootloader.get().check()?;
    let size = disk::size_of(target)?;
    disk::check_size(target, size)?;
    if !via_loopback {
        disk::require_block_device(target)?;
    } else if !std::fs::metadata(target)
        .with_context(|| format!("{}", target.display()))?
        .is_file()
    {
        bail!(
            "--via-loopback expects a disk image file, {} is not a regular file",
            target.display()
        );
    }

    let loopback = if via_loopback {
        Some(Loopback::attach(target)?)
    } else {
        None
    };
    let dev: PathBuf = loopback
        .as_ref()
        .map(|l| l.dev().to_path_buf())
        .unwrap_or_else(|| target.to_path_buf());
    disk::check_not_mounted(&dev)?;
    let found = disk::signatures(&dev)?;
    if !found.is_empty() {
        if !wipe {
            bail!(
                "{} is not empty (found {}); pass --wipe to erase it",
                target.display(),
                listing(&found)
            );
        }
        tracing::info!("wiping {}", target.display());
        disk::wipe(&dev)?;
    }
    tracing::info!("partitioning {}", target.display());
    let (esp_dev, root_dev) = disk::partition(&dev)?;
    disk::mkfs(&esp_dev, &root_dev, filesystem)?;
    let uuid = disk::fs_uuid(&root_dev)?;

    let mnt = MountPoint::new("install")?;
    let root_mount = Mount::new(&root_dev, mnt.path(), "ext4")?;
    let esp_path = mnt.path().join(esp_in_root());
    std::fs::create_dir(&esp_path).with_context(|| format!("creating {}", esp_path.display()))?;
    // A kernel without vfat (like some CI hosts) cannot mount the ESP: stage its contents
    // in the root's (empty) /boot and copy them onto the FAT filesystem with mtools.
    let esp_mount = Mount::try_new(&esp_dev, &esp_path, "vfat")?;
    if esp_mount.is_none() {
        tracing::warn!(
            "this kernel cannot mount vfat: staging the ESP contents and writing them with mtools"
        );
        if which("mcopy").is_none() {
            bail!("this kernel cannot mount vfat and mtools (mcopy) is not installed to write the ESP without mounting it");
        }
    }

    let what = format!("the root filesystem ({})", root_dev.display());
    let installed = install_to_root(opts, mnt.path(), &esp_path, &format!("UUID={uuid}"), &what)?;

    match esp_mount {
        Some(m) => m.unmount()?,
        None => {
            disk::copy_to_fat(&esp_path, &esp_dev)?;
            let root_fd = durable::open_dir(CWD, mnt.path())?;
            durable::remove_all(&root_fd, esp_in_root())?;
            durable::ensure_dir(&root_fd, esp_in_root(), 0o755)?;
            durable::syncfs(&root_fd)?;
        }
    }
    root_mount.unmount()?;
    drop(mnt);
    drop(loopback);
    Ok(installed)
}

/// Names for a message: all of them when they fit, else their count and the first
/// ones, cut with "…" (a root full of files must not make a page-long error).
fn listing(names: &[String]) -> String {
    let joined = names.join(", ");
    if joined.chars().count() <= 160 {
        joined
    } else {
        format!("{} entries: {}", names.len(), cap(&joined, 120))
    }
}

/// `install to-filesystem`: `root` is the mounted root filesystem, with the ESP mounted
/// on `root/boot`.
pub(crate) fn to_filesystem(
    opts: &InstallOpts,
    root: &Path,
    root_mount_spec: Option<&str>,
    wipe: bool,
) -> Result<Installed> {
    opts.bootloader.get().check()?;
    let root = std::fs::canonicalize(root).with_context(|| format!("{}", root.display()))?;
    if !root.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let spec = match root_mount_spec {
        Some(s) => s.to_string(),
        None => {
            let src = mount_source(&root)?.with_context(|| {
                format!("{} is not a mount point; mount the root filesystem there or pass --root-mount-spec", root.display())
            })?;
            format!("UUID={}", disk::fs_uuid(Path::new(&src))?)
        }
    };
    let esp = root.join(esp_in_root());
    if !esp.is_dir() {
        bail!("{} does not exist: mount the ESP there", esp.display());
    }
    if mount_source(&esp)?.is_none() {
        tracing::warn!("{} is not a mount point: boot files are written to the root filesystem's /boot (mount the ESP there to install to it)", esp.display());
    }
    // Refuse to mix with an existing installation unless asked to replace it.
    let mut leftovers: Vec<String> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found" && n != esp_in_root())
        .collect();
    leftovers.sort();
    if !leftovers.is_empty() {
        if !wipe {
            bail!(
                "{} is not empty (found {}); pass --wipe to remove its contents",
                root.display(),
                listing(&leftovers)
            );
        }
        let fd = durable::open_dir(CWD, &root)?;
        for n in &leftovers {
            durable::remove_all(&fd, n)
                .with_context(|| format!("wiping {}", root.join(n).display()))?;
        }
    }
    let what = root.display().to_string();
    install_to_root(opts, &root, &esp, &spec, &what)
}

/// Whether the filesystem holding `dir` (and this kernel) can enable fs-verity.
fn probe_verity(dir: &OwnedFd) -> Result<(), String> {
    let name = durable::tmp_name("verity-probe");
    let name = name.as_str();
    let _ = unlinkat(dir, name, AtFlags::empty());
    let res = (|| {
        let fd = openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| e.to_string())?;
        rustix::io::write(&fd, &[0u8; 4096]).map_err(|e| e.to_string())?;
        drop(fd);
        let ro = openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| e.to_string())?;
        composefs::fsverity::enable_verity_raw::<Sha256HashValue>(&ro).map_err(|e| e.to_string())
    })();
    let _ = unlinkat(dir, name, AtFlags::empty());
    res
}

/// The install proper, on a mounted root with the boot partition (ESP) at `boot`.
/// `what` names the root filesystem in messages.
pub(crate) fn install_to_root(
    opts: &InstallOpts,
    root: &Path,
    boot: &Path,
    root_spec: &str,
    what: &str,
) -> Result<Installed> {
    let root_fd = durable::open_dir(CWD, root)?;
    let verity = match probe_verity(&root_fd) {
        Ok(()) => true,
        Err(e) if opts.require_verity => {
            bail!("fs-verity is required (--require-verity) but {what} cannot enable it on this kernel: {e}")
        }
        Err(e) => {
            tracing::warn!(
                "fs-verity is not available on {what} ({e}): the repository is created without verity and the system boots with composefs=? (not tamper-proof)"
            );
            false
        }
    };
    // A failed install leaves the root and the boot partition as it found them: what
    // it created at their top level (the repository, state/, the loader, entries,
    // kernels) is removed; what was there before is never touched.
    let boot_fd = durable::open_dir(CWD, boot)?;
    let root_before = top_level(&root_fd)?;
    let boot_before = top_level(&boot_fd)?;
    let result = with_algorithm!(opts.algorithm, H => {
        install_typed::<H>(opts, root, &root_fd, boot, root_spec, verity)
    });
    if result.is_err() {
        for (fd, before, what) in [
            (&boot_fd, &boot_before, boot),
            (&root_fd, &root_before, root),
        ] {
            // The install's own error is the one to report, not one from cleaning up.
            let now = top_level(fd).unwrap_or_default();
            for name in now.difference(before) {
                if let Err(e) = durable::remove_all(fd, name) {
                    tracing::warn!(
                        "could not remove {} after the failed install: {e:#}",
                        what.join(name).display()
                    );
                }
            }
        }
        let _ = durable::syncfs(&root_fd);
        let _ = durable::syncfs(&boot_fd);
    }
    result
}

/// The image's `root-fs-type` against the filesystem the install makes: only ext4 is
/// made here, so another type is refused unless the user chose (`--filesystem`).
fn check_root_fs_type(opts: &InstallOpts, config: &config::InstallConfig) -> Result<()> {
    match config.root_fs_type {
        Some(t) if t != config::RootFsType::Ext4 && !opts.root_fs_chosen => bail!(
            "the image's install configuration asks for a {} root filesystem, but the composefs backend formats ext4 (with verity) only; pass --filesystem ext4 to install anyway",
            t.name()
        ),
        Some(t) => {
            tracing::debug!("the image's root-fs-type {} is not followed here", t.name());
            Ok(())
        }
        None => Ok(()),
    }
}

/// The names in a directory.
fn top_level(dir: &OwnedFd) -> Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    let mut d = rustix::fs::Dir::read_from(dir)
        .with_context(|| format!("reading {}", durable::fd_path(dir)))?;
    while let Some(e) = d.read() {
        let e = e.with_context(|| format!("reading {}", durable::fd_path(dir)))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            out.insert(n);
        }
    }
    Ok(out)
}

fn install_typed<H: FsVerityHashValue>(
    opts: &InstallOpts,
    root: &Path,
    root_fd: &OwnedFd,
    boot: &Path,
    root_spec: &str,
    verity: bool,
) -> Result<Installed> {
    let source = opts
        .source_imgref
        .absolutize()
        .context("resolving the image path")?;
    let target = match &opts.target_imgref {
        Some(t) => t.absolutize().context("resolving the target image path")?,
        None => source.clone(),
    };
    let repo = repo::init::<H>(root_fd, verity)?;
    let (pulled, tree) = repo::pull_tree(
        &repo,
        &source,
        &PullOpts {
            insecure_registry: opts.insecure_registry,
            progress: crate::progress::reporter_for(
                opts.quiet,
                opts.progress_fd,
                &source.to_string(),
            )?,
            // Into an empty repository: every object is written by this pull.
            check_complete: false,
        },
    )
    .map_err(bls::explain_image_error)?;
    let id = pulled.id.clone();
    tracing::info!("deployment {}", id.short());
    let (fs, boot_entries) = repo::pulled_boot_tree(&repo, &pulled, tree)
        .map_err(bls::explain_image_error)
        .with_context(|| format!("installing {source}"))?;
    // A sealed UKI in the image makes it a UKI deployment; checked (its composefs=
    // against this id, its addons) before anything is written.
    let sealed = uki_deploy::find(&repo, &boot_entries, &id)
        .with_context(|| format!("installing {source}"))?;
    if let Some(u) = &sealed {
        if !opts.kargs.is_empty() || !opts.karg_delete.is_empty() {
            bail!(
                "{source} boots the sealed UKI {}: its kernel command line is fixed, --karg and --karg-delete cannot change it (rebuild the UKI with the arguments in kargs.d)",
                u.path
            );
        }
        return install_uki(
            opts, root, root_fd, boot, &source, &target, &repo, &fs, &pulled, u,
        );
    }
    let kernel = bls::find_kernel(boot_entries).with_context(|| format!("installing {source}"))?;
    let digest = bls::boot_digest(&repo, &kernel)?;
    let os = bls::os_info(&repo, &fs)?;
    let image_kargs = bls::image_kargs(&repo, &fs)?;
    let config = config::from_image(&repo, &fs)?.unwrap_or_default();
    check_root_fs_type(opts, &config)?;
    let ssh_home = match &opts.root_ssh_authorized_keys {
        Some(_) => Some(ssh::root_home_in_var(&fs)?),
        None => None,
    };
    let mut delete = config.karg_deletes.clone().unwrap_or_default();
    delete.extend(opts.karg_delete.iter().cloned());
    let options = bls::install_options(
        root_spec,
        &bls::InstallKargs {
            config: config.kargs.as_deref().unwrap_or_default(),
            image: &image_kargs,
            delete: &delete,
            user: &opts.kargs,
        },
        &ComposefsKarg::new(id.clone(), !verity),
    )?;
    // Every value of the entry is checked before anything is written for it.
    let planned = bls::deployment_entry(
        &id,
        &bootc_initramfs_setup::layout::boot_dir_name(&id),
        bls::OsInfo {
            title: os.title.clone(),
            version: os.version.clone(),
        },
        &kernel.kver,
        options.clone(),
    );
    bls::check_entry(&planned).with_context(|| format!("installing {source}"))?;

    let mut origin = Origin::for_image(&target, &digest, &pulled.manifest_digest, opts.bootloader);
    origin.boot_tries = opts.boot_tries;
    state::write_deployment(root_fd, &repo, &fs, &id, &origin, true)?;
    if let (Some(keys), Some(home)) = (&opts.root_ssh_authorized_keys, &ssh_home) {
        ssh::write_authorized_keys(root_fd, home, keys)?;
    }

    let boot_fd = durable::open_dir(CWD, boot)?;
    let loader = opts.bootloader.get();
    loader.install(root, boot)?;
    let dir = state::install_kernel(&repo, root_fd, &boot_fd, &id, &kernel, &digest)?;

    let entry = bls::deployment_entry(&id, &dir, os, &kernel.kver, options);
    menu_first(loader, &boot_fd, root_fd, entry)?;
    tracing::info!(
        "installed {source} as {} with {}",
        id.short(),
        loader.name()
    );
    Ok(Installed { id })
}

/// Writes the boot loader's menu with `entry` first (the default), replacing an entry
/// of the same name; whatever else the menu already holds (another OS) is carried
/// over. Then both filesystems are synced.
fn menu_first(
    loader: &dyn Bootloader,
    boot_fd: &OwnedFd,
    root_fd: &OwnedFd,
    entry: BlsEntry,
) -> Result<()> {
    let mut set = loader
        .read_current(boot_fd.as_fd())
        .with_context(|| format!("reading {}", loader.menu_path()))?
        .unwrap_or_default();
    set.ours.retain(|e| e.bls.file_stem != entry.file_stem);
    set.ours.insert(0, Entry::new(entry));
    loader.replace(boot_fd.as_fd(), &set)?;
    durable::syncfs(boot_fd.as_fd())?;
    durable::syncfs(root_fd.as_fd())?;
    Ok(())
}

/// [`install_typed`] for an image with a sealed UKI (already checked by
/// [`uki_deploy::find`]): the deployment state, then the UKI and its addons on the
/// ESP, then the menu with its `efi` entry first. Origin `[boot] boot_type=uki`.
#[allow(clippy::too_many_arguments)]
fn install_uki<H: FsVerityHashValue>(
    opts: &InstallOpts,
    root: &Path,
    root_fd: &OwnedFd,
    boot: &Path,
    source: &ImageReference,
    target: &ImageReference,
    repo: &std::sync::Arc<composefs::repository::Repository<H>>,
    fs: &composefs::tree::FileSystem<H>,
    pulled: &crate::repo::Pulled,
    u: &uki_deploy::ImageUki,
) -> Result<Installed> {
    let id = pulled.id.clone();
    let digest = u.digest();
    let os = bls::os_info(repo, fs)?;
    let config = config::from_image(repo, fs)?.unwrap_or_default();
    check_root_fs_type(opts, &config)?;
    let ssh_home = match &opts.root_ssh_authorized_keys {
        Some(_) => Some(ssh::root_home_in_var(fs)?),
        None => None,
    };
    let entry = uki_deploy::deployment_entry(&id, os, u);
    bls::check_entry(&entry).with_context(|| format!("installing {source}"))?;

    let mut origin = Origin::for_image(target, &digest, &pulled.manifest_digest, opts.bootloader);
    origin.boot_type = uki_deploy::BOOT_TYPE_UKI.to_string();
    origin.missing_verity_allowed = u.insecure;
    origin.boot_tries = opts.boot_tries;
    state::write_deployment(root_fd, repo, fs, &id, &origin, true)?;
    if let (Some(keys), Some(home)) = (&opts.root_ssh_authorized_keys, &ssh_home) {
        ssh::write_authorized_keys(root_fd, home, keys)?;
    }

    let boot_fd = durable::open_dir(CWD, boot)?;
    let loader = opts.bootloader.get();
    loader.install(root, boot)?;
    uki_deploy::copy_uki(&boot_fd, &id, u)?;
    menu_first(loader, &boot_fd, root_fd, entry)?;
    tracing::info!(
        "installed {source} as {} (UKI {}) with {}",
        id.short(),
        u.path,
        loader.name()
    );
    Ok(Installed { id })
}
