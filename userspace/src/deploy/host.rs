//! The system a lifecycle verb acts on: the physical root, the boot partition, the
//! runtime directory, and which deployment is booted.
//!
//! On a booted machine these are `/sysroot`, the ESP at `/boot`, `/run`, and the
//! deployment the running root is composed from: the one named by `composefs=` on
//! `/proc/cmdline`, unless a soft reboot switched to another (see [`booted_live`]). For tests and offline work,
//! `--sysroot DIR --booted-deployment ID` (and optionally `--boot-dir`, `--run-dir`) point every
//! verb at a mounted disk image instead.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{CmdlineError, ComposefsKarg, DeploymentId};
use bootc_initramfs_setup::layout;
use rustix::fs::CWD;

use crate::boot::entries::EntrySet;
use crate::boot::{esp_in_root, Bootloader, BootloaderKind, ESP_MOUNT};
use crate::sys::durable;

/// How to find the host.
#[derive(Debug, Clone)]
pub(crate) struct HostOpts {
    /// The physical root.
    pub(crate) sysroot: PathBuf,
    /// The boot partition (ESP); default `/boot` for the booted system, `SYSROOT/boot`
    /// when another sysroot is given.
    pub(crate) boot_dir: Option<PathBuf>,
    /// Where the staged marker lives (`/run`).
    pub(crate) run_dir: PathBuf,
    /// The booted deployment, instead of reading `/proc/cmdline`.
    pub(crate) booted: Option<DeploymentId>,
}

/// Why the booted deployment is unknown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BootedError {
    /// The kernel command line has no composefs argument.
    #[error("this system was not booted from a composefs deployment (no composefs= on the kernel command line); this bootc only manages the composefs backend")]
    NotComposefs,
    /// The composefs argument is malformed.
    #[error("cannot tell the booted deployment: {0}")]
    Malformed(CmdlineError),
}

/// The opened host.
#[derive(Debug)]
pub(crate) struct Host {
    /// The physical root path (for messages).
    pub(crate) sysroot_path: PathBuf,
    /// The physical root.
    pub(crate) sysroot: OwnedFd,
    /// The boot partition.
    pub(crate) boot: OwnedFd,
    /// The runtime directory.
    pub(crate) run_dir: PathBuf,
    /// The booted deployment.
    pub(crate) booted: DeploymentId,
    /// Whether the booted deployment was booted with `composefs=?`.
    pub(crate) booted_insecure: bool,
    /// The boot loader whose menu boots the deployments: the booted origin's
    /// `[boot] bootloader`, or detected from the boot partition for installs that
    /// predate the key ([`BootloaderKind::detect`]).
    pub(crate) loader: BootloaderKind,
}

/// The booted deployment according to `/proc/cmdline`.
pub(crate) fn booted_from_cmdline() -> Result<ComposefsKarg, BootedError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match ComposefsKarg::from_cmdline(&cmdline) {
        Ok(k) => Ok(k),
        Err(CmdlineError::Missing) => Err(BootedError::NotComposefs),
        Err(e) => Err(BootedError::Malformed(e)),
    }
}

/// The deployment the running system is, with the fs-verity requirement of its boot.
///
/// That is the command line's `composefs=` deployment, except after a soft reboot:
/// userspace then runs on another deployment's root (composed at `/run/nextroot` by
/// `--soft-reboot`, see [`crate::deploy::soft_reboot`]) while the kernel keeps its
/// command line. The root's overlay names its image (`composefs:<hex>` as its mount
/// source), so that id wins when it is a well-formed digest of the same algorithm. A
/// soft reboot only goes to a deployment with the same fs-verity requirement, so the
/// command line's `?` still holds.
pub(crate) fn booted_live() -> Result<ComposefsKarg, BootedError> {
    let mut k = booted_from_cmdline()?;
    if let Some(id) = crate::sys::mount::mount_source(Path::new("/"))
        .ok()
        .flatten()
        .as_deref()
        .and_then(root_image_id)
    {
        if id != k.id && id.algorithm() == k.id.algorithm() {
            tracing::debug!(
                "the root is {} while the command line names {}: soft-rebooted",
                id.short(),
                k.id.short()
            );
            k.id = id;
        }
    }
    Ok(k)
}

/// The deployment id in a composefs root's mount source (`composefs:<hex>`).
pub(crate) fn root_image_id(source: &str) -> Option<DeploymentId> {
    DeploymentId::parse(source.strip_prefix("composefs:")?).ok()
}

impl Host {
    /// Opens the host; fails clearly when it was not booted from composefs.
    pub(crate) fn open(opts: &HostOpts) -> Result<Host> {
        let (booted, booted_insecure) = match &opts.booted {
            Some(id) => (id.clone(), false),
            None => {
                let k = booted_live()?;
                (k.id, k.insecure)
            }
        };
        let sysroot = durable::open_dir(CWD, &opts.sysroot)
            .with_context(|| format!("opening the physical root {}", opts.sysroot.display()))?;
        let boot_path = match &opts.boot_dir {
            Some(b) => b.clone(),
            None if opts.sysroot == Path::new(layout::DEFAULT_SYSROOT) => PathBuf::from(ESP_MOUNT),
            None => opts.sysroot.join(esp_in_root()),
        };
        let boot = durable::open_dir(CWD, &boot_path)
            .with_context(|| format!("opening the boot partition {}", boot_path.display()))?;
        if durable::open_dir(&sysroot, layout::deploy_dir(&booted)).is_err() {
            bail!(
                "the booted deployment {} has no state in {} (is --sysroot right?)",
                booted.short(),
                opts.sysroot.join(layout::deploy_dir(&booted)).display()
            );
        }
        let loader = loader_of(&sysroot, &booted, &boot)?;
        Ok(Host {
            sysroot_path: opts.sysroot.clone(),
            sysroot,
            boot,
            run_dir: opts.run_dir.clone(),
            booted,
            booted_insecure,
            loader,
        })
    }

    /// The boot loader's implementation.
    pub(crate) fn menu(&self) -> &'static dyn Bootloader {
        self.loader.get()
    }

    /// The current menu (empty when there is none).
    pub(crate) fn current_set(&self) -> Result<EntrySet> {
        Ok(self
            .menu()
            .read_current(self.boot.as_fd())
            .with_context(|| format!("reading {}", self.menu().menu_path()))?
            .unwrap_or_default())
    }

    /// `RUN/composefs/staged-deployment`.
    pub(crate) fn staged_marker(&self) -> PathBuf {
        let rel = Path::new(layout::STAGED_MARKER)
            .strip_prefix("/run")
            .unwrap_or(Path::new(layout::STAGED_MARKER));
        self.run_dir.join(rel)
    }

    /// The deployment the marker names, if any (a damaged marker reads as none). Its
    /// first line is the hex; a second line `download-only` locks it (see
    /// [`Host::staged_download_only`]).
    pub(crate) fn staged(&self) -> Option<DeploymentId> {
        let text = std::fs::read_to_string(self.staged_marker()).ok()?;
        DeploymentId::parse(text.lines().next()?.trim()).ok()
    }

    /// Whether the staged deployment was staged by `upgrade --download-only`: finalize
    /// leaves it alone until `upgrade --from-downloaded`. The marker is on tmpfs, so a
    /// reboot forgets it and the update with it.
    pub(crate) fn staged_download_only(&self) -> bool {
        std::fs::read_to_string(self.staged_marker())
            .is_ok_and(|t| t.lines().nth(1).map(str::trim) == Some(DOWNLOAD_ONLY))
    }

    /// Records the staged deployment.
    pub(crate) fn set_staged(&self, id: &DeploymentId) -> Result<()> {
        self.set_staged_as(id, false)
    }

    /// Records the staged deployment, locked with `download_only`. One atomic write:
    /// the lock never exists without its deployment.
    pub(crate) fn set_staged_as(&self, id: &DeploymentId, download_only: bool) -> Result<()> {
        let path = self.staged_marker();
        let dir = path.parent().context("marker has a parent")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dirfd = durable::open_dir(CWD, dir)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("marker name")?;
        let mut text = format!("{}\n", id.hex());
        if download_only {
            text.push_str(DOWNLOAD_ONLY);
            text.push('\n');
        }
        durable::write_file(&dirfd, name, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Forgets the staged deployment.
    pub(crate) fn clear_staged(&self) -> Result<()> {
        match std::fs::remove_file(self.staged_marker()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("removing {}", self.staged_marker().display()))
            }
        }
    }

    /// The last finalize failure, if one is recorded.
    pub(crate) fn finalize_failure(&self) -> Option<String> {
        let f = rustix::fs::openat(
            &self.sysroot,
            layout::FINALIZE_FAILURE,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()?;
        let s = std::io::read_to_string(std::fs::File::from(f)).ok()?;
        Some(s.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Records why finalize failed (shown by `bootc status`).
    pub(crate) fn set_finalize_failure(&self, reason: &str) -> Result<()> {
        let (dir, name) = split(layout::FINALIZE_FAILURE);
        let fd = durable::ensure_dir_all(&self.sysroot, dir, 0o755)?;
        durable::write_file(&fd, name, format!("{reason}\n").as_bytes(), 0o644)
    }

    /// Clears a recorded finalize failure.
    pub(crate) fn clear_finalize_failure(&self) -> Result<()> {
        match rustix::fs::unlinkat(
            &self.sysroot,
            layout::FINALIZE_FAILURE,
            rustix::fs::AtFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("clearing {}", layout::FINALIZE_FAILURE)),
        }
    }

    /// What the staged marker means, judged against the entry sets on the boot
    /// partition (see [`classify`]).
    pub(crate) fn staged_state(&self) -> Result<Staged> {
        let marker = self.staged();
        if marker.is_none() {
            return Ok(Staged::None);
        }
        let current = self.current_set()?;
        let staged_set = self
            .menu()
            .read_staged(self.boot.as_fd())
            .with_context(|| format!("reading {}", self.menu().staged_menu_path()))?;
        Ok(classify(marker, &current, staged_set))
    }

    /// The staged entry set, when an update really waits for finalize
    /// ([`Staged::Pending`]). A staged menu without the marker is stale (an
    /// update staged before a reboot that never finalized, or a crash mid-swap), and
    /// after an interrupted finalize it holds the old set: both count for nothing.
    pub(crate) fn staged_set(&self) -> Result<Option<EntrySet>> {
        Ok(match self.staged_state()? {
            Staged::Pending { set, .. } => Some(set),
            _ => None,
        })
    }

    /// Whether this is the running system (so units may be started and reboots asked).
    pub(crate) fn is_live(&self) -> bool {
        self.sysroot_path == Path::new(layout::DEFAULT_SYSROOT)
            && Path::new("/run/systemd/system").exists()
    }
}

/// The staged marker's second line for a deployment staged by `upgrade --download-only`.
const DOWNLOAD_ONLY: &str = "download-only";

/// What the staged marker (`/run/composefs/staged-deployment`) means. The marker alone
/// is not the truth: finalize may have been stopped after it exchanged the entry sets,
/// and a rollback or a crash may have left a marker without its set. The entries decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Staged {
    /// No marker: nothing is staged (a staged menu is stale).
    None,
    /// An update waits for finalize: the staged menu boots `id` first and `id` is
    /// not yet the default.
    Pending {
        /// The staged deployment.
        id: DeploymentId,
        /// The complete next entry set.
        set: EntrySet,
    },
    /// `id` is already the default of the current menu: finalize exchanged the sets and
    /// was stopped before it cleaned up (the old set under the staged name, the marker).
    /// `id` boots next; finalize only has to complete.
    Finalized(DeploymentId),
    /// The marker names `id`, but no staged set boots it and it is not the default:
    /// nothing is staged.
    Stale(DeploymentId),
}

impl Staged {
    /// The deployment waiting for finalize, if one really is.
    pub(crate) fn pending(&self) -> Option<&DeploymentId> {
        match self {
            Staged::Pending { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Judges the marker against the current set and the staged set (see [`Staged`]).
pub(crate) fn classify(
    marker: Option<DeploymentId>,
    current: &EntrySet,
    staged_set: Option<EntrySet>,
) -> Staged {
    let Some(id) = marker else {
        return Staged::None;
    };
    if current.default_deployment() == Some(&id) {
        return Staged::Finalized(id);
    }
    match staged_set {
        Some(set) if set.default_deployment() == Some(&id) => Staged::Pending { id, set },
        _ => Staged::Stale(id),
    }
}

/// The loader recorded in the booted deployment's origin, else detected. An origin
/// that cannot be read is said by the verbs that need it; here it means "detect".
fn loader_of(sysroot: &OwnedFd, booted: &DeploymentId, boot: &OwnedFd) -> Result<BootloaderKind> {
    let recorded = super::state::Origin::load(sysroot, booted)
        .ok()
        .and_then(|o| o.bootloader);
    match recorded {
        Some(name) => BootloaderKind::parse(&name).with_context(|| {
            format!(
                "the booted deployment's origin names an unknown boot loader {name:?} ([boot] bootloader)"
            )
        }),
        None => Ok(BootloaderKind::detect(boot.as_fd())),
    }
}

/// `dir/name` → (`dir`, `name`) for a layout path.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or((".", path))
}

/// Entry sets for the unit tests of the day-2 logic (no root, no disk).
#[cfg(test)]
pub(crate) mod test_sets {
    use super::*;
    use crate::boot::bls::BlsEntry;
    use crate::boot::entries::Entry;

    /// A sha256 deployment id made of one repeated hex digit.
    pub(crate) fn id(c: char) -> DeploymentId {
        DeploymentId::parse(&c.to_string().repeat(64)).unwrap()
    }

    /// Our entry for `id`.
    pub(crate) fn ours(id: &DeploymentId) -> Entry {
        let dir = layout::boot_dir_name(id);
        Entry::new(BlsEntry {
            efi: None,
            file_stem: dir.clone(),
            title: "T".into(),
            version: "1".into(),
            sort_key: None,
            linux: format!("/{dir}/vmlinuz"),
            initrd: vec![format!("/{dir}/initramfs.img")],
            options: format!("rw composefs=?sha256:{}", id.hex()),
        })
    }

    /// A foreign entry (another OS's file, carried byte for byte).
    pub(crate) fn foreign(stem: &str) -> crate::boot::entries::RawEntry {
        crate::boot::entries::RawEntry {
            name: format!("{stem}.conf").into(),
            content: crate::boot::entries::RawContent::File {
                bytes: b"title Memtest\nefi /memtest.efi\n".to_vec(),
                mode: 0o644,
            },
            problem: None,
        }
    }

    /// A set of our entries for `ids`, in that order, plus one foreign entry.
    pub(crate) fn set(ids: &[&DeploymentId]) -> EntrySet {
        EntrySet {
            ours: ids.iter().map(|i| ours(i)).collect(),
            foreign: vec![foreign("memtest")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_sets::*;
    use super::*;

    /// The root's mount source names the running deployment after a soft reboot.
    #[test]
    fn a_composefs_root_source_names_its_deployment() {
        let hex = "ab".repeat(32);
        assert_eq!(
            root_image_id(&format!("composefs:{hex}")).map(|i| i.hex().to_string()),
            Some(hex.clone())
        );
        for bad in [
            hex.clone(),
            "composefs:".into(),
            "composefs:xyz".into(),
            "/dev/vda2".into(),
            format!("composefs:{}", &hex[..10]),
        ] {
            assert_eq!(root_image_id(&bad), None, "{bad}");
        }
    }

    /// The truth table of the marker against the entries.
    #[test]
    fn the_entries_decide_what_the_marker_means() {
        let (b, x, o) = (id('b'), id('c'), id('d'));
        let current = set(&[&b, &o]);
        let pending = set(&[&x, &b, &o]);
        // No marker: nothing staged, whatever entries.staged holds.
        assert_eq!(
            classify(None, &current, Some(pending.clone())),
            Staged::None
        );
        // Marker X, the staged set boots X first: pending.
        assert_eq!(
            classify(Some(x.clone()), &current, Some(pending.clone())),
            Staged::Pending {
                id: x.clone(),
                set: pending.clone()
            }
        );
        // Marker X and X is the default: finalized, whether or not the old set is still
        // under the staged name.
        let after = set(&[&x, &b, &o]);
        for left in [None, Some(current.clone())] {
            assert_eq!(
                classify(Some(x.clone()), &after, left),
                Staged::Finalized(x.clone())
            );
        }
        // Marker X, no staged set, X not the default: stale.
        assert_eq!(
            classify(Some(x.clone()), &current, None),
            Staged::Stale(x.clone())
        );
        // Marker X, a staged set that boots something else first: stale.
        assert_eq!(
            classify(Some(x.clone()), &current, Some(set(&[&o, &b]))),
            Staged::Stale(x.clone())
        );
        // Marker X, X only a non-default entry of the current set: stale, not finalized.
        assert_eq!(
            classify(Some(o.clone()), &current, None),
            Staged::Stale(o.clone())
        );
        assert_eq!(Staged::Finalized(x.clone()).pending(), None);
        assert_eq!(Staged::Stale(x.clone()).pending(), None);
    }
}
