//! Boot Loader Specification Type #1 entries (UAPI.1): the entry text, the kernel and
//! initrd copied from the image, the kernel arguments.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs::tree::{FileSystem, Inode, LeafContent, RegularFile};
use composefs_boot::bootloader::BootEntry;
use composefs_boot::os_release::OsReleaseInfo;
use sha2::{Digest, Sha256};

use crate::sys::durable;

/// Where images declare their kernel arguments.
pub(crate) const KARGS_D: &str = "/usr/lib/bootc/kargs.d";
/// File names of the kernel and initrd in the per-deployment boot directory.
pub(crate) const VMLINUZ: &str = "vmlinuz";
/// See [`VMLINUZ`].
pub(crate) const INITRD: &str = "initramfs.img";

/// One Type #1 entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlsEntry {
    /// File stem: the entry is `loader/entries/<file_stem>.conf`.
    pub(crate) file_stem: String,
    /// `title`.
    pub(crate) title: String,
    /// `version`.
    pub(crate) version: String,
    /// `sort-key`.
    pub(crate) sort_key: Option<String>,
    /// `linux`, relative to the boot partition root.
    pub(crate) linux: String,
    /// `initrd` lines.
    pub(crate) initrd: Vec<String>,
    /// `options`: the kernel command line.
    pub(crate) options: String,
}

impl BlsEntry {
    /// The entry's file name.
    pub(crate) fn file_name(&self) -> String {
        format!("{}.conf", self.file_stem)
    }

    /// The entry text.
    pub(crate) fn render(&self) -> String {
        let mut s = format!("title {}\nversion {}\n", self.title, self.version);
        if let Some(k) = &self.sort_key {
            s.push_str(&format!("sort-key {k}\n"));
        }
        s.push_str(&format!("linux {}\n", self.linux));
        for i in &self.initrd {
            s.push_str(&format!("initrd {i}\n"));
        }
        s.push_str(&format!("options {}\n", self.options));
        s
    }

    /// Parses entry text (unknown keys are ignored; `linux` is required).
    pub(crate) fn parse(file_stem: &str, text: &str) -> Result<BlsEntry> {
        let mut e = BlsEntry {
            file_stem: file_stem.to_string(),
            title: String::new(),
            version: String::new(),
            sort_key: None,
            linux: String::new(),
            initrd: vec![],
            options: String::new(),
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let v = v.trim().to_string();
            match k {
                "title" => e.title = v,
                "version" => e.version = v,
                "sort-key" => e.sort_key = Some(v),
                "linux" => e.linux = v,
                "initrd" => e.initrd.push(v),
                "options" => {
                    if !e.options.is_empty() {
                        e.options.push(' ');
                    }
                    e.options.push_str(&v)
                }
                _ => {}
            }
        }
        if e.linux.is_empty() {
            bail!("{file_stem}.conf: BLS entry has no linux line");
        }
        Ok(e)
    }
}

/// The kernel and initrd an image boots.
pub struct Kernel<H: FsVerityHashValue> {
    /// Kernel version (directory under /usr/lib/modules).
    pub kver: String,
    /// The kernel image.
    pub vmlinuz: RegularFile<H>,
    /// The initramfs.
    pub initrd: RegularFile<H>,
}

/// Picks the image's kernel from its boot resources.
pub fn find_kernel<H: FsVerityHashValue>(entries: Vec<BootEntry<H>>) -> Result<Kernel<H>> {
    let mut found = vec![];
    let mut uki = false;
    for e in entries {
        match e {
            BootEntry::UsrLibModulesVmLinuz(k) => {
                let kver = k.kver.to_string();
                let initrd = k.initramfs.with_context(|| {
                    format!("the image's kernel {kver} has no initramfs: expected /usr/lib/modules/{kver}/initramfs.img")
                })?;
                found.push(Kernel {
                    kver,
                    vmlinuz: k.vmlinuz,
                    initrd,
                });
            }
            BootEntry::Type2(_) => uki = true,
            _ => {}
        }
    }
    if found.len() > 1 {
        let kvers: Vec<_> = found.iter().map(|k| k.kver.as_str()).collect();
        bail!(
            "the image has more than one kernel ({}); expected exactly one under /usr/lib/modules",
            kvers.join(", ")
        );
    }
    match found.pop() {
        Some(k) => Ok(k),
        None if uki => {
            bail!("the image only has a UKI; UKI (Type #2) installs are not supported yet")
        }
        None => bail!(
            "the image has no kernel: expected /usr/lib/modules/<kver>/vmlinuz and initramfs.img"
        ),
    }
}

fn read<H: FsVerityHashValue>(repo: &Repository<H>, f: &RegularFile<H>) -> Result<Box<[u8]>> {
    composefs::fs::read_file(f, repo)
}

/// sha256 over the kernel then the initrd (hex): deduplicates boot directories.
pub fn boot_digest<H: FsVerityHashValue>(repo: &Repository<H>, k: &Kernel<H>) -> Result<String> {
    let mut h = Sha256::new();
    h.update(read(repo, &k.vmlinuz).context("reading the kernel")?);
    h.update(read(repo, &k.initrd).context("reading the initrd")?);
    Ok(hex::encode(h.finalize()))
}

/// A regular file of the image tree by absolute path, if present.
pub fn image_file<'a, H: FsVerityHashValue>(
    fs: &'a FileSystem<H>,
    path: &str,
) -> Option<&'a RegularFile<H>> {
    let (dir, name) = fs.as_dir().split_ref(OsStr::new(path)).ok()?;
    dir.get_file_opt(name).ok().flatten()
}

/// What os-release says, for the entry's title and version.
pub(crate) struct OsInfo {
    /// PRETTY_NAME (or NAME, ID).
    pub(crate) title: String,
    /// VERSION_ID (or VERSION).
    pub(crate) version: Option<String>,
}

/// Reads `/usr/lib/os-release` (or `/etc/os-release`) from the image.
pub(crate) fn os_info<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &FileSystem<H>,
) -> Result<OsInfo> {
    let file = image_file(fs, "/usr/lib/os-release").or_else(|| image_file(fs, "/etc/os-release"));
    let text = match file {
        Some(f) => {
            String::from_utf8_lossy(&read(repo, f).context("reading os-release")?).into_owned()
        }
        None => String::new(),
    };
    let info = OsReleaseInfo::parse(&text);
    Ok(OsInfo {
        title: info.get_pretty_name().unwrap_or_else(|| "Linux".into()),
        version: info.get_version(),
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KargsFile {
    kargs: Vec<String>,
    #[serde(default)]
    match_architectures: Option<Vec<String>>,
}

/// The kernel arguments from the image's `/usr/lib/bootc/kargs.d/*.toml`, in file name order,
/// validated: a file that is not `kargs = [...]` TOML or an argument [`check_karg`] refuses
/// is an error naming the file. Install and staging (upgrade, switch) both call this.
pub(crate) fn image_kargs<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &FileSystem<H>,
) -> Result<Vec<String>> {
    let Ok(Some(dir)) = fs.as_dir().get_directory_ref_opt(OsStr::new(KARGS_D)) else {
        return Ok(vec![]);
    };
    let mut files = BTreeMap::new();
    for (name, inode) in dir.entries() {
        let name = name.to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        if let Inode::Leaf(id, _) = inode {
            if let LeafContent::Regular(f) = &dir.leaf(*id).content {
                files.insert(name, f);
            }
        }
    }
    let mut out = vec![];
    for (name, f) in files {
        let path = format!("{KARGS_D}/{name}");
        let text = String::from_utf8(read(repo, f)?.into_vec())
            .with_context(|| format!("{path}: not UTF-8"))?;
        let parsed: KargsFile = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{path}: expected kargs = [\"…\"]: {}",
                bootc_initramfs_setup::one_line(&e.to_string())
            )
        })?;
        // Checked whatever the architecture: the image is wrong either way.
        for k in &parsed.kargs {
            check_karg(k, &path)?;
        }
        if let Some(archs) = &parsed.match_architectures {
            if !archs.iter().any(|a| a == std::env::consts::ARCH) {
                continue;
            }
        }
        out.extend(parsed.kargs);
    }
    Ok(out)
}

/// One kernel argument from `from` (`--karg` or a `kargs.d` file): refused when it sets
/// the composefs argument (bootc writes that itself; the booter refuses two that
/// disagree) or is empty.
pub(crate) fn check_karg(k: &str, from: &str) -> Result<()> {
    use bootc_initramfs_setup::cmdline::{KARG, KARG_DIGEST};
    let name = k.split('=').next().unwrap_or_default();
    if name == KARG || name == KARG_DIGEST {
        bail!("kernel argument {k:?} from {from}: bootc sets {KARG}= itself");
    }
    if k.trim().is_empty() {
        bail!("empty kernel argument from {from}");
    }
    Ok(())
}

/// The `options` line: `root=SPEC rw`, the user's `--karg`s, the image's kargs.d, then
/// the composefs argument. Neither the user nor the image may set the composefs
/// argument themselves: the booter refuses two that disagree.
pub(crate) fn options(
    root_spec: &str,
    user: &[String],
    image: &[String],
    composefs: &bootc_initramfs_setup::cmdline::ComposefsKarg,
) -> Result<String> {
    let mut out = vec![format!("root={root_spec}"), "rw".to_string()];
    for (from, kargs) in [("--karg", user), (KARGS_D, image)] {
        for k in kargs {
            check_karg(k, from)?;
            out.push(k.clone());
        }
    }
    out.push(composefs.to_string());
    Ok(out.join(" "))
}

/// Copies the kernel and initrd to `bootc_composefs-<id>/` on the boot partition
/// (written under a temporary name, synced, renamed); returns the directory name.
pub(crate) fn copy_kernel<H: FsVerityHashValue>(
    repo: &Repository<H>,
    boot: &OwnedFd,
    id: &DeploymentId,
    kernel: &Kernel<H>,
) -> Result<String> {
    let dir = layout::boot_dir_name(id);
    let tmp = durable::tmp_name(&dir);
    durable::remove_all(boot, &tmp)?;
    let staging = durable::ensure_dir(boot, tmp.as_str(), 0o755)?;
    for (name, f, what) in [
        (VMLINUZ, &kernel.vmlinuz, "kernel"),
        (INITRD, &kernel.initrd, "initrd"),
    ] {
        let data = read(repo, f).with_context(|| format!("reading the {what} from the image"))?;
        durable::write_file_with(&staging, name, 0o644, |out| {
            out.write_all(&data).map_err(Into::into)
        })
        .with_context(|| format!("writing {tmp}/{name}"))?;
    }
    durable::fsync_dir(&staging)?;
    durable::remove_all(boot, &dir)?;
    durable::rename_into_place(boot, &tmp, &dir)
        .with_context(|| format!("moving {dir} into place"))?;
    Ok(dir)
}

/// The entry that boots deployment `id` with the kernel and initrd in the boot
/// directory `dir` and the kernel command line `options`; titled from the image's
/// os-release (its version, or else the kernel version `kver`).
pub(crate) fn deployment_entry(
    id: &DeploymentId,
    dir: &str,
    os: OsInfo,
    kver: &str,
    options: String,
) -> BlsEntry {
    BlsEntry {
        file_stem: layout::boot_dir_name(id),
        title: os.title,
        version: os.version.unwrap_or_else(|| kver.to_string()),
        sort_key: None,
        linux: format!("/{dir}/{VMLINUZ}"),
        initrd: vec![format!("/{dir}/{INITRD}")],
        options,
    }
}

/// Writes `entries` into `loader/entries/` of the boot partition, each atomically.
pub(crate) fn write_entries(boot: impl AsFd, entries: &[BlsEntry]) -> Result<()> {
    let dir = durable::ensure_dir_all(&boot, layout::LOADER_ENTRIES, 0o755)?;
    for e in entries {
        durable::write_file(&dir, &e.file_name(), e.render().as_bytes(), 0o644)
            .with_context(|| format!("writing {}/{}", layout::LOADER_ENTRIES, e.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse() {
        let e = BlsEntry {
            file_stem: "bootc_composefs-ab".into(),
            title: "Bootc Test OS v1".into(),
            version: "1".into(),
            sort_key: Some("bootc-test".into()),
            linux: "/bootc_composefs-ab/vmlinuz".into(),
            initrd: vec!["/bootc_composefs-ab/initramfs.img".into()],
            options: "root=UUID=x rw composefs=?sha256:ab".into(),
        };
        let text = e.render();
        assert_eq!(
            text,
            "title Bootc Test OS v1\nversion 1\nsort-key bootc-test\nlinux /bootc_composefs-ab/vmlinuz\ninitrd /bootc_composefs-ab/initramfs.img\noptions root=UUID=x rw composefs=?sha256:ab\n"
        );
        assert_eq!(BlsEntry::parse("bootc_composefs-ab", &text).unwrap(), e);
        assert!(BlsEntry::parse("x", "title t\n").is_err());
    }

    #[test]
    fn options_order_and_conflicts() {
        use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
        let id = DeploymentId::parse(&"ab".repeat(32)).unwrap();
        let k = ComposefsKarg::new(id, true);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            options("UUID=u", &s(&["quiet"]), &s(&["console=ttyS0"]), &k).unwrap(),
            format!(
                "root=UUID=u rw quiet console=ttyS0 composefs=?sha256:{}",
                "ab".repeat(32)
            )
        );
        let e = options("UUID=u", &s(&["composefs=?abc"]), &[], &k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--karg") && e.contains("sets composefs="), "{e}");
        assert!(options("UUID=u", &[], &s(&["composefs.digest=x"]), &k).is_err());
        assert!(options("UUID=u", &s(&[" "]), &[], &k).is_err());
    }
}
