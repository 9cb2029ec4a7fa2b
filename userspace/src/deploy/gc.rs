//! `bootc gc`: remove what no deployment needs, and nothing that might boot.
//!
//! The live deployments are those with an entry in the boot loader's current menu or
//! its staged one (an update waiting for finalize), in any other menu found on the boot
//! partition (the other loader's: never delete on a guess what might boot), plus the
//! booted one and the staged one. Everything else
//! goes: their state directories, the `bootc_composefs-*` boot directories no live
//! entry boots from, their repository tags, and then (by the repository's own GC) every
//! image, stream and object no remaining tag reaches. Tags that are not ours are GC
//! roots too and are never touched. Leftovers of interrupted runs (names with
//! `durable::TMP_PREFIX`) under `state/`, `state/deploy/`, the boot partition's root and
//! the loaders' menu directories are removed too, and nothing else with such a name.
//!
//! What gc cannot prove unused, it keeps:
//! - An entry named like ours that cannot be parsed keeps every deployment, boot
//!   directory and tag whose digest appears in its name or bytes (case-insensitive);
//!   one that cannot be read at all keeps everything. gc warns, naming the file and
//!   what it keeps.
//! - No menu at all, or one without any entry of ours while deployments exist, means the boot partition is not the one we think (ESP not mounted, wrong
//!   `--boot-dir`): gc refuses and removes nothing.
//!
//! The decision is [`plan`], a pure function of what was read ([`GcInputs`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;

use crate::boot::entries::EntrySet;
use crate::boot::BootloaderKind;
use crate::deploy::host::Host;
use crate::deploy::state;
use crate::repo::{self, DEPLOYMENT_TAG_PREFIX};
use crate::sys::durable;

/// What was (or, with `--dry-run`, would be) removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GcReport {
    /// Deployment state directories.
    pub(crate) deployments: Vec<String>,
    /// Boot directories on the boot partition.
    pub(crate) boot_dirs: Vec<String>,
    /// Repository tags.
    pub(crate) tags: Vec<String>,
    /// Leftovers of interrupted runs (paths relative to the physical root or the boot
    /// partition, `boot:` for the latter).
    pub(crate) debris: Vec<String>,
    /// What was kept only because an unparsable entry might need it.
    pub(crate) kept: Vec<String>,
    /// Objects removed from the repository.
    pub(crate) objects: u64,
    /// Their size in bytes.
    pub(crate) bytes: u64,
    /// Dangling image and stream links pruned.
    pub(crate) links: u64,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deployments, {} boot directories, {} tags, {} objects ({:.1} MiB), {} dangling links, {} leftovers",
            self.deployments.len(),
            self.boot_dirs.len(),
            self.tags.len(),
            self.objects,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.links,
            self.debris.len(),
        )
    }
}

/// Why gc refused to remove anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GcRefused {
    /// The boot loader's menu does not exist.
    #[error("no boot entries in {boot}/{menu}: is the ESP mounted at {boot}? nothing removed")]
    NoEntriesDir {
        /// The boot partition, for the message.
        boot: String,
        /// The menu's path on it.
        menu: &'static str,
    },
    /// The menu has no entry of ours while deployments exist.
    #[error("{boot}/{menu} has no bootc entry but {deployments} deployments exist: is the ESP mounted at {boot}? nothing removed")]
    NoOurEntries {
        /// The boot partition, for the message.
        boot: String,
        /// The menu's path on it.
        menu: &'static str,
        /// How many deployments exist.
        deployments: usize,
    },
}

/// Where a leftover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    /// `state/`.
    State,
    /// `state/deploy/`.
    StateDeploy,
    /// The boot partition's root.
    Boot,
    /// A boot loader's menu directory on the boot partition.
    Menu(&'static str),
}

impl Place {
    /// The directory, relative to the physical root or the boot partition.
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Place::State => layout::STATE,
            Place::StateDeploy => layout::STATE_DEPLOY,
            Place::Boot => ".",
            Place::Menu(dir) => dir,
        }
    }

    fn display(self, name: &str) -> String {
        match self {
            Place::State | Place::StateDeploy => format!("{}/{name}", self.dir()),
            Place::Boot => format!("boot:{name}"),
            Place::Menu(dir) => format!("boot:{dir}/{name}"),
        }
    }
}

/// Everything gc decides from, as read from disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct GcInputs {
    /// The boot partition's path, for messages.
    pub(crate) boot_display: String,
    /// The booted deployment.
    pub(crate) booted: Option<DeploymentId>,
    /// The staged deployment (the marker).
    pub(crate) staged: Option<DeploymentId>,
    /// The boot loader's menu path and staged menu path, for messages.
    pub(crate) menu: (&'static str, &'static str),
    /// The boot loader's current menu; `None` when it does not exist.
    pub(crate) current: Option<EntrySet>,
    /// Its staged menu when an update is staged.
    pub(crate) staged_set: Option<EntrySet>,
    /// Every other menu found on the boot partition (path, set): the other loader's.
    pub(crate) other_menus: Vec<(&'static str, EntrySet)>,
    /// The deployments under `state/deploy`.
    pub(crate) deployments: Vec<DeploymentId>,
    /// Names in `state/deploy/` (for leftovers).
    pub(crate) deploy_names: Vec<String>,
    /// Names in `state/`.
    pub(crate) state_names: Vec<String>,
    /// Names in the boot partition's root.
    pub(crate) boot_names: Vec<String>,
    /// Names in `EFI/Linux/bootc` (UKI deployments' UKIs and addon directories).
    pub(crate) uki_names: Vec<String>,
    /// Names in each loader's menu directory.
    pub(crate) menu_names: Vec<(&'static str, Vec<String>)>,
    /// The repository's tags.
    pub(crate) tags: Vec<String>,
}

/// What gc will remove, and what it keeps only out of caution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GcPlan {
    /// Deployments (hex) whose state goes.
    pub(crate) deployments: Vec<String>,
    /// Boot directories that go.
    pub(crate) boot_dirs: Vec<String>,
    /// UKIs and their addon directories (names in `EFI/Linux/bootc`) that go.
    pub(crate) ukis: Vec<String>,
    /// Our tags that go.
    pub(crate) tags: Vec<String>,
    /// Leftovers of interrupted runs.
    pub(crate) debris: Vec<(Place, String)>,
    /// Kept because an unparsable entry might need it: what → why.
    pub(crate) kept: BTreeMap<String, String>,
    /// One warning per unparsable entry: the file and what it keeps.
    pub(crate) warnings: Vec<String>,
}

/// Decides what goes. Pure: reads nothing, writes nothing.
pub(crate) fn plan(i: &GcInputs) -> Result<GcPlan, GcRefused> {
    let current = i.current.as_ref().ok_or_else(|| GcRefused::NoEntriesDir {
        boot: i.boot_display.clone(),
        menu: i.menu.0,
    })?;
    if current.ours.is_empty()
        && current.unparsed_ours().next().is_none()
        && !i.deployments.is_empty()
    {
        return Err(GcRefused::NoOurEntries {
            boot: i.boot_display.clone(),
            menu: i.menu.0,
            deployments: i.deployments.len(),
        });
    }
    let sets: Vec<(&str, &EntrySet)> = std::iter::once((i.menu.0, current))
        .chain(i.staged_set.iter().map(|s| (i.menu.1, s)))
        .chain(i.other_menus.iter().map(|(p, s)| (*p, s)))
        .collect();

    // Live digests (deployment ids, lower-case hex).
    let mut live: BTreeSet<String> = BTreeSet::new();
    live.extend(i.booted.iter().map(|d| d.hex().to_string()));
    live.extend(i.staged.iter().map(|d| d.hex().to_string()));
    for (_, s) in &sets {
        live.extend(s.deployments().iter().map(|d| d.hex().to_string()));
    }

    // Boot directories live entries boot from.
    let mut boot_refs: BTreeSet<String> = BTreeSet::new();
    for (_, s) in &sets {
        for e in &s.ours {
            for p in std::iter::once(&e.bls.linux).chain(e.bls.initrd.iter()) {
                if let Some(dir) = p.trim_start_matches('/').split('/').next() {
                    boot_refs.insert(dir.to_string());
                }
            }
        }
    }
    // UKIs live entries boot (file names in EFI/Linux/bootc).
    let uki_dir = format!("/{}/", layout::EFI_LINUX_BOOTC);
    let mut uki_refs: BTreeSet<String> = BTreeSet::new();
    for (_, s) in &sets {
        for e in &s.ours {
            if let Some(name) = e.bls.efi.as_deref().and_then(|p| p.strip_prefix(&uki_dir)) {
                uki_refs.insert(name.to_string());
            }
        }
    }
    let ukis: Vec<&String> = i
        .uki_names
        .iter()
        .filter(|n| n.starts_with(layout::BOOT_PREFIX) && n.ends_with(".efi"))
        .collect();
    let boot_dirs: Vec<&String> = i
        .boot_names
        .iter()
        .filter(|n| n.starts_with(layout::BOOT_PREFIX) && !n.ends_with(".efi"))
        .collect();
    let tag_hex = |t: &str| t.strip_prefix(DEPLOYMENT_TAG_PREFIX).map(str::to_string);

    // What an unparsable entry of ours might name.
    let mut plan = GcPlan::default();
    let mut keep_all = false;
    for (dir, s) in &sets {
        for raw in s.unparsed_ours() {
            let file = format!("{dir}: {}", raw.display_name());
            let why = raw
                .problem
                .clone()
                .unwrap_or_else(|| "it cannot be parsed".into());
            let Some(bytes) = raw.searchable() else {
                keep_all = true;
                plan.warnings.push(format!(
                    "{file} cannot be read ({why}): keeping every deployment, boot directory and tag"
                ));
                continue;
            };
            let found = |needle: &str| contains(&bytes, needle.to_ascii_lowercase().as_bytes());
            let mut named: Vec<String> = vec![];
            // (what, whether it was live anyway)
            let mut kept: Vec<(String, bool)> = vec![];
            for d in &i.deployments {
                if found(d.hex()) {
                    let was = !live.insert(d.hex().to_string());
                    kept.push((format!("deployment {}", d.hex()), was));
                }
            }
            for b in &boot_dirs {
                if found(b) || b.strip_prefix(layout::BOOT_PREFIX).is_some_and(found) {
                    let was = !boot_refs.insert((*b).clone());
                    kept.push((format!("boot directory {b}"), was));
                }
            }
            for u in &ukis {
                let hex = u
                    .strip_prefix(layout::BOOT_PREFIX)
                    .and_then(|u| u.strip_suffix(".efi"));
                if found(u) || hex.is_some_and(found) {
                    let was = !uki_refs.insert((*u).clone());
                    kept.push((format!("UKI {u}"), was));
                }
            }
            for t in &i.tags {
                if let Some(h) = tag_hex(t).filter(|h| found(h)) {
                    let was = !live.insert(h);
                    kept.push((format!("tag {t}"), was));
                }
            }
            for (what, was_live) in kept {
                if !was_live {
                    plan.kept.insert(what.clone(), format!("named by {file}"));
                }
                named.push(what);
            }
            named.sort();
            named.dedup();
            plan.warnings.push(if named.is_empty() {
                format!("{file} cannot be parsed ({why}); it names no deployment, boot directory or tag here, so nothing is kept for it")
            } else {
                format!(
                    "{file} cannot be parsed ({why}); keeping what it may boot: {}",
                    named.join(", ")
                )
            });
        }
    }
    if keep_all {
        return Ok(GcPlan {
            deployments: vec![],
            boot_dirs: vec![],
            ukis: vec![],
            tags: vec![],
            debris: debris(i),
            kept: BTreeMap::new(),
            warnings: plan.warnings,
        });
    }

    // A boot directory named after a live deployment is kept even without an entry.
    for d in &live {
        boot_refs.insert(format!("{}{d}", layout::BOOT_PREFIX));
    }
    for d in &i.deployments {
        if !live.contains(d.hex()) {
            plan.deployments.push(d.hex().to_string());
        }
    }
    for b in boot_dirs {
        if !boot_refs.contains(b) {
            plan.boot_dirs.push(b.clone());
        }
    }
    // A UKI named after a live deployment is kept even without an entry; a UKI goes
    // with its addon directory (`<uki>.extra.d`), which goes when its UKI is gone.
    for d in &live {
        uki_refs.insert(format!("{}{d}.efi", layout::BOOT_PREFIX));
    }
    for n in &i.uki_names {
        let uki = n.strip_suffix(".extra.d").unwrap_or(n);
        if n.starts_with(layout::BOOT_PREFIX) && uki.ends_with(".efi") && !uki_refs.contains(uki) {
            plan.ukis.push(n.clone());
        }
    }
    for t in &i.tags {
        if tag_hex(t).is_some_and(|h| !live.contains(&h)) {
            plan.tags.push(t.clone());
        }
    }
    plan.debris = debris(i);
    Ok(plan)
}

fn debris(i: &GcInputs) -> Vec<(Place, String)> {
    let mut out = vec![];
    let places = [
        (Place::State, &i.state_names),
        (Place::StateDeploy, &i.deploy_names),
        (Place::Boot, &i.boot_names),
    ];
    let menus = i.menu_names.iter().map(|(d, n)| (Place::Menu(d), n));
    for (place, names) in places.into_iter().chain(menus) {
        out.extend(
            names
                .iter()
                .filter(|n| durable::is_tmp_name(n))
                .map(|n| (place, n.clone())),
        );
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Collects garbage; with `dry_run` only reports.
pub(crate) fn gc(host: &Host, dry_run: bool) -> Result<GcReport> {
    with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => gc_typed::<H>(host, dry_run))
}

/// The boot partition's path, for messages.
fn boot_display(host: &Host) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", host.boot.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the boot partition".into())
}

fn gc_typed<H: FsVerityHashValue>(host: &Host, dry_run: bool) -> Result<GcReport> {
    let repo = repo::open::<H>(&host.sysroot)?;
    let inputs = GcInputs {
        boot_display: boot_display(host),
        booted: Some(host.booted.clone()),
        staged: host.staged(),
        menu: (host.menu().menu_path(), host.menu().staged_menu_path()),
        current: host
            .menu()
            .read_current(host.boot.as_fd())
            .with_context(|| format!("reading {}", host.menu().menu_path()))?,
        staged_set: host.staged_set()?,
        other_menus: other_menus(host)?,
        deployments: state::list_deployments(&host.sysroot)?,
        deploy_names: list_names(&host.sysroot, layout::STATE_DEPLOY)?,
        state_names: list_names(&host.sysroot, layout::STATE)?,
        boot_names: list_names(&host.boot, ".")?,
        uki_names: list_names(&host.boot, layout::EFI_LINUX_BOOTC)?,
        menu_names: BootloaderKind::ALL
            .iter()
            .map(|k| {
                Ok((
                    k.get().menu_dir(),
                    list_names(&host.boot, k.get().menu_dir())?,
                ))
            })
            .collect::<Result<_>>()?,
        tags: composefs_oci::oci_image::list_refs(&repo)?
            .into_iter()
            .map(|(t, _)| t)
            .collect(),
    };
    let plan = plan(&inputs)?;
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let mut report = GcReport {
        deployments: plan.deployments.clone(),
        boot_dirs: plan
            .boot_dirs
            .iter()
            .cloned()
            .chain(
                plan.ukis
                    .iter()
                    .map(|u| format!("{}/{u}", layout::EFI_LINUX_BOOTC)),
            )
            .collect(),
        tags: plan.tags.clone(),
        debris: plan.debris.iter().map(|(p, n)| p.display(n)).collect(),
        kept: plan
            .kept
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect(),
        ..Default::default()
    };

    if dry_run {
        // What the repository GC would free once the tags are gone cannot be computed
        // without removing them; report what it would free now as a lower bound.
        let r = repo
            .gc_dry_run(&[])
            .context("computing repository garbage")?;
        report.objects = r.objects_removed;
        report.bytes = r.objects_bytes;
        report.links = r.images_pruned + r.streams_pruned;
        return Ok(report);
    }

    let deploy_root = durable::open_dir(&host.sysroot, layout::STATE_DEPLOY)?;
    for d in &plan.deployments {
        durable::remove_all(&deploy_root, d)
            .with_context(|| format!("removing state/deploy/{d}"))?;
    }
    for b in &plan.boot_dirs {
        durable::remove_all(&host.boot, b)
            .with_context(|| format!("removing {b} from the boot partition"))?;
    }
    if !plan.ukis.is_empty() {
        let dir = durable::open_dir(&host.boot, layout::EFI_LINUX_BOOTC)?;
        for u in &plan.ukis {
            durable::remove_all(&dir, u).with_context(|| {
                format!(
                    "removing {}/{u} from the boot partition",
                    layout::EFI_LINUX_BOOTC
                )
            })?;
        }
        durable::fsync_dir(&dir)?;
    }
    for (place, name) in &plan.debris {
        let root = match place {
            Place::State | Place::StateDeploy => host.sysroot.as_fd(),
            Place::Boot | Place::Menu(_) => host.boot.as_fd(),
        };
        let dir = durable::open_dir(root, place.dir())?;
        durable::remove_all(&dir, name)
            .with_context(|| format!("removing the leftover {}", place.display(name)))?;
        durable::fsync_dir(&dir)?;
    }
    durable::fsync_dir(&host.boot)?;
    for t in &plan.tags {
        composefs_oci::oci_image::untag_image(&repo, t)?;
    }
    let r = repo.gc(&[]).context("collecting repository garbage")?;
    report.objects = r.objects_removed;
    report.bytes = r.objects_bytes;
    report.links = r.images_pruned + r.streams_pruned;
    durable::syncfs(&host.sysroot)?;
    durable::syncfs(&host.boot)?;
    Ok(report)
}

/// The menus of the other loaders (current and staged) found on the boot partition:
/// what they boot is kept. One that cannot be read is an error (nothing is removed).
fn other_menus(host: &Host) -> Result<Vec<(&'static str, EntrySet)>> {
    let mut out = vec![];
    for k in BootloaderKind::ALL
        .into_iter()
        .filter(|k| *k != host.loader)
    {
        let l = k.get();
        for (path, set) in [
            (l.menu_path(), l.read_current(host.boot.as_fd())),
            (l.staged_menu_path(), l.read_staged(host.boot.as_fd())),
        ] {
            if let Some(set) = set.with_context(|| format!("reading {path}"))? {
                out.push((path, set));
            }
        }
    }
    Ok(out)
}

/// The names in `path` under `root`; none when it does not exist.
fn list_names(root: impl AsFd, path: &str) -> Result<Vec<String>> {
    let fd = match rustix::fs::openat(
        &root,
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("opening {path}")),
    };
    let mut out = vec![];
    let mut d = rustix::fs::Dir::read_from(&fd).with_context(|| format!("reading {path}"))?;
    while let Some(e) = d.read() {
        let n = e
            .with_context(|| format!("reading {path}"))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if n != "." && n != ".." {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::bls::BlsEntry;
    use crate::boot::entries::{self, Entry};

    fn id(c: char) -> DeploymentId {
        DeploymentId::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn bdir(c: char) -> String {
        format!("{}{}", layout::BOOT_PREFIX, c.to_string().repeat(64))
    }

    /// Our entry for deployment `d` booting from the boot directory of `k`.
    fn entry(d: char, k: char) -> BlsEntry {
        BlsEntry {
            efi: None,
            file_stem: bdir(d),
            title: "T".into(),
            version: "1".into(),
            sort_key: None,
            linux: format!("/{}/vmlinuz", bdir(k)),
            initrd: vec![format!("/{}/initramfs.img", bdir(k))],
            options: format!("rw composefs=sha256:{}", d.to_string().repeat(64)),
        }
    }

    /// Writes `ours` (in order) and `raw` files into a real entry directory and reads
    /// it back the way gc does.
    fn read_set(ours: &[BlsEntry], raw: &[(&str, &[u8])]) -> EntrySet {
        let t = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, t.path()).unwrap();
        let set = EntrySet {
            ours: ours.iter().cloned().map(Entry::new).collect(),
            foreign: vec![],
        };
        entries::replace(&boot, &set).unwrap();
        for (n, b) in raw {
            std::fs::write(t.path().join(layout::LOADER_ENTRIES).join(n), b).unwrap();
        }
        EntrySet::read_opt(&boot, layout::LOADER_ENTRIES)
            .unwrap()
            .unwrap()
    }

    /// a booted, b previous with its own kernel, c dead (kernel shared with a), d dead
    /// with its own kernel; tags for all four; debris everywhere.
    fn inputs(current: Option<EntrySet>) -> GcInputs {
        GcInputs {
            boot_display: "/mnt/boot".into(),
            booted: Some(id('a')),
            staged: None,
            menu: (layout::LOADER_ENTRIES, layout::LOADER_ENTRIES_STAGED),
            current,
            staged_set: None,
            other_menus: vec![],
            deployments: vec![id('a'), id('b'), id('c'), id('d')],
            deploy_names: ['a', 'b', 'c', 'd']
                .iter()
                .map(|c| c.to_string().repeat(64))
                .chain([".bootc-tmp.eeee".to_string()])
                .collect(),
            state_names: vec![
                "deploy".into(),
                "os".into(),
                "bootc.lock".into(),
                ".bootc-tmp.pristine-etc.x1".into(),
                ".bootc-tmp.merge.42".into(),
                ".hidden-user-file".into(),
            ],
            boot_names: vec![
                "loader".into(),
                "EFI".into(),
                bdir('a'),
                bdir('b'),
                bdir('d'),
                format!("{}.efi", bdir('d')),
                ".bootc-tmp.bootc_composefs-ffff".into(),
            ],
            uki_names: vec![],
            menu_names: vec![
                (
                    "loader",
                    vec![
                        "entries".into(),
                        "loader.conf".into(),
                        ".bootc-tmp.entries.staged".into(),
                    ],
                ),
                (
                    "grub2",
                    vec!["grub.cfg".into(), ".bootc-tmp.user.cfg.staged".into()],
                ),
            ],
            tags: ['a', 'b', 'c', 'd']
                .iter()
                .map(|c| format!("{DEPLOYMENT_TAG_PREFIX}{}", c.to_string().repeat(64)))
                .chain(["someone-elses-tag".to_string()])
                .collect(),
        }
    }

    fn hexes(cs: &[char]) -> Vec<String> {
        cs.iter().map(|c| c.to_string().repeat(64)).collect()
    }

    fn tags(cs: &[char]) -> Vec<String> {
        hexes(cs)
            .into_iter()
            .map(|h| format!("{DEPLOYMENT_TAG_PREFIX}{h}"))
            .collect()
    }

    #[test]
    fn removes_exactly_the_dead_and_the_leftovers() {
        let set = read_set(
            &[entry('a', 'a'), entry('b', 'b')],
            &[("memtest.conf", b"title m\nefi /memtest.efi\n")],
        );
        let p = plan(&inputs(Some(set))).unwrap();
        assert_eq!(p.deployments, hexes(&['c', 'd']));
        assert_eq!(p.boot_dirs, vec![bdir('d')]);
        assert_eq!(p.tags, tags(&['c', 'd']));
        assert!(p.warnings.is_empty() && p.kept.is_empty());
        let mut debris: Vec<String> = p.debris.iter().map(|(pl, n)| pl.display(n)).collect();
        debris.sort();
        assert_eq!(
            debris,
            vec![
                "boot:.bootc-tmp.bootc_composefs-ffff",
                "boot:grub2/.bootc-tmp.user.cfg.staged",
                "boot:loader/.bootc-tmp.entries.staged",
                "state/.bootc-tmp.merge.42",
                "state/.bootc-tmp.pristine-etc.x1",
                "state/deploy/.bootc-tmp.eeee",
            ]
        );
    }

    #[test]
    fn staged_set_and_marker_keep_their_deployments() {
        let mut i = inputs(Some(read_set(&[entry('a', 'a')], &[])));
        i.staged = Some(id('c'));
        i.staged_set = Some(read_set(&[entry('c', 'a'), entry('a', 'a')], &[]));
        let p = plan(&i).unwrap();
        assert_eq!(p.deployments, hexes(&['b', 'd']));
        assert_eq!(p.boot_dirs, vec![bdir('b'), bdir('d')]);
    }

    /// Issue 8 item 5: an unparsable default entry keeps what it names.
    #[test]
    fn an_unparsable_entry_keeps_what_it_names() {
        let b = entry('b', 'b');
        // The digest in upper case for good measure, and a non-UTF-8 byte in the title.
        let mut bad = b
            .render()
            .replace(&"b".repeat(64), &"B".repeat(64))
            .into_bytes();
        bad.insert("title ".len(), 0xff);
        let name = format!("{}.conf", b.file_stem);
        let set = read_set(&[entry('a', 'a')], &[(&name, &bad)]);
        assert_eq!(set.unparsed_ours().count(), 1);
        let p = plan(&inputs(Some(set))).unwrap();
        assert_eq!(p.deployments, hexes(&['c', 'd']), "b is kept");
        assert_eq!(p.boot_dirs, vec![bdir('d')]);
        assert_eq!(p.tags, tags(&['c', 'd']));
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains(&format!(
                "loader/entries: {name} cannot be parsed (it is not UTF-8 text)"
            )) && p.warnings[0].contains(&format!("deployment {}", "b".repeat(64)))
                && p.warnings[0].contains(&format!("boot directory {}", bdir('b'))),
            "{}",
            p.warnings[0]
        );
        assert!(p
            .kept
            .contains_key(&format!("deployment {}", "b".repeat(64))));
    }

    #[test]
    fn an_entry_without_linux_keeps_its_deployment() {
        let name = format!("{}.conf", bdir('d'));
        let text = format!("title x\noptions composefs=sha256:{}\n", "d".repeat(64));
        let set = read_set(&[entry('a', 'a')], &[(&name, text.as_bytes())]);
        let p = plan(&inputs(Some(set))).unwrap();
        assert_eq!(p.deployments, hexes(&['b', 'c']));
        // d's own boot directory is kept: the entry's name names it.
        assert_eq!(p.boot_dirs, vec![bdir('b')]);
        assert!(p.warnings[0].contains("no linux line"), "{}", p.warnings[0]);
    }

    #[test]
    fn junk_named_like_ours_that_names_nothing_keeps_nothing_but_says_so() {
        let set = read_set(
            &[entry('a', 'a'), entry('b', 'b')],
            &[("bootc_composefs-junk.conf", b"\x00\x01\x02")],
        );
        let p = plan(&inputs(Some(set))).unwrap();
        assert_eq!(p.deployments, hexes(&['c', 'd']));
        assert!(
            p.warnings[0].contains("names no deployment"),
            "{}",
            p.warnings[0]
        );
    }

    #[test]
    fn an_unreadable_entry_keeps_everything() {
        let mut set = read_set(&[entry('a', 'a')], &[]);
        set.foreign.push(entries::RawEntry {
            name: format!("{}.conf", bdir('b')).into(),
            content: entries::RawContent::Unusable("cannot read it: I/O error".into()),
            problem: Some("cannot read it: I/O error".into()),
        });
        let p = plan(&inputs(Some(set))).unwrap();
        assert!(p.deployments.is_empty() && p.boot_dirs.is_empty() && p.tags.is_empty());
        assert_eq!(p.debris.len(), 6, "leftovers are still ours to remove");
        assert!(p.warnings[0].contains("keeping every deployment"));
    }

    /// Issue 8 item 6.
    #[test]
    fn no_entries_where_entries_are_expected_is_refused() {
        let e = plan(&inputs(None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no boot entries in /mnt/boot/loader/entries: is the ESP mounted at /mnt/boot? nothing removed"
        );
        let only_foreign = read_set(&[], &[("other.conf", b"title o\nlinux /x\n")]);
        let e = plan(&inputs(Some(only_foreign))).unwrap_err();
        assert_eq!(
            e,
            GcRefused::NoOurEntries {
                boot: "/mnt/boot".into(),
                menu: layout::LOADER_ENTRIES,
                deployments: 4
            }
        );
        assert!(e.to_string().contains("nothing removed"));
        // With no deployment at all, an empty directory is no contradiction.
        let mut i = inputs(Some(EntrySet::default()));
        i.deployments.clear();
        assert!(plan(&i).is_ok());
    }

    /// A boot directory named after a dead deployment that a live entry boots from
    /// (kernels are shared by content, whatever the directory's name) is kept.
    #[test]
    fn keeps_a_boot_directory_a_live_entry_uses_whatever_its_name() {
        let set = read_set(&[entry('a', 'd'), entry('b', 'b')], &[]);
        let p = plan(&inputs(Some(set))).unwrap();
        assert_eq!(p.deployments, hexes(&['c', 'd']));
        assert!(p.boot_dirs.is_empty(), "{:?}", p.boot_dirs);
    }

    #[test]
    fn ukis_go_with_their_deployment_never_while_an_entry_names_them() {
        let uki = |c: char| format!("{}{}.efi", layout::BOOT_PREFIX, c.to_string().repeat(64));
        let extra = |c: char| format!("{}.extra.d", uki(c));
        // a (booted) boots its UKI from an efi entry; b is a kernel entry.
        let mut a = entry('a', 'a');
        a.linux = String::new();
        a.initrd = vec![];
        a.options = String::new();
        a.efi = Some(crate::boot::entries::uki_path(&id('a')));
        // An unparsable entry of ours naming d's UKI keeps it.
        let junk = format!("{}.conf", bdir('e'));
        let set = read_set(
            &[a, entry('b', 'b')],
            &[(
                junk.as_str(),
                format!("efi /EFI/Linux/bootc/{}\n", uki('d')).as_bytes(),
            )],
        );
        assert_eq!(
            set.ours[0].deployment,
            Some(id('a')),
            "an efi entry boots the deployment its name names"
        );
        let mut i = inputs(Some(set));
        i.uki_names = vec![
            uki('a'),
            extra('a'),
            uki('b'),
            uki('c'),
            extra('c'),
            uki('d'),
            "other-os.efi".into(),
        ];
        let p = plan(&i).unwrap();
        // b is live (an entry boots it) even though its entry boots a kernel.
        assert_eq!(p.ukis, vec![uki('c'), extra('c')]);
        assert!(p.kept.keys().any(|k| k.contains(&uki('d'))), "{:?}", p.kept);
    }
}
