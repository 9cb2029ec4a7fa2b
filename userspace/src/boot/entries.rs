//! The ordered set of boot entries, and how it changes atomically.
//!
//! Our entries live in `loader/entries/` of the boot partition, one per deployment
//! (`bootc_composefs-<hex>.conf`). Their order is the boot order: systemd-boot sorts
//! by `sort-key` and boots the first entry, so we write `sort-key bootc-NNN` with the
//! position (000 = the default). Entries that are not ours are carried along untouched.
//!
//! A new set is never edited in place: it is written in full to
//! `loader/entries.staged/` (under a temporary name, synced, renamed), and
//! [`swap_staged`] exchanges it with `loader/entries/` in one `renameat2(RENAME_EXCHANGE)`.
//! A power cut at any instant leaves either the old complete set or the new one.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
use bootc_initramfs_setup::layout;
use rustix::fs::{openat, renameat_with, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::bls::BlsEntry;
use crate::sys::durable;

/// Prefix of the `sort-key` that encodes our boot order.
pub(crate) const SORT_KEY_PREFIX: &str = "bootc-";

/// One entry of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The parsed entry.
    pub(crate) bls: BlsEntry,
    /// The deployment it boots, if it is one of ours.
    pub(crate) deployment: Option<DeploymentId>,
    /// Whether its `composefs=` argument allows booting without fs-verity.
    pub(crate) insecure: bool,
}

impl Entry {
    /// Wraps a parsed BLS entry.
    pub(crate) fn new(bls: BlsEntry) -> Entry {
        let karg = ComposefsKarg::from_cmdline(&bls.options).ok();
        let ours = bls.file_stem.starts_with(layout::BOOT_PREFIX);
        Entry {
            deployment: karg.as_ref().filter(|_| ours).map(|k| k.id.clone()),
            insecure: karg.map(|k| k.insecure).unwrap_or(false),
            bls,
        }
    }
}

/// An ordered entry set: boot order first, foreign entries last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntrySet {
    /// Our entries, the default first.
    pub(crate) ours: Vec<Entry>,
    /// Entries we did not write, kept as they are.
    pub(crate) foreign: Vec<BlsEntry>,
}

impl EntrySet {
    /// The deployments, in boot order.
    pub(crate) fn deployments(&self) -> Vec<DeploymentId> {
        self.ours
            .iter()
            .filter_map(|e| e.deployment.clone())
            .collect()
    }

    /// The entry of `id`, if any.
    pub(crate) fn get(&self, id: &DeploymentId) -> Option<&Entry> {
        self.ours.iter().find(|e| e.deployment.as_ref() == Some(id))
    }

    /// The default (first) deployment.
    pub(crate) fn default_deployment(&self) -> Option<&DeploymentId> {
        self.ours.first().and_then(|e| e.deployment.as_ref())
    }

    /// Reads `dir` (relative to the boot partition). A missing directory is an empty
    /// set; an entry that cannot be parsed is skipped with a warning, never fatal.
    pub(crate) fn read(boot: impl AsFd, dir: &str) -> Result<EntrySet> {
        let fd = match openat(
            &boot,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(EntrySet::default()),
            Err(e) => return Err(e).with_context(|| format!("opening {dir}")),
        };
        let mut set = EntrySet::default();
        let mut rd = rustix::fs::Dir::read_from(&fd).with_context(|| format!("reading {dir}"))?;
        let mut parsed = vec![];
        while let Some(ent) = rd.read() {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".conf") else {
                continue;
            };
            let text = match read_text(&fd, &name) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("skipping {dir}/{name}: {e:#}");
                    continue;
                }
            };
            match BlsEntry::parse(stem, &text) {
                Ok(b) => parsed.push(b),
                Err(e) => tracing::warn!("skipping {dir}/{name}: {e:#}"),
            }
        }
        // Boot order: sort-key, then file name (what systemd-boot does for equal keys
        // is version-based; ours always have distinct keys).
        parsed.sort_by(|a, b| {
            (a.sort_key.as_deref().unwrap_or("~"), &a.file_stem)
                .cmp(&(b.sort_key.as_deref().unwrap_or("~"), &b.file_stem))
        });
        for b in parsed {
            if b.file_stem.starts_with(layout::BOOT_PREFIX) {
                set.ours.push(Entry::new(b));
            } else {
                set.foreign.push(b);
            }
        }
        Ok(set)
    }

    /// The entries to write: ours with sort keys from their position, then the rest.
    pub(crate) fn render(&self) -> Vec<BlsEntry> {
        let mut out: Vec<BlsEntry> = self
            .ours
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut b = e.bls.clone();
                b.sort_key = Some(sort_key(i));
                b
            })
            .collect();
        out.extend(self.foreign.iter().cloned());
        out
    }
}

fn read_text(dir: &OwnedFd, name: &str) -> Result<String> {
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    Ok(std::io::read_to_string(std::fs::File::from(fd))?)
}

/// The set that boots now (`loader/entries`).
pub(crate) fn read_current(boot: impl AsFd) -> Result<EntrySet> {
    EntrySet::read(boot, layout::LOADER_ENTRIES)
}

/// The staged set (`loader/entries.staged`), if one is waiting for finalize.
pub(crate) fn read_staged(boot: impl AsFd) -> Result<Option<EntrySet>> {
    match rustix::fs::statat(
        &boot,
        layout::LOADER_ENTRIES_STAGED,
        rustix::fs::AtFlags::empty(),
    ) {
        Ok(_) => Ok(Some(EntrySet::read(boot, layout::LOADER_ENTRIES_STAGED)?)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).context("checking for staged boot entries"),
    }
}

/// Writes `set` as the complete `loader/entries.staged/`, replacing any earlier one.
pub(crate) fn write_staged(boot: impl AsFd, set: &EntrySet) -> Result<()> {
    let loader = durable::ensure_dir_all(&boot, loader_dir(), 0o755)?;
    let staged = name_of(layout::LOADER_ENTRIES_STAGED);
    let tmp = durable::tmp_name(staged);
    durable::remove_all(&loader, &tmp)?;
    let dir = durable::ensure_dir(&loader, tmp.as_str(), 0o755)?;
    for e in set.render() {
        durable::write_file(&dir, &e.file_name(), e.render().as_bytes(), 0o644)
            .with_context(|| format!("writing loader/{tmp}/{}", e.file_name()))?;
    }
    durable::fsync_dir(&dir)?;
    durable::remove_all(&loader, staged)?;
    durable::rename_into_place(&loader, &tmp, staged)?;
    durable::fsync_dir(&loader)?;
    Ok(())
}

/// Drops a staged set, if any.
pub(crate) fn discard_staged(boot: impl AsFd) -> Result<bool> {
    let loader = match durable::open_dir(&boot, loader_dir()) {
        Ok(l) => l,
        Err(_) => return Ok(false),
    };
    let staged = name_of(layout::LOADER_ENTRIES_STAGED);
    let existed = rustix::fs::statat(&loader, staged, rustix::fs::AtFlags::empty()).is_ok();
    durable::remove_all(&loader, staged)?;
    durable::fsync_dir(&loader)?;
    Ok(existed)
}

/// Makes the staged set the current one with one atomic exchange, then removes the old
/// set (now under the staged name).
pub(crate) fn swap_staged(boot: impl AsFd) -> Result<()> {
    exchange_staged(&boot)?;
    discard_staged(&boot)?;
    Ok(())
}

/// Makes the staged set the current one with one atomic exchange; the old set is left
/// under the staged name (for [`discard_staged`]).
pub(crate) fn exchange_staged(boot: impl AsFd) -> Result<()> {
    let loader = durable::open_dir(&boot, loader_dir())?;
    let staged = name_of(layout::LOADER_ENTRIES_STAGED);
    let current = name_of(layout::LOADER_ENTRIES);
    match renameat_with(&loader, staged, &loader, current, RenameFlags::EXCHANGE) {
        Ok(()) => {}
        Err(Errno::NOENT) => {
            // No current set yet: a plain rename is just as atomic.
            rustix::fs::renameat(&loader, staged, &loader, current)
                .context("moving loader/entries.staged into place")?;
        }
        Err(e) => return Err(e).context("exchanging loader/entries.staged and loader/entries"),
    }
    durable::fsync_dir(&loader)?;
    Ok(())
}

/// Replaces the current set with `set` (staged, then swapped).
pub(crate) fn replace(boot: impl AsFd, set: &EntrySet) -> Result<()> {
    write_staged(&boot, set)?;
    swap_staged(&boot)
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `loader`: the directory holding both entry sets.
fn loader_dir() -> &'static str {
    layout::LOADER_ENTRIES
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or(".")
}

/// The `sort-key` of the entry at `position` in the boot order (0 boots by default).
pub(crate) fn sort_key(position: usize) -> String {
    format!("{SORT_KEY_PREFIX}{position:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hex: &str, key: Option<&str>) -> BlsEntry {
        BlsEntry {
            file_stem: format!("{}{hex}", layout::BOOT_PREFIX),
            title: "T".into(),
            version: "1".into(),
            sort_key: key.map(Into::into),
            linux: format!("/{}{hex}/vmlinuz", layout::BOOT_PREFIX),
            initrd: vec![],
            options: format!("rw composefs=?sha256:{hex}"),
        }
    }

    #[test]
    fn order_swap_and_foreign_entries() {
        let d = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, d.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut set = EntrySet::default();
        set.ours.push(Entry::new(entry(&b, None)));
        set.ours.push(Entry::new(entry(&a, None)));
        set.foreign.push(BlsEntry {
            file_stem: "other-os".into(),
            ..entry(&a, Some("zzz"))
        });
        replace(&boot, &set).unwrap();
        let back = read_current(&boot).unwrap();
        assert_eq!(
            back.deployments()
                .iter()
                .map(|i| i.hex().to_string())
                .collect::<Vec<_>>(),
            vec![b.clone(), a.clone()]
        );
        assert_eq!(back.foreign.len(), 1);
        assert!(back.ours[0].insecure);
        assert!(std::fs::read_to_string(
            d.path()
                .join(format!("loader/entries/{}{b}.conf", layout::BOOT_PREFIX))
        )
        .unwrap()
        .contains("sort-key bootc-000"));
        assert!(
            read_staged(&boot).unwrap().is_none(),
            "swap removes the old set"
        );

        // Reorder: exchange, not rewrite in place.
        let mut re = back.clone();
        re.ours.swap(0, 1);
        write_staged(&boot, &re).unwrap();
        assert_eq!(
            read_staged(&boot).unwrap().unwrap().deployments()[0].hex(),
            a
        );
        assert_eq!(
            read_current(&boot).unwrap().deployments()[0].hex(),
            b,
            "unchanged until the swap"
        );
        swap_staged(&boot).unwrap();
        assert_eq!(read_current(&boot).unwrap().deployments()[0].hex(), a);

        // A junk file does not break reading.
        std::fs::write(d.path().join("loader/entries/junk.conf"), "title x\n").unwrap();
        assert_eq!(read_current(&boot).unwrap().ours.len(), 2);
    }
}
