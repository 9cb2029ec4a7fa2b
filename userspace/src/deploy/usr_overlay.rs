//! `bootc usr-overlay`: a transient writable overlay on `/usr`, until the next boot.
//!
//! The booted `/usr` is part of the read-only composefs image. The overlay stacks a
//! fresh upper layer on a private tmpfs over the current `/usr`, which stays unchanged
//! underneath. The tmpfs is attached only while the overlay is mounted (at a 0700
//! directory under `/run`: overlayfs clones its upper layer's mount, which kernels
//! before 6.15 refuse for a detached one) and detached right after, so nothing else
//! can reach it.
//! Everything written there lives in memory and is gone after a reboot (or a soft
//! reboot: the next root is composed from the image again).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{mkdirat, open, Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount, move_mount, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use serde::Serialize;

use crate::sys::mount::mount_table;

/// The source name of our overlay in the mount table.
pub(crate) const SOURCE: &str = "bootc-usr-overlay";

/// Whether the overlay can be written (upstream's `FilesystemOverlayAccessMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum AccessMode {
    /// Mounted read-only (it can be remounted read/write in a private namespace).
    ReadOnly,
    /// Mounted read/write.
    ReadWrite,
}

/// The `/usr` overlay as `status` shows it (upstream's `FilesystemOverlay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilesystemOverlay {
    /// Read-only or read/write.
    pub(crate) access_mode: AccessMode,
    /// Always `transient` here: the upper layer is in memory.
    pub(crate) persistence: &'static str,
}

/// Why no overlay was mounted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UsrOverlayError {
    /// Something is already mounted on `/usr`.
    #[error(
        "{usr}: an overlay is already mounted there ({what} {fstype}); its changes last \
         until the next boot; refusing to stack a second one"
    )]
    AlreadyMounted {
        usr: PathBuf,
        what: String,
        fstype: String,
    },
}

/// The mount at exactly `<root>/usr`, if any: (source, filesystem type).
fn usr_mount(root: &Path) -> Result<Option<(String, String)>> {
    let root = std::fs::canonicalize(root).with_context(|| format!("{}", root.display()))?;
    let usr = root.join("usr");
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.target == usr)
        .map(|m| (m.source, m.fstype)))
}

/// The overlay on `<root>/usr`, if one is mounted (any overlayfs mounted on `/usr`
/// itself, as upstream's composefs backend reports it).
pub(crate) fn status(root: &Path) -> Result<Option<FilesystemOverlay>> {
    let Some((_, fstype)) = usr_mount(root)? else {
        return Ok(None);
    };
    if fstype != "overlay" {
        return Ok(None);
    }
    let usr = root.join("usr");
    let st = rustix::fs::statvfs(&usr).with_context(|| format!("statvfs {}", usr.display()))?;
    let access_mode = if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
        AccessMode::ReadOnly
    } else {
        AccessMode::ReadWrite
    };
    Ok(Some(FilesystemOverlay {
        access_mode,
        persistence: "transient",
    }))
}

/// Mounts the transient overlay on `<root>/usr` (read-only when `read_only`). Refuses
/// when anything is already mounted on `<root>/usr`.
pub(crate) fn mount_overlay(root: &Path, read_only: bool) -> Result<()> {
    let usr = root.join("usr");
    if let Some((source, fstype)) = usr_mount(root)? {
        return Err(UsrOverlayError::AlreadyMounted {
            usr,
            what: source,
            fstype,
        }
        .into());
    }
    let lower = open(
        &usr,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", usr.display()))?;
    let scratch = detached_tmpfs().context("creating the overlay's in-memory upper layer")?;
    let hold = Held::attach(&scratch)?;
    let mut dirs = Vec::new();
    for name in ["upper", "work"] {
        mkdirat(&scratch, name, Mode::from_raw_mode(0o755))
            .with_context(|| format!("creating the overlay {name} directory"))?;
        dirs.push(
            rustix::fs::openat(
                &scratch,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening the overlay {name} directory"))?,
        );
    }
    // The upper directory takes the mode and owner of /usr, as it is the overlay's root.
    let st = rustix::fs::stat(&usr).with_context(|| format!("stat {}", usr.display()))?;
    let upper = rustix::fs::openat(
        &scratch,
        "upper",
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening the overlay upper directory")?;
    rustix::fs::fchmod(&upper, Mode::from_raw_mode(st.st_mode & 0o7777))
        .context("setting the mode of the overlay upper directory")?;
    rustix::fs::fchown(
        &upper,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
    .context("setting the owner of the overlay upper directory")?;

    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        proc_fd(&lower),
        proc_fd(&dirs[0]),
        proc_fd(&dirs[1])
    );
    let data = CString::new(data).context("overlay options")?;
    let flags = if read_only {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    mount(SOURCE, &usr, "overlay", flags, Some(data.as_c_str()))
        .with_context(|| format!("mounting an overlay on {}", usr.display()))?;
    drop(hold);
    tracing::info!("mounted a transient overlay on {}", usr.display());
    Ok(())
}

/// The upper layer's tmpfs attached at a private directory (0700, under `/run`, or
/// the temporary directory where there is no `/run`) for as long as this lives: the
/// overlay takes its own clone of the mount, after which it is detached again.
struct Held {
    dir: Option<tempfile::TempDir>,
}

impl Held {
    fn attach(mnt: &OwnedFd) -> Result<Held> {
        let base = Path::new("/run");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix(".bootc-usr-overlay-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a private directory in {}", base.display()))?;
        move_mount(
            mnt.as_fd(),
            "",
            CWD,
            dir.path(),
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .with_context(|| {
            format!(
                "attaching the overlay's upper layer at {}",
                dir.path().display()
            )
        })?;
        Ok(Held { dir: Some(dir) })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if let Err(e) = unmount(dir.path(), UnmountFlags::DETACH) {
                tracing::warn!("detaching {}: {e}", dir.path().display());
            }
            // TempDir's drop removes the (now empty) directory.
        }
    }
}

/// A tmpfs that is attached nowhere: only our file descriptor reaches it.
fn detached_tmpfs() -> rustix::io::Result<OwnedFd> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_set_string(fs.as_fd(), "source", SOURCE)?;
    fsconfig_set_string(fs.as_fd(), "mode", "0755")?;
    fsconfig_create(fs.as_fd())?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )?;
    Ok(mnt)
}

fn proc_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}
