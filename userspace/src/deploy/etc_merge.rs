//! The three-way merge of `/etc` that carries local changes into a new deployment.
//!
//! Inputs are three directory trees:
//! * **pristine**: the booted image's `/etc`, as shipped, read from the image's tree in
//!   the repository ([`ImageDir`]; never extracted to disk);
//! * **current**: the live `/etc`, with the machine's local changes;
//! * **new**: the staged deployment's `etc/`, a copy of the new image's `/etc`.
//!
//! Rules, per path (an entry's identity is its type, permission bits, owner, xattrs and
//! content or symlink target; timestamps are ignored):
//! * current equals pristine (untouched locally): new's version stays, whatever it is;
//! * present in pristine, absent in current (deleted locally): deleted in new;
//! * added or changed locally: current's version replaces new's;
//! * a directory is walked entry by entry; a locally changed directory carries its own
//!   metadata over and its entries follow the rules above;
//! * a type clash (file, directory, symlink) between the local version and a new
//!   version that upstream also changed (new differs from pristine) is a **conflict**;
//! * sockets, FIFOs and device nodes are skipped with a log line.
//!
//! [`plan`] only reads; it returns every action and every conflict, so a caller can
//! refuse before changing anything. [`apply`] carries a conflict-free plan out on
//! `new`; each file is written to a temporary name and renamed into place, and the
//! caller makes the whole result durable with one `syncfs` before anything boots it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use composefs::fsverity::FsVerityHashValue;
use composefs::generic_tree::LeafContent;
use composefs::repository::Repository;
use composefs::tree::{Directory, FileSystem, Inode, RegularFile};
use rustix::fs::{
    fchmod, fchown, fgetxattr, flistxattr, fsetxattr, mkdirat, openat, readlinkat, renameat,
    statat, symlinkat, unlinkat, AtFlags, Dir, FileType, Gid, Mode, OFlags, Uid, XattrFlags,
};
use rustix::io::Errno;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file of this size.
    File(u64),
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// A socket, FIFO or device node: never merged.
    Special,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::Special => "special file",
        }
    }
    fn same_type(&self, other: &Kind) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Everything compared about an entry, except file content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Type (and size or target).
    pub(crate) kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Extended attributes (not read for symlinks).
    pub(crate) xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// One change to make in `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Make `new/PATH` a copy of `current/PATH` (for a directory: the directory itself
    /// with its metadata, not its entries). Missing parents are created from current.
    Copy(PathBuf),
    /// Remove `new/PATH` (recursively).
    Remove(PathBuf),
}

/// A change the merge cannot make without losing something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// Relative to /etc.
    pub(crate) path: PathBuf,
    /// Why, for the journal and `bootc status`.
    pub(crate) reason: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/etc/{}: {}", self.path.display(), self.reason)
    }
}

/// The outcome of [`plan`].
#[derive(Debug, Default, Clone)]
pub(crate) struct MergePlan {
    /// Changes to make, parents before children.
    pub(crate) actions: Vec<Action>,
    /// Unresolvable clashes; a plan with any is never applied.
    pub(crate) conflicts: Vec<Conflict>,
    /// Special files left alone.
    pub(crate) skipped: Vec<PathBuf>,
}

impl MergePlan {
    /// One line naming every conflict.
    pub(crate) fn conflict_summary(&self) -> String {
        self.conflicts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The pristine side of the merge: the booted image's `/etc` as shipped, one directory
/// of it. [`ImageDir`] reads it straight from the image tree and the repository (what
/// staging and finalize use: nothing is written to compare against it); a directory
/// on disk ([`OwnedFd`]) serves the tests and any tree already extracted.
pub(crate) trait Pristine: Sized {
    /// The entry names of this directory.
    fn names(&self) -> io::Result<Vec<OsString>>;
    /// The metadata of entry `name`, or None when there is none. Xattrs are read for
    /// files and directories only, as [`meta`] does on disk.
    fn meta(&self, name: &OsStr) -> io::Result<Option<Meta>>;
    /// The subdirectory `name` ([`Pristine::meta`] said it is a directory).
    fn child(&self, name: &OsStr) -> io::Result<Self>;
    /// Whether the regular file `name` here holds the same bytes as `other/name`, a
    /// regular file of the same size (the caller compared the sizes).
    fn same_content(&self, name: &OsStr, other: BorrowedFd<'_>) -> io::Result<bool>;
}

impl Pristine for OwnedFd {
    fn names(&self) -> io::Result<Vec<OsString>> {
        list(self.as_fd())
    }
    fn meta(&self, name: &OsStr) -> io::Result<Option<Meta>> {
        meta(self.as_fd(), name)
    }
    fn child(&self, name: &OsStr) -> io::Result<Self> {
        open_dir(self.as_fd(), name)
    }
    fn same_content(&self, name: &OsStr, other: BorrowedFd<'_>) -> io::Result<bool> {
        same_files(open_file(self.as_fd(), name)?, open_file(other, name)?)
    }
}

/// A directory of an image's tree, its regular files read from the repository.
pub(crate) struct ImageDir<'a, H: FsVerityHashValue> {
    /// The directory.
    pub(crate) dir: &'a Directory<H>,
    /// The tree it belongs to (its leaves).
    pub(crate) fs: &'a FileSystem<H>,
    /// The repository holding its external file objects.
    pub(crate) repo: &'a Repository<H>,
}

impl<'a, H: FsVerityHashValue> ImageDir<'a, H> {
    fn lookup(&self, name: &OsStr) -> io::Result<&'a Inode<H>> {
        self.dir.lookup(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in the image", name.to_string_lossy()),
            )
        })
    }
}

impl<H: FsVerityHashValue> Pristine for ImageDir<'_, H> {
    fn names(&self) -> io::Result<Vec<OsString>> {
        Ok(self.dir.entries().map(|(n, _)| n.to_os_string()).collect())
    }
    fn meta(&self, name: &OsStr) -> io::Result<Option<Meta>> {
        let Some(inode) = self.dir.lookup(name) else {
            return Ok(None);
        };
        let (kind, stat) = match inode {
            Inode::Directory(d) => (Kind::Dir, &d.stat),
            Inode::Leaf(id, _) => {
                let leaf = self.fs.leaf(*id);
                let kind = match &leaf.content {
                    LeafContent::Regular(f) => Kind::File(f.file_size()),
                    LeafContent::Symlink(t) => Kind::Symlink(PathBuf::from(&**t)),
                    _ => Kind::Special,
                };
                (kind, &leaf.stat)
            }
        };
        let xattrs = match kind {
            Kind::File(_) | Kind::Dir => stat
                .xattrs
                .iter()
                .map(|(k, v)| (k.to_os_string(), v.to_vec()))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Some(Meta {
            kind,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            xattrs,
        }))
    }
    fn child(&self, name: &OsStr) -> io::Result<Self> {
        match self.lookup(name)? {
            Inode::Directory(d) => Ok(ImageDir {
                dir: d,
                fs: self.fs,
                repo: self.repo,
            }),
            Inode::Leaf(..) => Err(Errno::NOTDIR.into()),
        }
    }
    fn same_content(&self, name: &OsStr, other: BorrowedFd<'_>) -> io::Result<bool> {
        let Inode::Leaf(id, _) = self.lookup(name)? else {
            return Err(Errno::ISDIR.into());
        };
        let LeafContent::Regular(file) = &self.fs.leaf(*id).content else {
            return Err(Errno::INVAL.into());
        };
        let theirs = open_file(other, name)?;
        match file {
            RegularFile::Inline(data) => same_bytes(&mut &data[..], theirs),
            RegularFile::External(oid, _) | RegularFile::ExternalNoVerity(oid, _) => {
                let obj = self.repo.open_object(oid).map_err(io::Error::other)?;
                same_files(obj.into(), theirs)
            }
            RegularFile::Sparse(size) => same_bytes(&mut std::io::repeat(0).take(*size), theirs),
        }
    }
}

/// Computes the merge without changing anything. See the module documentation.
pub(crate) fn plan<P: Pristine>(
    pristine: P,
    current: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
) -> Result<MergePlan> {
    let mut out = MergePlan::default();
    let mut w = Walker { out: &mut out };
    w.walk(Path::new(""), Some(&pristine), Some(current), Some(new))?;
    Ok(out)
}

struct Walker<'p> {
    out: &'p mut MergePlan,
}

impl Walker<'_> {
    fn walk<P: Pristine>(
        &mut self,
        rel: &Path,
        p: Option<&P>,
        c: Option<BorrowedFd<'_>>,
        n: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        let listing = || format!("listing /etc/{}", rel.display());
        let mut names: BTreeSet<OsString> = BTreeSet::new();
        if let Some(p) = p {
            names.extend(p.names().with_context(listing)?);
        }
        if let Some(c) = c {
            names.extend(list(c).with_context(listing)?);
        }
        for name in names {
            let path = rel.join(&name);
            let ctx = || format!("examining /etc/{}", path.display());
            let pm = p
                .map(|d| d.meta(&name))
                .transpose()
                .with_context(ctx)?
                .flatten();
            let cm = c
                .map(|d| meta(d, &name))
                .transpose()
                .with_context(ctx)?
                .flatten();
            // New's full metadata is only needed where a clash must be judged.
            let nt = n
                .map(|d| file_type(d, &name))
                .transpose()
                .with_context(ctx)?
                .flatten();
            self.entry(&path, &name, p, c, n, pm, cm, nt)
                .with_context(ctx)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn entry<P: Pristine>(
        &mut self,
        path: &Path,
        name: &OsStr,
        p: Option<&P>,
        c: Option<BorrowedFd<'_>>,
        n: Option<BorrowedFd<'_>>,
        pm: Option<Meta>,
        cm: Option<Meta>,
        nt: Option<FileType>,
    ) -> Result<()> {
        let Some(cm) = cm else {
            // Deleted locally (it is in pristine, else we would not be here).
            if nt.is_some() {
                self.out.actions.push(Action::Remove(path.to_path_buf()));
            }
            return Ok(());
        };
        if cm.kind == Kind::Special {
            tracing::info!(
                "/etc/{}: skipping a socket, FIFO or device node",
                path.display()
            );
            self.out.skipped.push(path.to_path_buf());
            return Ok(());
        }

        // Did upstream change this entry? Asked only where the answer matters.
        let upstream_same = || -> io::Result<bool> {
            match (&pm, nt, p, n) {
                (Some(pm), Some(_), Some(p), Some(n)) => match meta(n, name)? {
                    Some(nm) => same(p, pm, n, name, &nm),
                    None => Ok(false),
                },
                (None, None, _, _) => Ok(true),
                _ => Ok(false),
            }
        };
        let n_is_dir = nt == Some(FileType::Directory);

        if cm.kind == Kind::Dir {
            let p_child = if pm.as_ref().is_some_and(|m| m.kind == Kind::Dir) {
                Some(p.expect("pm implies p").child(name)?)
            } else {
                None
            };
            let dir_meta_same = pm.as_ref().is_some_and(|pm| meta_eq(pm, &cm));
            if !dir_meta_same {
                // Added locally, type changed locally, or its metadata changed locally.
                if let Some(nt) = nt {
                    if !n_is_dir && !upstream_same()? {
                        self.conflict(path, &cm, nt);
                        return Ok(());
                    }
                }
                self.out.actions.push(Action::Copy(path.to_path_buf()));
            } else if let Some(nt) = nt.filter(|_| !n_is_dir) {
                // Upstream replaced a directory the user left alone by a non-directory:
                // fine if nothing inside changed locally, a conflict otherwise.
                let c_child = open_dir(c.expect("cm implies c"), name)?;
                let mut probe = MergePlan::default();
                Walker { out: &mut probe }.walk(
                    path,
                    p_child.as_ref(),
                    Some(c_child.as_fd()),
                    None,
                )?;
                if !probe.actions.iter().all(|a| matches!(a, Action::Remove(_)))
                    || !probe.conflicts.is_empty()
                {
                    self.conflict(path, &cm, nt);
                }
                return Ok(());
            }
            let c_child = open_dir(c.expect("cm implies c"), name)?;
            let n_child = if n_is_dir {
                Some(open_dir(n.expect("nt implies n"), name)?)
            } else {
                None
            };
            return self.walk(
                path,
                p_child.as_ref(),
                Some(c_child.as_fd()),
                n_child.as_ref().map(|f| f.as_fd()),
            );
        }

        // A file or symlink in current: did the local side change it?
        let local_same = match (&pm, p, c) {
            (Some(pm), Some(p), Some(c)) => same(p, pm, c, name, &cm)?,
            _ => false,
        };
        if local_same {
            return Ok(()); // untouched: new's version (or its absence) stays
        }
        if let Some(nt) = nt {
            if n_is_dir && !upstream_same()? {
                self.conflict(path, &cm, nt);
                return Ok(());
            }
        }
        self.out.actions.push(Action::Copy(path.to_path_buf()));
        Ok(())
    }

    fn conflict(&mut self, path: &Path, cm: &Meta, nt: FileType) {
        self.out.conflicts.push(Conflict {
            path: path.to_path_buf(),
            reason: format!(
                "changed locally into a {}, but the new image has a {} there",
                cm.kind.name(),
                type_name(nt)
            ),
        });
    }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// The type of entry `name` in `dir` (not following a symlink), or None when absent.
fn file_type(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Carries out a conflict-free plan on `new`, reading local versions from `current`.
///
/// Files are written under a temporary name in `scratch` (a directory on the same
/// filesystem as `new`, outside it: `state/`) and renamed into place, so an
/// interrupted merge never leaves a temporary file inside the tree that will boot.
///
/// Nothing is synced here, file by file: the caller syncs the filesystem once
/// (`syncfs`) before the new tree can boot (finalize does so before exchanging the boot
/// entries). A crash before that sync loses nothing that matters: the booted entries
/// are unchanged, and the next finalize plans again, and every file it carries over is
/// written again from the live /etc, whatever the crash left of it.
pub(crate) fn apply(
    plan: &MergePlan,
    current: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    scratch: BorrowedFd<'_>,
) -> Result<()> {
    if !plan.conflicts.is_empty() {
        bail!(
            "refusing to merge /etc with conflicts: {}",
            plan.conflict_summary()
        );
    }
    for action in &plan.actions {
        match action {
            Action::Remove(path) => remove_all(new, path).with_context(|| {
                format!("removing /etc/{} from the new deployment", path.display())
            })?,
            Action::Copy(path) => copy_entry(current, new, scratch, path)
                .with_context(|| format!("carrying /etc/{} over", path.display()))?,
        }
    }
    Ok(())
}

fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = vec![];
    for e in Dir::read_from(&fd)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Reads an entry's metadata, or None when it does not exist.
pub(crate) fn meta(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Meta>> {
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File(st.st_size as u64),
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink(PathBuf::from(OsStr::from_bytes(
            readlinkat(dir, name, vec![])?.as_bytes(),
        ))),
        _ => Kind::Special,
    };
    let xattrs = match kind {
        Kind::File(_) | Kind::Dir => {
            let fd = openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            read_xattrs(&fd)?
        }
        _ => BTreeMap::new(),
    };
    Ok(Some(Meta {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        xattrs,
    }))
}

fn read_xattrs(fd: &OwnedFd) -> io::Result<BTreeMap<OsString, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match sized(|buf| flistxattr(fd, buf)) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).expect("split on NUL");
        match sized(|buf| fgetxattr(fd, cname.as_c_str(), buf)) {
            Ok(v) => {
                out.insert(OsStr::from_bytes(name).to_os_string(), v);
            }
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Calls an xattr getter with a buffer that grows until the value fits (rustix does not
/// pass a zero-sized buffer through as a size query).
fn sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0u8; len];
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if len < (1 << 20) => len *= 8,
            Err(e) => return Err(e),
        }
    }
}

fn meta_eq(a: &Meta, b: &Meta) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.xattrs == b.xattrs
        && a.kind.same_type(&b.kind)
}

/// Same type, metadata, and content (files) or target (symlinks) between the pristine
/// entry `name` (metadata `pm`) and `d/name` (metadata `dm`). Directories compare their
/// own metadata only. File content is read only when everything else matches.
fn same<P: Pristine>(
    p: &P,
    pm: &Meta,
    d: BorrowedFd<'_>,
    name: &OsStr,
    dm: &Meta,
) -> io::Result<bool> {
    if !meta_eq(pm, dm) {
        return Ok(false);
    }
    match (&pm.kind, &dm.kind) {
        (Kind::File(sa), Kind::File(sb)) => Ok(sa == sb && p.same_content(name, d)?),
        (Kind::Symlink(ta), Kind::Symlink(tb)) => Ok(ta == tb),
        (Kind::Dir, Kind::Dir) | (Kind::Special, Kind::Special) => Ok(true),
        _ => Ok(false),
    }
}

fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    Ok(openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?
    .into())
}

/// Whether two open files hold the same bytes.
fn same_files(a: std::fs::File, b: std::fs::File) -> io::Result<bool> {
    let mut a = a;
    same_bytes(&mut a, b)
}

/// Whether `b` holds exactly the bytes `a` yields.
fn same_bytes(a: &mut impl io::Read, mut b: std::fs::File) -> io::Result<bool> {
    // On the stack: most of /etc is a few hundred bytes, and this runs once a file.
    let (mut ba, mut bb) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    loop {
        let na = read_full(a, &mut ba)?;
        let nb = read_full(&mut b, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < ba.len() {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn parent_and_name(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("")),
        path.file_name().expect("merge paths are never empty"),
    )
}

fn open_rel_dir(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let p = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(openat(
        root,
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates the missing ancestors of `path` in `new` with metadata from `current`.
fn ensure_parents(current: BorrowedFd<'_>, new: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let mut acc = PathBuf::new();
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    for comp in parent.components() {
        let (dir_rel, name) = (acc.clone(), comp.as_os_str().to_os_string());
        acc.push(&name);
        let ndir = open_rel_dir(new, &dir_rel)?;
        match meta(ndir.as_fd(), &name)? {
            Some(m) if m.kind == Kind::Dir => continue,
            Some(_) => bail!(
                "/etc/{} is not a directory in the new deployment",
                acc.display()
            ),
            None => {
                let cdir = open_rel_dir(current, &dir_rel)?;
                let cm = meta(cdir.as_fd(), &name)?
                    .with_context(|| format!("/etc/{} vanished", acc.display()))?;
                make_dir(ndir.as_fd(), &name, &cm)?;
            }
        }
    }
    Ok(())
}

fn make_dir(dir: BorrowedFd<'_>, name: &OsStr, m: &Meta) -> Result<()> {
    match mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open_dir(dir, name)?;
    set_meta(&fd, m)?;
    Ok(())
}

fn set_meta(fd: &OwnedFd, m: &Meta) -> Result<()> {
    fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))?;
    // After chown, which clears setuid/setgid.
    fchmod(fd, Mode::from_raw_mode(m.mode))?;
    let existing = read_xattrs(fd)?;
    for name in existing.keys().filter(|k| !m.xattrs.contains_key(*k)) {
        let cname = std::ffi::CString::new(name.as_bytes())?;
        rustix::fs::fremovexattr(fd, cname.as_c_str())?;
    }
    for (k, v) in &m.xattrs {
        let cname = std::ffi::CString::new(k.as_bytes())?;
        fsetxattr(fd, cname.as_c_str(), v, XattrFlags::empty())?;
    }
    Ok(())
}

fn copy_entry(
    current: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    scratch: BorrowedFd<'_>,
    path: &Path,
) -> Result<()> {
    ensure_parents(current, new, path)?;
    let (parent, name) = parent_and_name(path);
    let cdir = open_rel_dir(current, parent)?;
    let ndir = open_rel_dir(new, parent)?;
    let cm = meta(cdir.as_fd(), name)?.context("vanished from the live /etc")?;
    let nm = meta(ndir.as_fd(), name)?;

    if cm.kind == Kind::Dir {
        if nm.as_ref().is_some_and(|m| m.kind != Kind::Dir) {
            remove_all(new, path)?;
        }
        return make_dir(ndir.as_fd(), name, &cm);
    }
    if nm.as_ref().is_some_and(|m| m.kind == Kind::Dir) {
        remove_all(new, path)?;
    }
    // Write under a temporary name in the scratch directory, then rename over the
    // destination (atomic: both are on one filesystem).
    let tmp = OsString::from(crate::sys::durable::tmp_name_pid("merge"));
    let _ = unlinkat(scratch, &tmp, AtFlags::empty());
    match &cm.kind {
        Kind::Symlink(target) => {
            symlinkat(target, scratch, &tmp)?;
            rustix::fs::chownat(
                scratch,
                &tmp,
                Some(Uid::from_raw(cm.uid)),
                Some(Gid::from_raw(cm.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        Kind::File(_) => {
            let src: std::fs::File = openat(
                cdir.as_fd(),
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?
            .into();
            let dst: std::fs::File = openat(
                scratch,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?
            .into();
            std::io::copy(&mut &src, &mut &dst)?;
            let dst: OwnedFd = dst.into();
            set_meta(&dst, &cm)?;
        }
        Kind::Dir | Kind::Special => unreachable!("handled above"),
    }
    if let Err(e) = renameat(scratch, &tmp, ndir.as_fd(), name) {
        let _ = unlinkat(scratch, &tmp, AtFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

/// Removes `path` (file, symlink or whole directory tree) from `root`.
fn remove_all(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let (parent, name) = parent_and_name(path);
    let dir = match open_rel_dir(root, parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_in(dir.as_fd(), name)
}

fn remove_in(dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let sub = open_dir(dir, name)?;
            for child in list(sub.as_fd())? {
                remove_in(sub.as_fd(), &child)?;
            }
            unlinkat(dir, name, AtFlags::REMOVEDIR)?;
            Ok(())
        }
        Ok(_) => {
            unlinkat(dir, name, AtFlags::empty())?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Trees {
        _tmp: tempfile::TempDir,
        p: PathBuf,
        c: PathBuf,
        n: PathBuf,
        /// The scratch directory (`state/` in a real deployment).
        s: PathBuf,
    }

    fn fd(p: &Path) -> OwnedFd {
        openat(
            rustix::fs::CWD,
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    impl Trees {
        /// pristine = v1 image /etc, new = v2 image /etc, current = copy of pristine.
        fn new(setup: impl Fn(&Path, u32)) -> Trees {
            let tmp = tempfile::tempdir().unwrap();
            let (p, c, n) = (
                tmp.path().join("p"),
                tmp.path().join("c"),
                tmp.path().join("n"),
            );
            for (d, v) in [(&p, 1), (&c, 1), (&n, 2)] {
                fs::create_dir(d).unwrap();
                setup(d, v);
            }
            let s = tmp.path().join("s");
            fs::create_dir(&s).unwrap();
            Trees {
                _tmp: tmp,
                p,
                c,
                n,
                s,
            }
        }
        /// The plan with pristine read from disk, checked to be the plan with pristine
        /// read as an image tree (what staging and finalize use).
        fn plan(&self) -> MergePlan {
            let on_disk = plan(fd(&self.p), fd(&self.c).as_fd(), fd(&self.n).as_fd()).unwrap();
            let from_image = self.plan_from_image();
            assert_eq!(on_disk.actions, from_image.actions);
            assert_eq!(on_disk.conflicts, from_image.conflicts);
            assert_eq!(on_disk.skipped, from_image.skipped);
            on_disk
        }

        /// The plan with pristine taken from an image tree of `p`, its files stored as
        /// objects of a repository (as a pulled image's are).
        fn plan_from_image(&self) -> MergePlan {
            use composefs::fsverity::Sha256HashValue;
            let root = tempfile::tempdir().unwrap();
            let repo = crate::repo::init::<Sha256HashValue>(fd(root.path()), false).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let fs = rt
                .block_on(composefs::fs::read_filesystem(
                    fd(&self.p),
                    PathBuf::from("."),
                    Some(repo.clone()),
                ))
                .unwrap();
            let p = ImageDir {
                dir: &fs.root,
                fs: &fs,
                repo: &repo,
            };
            plan(p, fd(&self.c).as_fd(), fd(&self.n).as_fd()).unwrap()
        }
        fn merge(&self) -> MergePlan {
            let pl = self.plan();
            apply(
                &pl,
                fd(&self.c).as_fd(),
                fd(&self.n).as_fd(),
                fd(&self.s).as_fd(),
            )
            .unwrap();
            assert_eq!(
                fs::read_dir(&self.s).unwrap().count(),
                0,
                "no temporary is left in the scratch directory"
            );
            pl
        }
    }

    fn image(d: &Path, v: u32) {
        fs::write(d.join("untouched"), format!("v{v}\n")).unwrap();
        fs::write(d.join("same"), "same\n").unwrap();
        fs::write(d.join("edited"), "orig\n").unwrap();
        fs::write(d.join("chmod"), "x\n").unwrap();
        fs::write(d.join("chown"), "x\n").unwrap();
        fs::write(d.join("deleted"), format!("v{v}\n")).unwrap();
        symlink("target-a", d.join("link")).unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        fs::write(d.join("dir/inner"), "inner\n").unwrap();
        fs::write(d.join("clash"), "file\n").unwrap();
        if v == 1 {
            fs::write(d.join("removed-upstream"), "old\n").unwrap();
        } else {
            fs::write(d.join("added-upstream"), "new\n").unwrap();
        }
        if v == 2 {
            // Upstream turned a file into a directory.
            fs::remove_file(d.join("clash")).unwrap();
            fs::create_dir(d.join("clash")).unwrap();
            fs::write(d.join("clash/x"), "x\n").unwrap();
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn every_rule() {
        let t = Trees::new(|d, v| {
            image(d, v);
            // the clash case is covered in its own test
            if v == 2 {
                fs::remove_dir_all(d.join("clash")).unwrap();
                fs::write(d.join("clash"), "file\n").unwrap();
            }
        });
        let c = &t.c;
        fs::write(c.join("added"), "local\n").unwrap();
        fs::write(c.join("edited"), "local edit\n").unwrap();
        fs::set_permissions(c.join("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        rustix::fs::chown(
            c.join("chown"),
            Some(Uid::from_raw(1234)),
            Some(Gid::from_raw(5678)),
        )
        .unwrap();
        fs::remove_file(c.join("deleted")).unwrap();
        fs::remove_file(c.join("link")).unwrap();
        symlink("target-b", c.join("link")).unwrap();
        fs::create_dir_all(c.join("newdir/sub")).unwrap();
        fs::write(c.join("newdir/sub/f"), "deep\n").unwrap();
        fs::write(c.join("dir/local"), "in dir\n").unwrap();
        fs::write(c.join("removed-upstream"), "kept locally\n").unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(c.join("fifo"))
            .status()
            .unwrap()
            .success());

        let pl = t.merge();
        assert!(pl.conflicts.is_empty(), "{:?}", pl.conflicts);
        assert_eq!(pl.skipped, vec![PathBuf::from("fifo")]);
        let n = &t.n;
        assert_eq!(
            read(&n.join("untouched")),
            "v2\n",
            "untouched takes the new version"
        );
        assert_eq!(read(&n.join("added")), "local\n");
        assert_eq!(read(&n.join("edited")), "local edit\n");
        assert_eq!(
            fs::metadata(n.join("chmod")).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let st = rustix::fs::stat(n.join("chown")).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (1234, 5678));
        assert!(!n.join("deleted").exists(), "local deletion carries over");
        assert_eq!(
            fs::read_link(n.join("link")).unwrap(),
            PathBuf::from("target-b")
        );
        assert_eq!(read(&n.join("newdir/sub/f")), "deep\n");
        assert_eq!(read(&n.join("dir/local")), "in dir\n");
        assert_eq!(read(&n.join("dir/inner")), "inner\n");
        assert_eq!(read(&n.join("added-upstream")), "new\n");
        assert_eq!(
            read(&n.join("removed-upstream")),
            "kept locally\n",
            "a local edit survives upstream removal"
        );
        assert!(!n.join("fifo").exists());
        // Nothing else appeared.
        let mut names: Vec<_> = fs::read_dir(n)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "added",
                "added-upstream",
                "chmod",
                "chown",
                "clash",
                "dir",
                "edited",
                "link",
                "newdir",
                "removed-upstream",
                "same",
                "untouched"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn untouched_removed_upstream_stays_removed() {
        let t = Trees::new(image);
        // remove the clash to isolate
        for d in [&t.c, &t.p] {
            fs::remove_file(d.join("clash")).unwrap();
        }
        t.merge();
        assert!(!t.n.join("removed-upstream").exists());
    }

    #[test]
    fn file_vs_dir_clash_is_a_conflict() {
        let t = Trees::new(image);
        fs::write(t.c.join("clash"), "edited locally\n").unwrap();
        let before = read(&t.n.join("clash/x"));
        let pl = t.plan();
        assert_eq!(pl.conflicts.len(), 1, "{pl:?}");
        assert_eq!(pl.conflicts[0].path, PathBuf::from("clash"));
        assert!(
            pl.conflict_summary().contains("/etc/clash"),
            "{}",
            pl.conflict_summary()
        );
        let err = apply(&pl, fd(&t.c).as_fd(), fd(&t.n).as_fd(), fd(&t.s).as_fd()).unwrap_err();
        assert!(err.to_string().contains("conflicts"));
        assert_eq!(read(&t.n.join("clash/x")), before, "nothing changed");
    }

    #[test]
    fn untouched_file_replaced_by_dir_upstream_is_fine() {
        let t = Trees::new(image);
        let pl = t.merge();
        assert!(pl.conflicts.is_empty());
        assert!(t.n.join("clash").is_dir());
    }

    #[test]
    fn local_dir_where_upstream_put_a_file_is_a_conflict() {
        let t = Trees::new(|d, v| {
            fs::create_dir(d).ok();
            if v == 2 {
                fs::write(d.join("thing"), "file\n").unwrap();
            }
        });
        fs::create_dir(t.c.join("thing")).unwrap();
        fs::write(t.c.join("thing/a"), "a\n").unwrap();
        assert_eq!(t.plan().conflicts.len(), 1);
    }

    #[test]
    fn local_dir_change_under_dir_removed_upstream_recreates_parents() {
        let t = Trees::new(|d, v| {
            if v == 1 {
                fs::create_dir_all(d.join("a/b")).unwrap();
                fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
                fs::write(d.join("a/b/conf"), "1\n").unwrap();
            }
        });
        fs::write(t.c.join("a/b/conf"), "edited\n").unwrap();
        t.merge();
        assert_eq!(read(&t.n.join("a/b/conf")), "edited\n");
        assert_eq!(
            fs::metadata(t.n.join("a")).unwrap().permissions().mode() & 0o777,
            0o750
        );
    }

    /// Files large enough to be repository objects (not inline in the image tree) are
    /// compared by content, down to the last byte.
    #[test]
    fn large_files_are_compared_to_their_objects() {
        let big = |tail: &str| format!("{}{tail}", "x".repeat(100 * 1024));
        let t = Trees::new(|d, _| {
            fs::write(d.join("big-untouched"), big("a")).unwrap();
            fs::write(d.join("big-edited"), big("a")).unwrap();
            fs::write(d.join("big-grown"), big("a")).unwrap();
        });
        fs::write(t.c.join("big-edited"), big("b")).unwrap();
        fs::write(t.c.join("big-grown"), big("ab")).unwrap();
        let pl = t.merge();
        assert_eq!(
            pl.actions,
            vec![
                Action::Copy("big-edited".into()),
                Action::Copy("big-grown".into())
            ]
        );
        assert_eq!(read(&t.n.join("big-edited")), big("b"));
    }

    #[test]
    fn identical_trees_do_nothing() {
        let t = Trees::new(|d, _| image(d, 1));
        let pl = t.plan();
        assert!(pl.actions.is_empty() && pl.conflicts.is_empty(), "{pl:?}");
    }

    #[test]
    fn xattrs_are_compared_and_carried() {
        let t = Trees::new(|d, _| fs::write(d.join("x"), "x\n").unwrap());
        let f = t.c.join("x");
        match rustix::fs::setxattr(&f, c"user.test", b"1", XattrFlags::empty()) {
            Err(Errno::NOTSUP) | Err(Errno::PERM) => return, // fs without user xattrs
            r => r.unwrap(),
        }
        let pl = t.merge();
        assert_eq!(pl.actions, vec![Action::Copy("x".into())]);
        assert_eq!(
            sized(|b| rustix::fs::getxattr(t.n.join("x"), c"user.test", b)).unwrap(),
            b"1"
        );
    }
}
