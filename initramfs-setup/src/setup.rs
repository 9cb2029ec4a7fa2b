//! Compose the deployment's root filesystem and put it in place.
//!
//! The contract (docs/architecture.md, section 4): given the physical root and the kernel command
//! line, mount `composefs/images/<id>` as an overlay whose data-only lower layer is the
//! object store (`verity=require` unless the argument starts with `?`), read-only; bind
//! the deployment's `/etc` and the shared `/var` into it; keep the physical root at
//! `/sysroot` inside it; then stack it on the physical root's mount point (or attach it
//! at `--target`, leaving the physical root alone).
//!
//! Every check that can be made before mounting is made first. When a step fails, what
//! was already mounted is detached again, and the error is one line naming the step,
//! the path and what to check. Nothing is ever mounted without fs-verity when the
//! command line required it.
//!
//! Nothing on the physical root is trusted to point elsewhere: `images/<id>` is followed
//! only to its own object, the deployment's `etc` and the shared var must be real
//! directories (no symlink anywhere on the way), an empty or garbage image is called
//! corrupt before the kernel sees it, and the mounted image must pass
//! [`crate::bootable::check`] before anything is attached.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use composefs::fsverity::{measure_verity, FsVerityHashValue, MeasureVerityError};
use composefs::mount::VerityRequirement;
use composefs::repository::{Repository, RepositoryOpenError};
use rustix::fs::{
    fcntl_setfl, fstat, fstatfs, mkdirat, openat, openat2, readlinkat, statat, AtFlags, FileType,
    Mode, OFlags, ResolveFlags, CWD,
};
use rustix::io::Errno;
use rustix::mount::{
    mount, move_mount, open_tree, unmount, MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::bootable::{self, NodeKind};
use crate::cmdline::ComposefsKarg;
use crate::compose::{compose, Compose};
use crate::config::{MountMode, SetupConfig};
use crate::layout;
use crate::one_line;

/// A failed setup step, rendered as one line: `STEP: PATH: DETAIL (HINT)`.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {path}: {detail}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct SetupError {
    /// What was being done.
    pub step: &'static str,
    /// The path it was done on.
    pub path: String,
    /// What went wrong.
    pub detail: String,
    /// What to check.
    pub hint: Option<String>,
}

fn fail(step: &'static str, path: impl AsRef<Path>, detail: impl ToString) -> SetupError {
    SetupError {
        step,
        path: path.as_ref().display().to_string(),
        detail: one_line(&detail.to_string()),
        hint: None,
    }
}

impl SetupError {
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// What `setup-root` is asked to do.
#[derive(Debug, Clone)]
pub struct SetupArgs {
    /// The physical root (holds `composefs/` and `state/`).
    pub sysroot: PathBuf,
    /// The kernel command line text.
    pub cmdline: String,
    /// The parsed configuration.
    pub config: SetupConfig,
    /// Attach the composed root here instead of replacing `sysroot`.
    pub target: Option<PathBuf>,
}

/// Mount the deployment named on the command line. See the module documentation.
pub fn setup_root(args: &SetupArgs) -> Result<(), SetupError> {
    let karg = ComposefsKarg::from_cmdline(&args.cmdline).map_err(|e| {
        fail("reading the kernel command line", "composefs=", e)
            .hint("expected composefs=[?]sha256:<64 hex digits> naming a deployment")
    })?;
    crate::with_algorithm!(karg.id.algorithm(), H => setup_typed::<H>(args, &karg))
}

fn setup_typed<H: FsVerityHashValue>(
    args: &SetupArgs,
    karg: &ComposefsKarg,
) -> Result<(), SetupError> {
    let sysroot = &args.sysroot;
    let id = &karg.id;
    let repo_path = sysroot.join(layout::REPOSITORY);

    let sysroot_fd = open_dir(CWD, sysroot).map_err(|e| {
        fail("opening the physical root", sysroot, e).hint("is the root filesystem mounted there?")
    })?;

    // The repository: it must be one, and of the digest's algorithm. Opening it reads and
    // checks meta.json once (the algorithm among the rest); its directory, held by the
    // repository, is where the image is looked up.
    let repo = Repository::<H>::open_path(&sysroot_fd, layout::REPOSITORY)
        .map_err(|e| repository_error(e, &repo_path, karg))?;
    let objects = repo.objects_dir().map_err(|e| {
        fail(
            "opening the object store",
            repo_path.join(layout::REPO_OBJECTS),
            e,
        )
    })?;

    // The image, and its fs-verity digest.
    let image_path = sysroot.join(layout::image_path(id));
    let (image, size) = open_image(repo.repo_fd(), id, &image_path)?;
    check_image_verity::<H>(&image, karg, &image_path)?;
    check_erofs_superblock(&image, size, &image_path)?;
    compose_root(args, karg, &sysroot_fd, objects.as_fd(), image, &image_path)
}

/// Why the repository could not be opened, as the step's one line. Not generic: one copy
/// for both hash types.
#[inline(never)]
fn repository_error(e: RepositoryOpenError, repo_path: &Path, karg: &ComposefsKarg) -> SetupError {
    let step = "opening the composefs repository";
    let not_ours = "was this disk installed with bootc's composefs backend?";
    match e {
        RepositoryOpenError::MetadataMissing | RepositoryOpenError::OldFormatRepository => {
            fail(step, repo_path, "not a composefs repository (no meta.json)").hint(not_ours)
        }
        RepositoryOpenError::AlgorithmMismatch { found, .. } => fail(
            step,
            repo_path,
            format!(
                "the repository uses {} but the command line names a {} digest",
                found.hash_name(),
                karg.id.algorithm()
            ),
        )
        .hint("check composefs= on the kernel command line"),
        RepositoryOpenError::Io(e)
            if matches!(
                e.raw_os_error().map(Errno::from_raw_os_error),
                Some(Errno::NOENT | Errno::NOTDIR)
            ) =>
        {
            fail(step, repo_path, e).hint(not_ours)
        }
        e @ RepositoryOpenError::Io(_) => fail(step, repo_path, e),
        e => {
            fail(step, repo_path, e).hint("the repository metadata is damaged or from a newer tool")
        }
    }
}

/// The rest of [`setup_typed`], which does not depend on the hash type: one copy in the
/// binary, not one per algorithm.
#[inline(never)]
fn compose_root(
    args: &SetupArgs,
    karg: &ComposefsKarg,
    sysroot_fd: &OwnedFd,
    objects: BorrowedFd<'_>,
    image: OwnedFd,
    image_path: &Path,
) -> Result<(), SetupError> {
    let sysroot = &args.sysroot;
    let id = &karg.id;
    // The deployment's state, checked before anything is mounted. Its directories are
    // resolved inside the physical root without following any symlink: a planted
    // `etc -> /etc` must never be bound over the new root's /etc.
    let deploy_dir = layout::deploy_dir(id);
    open_real_dir(sysroot_fd, &deploy_dir).map_err(|e| {
        fail("opening the deployment state", sysroot.join(&deploy_dir), e)
            .hint("the deployment was not written by bootc install/upgrade, or was removed")
    })?;
    let etc_state = match args.config.etc.mount {
        MountMode::Bind | MountMode::Overlay => Some(
            open_real_dir(sysroot_fd, &layout::deploy_etc(id)).map_err(|e| {
                fail(
                    "opening the deployment's /etc",
                    sysroot.join(layout::deploy_etc(id)),
                    e,
                )
                .hint("the deployment state is damaged; choose another boot entry")
            })?,
        ),
        _ => None,
    };
    let (var_state, var_rel) = match args.config.var.mount {
        MountMode::Bind | MountMode::Overlay => {
            let (fd, rel) = open_shared_var(sysroot_fd, id).map_err(|(e, hint)| {
                fail(
                    "opening the shared /var",
                    sysroot.join(layout::deploy_var(id)),
                    e,
                )
                .hint(hint)
            })?;
            (Some(fd), Some(rel))
        }
        _ => (None, None),
    };

    // Scratch space for transient layers, detached again when we are done.
    let mut scratch = Scratch::default();
    let verity = if karg.insecure {
        VerityRequirement::Disabled
    } else {
        VerityRequirement::Required
    };
    let transient = if args.config.root.transient {
        Some(
            scratch
                .upper_work("root")
                .map_err(|e| fail("preparing the transient root layer", scratch.describe(), e))?,
        )
    } else {
        None
    };
    let how = Compose {
        name: id.hex(),
        objects: objects.as_fd(),
        verity,
        upper: transient.as_ref().map(|(u, w)| (u, w)),
        read_write: transient.is_some(),
    };

    let root = mount_image(image, &how).map_err(|e| match e {
        MountError::Image(e) => fail(
            "mounting the composefs image",
            image_path,
            format!("the image is corrupt: EROFS refuses it: {e}"),
        )
        .hint("the repository is damaged; choose another boot entry"),
        MountError::Other(e) => {
            fail("mounting the composefs image", image_path, e).hint(mount_failure_hint(karg))
        }
    })?;

    // The image must have every directory we mount on (the rule `bootc` also applies
    // before staging). Checked on the detached mount, so a refusal leaves nothing behind.
    bootable::check(
        |name| match statat(&root, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => NodeKind::from_file_type(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => NodeKind::Missing,
            Err(e) => NodeKind::Unreadable(e.to_string()),
        },
    )
    .map_err(|e| {
        let hint = match e {
            bootable::NotBootable::Unreadable { .. } => {
                "the image is damaged; choose another boot entry"
            }
            _ => "choose another boot entry",
        };
        fail("checking the deployment image", image_path, e).hint(hint)
    })?;

    // From here on, undo what we attached if a later step fails.
    let mountpoint = args.target.clone().unwrap_or_else(|| sysroot.clone());
    let mut attached = Attached::default();
    let sysroot_clone = open_tree(
        sysroot_fd,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| fail("cloning the physical root mount", sysroot, e))?;
    attach(&root, &mountpoint).map_err(|e| fail("attaching the composed root", &mountpoint, e))?;
    attached.push(mountpoint.clone());
    provide_dir(
        &mut attached,
        &mut scratch,
        &mountpoint,
        layout::ETC_IN_ROOT,
        args.config.etc.mount,
        etc_state
            .as_ref()
            .map(|fd| (fd, sysroot_fd, layout::deploy_etc(id))),
    )?;
    provide_dir(
        &mut attached,
        &mut scratch,
        &mountpoint,
        layout::VAR_IN_ROOT,
        args.config.var.mount,
        var_state
            .as_ref()
            .map(|fd| (fd, sysroot_fd, var_rel.clone().unwrap_or_default())),
    )?;

    let in_root = mountpoint.join(layout::SYSROOT_IN_ROOT);
    attach(&sysroot_clone, &in_root).map_err(|e| fail("binding the physical root", &in_root, e))?;
    attached.push(in_root);

    attached.disarm();
    Ok(())
}

/// Opens `images/<hex>` for reading without following a symlink anywhere but to the
/// image's own object: a regular file is taken as it is; a symlink is followed only when
/// it is exactly `../objects/<xx>/<rest>` of the same digest (what the repository
/// writes), and that object is opened without following any symlink. Anything else is
/// refused, so a planted link can never make us mount a file from elsewhere. Returns the
/// image and its size.
fn open_image(
    repo_dir: BorrowedFd<'_>,
    id: &crate::cmdline::DeploymentId,
    image_path: &Path,
) -> Result<(OwnedFd, i64), SetupError> {
    let step = "opening the deployment image";
    let in_repo = |p: PathBuf| -> PathBuf {
        p.strip_prefix(layout::REPOSITORY)
            .map(Path::to_path_buf)
            .unwrap_or(p)
    };
    let link = in_repo(layout::image_path(id));
    // The usual case, a symlink, in one call; EINVAL: not a symlink, then it must be a
    // regular file (checked before opening it: a device node is never opened).
    let file = match readlinkat(repo_dir, &link, Vec::new()) {
        Ok(target) => {
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            let expected = layout::image_link_target(id);
            if target != expected {
                return Err(fail(
                    step,
                    image_path,
                    format!(
                        "is a symlink to {}, not to the image's own object {}",
                        target.display(),
                        expected.display()
                    ),
                )
                .hint("the repository was damaged or tampered with; choose another boot entry"));
            }
            in_repo(layout::image_object_path(id))
        }
        Err(Errno::INVAL) => match statat(repo_dir, &link, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => link,
            Ok(_) => {
                return Err(fail(step, image_path, "not a regular file").hint(
                    "the repository was damaged or tampered with; choose another boot entry",
                ))
            }
            Err(e) => return Err(fail(step, image_path, e)),
        },
        Err(Errno::NOENT) => {
            return Err(fail(
                step,
                image_path.parent().unwrap_or(image_path),
                format!("image {} not found", id.short()),
            )
            .hint("was the deployment garbage-collected? choose another boot entry"))
        }
        Err(e) => return Err(fail(step, image_path, e)),
    };
    // O_NONBLOCK so a fifo planted as the object cannot hang the boot; cleared below.
    let fd = openat2(
        repo_dir,
        &file,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| {
        let shown = image_path
            .parent()
            .and_then(Path::parent)
            .map(|repo| repo.join(&file))
            .unwrap_or_else(|| file.clone());
        let detail = match e {
            Errno::LOOP => "is a symlink or lies under one".to_string(),
            e => e.to_string(),
        };
        fail(step, shown, detail)
            .hint("the repository was damaged or tampered with; choose another boot entry")
    })?;
    let st = fstat(&fd).map_err(|e| fail(step, image_path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(fail(step, image_path, "not a regular file")
            .hint("the repository was damaged or tampered with; choose another boot entry"));
    }
    fcntl_setfl(&fd, OFlags::empty()).map_err(|e| fail(step, image_path, e))?;
    Ok((fd, st.st_size))
}

/// EROFS keeps its superblock at byte 1024, starting with this little-endian magic.
const EROFS_SUPER_OFFSET: u64 = 1024;
const EROFS_SUPER_MAGIC: u32 = 0xE0F5_E1E2;

/// Refuses an empty or garbage image before the kernel sees it, so the error says what
/// is wrong with the image instead of suggesting the kernel lacks a filesystem.
fn check_erofs_superblock(image: &OwnedFd, size: i64, path: &Path) -> Result<(), SetupError> {
    let step = "checking the deployment image";
    let hint = "the repository is damaged; choose another boot entry";
    if size == 0 {
        return Err(fail(step, path, "the image is empty (0 bytes)").hint(hint));
    }
    let mut magic = [0u8; 4];
    let n = rustix::io::pread(image, &mut magic, EROFS_SUPER_OFFSET)
        .map_err(|e| fail(step, path, format!("reading the superblock: {e}")).hint(hint))?;
    if n < magic.len() || u32::from_le_bytes(magic) != EROFS_SUPER_MAGIC {
        return Err(fail(
            step,
            path,
            format!("the image is corrupt: no EROFS superblock ({size} bytes)"),
        )
        .hint(hint));
    }
    Ok(())
}

/// With verity required, the image must carry fs-verity and its digest must be the id.
/// Insecure boots accept an image without verity, but never one whose digest is wrong.
fn check_image_verity<H: FsVerityHashValue>(
    image: &OwnedFd,
    karg: &ComposefsKarg,
    path: &Path,
) -> Result<(), SetupError> {
    let step = "verifying the deployment image";
    match measure_verity::<H>(image) {
        Ok(found) if found.to_hex() == karg.id.hex() => Ok(()),
        Ok(found) => Err(fail(
            step,
            path,
            format!(
                "fs-verity digest is {}, the command line names {}",
                found.to_hex(),
                karg.id.hex()
            ),
        )
        .hint("the image was replaced or damaged")),
        Err(MeasureVerityError::VerityMissing | MeasureVerityError::FilesystemNotSupported)
            if karg.insecure =>
        {
            Ok(())
        }
        Err(
            e @ (MeasureVerityError::VerityMissing | MeasureVerityError::FilesystemNotSupported),
        ) => Err(fail(step, path, e).hint(
            "fs-verity is required by composefs=; boot with composefs=? only if this is expected",
        )),
        Err(e) => Err(fail(step, path, e)),
    }
}

/// Resolves the deployment's `var` symlink inside the physical root. Returns the
/// opened directory and its path relative to the physical root.
fn open_shared_var(
    sysroot: &OwnedFd,
    id: &crate::cmdline::DeploymentId,
) -> Result<(OwnedFd, PathBuf), (String, String)> {
    let expected = || format!("expected {}", layout::DEPLOY_VAR_LINK);
    let link = layout::deploy_var(id);
    let target = readlinkat(sysroot, &link, Vec::new()).map_err(|e| {
        (
            e.to_string(),
            "the deployment's var symlink is missing".to_string(),
        )
    })?;
    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
    // Resolve lexically relative to the deployment directory, staying inside the root.
    let mut rel = PathBuf::new();
    for c in layout::deploy_dir(id).join(&target).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => {
                if !rel.pop() {
                    return Err((
                        format!("symlink to {} leaves the physical root", target.display()),
                        expected(),
                    ));
                }
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err((
                    format!("symlink to {} is absolute", target.display()),
                    expected(),
                ))
            }
        }
    }
    let fd = open_real_dir(sysroot, &rel).map_err(|e| {
        (
            format!("{}: {e}", rel.display()),
            format!(
                "the shared var must be the directory {}",
                layout::SHARED_VAR
            ),
        )
    })?;
    Ok((fd, rel))
}

/// Provides `/etc` or `/var` in the composed root per the configured mode.
fn provide_dir(
    attached: &mut Attached,
    scratch: &mut Scratch,
    mountpoint: &Path,
    name: &'static str,
    mode: MountMode,
    state: Option<(&OwnedFd, &OwnedFd, PathBuf)>,
) -> Result<(), SetupError> {
    let target = mountpoint.join(name);
    match (mode, state) {
        (MountMode::None, _) => Ok(()),
        (MountMode::Bind, Some((state, _, rel))) => {
            let clone = open_tree(
                state,
                "",
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| fail("binding state", &rel, e))?;
            attach(&clone, &target).map_err(|e| fail("binding state", &target, e))?;
            attached.push(target);
            Ok(())
        }
        (MountMode::Overlay, Some((state, sysroot_fd, rel))) => {
            let work_rel = PathBuf::from(format!("{}.work", rel.display()));
            match mkdirat(sysroot_fd, &work_rel, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(fail("creating the overlay work directory", &work_rel, e)),
            }
            let work = open_real_dir(sysroot_fd, &work_rel)
                .map_err(|e| fail("opening the overlay work directory", &work_rel, e))?;
            let lower = open_dir(CWD, &target)
                .map_err(|e| fail("opening the image directory", &target, e))?;
            overlay_at(&lower, state, &work, &target)
                .map_err(|e| fail("mounting the state overlay", &target, e))?;
            attached.push(target);
            Ok(())
        }
        (MountMode::Transient, _) => {
            let (upper, work) = scratch
                .upper_work(name)
                .map_err(|e| fail("preparing a transient layer", scratch.describe(), e))?;
            let lower = open_dir(CWD, &target)
                .map_err(|e| fail("opening the image directory", &target, e))?;
            overlay_at(&lower, &upper, &work, &target)
                .map_err(|e| fail("mounting the transient overlay", &target, e))?;
            attached.push(target);
            Ok(())
        }
        (_, None) => unreachable!("state is opened for bind and overlay modes"),
    }
}

fn overlay_at(
    lower: &OwnedFd,
    upper: &OwnedFd,
    work: &OwnedFd,
    target: &Path,
) -> rustix::io::Result<()> {
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        proc_fd(lower),
        proc_fd(upper),
        proc_fd(work)
    );
    let data = std::ffi::CString::new(data).map_err(|_| Errno::INVAL)?;
    mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
}

fn proc_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `rel` as a directory inside `root` with no symlink anywhere on the way,
/// itself included. The error says what was found instead.
fn open_real_dir(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, String> {
    match openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => Ok(fd),
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            match statat(root, rel, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    let target = readlinkat(root, rel, Vec::new())
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| "an unreadable target".into());
                    Err(format!("is a symlink to {target}; it must be a directory"))
                }
                Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                    Err("is not a directory".into())
                }
                _ if e == Errno::LOOP => {
                    Err("a directory on the way is a symlink; none may be".into())
                }
                _ => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

fn open_dir(dirfd: impl AsFd, path: impl AsRef<Path>) -> rustix::io::Result<OwnedFd> {
    openat(
        dirfd,
        path.as_ref(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn attach(mnt: &OwnedFd, target: &Path) -> rustix::io::Result<()> {
    move_mount(
        mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// What to check when mounting an image that passed the superblock check fails. The
/// kernel is blamed only when it really lacks a filesystem.
fn mount_failure_hint(karg: &ComposefsKarg) -> String {
    for fs in ["erofs", "overlay"] {
        if let Err(Errno::NODEV) =
            rustix::mount::fsopen(fs, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
        {
            return format!("this kernel has no {fs} support");
        }
    }
    if karg.insecure {
        "is the image damaged? overlayfs data-only layers need Linux 6.5 or later".into()
    } else {
        "is the image damaged? fs-verity is required: are the objects verity-enabled? \
         (composefs=? boots without)"
            .into()
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Why the image could not be mounted.
enum MountError {
    /// The kernel's EROFS refuses the image itself: it is corrupt.
    Image(std::io::Error),
    /// Anything else (missing kernel support, overlay options, loop devices…).
    Other(std::io::Error),
}

impl From<std::io::Error> for MountError {
    fn from(e: std::io::Error) -> Self {
        MountError::Other(e)
    }
}

impl From<Errno> for MountError {
    fn from(e: Errno) -> Self {
        MountError::Other(e.into())
    }
}

/// Mounts the image, file-backed where the kernel and the filesystem allow it, else on a
/// loop device (tmpfs-backed repositories, kernels before 6.12).
fn mount_image(image: OwnedFd, how: &Compose<'_>) -> Result<OwnedFd, MountError> {
    // `f_type` is i64 here but narrower or unsigned on other architectures.
    #[allow(clippy::unnecessary_cast)]
    let on_ram = fstatfs(&image)
        .map(|s| matches!(s.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC))
        .unwrap_or(false);
    if !on_ram {
        let dup = rustix::io::fcntl_dupfd_cloexec(&image, 0)?;
        match compose(dup, how) {
            Ok(fd) => return Ok(fd),
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw_os_error),
                    Some(Errno::NOTBLK | Errno::OPNOTSUPP | Errno::INVAL)
                ) => {}
            Err(e) => return Err(classify_mount_error(e, &image)),
        }
    }
    let dev = loop_device(&image)?;
    let probe = rustix::io::fcntl_dupfd_cloexec(&dev, 0)?;
    compose(dev, how).map_err(|e| classify_mount_error(e, &probe))
}

/// After a failed composefs mount, mounts the bare EROFS image from the same source: if
/// the kernel has EROFS and still refuses it, the image is to blame, not the kernel.
fn classify_mount_error(e: std::io::Error, source: &OwnedFd) -> MountError {
    let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(source, 0) else {
        return MountError::Other(e);
    };
    match composefs::mount::erofs_mount(dup) {
        Err(probe) if probe.raw_os_error() != Some(Errno::NODEV.raw_os_error()) => {
            MountError::Image(e)
        }
        _ => MountError::Other(e),
    }
}

/// A read-only, auto-clearing loop device over `image`; retries when another process
/// takes the free device first.
fn loop_device(image: &OwnedFd) -> std::io::Result<OwnedFd> {
    let mut last = None;
    for _ in 0..8 {
        match composefs_ioctls::loop_device::loopify(image) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no loop device")))
}

/// Mount points attached so far, detached again (newest first) unless disarmed.
#[derive(Default)]
struct Attached(Vec<PathBuf>);

impl Attached {
    fn push(&mut self, p: PathBuf) {
        self.0.push(p)
    }
    fn disarm(&mut self) {
        self.0.clear()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = unmount(p, UnmountFlags::DETACH);
        }
    }
}

/// A private tmpfs for transient upper layers. It is attached under /run only while
/// the overlays are built, then detached: the overlays keep it alive.
#[derive(Default)]
struct Scratch {
    dir: Option<PathBuf>,
}

impl Scratch {
    fn describe(&self) -> String {
        self.dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/run".into())
    }

    fn ensure(&mut self) -> rustix::io::Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let dir = PathBuf::from(format!("/run/bootc-initramfs-setup.{}", std::process::id()));
        mkdirat(CWD, &dir, Mode::from_raw_mode(0o700))?;
        if let Err(e) = mount(
            "tmpfs",
            &dir,
            "tmpfs",
            MountFlags::empty(),
            Some(c"mode=0755"),
        ) {
            let _ = rustix::fs::rmdir(&dir);
            return Err(e);
        }
        self.dir = Some(dir.clone());
        Ok(dir)
    }

    /// Creates `NAME/upper` and `NAME/work` on the scratch tmpfs.
    fn upper_work(&mut self, name: &str) -> rustix::io::Result<(OwnedFd, OwnedFd)> {
        let dir = self.ensure()?;
        let base = open_dir(CWD, &dir)?;
        mkdirat(&base, name, Mode::from_raw_mode(0o755))?;
        let sub = open_dir(&base, name)?;
        mkdirat(&sub, "upper", Mode::from_raw_mode(0o755))?;
        mkdirat(&sub, "work", Mode::from_raw_mode(0o700))?;
        Ok((open_dir(&sub, "upper")?, open_dir(&sub, "work")?))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = unmount(&dir, UnmountFlags::DETACH);
            let _ = rustix::fs::rmdir(&dir);
        }
    }
}
