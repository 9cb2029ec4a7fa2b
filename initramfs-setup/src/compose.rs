//! Mounting a composefs image: the EROFS image as the metadata layer of a read-only
//! overlay whose data-only layer is the object store.
//!
//! Since Linux 6.15 a detached mount (the EROFS one, from `fsmount`) can be given to
//! overlayfs as a layer by its file descriptor; before, it must be attached to a
//! directory first and named by path. The interface is chosen at run time: the
//! descriptor way is tried first and, when the kernel refuses it, the EROFS mount is
//! attached to a private directory, used by path, and detached again once the overlay
//! holds it. So one binary boots both kernels, and a new kernel makes no directory.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use composefs::mount::{erofs_mount, FsHandle, VerityRequirement};
use rustix::fs::{mkdirat, openat, rmdir, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_string, fsmount, fsopen, move_mount, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags,
};

/// How the overlay is to be made.
pub(crate) struct Compose<'a> {
    /// The overlay's source name (`composefs:<name>`).
    pub(crate) name: &'a str,
    /// The object store: the data-only layer.
    pub(crate) objects: BorrowedFd<'a>,
    /// Whether the overlay requires fs-verity of every object it reads.
    pub(crate) verity: VerityRequirement,
    /// An upper and a work directory, for a writable (transient) root.
    pub(crate) upper: Option<(&'a OwnedFd, &'a OwnedFd)>,
    /// Mount read-write (else read-only).
    pub(crate) read_write: bool,
}

/// Mounts `image` (an EROFS file or block device) and composes the overlay over it.
/// Returns the detached overlay mount. An error of the EROFS mount is returned as it
/// is (the caller tells a corrupt image from a missing loop device by it).
pub(crate) fn compose(image: OwnedFd, how: &Compose<'_>) -> io::Result<OwnedFd> {
    let erofs = erofs_mount(image)?;
    // Linux 6.15 and later: the detached mount itself. The kernel's messages about a
    // refusal are not shown: the path way below is the answer to it.
    if let Ok(fd) = overlay_by_fd(&erofs, how) {
        return Ok(fd);
    }
    let attached = Attached::new(erofs)?;
    overlay_by_path(&attached.fd, how)
}

/// The common options of the overlay: source, metacopy, redirect_dir, verity.
fn common(fs: BorrowedFd<'_>, how: &Compose<'_>) -> rustix::io::Result<()> {
    fsconfig_set_string(fs, "source", format!("composefs:{}", how.name))?;
    fsconfig_set_string(fs, "metacopy", "on")?;
    fsconfig_set_string(fs, "redirect_dir", "on")?;
    match how.verity {
        VerityRequirement::Disabled => {}
        VerityRequirement::Required => fsconfig_set_string(fs, "verity", "require")?,
        VerityRequirement::Try => match fsconfig_set_string(fs, "verity", "require") {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOSYS) => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

fn finish(fs: BorrowedFd<'_>, how: &Compose<'_>) -> rustix::io::Result<OwnedFd> {
    fsconfig_create(fs)?;
    let attr = if how.read_write {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    fsmount(fs, FsMountFlags::FSMOUNT_CLOEXEC, attr)
}

/// Layers given by descriptor (`lowerdir+`, `datadir+`): Linux 6.15 and later.
fn overlay_by_fd(erofs: &OwnedFd, how: &Compose<'_>) -> rustix::io::Result<OwnedFd> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    common(fs.as_fd(), how)?;
    if let Some((upper, work)) = how.upper {
        fsconfig_set_fd(fs.as_fd(), "upperdir", upper.as_fd())?;
        fsconfig_set_fd(fs.as_fd(), "workdir", work.as_fd())?;
    }
    fsconfig_set_fd(fs.as_fd(), "lowerdir+", erofs.as_fd())?;
    fsconfig_set_fd(fs.as_fd(), "datadir+", how.objects)?;
    finish(fs.as_fd(), how)
}

/// Layers given by `/proc/self/fd/N` paths, the EROFS mount attached (`lower`): any
/// kernel with the new mount API. The kernel's messages are shown on failure.
fn overlay_by_path(lower: &OwnedFd, how: &Compose<'_>) -> io::Result<OwnedFd> {
    let fs = FsHandle::open("overlay")?;
    common(fs.as_fd(), how)?;
    if let Some((upper, work)) = how.upper {
        fsconfig_set_string(fs.as_fd(), "upperdir", proc_fd(upper.as_fd()))?;
        fsconfig_set_string(fs.as_fd(), "workdir", proc_fd(work.as_fd()))?;
    }
    let lowerdir = format!("{}::{}", proc_fd(lower.as_fd()), proc_fd(how.objects));
    fsconfig_set_string(fs.as_fd(), "lowerdir", lowerdir)?;
    Ok(finish(fs.as_fd(), how)?)
}

fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// A mount attached to a private directory (`$TMPDIR/bootc-initramfs-setup.<pid>.erofs`),
/// opened `O_PATH`; detached and the directory removed when dropped (the overlay keeps
/// what it needs of it).
struct Attached {
    dir: PathBuf,
    fd: OwnedFd,
}

impl Attached {
    fn new(mnt: OwnedFd) -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "bootc-initramfs-setup.{}.erofs",
            std::process::id()
        ));
        match mkdirat(CWD, &dir, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            // Left by an earlier run that had our pid: reuse it if it is empty.
            Err(Errno::EXIST) => {
                rmdir(&dir)?;
                mkdirat(CWD, &dir, Mode::from_raw_mode(0o700))?;
            }
            Err(e) => return Err(e.into()),
        }
        let opened = move_mount(
            mnt.as_fd(),
            "",
            CWD,
            &dir,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .and_then(|()| {
            openat(
                CWD,
                &dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        });
        match opened {
            Ok(fd) => Ok(Attached { dir, fd }),
            Err(e) => {
                let _ = unmount(&dir, UnmountFlags::DETACH);
                let _ = rmdir(&dir);
                Err(e.into())
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = unmount(&self.dir, UnmountFlags::DETACH);
        let _ = rmdir(&self.dir);
    }
}
