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
        let t = tempdir("bootc-lifecycle-");
        let layout = t.path().join("oci");
        for v in 1..=3 {
            oci::write_image(&layout, &format!("v{v}"), &images::bootable(v), &[]).unwrap();
        }
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
        let src = format!("oci:{}:v1", layout.display());
        let out = install_to_filesystem(&src, &root, &[]);
        assert!(out.status.success(), "install of {src} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .split("deployment sha256:")
            .nth(1)
            .expect("install prints the id");
        let v1 = id.trim().to_string();
        System {
            t,
            root,
            layout,
            v1,
        }
    }

    /// Writes `v<version>` plus `/usr/lib/bootc/kargs.d/<file>` holding `toml` to the
    /// system's layout as `tag`.
    pub fn kargs_image(&self, file: &str, tag: &str, version: u32, toml: &str) {
        let mut layers = images::bootable(version);
        layers.push(
            oci::Layer::new()
                .dir("usr/lib/bootc", 0o755)
                .dir("usr/lib/bootc/kargs.d", 0o755)
                .file(&format!("usr/lib/bootc/kargs.d/{file}"), toml, 0o644),
        );
        oci::write_image(&self.layout, tag, &layers, &[]).unwrap();
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

    /// Deployment ids in boot order (`loader/entries`), or of the staged set.
    pub fn order(&self, staged: bool) -> Vec<String> {
        let dir = self.root.join(if staged {
            "boot/loader/entries.staged"
        } else {
            "boot/loader/entries"
        });
        let mut entries: Vec<(String, String)> = match fs::read_dir(&dir) {
            Ok(rd) => rd
                .map(|e| {
                    let e = e.unwrap();
                    let text = fs::read_to_string(e.path()).unwrap();
                    let key = text
                        .lines()
                        .find_map(|l| l.strip_prefix("sort-key "))
                        .unwrap_or("~")
                        .to_string();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (key, name)
                })
                .collect(),
            Err(_) => return vec![],
        };
        entries.sort();
        entries
            .into_iter()
            .filter_map(|(_, n)| {
                n.strip_prefix("bootc_composefs-")
                    .and_then(|n| n.strip_suffix(".conf"))
                    .map(str::to_string)
            })
            .collect()
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
