//! Deployment state on the physical root (docs/architecture.md, on-disk layout):
//! `state/deploy/<id>/{etc/, var -> ../../os/default/var, <id>.origin}` and the shared
//! `state/os/default/var`.
//!
//! A deployment directory is written under a temporary name, synced, and renamed into
//! place, so it is either complete or absent.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use composefs::fsverity::FsVerityHashValue;
use composefs::generic_tree::{LeafId, Stat};
use composefs::repository::Repository;
use composefs::tree::{Directory, FileSystem, Inode, LeafContent, RegularFile};
use rustix::fs::{
    fchmod, fchown, linkat, mkdirat, mknodat, openat, symlinkat, utimensat, AtFlags, FileType, Gid,
    Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags,
};

use crate::boot::bls::{self, Kernel};
use crate::boot::BootloaderKind;
use crate::imgref::ImageReference;
use crate::sys::durable;

/// The boot type recorded in the origin.
pub(crate) const BOOT_TYPE_BLS: &str = "bls";

/// The origin file's sections and keys.
const ORIGIN: &str = "origin";
const ORIGIN_IMAGE_REFERENCE: &str = "container-image-reference";
const BOOT: &str = "boot";
const BOOT_TYPE: &str = "boot_type";
const BOOT_DIGEST: &str = "digest";
const BOOT_LOADER: &str = "bootloader";
const BOOT_TRIES: &str = "boot_tries";
const BOOT_MISSING_VERITY_ALLOWED: &str = "missing_verity_allowed";
const IMAGE: &str = "image";
const IMAGE_MANIFEST_DIGEST: &str = "manifest_digest";

/// A deployment's `.origin` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `[origin] container-image-reference`, e.g. `ostree-unverified-image:registry:quay.io/x`.
    pub image_reference: String,
    /// `[boot] boot_type`: `bls` or `uki`.
    pub boot_type: String,
    /// `[boot] digest`: sha256 of kernel+initrd (hex).
    pub boot_digest: Option<String>,
    /// `[boot] bootloader`: the loader whose menu boots it (`systemd`, `grub`); absent
    /// in origins written before it was recorded.
    pub bootloader: Option<String>,
    /// `[boot] boot_tries`: the boot tries later updates get (`install --boot-tries`,
    /// `upgrade/switch --boot-tries`), handed on from deployment to deployment.
    pub boot_tries: Option<u32>,
    /// `[boot] missing_verity_allowed=true`: a UKI deployment whose sealed command line
    /// names it with `composefs=?…` (boots without fs-verity). A kernel deployment's
    /// says so in its entry's options instead; written only when true.
    pub missing_verity_allowed: bool,
    /// `[image] manifest_digest`: `sha256:…`.
    pub manifest_digest: Option<String>,
}

/// A malformed origin file.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Not INI.
    #[error("{path}: malformed origin file: {detail}")]
    Malformed {
        /// The file.
        path: String,
        /// What the parser said.
        detail: String,
    },
    /// A required key is missing.
    #[error("{path}: origin file has no [{section}] {key}")]
    Missing {
        /// The file.
        path: String,
        /// Section.
        section: &'static str,
        /// Key.
        key: &'static str,
    },
}

impl Origin {
    /// The origin of a new BLS deployment of `imgref` (what upgrades follow), whose
    /// kernel and initrd have the boot digest `boot_digest`, pulled as `manifest_digest`,
    /// booted by `loader`.
    pub(crate) fn for_image(
        imgref: &ImageReference,
        boot_digest: &str,
        manifest_digest: &str,
        loader: BootloaderKind,
    ) -> Origin {
        Origin {
            image_reference: imgref.to_origin(),
            boot_type: BOOT_TYPE_BLS.to_string(),
            boot_digest: Some(boot_digest.to_string()),
            bootloader: Some(loader.as_str().to_string()),
            boot_tries: None,
            missing_verity_allowed: false,
            manifest_digest: Some(manifest_digest.to_string()),
        }
    }

    /// The INI text.
    #[doc(hidden)]
    pub fn render(&self) -> String {
        let mut s = format!(
            "[{ORIGIN}]\n{ORIGIN_IMAGE_REFERENCE}={}\n\n[{BOOT}]\n{BOOT_TYPE}={}\n",
            self.image_reference, self.boot_type
        );
        if let Some(d) = &self.boot_digest {
            s.push_str(&format!("{BOOT_DIGEST}={d}\n"));
        }
        if let Some(l) = &self.bootloader {
            s.push_str(&format!("{BOOT_LOADER}={l}\n"));
        }
        if let Some(t) = &self.boot_tries {
            s.push_str(&format!("{BOOT_TRIES}={t}\n"));
        }
        if self.missing_verity_allowed {
            s.push_str(&format!("{BOOT_MISSING_VERITY_ALLOWED}=true\n"));
        }
        if let Some(d) = &self.manifest_digest {
            s.push_str(&format!("\n[{IMAGE}]\n{IMAGE_MANIFEST_DIGEST}={d}\n"));
        }
        s
    }

    /// Parses the INI text of the file at `path` (named in errors). Unknown sections
    /// and keys are ignored. The grammar is [`parse_ini`]'s.
    pub fn parse(text: &str, path: &Path) -> Result<Origin, OriginError> {
        let path_s = path.display().to_string();
        let ini = parse_ini(text).map_err(|detail| OriginError::Malformed {
            path: path_s.clone(),
            detail,
        })?;
        let get = |sec: &str, key: &str| {
            ini.get(&(sec.to_string(), key.to_string()))
                .map(|v| v.to_string())
        };
        let image_reference = get(ORIGIN, ORIGIN_IMAGE_REFERENCE)
            .filter(|v| !v.is_empty())
            .ok_or(OriginError::Missing {
                path: path_s.clone(),
                section: ORIGIN,
                key: ORIGIN_IMAGE_REFERENCE,
            })?;
        Ok(Origin {
            image_reference,
            boot_type: get(BOOT, BOOT_TYPE).unwrap_or_else(|| BOOT_TYPE_BLS.to_string()),
            boot_digest: get(BOOT, BOOT_DIGEST),
            bootloader: get(BOOT, BOOT_LOADER).filter(|v| !v.is_empty()),
            // A value that is not a number is ignored (the default applies).
            boot_tries: get(BOOT, BOOT_TRIES).and_then(|v| v.parse().ok()),
            missing_verity_allowed: get(BOOT, BOOT_MISSING_VERITY_ALLOWED).as_deref()
                == Some("true"),
            manifest_digest: get(IMAGE, IMAGE_MANIFEST_DIGEST),
        })
    }

    /// Reads `state/deploy/<id>/<id>.origin` under the physical root.
    pub fn load(sysroot: impl AsFd, id: &DeploymentId) -> Result<Origin> {
        let rel = layout::origin_file(id);
        let fd = openat(
            &sysroot,
            &rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", rel.display()))?;
        let text = std::io::read_to_string(File::from(fd))
            .with_context(|| format!("reading {}", rel.display()))?;
        Ok(Origin::parse(&text, &rel)?)
    }
}

/// The origin file's INI subset, one line at a time (`\n` ends a line, a `\r` before it
/// is dropped): blank lines; comments, whose first non-blank character is `#` or `;`;
/// `[section]`; `key=value`, split at the first `=`, key and value trimmed of spaces
/// and tabs. Any other line, and any other control character, is an error naming the
/// line. Keys before the first section belong to no section and are ignored; a key
/// given twice in a section takes its last value. Returns `(section, key) -> value`.
/// No inline comments, quotes or escapes: what follows `=` is the value, so a value
/// [`Origin::render`] writes reads back unchanged.
fn parse_ini(text: &str) -> Result<HashMap<(String, String), String>, String> {
    let blank: &[char] = &[' ', '\t'];
    let mut out = HashMap::new();
    let mut section: Option<String> = None;
    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let at = |what: &str| format!("line {}: {what}", n + 1);
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(at(&format!("control character in {}", bls::show(line))));
        }
        let l = line.trim_matches(blank);
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(rest) = l.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| at(&format!("unterminated section header {}", bls::show(l))))?;
            section = Some(name.trim_matches(blank).to_string());
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| at(&format!("expected key=value, found {}", bls::show(l))))?;
        if let Some(sec) = &section {
            out.insert(
                (sec.clone(), k.trim_matches(blank).to_string()),
                v.trim_matches(blank).to_string(),
            );
        }
    }
    Ok(out)
}

/// Puts the kernel and initrd of deployment `id` on the boot partition, one copy of
/// each kernel: a boot directory that already holds the same kernel and initrd (boot
/// digest `digest`) is shared whatever its name, found first by the digests the origins
/// record and otherwise by hashing the directories' files; else they are copied to
/// `bootc_composefs-<id>/`. Returns the directory name the entry must use.
pub fn install_kernel<H: FsVerityHashValue>(
    repo: &Repository<H>,
    sysroot: &OwnedFd,
    boot: &OwnedFd,
    id: &DeploymentId,
    kernel: &Kernel<H>,
    digest: &str,
) -> Result<String> {
    let has_kernel = |dir: &str| {
        rustix::fs::statat(
            boot,
            format!("{dir}/{}", bls::VMLINUZ).as_str(),
            AtFlags::empty(),
        )
        .is_ok()
    };
    // Directories whose content is known from their deployment's origin.
    let mut known: HashMap<String, Option<String>> = HashMap::new();
    for other in list_deployments(sysroot)? {
        if &other == id {
            continue;
        }
        let dir = layout::boot_dir_name(&other);
        let recorded = Origin::load(sysroot, &other)
            .ok()
            .and_then(|o| o.boot_digest);
        if recorded.as_deref() == Some(digest) && has_kernel(&dir) {
            tracing::info!("reusing the kernel and initrd in {dir} (same digest)");
            return Ok(dir);
        }
        known.insert(dir, recorded);
    }
    // The others (their deployment collected, or its origin silent): by content.
    let own = layout::boot_dir_name(id);
    for dir in boot_dirs(boot)? {
        if dir == own || known.get(&dir).is_some_and(Option::is_some) {
            continue;
        }
        match dir_boot_digest(boot, &dir) {
            Ok(Some(d)) if d == digest => {
                tracing::info!("reusing the kernel and initrd in {dir} (same content)");
                return Ok(dir);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("reading {dir} on the boot partition: {e:#}"),
        }
    }
    bls::copy_kernel(repo, boot, id, kernel)
}

/// The `bootc_composefs-*` directories on the boot partition (not bootc's temporary
/// names, not UKIs).
fn boot_dirs(boot: &OwnedFd) -> Result<Vec<String>> {
    let mut out = vec![];
    let mut d = rustix::fs::Dir::read_from(boot)
        .with_context(|| format!("reading {}", durable::fd_path(boot)))?;
    while let Some(e) = d.read() {
        let e = e.with_context(|| format!("reading {}", durable::fd_path(boot)))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(layout::BOOT_PREFIX)
            && !name.ends_with(".efi")
            && matches!(e.file_type(), FileType::Directory | FileType::Unknown)
        {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The boot digest of what `dir` holds (sha256 over its kernel then its initrd, as
/// [`bls::boot_digest`]); None when it lacks either.
fn dir_boot_digest(boot: &OwnedFd, dir: &str) -> Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for name in [bls::VMLINUZ, bls::INITRD] {
        let fd = match openat(
            boot,
            format!("{dir}/{name}").as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {dir}/{name}")),
        };
        let mut f = File::from(fd);
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {dir}/{name}"))?;
    }
    Ok(Some(hex::encode(h.finalize())))
}

/// The deployments present under `state/deploy` (hex names that parse as ids).
pub fn list_deployments(sysroot: impl AsFd) -> Result<Vec<DeploymentId>> {
    let dir = match openat(
        &sysroot,
        layout::STATE_DEPLOY,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(rustix::io::Errno::NOENT) => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("opening {}", layout::STATE_DEPLOY)),
    };
    let mut out = vec![];
    let mut d = rustix::fs::Dir::read_from(&dir)?;
    while let Some(e) = d.read() {
        let e = e?;
        if let Ok(id) = DeploymentId::parse(&e.file_name().to_string_lossy()) {
            out.push(id);
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `state/deploy/<id>/` (etc copied from the image, the var symlink and the
/// origin) and, when `seed_var` is set and the shared var does not exist yet, the shared
/// `state/os/default/var` from the image's `/var`.
pub fn write_deployment<H: FsVerityHashValue>(
    sysroot: &OwnedFd,
    repo: &Repository<H>,
    fs: &FileSystem<H>,
    id: &DeploymentId,
    origin: &Origin,
    seed_var: bool,
) -> Result<()> {
    let deploy_root = durable::ensure_dir_all(sysroot, layout::STATE_DEPLOY, 0o755)?;

    if seed_var {
        let var_rel = PathBuf::from(layout::SHARED_VAR);
        let parent_rel = var_rel.parent().context("shared var has no parent")?;
        let parent = durable::ensure_dir_all(sysroot, parent_rel, 0o755)?;
        let name = var_rel
            .file_name()
            .and_then(OsStr::to_str)
            .context("shared var name")?;
        if rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).is_err() {
            let tmp = durable::tmp_name(name);
            durable::remove_all(&parent, &tmp)?;
            copy_image_dir(repo, fs, "var", &parent, &tmp)
                .with_context(|| format!("seeding {} from the image's /var", layout::SHARED_VAR))?;
            durable::syncfs(&parent)?;
            durable::rename_into_place(&parent, &tmp, name)?;
        }
    }

    let hex = id.hex();
    let tmp = durable::tmp_name(hex);
    durable::remove_all(&deploy_root, &tmp)?;
    let staging = durable::ensure_dir(&deploy_root, tmp.as_str(), 0o755)?;
    let written = (|| -> Result<()> {
        copy_image_dir(repo, fs, "etc", &staging, layout::DEPLOY_ETC).with_context(|| {
            format!(
                "copying the image's /etc to {}",
                layout::deploy_etc(id).display()
            )
        })?;
        symlinkat(layout::DEPLOY_VAR_LINK, &staging, layout::DEPLOY_VAR)
            .with_context(|| format!("creating {}", layout::deploy_var(id).display()))?;
        let origin_name = format!("{hex}.origin");
        durable::write_file(&staging, &origin_name, origin.render().as_bytes(), 0o644)
            .with_context(|| format!("writing {}", layout::origin_file(id).display()))?;
        durable::syncfs(&staging)
    })();
    if let Err(e) = written {
        // A half-written copy (a full disk, most likely) would hold on to the space
        // until the next gc; give it back now. gc still removes it if this fails too.
        if let Err(r) = durable::remove_all(&deploy_root, &tmp) {
            tracing::warn!("removing the half-written {tmp}: {r:#}");
        }
        return Err(e);
    }
    // Replacing an existing deployment of the same id (a re-install) is not atomic, but
    // it leaves either the old complete directory or the new one plus a leftover.
    durable::remove_all(&deploy_root, hex)?;
    durable::rename_into_place(&deploy_root, &tmp, hex)
        .with_context(|| format!("moving {} into place", layout::deploy_dir(id).display()))?;
    Ok(())
}

/// Copies the image's top-level directory `name` (e.g. `etc`) to `dest_name` in `dest`,
/// with modes, owners, xattrs, mtimes, symlinks and hard links intact. A missing
/// directory in the image gives an empty 0755 directory; anything else in its place
/// is an error naming it.
pub(crate) fn copy_image_dir<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &FileSystem<H>,
    name: &str,
    dest: impl AsFd,
    dest_name: &str,
) -> Result<()> {
    let empty;
    let dir = match fs.root.get_directory_opt(OsStr::new(name)) {
        Ok(Some(d)) => d,
        Ok(None) => {
            empty = Directory::new(Stat {
                st_mode: 0o755,
                ..Stat::uninitialized()
            });
            &empty
        }
        // composefs' own error says `Directory entry "etc" is not a subdirectory`.
        Err(_) => anyhow::bail!("the image's /{name} is not a directory"),
    };
    let mut w = TreeWriter {
        repo,
        fs,
        links: HashMap::new(),
        top: None,
    };
    w.write_dir(dir, dest.as_fd(), OsStr::new(dest_name), Path::new(""))
}

struct TreeWriter<'a, H: FsVerityHashValue> {
    repo: &'a Repository<H>,
    fs: &'a FileSystem<H>,
    /// Hard links: the first path written for each leaf, relative to the copy's top.
    links: HashMap<LeafId, PathBuf>,
    top: Option<OwnedFd>,
}

fn ts(stat: &Stat) -> Timestamps {
    let t = Timespec {
        tv_sec: stat.st_mtim_sec,
        tv_nsec: stat.st_mtim_nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_xattrs(fd: impl AsFd, stat: &Stat, what: &Path) -> Result<()> {
    for (k, v) in &stat.xattrs {
        rustix::fs::fsetxattr(&fd, k.as_ref(), v, XattrFlags::empty()).with_context(|| {
            format!(
                "setting xattr {} on {}",
                k.to_string_lossy(),
                what.display()
            )
        })?;
    }
    Ok(())
}

fn set_owner_mode(fd: impl AsFd, stat: &Stat, what: &Path) -> Result<()> {
    fchown(
        &fd,
        Some(Uid::from_raw(stat.st_uid)),
        Some(Gid::from_raw(stat.st_gid)),
    )
    .with_context(|| format!("setting the owner of {}", what.display()))?;
    // After chown, which clears setuid/setgid.
    fchmod(&fd, Mode::from_raw_mode(stat.st_mode & 0o7777))
        .with_context(|| format!("setting the mode of {}", what.display()))
}

impl<H: FsVerityHashValue> TreeWriter<'_, H> {
    fn write_dir(
        &mut self,
        dir: &Directory<H>,
        parent: impl AsFd,
        name: &OsStr,
        rel: &Path,
    ) -> Result<()> {
        let what = rel.join(name);
        mkdirat(&parent, name, Mode::from_raw_mode(0o700))
            .with_context(|| format!("creating {}", what.display()))?;
        let fd = openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", what.display()))?;
        let child_rel = if self.top.is_none() {
            self.top = Some(rustix::io::fcntl_dupfd_cloexec(&fd, 0)?);
            PathBuf::new()
        } else {
            what.clone()
        };
        for (n, inode) in dir.sorted_entries() {
            match inode {
                Inode::Directory(d) => self.write_dir(d, &fd, n, &child_rel)?,
                Inode::Leaf(id, _) => self.write_leaf(*id, &fd, n, &child_rel)?,
            }
        }
        set_owner_mode(&fd, &dir.stat, &what)?;
        set_xattrs(&fd, &dir.stat, &what)?;
        rustix::fs::futimens(&fd, &ts(&dir.stat))
            .with_context(|| format!("setting the mtime of {}", what.display()))?;
        Ok(())
    }

    fn write_leaf(&mut self, id: LeafId, dirfd: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
        let what = rel.join(name);
        if let Some(first) = self.links.get(&id) {
            let top = self.top.as_ref().context("no top directory")?;
            return linkat(top, first, dirfd, name, AtFlags::empty())
                .with_context(|| format!("linking {} to {}", what.display(), first.display()));
        }
        let leaf = self.fs.leaf(id);
        let stat = &leaf.stat;
        match &leaf.content {
            LeafContent::Regular(file) => {
                let fd = openat(
                    dirfd,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .with_context(|| format!("creating {}", what.display()))?;
                let mut out = File::from(fd);
                match file {
                    RegularFile::Inline(data) => out.write_all(data)?,
                    RegularFile::External(oid, _) | RegularFile::ExternalNoVerity(oid, _) => {
                        let mut obj =
                            File::from(self.repo.open_object(oid).with_context(|| {
                                format!("opening the object of {}", what.display())
                            })?);
                        std::io::copy(&mut obj, &mut out)
                            .with_context(|| format!("writing {}", what.display()))?;
                    }
                    RegularFile::Sparse(size) => out.set_len(*size)?,
                }
                set_owner_mode(&out, stat, &what)?;
                set_xattrs(&out, stat, &what)?;
                rustix::fs::futimens(&out, &ts(stat))
                    .with_context(|| format!("setting the mtime of {}", what.display()))?;
            }
            LeafContent::Symlink(target) => {
                symlinkat(target.as_ref(), dirfd, name)
                    .with_context(|| format!("creating symlink {}", what.display()))?;
                self.finish_special(dirfd, name, stat, &what, false)?;
            }
            // The copy is a real directory on the disk, bound on /etc: a device node
            // there would be a live one (an image's char 1:1 with mode 0666 would be
            // /dev/mem for everyone). Left out, as the /etc merge leaves them out.
            LeafContent::BlockDevice(_) | LeafContent::CharacterDevice(_) => {
                tracing::warn!("/etc/{}: a device node, not copied", what.display());
                return Ok(());
            }
            LeafContent::Fifo => {
                mknodat(dirfd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?;
                self.finish_special(dirfd, name, stat, &what, true)?;
            }
            LeafContent::Socket => {
                mknodat(dirfd, name, FileType::Socket, Mode::from_raw_mode(0o600), 0)?;
                self.finish_special(dirfd, name, stat, &what, true)?;
            }
        }
        self.links.insert(id, what);
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a node we cannot open for writing.
    fn finish_special(
        &self,
        dirfd: &OwnedFd,
        name: &OsStr,
        stat: &Stat,
        what: &Path,
        chmod: bool,
    ) -> Result<()> {
        rustix::fs::chownat(
            dirfd,
            name,
            Some(Uid::from_raw(stat.st_uid)),
            Some(Gid::from_raw(stat.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("setting the owner of {}", what.display()))?;
        if chmod {
            rustix::fs::chmodat(
                dirfd,
                name,
                Mode::from_raw_mode(stat.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .with_context(|| format!("setting the mode of {}", what.display()))?;
        }
        if !stat.xattrs.is_empty() {
            let p = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(dirfd)
            ))
            .join(name);
            for (k, v) in &stat.xattrs {
                rustix::fs::lsetxattr(&p, k.as_ref(), v, XattrFlags::empty()).with_context(
                    || {
                        format!(
                            "setting xattr {} on {}",
                            k.to_string_lossy(),
                            what.display()
                        )
                    },
                )?;
            }
        }
        utimensat(dirfd, name, &ts(stat), AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("setting the mtime of {}", what.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_round_trip() {
        let o = Origin {
            image_reference: "ostree-unverified-image:registry:quay.io/x/os:latest".into(),
            boot_type: "bls".into(),
            boot_digest: Some("ab".repeat(32)),
            bootloader: Some("grub".into()),
            boot_tries: Some(2),
            missing_verity_allowed: true,
            manifest_digest: Some(format!("sha256:{}", "cd".repeat(32))),
        };
        let text = o.render();
        assert!(text.starts_with("[origin]\ncontainer-image-reference=ostree-unverified-image:registry:quay.io/x/os:latest\n"));
        assert!(text.contains("[boot]\nboot_type=bls\ndigest="));
        assert!(text.contains("\nbootloader=grub\n"));
        assert!(text.contains("\nmissing_verity_allowed=true\n"));
        assert!(text.contains("[image]\nmanifest_digest=sha256:"));
        assert_eq!(Origin::parse(&text, Path::new("x.origin")).unwrap(), o);
    }

    #[test]
    fn origin_tolerates_unknown_keys() {
        let text = "# comment\n[origin]\ncontainer-image-reference=ostree-unverified-registry:q.io/x\nfuture-key=1\n\n[other]\na=b\n[boot]\nboot_type=uki\n";
        let o = Origin::parse(text, Path::new("x.origin")).unwrap();
        assert_eq!(o.image_reference, "ostree-unverified-registry:q.io/x");
        assert_eq!(o.boot_type, "uki");
        assert_eq!(o.boot_digest, None);
        assert_eq!(o.bootloader, None);
        assert!(!o.missing_verity_allowed);
        assert_eq!(o.manifest_digest, None);
    }

    #[test]
    fn origin_values_are_taken_literally() {
        // The origin fuzz target failed in CI on the INI reader used before (inline
        // comments after a blank, Unicode trimming, a lone `\r` as a line end): a value
        // such as `\u{a0};y` could read back differently once rendered.
        let text = "[origin]\r\ncontainer-image-reference= a ;b #c \r\n[boot]\ndigest=\u{a0};y\ndigest=z\n";
        let o = Origin::parse(text, Path::new("x.origin")).unwrap();
        assert_eq!(o.image_reference, "a ;b #c");
        assert_eq!(o.boot_digest.as_deref(), Some("z"), "the last value wins");
        assert_eq!(
            Origin::parse(&o.render(), Path::new("x.origin")).unwrap(),
            o
        );
        let o = Origin::parse(
            "[origin]\ncontainer-image-reference=\u{a0};y\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(o.image_reference, "\u{a0};y");
        assert_eq!(Origin::parse(&o.render(), Path::new("x")).unwrap(), o);
    }

    #[test]
    fn origin_errors_name_the_path() {
        for bad in [
            "[origin\nx=y\n",
            "[origin]\njunk line\n",
            "[origin]\ncontainer-image-reference=a\rb\n",
            "[origin]\ncontainer-image-reference=a\u{0}\n",
            "[boot]\nboot_type=bls\n",
            "",
        ] {
            let e = Origin::parse(bad, Path::new("/s/state/deploy/a/a.origin")).unwrap_err();
            assert!(
                e.to_string().contains("/s/state/deploy/a/a.origin"),
                "{bad:?}: {e}"
            );
        }
    }
}
