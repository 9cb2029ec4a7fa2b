//! The ordered set of boot entries, whatever the loader, and systemd-boot's form of it:
//! an entry directory.
//!
//! [`EntrySet`] is what every verb reads and writes through the
//! [`Bootloader`](super::Bootloader) trait: our entries in boot order, and everything
//! else carried byte for byte ([`RawEntry`]): foreign entries (another OS,
//! `memtest.conf` with an `efi` line, junk), and entries named like ours that cannot be
//! parsed (not UTF-8, no `linux` line, no `composefs=` argument, or anything that would
//! not be written back exactly as it is), which are also never renamed or reordered.
//!
//! The entry-directory form (systemd-boot, [`super::systemd_boot`]): our entries live in
//! `loader/entries/`, one per deployment (`bootc_composefs-<hex>.conf`). Their order is
//! the boot order: systemd-boot sorts by `sort-key` and boots the first entry, so we
//! write `sort-key bootc-NNN` with the position (000 = the default). Every other file in
//! the directory is carried along, whatever its name; only leftovers with bootc's
//! temporary names are dropped. A new set is never edited in place: it is written in
//! full to `loader/entries.staged/` (under a temporary name, synced, renamed), and
//! [`exchange_staged`] exchanges it with `loader/entries/` in one
//! `renameat2(RENAME_EXCHANGE)`. A power cut at any instant leaves either the old
//! complete set or the new one.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
use bootc_initramfs_setup::layout;
use rustix::fs::{openat, renameat_with, AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::bls::BlsEntry;
use crate::sys::durable;

/// Prefix of the `sort-key` that encodes our boot order.
pub(crate) const SORT_KEY_PREFIX: &str = "bootc-";

/// The `efi` path (from the boot partition root) of deployment `id`'s UKI.
pub(crate) fn uki_path(id: &DeploymentId) -> String {
    format!("/{}/{}", layout::EFI_LINUX_BOOTC, layout::uki_file_name(id))
}

/// Whether an entry named like ours (`bls.file_stem`) boots the deployment it names, as
/// every entry bootc writes does: a UKI entry (an `efi` path, nothing else) boots the UKI
/// named after its deployment ([`uki_path`]); a kernel entry has a valid `composefs=`
/// argument. `Err(why)` otherwise, in the loader's words for the line naming the UKI and
/// for the options (`efi line`/`options` in a BLS file, `chainloader line`/`linux line`
/// in GRUB's menu).
pub(crate) fn check_boots_a_deployment(
    bls: &BlsEntry,
    uki_line: &str,
    options: &str,
) -> std::result::Result<(), String> {
    let Some(efi) = &bls.efi else {
        return match ComposefsKarg::from_cmdline(&bls.options) {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("its {options} have no valid composefs= argument")),
        };
    };
    let id = bls
        .file_stem
        .strip_prefix(layout::BOOT_PREFIX)
        .and_then(|hex| DeploymentId::parse(hex).ok());
    if id.is_none_or(|id| *efi != uki_path(&id)) {
        return Err(format!(
            "its {uki_line} does not name the UKI of the deployment its name names"
        ));
    }
    if !bls.options.is_empty() || !bls.linux.is_empty() || !bls.initrd.is_empty() {
        return Err("it boots a UKI and also names a kernel, initrd or options".into());
    }
    Ok(())
}

/// One entry of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The parsed entry.
    pub(crate) bls: BlsEntry,
    /// The deployment it boots, if it is one of ours.
    pub(crate) deployment: Option<DeploymentId>,
    /// Whether its `composefs=` argument allows booting without fs-verity.
    pub(crate) insecure: bool,
    /// Its boot counter (the `+LEFT[-DONE]` of the file name), when it has one.
    pub(crate) counter: Option<BootCount>,
}

impl Entry {
    /// Wraps a parsed BLS entry (no boot counter). A kernel entry boots the deployment
    /// its `composefs=` argument names; an `efi` entry (a UKI deployment: no options,
    /// the UKI carries them) the one its file name names, if its `efi` path is that
    /// deployment's UKI ([`uki_path`]).
    pub(crate) fn new(bls: BlsEntry) -> Entry {
        let ours = bls.file_stem.starts_with(layout::BOOT_PREFIX);
        if let Some(efi) = &bls.efi {
            let id = bls
                .file_stem
                .strip_prefix(layout::BOOT_PREFIX)
                .and_then(|hex| DeploymentId::parse(hex).ok())
                .filter(|id| *efi == uki_path(id));
            return Entry {
                deployment: id,
                insecure: false,
                bls,
                counter: None,
            };
        }
        let karg = ComposefsKarg::from_cmdline(&bls.options).ok();
        Entry {
            deployment: karg.as_ref().filter(|_| ours).map(|k| k.id.clone()),
            insecure: karg.map(|k| k.insecure).unwrap_or(false),
            bls,
            counter: None,
        }
    }

    /// The entry with a boot counter.
    pub(crate) fn with_counter(mut self, counter: Option<BootCount>) -> Entry {
        self.counter = counter;
        self
    }

    /// It ran out of tries: the loader no longer boots it by default.
    pub(crate) fn failed(&self) -> bool {
        self.counter.is_some_and(|c| c.left == 0)
    }

    /// The file name in an entry directory: `<stem>[+LEFT[-DONE]].conf`.
    pub(crate) fn file_name(&self) -> String {
        match &self.counter {
            Some(c) => format!("{}{c}.conf", self.bls.file_stem),
            None => self.bls.file_name(),
        }
    }
}

/// A boot counter, as the UAPI Boot Loader Specification encodes it in an entry's file
/// name: `+LEFT` (tries left) or `+LEFT-DONE` (and tries done). systemd-boot counts a
/// try down at each boot of the entry; `systemd-bless-boot` removes the counter once the
/// boot reached `boot-complete.target`. An entry with no tries left is sorted last and
/// not booted by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BootCount {
    /// Tries left.
    pub(crate) left: u32,
    /// Tries done, when counted.
    pub(crate) done: Option<u32>,
}

impl std::fmt::Display for BootCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+{}", self.left)?;
        if let Some(d) = self.done {
            write!(f, "-{d}")?;
        }
        Ok(())
    }
}

/// Splits an entry file stem into its name and boot counter: `x+3` → (`x`, +3),
/// `x+2-1` → (`x`, +2-1); anything else after the last `+` (or no `+`) is part of the
/// name. Never panics; digits only, no sign, no overflow.
pub(crate) fn split_counter(stem: &str) -> (&str, Option<BootCount>) {
    let Some((name, suffix)) = stem.rsplit_once('+') else {
        return (stem, None);
    };
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let counter = match suffix.split_once('-') {
        Some((l, d)) => num(l).zip(num(d)).map(|(left, d)| BootCount {
            left,
            done: Some(d),
        }),
        None => num(suffix).map(|left| BootCount { left, done: None }),
    };
    match counter {
        Some(c) => (name, Some(c)),
        None => (stem, None),
    }
}

/// What a carried file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawContent {
    /// A regular file: its bytes and permission bits.
    File {
        /// The content, byte for byte.
        bytes: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link and its target.
    Symlink(OsString),
    /// Something that cannot be carried over: a directory, a device, or a file that
    /// could not be read (why, on one line). Writing a set holding one is refused.
    Unusable(String),
}

/// A file of an entry directory carried over byte for byte: a foreign entry, or one
/// named like ours that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// The file name, any bytes.
    pub(crate) name: OsString,
    /// What it holds.
    pub(crate) content: RawContent,
    /// For a file named like ours: why it could not be parsed.
    pub(crate) problem: Option<String>,
}

impl RawEntry {
    /// Whether it is named like our entries (`bootc_composefs-…`).
    pub(crate) fn named_like_ours(&self) -> bool {
        is_ours_name(&self.name)
    }

    /// The name for messages (lossy).
    pub(crate) fn display_name(&self) -> String {
        self.name.to_string_lossy().into_owned()
    }

    /// Everything this file could name: its name and its bytes (a symlink: its target),
    /// ASCII lower-cased so an upper-case hex digest is found too. `None` when the file
    /// could not be read at all, so it could name anything.
    pub(crate) fn searchable(&self) -> Option<Vec<u8>> {
        let mut out = self.name.as_bytes().to_vec();
        out.push(b'\n');
        match &self.content {
            RawContent::File { bytes, .. } => out.extend_from_slice(bytes),
            RawContent::Symlink(t) => out.extend_from_slice(t.as_bytes()),
            RawContent::Unusable(_) => return None,
        }
        out.make_ascii_lowercase();
        Some(out)
    }
}

fn is_ours_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(layout::BOOT_PREFIX.as_bytes())
}

/// An ordered entry set: boot order first, carried files last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntrySet {
    /// Our entries, the default first.
    pub(crate) ours: Vec<Entry>,
    /// Files carried byte for byte, in name order: foreign entries, and ours that
    /// cannot be parsed ([`RawEntry::named_like_ours`]).
    pub(crate) foreign: Vec<RawEntry>,
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

    /// Files named like ours that could not be parsed.
    pub(crate) fn unparsed_ours(&self) -> impl Iterator<Item = &RawEntry> {
        self.foreign.iter().filter(|r| r.named_like_ours())
    }

    /// Reads `dir` (relative to the boot partition). A missing directory is an empty
    /// set. Nothing in it is lost: what cannot be parsed as one of ours is kept as a
    /// [`RawEntry`].
    pub(crate) fn read(boot: impl AsFd, dir: &str) -> Result<EntrySet> {
        Ok(Self::read_opt(boot, dir)?.unwrap_or_default())
    }

    /// Like [`EntrySet::read`], `None` when `dir` does not exist.
    pub(crate) fn read_opt(boot: impl AsFd, dir: &str) -> Result<Option<EntrySet>> {
        let fd = match openat(
            &boot,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {dir}")),
        };
        let mut set = EntrySet::default();
        let mut names = vec![];
        {
            let mut rd =
                rustix::fs::Dir::read_from(&fd).with_context(|| format!("reading {dir}"))?;
            while let Some(ent) = rd.read() {
                let ent = ent.with_context(|| format!("reading {dir}"))?;
                let name = OsStr::from_bytes(ent.file_name().to_bytes()).to_os_string();
                if name == "." || name == ".." || durable::is_tmp_name(&name.to_string_lossy()) {
                    continue;
                }
                names.push(name);
            }
        }
        names.sort();
        let mut parsed: Vec<Entry> = vec![];
        for name in names {
            let content = read_raw(&fd, &name);
            let result = parse_ours(&name, &content).and_then(|e| match e {
                // Two files for one entry (`x.conf` and `x+3.conf`): the loader would
                // show both; only the first is taken as ours.
                Some(e) if parsed.iter().any(|p| p.bls.file_stem == e.bls.file_stem) => {
                    Err("a second file for the same entry".to_string())
                }
                other => Ok(other),
            });
            match result {
                Ok(Some(e)) => parsed.push(e),
                Ok(None) => set.foreign.push(RawEntry {
                    name,
                    content,
                    problem: None,
                }),
                Err(problem) => {
                    // Callers say what it means for them (gc: what it keeps).
                    tracing::debug!(
                        "{dir}/{}: cannot be parsed ({problem}); kept as it is",
                        name.to_string_lossy()
                    );
                    set.foreign.push(RawEntry {
                        name,
                        content,
                        problem: Some(problem),
                    });
                }
            }
        }
        // Boot order as systemd-boot sees it: entries out of tries last, then by
        // sort-key, then file name (what systemd-boot does for equal keys is
        // version-based; ours always have distinct keys).
        parsed.sort_by(|a: &Entry, b: &Entry| {
            let key = |e: &Entry| {
                (
                    e.failed(),
                    e.bls.sort_key.clone().unwrap_or_else(|| "~".into()),
                    e.bls.file_stem.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        set.ours = parsed;
        Ok(Some(set))
    }

    /// The files to write: ours with sort keys from their position, then the carried
    /// ones unchanged. Fails on a file that cannot be carried over or a name twice.
    pub(crate) fn render(&self) -> Result<Vec<(OsString, RawContent)>> {
        let mut out: Vec<(OsString, RawContent)> = self
            .ours
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut b = e.bls.clone();
                b.sort_key = Some(sort_key(i));
                super::bls::check_entry(&b)?;
                Ok((
                    OsString::from(e.file_name()),
                    RawContent::File {
                        bytes: b.render().into_bytes(),
                        mode: 0o644,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        for r in &self.foreign {
            if let RawContent::Unusable(why) = &r.content {
                bail!(
                    "{}/{} cannot be carried over ({why}); move it away to continue",
                    layout::LOADER_ENTRIES,
                    r.display_name()
                );
            }
            out.push((r.name.clone(), r.content.clone()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (n, _) in &out {
            if !seen.insert(n.clone()) {
                bail!(
                    "{}/{} would be written twice (an unparsable file has the name of a new entry); move it away to continue",
                    layout::LOADER_ENTRIES,
                    n.to_string_lossy()
                );
            }
        }
        Ok(out)
    }
}

/// [`parse_ours`] of a regular file named `name` holding `bytes`: what reading an entry
/// directory makes of it. `pub` for the fuzz targets only.
#[doc(hidden)]
pub fn parse_entry_file(
    name: &OsStr,
    bytes: &[u8],
) -> std::result::Result<Option<BlsEntry>, String> {
    parse_ours(
        name,
        &RawContent::File {
            bytes: bytes.to_vec(),
            mode: 0o644,
        },
    )
    .map(|e| e.map(|e| e.bls))
}

/// Our entry, `Ok(None)` for a foreign file, `Err(why)` for one named like ours that is
/// not a usable entry of ours.
fn parse_ours(name: &OsStr, content: &RawContent) -> std::result::Result<Option<Entry>, String> {
    if !is_ours_name(name) {
        return Ok(None);
    }
    let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".conf")) else {
        return Err("its name is not bootc_composefs-<id>[+LEFT[-DONE]].conf".into());
    };
    let (stem, counter) = split_counter(stem);
    let bytes = match content {
        RawContent::File { bytes, .. } => bytes,
        RawContent::Symlink(_) => return Err("it is a symbolic link".into()),
        RawContent::Unusable(why) => return Err(why.clone()),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    let bls = BlsEntry::parse(stem, text).map_err(|e| {
        let e = format!("{e:#}");
        // Said next to the file name already.
        e.strip_prefix(&format!("{stem}.conf: "))
            .map(str::to_string)
            .unwrap_or(e)
    })?;
    check_boots_a_deployment(&bls, "efi line", "options")?;
    // A whole-set write renders our entries anew: only an entry that renders back to
    // itself may be rewritten (control characters, for one, are written as spaces and
    // would change what it boots). Anything else is carried byte for byte.
    if BlsEntry::parse(stem, &bls.render()).ok().as_ref() != Some(&bls) {
        return Err("it holds characters bootc cannot write back (control characters)".into());
    }
    // Nor is one bootc would refuse to write (white space in a path, …).
    if let Err(e) = super::bls::check_entry(&bls) {
        return Err(format!("{e:#}"));
    }
    Ok(Some(Entry::new(bls).with_counter(counter)))
}

fn read_raw(dir: &OwnedFd, name: &OsStr) -> RawContent {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => return RawContent::Unusable(format!("cannot inspect it: {e}")),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => match rustix::fs::readlinkat(dir, name, vec![]) {
            Ok(t) => RawContent::Symlink(OsStr::from_bytes(t.as_bytes()).to_os_string()),
            Err(e) => RawContent::Unusable(format!("cannot read the link: {e}")),
        },
        FileType::RegularFile => match crate::sys::read_file_at(dir, name) {
            Ok(bytes) => RawContent::File {
                bytes,
                mode: st.st_mode & 0o7777,
            },
            Err(e) => RawContent::Unusable(format!("cannot read it: {e}")),
        },
        FileType::Directory => RawContent::Unusable("it is a directory".into()),
        _ => RawContent::Unusable("it is not a regular file".into()),
    }
}

/// Creates `name` in the fresh directory `dir` (durable once `dir` is synced).
fn write_raw(dir: &OwnedFd, name: &OsStr, content: &RawContent) -> Result<()> {
    match content {
        RawContent::File { bytes, mode } => {
            let fd = openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(*mode),
            )?;
            let mut f = std::fs::File::from(fd);
            f.write_all(bytes)?;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(*mode))?;
            f.sync_all()?;
        }
        RawContent::Symlink(target) => rustix::fs::symlinkat(target.as_os_str(), dir, name)?,
        RawContent::Unusable(why) => bail!("cannot be carried over: {why}"),
    }
    Ok(())
}

/// The set that boots now (`loader/entries`); `None` when the directory is missing.
pub(crate) fn read_current(boot: impl AsFd) -> Result<Option<EntrySet>> {
    EntrySet::read_opt(boot, layout::LOADER_ENTRIES)
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
    // Everything is checked before anything is written.
    let files = set.render()?;
    let loader = durable::ensure_dir_all(&boot, loader_dir(), 0o755)?;
    let staged = name_of(layout::LOADER_ENTRIES_STAGED);
    let tmp = durable::tmp_name(staged);
    durable::remove_all(&loader, &tmp)?;
    let dir = durable::ensure_dir(&loader, tmp.as_str(), 0o755)?;
    for (name, content) in &files {
        write_raw(&dir, name, content)
            .with_context(|| format!("writing loader/{tmp}/{}", name.to_string_lossy()))?;
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

/// Makes the staged set the current one with one atomic exchange; the old set is left
/// under the staged name (for [`discard_staged`]).
pub(crate) fn exchange_staged(boot: impl AsFd) -> Result<()> {
    let loader = durable::open_dir(&boot, loader_dir())?;
    let staged = name_of(layout::LOADER_ENTRIES_STAGED);
    let current = name_of(layout::LOADER_ENTRIES);
    crate::sys::fault::durable_step("exchange loader/entries");
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

/// Replaces the current set with `set`: staged, exchanged, the old set removed.
#[cfg(test)]
pub(crate) fn replace(boot: impl AsFd, set: &EntrySet) -> Result<()> {
    write_staged(&boot, set)?;
    exchange_staged(&boot)?;
    discard_staged(&boot)?;
    Ok(())
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `loader`: the directory holding both entry sets.
pub(crate) fn loader_dir() -> &'static str {
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
            efi: None,
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
    fn an_entry_that_does_not_render_back_to_itself_is_carried_not_rewritten() {
        let hex = "ab".repeat(32);
        let name = format!("{}{hex}.conf", layout::BOOT_PREFIX);
        let good =
            format!("title T\nversion 1\nlinux /x/vmlinuz\noptions rw composefs=sha256:{hex}\n");
        assert!(parse_entry_file(OsStr::new(&name), good.as_bytes())
            .unwrap()
            .is_some());
        // Found by the bls_entry fuzz target: a NUL in the options is rendered as a
        // space, which would turn "composefs=\0…" into a second composefs= argument.
        let bad = format!(
            "title T\nversion 1\nlinux /x/vmlinuz\noptions rw x=\u{0}composefs= composefs=sha256:{hex}\n"
        );
        let why = parse_entry_file(OsStr::new(&name), bad.as_bytes()).unwrap_err();
        assert!(why.contains("cannot write back"), "{why}");
    }

    #[test]
    fn order_swap_and_foreign_entries() {
        let d = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, d.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut set = EntrySet::default();
        set.ours.push(Entry::new(entry(&b, None)));
        set.ours.push(Entry::new(entry(&a, None)));
        set.foreign.push(RawEntry {
            name: "other-os.conf".into(),
            content: RawContent::File {
                bytes: entry(&a, Some("zzz")).render().into_bytes(),
                mode: 0o644,
            },
            problem: None,
        });
        replace(&boot, &set).unwrap();
        let back = read_current(&boot).unwrap().unwrap();
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
            read_current(&boot).unwrap().unwrap().deployments()[0].hex(),
            b,
            "unchanged until the swap"
        );
        exchange_staged(&boot).unwrap();
        discard_staged(&boot).unwrap();
        assert_eq!(
            read_current(&boot).unwrap().unwrap().deployments()[0].hex(),
            a
        );

        // A junk file does not break reading.
        std::fs::write(d.path().join("loader/entries/junk.conf"), "title x\n").unwrap();
        assert_eq!(read_current(&boot).unwrap().unwrap().ours.len(), 2);
    }

    fn mode_of(p: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Every file that is not a parsable entry of ours survives a rewrite of the set
    /// byte for byte, under its name, with its mode; our unparsable ones too.
    #[test]
    fn foreign_and_unparsable_files_are_carried_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, d.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut set = EntrySet::default();
        set.ours.push(Entry::new(entry(&a, None)));
        set.ours.push(Entry::new(entry(&b, None)));
        replace(&boot, &set).unwrap();
        let dir = d.path().join(layout::LOADER_ENTRIES);
        let odd_name = std::ffi::OsStr::from_bytes(b"junk-\xff.conf");
        let files: Vec<(std::ffi::OsString, Vec<u8>, u32)> = vec![
            (
                "memtest.conf".into(),
                b"title Memtest86+\nefi /memtest.efi\n".to_vec(),
                0o644,
            ),
            (
                "windows.conf".into(),
                b"title Windows\r\nefi /EFI/Microsoft/Boot/bootmgfw.efi\r\n".to_vec(),
                0o600,
            ),
            (odd_name.into(), b"\x00\x01 not an entry".to_vec(), 0o644),
            ("README".into(), b"notes".to_vec(), 0o444),
            (
                format!("{}{}.conf", layout::BOOT_PREFIX, "c".repeat(64)).into(),
                format!("title caf\u{e9}\nsort-key bootc-000\nlinux /{p}c/vmlinuz\noptions composefs=sha256:{c}\n",
                    p = layout::BOOT_PREFIX, c = "c".repeat(64))
                .into_bytes()
                .into_iter()
                .map(|x| if x == 0xa9 { 0xff } else { x })
                .collect(),
                0o644,
            ),
            (
                format!("{}{}.conf", layout::BOOT_PREFIX, "d".repeat(64)).into(),
                format!("title no linux\noptions composefs=sha256:{}\n", "d".repeat(64)).into_bytes(),
                0o644,
            ),
        ];
        for (n, bytes, mode) in &files {
            let p = dir.join(n);
            std::fs::write(&p, bytes).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        std::os::unix::fs::symlink("memtest.conf", dir.join("alias.conf")).unwrap();

        let back = read_current(&boot).unwrap().unwrap();
        assert_eq!(back.ours.len(), 2);
        assert_eq!(back.unparsed_ours().count(), 2);
        assert_eq!(back.foreign.len(), files.len() + 1);
        // A rollback-style rewrite: swap our two, write the whole set.
        let mut re = back.clone();
        re.ours.swap(0, 1);
        replace(&boot, &re).map_err(|e| format!("{e:#}")).unwrap();
        for (n, bytes, mode) in &files {
            let p = dir.join(n);
            assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{n:?} byte for byte");
            assert_eq!(mode_of(&p), *mode, "{n:?} keeps its mode");
        }
        assert_eq!(
            std::fs::read_link(dir.join("alias.conf")).unwrap(),
            std::path::Path::new("memtest.conf")
        );
        assert_eq!(
            read_current(&boot).unwrap().unwrap().deployments()[0].hex(),
            b
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files.len() + 3);
    }

    /// The UAPI boot counter grammar: `+LEFT` and `+LEFT-DONE` are counters, anything
    /// else after a `+` is part of the name.
    #[test]
    fn counter_grammar() {
        let c = |left, done| Some(BootCount { left, done });
        for (stem, name, counter) in [
            ("x+3", "x", c(3, None)),
            ("x+2-1", "x", c(2, Some(1))),
            ("x+0-3", "x", c(0, Some(3))),
            ("x+0", "x", c(0, None)),
            ("a+b+1", "a+b", c(1, None)),
            ("x", "x", None),
            ("x+", "x+", None),
            ("x+-1", "x+-1", None),
            ("x+1-", "x+1-", None),
            ("x+1-2-3", "x+1-2-3", None),
            ("x+a", "x+a", None),
            ("x+ 1", "x+ 1", None),
            ("x+99999999999", "x+99999999999", None),
            ("x+\u{0661}", "x+\u{0661}", None),
        ] {
            assert_eq!(split_counter(stem), (name, counter), "{stem}");
        }
        assert_eq!(c(2, Some(1)).unwrap().to_string(), "+2-1");
        assert_eq!(c(3, None).unwrap().to_string(), "+3");
    }

    /// Counted entries are read as the deployment they boot, keep their counter
    /// through a rewrite, and one out of tries sorts last (as systemd-boot boots).
    #[test]
    fn counted_entries_are_read_written_and_ordered_like_the_loader() {
        let d = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, d.path()).unwrap();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let count = |left, done| Some(BootCount { left, done });
        let mut set = EntrySet::default();
        set.ours
            .push(Entry::new(entry(&a, None)).with_counter(count(0, Some(3))));
        set.ours
            .push(Entry::new(entry(&b, None)).with_counter(count(2, Some(1))));
        set.ours.push(Entry::new(entry(&c, None)));
        replace(&boot, &set).unwrap();
        let dir = d.path().join(layout::LOADER_ENTRIES);
        for n in [
            format!("{}{a}+0-3.conf", layout::BOOT_PREFIX),
            format!("{}{b}+2-1.conf", layout::BOOT_PREFIX),
            format!("{}{c}.conf", layout::BOOT_PREFIX),
        ] {
            assert!(dir.join(&n).is_file(), "{n}");
        }
        let back = read_current(&boot).unwrap().unwrap();
        let hexes: Vec<String> = back.deployments().iter().map(|i| i.hex().into()).collect();
        assert_eq!(
            hexes,
            vec![b.clone(), c.clone(), a.clone()],
            "out of tries: last"
        );
        assert!(back.ours[2].failed() && !back.ours[0].failed());
        assert_eq!(back.ours[0].counter, count(2, Some(1)));
        assert_eq!(back.ours[1].counter, None);
        // A second file for the same entry is carried, not taken as ours twice.
        std::fs::write(
            dir.join(format!("{}{b}.conf", layout::BOOT_PREFIX)),
            entry(&b, None).render(),
        )
        .unwrap();
        let back = read_current(&boot).unwrap().unwrap();
        assert_eq!(back.ours.len(), 3);
        assert_eq!(back.unparsed_ours().count(), 1);
    }

    #[test]
    fn a_set_that_cannot_be_carried_is_not_written() {
        let d = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, d.path()).unwrap();
        let a = "a".repeat(64);
        let mut set = EntrySet::default();
        set.ours.push(Entry::new(entry(&a, None)));
        replace(&boot, &set).unwrap();
        let dir = d.path().join(layout::LOADER_ENTRIES);
        std::fs::create_dir(dir.join("subdir")).unwrap();
        let before = std::fs::read(dir.join(format!("{}{a}.conf", layout::BOOT_PREFIX))).unwrap();
        let back = read_current(&boot).unwrap().unwrap();
        let err = replace(&boot, &back).unwrap_err().to_string();
        assert!(
            err.contains("subdir cannot be carried over (it is a directory)"),
            "{err}"
        );
        assert!(dir.join("subdir").is_dir());
        assert_eq!(
            std::fs::read(dir.join(format!("{}{a}.conf", layout::BOOT_PREFIX))).unwrap(),
            before
        );
        assert!(!d.path().join(layout::LOADER_ENTRIES_STAGED).exists());
    }

    #[test]
    fn efi_entries_name_their_deployment_and_round_trip() {
        let hex = "cd".repeat(32);
        let id = DeploymentId::parse(&hex).unwrap();
        let stem = format!("{}{hex}", layout::BOOT_PREFIX);
        let text = format!("title T\nversion 1\nefi {}\n", uki_path(&id));
        let e = parse_entry_file(OsStr::new(&format!("{stem}.conf")), text.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(e.render(), text);
        assert_eq!(Entry::new(e).deployment, Some(id));
        // An efi line naming another file, or options next to it: not ours to rewrite.
        let other = "title T\nversion 1\nefi /EFI/Linux/other.efi\n";
        let err = parse_entry_file(OsStr::new(&format!("{stem}.conf")), other.as_bytes());
        assert!(err.unwrap_err().contains("efi line"));
        let both = format!("{text}options rw\n");
        let err = parse_entry_file(OsStr::new(&format!("{stem}.conf")), both.as_bytes());
        assert!(err
            .unwrap_err()
            .contains("also names a kernel, initrd or options"));
    }
}
