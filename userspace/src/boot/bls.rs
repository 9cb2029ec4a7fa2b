//! Boot Loader Specification Type #1 entries (UAPI.1): the entry text, the kernel and
//! initrd copied from the image, the kernel arguments.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;

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

/// One Type #1 entry. (`pub` for the fuzz targets only.)
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsEntry {
    /// File stem: the entry is `loader/entries/<file_stem>.conf`.
    pub(crate) file_stem: String,
    /// `title`.
    pub(crate) title: String,
    /// `version`.
    pub(crate) version: String,
    /// `sort-key`.
    pub(crate) sort_key: Option<String>,
    /// `linux`, relative to the boot partition root (empty in an `efi` entry).
    pub(crate) linux: String,
    /// `efi`: the EFI program it runs instead of a kernel, relative to the boot
    /// partition root: a UKI deployment's UKI. Such an entry has no `linux`, `initrd`
    /// or `options` (the UKI's own `.cmdline` is what it boots with).
    pub(crate) efi: Option<String>,
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

    /// The entry text: one line per key. Values are expected to pass [`check_entry`];
    /// as a last defence a control character still present is written as a space, so
    /// no value can ever add a line.
    #[doc(hidden)]
    pub fn render(&self) -> String {
        let v = |s: &str| s.replace(|c: char| c.is_control(), " ");
        let mut s = format!("title {}\nversion {}\n", v(&self.title), v(&self.version));
        if let Some(k) = &self.sort_key {
            s.push_str(&format!("sort-key {}\n", v(k)));
        }
        if let Some(efi) = &self.efi {
            // Options would replace the UKI's sealed command line when Secure Boot is
            // off (systemd-stub): none are written.
            s.push_str(&format!("efi {}\n", v(efi)));
            return s;
        }
        s.push_str(&format!("linux {}\n", v(&self.linux)));
        for i in &self.initrd {
            s.push_str(&format!("initrd {}\n", v(i)));
        }
        s.push_str(&format!("options {}\n", v(&self.options)));
        s
    }

    /// Parses entry text (unknown keys are ignored; `linux` or `efi` is required).
    #[doc(hidden)]
    pub fn parse(file_stem: &str, text: &str) -> Result<BlsEntry> {
        let mut e = BlsEntry {
            efi: None,
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
                "efi" => e.efi = Some(v),
                "initrd" => e.initrd.push(v),
                "options" if !v.is_empty() => {
                    if !e.options.is_empty() {
                        e.options.push(' ');
                    }
                    e.options.push_str(&v)
                }
                _ => {}
            }
        }
        if e.linux.is_empty() && e.efi.as_deref().is_none_or(str::is_empty) {
            bail!("{file_stem}.conf: BLS entry has no linux line (and no efi line)");
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
            BootEntry::UsrLibModulesVmLinuz(k) => found.push(KernelDir {
                kver: k.kver.to_string(),
                vmlinuz: k.vmlinuz,
                initrd: k.initramfs,
            }),
            BootEntry::Type2(_) => uki = true,
            _ => {}
        }
    }
    let k = select_kernel(found, uki)?;
    Ok(Kernel {
        kver: k.kver,
        vmlinuz: k.vmlinuz,
        initrd: k.initrd.expect("select_kernel checks the initrd"),
    })
}

/// A kernel directory `/usr/lib/modules/<kver>/` holding `vmlinuz`, as found in an image
/// (a composefs tree at install and staging, a directory for `bootc container lint`).
pub(crate) struct KernelDir<T> {
    /// The directory's name.
    pub(crate) kver: String,
    /// Its `vmlinuz`.
    pub(crate) vmlinuz: T,
    /// Its `initramfs.img`, if any.
    pub(crate) initrd: Option<T>,
}

/// The one rule for which kernel an image boots: exactly one kernel directory, with an
/// acceptable name ([`check_kver`]) and an initramfs; `uki` says whether the image has
/// a UKI (Type #2), only to explain an image without a kernel directory. The returned
/// directory's `initrd` is `Some`.
pub(crate) fn select_kernel<T>(found: Vec<KernelDir<T>>, uki: bool) -> Result<KernelDir<T>> {
    if found.len() > 1 {
        let mut kvers: Vec<_> = found.iter().map(|k| k.kver.as_str()).collect();
        kvers.sort();
        bail!(
            "the image has more than one kernel ({}); expected exactly one under /usr/lib/modules",
            crate::sys::cmd::cap(&kvers.join(", "), 200)
        );
    }
    match found.into_iter().next() {
        Some(k) => {
            check_kver(&k.kver)?;
            if k.initrd.is_none() {
                bail!(
                    "the image's kernel {} has no initramfs: expected /usr/lib/modules/{}/initramfs.img",
                    k.kver,
                    k.kver
                );
            }
            Ok(k)
        }
        None if uki => {
            bail!("the image has no kernel, and its .efi files under /boot/EFI/Linux or /usr/lib/modules/<kver> are addons or in subdirectories: expected one UKI directly in one of those directories")
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
    let title = info.get_pretty_name().map(|t| display_value(&t));
    Ok(OsInfo {
        title: title
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Linux".into()),
        version: info
            .get_version()
            .map(|v| display_value(&v))
            .filter(|v| !v.is_empty()),
    })
}

/// A `kargs.d` file. Unknown keys are refused, as upstream bootc does: a typo such as
/// `match-architecture` would otherwise silently apply the arguments everywhere.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
        out.extend(kargs_file(&path, &read(repo, f)?)?);
    }
    Ok(out)
}

/// The kernel arguments of one `kargs.d` file at `path` (named in errors) holding
/// `bytes`, for this architecture: `kargs = [...]` TOML with no other key than
/// `match-architectures`, each argument checked by [`check_karg`] whatever the
/// architecture. Pure, so it can be fuzzed.
#[doc(hidden)]
pub fn kargs_file(path: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(bytes).with_context(|| format!("{path}: not UTF-8"))?;
    let parsed = parse_kargs_file(path, text)?;
    // Checked whatever the architecture: the image is wrong either way.
    for k in &parsed.kargs {
        check_karg(k, path)?;
    }
    if let Some(archs) = &parsed.match_architectures {
        if !archs.iter().any(|a| a == std::env::consts::ARCH) {
            return Ok(vec![]);
        }
    }
    Ok(parsed.kargs)
}

/// Parses one `kargs.d` file (`path` names it in errors). toml's own message spans
/// several lines (a snippet of the file): say where, and what, on one.
fn parse_kargs_file(path: &str, text: &str) -> Result<KargsFile> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|r| format!(" at line {}", text[..r.start].matches('\n').count() + 1))
            .unwrap_or_default();
        let msg = crate::sys::cmd::cap(&bootc_initramfs_setup::one_line(e.message()), 120);
        // serde says "unknown field `k`, expected …": name the key plainly.
        match msg
            .strip_prefix("unknown field ")
            .and_then(|m| m.split(',').next())
        {
            Some(key) => anyhow::anyhow!(
                "{path}: unknown key {key}{line}: expected kargs = [\"…\"] and optionally match-architectures = [\"…\"]"
            ),
            None => anyhow::anyhow!(
                "{path}: not a kargs file{line} ({msg}): expected kargs = [\"…\"]"
            ),
        }
    })
}

/// One kernel argument from `from` (`--karg` or a `kargs.d` file): refused when it sets
/// the composefs argument (bootc writes that itself; the booter refuses two that
/// disagree) or is empty.
pub(crate) fn check_karg(k: &str, from: &str) -> Result<()> {
    use bootc_initramfs_setup::cmdline::{tokenize, KARG, KARG_DIGEST};
    // Every argument it becomes on the command line: `"quiet composefs=…"` is two.
    let names = tokenize(k)
        .into_iter()
        .map(|t| t.split('=').next().unwrap_or_default().to_string());
    if names.into_iter().any(|n| n == KARG || n == KARG_DIGEST) {
        bail!(
            "kernel argument {} from {from}: bootc sets {KARG}= itself",
            show(k)
        );
    }
    if k.trim().is_empty() {
        bail!("empty kernel argument from {from}");
    }
    // An open quote would join the arguments after it (the composefs one last) into it.
    if k.matches('"').count() % 2 == 1 {
        bail!(
            "kernel argument {} from {from}: it has an unbalanced double quote",
            show(k)
        );
    }
    if let Some(why) = line_value_problem(k) {
        bail!("kernel argument {} from {from}: {why}", show(k));
    }
    Ok(())
}

/// The kernel arguments of an install, by where they come from.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct InstallKargs<'a> {
    /// `kargs` of the image's install configuration (`/usr/lib/bootc/install/*.toml`).
    pub(crate) config: &'a [String],
    /// The image's `kargs.d`.
    pub(crate) image: &'a [String],
    /// Arguments to remove (`karg-deletes` of the configuration, then `--karg-delete`):
    /// a name removes every argument of that name, `name=value` only that exact one.
    pub(crate) delete: &'a [String],
    /// The user's `--karg`s.
    pub(crate) user: &'a [String],
}

/// The `options` line of an install, in upstream bootc's order: `root=SPEC rw`, the
/// install configuration's `kargs`, the image's `kargs.d`; then the deletions are applied
/// to all of those; then the user's `--karg`s (so a `--karg` is never deleted and comes
/// after what it may override); then the composefs argument. Nobody may set the composefs
/// argument themselves: the booter refuses two that disagree. Without deletions every
/// string is written as given; with some, the arguments are split as the kernel splits
/// them and joined again (quoting a value with white space).
pub(crate) fn install_options(
    root_spec: &str,
    k: &InstallKargs<'_>,
    composefs: &bootc_initramfs_setup::cmdline::ComposefsKarg,
) -> Result<String> {
    use bootc_initramfs_setup::cmdline::{join, tokenize};
    let mut out = vec![format!("root={root_spec}"), "rw".to_string()];
    for (from, kargs) in [
        ("the install configuration", k.config),
        (KARGS_D, k.image),
        ("--karg", k.user),
    ] {
        for a in kargs {
            check_karg(a, from)?;
        }
    }
    out.extend(k.config.iter().cloned());
    out.extend(k.image.iter().cloned());
    if !k.delete.is_empty() {
        let mut args: Vec<String> = out.iter().flat_map(|a| tokenize(a)).collect();
        args.retain(|a| !k.delete.iter().any(|d| deletes(d, a)));
        out = vec![join(&args)];
    }
    out.extend(k.user.iter().cloned());
    out.push(composefs.to_string());
    let line = out.join(" ");
    check_options_length(&line)?;
    Ok(line)
}

/// Whether the deletion `d` (`name` or `name=value`) removes the argument `arg`.
fn deletes(d: &str, arg: &str) -> bool {
    if d.contains('=') {
        d == arg
    } else {
        arg.split('=').next() == Some(d)
    }
}

/// [`install_options`] with only `--karg`s and `kargs.d`.
#[cfg(test)]
pub(crate) fn options(
    root_spec: &str,
    user: &[String],
    image: &[String],
    composefs: &bootc_initramfs_setup::cmdline::ComposefsKarg,
) -> Result<String> {
    install_options(
        root_spec,
        &InstallKargs {
            user,
            image,
            ..Default::default()
        },
        composefs,
    )
}

/// The `options` line of a deployment staged by `upgrade`/`switch`: the booted entry's
/// arguments (`booted_options`), minus those the booted image's `kargs.d` added
/// (`old_image`), plus those the new image's `kargs.d` adds (`new_image`), then
/// `composefs` last. So the user's `--karg`s and later edits survive, and an argument
/// the new image no longer ships goes away.
///
/// - Every string is split into arguments as the kernel splits them
///   ([`tokenize`](bootc_initramfs_setup::cmdline::tokenize)): `foo="a b"` is the one
///   argument `foo=a b`, a `kargs.d` entry `"x y"` is two. Arguments compare equal
///   when these split forms are equal.
/// - The booted `composefs=` and `composefs.digest=` arguments are dropped.
/// - When both images' `kargs.d` split into the same arguments, the booted line is
///   carried as it is (order and repeats kept): an update that does not change the
///   kernel arguments does not change the command line, so it can be soft-rebooted into.
/// - Subtraction is a multiset difference: each `old_image` argument removes the first
///   equal booted argument still there; one with no match (the user removed it since)
///   removes nothing.
/// - Each `new_image` argument that equals a remaining booted argument not yet matched
///   by an earlier one is already there and is not added again: an argument the user
///   has and the new image also adds appears once, where the user had it. The others
///   are appended in `new_image` order after the remaining booted arguments.
/// - The result is joined with [`join`](bootc_initramfs_setup::cmdline::join), which
///   quotes an argument holding white space as `name="value"`, so quoting survives.
///
/// Each `new_image` string must pass [`check_karg`] and the line must fit
/// [`MAX_CMDLINE`]; otherwise an error. `old_image` is only compared, never written.
pub(crate) fn carried_options(
    booted_options: &str,
    old_image: &[String],
    new_image: &[String],
    composefs: &bootc_initramfs_setup::cmdline::ComposefsKarg,
) -> Result<String> {
    use bootc_initramfs_setup::cmdline::{join, tokenize, KARG, KARG_DIGEST};
    for k in new_image {
        check_karg(k, KARGS_D)?;
    }
    let (cfs, cfs_digest) = (format!("{KARG}="), format!("{KARG_DIGEST}="));
    let mut kept: Vec<String> = tokenize(booted_options)
        .into_iter()
        .filter(|t| !t.starts_with(&cfs) && !t.starts_with(&cfs_digest))
        .collect();
    let old_args: Vec<String> = old_image.iter().flat_map(|k| tokenize(k)).collect();
    let new_args: Vec<String> = new_image.iter().flat_map(|k| tokenize(k)).collect();
    if old_args != new_args {
        for arg in &old_args {
            if let Some(i) = kept.iter().position(|t| t == arg) {
                kept.remove(i);
            }
        }
        let mut matched = vec![false; kept.len()];
        let mut added = vec![];
        for arg in new_args {
            match (0..kept.len()).find(|&i| !matched[i] && kept[i] == arg) {
                Some(i) => matched[i] = true,
                None => added.push(arg),
            }
        }
        kept.extend(added);
    }
    kept.push(composefs.to_string());
    let line = join(&kept);
    check_options_length(&line)?;
    Ok(line)
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
        efi: None,
        file_stem: layout::boot_dir_name(id),
        title: os.title,
        version: os.version.unwrap_or_else(|| kver.to_string()),
        sort_key: None,
        linux: format!("/{dir}/{VMLINUZ}"),
        initrd: vec![format!("/{dir}/{INITRD}")],
        options,
    }
}

/// What the kernel keeps of its command line (`COMMAND_LINE_SIZE` on x86 and arm64,
/// including the final NUL): a longer `options` line would be cut, and the composefs
/// argument, which comes last, lost.
pub(crate) const MAX_CMDLINE: usize = 2048;
/// Display text (title, version) is cut to this many characters.
const MAX_DISPLAY: usize = 128;
/// A kernel version is a directory name: at most this many bytes.
const MAX_KVER: usize = 255;
/// Values quoted in messages are cut to this many characters.
const MAX_SHOWN: usize = 80;

/// The one rule for every value a boot loader writes on a line of an entry or menu
/// (BLS keys, GRUB's `menuentry`, `linux` and `initrd`): why `value` cannot be written,
/// if it cannot. A control character (line feed, carriage return, NUL, tab, escape, …)
/// could start a new key or hide one, so none is allowed.
pub(crate) fn line_value_problem(value: &str) -> Option<String> {
    value
        .chars()
        .find(|c| c.is_control())
        .map(|c| format!("it contains the control character {}", show(&c.to_string())))
}

/// `s` for a message: quoted, control characters, quotes and backslashes escaped (so
/// the message stays on one line), cut at [`MAX_SHOWN`] characters with "…".
pub(crate) fn show(s: &str) -> String {
    let cut: String = s.chars().take(MAX_SHOWN).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("\"{}{more}\"", escape(&cut))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Display text from the image (os-release's name and version) made safe to write:
/// each run of control characters and whitespace becomes one space, the ends are
/// trimmed, and it is cut at [`MAX_DISPLAY`] characters with "…". Sanitised rather
/// than refused: it is only shown in the boot menu, and a cosmetic flaw in os-release
/// should not make an image uninstallable.
pub(crate) fn display_value(s: &str) -> String {
    let words: Vec<&str> = s
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let one = words.join(" ");
    if one.chars().count() > MAX_DISPLAY {
        let mut cut: String = one.chars().take(MAX_DISPLAY - 1).collect();
        cut.push('…');
        cut
    } else {
        one
    }
}

/// Checks the name of the image's kernel directory (`/usr/lib/modules/<kver>`).
/// Refused rather than sanitised: the name is a path component that must match the
/// directory the kernel's modules are loaded from, and it becomes the entry's version;
/// a changed name would boot with no modules, and a kernel build never produces one
/// like this, so the image is wrong and its author must fix it.
pub(crate) fn check_kver(kver: &str) -> Result<()> {
    let why = if kver.is_empty() || kver == "." || kver == ".." {
        Some("it is not a name".to_string())
    } else if kver.len() > MAX_KVER {
        Some(format!(
            "it is {} bytes long (at most {MAX_KVER})",
            kver.len()
        ))
    } else if kver.contains('/') {
        Some("it contains \"/\"".to_string())
    } else if let Some(why) = line_value_problem(kver) {
        Some(why)
    } else if kver.contains(char::is_whitespace) {
        Some("it contains white space".to_string())
    } else {
        None
    };
    match why {
        Some(why) => bail!(
            "the image's kernel directory name {} is not a valid kernel version ({why}): expected /usr/lib/modules/<kver> with a name like 6.12.0-1.x86_64",
            show(kver)
        ),
        None => Ok(()),
    }
}

fn check_options_length(options: &str) -> Result<()> {
    if options.len() >= MAX_CMDLINE {
        bail!(
            "the kernel command line would be {} bytes long; the kernel keeps only {} (too many or too long --karg or kargs.d arguments)",
            options.len(),
            MAX_CMDLINE - 1
        );
    }
    Ok(())
}

/// Checks every value of `e` before a loader writes it (both loaders call this):
/// [`line_value_problem`] for each, no white space in the paths, a non-empty title
/// and `linux`, and an `options` line the kernel keeps whole. Refused, not repaired:
/// by the time an entry is written its values were validated (kernel version,
/// arguments) or sanitised (title, version) where they were read, so a bad value here
/// is a bug that must not reach the boot menu.
#[doc(hidden)]
pub fn check_entry(e: &BlsEntry) -> Result<()> {
    let name = e.file_name();
    let mut fields: Vec<(&str, &str)> = vec![
        ("file name", &e.file_stem),
        ("title", &e.title),
        ("version", &e.version),
        ("linux", &e.linux),
        ("options", &e.options),
    ];
    if let Some(k) = &e.sort_key {
        fields.push(("sort-key", k));
    }
    if let Some(k) = &e.efi {
        fields.push(("efi", k));
    }
    for i in &e.initrd {
        fields.push(("initrd", i));
    }
    for (field, value) in fields {
        if let Some(why) = line_value_problem(value) {
            bail!("boot entry {}: {field} {}: {why}", show(&name), show(value));
        }
        let path = matches!(field, "linux" | "initrd" | "efi" | "file name" | "sort-key");
        if path && value.contains(char::is_whitespace) {
            bail!(
                "boot entry {}: {field} {}: it contains white space",
                show(&name),
                show(value)
            );
        }
    }
    if e.file_stem.is_empty() || e.file_stem.contains('/') {
        bail!("boot entry {}: not a file name", show(&name));
    }
    let boots = match &e.efi {
        Some(efi) => {
            !efi.is_empty() && e.linux.is_empty() && e.initrd.is_empty() && e.options.is_empty()
        }
        None => !e.linux.is_empty(),
    };
    if e.title.trim().is_empty() || !boots {
        bail!(
            "boot entry {}: empty title, or not exactly one of a linux or an efi path (an efi entry has no initrd or options)",
            show(&name)
        );
    }
    check_options_length(&e.options).with_context(|| format!("boot entry {}", show(&name)))
}

/// Turns composefs' errors about an image's file tree (`Directory entry "boot" does
/// not exist`, with a dump of the inode being unpacked in the context) into a
/// sentence that names the path: "the image lacks /boot". The outermost context (what
/// bootc was doing, e.g. "pulling oci:…") is kept; other errors pass unchanged.
pub(crate) fn explain_image_error(e: anyhow::Error) -> anyhow::Error {
    use composefs::generic_tree::ImageError;
    let Some(ie) = e.chain().find_map(|c| c.downcast_ref::<ImageError>()) else {
        return e;
    };
    // composefs-oci names the tar entry it was unpacking: the failing name is one of
    // its components. Otherwise composefs was looking up a top-level directory
    // (/usr, /boot, /sysroot, /etc for SELinux labels).
    let entry = e.chain().find_map(|c| unpacked_entry(&c.to_string()));
    let locate = |name: &OsStr| -> String {
        let name = name.to_string_lossy();
        if let Some(p) = &entry {
            let mut acc = String::new();
            for comp in p.split('/').filter(|c| !c.is_empty()) {
                acc.push('/');
                acc.push_str(comp);
                if comp == name {
                    return acc;
                }
            }
        }
        format!("/{name}")
    };
    let required = |p: &str| {
        if ["/usr", "/boot", "/sysroot"].contains(&p) {
            " (a bootable image has /usr, /boot and /sysroot directories)"
        } else {
            ""
        }
    };
    let sentence = match ie {
        // Outside an entry's own path, composefs looks up either a top-level directory
        // or a hard link's target, whose full path the error does not carry: naming
        // "/<component>" would send the reader to the wrong place.
        ImageError::NotFound(n)
            if entry.is_none()
                && !["usr", "boot", "sysroot", "etc"].contains(&&*n.to_string_lossy()) =>
        {
            format!(
                "the image lacks {} (named by a hard link, or on the way to its target)",
                show(&n.to_string_lossy())
            )
        }
        ImageError::NotFound(n) => {
            let p = locate(n);
            format!("the image lacks {p}{}", required(&p))
        }
        ImageError::NotADirectory(n) => {
            let p = locate(n);
            let what = match &entry {
                Some(en) if en.trim_end_matches('/') != p => {
                    format!(" (a layer adds {} under it)", show(en))
                }
                _ => String::new(),
            };
            format!("the image's {p} is not a directory{what}{}", required(&p))
        }
        ImageError::IsADirectory(n) => {
            format!(
                "the image's {} is a directory where a file is expected",
                locate(n)
            )
        }
        ImageError::IsNotRegular(n) => {
            format!("the image's {} is not a regular file", locate(n))
        }
        ImageError::InvalidFilename(n) => format!(
            "the image has an invalid file name {}",
            show(&n.to_string_lossy())
        ),
        other => format!(
            "the image's file tree is inconsistent: {}",
            crate::sys::cmd::cap(&other.to_string(), 200)
        ),
    };
    let outer = e.to_string();
    let dump = ["{", "PhantomData", "LeafId"]
        .iter()
        .any(|m| outer.contains(m));
    let bare = e.chain().next().is_some_and(|c| c.is::<ImageError>());
    if bare || dump {
        anyhow::anyhow!(sentence)
    } else {
        anyhow::anyhow!("{outer}: {sentence}")
    }
}

/// The path in composefs-oci's `Error unpacking container layer file "PATH" …`.
fn unpacked_entry(msg: &str) -> Option<String> {
    let rest = msg.split_once("container layer file \"")?.1;
    Some(rest.split_once('"')?.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_parse() {
        let e = BlsEntry {
            efi: None,
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
        // An empty options line adds nothing, so the entry renders and reads back the
        // same (found by the bls_entry fuzz target).
        let e = BlsEntry::parse("x", "linux /k\noptions a\noptions\n").unwrap();
        assert_eq!(e.options, "a");
        assert_eq!(BlsEntry::parse("x", &e.render()).unwrap(), e);
    }

    #[test]
    fn install_options_follow_upstreams_order_and_delete() {
        use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
        let k = ComposefsKarg::new(DeploymentId::parse(&"ab".repeat(32)).unwrap(), true);
        let cfs = format!("composefs=?sha256:{}", "ab".repeat(32));
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (config, image) = (s(&["c=1", "d=\"x y\""]), s(&["e f=2", "c=3"]));
        let user = s(&["c=9", "u"]);
        let line = |delete: &[String]| {
            install_options(
                "UUID=u",
                &InstallKargs {
                    config: &config,
                    image: &image,
                    delete,
                    user: &user,
                },
                &k,
            )
            .unwrap()
        };
        assert_eq!(
            line(&[]),
            format!("root=UUID=u rw c=1 d=\"x y\" e f=2 c=3 c=9 u {cfs}")
        );
        // By name: every c before the user's; exact: only that value.
        assert_eq!(
            line(&s(&["c", "f=2", "f=3", "rw"])),
            format!("root=UUID=u d=\"x y\" e c=9 u {cfs}")
        );
        let e = install_options(
            "UUID=u",
            &InstallKargs {
                config: &s(&["composefs=x"]),
                ..Default::default()
            },
            &k,
        )
        .unwrap_err();
        assert!(e.to_string().contains("install configuration"), "{e}");
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
                "root=UUID=u rw console=ttyS0 quiet composefs=?sha256:{}",
                "ab".repeat(32)
            )
        );
        let e = options("UUID=u", &s(&["composefs=?abc"]), &[], &k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--karg") && e.contains("sets composefs="), "{e}");
        assert!(options("UUID=u", &[], &s(&["composefs.digest=x"]), &k).is_err());
        assert!(options("UUID=u", &s(&[" "]), &[], &k).is_err());
        // One argument that the command line splits in two, or unquotes, still cannot
        // set it (the kargs_d fuzz target asserts this).
        for smuggled in [
            "quiet composefs=?abc",
            "\"composefs=?abc\"",
            "a\u{a0}composefs.digest=x",
        ] {
            let e = options("UUID=u", &[], &s(&[smuggled]), &k).unwrap_err();
            assert!(e.to_string().contains("sets composefs="), "{smuggled}: {e}");
        }
        assert!(options("UUID=u", &s(&["foo=\"composefs=x\""]), &[], &k).is_ok());
        // A quote opened in one argument and closed in the next would make what is
        // between them one argument, and what follows a new one.
        let e = options("UUID=u", &[], &s(&["x=\"", "\" composefs=?abc"]), &k).unwrap_err();
        assert!(e.to_string().contains("unbalanced double quote"), "{e}");
    }

    #[test]
    fn carried_options_follow_the_image_and_keep_the_user() {
        use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
        let k = ComposefsKarg::new(DeploymentId::parse(&"ab".repeat(32)).unwrap(), true);
        let old_k = format!("composefs=?sha256:{}", "cd".repeat(32));
        let old_digest = format!("composefs.digest=v1-sha256-12:{}", "cd".repeat(32));
        /// What the case shows, the booted options, the old image's kargs.d, the new
        /// image's kargs.d, the expected line before the composefs argument.
        type Case<'a> = (&'a str, String, &'a [&'a str], &'a [&'a str], &'a str);
        let cases: &[Case] = &[
            (
                "the issue's example",
                format!("root=UUID=u rw c=\"x y\" a b {old_k}"),
                &["a", "b"],
                &["a", "d"],
                "root=UUID=u rw c=\"x y\" a d",
            ),
            (
                "empty lists",
                format!("root=UUID=u rw quiet {old_k}"),
                &[],
                &[],
                "root=UUID=u rw quiet",
            ),
            ("nothing booted", String::new(), &[], &[], ""),
            (
                "only new",
                format!("root=UUID=u rw {old_k}"),
                &[],
                &["a", "b"],
                "root=UUID=u rw a b",
            ),
            (
                "the image drops everything",
                format!("root=UUID=u rw a b {old_k}"),
                &["a", "b"],
                &[],
                "root=UUID=u rw",
            ),
            (
                "an old argument the user deleted since removes nothing",
                format!("root=UUID=u rw b {old_k}"),
                &["a", "b"],
                &["e"],
                "root=UUID=u rw e",
            ),
            (
                "same image kargs: the line is unchanged",
                format!("root=UUID=u rw c a b {old_k}"),
                &["a", "b"],
                &["a", "b"],
                "root=UUID=u rw c a b",
            ),
            (
                "a changed value replaces the old one",
                format!("root=UUID=u rw console=tty0 a=1 {old_k}"),
                &["a=1"],
                &["a=2"],
                "root=UUID=u rw console=tty0 a=2",
            ),
            (
                "composefs tokens anywhere are dropped, the new one goes last",
                format!("{old_digest} root=UUID=u {old_k} rw"),
                &[],
                &["q"],
                "root=UUID=u rw q",
            ),
            (
                "multiset: one old argument removes one occurrence, the first",
                format!("root=UUID=u rw a x a y a {old_k}"),
                &["a"],
                &[],
                "root=UUID=u rw x a y a",
            ),
            (
                "multiset: as many as the old image had",
                format!("root=UUID=u rw a a a {old_k}"),
                &["a", "a"],
                &[],
                "root=UUID=u rw a",
            ),
            (
                "duplicates in the new image are all added",
                format!("root=UUID=u rw a a {old_k}"),
                &["a", "a"],
                &["a", "a"],
                "root=UUID=u rw a a",
            ),
            (
                "one the user has and the new image adds appears once, where the user had it",
                format!("root=UUID=u rw quiet x {old_k}"),
                &[],
                &["x", "quiet", "y"],
                "root=UUID=u rw quiet x y",
            ),
            (
                "the user's copy is matched once: a second one is added",
                format!("root=UUID=u rw quiet {old_k}"),
                &[],
                &["quiet", "quiet"],
                "root=UUID=u rw quiet quiet",
            ),
            (
                "odd tokens compare whole: +3, --, =, x= and x differ, no prefix match",
                format!("root=UUID=u rw +3 -- = x= x console=ttyS0,115200n8 Quiet {old_k}"),
                &["x", "console=ttyS0", "quiet", "=="],
                &["+3", "a==b"],
                "root=UUID=u rw +3 -- = x= console=ttyS0,115200n8 Quiet a==b",
            ),
            (
                "a quoted booted value is one argument, matched by the same kargs.d string",
                format!("root=UUID=u rw foo=\"a b\" bar=\"c d\" {old_k}"),
                &["foo=\"a b\""],
                &[],
                "root=UUID=u rw bar=\"c d\"",
            ),
            (
                "a kargs.d string of two words is two arguments",
                format!("root=UUID=u rw x y z {old_k}"),
                &["x y"],
                &["p q"],
                "root=UUID=u rw z p q",
            ),
            (
                "new quoted values stay one argument; quotes without white space go",
                format!("root=UUID=u rw {old_k}"),
                &[],
                &["opt=\"1 2\"", "k=\"v\"", "\"w s\""],
                "root=UUID=u rw opt=\"1 2\" k=v \"w s\"",
            ),
            (
                "an empty quoted argument survives",
                format!("root=UUID=u rw \"\" {old_k}"),
                &[],
                &[],
                "root=UUID=u rw \"\"",
            ),
            (
                "an unchanged kargs.d keeps the booted line: order and repeats",
                format!("root=UUID=u rw console=x audit=0 rw user=1 {old_k}"),
                &["console=x audit=0 rw"],
                &["console=x", "audit=0 rw"],
                "root=UUID=u rw console=x audit=0 rw user=1",
            ),
            (
                "old kargs.d is only compared, never checked",
                format!("root=UUID=u rw {old_k}"),
                &["composefs=x", "a\nb"],
                &[],
                "root=UUID=u rw",
            ),
        ];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (what, booted, old, new, want) in cases {
            let want = if want.is_empty() {
                k.to_string()
            } else {
                format!("{want} {k}")
            };
            let got = carried_options(booted, &s(old), &s(new), &k)
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(got, want, "{what}");
            // What is written reads back as the same arguments.
            assert_eq!(
                bootc_initramfs_setup::cmdline::join(&bootc_initramfs_setup::cmdline::tokenize(
                    &got
                )),
                got,
                "{what}"
            );
        }
    }

    #[test]
    fn carried_options_check_the_new_image_like_install() {
        use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
        let k = ComposefsKarg::new(DeploymentId::parse(&"ab".repeat(32)).unwrap(), false);
        let booted = "root=UUID=u rw";
        for (bad, why) in [
            ("composefs=?abc", "sets composefs="),
            ("quiet composefs.digest=x", "sets composefs="),
            ("x=\"", "unbalanced double quote"),
            (" ", "empty kernel argument"),
            ("a\nb", "control character"),
        ] {
            let e = carried_options(booted, &[], &[bad.to_string()], &k)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains(KARGS_D), "{bad:?}: {e}");
        }
        let long = vec!["x".repeat(3000)];
        let e = carried_options(booted, &[], &long, &k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel command line would be"), "{e}");
        // A booted line that is already too long is refused too, not cut.
        let e = carried_options(&"y".repeat(3000), &[], &[], &k).unwrap_err();
        assert!(
            e.to_string().contains("kernel command line would be"),
            "{e}"
        );
        // Secure stays secure: the composefs argument is the one given.
        assert_eq!(
            carried_options(booted, &[], &[], &k).unwrap(),
            format!("root=UUID=u rw composefs=sha256:{}", "ab".repeat(32))
        );
    }

    fn entry() -> BlsEntry {
        BlsEntry {
            efi: None,
            file_stem: "bootc_composefs-ab".into(),
            title: "Bootc Test OS v1".into(),
            version: "1".into(),
            sort_key: Some("bootc-000".into()),
            linux: "/bootc_composefs-ab/vmlinuz".into(),
            initrd: vec!["/bootc_composefs-ab/initramfs.img".into()],
            options: "root=UUID=x rw composefs=?sha256:ab".into(),
        }
    }

    /// Hostile values: each must be refused where it is a checked field.
    const HOSTILE: &[&str] = &[
        "a\noptions systemd.unit=rescue.target",
        "a\rb",
        "a\0b",
        "a\tb",
        "a\x1b[2Jb",
        "a\u{85}b",
    ];

    #[test]
    fn kernel_versions() {
        for ok in [
            "6.12.0-1.x86_64",
            "6.12.0-bootc-test",
            "5.14.0-362.el9.aarch64+64k",
        ] {
            check_kver(ok).unwrap();
        }
        let long = "9".repeat(300);
        for bad in HOSTILE
            .iter()
            .copied()
            .chain(["", ".", "..", "a/b", "6.1 x", long.as_str()])
        {
            let e = check_kver(bad).unwrap_err().to_string();
            assert!(e.contains("is not a valid kernel version"), "{bad:?}: {e}");
            assert!(
                !e.contains('\n') && !e.contains('\r') && !e.contains('\0'),
                "{e:?}"
            );
            assert!(e.chars().count() < 300, "{} chars: {e}", e.len());
            assert!(!e.contains('{'), "{e}");
        }
        let e = check_kver("6.1\noptions systemd.unit=rescue.target")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"6.1\\noptions systemd.unit=rescue.target\"")
                && e.contains("control character \"\\n\""),
            "{e}"
        );
    }

    #[test]
    fn every_field_is_checked() {
        check_entry(&entry()).unwrap();
        type Set = fn(&mut BlsEntry, String);
        let fields: &[(&str, Set)] = &[
            ("title", |e, v| e.title = v),
            ("version", |e, v| e.version = v),
            ("sort-key", |e, v| e.sort_key = Some(v)),
            ("linux", |e, v| e.linux = v),
            ("initrd", |e, v| e.initrd = vec![v]),
            ("options", |e, v| e.options = v),
        ];
        for (field, set) in fields {
            for bad in HOSTILE {
                let mut e = entry();
                set(&mut e, bad.to_string());
                let err = check_entry(&e).unwrap_err().to_string();
                assert!(err.contains(field), "{field} {bad:?}: {err}");
                assert!(err.contains("control character"), "{err}");
                assert!(!err.contains('\n') && !err.contains('\0'), "{err:?}");
                // Even unchecked, the text keeps exactly one line per key.
                assert_eq!(e.render().lines().count(), 6, "{:?}", e.render());
            }
        }
        // Quotes, `$` and `\` are fine in BLS values (no expansion there); GRUB quotes them.
        let mut e = entry();
        e.title = "It's \"$HOME\" \\ OS".into();
        e.options = "root=UUID=x init=$x a=\"b c\" d=\\ composefs=?sha256:ab".into();
        check_entry(&e).unwrap();
        // White space in a path would end the value early.
        e.linux = "/a b/vmlinuz".into();
        assert!(check_entry(&e)
            .unwrap_err()
            .to_string()
            .contains("white space"));
        // A command line the kernel would cut loses the composefs argument.
        let mut e = entry();
        e.options = format!("{} composefs=?sha256:ab", "x".repeat(MAX_CMDLINE));
        let err = format!("{:#}", check_entry(&e).unwrap_err());
        assert!(err.contains("the kernel keeps only 2047"), "{err}");
        assert!(err.chars().count() < 300, "{err}");
    }

    #[test]
    fn display_text_is_sanitised() {
        assert_eq!(display_value("Evil\rOS\x1b[2J\t 1\n"), "Evil OS [2J 1");
        assert_eq!(display_value("  A  B "), "A B");
        assert_eq!(display_value("\0\r\n"), "");
        let long = display_value(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_DISPLAY);
        assert!(long.ends_with('…'));
        assert_eq!(display_value("It's \"$x\" \\"), "It's \"$x\" \\");
    }

    #[test]
    fn shown_values_stay_on_one_short_line() {
        assert_eq!(show("a\nb\r\"\\\0\x1b"), "\"a\\nb\\r\\\"\\\\\\x00\\x1b\"");
        let long = show(&"y".repeat(5000));
        assert!(long.chars().count() < MAX_SHOWN + 5 && long.ends_with("…\""));
    }

    #[test]
    fn hostile_kernel_arguments_are_refused() {
        use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
        let id = DeploymentId::parse(&"ab".repeat(32)).unwrap();
        let k = ComposefsKarg::new(id, true);
        for bad in HOSTILE {
            let e = options("UUID=u", &[bad.to_string()], &[], &k)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--karg") && e.contains("control character"),
                "{e}"
            );
            let e = options("UUID=u", &[], &[bad.to_string()], &k)
                .unwrap_err()
                .to_string();
            assert!(e.contains(KARGS_D), "{e}");
        }
        let long = vec!["x".repeat(3000)];
        let e = options("UUID=u", &long, &[], &k).unwrap_err().to_string();
        assert!(
            e.contains("kernel command line would be") && e.len() < 300,
            "{e}"
        );
    }

    #[test]
    fn composefs_tree_errors_become_sentences() {
        use composefs::generic_tree::ImageError;
        let e = anyhow::Error::new(ImageError::NotFound(OsStr::new("boot").into()))
            .context("pulling oci:/x:v1");
        assert_eq!(
            explain_image_error(e).to_string(),
            "pulling oci:/x:v1: the image lacks /boot (a bootable image has /usr, /boot and /sysroot directories)"
        );
        let e = anyhow::Error::new(ImageError::NotADirectory(OsStr::new("etc").into()))
            .context("Error unpacking container layer file \"/etc/passwd\" Leaf(LeafId(6), PhantomData<composefs::tree::RegularFile<X>>)")
            .context("Processing tar entry")
            .context("pulling oci:/x:v1");
        assert_eq!(
            format!("{:#}", explain_image_error(e)),
            "pulling oci:/x:v1: the image's /etc is not a directory (a layer adds \"/etc/passwd\" under it)"
        );
        // A deeper component is located in the entry's path.
        let e = anyhow::Error::new(ImageError::NotADirectory(OsStr::new("lib").into()))
            .context("Error unpacking container layer file \"/usr/lib/x\" Directory { stat: Stat { st_mode: 0 } }");
        assert_eq!(
            format!("{:#}", explain_image_error(e)),
            "the image's /usr/lib is not a directory (a layer adds \"/usr/lib/x\" under it)"
        );
        // Anything else passes unchanged.
        let e = explain_image_error(anyhow::anyhow!("other").context("outer"));
        assert_eq!(format!("{e:#}"), "outer: other");
    }

    #[test]
    fn kargs_files_refuse_unknown_keys() {
        let p = "/usr/lib/bootc/kargs.d/10-x.toml";
        let ok = parse_kargs_file(
            p,
            "kargs = [\"quiet\"]\nmatch-architectures = [\"x86_64\"]\n",
        )
        .unwrap();
        assert_eq!(ok.kargs, vec!["quiet"]);
        let e = parse_kargs_file(
            p,
            "kargs = [\"quiet\"]\nmatch-architecture = [\"x86_64\"]\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with(p), "{e}");
        assert!(
            e.contains("unknown key `match-architecture` at line 2"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = parse_kargs_file(p, "kargs = [\"quiet\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a kargs file"), "{e}");
    }

    #[test]
    fn efi_entries_render_without_kernel_or_options_and_are_checked() {
        let mut e = BlsEntry::parse(
            "bootc_composefs-ab",
            "title T\nversion 1\nefi /EFI/Linux/bootc/bootc_composefs-ab.efi\n",
        )
        .unwrap();
        check_entry(&e).unwrap();
        assert_eq!(
            e.render(),
            "title T\nversion 1\nefi /EFI/Linux/bootc/bootc_composefs-ab.efi\n"
        );
        e.options = "rw".into();
        assert!(
            check_entry(&e).is_err(),
            "options would replace the sealed cmdline"
        );
        e.options = String::new();
        e.linux = "/x/vmlinuz".into();
        assert!(check_entry(&e).is_err(), "linux and efi");
        let err = BlsEntry::parse("s", "title T\n").unwrap_err().to_string();
        assert!(err.contains("no linux line (and no efi line)"), "{err}");
    }
}
