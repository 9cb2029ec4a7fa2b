//! Write OCI image layouts (image-spec 1.1) from declared file trees.
//!
//! Layers are uncompressed tars with fixed timestamps, so the same declaration always
//! gives the same digests. Several images can share one layout (one tag each).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A fixed mtime for every entry (reproducible layers).
pub const MTIME: u64 = 1_700_000_000;

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target.
    Symlink(String),
    /// An overlay whiteout: deletes this path from lower layers.
    Whiteout,
    /// A hard link to this earlier path of the same layer.
    Hardlink(String),
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading slash, e.g. `usr/bin/sh`.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Extended attributes (`user.*`, `security.*`, …).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A layer: an ordered list of entries.
#[derive(Debug, Clone, Default)]
pub struct Layer(pub Vec<Entry>);

impl Layer {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, path: &str, kind: Kind, mode: u32) -> Self {
        self.0.push(Entry {
            path: path.trim_start_matches('/').to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            xattrs: vec![],
        });
        self
    }

    /// Adds a directory.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.push(path, Kind::Dir, mode)
    }

    /// Adds a regular file.
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.push(path, Kind::File(data.into()), mode)
    }

    /// Adds a symlink.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.push(path, Kind::Symlink(target.into()), 0o777)
    }

    /// Adds a hard link at `path` to `target` (an earlier file of this layer).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.push(path, Kind::Hardlink(target.into()), 0o644)
    }

    /// Adds a whiteout for `path`.
    pub fn whiteout(self, path: &str) -> Self {
        self.push(path, Kind::Whiteout, 0)
    }

    /// Sets the owner of the last entry.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        let e = self.0.last_mut().expect("owner() after an entry");
        e.uid = uid;
        e.gid = gid;
        self
    }

    /// Adds an xattr to the last entry.
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        let e = self.0.last_mut().expect("xattr() after an entry");
        e.xattrs.push((name.into(), value.into()));
        self
    }

    /// The layer as an uncompressed tar stream.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.0 {
            if !e.xattrs.is_empty() {
                let pax: Vec<(String, &[u8])> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))?;
            }
            let mut h = tar::Header::new_ustar();
            h.set_mtime(MTIME);
            h.set_uid(e.uid);
            h.set_gid(e.gid);
            h.set_mode(e.mode);
            match &e.kind {
                Kind::File(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &e.path, data.as_slice())?;
                }
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{}/", e.path), std::io::empty())?;
                }
                Kind::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &e.path, target)?;
                }
                Kind::Hardlink(target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &e.path, target)?;
                }
                Kind::Whiteout => {
                    let p = Path::new(&e.path);
                    let name = p.file_name().context("whiteout of /")?.to_string_lossy();
                    let wh = p.with_file_name(format!(".wh.{name}"));
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(0);
                    h.set_mode(0o644);
                    b.append_data(&mut h, wh, std::io::empty())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
}

/// What was written for one image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// `sha256:…` of each layer, bottom first.
    pub layer_digests: Vec<String>,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn write_blob(layout: &Path, data: &[u8]) -> Result<String> {
    let digest = sha256(data);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir)?;
    let path = dir.join(&digest["sha256:".len()..]);
    if !path.exists() {
        let mut f =
            fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(data)?;
    }
    Ok(digest)
}

/// Writes an image with `layers` to the OCI layout at `layout` (created if needed) and
/// tags it `tag` in `index.json` (replacing an image with the same tag).
/// `labels` go into the image config.
pub fn write_image(
    layout: &Path,
    tag: &str,
    layers: &[Layer],
    labels: &[(&str, &str)],
) -> Result<ImageInfo> {
    fs::create_dir_all(layout)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut layer_descs = vec![];
    let mut layer_digests = vec![];
    for l in layers {
        let tar = l.to_tar()?;
        let d = write_blob(layout, &tar)?;
        layer_descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d,
            "size": tar.len(),
        }));
        layer_digests.push(d);
    }
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": { "Labels": labels },
        "rootfs": { "type": "layers", "diff_ids": layer_digests },
        "history": layer_digests.iter().map(|_| json!({"created_by": "bootc-test-fixtures"})).collect::<Vec<_>>(),
    }))?;
    let config_digest = write_blob(layout, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layer_descs,
    }))?;
    let manifest_digest = write_blob(layout, &manifest)?;

    let index_path = layout.join("index.json");
    let mut manifests: Vec<serde_json::Value> = match fs::read(&index_path) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)?["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => vec![],
    };
    manifests.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    manifests.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": tag },
    }));
    fs::write(
        &index_path,
        serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": manifests }))?,
    )?;
    Ok(ImageInfo {
        manifest_digest,
        config_digest,
        layer_digests,
    })
}

/// Unpacks image `tag` of the OCI layout `layout` into the empty directory `dest`, as
/// a container engine's overlay would show it: layers applied bottom first, whiteouts
/// deleting what they name, owners, modes, xattrs and hard links kept, and every mtime
/// [`MTIME`] (as the layers say; unpacking itself touches directories). Needs root
/// (owners, `security.*` xattrs) and `touch`.
pub fn unpack_image(layout: &Path, tag: &str, dest: &Path) -> Result<()> {
    let blob = |d: &str| -> Result<Vec<u8>> {
        let hex = d.strip_prefix("sha256:").context("not a sha256 digest")?;
        Ok(fs::read(layout.join("blobs/sha256").join(hex))?)
    };
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let m = index["manifests"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        })
        .with_context(|| format!("no image tagged {tag}"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(m["digest"].as_str().context("no digest")?)?)?;
    for l in manifest["layers"].as_array().context("no layers")? {
        let tar = blob(l["digest"].as_str().context("no layer digest")?)?;
        let mut a = tar::Archive::new(tar.as_slice());
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_unpack_xattrs(true);
        a.set_overwrite(true);
        for entry in a.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if let Some(victim) = name.as_deref().and_then(|n| n.strip_prefix(".wh.")) {
                let target = dest.join(path.with_file_name(victim));
                match fs::symlink_metadata(&target) {
                    Ok(md) if md.is_dir() => fs::remove_dir_all(&target)?,
                    Ok(_) => fs::remove_file(&target)?,
                    Err(_) => {}
                }
                continue;
            }
            anyhow::ensure!(
                entry.unpack_in(dest)?,
                "{} escapes the rootfs",
                path.display()
            );
        }
    }
    let st = std::process::Command::new("find")
        .arg(dest)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            &format!("@{MTIME}"),
            "{}",
            "+",
        ])
        .status()?;
    anyhow::ensure!(st.success(), "touch failed: {st}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_shared() {
        let t = std::env::temp_dir().join(format!("oci-fixture-{}", std::process::id()));
        let base = Layer::new()
            .dir("etc", 0o755)
            .file("etc/hostname", "x\n", 0o644);
        let a = write_image(&t, "a", std::slice::from_ref(&base), &[]).unwrap();
        let b = write_image(
            &t,
            "b",
            &[base, Layer::new().symlink("etc/l", "hostname")],
            &[],
        )
        .unwrap();
        assert_eq!(a.layer_digests[0], b.layer_digests[0]);
        let again = write_image(
            &t,
            "a",
            &[Layer::new()
                .dir("etc", 0o755)
                .file("etc/hostname", "x\n", 0o644)],
            &[],
        )
        .unwrap();
        assert_eq!(a.manifest_digest, again.manifest_digest);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(t.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        fs::remove_dir_all(&t).unwrap();
    }
}
