//! `bootc status`: the host as a `BootcHost` object, rendered for people or programs.
//!
//! The JSON and YAML forms follow upstream bootc's `org.containers.bootc/v1` `BootcHost`
//! (`spec.image`, `status.{booted,staged,rollback,otherDeployments}`, each entry with
//! `image.image.image`, `image.imageDigest` and a `composefs` block with `verity` and
//! `bootType`), so tools written for bootc read it. `userspace/host-v1.schema.json`
//! is the schema the tests validate against. One addition, `status.finalizeFailure`,
//! carries the reason the last staged update was not applied.
//!
//! Status reads defensively: a missing or corrupt origin, an unknown file in the loader
//! directory or a missing `/run/composefs` are reported, never fatal.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use bootc_initramfs_setup::cmdline::DeploymentId;
use serde::Serialize;

use crate::boot::entries::{Entry, EntrySet};
use crate::boot::uki_deploy;
use crate::boot::BootloaderKind;
use crate::deploy::host::{Host, Staged};
use crate::deploy::soft_reboot;
use crate::deploy::state::Origin;
use crate::deploy::usr_overlay::{self, FilesystemOverlay};
use crate::imgref::ImageReference;

/// `apiVersion`.
pub(crate) const API_VERSION: &str = "org.containers.bootc/v1";
/// `kind`.
pub(crate) const KIND: &str = "BootcHost";

/// The whole object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BootcHost {
    /// Always [`API_VERSION`].
    pub(crate) api_version: &'static str,
    /// Always [`KIND`].
    pub(crate) kind: &'static str,
    /// Object metadata.
    pub(crate) metadata: Metadata,
    /// What the host is asked to run.
    pub(crate) spec: HostSpec,
    /// What it runs.
    pub(crate) status: HostStatus,
}

/// `metadata`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Metadata {
    /// Always `host`.
    pub(crate) name: &'static str,
}

/// `spec`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostSpec {
    /// The image followed by upgrades.
    pub(crate) image: Option<ImageRef>,
    /// `default`, or `rollback` when the rollback deployment boots next.
    pub(crate) boot_order: &'static str,
}

/// An image reference (`image` + `transport`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The name, without the transport.
    pub(crate) image: String,
    /// `registry`, `oci`, `oci-archive`, `containers-storage`.
    pub(crate) transport: String,
}

/// `status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HostStatus {
    /// Booted next, after finalize.
    pub(crate) staged: Option<BootEntry>,
    /// Running now.
    pub(crate) booted: Option<BootEntry>,
    /// The previous deployment.
    pub(crate) rollback: Option<BootEntry>,
    /// Whether the rollback deployment is the default for the next boot.
    pub(crate) rollback_queued: bool,
    /// Further deployments that still have an entry.
    pub(crate) other_deployments: Vec<BootEntry>,
    /// `bootcHost`.
    #[serde(rename = "type")]
    pub(crate) host_type: Option<&'static str>,
    /// Why the last staged update was not applied (ours; not in upstream's schema).
    pub(crate) finalize_failure: Option<String>,
    /// The transient overlay on /usr of the running system (`bootc usr-overlay`).
    pub(crate) usr_overlay: Option<FilesystemOverlay>,
}

/// One deployment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BootEntry {
    /// The image it was made from (None when its origin cannot be read).
    pub(crate) image: Option<ImageStatus>,
    /// An update fetched but not deployed (not tracked: always None).
    pub(crate) cached_update: Option<ImageStatus>,
    /// The origin could not be understood.
    pub(crate) incompatible: bool,
    /// Exempt from garbage collection.
    pub(crate) pinned: bool,
    /// Staged by `upgrade --download-only`: not applied at shutdown until
    /// `upgrade --from-downloaded`.
    pub(crate) download_only: bool,
    /// A soft reboot into it is possible (same kernel, initramfs and kernel arguments
    /// as the booted deployment).
    pub(crate) soft_reboot_capable: bool,
    /// The composefs state.
    pub(crate) composefs: Composefs,
    /// Upstream's OSTree block: always None here.
    pub(crate) ostree: Option<()>,
}

/// `image` of an entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImageStatus {
    /// The reference.
    pub(crate) image: ImageRef,
    /// `VERSION_ID` or the image's version label.
    pub(crate) version: Option<String>,
    /// The image's creation time.
    pub(crate) timestamp: Option<String>,
    /// `sha256:…` of the manifest.
    pub(crate) image_digest: String,
    /// OCI architecture.
    pub(crate) architecture: String,
}

/// `composefs` of an entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Composefs {
    /// The deployment id: fs-verity digest of its EROFS image (hex).
    pub(crate) verity: String,
    /// `Bls` or `Uki`.
    pub(crate) boot_type: &'static str,
    /// `systemd` or `grub`.
    pub(crate) bootloader: &'static str,
    /// Whether it boots with `composefs=?`.
    pub(crate) missing_verity_allowed: bool,
    /// sha256 of kernel + initrd (Type #1 entries).
    pub(crate) boot_digest: Option<String>,
    /// What the repository lacks of this deployment's image (ours; not in upstream's
    /// schema). None when intact or when it could not be checked.
    pub(crate) damage: Option<String>,
    /// The entry's boot counter (ours): None when it has none (blessed, never counted,
    /// or a loader without boot counting).
    pub(crate) boot_counting: Option<BootCounting>,
    /// The entry ran out of boot tries: the loader fell back from it (ours).
    pub(crate) failed_boot: bool,
}

/// A boot counter in `status` (the `+LEFT-DONE` of the entry's file name).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BootCounting {
    /// Tries left before the loader falls back.
    pub(crate) tries_left: u32,
    /// Tries done so far.
    pub(crate) tries_done: u32,
}

fn image_ref(r: &ImageReference) -> ImageRef {
    ImageRef {
        image: r.name.clone(),
        transport: r.transport.to_string(),
    }
}

fn oci_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
    .to_string()
}

/// Whether a soft reboot from the booted deployment into `id` is possible.
fn soft_reboot_capable(input: &StatusInput, id: &DeploymentId, entry: Option<&Entry>) -> bool {
    let booted = soft_reboot::BootSide {
        id: &input.booted,
        origin: input.origins.get(&input.booted).and_then(Option::as_ref),
        options: input
            .current
            .get(&input.booted)
            .map(|e| e.bls.options.as_str()),
    };
    let target = soft_reboot::BootSide {
        id,
        origin: input.origins.get(id).and_then(Option::as_ref),
        options: entry.map(|e| e.bls.options.as_str()),
    };
    soft_reboot::incapable_reason(booted, target).is_none()
}

fn boot_entry(input: &StatusInput, id: &DeploymentId, entry: Option<&Entry>) -> BootEntry {
    let origin = input.origins.get(id).and_then(Option::as_ref);
    let parsed = origin.and_then(|o| ImageReference::parse(&o.image_reference).ok());
    let image = match (origin, &parsed) {
        (Some(o), Some(r)) => {
            let digest = o.manifest_digest.clone().unwrap_or_default();
            let (version, timestamp) = input.details.get(&digest).cloned().unwrap_or((None, None));
            Some(ImageStatus {
                image: image_ref(r),
                version,
                timestamp,
                image_digest: digest,
                architecture: oci_arch(),
            })
        }
        _ => None,
    };
    BootEntry {
        incompatible: origin.is_none() || parsed.is_none(),
        image,
        cached_update: None,
        pinned: false,
        download_only: false,
        soft_reboot_capable: soft_reboot_capable(input, id, entry),
        composefs: Composefs {
            verity: id.hex().to_string(),
            boot_type: if origin.is_some_and(|o| o.boot_type == uki_deploy::BOOT_TYPE_UKI)
                || entry.is_some_and(|e| e.bls.efi.is_some())
            {
                "Uki"
            } else {
                "Bls"
            },
            bootloader: input.bootloader.as_str(),
            missing_verity_allowed: match entry {
                // A UKI's entry has no options: its sealed command line, recorded in
                // the origin when it was deployed, says.
                Some(e) if e.bls.efi.is_some() => origin.is_some_and(|o| o.missing_verity_allowed),
                Some(e) => e.insecure,
                None => input.booted_insecure,
            },
            boot_digest: origin.and_then(|o| o.boot_digest.clone()),
            damage: input.damage.get(id).cloned(),
            boot_counting: entry.and_then(|e| e.counter).map(|c| BootCounting {
                tries_left: c.left,
                tries_done: c.done.unwrap_or(0),
            }),
            failed_boot: entry.is_some_and(|e| e.failed()),
        },
        ostree: None,
    }
}

/// Version and creation time of images, by manifest digest.
pub(crate) type ImageDetails = BTreeMap<String, (Option<String>, Option<String>)>;

/// Version and creation time of every image the repository holds, by manifest digest.
fn image_details(host: &Host) -> ImageDetails {
    fn typed<H: composefs::fsverity::FsVerityHashValue>(host: &Host) -> Result<ImageDetails> {
        let repo = crate::repo::open::<H>(&host.sysroot)?;
        let mut out = BTreeMap::new();
        for (_, digest) in composefs_oci::oci_image::list_refs(&repo)? {
            if let Ok(img) = composefs_oci::oci_image::OciImage::open(&repo, &digest, None) {
                let version = img
                    .label("org.opencontainers.image.version")
                    .map(str::to_string);
                out.insert(
                    digest.to_string(),
                    (version, img.created().map(str::to_string)),
                );
            }
        }
        Ok(out)
    }
    let r = crate::repo::read_algorithm(&host.sysroot)
        .and_then(|alg| bootc_initramfs_setup::with_algorithm!(alg, H => typed::<H>(host)));
    r.unwrap_or_else(|e| {
        tracing::warn!("reading image details: {e:#}");
        BTreeMap::new()
    })
}

/// The deployments whose image the repository holds incompletely (an object or stream
/// missing, or lacking fs-verity where the repository requires it). A deployment whose
/// origin names no manifest, or a check that cannot run, is left out with a warning.
fn image_damage(
    host: &Host,
    origins: &BTreeMap<DeploymentId, Option<Origin>>,
) -> BTreeMap<DeploymentId, String> {
    fn typed<H: composefs::fsverity::FsVerityHashValue>(
        host: &Host,
        origins: &BTreeMap<DeploymentId, Option<Origin>>,
    ) -> Result<BTreeMap<DeploymentId, String>> {
        let repo = crate::repo::open::<H>(&host.sysroot)?;
        let mut out = BTreeMap::new();
        for (id, origin) in origins {
            let Some(digest) = origin.as_ref().and_then(|o| o.manifest_digest.as_deref()) else {
                continue;
            };
            let Ok(digest) = composefs_oci::OciDigest::try_from(digest) else {
                continue;
            };
            match crate::integrity::check_image(&repo, &digest) {
                Ok(d) if d.is_intact() => {}
                Ok(d) => {
                    tracing::warn!("deployment {}: image damaged: {d}", id.short());
                    out.insert(id.clone(), d.to_string());
                }
                Err(e) => tracing::warn!("deployment {}: checking its image: {e:#}", id.short()),
            }
        }
        Ok(out)
    }
    let r = crate::repo::read_algorithm(&host.sysroot).and_then(
        |alg| bootc_initramfs_setup::with_algorithm!(alg, H => typed::<H>(host, origins)),
    );
    r.unwrap_or_else(|e| {
        tracing::warn!("checking the deployments' images: {e:#}");
        BTreeMap::new()
    })
}

/// Everything status is made of, read from the host by [`host_status`]; [`assemble`]
/// turns it into the object without touching the disk.
#[derive(Debug, Clone)]
pub(crate) struct StatusInput {
    /// The booted deployment.
    pub(crate) booted: DeploymentId,
    /// Whether it was booted with `composefs=?`.
    pub(crate) booted_insecure: bool,
    /// The boot loader.
    pub(crate) bootloader: BootloaderKind,
    /// The current menu.
    pub(crate) current: EntrySet,
    /// What the staged marker means against the entries.
    pub(crate) staged: Staged,
    /// The origins of the deployments shown (None: unreadable).
    pub(crate) origins: BTreeMap<DeploymentId, Option<Origin>>,
    /// Version and creation time of images, by manifest digest.
    pub(crate) details: ImageDetails,
    /// The recorded finalize failure.
    pub(crate) finalize_failure: Option<String>,
    /// Deployments whose image is incomplete in the repository, and what is missing.
    pub(crate) damage: BTreeMap<DeploymentId, String>,
    /// The staged deployment is locked by `upgrade --download-only`.
    pub(crate) download_only: bool,
}

/// Reads the host and builds the status object.
pub(crate) fn host_status(host: &Host) -> Result<BootcHost> {
    let current = host.current_set().unwrap_or_else(|e| {
        tracing::warn!("{e:#}");
        Default::default()
    });
    for raw in current.unparsed_ours() {
        tracing::warn!(
            "{}: {} is named like a bootc entry but cannot be used ({}); left as it is",
            host.menu().menu_path(),
            raw.display_name().escape_debug(),
            raw.problem.as_deref().unwrap_or("it cannot be parsed")
        );
    }
    let current = without_stateless(host, current);
    let staged = host.staged_state().unwrap_or_else(|e| {
        tracing::warn!("reading staged boot entries: {e:#}");
        Staged::None
    });
    let mut ids = current.deployments();
    ids.push(host.booted.clone());
    ids.extend(staged.pending().cloned());
    let origins = ids
        .into_iter()
        .map(|id| {
            let o = match Origin::load(&host.sysroot, &id) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!("deployment {}: {e:#}", id.short());
                    None
                }
            };
            (id, o)
        })
        .collect();
    let mut h = assemble(&StatusInput {
        booted: host.booted.clone(),
        booted_insecure: host.booted_insecure,
        bootloader: host.loader,
        current,
        staged,
        details: image_details(host),
        finalize_failure: host.finalize_failure(),
        damage: image_damage(host, &origins),
        download_only: host.staged_download_only(),
        origins,
    });
    if host.is_live() {
        h.status.usr_overlay = usr_overlay::status(Path::new("/")).unwrap_or_else(|e| {
            tracing::warn!("reading the /usr overlay state: {e:#}");
            None
        });
    }
    Ok(h)
}

/// `current` without the entries (other than the booted deployment's) whose deployment
/// has no state on disk: such an entry is not a deployment bootc made or kept (left by
/// hand, or by another tool), so it is not shown as the rollback with no image, as
/// upstream bootc skips it; a warning names it.
fn without_stateless(host: &Host, mut current: EntrySet) -> EntrySet {
    current.ours.retain(|e| {
        let Some(id) = &e.deployment else {
            return true;
        };
        if id == &host.booted {
            return true;
        }
        let dir = bootc_initramfs_setup::layout::deploy_dir(id);
        match rustix::fs::statat(&host.sysroot, &dir, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {
                tracing::warn!(
                    "boot entry {} in {} names deployment {}, which has no state on disk ({} is missing): not shown",
                    e.bls.file_stem.escape_debug(),
                    host.menu().menu_path(),
                    id.short(),
                    dir.display()
                );
                false
            }
            _ => true,
        }
    });
    current
}

/// Builds the status object from what was read. Staged is only an update that really
/// waits for finalize ([`Staged::Pending`]): a marker whose deployment is already the
/// default (an interrupted finalize) shows the same as a completed finalize, and a stale
/// marker shows nothing staged.
pub(crate) fn assemble(input: &StatusInput) -> BootcHost {
    let current = &input.current;
    let booted_id = &input.booted;
    let booted = Some(boot_entry(input, booted_id, current.get(booted_id)));

    let staged_id = input.staged.pending().filter(|id| *id != booted_id);
    let staged = staged_id.map(|id| {
        let e = match &input.staged {
            Staged::Pending { set, .. } => set.get(id),
            _ => None,
        };
        let mut b = boot_entry(input, id, e.or_else(|| current.get(id)));
        b.download_only = input.download_only;
        b
    });

    // The rollback is the first entry that is neither booted nor staged.
    let order = current.deployments();
    let rollback_id = order
        .iter()
        .find(|d| *d != booted_id && Some(*d) != staged_id)
        .cloned();
    let rollback_queued = rollback_id.is_some()
        && current.default_deployment() == rollback_id.as_ref()
        && staged.is_none();
    let rollback = rollback_id
        .as_ref()
        .map(|id| boot_entry(input, id, current.get(id)));
    let other_deployments = order
        .iter()
        .filter(|d| *d != booted_id && Some(*d) != rollback_id.as_ref() && Some(*d) != staged_id)
        .map(|id| boot_entry(input, id, current.get(id)))
        .collect();

    // The image followed: the staged one if any, else the booted one.
    let spec_image = staged
        .as_ref()
        .or(booted.as_ref())
        .and_then(|e| e.image.as_ref())
        .map(|i| i.image.clone());
    BootcHost {
        api_version: API_VERSION,
        kind: KIND,
        metadata: Metadata { name: "host" },
        spec: HostSpec {
            image: spec_image,
            boot_order: if rollback_queued {
                "rollback"
            } else {
                "default"
            },
        },
        status: HostStatus {
            staged,
            booted,
            rollback,
            rollback_queued,
            other_deployments,
            host_type: Some("bootcHost"),
            finalize_failure: input.finalize_failure.clone(),
            usr_overlay: None,
        },
    }
}

/// The human-readable form, laid out as upstream's: one block per deployment (staged,
/// booted, rollback, then the others), a title line `PREFIX: IMAGE` and rows whose
/// names end under the title's colon. `verbose` (upstream's `--verbose`) adds the rows
/// that are otherwise shown only when they say yes: `Soft-reboot` and `Download-only`
/// on every deployment.
pub(crate) fn render_human(h: &BootcHost, booted_only: bool, verbose: bool) -> String {
    let Some(booted) = &h.status.booted else {
        return "System is not deployed via bootc.\n".into();
    };
    let mut blocks = Vec::new();
    if !booted_only {
        if let Some(s) = &h.status.staged {
            blocks.push(human_block("  Staged image", s, &verbose_rows(s, verbose)));
        }
    }
    let overlay: Vec<(&str, String)> = h
        .status
        .usr_overlay
        .iter()
        .map(|o| {
            let mode = match o.access_mode {
                usr_overlay::AccessMode::ReadOnly => "read-only",
                usr_overlay::AccessMode::ReadWrite => "read/write",
            };
            ("/usr overlay", format!("{}, {mode}", o.persistence))
        })
        .collect();
    let mut rows = overlay;
    rows.extend(verbose_rows(booted, verbose));
    blocks.push(human_block("● Booted image", booted, &rows));
    if !booted_only {
        if let Some(r) = &h.status.rollback {
            let mut rows = verbose_rows(r, verbose);
            if h.status.rollback_queued {
                rows.push(("Queued", "the default for the next boot".to_string()));
            }
            blocks.push(human_block("  Rollback image", r, &rows));
        }
        for o in &h.status.other_deployments {
            blocks.push(human_block("   Other image", o, &verbose_rows(o, verbose)));
        }
    }
    let mut out = blocks.join("\n");
    if !booted_only {
        if let Some(f) = &h.status.finalize_failure {
            out.push_str(&format!("\nLast staged update was not applied: {f}\n"));
        }
    }
    out
}

/// The `Soft-reboot: yes` row of a deployment a soft reboot can reach; with `verbose`,
/// `Soft-reboot` and `Download-only` yes or no for every deployment.
fn verbose_rows(e: &BootEntry, verbose: bool) -> Vec<(&'static str, String)> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut rows = vec![];
    if e.soft_reboot_capable || verbose {
        rows.push(("Soft-reboot", yes_no(e.soft_reboot_capable)));
    }
    if verbose && !e.download_only {
        // (A download-only deployment has its own row in the block.)
        rows.push(("Download-only", yes_no(false)));
    }
    rows
}

/// One deployment's block; `extra` rows come last.
fn human_block(prefix: &str, e: &BootEntry, extra: &[(&str, String)]) -> String {
    let width = prefix.chars().count();
    let mut out = String::new();
    let mut row = |name: &str, value: &str| {
        out.push_str(&format!("{name:>width$}: {value}\n"));
    };
    match &e.image {
        Some(i) => {
            // Registry is the default transport: upstream shows only the name.
            let r = &i.image;
            if r.transport == "registry" {
                row(prefix, &r.image);
            } else {
                row(prefix, &format!("{}:{}", r.transport, r.image));
            }
            row(
                "Digest",
                &format!("{} ({})", i.image_digest, i.architecture),
            );
        }
        None => row(prefix, "(origin unreadable)"),
    }
    row("Verity", &e.composefs.verity);
    if let Some(i) = &e.image {
        let ts = i.timestamp.as_deref().map(human_timestamp);
        match (&i.version, ts) {
            (Some(v), Some(t)) => row("Version", &format!("{v} ({t})")),
            (Some(v), None) => row("Version", v),
            (None, Some(t)) => row("Timestamp", &t),
            (None, None) => {}
        }
    }
    row(
        "FsVerity",
        if e.composefs.missing_verity_allowed {
            "not enforced (composefs=?)"
        } else {
            "enforced"
        },
    );
    if let Some(d) = &e.composefs.damage {
        row("Damaged", d);
    }
    if e.download_only {
        row(
            "Download-only",
            "yes (bootc upgrade --from-downloaded applies it)",
        );
    }
    row(
        "Boot",
        &format!("{} via {}", e.composefs.boot_type, e.composefs.bootloader),
    );
    if e.composefs.failed_boot {
        row(
            "Failed",
            "it did not reach boot-complete.target; the boot loader falls back from it",
        );
    } else if let Some(c) = &e.composefs.boot_counting {
        row(
            "Boot tries",
            &format!(
                "{} left, {} done (not yet blessed)",
                c.tries_left, c.tries_done
            ),
        );
    }
    for (name, value) in extra {
        row(name, value);
    }
    out
}

/// An RFC 3339 time without its fraction of a second, as upstream shows it.
fn human_timestamp(t: &str) -> String {
    match (t.find('.'), t.strip_suffix('Z')) {
        (Some(dot), Some(_)) if t[..dot].contains('T') => format!("{}Z", &t[..dot]),
        _ => t.to_string(),
    }
}

/// `--booted`: only the booted entry in the object.
pub(crate) fn only_booted(mut h: BootcHost) -> BootcHost {
    h.status.staged = None;
    h.status.rollback = None;
    h.status.other_deployments.clear();
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::host::test_sets::*;

    fn input(booted: &DeploymentId, current: EntrySet, staged: Staged) -> StatusInput {
        let mut origins = BTreeMap::new();
        for (i, d) in current.deployments().iter().chain([booted]).enumerate() {
            let r = ImageReference::parse(&format!("oci:/images:v{i}")).unwrap();
            origins.insert(
                d.clone(),
                Some(Origin::for_image(
                    &r,
                    "00",
                    &format!("sha256:{}", "0".repeat(64)),
                    BootloaderKind::Grub,
                )),
            );
        }
        StatusInput {
            booted: booted.clone(),
            booted_insecure: true,
            bootloader: BootloaderKind::Grub,
            current,
            staged,
            origins,
            details: BTreeMap::new(),
            finalize_failure: None,
            damage: BTreeMap::new(),
            download_only: false,
        }
    }

    fn verity(e: &Option<BootEntry>) -> Option<String> {
        e.as_ref().map(|e| e.composefs.verity.clone())
    }

    fn hex(id: &DeploymentId) -> Option<String> {
        Some(id.hex().to_string())
    }

    #[test]
    fn status_follows_the_entries_not_the_marker() {
        let (b, x, o) = (id('b'), id('c'), id('d'));
        // Nothing staged: booted b, rollback o.
        let plain = assemble(&input(&b, set(&[&b, &o]), Staged::None));
        assert_eq!(verity(&plain.status.staged), None);
        assert_eq!(verity(&plain.status.booted), hex(&b));
        assert_eq!(verity(&plain.status.rollback), hex(&o));
        assert!(!plain.status.rollback_queued);
        assert_eq!(plain.spec.boot_order, "default");

        // A pending update: staged x, not in the boot order yet.
        let pending = Staged::Pending {
            id: x.clone(),
            set: set(&[&x, &b, &o]),
        };
        let h = assemble(&input(&b, set(&[&b, &o]), pending));
        assert_eq!(verity(&h.status.staged), hex(&x));
        assert_eq!(verity(&h.status.rollback), hex(&o));
        assert!(!h.status.rollback_queued);

        // Finalize stopped after the exchange: x is the default and boots next. It is
        // not staged, and status is exactly what a completed finalize shows.
        let after = set(&[&x, &b, &o]);
        let interrupted = assemble(&input(&b, after.clone(), Staged::Finalized(x.clone())));
        let completed = assemble(&input(&b, after, Staged::None));
        assert_eq!(verity(&interrupted.status.staged), None);
        assert_eq!(
            serde_json::to_value(&interrupted).unwrap(),
            serde_json::to_value(&completed).unwrap()
        );

        // A stale marker (no staged set, x not the default): nothing staged.
        let stale = assemble(&input(&b, set(&[&b, &o]), Staged::Stale(x.clone())));
        assert_eq!(
            serde_json::to_value(&stale).unwrap(),
            serde_json::to_value(&plain).unwrap()
        );

        // A queued rollback: the default is o, booted b.
        let q = assemble(&input(&b, set(&[&o, &b]), Staged::None));
        assert!(q.status.rollback_queued);
        assert_eq!(q.spec.boot_order, "rollback");
        assert_eq!(verity(&q.status.rollback), hex(&o));
    }

    #[test]
    fn unreadable_origins_and_other_deployments() {
        let (a, b, c, d) = (id('a'), id('b'), id('c'), id('d'));
        let mut i = input(&b, set(&[&b, &a, &c, &d]), Staged::None);
        i.origins.insert(c.clone(), None);
        i.finalize_failure = Some("why".into());
        let h = assemble(&i);
        assert_eq!(verity(&h.status.rollback), hex(&a));
        let others: Vec<_> = h
            .status
            .other_deployments
            .iter()
            .map(|e| (e.composefs.verity.clone(), e.incompatible))
            .collect();
        assert_eq!(
            others,
            vec![(c.hex().to_string(), true), (d.hex().to_string(), false)]
        );
        assert_eq!(h.status.finalize_failure.as_deref(), Some("why"));
        assert!(h.status.booted.unwrap().composefs.missing_verity_allowed);
    }
}
