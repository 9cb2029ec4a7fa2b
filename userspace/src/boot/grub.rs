//! GRUB (EFI): a GRUB image built with `grub-mkimage` at the removable-media path of the
//! ESP (`EFI/BOOT/BOOTX64.EFI`, no NVRAM changes), a fixed `grub2/grub.cfg`, and the
//! menu in `grub2/user.cfg` (docs/architecture.md, on-disk layout): one `menuentry`
//! block per deployment, in boot order; `grub.cfg` sets `default=0`, so the first boots.
//! A kernel deployment's block boots with `linux` and `initrd`; a UKI deployment's
//! chainloads its UKI (`chainloader`), which brings its own sealed command line.
//!
//! The menu is an [`EntrySet`] like systemd-boot's entry directory, kept as one file: a
//! new menu is written in full to `grub2/user.cfg.staged` (temporary name, fsync,
//! rename), and `renameat2(RENAME_EXCHANGE)` makes it `user.cfg` in one step. Blocks
//! and lines we did not write are carried over byte for byte, after ours; a block of
//! ours is rewritten only if it reads back to exactly the text we would write for it.
//!
//! `grub-install` is not used: it insists on probing a mounted FAT ESP, which a host
//! without vfat (and a staged ESP) cannot offer, and it edits EFI variables. Neither is
//! `grub-mkconfig` (upstream's `grub2-mkconfig`): it generates a menu from the kernels
//! it finds under the running system's `/boot`, which knows nothing of deployments and
//! would have to be re-run, non-atomically, on every change; our menu is data we write.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline;
use bootc_initramfs_setup::layout;
use rustix::fs::{renameat_with, RenameFlags};
use rustix::io::Errno;

use super::bls::{self, BlsEntry};
use super::entries::{check_boots_a_deployment, Entry, EntrySet, RawContent, RawEntry};
use super::Bootloader;
use crate::sys::cmd::{run, which};
use crate::sys::durable;

/// GRUB.
#[derive(Debug)]
pub(crate) struct Grub;

/// GRUB's platform directory and the removable-media file name for this architecture.
fn platform() -> Result<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(("x86_64-efi", "BOOTX64.EFI")),
        "aarch64" => Ok(("arm64-efi", "BOOTAA64.EFI")),
        other => bail!("GRUB installs are not supported on {other}"),
    }
}

/// The modules built into the image: enough to find the ESP, read the menu, boot a
/// Linux kernel and chainload a UKI (`chain`: its `chainloader` starts an EFI program
/// through the firmware's LoadImage, so Secure Boot checks the UKI's signature).
const MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "search",
    "search_fs_file",
    "configfile",
    "normal",
    "linux",
    "chain",
    "echo",
    "test",
    "gzio",
    "all_video",
];

/// The directory (on the ESP) holding grub.cfg and user.cfg.
fn grub_dir() -> &'static str {
    Path::new(layout::GRUB_USER_CFG)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("grub2")
}

/// The configuration built into the image: find the ESP by our grub.cfg and read it.
fn embedded_cfg() -> String {
    let dir = grub_dir();
    format!(
        "search --no-floppy --set=root --file /{dir}/grub.cfg\nset prefix=($root)/{dir}\nconfigfile ($root)/{dir}/grub.cfg\n"
    )
}

/// `grub2/grub.cfg`: the fixed part of the menu; the entries are in user.cfg.
pub(crate) fn grub_cfg() -> String {
    let user = Path::new(layout::GRUB_USER_CFG)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("user.cfg");
    format!(
        "# Written by bootc; the menu entries are in {user}.\nset timeout=3\nset default=0\nif [ -f ${{prefix}}/{user} ]; then\n  source ${{prefix}}/{user}\nfi\n"
    )
}

/// Quotes one word for GRUB's shell-like syntax: inside single quotes nothing is
/// special (no `$` expansion, no `\` escapes, no `;`, `#`, `{`), and a `'` is written
/// as `'\''`. Values are checked with [`bls::check_entry`] before; a control character
/// that slipped through is still written as a space, so no word spans two lines.
fn quote(s: &str) -> String {
    let s = s.replace(|c: char| c.is_control(), " ");
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The first line of the menu we write.
const HEADER: &str = "# Written by bootc: one entry per deployment, the first boots by default.\n";

/// The `menuentry` block of one entry. Every value is one quoted word: the title, the
/// id, the kernel and initrd paths, and each kernel argument (split as the kernel splits
/// its command line; GRUB's `linux` joins them again, quoting an argument that holds a
/// space). The version, which GRUB has no place for, is a comment. A UKI entry (an `efi`
/// path) is one `chainloader` line and no arguments: the UKI's sealed `.cmdline` is the
/// command line.
fn render_block(e: &BlsEntry) -> String {
    let args: Vec<String> = cmdline::tokenize(&e.options)
        .iter()
        .map(|a| quote(a))
        .collect();
    let mut s = format!(
        "menuentry {} --id {} {{\n",
        quote(&e.title),
        quote(&e.file_stem)
    );
    if !e.version.is_empty() {
        s.push_str(&format!("    # version {}\n", quote(&e.version)));
    }
    if let Some(efi) = &e.efi {
        s.push_str(&format!("    chainloader {}\n}}\n", quote(efi)));
        return s;
    }
    s.push_str(&format!(
        "    linux {} {}\n",
        quote(&e.linux),
        args.join(" ")
    ));
    for i in &e.initrd {
        s.push_str(&format!("    initrd {}\n", quote(i)));
    }
    s.push_str("}\n");
    s
}

/// `grub2/user.cfg` for `entries` alone (install, tests).
#[cfg(test)]
pub(crate) fn user_cfg(entries: &[BlsEntry]) -> String {
    let set = EntrySet {
        ours: entries.iter().cloned().map(Entry::new).collect(),
        foreign: vec![],
    };
    String::from_utf8(render_menu(&set).unwrap()).unwrap()
}

/// The whole menu: the header, our blocks in boot order, then what is carried.
/// Refuses an entry of ours that fails [`bls::check_entry`] (nothing is written).
fn render_menu(set: &EntrySet) -> Result<Vec<u8>> {
    let mut out = HEADER.as_bytes().to_vec();
    for e in &set.ours {
        bls::check_entry(&e.bls)?;
        out.extend_from_slice(render_block(&e.bls).as_bytes());
    }
    for r in &set.foreign {
        match &r.content {
            RawContent::File { bytes, .. } => {
                out.extend_from_slice(bytes);
                if !bytes.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            _ => bail!(
                "{}: {} cannot be carried over",
                layout::GRUB_USER_CFG,
                r.display_name()
            ),
        }
    }
    Ok(out)
}

/// Splits one line of GRUB script into words: bare characters, `'…'` (literal) and
/// `\c` (the character c). `None` for what we never write: double quotes, variables,
/// an unterminated quote.
fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            '"' | '$' => return None,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// Parses the text of one `menuentry` block (from its first line to its closing `}`
/// line) as an entry of ours; `Err(why)` when it is not exactly what [`render_block`]
/// writes for the entry it describes.
fn parse_block(text: &str) -> std::result::Result<BlsEntry, String> {
    let bad = |what: &str| Err(format!("{what}; it is not in the form bootc writes"));
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 2 || lines.last() != Some(&"}") {
        return bad("it has no closing `}` line");
    }
    let Some(first) = lines.first().and_then(|l| split_words(l)) else {
        return bad("its menuentry line cannot be read");
    };
    let [kw, title, id_opt, id, open] = first.as_slice() else {
        return bad("its menuentry line is not `menuentry TITLE --id ID {`");
    };
    if kw != "menuentry" || id_opt != "--id" || open != "{" {
        return bad("its menuentry line is not `menuentry TITLE --id ID {`");
    }
    let mut e = BlsEntry {
        efi: None,
        file_stem: id.clone(),
        title: title.clone(),
        version: String::new(),
        sort_key: None,
        linux: String::new(),
        initrd: vec![],
        options: String::new(),
    };
    for line in &lines[1..lines.len().saturating_sub(1)] {
        let Some(words) = split_words(line) else {
            return bad("a line cannot be read");
        };
        match words
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["#", "version", v] => e.version = v.to_string(),
            ["linux", path, args @ ..] if e.linux.is_empty() && e.efi.is_none() => {
                e.linux = path.to_string();
                e.options = cmdline::join(args);
            }
            ["initrd", path] if e.efi.is_none() => e.initrd.push(path.to_string()),
            ["chainloader", path] if e.efi.is_none() && e.linux.is_empty() => {
                e.efi = Some(path.to_string())
            }
            _ => return bad("it has a line bootc does not write"),
        }
    }
    if e.linux.is_empty() && e.efi.is_none() {
        return bad("it has no linux or chainloader line");
    }
    check_boots_a_deployment(&e, "chainloader line", "linux line")?;
    bls::check_entry(&e).map_err(|err| format!("{err:#}"))?;
    // The last block of a file may lack the final newline (an editor that strips it):
    // the same block, which a rewrite ends with its newline again. Comparing with it
    // added keeps a second reading of the rewrite finding the same entries.
    let rendered = render_block(&e);
    if rendered != text && rendered.strip_suffix('\n') != Some(text) {
        return bad("it does not read back to itself");
    }
    Ok(e)
}

/// A name for a carried chunk: the entry id a block names (so gc and status can tell a
/// block of ours that cannot be parsed), else `line N`.
fn chunk_name(text: &str, line: usize) -> OsString {
    if let Some(pos) = text.find(layout::BOOT_PREFIX) {
        let id: String = text[pos..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        return id.into();
    }
    format!("line {line}").into()
}

/// Reads a menu: our blocks (in file order, which is the boot order) and everything
/// else as carried chunks (each foreign `menuentry` block, and each run of other lines,
/// byte for byte). Never fails: what cannot be read is carried.
pub(crate) fn parse_menu(bytes: &[u8]) -> EntrySet {
    let mut set = EntrySet::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut loose: Vec<u8> = vec![];
    let mut loose_line = 0;
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    let flush = |loose: &mut Vec<u8>, line: usize, set: &mut EntrySet| {
        if !loose.is_empty() {
            set.foreign.push(RawEntry {
                name: format!("line {line}").into(),
                content: RawContent::File {
                    bytes: std::mem::take(loose),
                    mode: 0o644,
                },
                problem: None,
            });
        }
    };
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if i == 0 && line == HEADER.as_bytes() {
            i += 1;
            continue;
        }
        if !line.starts_with(b"menuentry ") && !line.starts_with(b"menuentry\t") {
            if loose.is_empty() {
                loose_line = i + 1;
            }
            loose.extend_from_slice(line);
            i += 1;
            continue;
        }
        flush(&mut loose, loose_line, &mut set);
        // The block ends at the first line that is exactly `}`.
        let end = (i..lines.len())
            .find(|&j| lines[j].strip_suffix(b"\n").unwrap_or(lines[j]) == b"}")
            .unwrap_or(lines.len() - 1);
        let block: Vec<u8> = lines[i..=end].concat();
        let text = String::from_utf8_lossy(&block).into_owned();
        let name = chunk_name(&text, i + 1);
        let ours = name.as_bytes().starts_with(layout::BOOT_PREFIX.as_bytes());
        let parsed = if !ours {
            Ok(None)
        } else if std::str::from_utf8(&block).is_err() {
            Err("it is not UTF-8 text".to_string())
        } else {
            parse_block(&text).and_then(|e| {
                if seen.insert(e.file_stem.clone()) {
                    Ok(Some(e))
                } else {
                    Err("a second block for the same entry".into())
                }
            })
        };
        match parsed {
            Ok(Some(e)) => set.ours.push(Entry::new(e)),
            Ok(None) | Err(_) => set.foreign.push(RawEntry {
                name,
                content: RawContent::File {
                    bytes: block,
                    mode: 0o644,
                },
                problem: parsed.err(),
            }),
        }
        i = end + 1;
    }
    flush(&mut loose, loose_line, &mut set);
    set
}

/// The fuzz target's properties of reading a menu someone else may have written
/// (`fuzz/fuzz_targets/grub_menu.rs`): reading never panics; what was read can be
/// written back; reading that again gives the same entries of ours, and every byte that
/// was carried is carried again, in the same order. `pub` for the fuzz target only.
#[doc(hidden)]
pub fn check_menu_round_trip(data: &[u8]) {
    let set = parse_menu(data);
    for r in &set.foreign {
        if let Some(p) = &r.problem {
            assert!(!p.contains('\n'), "two-line problem: {p}");
        }
    }
    let out = render_menu(&set).expect("a menu that was read can be written back");
    let again = parse_menu(&out);
    assert_eq!(again.ours, set.ours, "our entries changed on a rewrite");
    let carried = |s: &EntrySet| -> Vec<u8> {
        let mut v = vec![];
        for r in &s.foreign {
            if let RawContent::File { bytes, .. } = &r.content {
                v.extend_from_slice(bytes);
                if !bytes.ends_with(b"\n") {
                    v.push(b'\n');
                }
            }
        }
        v
    };
    assert_eq!(carried(&again), carried(&set), "carried bytes changed");
    assert_eq!(
        render_menu(&again).unwrap(),
        out,
        "a second rewrite differs"
    );
}

/// `grub2/user.cfg`, or the staged one; `None` when the file does not exist.
fn read_menu(boot: BorrowedFd<'_>, path: &str) -> Result<Option<EntrySet>> {
    let bytes = match crate::sys::read_file_at(boot, path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {path}")),
    };
    Ok(Some(parse_menu(&bytes)))
}

/// The file name part of a layout path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Bootloader for Grub {
    fn name(&self) -> &'static str {
        "grub"
    }

    fn check(&self) -> Result<()> {
        let (platform, _) = platform()?;
        which("grub-mkimage").context(
            "grub-mkimage is not installed: install grub-common and grub-efi-amd64-bin, or choose --bootloader systemd",
        )?;
        let modules = PathBuf::from("/usr/lib/grub").join(platform);
        if !modules.join("linux.mod").exists() {
            bail!(
                "the GRUB {platform} modules are not installed ({}): install grub-efi-amd64-bin, or choose --bootloader systemd",
                modules.display()
            );
        }
        Ok(())
    }

    fn install(&self, _root: &Path, esp: &Path) -> Result<()> {
        let (platform, file) = platform()?;
        let esp_fd = durable::open_dir(rustix::fs::CWD, esp)?;
        let dir = durable::ensure_dir_all(&esp_fd, grub_dir(), 0o755)?;
        durable::write_file(&dir, "grub.cfg", grub_cfg().as_bytes(), 0o644)
            .with_context(|| format!("writing {}/grub.cfg", grub_dir()))?;

        let scratch = tempfile::Builder::new()
            .prefix(&durable::tmp_name("grub."))
            .tempdir()
            .context("creating a scratch directory")?;
        let cfg = scratch.path().join("embedded.cfg");
        std::fs::write(&cfg, embedded_cfg())
            .with_context(|| format!("writing {}", cfg.display()))?;
        let image = scratch.path().join(file);
        let mut cmd = Command::new(which("grub-mkimage").context("grub-mkimage is not installed")?);
        cmd.args(["-O", platform, "-o"])
            .arg(&image)
            .arg("-c")
            .arg(&cfg)
            .args(["-p", &format!("/{}", grub_dir())])
            .args(MODULES);
        run(&mut cmd).context("building the GRUB EFI image")?;
        let data = std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
        let boot = durable::ensure_dir_all(&esp_fd, "EFI/BOOT", 0o755)?;
        durable::write_file(&boot, file, &data, 0o644)
            .with_context(|| format!("writing EFI/BOOT/{file}"))?;
        Ok(())
    }

    fn menu_path(&self) -> &'static str {
        layout::GRUB_USER_CFG
    }

    fn staged_menu_path(&self) -> &'static str {
        layout::GRUB_USER_CFG_STAGED
    }

    fn menu_dir(&self) -> &'static str {
        grub_dir()
    }

    fn read_current(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>> {
        read_menu(boot, layout::GRUB_USER_CFG)
    }

    fn read_staged(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>> {
        read_menu(boot, layout::GRUB_USER_CFG_STAGED)
    }

    fn write_staged(&self, boot: BorrowedFd<'_>, set: &EntrySet) -> Result<()> {
        let bytes = render_menu(set)?;
        let dir = durable::ensure_dir_all(boot, grub_dir(), 0o755)?;
        durable::write_file(&dir, file_name(layout::GRUB_USER_CFG_STAGED), &bytes, 0o644)
            .with_context(|| format!("writing {}", layout::GRUB_USER_CFG_STAGED))
    }

    fn exchange_staged(&self, boot: BorrowedFd<'_>) -> Result<()> {
        let dir = durable::open_dir(boot, grub_dir())?;
        let (staged, current) = (
            file_name(layout::GRUB_USER_CFG_STAGED),
            file_name(layout::GRUB_USER_CFG),
        );
        crate::sys::fault::durable_step("exchange grub2/user.cfg");
        match renameat_with(&dir, staged, &dir, current, RenameFlags::EXCHANGE) {
            Ok(()) => {}
            // No current menu yet: a plain rename is just as atomic.
            Err(Errno::NOENT) => rustix::fs::renameat(&dir, staged, &dir, current)
                .with_context(|| format!("moving {} into place", layout::GRUB_USER_CFG_STAGED))?,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "exchanging {} and {}",
                        layout::GRUB_USER_CFG_STAGED,
                        layout::GRUB_USER_CFG
                    )
                })
            }
        }
        durable::fsync_dir(&dir)
    }

    fn discard_staged(&self, boot: BorrowedFd<'_>) -> Result<bool> {
        let Ok(dir) = durable::open_dir(boot, grub_dir()) else {
            return Ok(false);
        };
        let staged = file_name(layout::GRUB_USER_CFG_STAGED);
        let existed =
            rustix::fs::statat(&dir, staged, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok();
        durable::remove_all(&dir, staged)?;
        durable::fsync_dir(&dir)?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn entry(hex: &str, title: &str, options: &str) -> BlsEntry {
        BlsEntry {
            efi: None,
            file_stem: format!("{}{hex}", layout::BOOT_PREFIX),
            title: title.into(),
            version: "1".into(),
            sort_key: None,
            linux: format!("/{}{hex}/vmlinuz", layout::BOOT_PREFIX),
            initrd: vec![format!("/{}{hex}/initramfs.img", layout::BOOT_PREFIX)],
            options: options.into(),
        }
    }

    fn boot() -> (tempfile::TempDir, std::os::fd::OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let fd = durable::open_dir(rustix::fs::CWD, t.path()).unwrap();
        (t, fd)
    }

    #[test]
    fn menu() {
        let e = BlsEntry {
            efi: None,
            file_stem: "bootc_composefs-ab".into(),
            title: "It's OS v1".into(),
            version: "1".into(),
            sort_key: None,
            linux: "/bootc_composefs-ab/vmlinuz".into(),
            initrd: vec!["/bootc_composefs-ab/initramfs.img".into()],
            options: "root=UUID=u rw composefs=?sha256:ab".into(),
        };
        assert_eq!(
            user_cfg(&[e]),
            concat!(
                "# Written by bootc: one entry per deployment, the first boots by default.\n",
                "menuentry 'It'\\''s OS v1' --id 'bootc_composefs-ab' {\n",
                "    # version '1'\n",
                "    linux '/bootc_composefs-ab/vmlinuz' 'root=UUID=u' 'rw' 'composefs=?sha256:ab'\n",
                "    initrd '/bootc_composefs-ab/initramfs.img'\n",
                "}\n"
            )
        );
        assert!(grub_cfg().contains("source ${prefix}/user.cfg"));
        assert!(embedded_cfg().contains("--file /grub2/grub.cfg"));
    }

    #[test]
    fn hostile_values_stay_inside_their_quotes() {
        let e = entry(
            "ab",
            "a'b$c\\d\"e;{f}#",
            "root=UUID=u init=$x a=\"b c\" e;f} 'q' composefs=?sha256:ab",
        );
        assert_eq!(
            user_cfg(std::slice::from_ref(&e)),
            concat!(
                "# Written by bootc: one entry per deployment, the first boots by default.\n",
                "menuentry 'a'\\''b$c\\d\"e;{f}#' --id 'bootc_composefs-ab' {\n",
                "    # version '1'\n",
                "    linux '/bootc_composefs-ab/vmlinuz' 'root=UUID=u' 'init=$x' 'a=b c' 'e;f}' ''\\''q'\\''' 'composefs=?sha256:ab'\n",
                "    initrd '/bootc_composefs-ab/initramfs.img'\n",
                "}\n"
            )
        );
        // A line break, CR or NUL never reaches the menu: refused before writing, and
        // even unchecked each entry keeps its lines.
        let (t, boot) = boot();
        for bad in ["x\n}\nmenuentry evil {", "x\ry", "x\0y"] {
            for field in 0..3 {
                let mut e = e.clone();
                match field {
                    0 => e.title = bad.into(),
                    1 => e.options = format!("quiet {bad} composefs=?sha256:ab"),
                    _ => e.linux = bad.into(),
                }
                let set = EntrySet {
                    ours: vec![Entry::new(e.clone())],
                    foreign: vec![],
                };
                let err = Grub.write_staged(boot.as_fd(), &set).unwrap_err();
                assert!(err.to_string().contains("control character"), "{err}");
                assert_eq!(render_block(&e).lines().count(), 5);
            }
        }
        assert!(!t.path().join(grub_dir()).exists(), "nothing written");
    }

    /// What we write reads back to the same entries, in the same order, and quoted
    /// arguments stay one argument.
    #[test]
    fn menu_round_trip() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let ea = entry(
            &a,
            "A 'quoted' $title",
            &format!("root=UUID=u rw c=\"x y\" \"p q\" composefs=sha256:{a}"),
        );
        let mut eb = entry(&b, "B", &format!("rw composefs=?sha256:{b}"));
        eb.version = String::new();
        eb.initrd.push("/extra.img".into());
        let set = EntrySet {
            ours: vec![Entry::new(ea.clone()), Entry::new(eb.clone())],
            foreign: vec![],
        };
        let text = render_menu(&set).unwrap();
        let back = parse_menu(&text);
        assert_eq!(back, set, "{}", String::from_utf8_lossy(&text));
        assert_eq!(back.ours[0].bls.options, ea.options);
        assert!(!back.ours[0].insecure && back.ours[1].insecure);
        assert_eq!(render_menu(&back).unwrap(), text);
    }

    /// A UKI deployment's block chainloads its UKI, with nothing else: it reads back to
    /// the same entry (the deployment named by its id); a block whose chainloader names
    /// another file, or that also has a kernel line, is not ours to rewrite.
    #[test]
    fn uki_blocks_chainload_and_round_trip() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let id = cmdline::DeploymentId::parse(&format!("sha256:{a}")).unwrap();
        let uki = BlsEntry {
            efi: Some(super::super::entries::uki_path(&id)),
            file_stem: format!("{}{a}", layout::BOOT_PREFIX),
            title: "Sealed OS".into(),
            version: "2".into(),
            sort_key: None,
            linux: String::new(),
            initrd: vec![],
            options: String::new(),
        };
        let block = render_block(&uki);
        assert_eq!(
            block,
            format!(
                "menuentry 'Sealed OS' --id 'bootc_composefs-{a}' {{\n    # version '2'\n    chainloader '/EFI/Linux/bootc/bootc_composefs-{a}.efi'\n}}\n"
            )
        );
        let kernel = entry(&b, "B", &format!("rw composefs=sha256:{b}"));
        let set = EntrySet {
            ours: vec![Entry::new(uki.clone()), Entry::new(kernel)],
            foreign: vec![],
        };
        let text = render_menu(&set).unwrap();
        let back = parse_menu(&text);
        assert_eq!(back, set, "{}", String::from_utf8_lossy(&text));
        assert_eq!(back.ours[0].deployment.as_ref(), Some(&id));
        assert_eq!(render_menu(&back).unwrap(), text);

        // Carried, with the reason: another deployment's UKI, a UKI and a kernel.
        let other = block.replace(&format!("composefs-{a}.efi"), &format!("composefs-{b}.efi"));
        let both = block.replace(
            "    chainloader",
            &format!(
                "    linux '/bootc_composefs-{a}/vmlinuz' 'composefs=sha256:{a}'\n    chainloader"
            ),
        );
        let after = block.replace("    # version '2'\n", "").replace(
            "}\n",
            &format!("    linux '/x' 'composefs=sha256:{a}'\n}}\n"),
        );
        for (text, why) in [
            (&other, "does not name the UKI"),
            (&both, "does not write"),
            (&after, "does not write"),
        ] {
            let set = parse_menu(text.as_bytes());
            assert!(set.ours.is_empty(), "{text}");
            let problem = set.unparsed_ours().next().unwrap().problem.clone().unwrap();
            assert!(problem.contains(why), "{problem}");
        }
    }

    /// A menu whose last block of ours lacks the file's final newline reads that block
    /// as ours (found by the grub_menu fuzz target: it was carried, then read as ours
    /// after the rewrite added the newline); the rewrite ends it with the newline.
    #[test]
    fn last_block_without_final_newline_is_ours() {
        let a = "a".repeat(64);
        let e = entry(&a, "A", &format!("rw composefs=sha256:{a}"));
        let set = EntrySet {
            ours: vec![Entry::new(e)],
            foreign: vec![],
        };
        let text = render_menu(&set).unwrap();
        let cut = text.strip_suffix(b"\n").unwrap();
        let back = parse_menu(cut);
        assert_eq!(back, set, "{}", String::from_utf8_lossy(cut));
        assert_eq!(render_menu(&back).unwrap(), text);
    }

    /// Everything that is not exactly a block we would write is carried byte for byte,
    /// after our blocks, in its order; a block named like ours that cannot be used is
    /// reported (its problem) and never rewritten.
    #[test]
    fn foreign_and_broken_blocks_are_carried_byte_for_byte() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let good = render_block(&entry(&a, "A", &format!("rw composefs=sha256:{a}")));
        let other = "menuentry \"Windows\" {\n\tchainloader /EFI/Microsoft/Boot/bootmgfw.efi\n}\n";
        let loose = "set timeout=10\n# a comment of the user\n";
        let bad_karg = render_block(&entry(&b, "B", "rw composefs=sha256:nothex"));
        let hand_edited = render_block(&entry(&c, "C", &format!("rw composefs=sha256:{c}")))
            .replace("    linux", "    echo hello\n    linux");
        let unterminated = "menuentry 'x' {\n  linux /y\n";
        let text = format!("{HEADER}{loose}{other}{bad_karg}{good}{hand_edited}{unterminated}");
        let set = parse_menu(text.as_bytes());
        assert_eq!(set.deployments().len(), 1);
        assert_eq!(set.deployments()[0].hex(), a);
        let carried: Vec<String> = set
            .foreign
            .iter()
            .map(|r| match &r.content {
                RawContent::File { bytes, .. } => String::from_utf8(bytes.clone()).unwrap(),
                _ => panic!("not a file"),
            })
            .collect();
        assert_eq!(
            carried,
            vec![
                loose.to_string(),
                other.into(),
                bad_karg.clone(),
                hand_edited.clone(),
                unterminated.into()
            ]
        );
        let broken: Vec<&RawEntry> = set.unparsed_ours().collect();
        assert_eq!(broken.len(), 2);
        let problem = |i: usize| broken[i].problem.clone().unwrap();
        assert!(problem(0).contains("composefs="), "{}", problem(0));
        assert!(problem(1).contains("does not write"), "{}", problem(1));
        // Rewritten (a rollback would), the carried text is unchanged and follows ours.
        let out = String::from_utf8(render_menu(&set).unwrap()).unwrap();
        assert_eq!(
            out,
            format!("{HEADER}{good}{loose}{other}{bad_karg}{hand_edited}{unterminated}")
        );
        // A lone menuentry line of ours at the end (found by the grub_menu fuzz
        // target: it panicked on a one-line block).
        let lone = format!("menuentry 'x' --id 'bootc_composefs-{a}' {{");
        let set = parse_menu(lone.as_bytes());
        assert!(set.ours.is_empty());
        assert_eq!(set.unparsed_ours().count(), 1);
        // Not UTF-8, no newline at the end: still no panic, still carried.
        let odd = b"menuentry 'bootc_composefs-\xff' {\n}";
        let set = parse_menu(odd);
        assert!(set.ours.is_empty());
        assert_eq!(set.unparsed_ours().count(), 1);
        let out = render_menu(&set).unwrap();
        assert!(out.ends_with(b"{\n}\n"));
    }

    /// The staged menu replaces the current one in one exchange; until then the
    /// current one is untouched.
    #[test]
    fn staged_menu_is_exchanged_atomically() {
        let (t, boot) = boot();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let one = EntrySet {
            ours: vec![Entry::new(entry(
                &a,
                "A",
                &format!("rw composefs=sha256:{a}"),
            ))],
            foreign: vec![],
        };
        assert!(Grub.read_current(boot.as_fd()).unwrap().is_none());
        Grub.replace(boot.as_fd(), &one).unwrap();
        assert_eq!(Grub.read_current(boot.as_fd()).unwrap().unwrap(), one);
        assert!(Grub.read_staged(boot.as_fd()).unwrap().is_none());

        let mut two = one.clone();
        let eb = entry(&b, "B", &format!("rw composefs=sha256:{b}"));
        two.ours.insert(0, Entry::new(eb));
        Grub.write_staged(boot.as_fd(), &two).unwrap();
        let current = || Grub.read_current(boot.as_fd()).unwrap().unwrap();
        let staged = || Grub.read_staged(boot.as_fd()).unwrap().unwrap();
        assert_eq!(current(), one, "unchanged until the exchange");
        assert_eq!(staged(), two);
        Grub.exchange_staged(boot.as_fd()).unwrap();
        assert_eq!(current(), two);
        assert_eq!(staged(), one, "the old menu under the staged name");
        assert!(Grub.discard_staged(boot.as_fd()).unwrap());
        assert!(!Grub.discard_staged(boot.as_fd()).unwrap());
        let names: Vec<_> = std::fs::read_dir(t.path().join(grub_dir()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("user.cfg")]);
    }

    #[test]
    fn split_words_never_panics_and_refuses_what_we_never_write() {
        assert_eq!(
            split_words("a 'b c' d\\'e"),
            Some(vec!["a".into(), "b c".into(), "d'e".into()])
        );
        for bad in ["'open", "x\\", "\"dq\"", "$var"] {
            assert_eq!(split_words(bad), None, "{bad}");
        }
    }
}
