//! `bootc container lint`: the checks an OS builder runs on the image's root at the end
//! of a Containerfile (`RUN bootc container lint`), before the image is pushed.
//!
//! Each lint has a name, a severity and a check. A fatal lint names something that stops
//! the image from installing or booting; a warning names something that works but is
//! likely a mistake (it fails the run only with `--fatal-warnings`). Every check reports
//! every problem it finds, each as one line; all lints run, whatever an earlier one
//! found. The rules are the ones install and the initramfs apply, called here on a
//! directory instead of a composefs tree: the kernel ([`bls::select_kernel`]), the
//! `kargs.d` files ([`bls::kargs_file`]) and the directories `setup-root` mounts on
//! ([`bootable::check`]).
//!
//! Paths in the root are resolved inside it (`openat2` with `RESOLVE_IN_ROOT`), so an
//! absolute symlink in the image points into the image, never at the build host.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::bootable::{self, NodeKind};
use rustix::fs::{
    openat2, statat, statx, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Stat,
    StatxAttributes, StatxFlags,
};
use rustix::io::Errno;

use crate::boot::bls::{self, KernelDir};

/// How bad a failed lint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Severity {
    /// The image will not install or boot.
    Fatal,
    /// Probably a mistake; fatal only with `--fatal-warnings`.
    Warning,
}

/// What a check needs: the root, and how to print lists.
pub(crate) struct Root {
    fd: OwnedFd,
    /// `--rootfs`, for messages.
    path: PathBuf,
    /// The root is the running system (`--rootfs /`), e.g. inside `podman build`.
    running: bool,
    no_truncate: bool,
}

/// What a check found: one line per problem.
type Problems = Vec<String>;

/// One lint.
pub(crate) struct Lint {
    /// Its name, for `--skip` and the output.
    pub(crate) name: &'static str,
    pub(crate) severity: Severity,
    /// One sentence for `--list`.
    pub(crate) description: &'static str,
    /// Skipped when linting the running root (`--rootfs /`).
    not_running: bool,
    check: fn(&Root) -> io::Result<Problems>,
}

/// Every lint, in name order (the order they run and print in).
pub(crate) const LINTS: &[Lint] = &[
    Lint {
        name: "api-base-directories",
        severity: Severity::Fatal,
        description: "/dev, /proc, /sys, /run and /tmp exist as directories (systemd mounts the API filesystems there).",
        not_running: false,
        check: check_api_dirs,
    },
    Lint {
        name: "bootable",
        severity: Severity::Fatal,
        description: "/etc, /var and /sysroot are real directories (the initramfs mounts the deployment's /etc, the shared /var and the physical root there).",
        not_running: false,
        check: check_bootable,
    },
    Lint {
        name: "bootc-kargs",
        severity: Severity::Fatal,
        description: "Every /usr/lib/bootc/kargs.d/*.toml parses as install reads it (kargs = [...], optional match-architectures, nothing else), and no argument sets composefs= (bootc writes it).",
        not_running: false,
        check: check_kargs,
    },
    Lint {
        name: "buildah-injected",
        severity: Severity::Warning,
        description: "No empty /etc/hostname or /etc/resolv.conf, as a container build may leave behind.",
        not_running: true,
        check: check_buildah_injected,
    },
    Lint {
        name: "etc-usretc",
        severity: Severity::Fatal,
        description: "No /usr/etc: the image's configuration belongs in /etc, which is what each deployment gets a copy of.",
        not_running: false,
        check: check_usretc,
    },
    Lint {
        name: "kernel",
        severity: Severity::Fatal,
        description: "Exactly one kernel, /usr/lib/modules/<kver>/vmlinuz, with its initramfs.img next to it (what install boots).",
        not_running: false,
        check: check_kernel,
    },
    Lint {
        name: "nonempty-boot",
        severity: Severity::Warning,
        description: "/boot exists and is empty: the boot partition is mounted over it, so anything the image puts there is hidden on the installed system and never installed (the kernel belongs in /usr/lib/modules).",
        not_running: false,
        check: check_boot,
    },
    Lint {
        name: "nonempty-run-tmp",
        severity: Severity::Warning,
        description: "/run and /tmp are empty: they are tmpfs at run time, so their content is a build leftover.",
        not_running: false,
        check: check_run_tmp,
    },
    Lint {
        name: "os-release",
        severity: Severity::Fatal,
        description: "/usr/lib/os-release exists (the boot entry's title and version, and `bootc status`, come from it).",
        not_running: false,
        check: check_os_release,
    },
    Lint {
        name: "var-log",
        severity: Severity::Warning,
        description: "No non-empty files in /var/log: /var is per machine, seeded only at install, and logs from the build do not belong in an image.",
        not_running: false,
        check: check_var_log,
    },
    Lint {
        name: "var-run",
        severity: Severity::Fatal,
        description: "/var/run, if present, is a symlink (to /run), never a directory.",
        not_running: false,
        check: check_var_run,
    },
];

/// The options of one run.
#[derive(Debug, Default)]
pub(crate) struct LintOpts {
    /// Warnings fail the run too.
    pub(crate) fatal_warnings: bool,
    /// Lints not to run, by name.
    pub(crate) skip: Vec<String>,
    /// List every item of a list problem instead of the first [`SHOWN_ITEMS`].
    pub(crate) no_truncate: bool,
}

/// What a run found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) passed: usize,
    pub(crate) skipped: usize,
    pub(crate) warnings: usize,
    pub(crate) fatal: usize,
}

/// Items of one list problem shown without `--no-truncate`.
pub(crate) const SHOWN_ITEMS: usize = 5;

/// Runs every lint not skipped on the tree at `rootfs`, writing one line per problem
/// (`Failed lint: NAME: …` or `Lint warning: NAME: …`) and the counts to `out`. Returns
/// an error naming how many checks failed when any fatal lint (or, with
/// `fatal_warnings`, any lint) failed, or when a check could not run.
pub(crate) fn lint(rootfs: &Path, opts: &LintOpts, mut out: impl Write) -> Result<Summary> {
    for s in &opts.skip {
        if !LINTS.iter().any(|l| l.name == s) {
            bail!("--skip {s}: no such lint (`bootc container lint --list` names them)");
        }
    }
    let fd = rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the root {}", rootfs.display()))?;
    let running = rootfs.canonicalize().ok().as_deref() == Some(Path::new("/"));
    let root = Root {
        fd,
        path: rootfs.to_path_buf(),
        running,
        no_truncate: opts.no_truncate,
    };
    let mut sum = Summary::default();
    for l in LINTS {
        if opts.skip.iter().any(|s| s == l.name) || (l.not_running && root.running) {
            sum.skipped += 1;
            continue;
        }
        let problems = (l.check)(&root)
            .with_context(|| format!("lint {}: reading {}", l.name, root.path.display()))?;
        if problems.is_empty() {
            tracing::debug!("lint {} passed", l.name);
            sum.passed += 1;
            continue;
        }
        let prefix = match l.severity {
            Severity::Fatal => {
                sum.fatal += 1;
                "Failed lint"
            }
            Severity::Warning => {
                sum.warnings += 1;
                "Lint warning"
            }
        };
        for p in problems {
            writeln!(out, "{prefix}: {}: {p}", l.name)?;
        }
    }
    writeln!(out, "Checks passed: {}", sum.passed)?;
    if sum.skipped > 0 {
        writeln!(out, "Checks skipped: {}", sum.skipped)?;
    }
    if sum.warnings > 0 {
        writeln!(out, "Warnings: {}", sum.warnings)?;
    }
    let failed = sum.fatal + if opts.fatal_warnings { sum.warnings } else { 0 };
    if failed > 0 {
        bail!("Checks failed: {failed}");
    }
    Ok(sum)
}

/// `--list`: every lint with its severity and description, as YAML (for people; the
/// format is not a promise).
pub(crate) fn list(mut out: impl Write) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Item {
        name: &'static str,
        #[serde(rename = "type")]
        severity: Severity,
        description: &'static str,
    }
    let items: Vec<_> = LINTS
        .iter()
        .map(|l| Item {
            name: l.name,
            severity: l.severity,
            description: l.description,
        })
        .collect();
    out.write_all(serde_yaml::to_string(&items)?.as_bytes())?;
    Ok(())
}

// --- reading the root ---

/// `rel` (relative, no `..`) opened inside the root, symlinks resolved inside it.
fn open_in(root: &Root, rel: &str, flags: OFlags) -> io::Result<Option<OwnedFd>> {
    match openat2(
        &root.fd,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The entry `rel` itself (a symlink is not followed; its parents are, inside the root).
fn lstat(root: &Root, rel: &str) -> io::Result<Option<Stat>> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => (".", rel),
    };
    let Some(dir) = open_in(root, parent, OFlags::PATH | OFlags::DIRECTORY)? else {
        return Ok(None);
    };
    stat_nofollow(dir.as_fd(), OsStr::new(name))
}

fn stat_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn kind(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The file `rel` (symlinks followed inside the root), or None if absent.
fn read(root: &Root, rel: &str) -> io::Result<Option<Vec<u8>>> {
    let Some(fd) = open_in(root, rel, OFlags::RDONLY)? else {
        return Ok(None);
    };
    let mut buf = vec![];
    io::Read::read_to_end(&mut std::fs::File::from(fd), &mut buf)?;
    Ok(Some(buf))
}

/// The entries of the directory `dir` (without `.` and `..`), sorted, with their types
/// (not following symlinks).
fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Stat)>> {
    let mut out = vec![];
    for e in Dir::read_from(dir)? {
        let e = e?;
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if let Some(st) = stat_nofollow(dir, name)? {
            out.push((name.to_os_string(), st));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The directory `rel` inside the root, if it is one.
fn open_dir(root: &Root, rel: &str) -> io::Result<Option<OwnedFd>> {
    open_in(root, rel, OFlags::RDONLY | OFlags::DIRECTORY)
}

fn open_child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Whether `name` in `dir` is the root of a mount (a bind mount, a tmpfs, a file the
/// container runtime mounted in): such content is not part of the image.
fn is_mount_root(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let st = statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    )?;
    Ok(st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// Every path under `dir` (shown as under `shown`), depth first, skipping and not
/// entering mount roots; `keep` picks which entries are reported.
fn walk(
    dir: BorrowedFd<'_>,
    shown: &str,
    keep: &dyn Fn(&Stat) -> bool,
    out: &mut Vec<String>,
) -> io::Result<()> {
    for (name, st) in entries(dir)? {
        if is_mount_root(dir, &name)? {
            continue;
        }
        let path = format!("{shown}/{}", name.to_string_lossy());
        if keep(&st) {
            out.push(path.clone());
        }
        if kind(&st) == FileType::Directory {
            let child = open_child(dir, &name)?;
            walk(child.as_fd(), &path, keep, out)?;
        }
    }
    Ok(())
}

/// One line for a list problem: `what: a, b, c` (the first [`SHOWN_ITEMS`] and a count of
/// the rest, unless `--no-truncate`).
fn listed(root: &Root, what: &str, items: &[String]) -> String {
    let n = if root.no_truncate {
        items.len()
    } else {
        items.len().min(SHOWN_ITEMS)
    };
    let mut s = format!("{what}: {}", items[..n].join(", "));
    if n < items.len() {
        s.push_str(&format!(
            ", and {} more (--no-truncate lists them)",
            items.len() - n
        ));
    }
    s
}

// --- the checks ---

/// The directories systemd mounts the API filesystems on.
const API_DIRS: [&str; 5] = ["dev", "proc", "sys", "run", "tmp"];

fn check_api_dirs(root: &Root) -> io::Result<Problems> {
    let mut out = vec![];
    for d in API_DIRS {
        match lstat(root, d)? {
            None => out.push(format!(
                "missing /{d} (systemd mounts an API filesystem there)"
            )),
            Some(st) if kind(&st) != FileType::Directory => out.push(format!(
                "/{d} is not a directory (systemd mounts an API filesystem there)"
            )),
            Some(_) => {}
        }
    }
    Ok(out)
}

fn check_bootable(root: &Root) -> io::Result<Problems> {
    let kind_of = |name: &str| match lstat(root, name) {
        Ok(None) => NodeKind::Missing,
        Ok(Some(st)) => NodeKind::from_file_type(kind(&st)),
        Err(e) => NodeKind::Unreadable(e.to_string()),
    };
    // `check` stops at the first failing mount point: ask again with those already
    // reported answered as directories, so every one is listed.
    let mut reported: Vec<&str> = vec![];
    let mut out = vec![];
    while let Err(e) = bootable::check(|n| {
        if reported.contains(&n) {
            NodeKind::Directory
        } else {
            kind_of(n)
        }
    }) {
        reported.push(e.name());
        out.push(e.to_string());
    }
    Ok(out)
}

fn check_kargs(root: &Root) -> io::Result<Problems> {
    let rel = bls::KARGS_D.trim_start_matches('/');
    let Some(dir) = open_dir(root, rel)? else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    // As install reads them: regular files named *.toml, in name order.
    for (name, st) in entries(dir.as_fd())? {
        let name = name.to_string_lossy();
        if !name.ends_with(".toml") || kind(&st) != FileType::RegularFile {
            continue;
        }
        let path = format!("{}/{name}", bls::KARGS_D);
        let bytes = read(root, &format!("{rel}/{name}"))?.unwrap_or_default();
        if let Err(e) = bls::kargs_file(&path, &bytes) {
            out.push(format!("{e:#}"));
        }
    }
    Ok(out)
}

fn check_kernel(root: &Root) -> io::Result<Problems> {
    let mut found = vec![];
    if let Some(modules) = open_dir(root, "usr/lib/modules")? {
        for (kver, st) in entries(modules.as_fd())? {
            if kind(&st) != FileType::Directory {
                continue;
            }
            let dir = open_child(modules.as_fd(), &kver)?;
            let regular = |name: &str| -> io::Result<bool> {
                Ok(stat_nofollow(dir.as_fd(), OsStr::new(name))?
                    .is_some_and(|st| kind(&st) == FileType::RegularFile))
            };
            if regular(bls::VMLINUZ)? {
                found.push(KernelDir {
                    kver: kver.to_string_lossy().into_owned(),
                    vmlinuz: (),
                    initrd: regular(bls::INITRD)?.then_some(()),
                });
            }
        }
    }
    let uki = match open_dir(root, "boot/EFI/Linux")? {
        Some(d) => entries(d.as_fd())?
            .iter()
            .any(|(n, _)| n.to_string_lossy().ends_with(".efi")),
        None => false,
    };
    Ok(match bls::select_kernel(found, uki) {
        Ok(_) => vec![],
        Err(e) => vec![format!("{e:#}")],
    })
}

fn check_os_release(root: &Root) -> io::Result<Problems> {
    Ok(match open_in(root, "usr/lib/os-release", OFlags::RDONLY)? {
        Some(_) => vec![],
        None => vec![
            "missing /usr/lib/os-release (the boot entry's title and version come from it)".into(),
        ],
    })
}

fn check_usretc(root: &Root) -> io::Result<Problems> {
    Ok(match lstat(root, "usr/etc")? {
        Some(_) => vec![
            "found /usr/etc: configuration belongs in /etc (each deployment gets a copy of the image's /etc; /usr/etc is never read)"
                .into(),
        ],
        None => vec![],
    })
}

fn check_var_run(root: &Root) -> io::Result<Problems> {
    Ok(match lstat(root, "var/run")? {
        Some(st) if kind(&st) != FileType::Symlink => {
            vec!["/var/run is not a symlink (it must point to /run)".into()]
        }
        _ => vec![],
    })
}

fn check_buildah_injected(root: &Root) -> io::Result<Problems> {
    let mut out = vec![];
    for f in ["etc/hostname", "etc/resolv.conf"] {
        if let Some(st) = lstat(root, f)? {
            if kind(&st) == FileType::RegularFile && st.st_size == 0 {
                out.push(format!(
                    "/{f} is an empty file; the container build may have left it there"
                ));
            }
        }
    }
    Ok(out)
}

fn check_boot(root: &Root) -> io::Result<Problems> {
    let Some(st) = lstat(root, "boot")? else {
        return Ok(vec![
            "missing /boot (the boot partition is mounted there)".into()
        ]);
    };
    if kind(&st) != FileType::Directory {
        return Ok(vec![
            "/boot is not a directory (the boot partition is mounted there)".into(),
        ]);
    }
    let dir = open_dir(root, "boot")?.expect("a directory");
    // /boot/EFI is where composefs tooling puts a UKI; the kernel lint judges it.
    let items: Vec<String> = entries(dir.as_fd())?
        .into_iter()
        .filter(|(n, _)| n != "EFI")
        .map(|(n, _)| format!("/boot/{}", n.to_string_lossy()))
        .collect();
    if items.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![listed(
        root,
        "found content in /boot, which the boot partition hides and install does not copy",
        &items,
    )])
}

fn check_run_tmp(root: &Root) -> io::Result<Problems> {
    let mut items = vec![];
    for d in ["run", "tmp"] {
        // A tmpfs (or anything else) mounted there is not part of the image.
        if lstat(root, d)?.is_none_or(|st| kind(&st) != FileType::Directory)
            || is_mount_root(root.fd.as_fd(), OsStr::new(d))?
        {
            continue;
        }
        let dir = open_child(root.fd.as_fd(), OsStr::new(d))?;
        walk(dir.as_fd(), &format!("/{d}"), &|_| true, &mut items)?;
    }
    if items.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![listed(
        root,
        "found content in /run or /tmp (tmpfs at run time)",
        &items,
    )])
}

fn check_var_log(root: &Root) -> io::Result<Problems> {
    let Some(dir) = open_dir(root, "var/log")? else {
        return Ok(vec![]);
    };
    let mut items = vec![];
    walk(
        dir.as_fd(),
        "/var/log",
        &|st| kind(st) == FileType::RegularFile && st.st_size > 0,
        &mut items,
    )?;
    if items.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![listed(root, "found non-empty log files", &items)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lints_are_sorted_and_unique() {
        let names: Vec<_> = LINTS.iter().map(|l| l.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn unknown_skip_is_refused() {
        let opts = LintOpts {
            skip: vec!["no-such".into()],
            ..Default::default()
        };
        let e = lint(Path::new("/nonexistent"), &opts, io::sink()).unwrap_err();
        assert!(
            e.to_string().contains("--skip no-such: no such lint"),
            "{e}"
        );
    }
}
