//! Durable, atomic writes relative to directory file descriptors.
//!
//! Every durable write is: write a temporary file next to the target, fsync it, rename
//! it into place, fsync the directory (docs/architecture.md). A crash at any instant
//! leaves either the old or the new content, never a torn file. Each primitive here is
//! a counted fault step ([`super::fault::durable_step`]), so tests can kill a run
//! before any of them.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{fsync, mkdirat, openat, renameat, unlinkat, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::fault;

/// The prefix of every temporary name bootc creates: files and directories written
/// under a temporary name and renamed into place, scratch trees and mount points. One
/// scheme, so the leftovers of an interrupted run are recognised by their name.
pub(crate) const TMP_PREFIX: &str = ".bootc-tmp.";

/// The temporary name for `purpose` (`<prefix><purpose>`), the same in every run, so a
/// re-run finds and replaces the leftover of an interrupted one.
pub(crate) fn tmp_name(purpose: &str) -> String {
    format!("{TMP_PREFIX}{purpose}")
}

/// A temporary name for `purpose` unique to this process: `<prefix><purpose>.<pid>`.
pub(crate) fn tmp_name_pid(purpose: &str) -> String {
    format!("{TMP_PREFIX}{purpose}.{}", std::process::id())
}

/// Whether `name` is one of bootc's temporary names.
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.starts_with(TMP_PREFIX)
}

/// Opens a directory (readable, for fsync and *at calls).
pub fn open_dir(dirfd: impl AsFd, path: impl AsRef<Path>) -> Result<OwnedFd> {
    let path = path.as_ref();
    openat(
        dirfd,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening directory {}", path.display()))
}

/// Creates `path` (one level) if missing and opens it.
pub(crate) fn ensure_dir(dirfd: impl AsFd, path: impl AsRef<Path>, mode: u32) -> Result<OwnedFd> {
    let path = path.as_ref();
    fault::durable_step("ensure_dir");
    match mkdirat(&dirfd, path, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating directory {}", path.display())),
    }
    open_dir(dirfd, path)
}

/// Creates every component of the relative `path` and opens the last one.
pub(crate) fn ensure_dir_all(
    dirfd: impl AsFd,
    path: impl AsRef<Path>,
    mode: u32,
) -> Result<OwnedFd> {
    fault::durable_step("ensure_dir_all");
    let mut cur = rustix::io::fcntl_dupfd_cloexec(dirfd, 0)?;
    for c in path.as_ref().components() {
        cur = ensure_dir(&cur, c.as_os_str(), mode)?;
    }
    Ok(cur)
}

/// Where an open file descriptor points, for messages only (never to operate on):
/// `/proc/self/fd/N` read back, or "an open directory" when that cannot be read.
pub(crate) fn fd_path(fd: impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "an open directory".to_string())
}

/// fsyncs a directory (after creating, renaming or removing entries in it); an error
/// names the directory.
pub(crate) fn fsync_dir(dir: impl AsFd) -> Result<()> {
    fault::durable_step("fsync_dir");
    fsync(&dir).with_context(|| format!("syncing directory {}", fd_path(&dir)))
}

/// Atomically replaces `name` in `dir` with `contents` (mode `mode`), durably.
pub(crate) fn write_file(dir: impl AsFd, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    write_file_with(dir, name, mode, |f| {
        f.write_all(contents).map_err(Into::into)
    })
}

/// Like [`write_file`], with the content produced by `fill`.
pub(crate) fn write_file_with(
    dir: impl AsFd,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = dir.as_fd();
    fault::durable_step("write_file");
    let tmp = tmp_name_pid(name);
    let _ = unlinkat(dir, &tmp, AtFlags::empty());
    let fd = openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .with_context(|| format!("creating {tmp}"))?;
    let mut file = std::fs::File::from(fd);
    let result = (|| -> Result<()> {
        fill(&mut file).with_context(|| format!("writing {name}"))?;
        // The umask may have narrowed the mode.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .with_context(|| format!("setting the mode of {name}"))?;
        file.sync_all().with_context(|| format!("syncing {name}"))?;
        fault::durable_step("write_file: rename");
        renameat(dir, &tmp, dir, name).with_context(|| format!("renaming {tmp} to {name}"))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = unlinkat(dir, &tmp, AtFlags::empty());
    }
    result?;
    fsync_dir(dir)
}

/// Renames the (fully written and synced) `tmp` entry to `name` in `dir` and syncs `dir`.
pub(crate) fn rename_into_place(dir: impl AsFd, tmp: &str, name: &str) -> Result<()> {
    fault::durable_step("rename_into_place");
    renameat(&dir, tmp, &dir, name).with_context(|| format!("renaming {tmp} to {name}"))?;
    fsync_dir(dir)
}

/// Removes `name` in `dir` recursively if it exists (for leftovers of an interrupted run).
pub(crate) fn remove_all(dir: impl AsFd, name: &str) -> Result<()> {
    fault::durable_step("remove_all");
    remove_all_os(dir.as_fd(), std::ffi::OsStr::new(name), true)
}

/// [`remove_all`] for any name: entries inside are removed whatever bytes name them.
/// `top` marks the name [`remove_all`] was given: a fault step sits between emptying it
/// and removing it, so a half-removed tree is among the states a test kills it in.
fn remove_all_os(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    top: bool,
) -> Result<()> {
    let shown = name.to_string_lossy();
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {shown}")),
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode)
                != rustix::fs::FileType::Directory =>
        {
            return unlinkat(dir, name, AtFlags::empty())
                .with_context(|| format!("removing {shown}"));
        }
        Ok(_) => {}
    }
    let sub = open_dir(dir, name)?;
    let entries: Vec<std::ffi::OsString> = {
        let mut d = rustix::fs::Dir::read_from(&sub).with_context(|| format!("reading {shown}"))?;
        let mut v = vec![];
        while let Some(e) = d.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                v.push(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n).to_os_string(),
                );
            }
        }
        v
    };
    for e in entries {
        remove_all_os(sub.as_fd(), &e, false).with_context(|| format!("in {shown}"))?;
    }
    if top {
        fault::durable_step("remove_all: emptied");
    }
    unlinkat(dir, name, AtFlags::REMOVEDIR).with_context(|| format!("removing {shown}"))
}

/// Syncs every file and directory of the filesystem holding `fd`.
pub(crate) fn syncfs(fd: impl AsFd) -> Result<()> {
    fault::durable_step("syncfs");
    rustix::fs::syncfs(&fd).with_context(|| format!("syncing the filesystem of {}", fd_path(&fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::CWD;

    #[test]
    fn temporary_names_share_one_prefix() {
        assert_eq!(tmp_name("var"), ".bootc-tmp.var");
        let p = tmp_name_pid("merge");
        assert_eq!(p, format!(".bootc-tmp.merge.{}", std::process::id()));
        assert!(is_tmp_name(&p) && is_tmp_name(&tmp_name("x")));
        assert!(!is_tmp_name("bootc_composefs-ab") && !is_tmp_name(".hidden"));
    }

    #[test]
    fn sync_errors_name_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let d = open_dir(CWD, t.path()).unwrap();
        assert_eq!(fd_path(&d), t.path().display().to_string());
        fsync_dir(&d).unwrap();
        // fsync fails on a socket (EINVAL): the message names what was synced.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = format!("{:#}", fsync_dir(&a).unwrap_err());
        assert!(e.starts_with("syncing directory socket:["), "{e}");
        assert!(!e.contains('{') && !e.contains('\n'), "{e}");
    }

    #[test]
    fn atomic_write_and_remove() {
        let t = tempfile::tempdir().unwrap();
        let d = open_dir(CWD, t.path()).unwrap();
        write_file(&d, "a.conf", b"one\n", 0o644).unwrap();
        write_file(&d, "a.conf", b"two\n", 0o600).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("a.conf")).unwrap(),
            "two\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(t.path().join("a.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o7777, 0o600);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        let sub = ensure_dir_all(&d, "x/y/z", 0o755).unwrap();
        write_file(&sub, "f", b"", 0o644).unwrap();
        remove_all(&d, "x").unwrap();
        assert!(!t.path().join("x").exists());
        remove_all(&d, "x").unwrap();
    }
}
