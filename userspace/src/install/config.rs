//! Install configuration shipped in the image: `bootc/install/*.toml` under `/usr/lib`,
//! `/usr/local/lib`, `/etc` (and `/run` on a running system), in upstream bootc's format.
//!
//! Each file holds one `[install]` table. What applies to the composefs backend is read:
//! `kargs`, `karg-deletes`, `root-fs-type` (also spelled `[install.filesystem.root]
//! type`, which wins) and `match-architectures`. Keys upstream knows but that have no
//! meaning here (`block`, `stateroot`, `ostree`, `bootloader`, …) are ignored with a
//! warning; any other key is an error, as upstream refuses unknown keys.
//!
//! Files are taken in lexical order of their names; a file in a later base directory
//! replaces the one of the same name in an earlier base (so `/etc` overrides `/usr/lib`).
//! A file whose `match-architectures` does not list this architecture is skipped. Merge
//! rules (upstream's): a later file's scalars replace earlier ones, its lists
//! (`kargs`, `karg-deletes`) are appended, and `match-architectures` stays the first
//! applied file's.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs::tree::{FileSystem, Inode, LeafContent};

use crate::boot::bls;

/// The directory of the configuration files under each base.
pub(crate) const SUBDIR: &str = "bootc/install";
/// The base directories in the image, lowest precedence first.
pub(crate) const IMAGE_BASES: [&str; 3] = ["usr/lib", "usr/local/lib", "etc"];
/// The base directories on a running system, lowest precedence first.
pub(crate) const RUNNING_BASES: [&str; 4] = ["usr/lib", "usr/local/lib", "etc", "run"];

/// Keys of upstream's `[install]` table that have no effect with this backend.
const IGNORED_KEYS: &[&str] = &[
    "block",
    "ostree",
    "stateroot",
    "root-mount-spec",
    "boot-mount-spec",
    "bootupd",
    "bootloader",
    "discoverable-partitions",
    "enforce-container-sigpolicy",
];

/// A root filesystem type upstream's configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootFsType {
    Xfs,
    Ext4,
    Btrfs,
}

impl RootFsType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "xfs" => Some(Self::Xfs),
            "ext4" => Some(Self::Ext4),
            "btrfs" => Some(Self::Btrfs),
            _ => None,
        }
    }

    /// The name in the configuration.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Xfs => "xfs",
            Self::Ext4 => "ext4",
            Self::Btrfs => "btrfs",
        }
    }
}

/// The merged `[install]` configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InstallConfig {
    /// Root filesystem type (`root-fs-type` or `filesystem.root.type`).
    pub(crate) root_fs_type: Option<RootFsType>,
    /// Kernel arguments added at install.
    pub(crate) kargs: Option<Vec<String>>,
    /// Kernel arguments removed at install (a name, or an exact `name=value`).
    pub(crate) karg_deletes: Option<Vec<String>>,
    /// The architectures the first applied file was restricted to.
    pub(crate) match_architectures: Option<Vec<String>>,
}

/// One parsed file, before merging.
#[derive(Debug, Default)]
struct Fragment {
    root_fs_type: Option<RootFsType>,
    filesystem_root_type: Option<RootFsType>,
    kargs: Option<Vec<String>>,
    karg_deletes: Option<Vec<String>>,
    match_architectures: Option<Vec<String>>,
}

impl InstallConfig {
    /// Merges `f` (a later file) into `self`.
    fn merge(&mut self, f: Fragment) {
        // The nested spelling wins over the flat one, as upstream canonicalizes.
        if let Some(t) = f.filesystem_root_type.or(f.root_fs_type) {
            self.root_fs_type = Some(t);
        }
        if let Some(k) = f.kargs {
            self.kargs.get_or_insert_with(Vec::new).extend(k);
        }
        if let Some(k) = f.karg_deletes {
            self.karg_deletes.get_or_insert_with(Vec::new).extend(k);
        }
        if self.match_architectures.is_none() {
            self.match_architectures = f.match_architectures;
        }
    }

    /// The configuration as upstream's `install print-configuration` prints it: the
    /// `[install]` keys in kebab-case, sorted, unset ones `null`; `kargs` and
    /// `karg-deletes` only with `all` (upstream leaves what install handles itself out
    /// by default).
    pub(crate) fn to_json(&self, all: bool) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let fs_type = self.root_fs_type.map(|t| t.name());
        let mut m = Map::new();
        m.insert("root-fs-type".into(), json!(fs_type));
        m.insert(
            "filesystem".into(),
            match fs_type {
                Some(t) => json!({ "root": { "type": t } }),
                None => Value::Null,
            },
        );
        m.insert(
            "match-architectures".into(),
            json!(self.match_architectures),
        );
        if all {
            if let Some(k) = &self.kargs {
                m.insert("kargs".into(), json!(k));
            }
            if let Some(k) = &self.karg_deletes {
                m.insert("karg-deletes".into(), json!(k));
            }
        }
        Value::Object(m)
    }
}

/// Whether a file restricted to `archs` applies to this machine.
fn applies(archs: &Option<Vec<String>>, arch: &str) -> bool {
    archs.as_ref().is_none_or(|a| a.iter().any(|x| x == arch))
}

/// Merges the files `(path, bytes)` (already in order; `path` names each in messages)
/// for architecture `arch`. Every file is parsed and checked, also one for another
/// architecture: the image is wrong either way. `None` when no file applies.
pub(crate) fn merge_files(
    files: &[(String, Vec<u8>)],
    arch: &str,
) -> Result<Option<InstallConfig>> {
    let mut out: Option<InstallConfig> = None;
    for (path, bytes) in files {
        let f = parse_file(path, bytes)?;
        if !applies(&f.match_architectures, arch) {
            tracing::info!("{path}: not for {arch} (match-architectures): skipped");
            continue;
        }
        out.get_or_insert_with(InstallConfig::default).merge(f);
    }
    Ok(out)
}

/// toml's message on one line, with the line number, capped.
fn toml_error(path: &str, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let line = e
        .span()
        .map(|r| format!(" at line {}", text[..r.start].matches('\n').count() + 1))
        .unwrap_or_default();
    let msg = crate::sys::cmd::cap(&bootc_initramfs_setup::one_line(e.message()), 120);
    anyhow::anyhow!("{path}: not valid TOML{line}: {msg}")
}

/// Parses one file (`path` names it in errors). Pure, never panics.
fn parse_file(path: &str, bytes: &[u8]) -> Result<Fragment> {
    let text = std::str::from_utf8(bytes).with_context(|| format!("{path}: not UTF-8"))?;
    let top: toml::Table = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let mut f = Fragment::default();
    for (key, value) in &top {
        if key != "install" {
            bail!("{path}: unknown key {key}: expected an [install] table");
        }
        let Some(install) = value.as_table() else {
            bail!("{path}: install must be a table ([install])");
        };
        for (k, v) in install {
            let name = format!("install.{k}");
            match k.as_str() {
                "kargs" => {
                    let list = strings(path, &name, v)?;
                    for karg in &list {
                        bls::check_karg(karg, path)?;
                    }
                    f.kargs = Some(list);
                }
                "karg-deletes" => {
                    let list = strings(path, &name, v)?;
                    for d in &list {
                        check_delete(d).with_context(|| format!("{path}: {name}"))?;
                    }
                    f.karg_deletes = Some(list);
                }
                "match-architectures" => f.match_architectures = Some(strings(path, &name, v)?),
                "root-fs-type" => f.root_fs_type = Some(fs_type(path, &name, v)?),
                "filesystem" => f.filesystem_root_type = filesystem(path, v)?,
                k if IGNORED_KEYS.contains(&k) => {
                    tracing::warn!(
                        "{path}: {name} does not apply to the composefs backend: ignored"
                    )
                }
                _ => bail!("{path}: unknown key {name}"),
            }
        }
    }
    Ok(f)
}

/// `[install.filesystem]`: only `root.type`.
fn filesystem(path: &str, v: &toml::Value) -> Result<Option<RootFsType>> {
    let Some(t) = v.as_table() else {
        bail!("{path}: install.filesystem must be a table");
    };
    let mut out = None;
    for (k, v) in t {
        if k != "root" {
            bail!("{path}: unknown key install.filesystem.{k} (only root is configurable)");
        }
        let Some(root) = v.as_table() else {
            bail!("{path}: install.filesystem.root must be a table");
        };
        for (k, v) in root {
            if k != "type" {
                bail!("{path}: unknown key install.filesystem.root.{k}");
            }
            out = Some(fs_type(path, "install.filesystem.root.type", v)?);
        }
    }
    Ok(out)
}

fn fs_type(path: &str, name: &str, v: &toml::Value) -> Result<RootFsType> {
    v.as_str().and_then(RootFsType::parse).with_context(|| {
        let found = match v.as_str() {
            Some(s) => format!("{:?}", crate::sys::cmd::cap(s, 40)),
            None => format!("a {}", v.type_str()),
        };
        format!("{path}: {name} must be one of \"xfs\", \"ext4\", \"btrfs\" (found {found})")
    })
}

fn strings(path: &str, name: &str, v: &toml::Value) -> Result<Vec<String>> {
    let bad = || anyhow::anyhow!("{path}: {name} must be an array of strings");
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|s| s.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

/// One argument to delete: a name, or an exact `name=value`, as one word.
pub(crate) fn check_delete(d: &str) -> Result<()> {
    if d.is_empty() || d.starts_with('=') {
        bail!("{d:?} is not a kernel argument name (or name=value) to delete");
    }
    if d.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        bail!("{d:?}: a kernel argument to delete is one word (name or name=value)");
    }
    Ok(())
}

/// Picks the files to read from the per-base listings (lowest precedence first): a name
/// in a later base replaces the same name in an earlier one; the result is in name order.
fn select<T>(bases: Vec<Vec<(String, T)>>) -> Vec<T> {
    let mut by_name = BTreeMap::new();
    for base in bases {
        for (name, v) in base {
            by_name.insert(name, v);
        }
    }
    by_name.into_values().collect()
}

/// The merged configuration of an image tree, for this architecture.
pub(crate) fn from_image<H: FsVerityHashValue>(
    repo: &Repository<H>,
    fs: &FileSystem<H>,
) -> Result<Option<InstallConfig>> {
    let mut bases = vec![];
    for base in IMAGE_BASES {
        let dir_path = format!("/{base}/{SUBDIR}");
        let mut found = vec![];
        if let Ok(Some(dir)) = fs.as_dir().get_directory_ref_opt(OsStr::new(&dir_path)) {
            for (name, inode) in dir.entries() {
                let name = name.to_string_lossy().into_owned();
                if !name.ends_with(".toml") {
                    continue;
                }
                if let Inode::Leaf(id, _) = inode {
                    if let LeafContent::Regular(f) = &dir.leaf(*id).content {
                        let path = format!("{dir_path}/{name}");
                        let bytes = composefs::fs::read_file(f, repo)
                            .with_context(|| format!("reading {path}"))?;
                        found.push((name, (path, bytes.into_vec())));
                    }
                }
            }
        }
        bases.push(found);
    }
    merge_files(&select(bases), std::env::consts::ARCH)
}

/// The merged configuration of a running system whose root is `root`, for this
/// architecture.
pub(crate) fn from_root(root: &Path) -> Result<Option<InstallConfig>> {
    let mut bases = vec![];
    for base in RUNNING_BASES {
        let dir = root.join(base).join(SUBDIR);
        let mut found = vec![];
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bases.push(found);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !name.ends_with(".toml") || !path.is_file() {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            found.push((name, (path.display().to_string(), bytes)));
        }
        bases.push(found);
    }
    merge_files(&select(bases), std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(v: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        v.iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn merges_in_order_and_skips_other_architectures() {
        let c = merge_files(
            &files(&[
                ("10", "[install]\nroot-fs-type = \"xfs\"\nkargs = [\"a\"]\n"),
                (
                    "20",
                    "[install]\nmatch-architectures = [\"other\"]\nkargs = [\"no\"]\n",
                ),
                (
                    "30",
                    "[install]\nkargs = [\"b=1\"]\nkarg-deletes = [\"c\"]\n[install.filesystem.root]\ntype = \"ext4\"\n",
                ),
            ]),
            "x86_64",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.kargs.unwrap(), vec!["a", "b=1"]);
        assert_eq!(c.karg_deletes.unwrap(), vec!["c"]);
        assert_eq!(c.root_fs_type, Some(RootFsType::Ext4));
        // Only a file for another architecture: nothing applies.
        let none = merge_files(
            &files(&[("x", "[install]\nmatch-architectures = [\"other\"]\n")]),
            "x86_64",
        )
        .unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn refuses_what_it_cannot_read_naming_the_file() {
        for (text, want) in [
            ("[install\n", "f.toml: not valid TOML at line 1"),
            (
                "[install]\nkargs = \"a\"\n",
                "install.kargs must be an array",
            ),
            (
                "[install]\nroot-fs-type = \"zfs\"\n",
                "root-fs-type must be one of",
            ),
            ("[install]\nkargz = [\"a\"]\n", "unknown key install.kargz"),
            ("[other]\n", "unknown key other"),
            (
                "[install]\nkargs = [\"composefs=x\"]\n",
                "bootc sets composefs=",
            ),
            ("[install]\nkarg-deletes = [\"a b\"]\n", "one word"),
            (
                "[install.filesystem.boot]\ntype = \"xfs\"\n",
                "install.filesystem.boot",
            ),
        ] {
            let e = merge_files(&files(&[("f.toml", text)]), "x86_64").unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains("f.toml") && e.contains(want), "{text:?}: {e}");
        }
        // Keys upstream knows that do not apply here are only ignored.
        let c = merge_files(
            &files(&[("f", "[install]\nblock = [\"direct\"]\nstateroot = \"x\"\n")]),
            "x86_64",
        )
        .unwrap();
        assert_eq!(c, Some(InstallConfig::default()));
    }

    #[test]
    fn later_bases_replace_the_same_name() {
        let picked = select(vec![
            vec![("10.toml".to_string(), 1), ("20.toml".to_string(), 2)],
            vec![("10.toml".to_string(), 3)],
        ]);
        assert_eq!(picked, vec![3, 2]);
    }

    #[test]
    fn json_has_upstreams_shape() {
        let c = InstallConfig {
            root_fs_type: Some(RootFsType::Ext4),
            kargs: Some(vec!["a".into()]),
            karg_deletes: None,
            match_architectures: None,
        };
        assert_eq!(
            c.to_json(false).to_string(),
            r#"{"filesystem":{"root":{"type":"ext4"}},"match-architectures":null,"root-fs-type":"ext4"}"#
        );
        assert_eq!(c.to_json(true)["kargs"], serde_json::json!(["a"]));
    }
}
