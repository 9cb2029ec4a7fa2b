//! `bootc config-diff`: the machine's local changes to `/etc` against the booted image's
//! `/etc` as shipped.
//!
//! There is one notion of "changed locally": the /etc merge's. The diff is the merge
//! planned ([`etc_merge::plan`]) with the pristine /etc as both the base and the new
//! side, so every local change shows up as an action and nothing else does: a copy of
//! an entry pristine has is a modification, of one it lacks an addition, a removal a
//! deletion. What counts as a change is exactly what the next update would carry over
//! (type, permission bits, owner, xattrs, content or symlink target; not timestamps).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bootc_initramfs_setup::{layout, with_algorithm};
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use rustix::fs::{statat, AtFlags};
use rustix::io::Errno;

use super::etc_merge::{self, Action, MergePlan};
use super::host::Host;
use super::{stage, state};
use crate::repo;
use crate::sys::durable;

/// The local changes to /etc, each list sorted, paths absolute (`/etc/…`), parents
/// before their entries. An added or deleted directory is listed with (added) or
/// without (deleted, as a whole) its entries.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ConfigDiff {
    /// Present locally, not in the image.
    pub(crate) added: Vec<PathBuf>,
    /// In both, but differing.
    pub(crate) modified: Vec<PathBuf>,
    /// In the image, deleted locally.
    pub(crate) removed: Vec<PathBuf>,
}

impl ConfigDiff {
    /// Nothing was changed locally.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// For people: one line per path, `Added`, `Modified` or `Removed` then the path.
    pub(crate) fn render_human(&self) -> String {
        let mut s = String::new();
        for (what, paths) in [
            ("Added", &self.added),
            ("Modified", &self.modified),
            ("Removed", &self.removed),
        ] {
            for p in paths {
                s.push_str(&format!("{what:<8} {}\n", p.display()));
            }
        }
        s
    }
}

/// The booted deployment's local /etc changes (its `state/deploy/<id>/etc` against the
/// booted image's /etc).
pub(crate) fn config_diff(host: &Host) -> Result<ConfigDiff> {
    with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => {
        let repo = repo::open::<H>(&host.sysroot)?;
        diff_booted::<H>(host, &repo)
    })
}

fn diff_booted<H: FsVerityHashValue>(host: &Host, repo: &Arc<Repository<H>>) -> Result<ConfigDiff> {
    // The merge compares against the image tree in place; here the pristine side is
    // also the "new" side, which the planner reads from disk: extract it.
    let (fs, _) = stage::booted_tree(host, repo)?;
    let pristine = tempfile::Builder::new()
        .prefix(&durable::tmp_name("pristine-etc."))
        .tempdir_in(host.sysroot_path.join(layout::STATE))
        .context("creating a temporary directory under state/")?;
    let fd = durable::open_dir(rustix::fs::CWD, pristine.path())?;
    state::copy_image_dir(repo, &fs, "etc", &fd, "etc")
        .context("extracting the booted image's /etc")?;
    let p = durable::open_dir(&fd, "etc")?;
    let c = durable::open_dir(&host.sysroot, layout::deploy_etc(&host.booted))
        .context("opening the live /etc (the booted deployment's state)")?;
    diff(p.as_fd(), c.as_fd())
}

/// The changes from `pristine` to `current`, two /etc trees.
pub(crate) fn diff(pristine: BorrowedFd<'_>, current: BorrowedFd<'_>) -> Result<ConfigDiff> {
    let side = rustix::io::fcntl_dupfd_cloexec(pristine, 0).context("duplicating a descriptor")?;
    let plan = etc_merge::plan(side, current, pristine)?;
    from_plan(&plan, pristine)
}

/// Sorts a plan made with pristine as the new side into the three lists.
fn from_plan(plan: &MergePlan, pristine: BorrowedFd<'_>) -> Result<ConfigDiff> {
    let mut d = ConfigDiff::default();
    let shown = |p: &Path| Path::new("/etc").join(p);
    for a in &plan.actions {
        match a {
            Action::Copy(p) => {
                if in_tree(pristine, p)? {
                    d.modified.push(shown(p));
                } else {
                    d.added.push(shown(p));
                }
            }
            Action::Remove(p) => d.removed.push(shown(p)),
        }
    }
    for l in [&mut d.added, &mut d.modified, &mut d.removed] {
        l.sort();
    }
    Ok(d)
}

/// Whether `rel` exists in `tree` (the entry itself, not following a final symlink).
fn in_tree(tree: BorrowedFd<'_>, rel: &Path) -> Result<bool> {
    match statat(tree, rel, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("examining /etc/{}", rel.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn open(p: &Path) -> std::os::fd::OwnedFd {
        durable::open_dir(rustix::fs::CWD, p).unwrap()
    }

    #[test]
    fn lists_exactly_the_local_changes() {
        let t = tempfile::tempdir().unwrap();
        let (p, c) = (t.path().join("p"), t.path().join("c"));
        for d in [&p, &c] {
            fs::create_dir_all(d.join("conf.d")).unwrap();
            fs::write(d.join("same"), "x").unwrap();
            fs::write(d.join("edited"), "old").unwrap();
            fs::write(d.join("chmodded"), "x").unwrap();
            fs::write(d.join("gone"), "x").unwrap();
            fs::write(d.join("conf.d/a"), "x").unwrap();
            symlink("same", d.join("link")).unwrap();
        }
        fs::write(c.join("edited"), "new").unwrap();
        fs::set_permissions(c.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(c.join("gone")).unwrap();
        fs::remove_dir_all(c.join("conf.d")).unwrap();
        fs::remove_file(c.join("link")).unwrap();
        symlink("edited", c.join("link")).unwrap();
        fs::create_dir(c.join("new.d")).unwrap();
        fs::write(c.join("new.d/b"), "x").unwrap();
        fs::write(c.join("added"), "x").unwrap();

        let d = diff(open(&p).as_fd(), open(&c).as_fd()).unwrap();
        let paths = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            d.added,
            paths(&["/etc/added", "/etc/new.d", "/etc/new.d/b"])
        );
        assert_eq!(
            d.modified,
            paths(&["/etc/chmodded", "/etc/edited", "/etc/link"])
        );
        assert_eq!(d.removed, paths(&["/etc/conf.d", "/etc/gone"]));
        assert!(d.render_human().contains("Removed  /etc/gone\n"));

        let same = diff(open(&p).as_fd(), open(&p).as_fd()).unwrap();
        assert!(same.is_empty(), "{same:?}");
    }
}
