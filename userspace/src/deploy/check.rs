//! `bootc upgrade --check`: is there an update, and how much would it download?
//!
//! Reads only the manifest and config of the followed image (through skopeo's image
//! proxy, for every transport) and compares them with the repository: the layers whose
//! content is already stored cost nothing. Changes nothing.

use std::fmt;

use anyhow::{Context, Result};
use bootc_initramfs_setup::with_algorithm;

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
    let layers = meta
        .layers()
        .with_context(|| format!("checking {source}"))?;
    let digest = meta.digest;
    let stored: Vec<bool> = with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => {
        let repo = repo::open::<H>(&host.sysroot)?;
        layers
            .iter()
            .map(|l| repo::has_layer(&repo, &l.diff_id))
            .collect::<Result<_>>()?
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
    for (size, have) in layers.iter().map(|l| l.size).zip(stored) {
        if have {
            c.stored_bytes += size;
        } else {
            c.download_bytes += size;
            c.new_layers += 1;
        }
    }
    Ok(c)
}
