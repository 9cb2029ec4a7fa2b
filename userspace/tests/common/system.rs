//! An installed system for the day-2 tests: a real ext4 root installed by
//! `bootc install to-filesystem`, driven with `--sysroot --booted-deployment --run-dir`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci;

use super::*;

/// An installed v1 system with v2 and v3 available in an OCI layout.
pub struct System {
    pub t: tempfile::TempDir,
    pub root: PathBuf,
    pub layout: PathBuf,
    pub v1: String,
    /// The boot loader it was installed with (`--bootloader`, default systemd).
    pub loader: String,
}

/// One of our entries as a boot loader's menu holds it, read independently of bootc's
/// own readers (a test oracle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuEntry {
    /// The deployment id (hex).
    pub id: String,
    /// The kernel path on the ESP (empty for a UKI entry).
    pub linux: String,
    /// The UKI path on the ESP of a UKI entry (systemd-boot's `efi`, GRUB's
    /// `chainloader`), else empty.
    pub efi: String,
    /// The initrd paths.
    pub initrd: Vec<String>,
    /// The kernel arguments, one per argument (quotes removed, as the kernel reads them).
    pub args: Vec<String>,
    /// The text that holds the entry (the entry file, the menuentry block).
    pub text: String,
    /// The boot counter of its file name (`+3`, `+2-1`), systemd-boot only.
    pub counter: Option<String>,
}

impl MenuEntry {
    /// The kernel arguments as one command line (`cmdline::join`).
    pub fn options(&self) -> String {
        bootc_initramfs_setup::cmdline::join(&self.args)
    }
}

/// Splits a line of GRUB script the way our menu quotes it: `'…'` literal, `\c`.
fn grub_words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut in_word) = (vec![], String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The entries of ours in a loader's menu under the boot partition `boot`, in boot
/// order; the staged menu with `staged`. Empty when the menu does not exist.
pub fn read_menu(boot: &Path, loader: &str, staged: bool) -> Vec<MenuEntry> {
    match loader {
        "systemd" => {
            let dir = boot.join(if staged {
                "loader/entries.staged"
            } else {
                "loader/entries"
            });
            let Ok(rd) = fs::read_dir(&dir) else {
                return vec![];
            };
            let mut v: Vec<(String, MenuEntry)> = vec![];
            for e in rd {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = name
                    .strip_prefix("bootc_composefs-")
                    .and_then(|n| n.strip_suffix(".conf"))
                else {
                    continue;
                };
                let (id, counter) = match stem.split_once('+') {
                    Some((id, c)) => (id, Some(format!("+{c}"))),
                    None => (stem, None),
                };
                let text = fs::read_to_string(e.path()).unwrap();
                let get = |k: &str| {
                    text.lines()
                        .filter_map(|l| l.strip_prefix(k).map(str::to_string))
                        .collect::<Vec<_>>()
                };
                let key = get("sort-key ").pop().unwrap_or_else(|| "~".into());
                // systemd-boot sorts entries out of tries last.
                let failed = counter
                    .as_deref()
                    .is_some_and(|c| c.trim_start_matches('+').split('-').next() == Some("0"));
                v.push((
                    format!("{}{key}", u8::from(failed)),
                    MenuEntry {
                        counter,
                        id: id.to_string(),
                        linux: get("linux ").pop().unwrap_or_default(),
                        efi: get("efi ").pop().unwrap_or_default(),
                        initrd: get("initrd "),
                        args: bootc_initramfs_setup::cmdline::tokenize(
                            &get("options ").pop().unwrap_or_default(),
                        ),
                        text: text.clone(),
                    },
                ));
            }
            v.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
            v.into_iter().map(|(_, e)| e).collect()
        }
        "grub" => {
            let file = boot.join(if staged {
                "grub2/user.cfg.staged"
            } else {
                "grub2/user.cfg"
            });
            let Ok(text) = fs::read_to_string(&file) else {
                return vec![];
            };
            let mut out: Vec<MenuEntry> = vec![];
            let mut cur: Option<MenuEntry> = None;
            for line in text.lines() {
                let w = grub_words(line);
                match w.first().map(String::as_str) {
                    Some("menuentry") => {
                        let id = w
                            .iter()
                            .position(|x| x == "--id")
                            .and_then(|i| w.get(i + 1))
                            .and_then(|id| id.strip_prefix("bootc_composefs-"));
                        cur = id.map(|id| MenuEntry {
                            counter: None,
                            id: id.to_string(),
                            linux: String::new(),
                            efi: String::new(),
                            initrd: vec![],
                            args: vec![],
                            text: String::new(),
                        });
                    }
                    Some("linux") => {
                        if let Some(c) = cur.as_mut() {
                            c.linux = w[1].clone();
                            c.args = w[2..].to_vec();
                        }
                    }
                    Some("initrd") => {
                        if let Some(c) = cur.as_mut() {
                            c.initrd.extend(w[1..].iter().cloned());
                        }
                    }
                    Some("chainloader") => {
                        if let Some(c) = cur.as_mut() {
                            c.efi = w[1..].join(" ");
                        }
                    }
                    Some("}") => out.extend(cur.take()),
                    _ => {}
                }
                if let Some(c) = cur.as_mut() {
                    c.text.push_str(line);
                    c.text.push('\n');
                }
            }
            out
        }
        other => panic!("no menu reader for {other}"),
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
    }
}

impl System {
    /// Installs v1 on a 1 GiB ext4 image.
    pub fn install() -> System {
        Self::install_on(1 << 30, &[], "loop")
    }

    /// Installs v1 on an ext4 image of `size` bytes made with `mkfs.ext4 -O verity
    /// MKFS_EXTRA…` and mounted with `-o MOUNT_OPTS`.
    pub fn install_on(size: u64, mkfs_extra: &[&str], mount_opts: &str) -> System {
        Self::install_image(size, mkfs_extra, mount_opts, |_| {}, "v1", &[])
    }

    /// [`System::install_on`], but `prepare` may add images to the layout (after v1–v3
    /// are written) and the install is of `tag` with `extra` install arguments; the
    /// installed deployment's id is still in `v1`.
    pub fn install_image(
        size: u64,
        mkfs_extra: &[&str],
        mount_opts: &str,
        prepare: impl FnOnce(&Path),
        tag: &str,
        extra: &[&str],
    ) -> System {
        let t = tempdir("bootc-lifecycle-");
        let layout = t.path().join("oci");
        for v in 1..=3 {
            oci::write_image(&layout, &format!("v{v}"), &images::bootable(v), &[]).unwrap();
        }
        prepare(&layout);
        let img = t.path().join("root.img");
        disk_image(&img, size);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "verity"])
            .args(mkfs_extra)
            .arg(&img));
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        run(Command::new("mount")
            .args(["-o", mount_opts])
            .arg(&img)
            .arg(&root));
        fs::create_dir(root.join("boot")).unwrap();
        fs::create_dir(t.path().join("run")).unwrap();
        let src = format!("oci:{}:{tag}", layout.display());
        let out = install_to_filesystem(&src, &root, extra);
        assert!(out.status.success(), "install of {src} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .split("deployment sha256:")
            .nth(1)
            .expect("install prints the id");
        let v1 = id.trim().to_string();
        let loader = extra
            .iter()
            .position(|a| *a == "--bootloader")
            .and_then(|i| extra.get(i + 1))
            .unwrap_or(&"systemd")
            .to_string();
        System {
            t,
            root,
            layout,
            v1,
            loader,
        }
    }

    /// Writes `v<version>` plus `/usr/lib/bootc/kargs.d/<file>` holding `toml` to the
    /// system's layout as `tag`.
    pub fn kargs_image(&self, file: &str, tag: &str, version: u32, toml: &str) {
        kargs_image(&self.layout, file, tag, version, toml)
    }

    pub fn imgref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.layout.display())
    }

    /// `bootc --sysroot ROOT --booted-deployment ID --run-dir RUN ARGS`.
    pub fn bootc(&self, booted: &str, args: &[&str]) -> std::process::Output {
        self.bootc_env(booted, args, &[])
    }

    /// [`System::bootc`] with extra environment variables.
    pub fn bootc_env(
        &self,
        booted: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let all = self.args(booted, args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        bootc_with_env(&refs, env)
    }

    /// `--sysroot ROOT --run-dir RUN --booted-deployment sha256:BOOTED ARGS…`.
    pub fn args(&self, booted: &str, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec![
            "--sysroot".into(),
            self.root.display().to_string(),
            "--run-dir".into(),
            self.t.path().join("run").display().to_string(),
            "--booted-deployment".into(),
            format!("sha256:{booted}"),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    pub fn bootc_ok(&self, booted: &str, args: &[&str]) -> String {
        let out = self.bootc(booted, args);
        assert!(out.status.success(), "bootc {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn bootc_err(&self, booted: &str, args: &[&str]) -> String {
        let out = self.bootc(booted, args);
        assert!(!out.status.success(), "bootc {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn etc(&self, id: &str) -> PathBuf {
        self.root.join("state/deploy").join(id).join("etc")
    }

    pub fn status(&self, booted: &str) -> serde_json::Value {
        let s = self.bootc_ok(booted, &["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        validate(&v);
        v
    }

    /// Deployment ids in boot order (the loader's current menu), or of the staged one.
    pub fn order(&self, staged: bool) -> Vec<String> {
        self.menu(staged).into_iter().map(|e| e.id).collect()
    }

    /// Our entries in the loader's current (or staged) menu, in boot order.
    pub fn menu(&self, staged: bool) -> Vec<MenuEntry> {
        read_menu(&self.root.join("boot"), &self.loader, staged)
    }

    /// The file of deployment `id`'s entry in `loader/entries` (or `.staged`), whatever
    /// boot counter its name carries (systemd-boot).
    pub fn entry_path(&self, id: &str, staged: bool) -> PathBuf {
        let dir = self.root.join(if staged {
            "boot/loader/entries.staged"
        } else {
            "boot/loader/entries"
        });
        let plain = dir.join(format!("bootc_composefs-{id}.conf"));
        let Ok(rd) = fs::read_dir(&dir) else {
            return plain;
        };
        rd.map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n == format!("bootc_composefs-{id}.conf")
                    || n.starts_with(&format!("bootc_composefs-{id}+"))
            })
            .unwrap_or(plain)
    }

    /// The entry of deployment `id` in the current menu.
    /// Every file each entry of `menu` needs exists: kernel and initrds (or the UKI)
    /// on the boot partition, the deployment's EROFS image, state and /etc on the
    /// physical root.
    pub fn assert_bootable(&self, menu: &[MenuEntry], what: &str) {
        let boot = self.root.join("boot");
        for e in menu {
            let files: Vec<&String> = if e.efi.is_empty() {
                std::iter::once(&e.linux).chain(&e.initrd).collect()
            } else {
                vec![&e.efi]
            };
            for p in files {
                let f = boot.join(p.trim_start_matches('/'));
                assert!(
                    f.is_file(),
                    "{what}: {} is missing for {}",
                    f.display(),
                    e.id
                );
            }
            for p in [
                format!("composefs/images/{}", e.id),
                format!("state/deploy/{}/etc", e.id),
            ] {
                assert!(self.root.join(&p).exists(), "{what}: {p} is missing");
            }
            if !e.efi.is_empty() {
                // A UKI's command line is sealed in it, not in the menu.
                assert!(e.args.is_empty(), "{what}: {}", e.text);
                continue;
            }
            let cfs = e
                .args
                .iter()
                .filter(|a| a.starts_with("composefs="))
                .collect::<Vec<_>>();
            assert_eq!(
                cfs,
                vec![&format!("composefs=?sha256:{}", e.id)],
                "{what}: {}",
                e.text
            );
        }
    }

    pub fn entry_of(&self, id: &str) -> MenuEntry {
        self.menu(false)
            .into_iter()
            .find(|e| e.id == id)
            .unwrap_or_else(|| panic!("{}: no entry for {id}", self.loader))
    }

    /// Everything a refused verb must leave alone: `state/` (but the lock file, whose
    /// content is the last holder's pid), the whole boot partition, and the run
    /// directory (the staged marker).
    pub fn disk(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, dir) in [
            ("state", self.root.join("state")),
            ("boot", self.root.join("boot")),
            ("run", self.t.path().join("run")),
        ] {
            for (k, v) in snapshot(&dir) {
                if name == "state" && k == "bootc.lock" {
                    continue;
                }
                out.insert(format!("{name}/{k}"), v);
            }
        }
        out
    }

    pub fn marker(&self) -> Option<String> {
        fs::read_to_string(self.t.path().join("run/composefs/staged-deployment"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Upgrade (as `booted`) to `tag` via switch, finalize, return the new id.
    pub fn switch_and_finalize(&self, booted: &str, tag: &str, extra: &[&str]) -> String {
        let r = self.imgref(tag);
        let mut args = vec!["switch", r.as_str()];
        args.extend_from_slice(extra);
        self.bootc_ok(booted, &args);
        let id = self.marker().expect("staged marker");
        self.bootc_ok(booted, &["composefs-finalize-staged"]);
        assert_eq!(self.order(false)[0], id);
        id
    }
}

/// Writes `v<version>` plus `/usr/lib/bootc/kargs.d/<file>` holding `toml` to the OCI
/// layout at `layout` as `tag`.
pub fn kargs_image(layout: &Path, file: &str, tag: &str, version: u32, toml: &str) {
    let mut layers = images::bootable(version);
    layers.push(
        oci::Layer::new()
            .dir("usr/lib/bootc", 0o755)
            .dir("usr/lib/bootc/kargs.d", 0o755)
            .file(&format!("usr/lib/bootc/kargs.d/{file}"), toml, 0o644),
    );
    oci::write_image(layout, tag, &layers, &[]).unwrap();
}

pub fn validate(v: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../host-v1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "status JSON does not match the schema: {errors:?}\n{v:#}"
    );
}

/// path → "type mode uid gid content-or-target" for a tree.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    pub fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let head = format!("{:o} {} {}", m.mode() & 0o7777, m.uid(), m.gid());
            let v = if m.file_type().is_symlink() {
                format!("l {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(base, &p, out);
                format!("d {head}")
            } else {
                format!(
                    "f {head} {}",
                    String::from_utf8_lossy(&fs::read(&p).unwrap())
                )
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Adds `rel path → "type mode uid gid …"` for everything under `dir` to `out`, paths
/// relative to `base` with non-UTF-8 bytes escaped: regular files as size and sha256,
/// symlinks as their target, FIFOs, sockets and devices by type (never opened). The
/// lock file's pid, rewritten in place by every writer, is left out of its entry.
pub fn hashed_listing(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p
            .strip_prefix(base)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .escape_ascii()
            .to_string();
        let head = format!("{:o} {} {}", m.mode() & 0o7777, m.uid(), m.gid());
        let ft = m.file_type();
        let v = if ft.is_symlink() {
            format!("l {}", fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            hashed_listing(base, &p, out);
            format!("d {head}")
        } else if ft.is_file() && rel.ends_with("state/bootc.lock") {
            format!("f {head} {}", m.size())
        } else if ft.is_file() {
            let data = fs::read(&p).unwrap();
            format!(
                "f {head} {} {}",
                data.len(),
                hex::encode(Sha256::digest(&data))
            )
        } else {
            format!("s {head} {:o}", m.mode() & 0o170000)
        };
        out.insert(rel, v);
    }
}

pub fn file_snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let e = e.unwrap();
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}
