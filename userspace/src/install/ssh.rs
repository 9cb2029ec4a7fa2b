//! `install --root-ssh-authorized-keys`: root can log in to the installed machine.
//!
//! The image is read-only (composefs), so root's home must be local state: on bootc
//! images `/root` is a symlink into `/var` (`/root -> var/roothome`). The keys are
//! written where that symlink leads in the shared `/var` the install seeds
//! (`state/os/default/var/roothome/.ssh/authorized_keys`, directories 0700, the file
//! 0600, owned by root), so they are there at the first boot without depending on
//! tmpfiles.d. (Upstream's ostree backend writes a `tmpfiles.d` snippet instead; with the
//! shared /var written directly the result on the booted system is the same file.)

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::layout;
use composefs::fsverity::FsVerityHashValue;
use composefs::tree::{FileSystem, Inode, LeafContent};
use rustix::fs::{fchmod, fchown, Gid, Mode, Uid};

use crate::sys::durable;

/// Where root's home is inside `/var`, from the image's `/root` symlink (relative to
/// `/var`, e.g. `roothome`). An image whose `/root` is missing, a directory, or a
/// symlink that leads outside `/var` is refused: nothing could be written there.
pub(crate) fn root_home_in_var<H: FsVerityHashValue>(fs: &FileSystem<H>) -> Result<PathBuf> {
    let root = fs.as_dir();
    let target = match root.lookup(OsStr::new("root")) {
        None => bail!(
            "--root-ssh-authorized-keys: the image has no /root (expected a symlink into /var, e.g. /root -> var/roothome)"
        ),
        Some(Inode::Directory(_)) => bail!(
            "--root-ssh-authorized-keys: the image's /root is a directory, read-only on a composefs system; make it a symlink into /var (e.g. /root -> var/roothome)"
        ),
        Some(Inode::Leaf(id, _)) => match &root.leaf(*id).content {
            LeafContent::Symlink(t) => PathBuf::from(t),
            _ => bail!("--root-ssh-authorized-keys: the image's /root is not a directory"),
        },
    };
    home_in_var(&target).with_context(|| {
        format!(
            "--root-ssh-authorized-keys: the image's /root links to {}, which is not inside /var",
            target.display()
        )
    })
}

/// `target` (the `/root` symlink's, absolute or relative to `/`) as a path inside
/// `/var`, or None.
fn home_in_var(target: &Path) -> Option<PathBuf> {
    let mut parts = vec![];
    for c in target.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if parts.len() < 2 || parts[0] != "var" {
        return None;
    }
    Some(parts[1..].iter().collect())
}

/// Writes `keys` as `<home>/.ssh/authorized_keys` in the shared `/var` of the physical
/// root `sysroot`, durably.
pub(crate) fn write_authorized_keys(sysroot: &OwnedFd, home: &Path, keys: &str) -> Result<()> {
    let var = durable::open_dir(sysroot, layout::SHARED_VAR)?;
    let home_fd = durable::ensure_dir_all(&var, home, 0o700)?;
    let ssh = durable::ensure_dir(&home_fd, ".ssh", 0o700)?;
    let shown = Path::new(layout::SHARED_VAR).join(home).join(".ssh");
    fchown(&ssh, Some(Uid::ROOT), Some(Gid::ROOT))
        .and_then(|()| fchmod(&ssh, Mode::from_raw_mode(0o700)))
        .with_context(|| format!("setting the owner and mode of {}", shown.display()))?;
    durable::write_file_with(&ssh, "authorized_keys", 0o600, |f| {
        use std::io::Write;
        fchown(&*f, Some(Uid::ROOT), Some(Gid::ROOT))?;
        f.write_all(keys.as_bytes()).map_err(Into::into)
    })
    .with_context(|| format!("writing {}/authorized_keys", shown.display()))?;
    durable::fsync_dir(&home_fd)?;
    tracing::info!(
        "root's authorized_keys written to /var/{}/.ssh",
        home.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_must_be_inside_var() {
        for (t, want) in [
            ("var/roothome", Some("roothome")),
            ("/var/roothome", Some("roothome")),
            ("./var/lib/root", Some("lib/root")),
            ("var", None),
            ("/home/root", None),
            ("var/../etc", None),
        ] {
            assert_eq!(home_in_var(Path::new(t)), want.map(PathBuf::from), "{t}");
        }
    }
}
