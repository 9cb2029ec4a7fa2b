//! UKI deployments (boot type `uki`): an image holding a Unified Kernel Image
//! (`/boot/EFI/Linux/*.efi` or `/usr/lib/modules/<kver>/*.efi`) boots it instead of a
//! kernel and initrd. The UKI is sealed: its `.cmdline` names the deployment
//! (`composefs=sha256:<id>`), which is checked against the id computed for the image
//! before anything is written.
//!
//! On the ESP the UKI is `EFI/Linux/bootc/bootc_composefs-<id>.efi`
//! ([`layout::EFI_LINUX_BOOTC`]), its addons in `….efi.extra.d/` beside it (where
//! systemd-stub loads them from), and a Type #1 entry `bootc_composefs-<id>.conf` with
//! an `efi` line boots it, so the order, staging, finalize and rollback of entries work
//! unchanged (docs/architecture.md).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{tokenize, DeploymentId, KARG, KARG_DIGEST};
use bootc_initramfs_setup::layout;
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs_boot::bootloader::{BootEntry, PEType};
use sha2::{Digest, Sha256};

use super::bls::{self, BlsEntry};
use super::uki;
use crate::sys::durable;

/// `[boot] boot_type` of a UKI deployment (and `bootType: uki` in status).
pub(crate) const BOOT_TYPE_UKI: &str = "uki";

/// Where systemd-stub looks for a UKI's addons: `<uki>.efi` + this.
const EXTRA_D: &str = ".extra.d";

/// The UKI of an image, read and checked.
pub(crate) struct ImageUki {
    /// Where it is in the image, for messages.
    pub(crate) path: String,
    /// Its bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its addons (`<uki>.efi.extra.d/*.addon.efi`): file name and bytes, by name.
    pub(crate) addons: Vec<(String, Vec<u8>)>,
    /// `.uname`, if present (the entry's version when os-release has none).
    pub(crate) uname: Option<String>,
    /// Its sealed `composefs=` allows booting without fs-verity (`composefs=?…`).
    pub(crate) insecure: bool,
}

impl ImageUki {
    /// The boot digest recorded in the origin: sha256 over the UKI, then each addon's
    /// name and bytes.
    pub(crate) fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.bytes);
        for (name, data) in &self.addons {
            h.update(name.as_bytes());
            h.update([0u8]);
            h.update(data);
        }
        hex::encode(h.finalize())
    }
}

/// The image's one UKI, parsed and checked for deployment `id`: `None` when the image
/// has none. Refused (nothing is written by the caller yet): more than one UKI; a UKI
/// that does not parse; one whose `composefs=` names another digest than `id` (the
/// message gives both and the command that rebuilds it); an addon that does not parse
/// or whose `.cmdline` sets `composefs=`.
pub(crate) fn find<H: FsVerityHashValue>(
    repo: &Repository<H>,
    entries: &[BootEntry<H>],
    id: &DeploymentId,
) -> Result<Option<ImageUki>> {
    let where_ = |kver: &Option<Box<std::ffi::OsStr>>, p: &Path| match kver {
        Some(k) => format!("/usr/lib/modules/{}/{}", k.to_string_lossy(), p.display()),
        None => format!("/boot/EFI/Linux/{}", p.display()),
    };
    let mut ukis = vec![];
    let mut addons = vec![];
    for e in entries {
        let BootEntry::Type2(t) = e else { continue };
        match t.pe_type {
            PEType::Uki if t.file_path.components().count() == 1 => ukis.push(t),
            PEType::UkiAddon => addons.push(t),
            PEType::GlobalUkiAddon => tracing::warn!(
                "the image's global UKI addon /boot/loader/addons/{} is not installed: only a UKI's own addons (<uki>.efi.extra.d/) are",
                t.file_path.display()
            ),
            _ => {}
        }
    }
    let Some(t) = ukis.first() else {
        return Ok(None);
    };
    if ukis.len() > 1 {
        let mut all: Vec<String> = ukis.iter().map(|t| where_(&t.kver, &t.file_path)).collect();
        all.sort();
        bail!(
            "the image has more than one UKI ({}); expected exactly one",
            crate::sys::cmd::cap(&all.join(", "), 300)
        );
    }
    let path = where_(&t.kver, &t.file_path);
    let bytes = composefs::fs::read_file(&t.file, repo)
        .with_context(|| format!("reading {path} from the image"))?
        .into_vec();
    let parsed = uki::parse(&bytes).with_context(|| format!("{path} is not a usable UKI"))?;
    let karg = parsed
        .composefs()
        .with_context(|| format!("{path} is not a usable UKI"))?;
    if karg.id != *id {
        bail!(
            "the UKI {path} is sealed to {} but this image is {id}: rebuild it from this image's rootfs with `bootc container ukify --rootfs <rootfs> -- --output <uki.efi>` and put that into the image",
            karg.id
        );
    }
    let uname = parsed.uname.clone();
    // Its addons: `<uki file name>.extra.d/*.addon.efi`, beside it.
    let extra = format!("{}{EXTRA_D}", t.file_path.display());
    let mut own: Vec<(String, Vec<u8>)> = vec![];
    for a in addons {
        if a.kver != t.kver {
            continue;
        }
        let mut comps = a.file_path.components();
        let (Some(dir), Some(name), None) = (comps.next(), comps.next(), comps.next()) else {
            continue;
        };
        if dir.as_os_str() != extra.as_str() {
            continue;
        }
        let name = name.as_os_str().to_string_lossy().into_owned();
        let apath = where_(&a.kver, &a.file_path);
        let data = composefs::fs::read_file(&a.file, repo)
            .with_context(|| format!("reading {apath} from the image"))?
            .into_vec();
        check_addon(&apath, &data)?;
        if let Some(why) = bls::line_value_problem(&name) {
            bail!("the UKI addon {apath}: its name is not usable ({why})");
        }
        own.push((name, data));
    }
    own.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(ImageUki {
        path,
        bytes,
        addons: own,
        uname,
        insecure: karg.insecure,
    }))
}

/// Refuses an addon at `path` that is not a PE file or whose `.cmdline` sets the
/// composefs argument (it would override what the UKI is sealed to).
pub(crate) fn check_addon(path: &str, data: &[u8]) -> Result<()> {
    let cmdline =
        uki::addon_cmdline(data).with_context(|| format!("{path} is not a usable UKI addon"))?;
    let sets = tokenize(cmdline.as_deref().unwrap_or_default())
        .iter()
        .any(|t| {
            let name = t.split('=').next().unwrap_or_default();
            name == KARG || name == KARG_DIGEST
        });
    if sets {
        bail!(
            "the UKI addon {path} sets {KARG}= in its .cmdline: an addon may not change which image the UKI boots; remove the argument from the addon"
        );
    }
    Ok(())
}

/// Writes deployment `id`'s UKI and its addons to
/// `EFI/Linux/bootc/bootc_composefs-<id>.efi[.extra.d/]` on the boot partition (each
/// written under a temporary name, synced, renamed; the addons first, so a UKI in
/// place always has its addons). Returns the `efi` path of the entry.
pub(crate) fn copy_uki(boot: &OwnedFd, id: &DeploymentId, u: &ImageUki) -> Result<String> {
    let dir = durable::ensure_dir_all(boot, layout::EFI_LINUX_BOOTC, 0o755)
        .with_context(|| format!("creating {} on the boot partition", layout::EFI_LINUX_BOOTC))?;
    let name = layout::uki_file_name(id);
    let extra = format!("{name}{EXTRA_D}");
    durable::remove_all(&dir, &extra)?;
    if !u.addons.is_empty() {
        let tmp = durable::tmp_name(&extra);
        durable::remove_all(&dir, &tmp)?;
        let staging = durable::ensure_dir(&dir, tmp.as_str(), 0o755)?;
        for (aname, data) in &u.addons {
            durable::write_file_with(&staging, aname.as_str(), 0o644, |out| {
                out.write_all(data).map_err(Into::into)
            })
            .with_context(|| format!("writing {}/{extra}/{aname}", layout::EFI_LINUX_BOOTC))?;
        }
        durable::fsync_dir(&staging)?;
        durable::rename_into_place(&dir, &tmp, &extra)
            .with_context(|| format!("moving {extra} into place"))?;
    }
    durable::write_file_with(&dir, name.as_str(), 0o644, |out| {
        out.write_all(&u.bytes).map_err(Into::into)
    })
    .with_context(|| format!("writing {}/{name}", layout::EFI_LINUX_BOOTC))?;
    durable::fsync_dir(&dir)?;
    Ok(super::entries::uki_path(id))
}

/// The entry that boots deployment `id`'s UKI: an `efi` line, no options (the UKI's
/// sealed `.cmdline` is the command line); titled from the image's os-release (its
/// version, or else the UKI's `.uname`).
pub(crate) fn deployment_entry(id: &DeploymentId, os: bls::OsInfo, u: &ImageUki) -> BlsEntry {
    BlsEntry {
        file_stem: layout::boot_dir_name(id),
        title: os.title,
        version: os
            .version
            .or_else(|| u.uname.as_deref().map(bls::display_value))
            .unwrap_or_else(|| "uki".into()),
        sort_key: None,
        linux: String::new(),
        efi: Some(super::entries::uki_path(id)),
        initrd: vec![],
        options: String::new(),
    }
}
