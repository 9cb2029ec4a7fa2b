//! Mounts and mount points, released on drop, and the kernel's mount table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::mount::{unmount, MountFlags, UnmountFlags};

/// A mount, unmounted on drop.
#[derive(Debug)]
pub(crate) struct Mount {
    target: PathBuf,
    active: bool,
}

impl Mount {
    /// Mounts `source` (a block device) of type `fstype` on `target`.
    pub(crate) fn new(source: &Path, target: &Path, fstype: &str) -> Result<Mount> {
        rustix::mount::mount(source, target, fstype, MountFlags::empty(), None).with_context(
            || {
                format!(
                    "mounting {} ({fstype}) on {}",
                    source.display(),
                    target.display()
                )
            },
        )?;
        Ok(Mount {
            target: target.to_path_buf(),
            active: true,
        })
    }

    /// Bind-mounts `source` on `target`.
    pub(crate) fn bind(source: &Path, target: &Path) -> Result<Mount> {
        rustix::mount::mount_bind(source, target).with_context(|| {
            format!("bind-mounting {} on {}", source.display(), target.display())
        })?;
        Ok(Mount {
            target: target.to_path_buf(),
            active: true,
        })
    }

    /// Like [`Mount::new`], but `None` when this kernel does not know the filesystem
    /// type (e.g. a kernel built without vfat).
    pub(crate) fn try_new(source: &Path, target: &Path, fstype: &str) -> Result<Option<Mount>> {
        match rustix::mount::mount(source, target, fstype, MountFlags::empty(), None) {
            Ok(()) => Ok(Some(Mount {
                target: target.to_path_buf(),
                active: true,
            })),
            Err(rustix::io::Errno::NODEV) => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "mounting {} ({fstype}) on {}",
                    source.display(),
                    target.display()
                )
            }),
        }
    }

    /// Unmounts now, reporting errors.
    pub(crate) fn unmount(mut self) -> Result<()> {
        self.active = false;
        unmount(&self.target, UnmountFlags::empty())
            .with_context(|| format!("unmounting {}", self.target.display()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = unmount(&self.target, UnmountFlags::empty()) {
                tracing::warn!(
                    "unmounting {}: {e}; detaching it lazily",
                    self.target.display()
                );
                let _ = unmount(&self.target, UnmountFlags::DETACH);
            }
        }
    }
}

/// A private temporary mount point under /run, removed with rmdir (never recursively:
/// if something is still mounted there, it is left alone).
#[derive(Debug)]
pub(crate) struct MountPoint {
    path: PathBuf,
}

impl MountPoint {
    /// Creates `/run/<temporary name for purpose>.XXXXXX`, mode 0700.
    pub(crate) fn new(purpose: &str) -> Result<MountPoint> {
        let dir = tempfile::Builder::new()
            .prefix(&super::durable::tmp_name(&format!("{purpose}.")))
            .tempdir_in("/run")
            .context("creating a temporary mount point in /run")?;
        Ok(MountPoint { path: dir.keep() })
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for MountPoint {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            tracing::warn!("removing {}: {e}", self.path.display());
        }
    }
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// What is mounted (a device node, or a name such as `tmpfs`).
    pub(crate) source: String,
    /// Where.
    pub(crate) target: PathBuf,
    /// The filesystem type (`ext4`, `overlay`, …).
    pub(crate) fstype: String,
}

/// The mounts of this process's namespace, in mount order (from `/proc/self/mountinfo`).
pub(crate) fn mount_table() -> Result<Vec<MountEntry>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&info))
}

fn parse_mountinfo(info: &str) -> Vec<MountEntry> {
    let mut out = vec![];
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(target), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 2))
        else {
            continue;
        };
        out.push(MountEntry {
            source: unescape(source),
            target: PathBuf::from(unescape(target)),
            fstype: unescape(fstype),
        });
    }
    out
}

/// The source of the mount at exactly `path` (the last one mounted there), if it is a
/// mount point.
pub(crate) fn mount_source(path: &Path) -> Result<Option<String>> {
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.target == path)
        .map(|m| m.source))
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let t = parse_mountinfo(
            "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n\
             30 22 7:0 / /mnt/a\\040b rw - vfat /dev/loop0p1 rw\n\
             junk\n",
        );
        assert_eq!(
            t,
            vec![
                MountEntry {
                    source: "/dev/sda2".into(),
                    target: "/".into(),
                    fstype: "ext4".into(),
                },
                MountEntry {
                    source: "/dev/loop0p1".into(),
                    target: "/mnt/a b".into(),
                    fstype: "vfat".into(),
                },
            ]
        );
    }
}
