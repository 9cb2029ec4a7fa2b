//! `bootc upgrade --check`: is there an update, and how much would it download?
//!
//! Reads only the manifest and config of the followed image (through skopeo's image
//! proxy, for every transport) and compares them with the repository: the layers whose
//! content is already stored cost nothing. Changes nothing.

use std::fmt;

use anyhow::{Context, Result};
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;

use crate::deploy::host::Host;
use crate::deploy::state::Origin;
use crate::imgref::ImageReference;
use crate::repo;

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// The image asked about.
    pub(crate) imgref: String,
    /// Its current manifest digest.
    pub(crate) manifest_digest: String,
    /// Whether it differs from the booted image.
    pub(crate) update: bool,
    /// Compressed bytes of layers not yet stored.
    pub(crate) download_bytes: u64,
    /// Compressed bytes of layers already stored.
    pub(crate) stored_bytes: u64,
    /// Layers to download / in all.
    pub(crate) new_layers: usize,
    /// Layers in all.
    pub(crate) layers: usize,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.update {
            return write!(
                f,
                "No update available: {} is {} (booted).",
                self.imgref, self.manifest_digest
            );
        }
        write!(
            f,
            "Update available: {} is {}\n  {} of {} layers to fetch: {} bytes to download, {} bytes already stored.",
            self.imgref, self.manifest_digest, self.new_layers, self.layers, self.download_bytes, self.stored_bytes
        )
    }
}

/// See the module documentation.
pub(crate) fn check(
    host: &Host,
    imgref: &ImageReference,
    insecure_registry: bool,
) -> Result<Check> {
    let booted = Origin::load(&host.sysroot, &host.booted)?;
    let source = imgref.to_skopeo();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let meta = rt
        .block_on(repo::fetch_metadata(
            &source,
            repo::proxy_config(insecure_registry),
            true,
        ))
        .with_context(|| format!("checking {source}"))?;
    let config: serde_json::Value =
        serde_json::from_slice(meta.config.as_deref().unwrap_or_default())
            .context("parsing the image config")?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (digest, layers) = (meta.digest, meta.layer_sizes);
    anyhow::ensure!(
        layers.len() == diff_ids.len(),
        "{source}: the manifest has {} layers but the config {}",
        layers.len(),
        diff_ids.len()
    );

    let stored: Vec<bool> = with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => {
        stored_layers::<H>(host, &diff_ids)?
    });
    let mut c = Check {
        imgref: source,
        update: booted.manifest_digest.as_deref() != Some(digest.as_str()),
        manifest_digest: digest,
        download_bytes: 0,
        stored_bytes: 0,
        new_layers: 0,
        layers: layers.len(),
    };
    for (size, have) in layers.iter().zip(stored) {
        if have {
            c.stored_bytes += size;
        } else {
            c.download_bytes += size;
            c.new_layers += 1;
        }
    }
    Ok(c)
}

fn stored_layers<H: FsVerityHashValue>(host: &Host, diff_ids: &[String]) -> Result<Vec<bool>> {
    let repo = repo::open::<H>(&host.sysroot)?;
    diff_ids
        .iter()
        .map(|d| {
            let digest: composefs_oci::OciDigest = d
                .as_str()
                .try_into()
                .with_context(|| format!("invalid diff id {d}"))?;
            Ok(repo
                .has_stream(&composefs_oci::layer_content_id(&digest))?
                .is_some())
        })
        .collect()
}
