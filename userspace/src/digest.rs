//! Sealed images, build side: the deployment id an image will have once installed,
//! computed from its root filesystem as a directory (inside a container build, or an
//! unpacked rootfs), and what else a sealed UKI is built from (the kernel, the
//! `kargs.d` arguments).
//!
//! The id is computed by the same steps `install` runs on the pulled image
//! (composefs-oci's boot image): composefs' OCI transform (root metadata from `/usr`,
//! `/run` emptied, the xattr allowlist), composefs-boot's boot transform (`/boot` and
//! `/sysroot` emptied, SELinux labels) and the EROFS image in the format a new
//! repository is created with ([`crate::repo::repo_config`]). The host tests prove it
//! equal to the id `install` gives the same image.
//!
//! Mounts are not part of the image: the tree is read through a non-recursive clone of
//! the mount at PATH (`open_tree(OPEN_TREE_CLONE)`), so `/proc`, `/sys`, `/dev`, a
//! tmpfs on `/tmp` and the files a container engine bind-mounts over `/etc/hosts` or
//! `/etc/resolv.conf` read as what lies under them: the image's own content.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{Algorithm, DeploymentId};
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, Sha512HashValue};
use composefs::generic_tree::OciTransformOptions;
use composefs::tree::FileSystem;
use composefs_boot::BootOps;
use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{open_tree, OpenTreeFlags};

use crate::boot::bls::{check_kver, kargs_file, KARGS_D};

/// A root filesystem directory, opened for reading without the mounts below it.
pub struct Rootfs {
    /// PATH as given (for messages).
    pub path: PathBuf,
    fd: OwnedFd,
}

impl Rootfs {
    /// Opens `path`. As root, a detached non-recursive clone of it (mounts below PATH
    /// are left out); without the privilege for that, PATH itself, which is refused
    /// for `/` (its `/proc` and `/sys` would be read).
    pub fn open(path: &Path) -> Result<Rootfs> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        let fd = match open_tree(CWD, path, flags) {
            Ok(fd) => fd,
            Err(e @ (Errno::PERM | Errno::NOSYS | Errno::ACCESS)) => {
                if path == Path::new("/") {
                    bail!(
                        "reading / without the mounts on it (/proc, /sys, …) needs CAP_SYS_ADMIN \
                         (open_tree: {e}); run as root or pass the rootfs as PATH"
                    );
                }
                tracing::debug!(
                    "open_tree({}) failed ({e}); reading it with any mounts below it",
                    path.display()
                );
                crate::sys::durable::open_dir(CWD, path)?
            }
            Err(e) => {
                return Err(e).with_context(|| format!("opening the rootfs {}", path.display()))
            }
        };
        let st = rustix::fs::fstat(&fd).with_context(|| format!("reading {}", path.display()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            bail!("the rootfs {} is not a directory", path.display());
        }
        Ok(Rootfs {
            path: path.to_path_buf(),
            fd,
        })
    }

    fn show(&self, rel: &str) -> String {
        self.path.join(rel).display().to_string()
    }

    /// The deployment id of this tree with `algorithm`, and the boot-transformed tree
    /// as a composefs dumpfile when `dumpfile` is given.
    pub fn deployment_id(
        &self,
        algorithm: Algorithm,
        dumpfile: Option<&Path>,
    ) -> Result<DeploymentId> {
        match algorithm {
            Algorithm::Sha256 => self.id_with::<Sha256HashValue>(dumpfile),
            Algorithm::Sha512 => self.id_with::<Sha512HashValue>(dumpfile),
        }
    }

    fn id_with<H: FsVerityHashValue>(&self, dumpfile: Option<&Path>) -> Result<DeploymentId> {
        let fs = self.boot_tree::<H>()?;
        let version = crate::repo::repo_config::<H>(true).erofs_formats.default;
        let id = fs.compute_image_id(version);
        if let Some(out) = dumpfile {
            write_dumpfile(&fs, out)?;
        }
        DeploymentId::new(crate::repo::algorithm_of::<H>(), &id.to_hex())
            .context("the computed digest is not a valid deployment id")
    }

    /// The tree as the deployment's EROFS image holds it.
    fn boot_tree<H: FsVerityHashValue>(&self) -> Result<FileSystem<H>> {
        let fd = self
            .fd
            .try_clone()
            .context("duplicating the rootfs descriptor")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let what = self.path.display().to_string();
        let mut fs = rt
            .block_on(composefs::fs::read_container_root::<H>(
                fd,
                PathBuf::from("."),
                None,
                &OciTransformOptions::default(),
            ))
            .with_context(|| format!("reading {what} (an image has /usr, /boot and /sysroot)"))?;
        fs.transform_for_boot_from_dir(&self.fd).with_context(|| {
            format!("applying the boot transform to {what} (an image has /usr, /boot and /sysroot)")
        })?;
        if let Err(e) = crate::repo::check_bootable(&fs) {
            tracing::warn!("{what} cannot boot with composefs: {e}");
        }
        Ok(fs)
    }

    /// The kernel arguments of the image's `kargs.d`, exactly as install and upgrade
    /// read them ([`crate::boot::bls::kargs_file`], the regular `*.toml` files in name
    /// order).
    pub fn kargs(&self) -> Result<Vec<String>> {
        let rel = KARGS_D.trim_start_matches('/');
        let dir = match openat(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.show(rel))),
        };
        let mut names = vec![];
        for e in rustix::fs::Dir::read_from(&dir).with_context(|| self.show(rel))? {
            let e = e.with_context(|| self.show(rel))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".toml") {
                continue;
            }
            let st = statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| self.show(&format!("{rel}/{name}")))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                names.push(name);
            }
        }
        names.sort();
        let mut out = vec![];
        for name in names {
            let path = format!("{KARGS_D}/{name}");
            let bytes =
                crate::sys::read_file_at(&dir, name.as_str()).with_context(|| self.show(&path))?;
            out.extend(kargs_file(&path, &bytes)?);
        }
        Ok(out)
    }

    /// The image's kernel: `usr/lib/modules/<kver>/vmlinuz` and `initramfs.img`, the
    /// one there is (or `kver`). Returns the version and both paths.
    pub fn kernel(&self, kver: Option<&str>) -> Result<(String, PathBuf, PathBuf)> {
        const MODULES: &str = "usr/lib/modules";
        let kver = match kver {
            Some(k) => k.to_string(),
            None => {
                let dir = crate::sys::durable::open_dir(&self.fd, MODULES)
                    .with_context(|| format!("the rootfs {} has no kernel", self.path.display()))?;
                let mut found = vec![];
                for e in rustix::fs::Dir::read_from(&dir).with_context(|| self.show(MODULES))? {
                    let e = e.with_context(|| self.show(MODULES))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name == "." || name == ".." {
                        continue;
                    }
                    if is_file(&dir, &format!("{name}/vmlinuz")) {
                        found.push(name);
                    }
                }
                found.sort();
                match found.len() {
                    1 => found.remove(0),
                    0 => bail!(
                        "the rootfs {} has no kernel: expected /{MODULES}/<kver>/vmlinuz",
                        self.path.display()
                    ),
                    _ => bail!(
                        "the rootfs {} has more than one kernel ({}): choose one with --kver",
                        self.path.display(),
                        crate::sys::cmd::cap(&found.join(", "), 200)
                    ),
                }
            }
        };
        check_kver(&kver)?;
        let vmlinuz = format!("{MODULES}/{kver}/vmlinuz");
        let initrd = format!("{MODULES}/{kver}/initramfs.img");
        for f in [&vmlinuz, &initrd] {
            if !is_file(&self.fd, f) {
                bail!("{} is missing (or not a regular file)", self.show(f));
            }
        }
        Ok((kver, self.path.join(vmlinuz), self.path.join(initrd)))
    }
}

fn is_file(dir: impl AsFd, rel: &str) -> bool {
    statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// Writes `fs` as a composefs dumpfile to `out`, durably (a temporary file renamed
/// into place).
fn write_dumpfile<H: FsVerityHashValue>(fs: &FileSystem<H>, out: &Path) -> Result<()> {
    let name = out
        .file_name()
        .with_context(|| format!("{} is not a file name", out.display()))?
        .to_str()
        .with_context(|| format!("{} is not UTF-8", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = crate::sys::durable::open_dir(CWD, parent)?;
    crate::sys::durable::write_file_with(&dir, name, 0o644, |f| {
        let mut w = std::io::BufWriter::new(f);
        composefs::dumpfile::write_dumpfile(&mut w, fs)?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    })
    .with_context(|| format!("writing the dumpfile {}", out.display()))
}
