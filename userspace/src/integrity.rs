//! Content integrity of the repository: what is stored under a name is what that name
//! says, and what an image needs is there.
//!
//! Two halves:
//! - [`pull_verified`]: the pull loop. Every blob (manifest, config, each compressed
//!   layer) is hashed as it is read and compared with the digest it is fetched by, and
//!   every uncompressed layer with the config's `diff_id`, *before* the stream is named
//!   (`oci-layer-<diff_id>`, `oci-config-<digest>`, `oci-manifest-<digest>`). Objects
//!   written while a layer streams in are content-addressed (named by their own
//!   fs-verity digest), so a refused layer leaves only unreferenced objects that the
//!   next GC removes; no stream, image or tag names anything of it. This is one code
//!   path for every transport: `oci:` directories and uncompressed `oci-archive:` files
//!   are read in-process, everything else through skopeo's image proxy (which checks
//!   blob digests itself too; the check here does not rely on it, and skopeo checks no
//!   `diff_id`). composefs-oci's own `pull` reads `oci:` layouts without checking any
//!   digest and names each layer stream before the config is known to be right, so its
//!   public building blocks (`import_tar_async`, `write_config_raw`,
//!   `generate_boot_image`) are used instead; a layer is read, hashed and decompressed
//!   on a thread of its own ([`crate::layer_stream`]) while it is split and written.
//! - [`check_image`]: every object an image needs (its manifest, config and layer
//!   streams, the objects they reference, its boot EROFS image and the objects that
//!   references) exists and, where the repository requires fs-verity, has it. The pull
//!   uses the same per-layer check, so a layer whose stream is "already present" but
//!   references a missing object is fetched again: a damaged repository heals on the
//!   next pull.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};

use anyhow::{bail, Context, Result};
use composefs::fsverity::FsVerityHashValue;
use composefs::repository::Repository;
use composefs::tree::FileSystem;
use composefs_boot::bootloader::BootEntry;
use composefs_oci::oci_image::OciImage;
use composefs_oci::{ComponentId, ImportStats, OciDigest, ProgressEvent, SharedReporter};
use containers_image_proxy::oci_spec::image::{Descriptor, ImageManifest, MediaType};
use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use ocidir::prelude::*;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::imgref::{ImageReference, Transport};
use crate::layer_stream::{self, Compression, Progress, Writeback};

/// composefs-oci's content type of a manifest splitstream (`"ocimanif"`); composefs-oci
/// exports the layer one but not this one. `OciImage::open` checks it, so a drift shows
/// as every pulled image failing to open.
const MANIFEST_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ocimanif");

/// composefs-oci's stream name of a config (`oci-config-<digest>`), not exported.
fn config_content_id(digest: &OciDigest) -> String {
    format!("oci-config-{digest}")
}

/// `sha256:<hex>` of what a hasher saw.
pub(crate) fn finish(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Hashes (sha256) and counts everything read through it.
struct Digesting<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R> Digesting<R> {
    fn new(inner: R) -> Self {
        Digesting {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// `sha256:<hex>` and the byte count of what was read.
    fn result(self) -> (String, u64) {
        (finish(self.hasher), self.len)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Digesting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        this.hasher.update(new);
        this.len += new.len() as u64;
        Poll::Ready(Ok(()))
    }
}

/// A local OCI layout read in-process.
enum Layout {
    Dir(ocidir::OciDir),
    Archive(ocidir::OciArchive),
}

impl Layout {
    fn read_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        Ok(match self {
            Layout::Dir(d) => Box::new(d.read_blob(desc)?),
            Layout::Archive(a) => Box::new(a.read_blob(desc)?),
        })
    }

    fn resolve(&self, tag: Option<&str>) -> Result<ocidir::ResolvedManifest> {
        Ok(match self {
            Layout::Dir(d) => d.open_image_this_platform(tag)?,
            Layout::Archive(a) => a.open_image_this_platform(tag)?,
        })
    }
}

/// Where blobs come from.
enum Source {
    Layout(Arc<Layout>, Option<String>),
    Proxy {
        proxy: ImageProxy,
        img: OpenedImage,
        transport: Transport,
    },
}

type Driver<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;
type BlobReader = Box<dyn AsyncRead + Unpin + Send>;

impl Source {
    async fn open(imgref: &ImageReference, proxy_config: ImageProxyConfig) -> Result<Source> {
        let in_process = match imgref.layout_path_and_tag() {
            Some((path, tag)) if imgref.transport == Transport::OciDir => {
                let dir = ocidir::cap_std::fs::Dir::open_ambient_dir(
                    path,
                    ocidir::cap_std::ambient_authority(),
                )
                .with_context(|| format!("opening the OCI layout {path}"))?;
                let oci = ocidir::OciDir::open(dir)
                    .with_context(|| format!("opening the OCI layout {path}"))?;
                Some((Layout::Dir(oci), tag))
            }
            Some((path, tag))
                if imgref.transport == Transport::OciArchive && is_uncompressed_tar(path) =>
            {
                let oci = ocidir::OciArchive::open(path)
                    .with_context(|| format!("opening the OCI archive {path}"))?;
                Some((Layout::Archive(oci), tag))
            }
            _ => None,
        };
        if let Some((layout, tag)) = in_process {
            return Ok(Source::Layout(Arc::new(layout), tag.map(str::to_string)));
        }
        let proxy = ImageProxy::new_with_config(proxy_config)
            .await
            .context("starting skopeo experimental-image-proxy")?;
        let img = proxy
            .open_image(&imgref.to_skopeo())
            .await
            .context("opening the image")?;
        Ok(Source::Proxy {
            proxy,
            img,
            transport: imgref.transport,
        })
    }

    /// The manifest's digest (as the source names it) and raw bytes.
    async fn manifest(&self) -> Result<(Descriptor, Vec<u8>)> {
        match self {
            Source::Layout(layout, tag) => {
                let resolved = layout.resolve(tag.as_deref())?;
                let desc = resolved.manifest_descriptor;
                let mut raw = Vec::new();
                layout.read_blob(&desc)?.read_to_end(&mut raw)?;
                Ok((desc, raw))
            }
            Source::Proxy { proxy, img, .. } => {
                let (digest, raw) = proxy.fetch_manifest_raw_oci(img).await?;
                let digest: OciDigest = digest
                    .as_str()
                    .try_into()
                    .with_context(|| format!("skopeo named an invalid manifest digest {digest}"))?;
                let desc = Descriptor::new(MediaType::ImageManifest, raw.len() as u64, digest);
                Ok((desc, raw))
            }
        }
    }

    /// The descriptors to fetch the layers by: the manifest's, except from
    /// containers-storage, which only has the uncompressed layers.
    async fn layer_descriptors(&self, manifest: &ImageManifest) -> Result<Vec<Descriptor>> {
        if let Source::Proxy {
            proxy,
            img,
            transport: Transport::ContainersStorage,
        } = self
        {
            let info = proxy
                .get_layer_info(img)
                .await?
                .context("skopeo gave no layer information for the containers-storage image")?;
            return Ok(info
                .into_iter()
                .map(|l| Descriptor::new(l.media_type, l.size, l.digest))
                .collect());
        }
        Ok(manifest.layers().to_vec())
    }

    /// A stream of the blob and a future that must be awaited alongside it.
    async fn blob(&self, desc: &Descriptor) -> Result<(BlobReader, Driver<'_>)> {
        match self {
            Source::Layout(layout, _) => {
                let mut reader = layout.read_blob(desc)?;
                let (read_half, write_half) = tokio::io::duplex(128 * 1024);
                let mut writer = tokio_util::io::SyncIoBridge::new(write_half);
                let copy = tokio::task::spawn_blocking(move || {
                    std::io::copy(&mut reader, &mut writer)?;
                    std::io::Write::flush(&mut writer)?;
                    writer.shutdown()
                });
                let driver = async move {
                    match copy.await.context("the blob reader task failed")? {
                        Ok(()) => Ok(()),
                        // The consumer stopped reading: it reports why.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                        Err(e) => Err(e).context("reading the blob"),
                    }
                };
                Ok((Box::new(read_half), Box::pin(driver)))
            }
            Source::Proxy { proxy, img, .. } => {
                let (reader, driver) = proxy.get_blob(img, desc.digest(), desc.size()).await?;
                let driver = async move { driver.await.map_err(anyhow::Error::from) };
                Ok((Box::new(reader), Box::pin(driver)))
            }
        }
    }

    /// The blob as a blocking reader (for a thread of its own; read in-process from a
    /// layout, else bridged from skopeo's stream) and a future that must be awaited
    /// alongside the reading.
    async fn blob_sync(&self, desc: &Descriptor) -> Result<(Box<dyn Read + Send>, Driver<'_>)> {
        match self {
            Source::Layout(layout, _) => {
                let reader = layout.read_blob(desc)?;
                Ok((reader, Box::pin(std::future::ready(Ok(())))))
            }
            Source::Proxy { .. } => {
                let (reader, driver) = self.blob(desc).await?;
                Ok((Box::new(tokio_util::io::SyncIoBridge::new(reader)), driver))
            }
        }
    }

    async fn close(self) {
        if let Source::Proxy { proxy, img, .. } = self {
            let _ = proxy.close_image(&img).await;
            let _ = proxy.finalize().await;
        }
    }
}

/// Is `path` an uncompressed tar (the `ustar` magic at offset 257)? Compressed
/// archives are read through skopeo.
fn is_uncompressed_tar(path: &str) -> bool {
    let mut buf = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 257))
        .is_ok()
        && &buf == b"ustar"
}

/// Fails unless what was read (`digest`, `len`) is `desc`'s blob, naming it:
/// `WHAT: blob D has digest E`.
fn check_blob(what: &str, desc: &Descriptor, digest: &str, len: u64) -> Result<()> {
    if digest != desc.digest().as_ref() {
        bail!("{what}: blob {} has digest {digest}", desc.digest());
    }
    if len != desc.size() {
        bail!(
            "{what}: blob {} has {len} bytes, its descriptor says {}",
            desc.digest(),
            desc.size()
        );
    }
    Ok(())
}

/// Reads a whole (small) blob and checks it against `desc`.
async fn read_verified(
    source: &Source,
    what: &str,
    name: &str,
    desc: &Descriptor,
) -> Result<Vec<u8>> {
    let (reader, driver) = source
        .blob(desc)
        .await
        .with_context(|| format!("fetching the {what} of {name}"))?;
    let mut reader = Digesting::new(reader.take(desc.size() + 1));
    let mut data = Vec::new();
    let (read, driven) = tokio::join!(reader.read_to_end(&mut data), driver);
    let (digest, len) = reader.result();
    // A blob that is not what it claims is reported as such, before whatever else
    // went wrong reading it.
    if read.is_ok() || len > 0 {
        check_blob(&format!("{what} of {name}"), desc, &digest, len)?;
    }
    read.with_context(|| format!("reading the {what} of {name}"))?;
    driven.with_context(|| format!("fetching the {what} of {name}"))?;
    Ok(data)
}

/// Pulls `imgref` into `repo`, checking every blob against its digest and every layer
/// against its `diff_id` before anything is named after them, and commits the boot
/// EROFS image. Returns the manifest digest and what was stored.
///
/// A layer whose stream is already present is reused only if every object it
/// references is there (see [`check_image`]); otherwise it is fetched again.
pub(crate) async fn pull_verified<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    imgref: &ImageReference,
    proxy_config: ImageProxyConfig,
    progress: Option<SharedReporter>,
    check_complete: bool,
) -> Result<(OciDigest, ImportStats, Option<PulledTree<H>>)> {
    repo.ensure_writable()?;
    let name = imgref.to_skopeo();
    let reporter: SharedReporter =
        progress.unwrap_or_else(|| Arc::new(composefs_oci::NullReporter));
    let source = Source::open(imgref, proxy_config).await?;
    let result = pull_from(repo, &source, &name, &reporter, check_complete).await;
    source.close().await;
    result
}

async fn pull_from<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    source: &Source,
    name: &str,
    reporter: &SharedReporter,
    check_complete: bool,
) -> Result<(OciDigest, ImportStats, Option<PulledTree<H>>)> {
    let (manifest_desc, raw_manifest) = source
        .manifest()
        .await
        .with_context(|| format!("fetching the manifest of {name}"))?;
    let (digest, len) = {
        let mut h = Sha256::new();
        h.update(&raw_manifest);
        (finish(h), raw_manifest.len() as u64)
    };
    if matches!(source, Source::Proxy { .. }) && digest != manifest_desc.digest().as_ref() {
        // skopeo names the manifest by the digest of what it fetched (checked against
        // the reference when that is a digest) and hands over an OCI conversion of a
        // Docker manifest; the conversion cannot be stored under the original digest.
        bail!(
            "manifest of {name}: {} is not an OCI manifest (its OCI conversion has digest {digest}); only OCI-format images are supported",
            manifest_desc.digest()
        );
    }
    check_blob(&format!("manifest of {name}"), &manifest_desc, &digest, len)?;
    let manifest_digest = manifest_desc.digest().clone();
    let manifest = ImageManifest::from_reader(raw_manifest.as_slice())
        .with_context(|| format!("{name}: the manifest {manifest_digest} is not valid"))?;

    let config_desc = manifest.config();
    let raw_config = read_verified(source, "config", name, config_desc).await?;
    let diff_ids = composefs_oci::extract_diff_ids(
        config_desc.media_type(),
        raw_config.as_slice(),
        manifest.layers(),
    )
    .with_context(|| format!("{name}: the config {} is not valid", config_desc.digest()))?;
    let fetch_descs = source.layer_descriptors(&manifest).await?;
    if diff_ids.len() != manifest.layers().len() || fetch_descs.len() != diff_ids.len() {
        bail!(
            "{name}: the manifest lists {} layers but the config {} names {}",
            manifest.layers().len(),
            config_desc.digest(),
            diff_ids.len()
        );
    }

    let mut stats = ImportStats {
        layers: diff_ids.len() as u64,
        ..Default::default()
    };
    let mut layer_refs: Vec<(OciDigest, H)> = Vec::new();
    // Started with the first layer fetched.
    let mut writeback = None;
    // Objects checked so far (of the layers already present), for the final check.
    let mut seen = HashSet::new();
    for (i, (desc, diff_id)) in fetch_descs.iter().zip(&diff_ids).enumerate() {
        let content_id = composefs_oci::layer_content_id(diff_id);
        let id = ComponentId::from(diff_id.to_string());
        if let Some(verity) = repo.has_stream(&content_id)? {
            if layer_problems(repo, diff_id, &verity, &mut seen).is_empty() {
                reporter.report(ProgressEvent::Skipped { id });
                stats.layers_already_present += 1;
                layer_refs.push((diff_id.clone(), verity));
                continue;
            }
            tracing::warn!("layer {diff_id} is damaged in the repository; fetching it again");
            // What it found damaged must be checked again at the end: forget it all.
            seen.clear();
        }
        let what = format!("layer {} of {name}", i + 1);
        if writeback.is_none() {
            writeback = Writeback::start(repo.objects_dir()?);
        }
        let (verity, layer_stats) = import_layer(
            repo,
            source,
            &what,
            desc,
            diff_id,
            reporter,
            writeback.as_ref(),
        )
        .await
        .inspect_err(|_| {
            // Close the progress bar the layer opened.
            reporter.report(ProgressEvent::Done {
                id: ComponentId::from(diff_id.to_string()),
                transferred: 0,
            });
        })?;
        repo.register_stream(&verity, &content_id, None)
            .await
            .with_context(|| format!("storing {what}"))?;
        stats.merge(&layer_stats);
        layer_refs.push((diff_id.clone(), verity));
    }

    // The config: named after its (checked) digest, written only when new: an existing
    // one carries the boot image refs, and its layer refs are the same streams. A new
    // one is written once, with the refs of the boot image committed from the tree of
    // the layers (kept: the deployment is made from this very tree).
    let config_digest = config_desc.digest().clone();
    let existing_config = repo.has_stream(&config_content_id(&config_digest))?;
    let (config_verity, tree) = match existing_config.clone() {
        Some(v) => (v, None),
        None => {
            let refs: HashMap<Box<str>, H> = layer_refs
                .iter()
                .map(|(d, v)| (Box::from(d.as_ref()), v.clone()))
                .collect();
            let tree = BootTree::build(repo, &layer_refs)
                .with_context(|| format!("committing the boot image of {name}"))?;
            let (written, v) =
                composefs_oci::write_config_raw(repo, &raw_config, refs, None, None, &tree.refs)
                    .with_context(|| format!("storing the config of {name}"))?;
            if written != config_digest {
                bail!("config of {name}: blob {config_digest} has digest {written}");
            }
            (v, Some(tree))
        }
    };

    let manifest_id = composefs_oci::oci_image::manifest_identifier(&manifest_digest);
    // A new config (new verity) needs a manifest that names it.
    if existing_config.is_none() || repo.has_stream(&manifest_id)?.is_none() {
        let mut stream = repo.create_stream(MANIFEST_CONTENT_TYPE)?;
        stream.add_named_stream_ref(&format!("config:{config_digest}"), &config_verity);
        for (diff_id, verity) in &layer_refs {
            stream.add_named_stream_ref(diff_id.as_ref(), verity);
        }
        stream.write_external(&raw_manifest)?;
        repo.write_stream(stream, &manifest_id, None)
            .with_context(|| format!("storing the manifest of {name}"))?;
    }

    match &tree {
        Some(t) => {
            // The refs were written by hand: read them back the way everyone else will.
            let found = composefs_oci::boot_image(repo, &manifest_digest)
                .with_context(|| format!("looking up the boot image of {name}"))?;
            if found.as_ref() != Some(&t.id) {
                bail!(
                    "committing the boot image of {name}: the image names {} as its boot image, not the committed {}",
                    found.map_or("none".to_string(), |f| f.to_hex()),
                    t.id.to_hex()
                );
            }
        }
        None => {
            // The boot image; regenerated when its object is gone.
            if let Some(image) = composefs_oci::boot_image(repo, &manifest_digest)? {
                if repo.open_object(&image).is_err() {
                    composefs_oci::remove_boot_image(repo, &manifest_digest)?;
                }
            }
            composefs_oci::generate_boot_image(
                repo,
                &manifest_digest,
                &composefs_oci::OciTransformOptions::default(),
            )
            .with_context(|| format!("committing the boot image of {name}"))?;
        }
    }
    if check_complete {
        let damage = check_image_seen(repo, &manifest_digest, &mut seen, tree.is_some())
            .with_context(|| format!("checking {name} in the repository"))?;
        if !damage.is_intact() {
            bail!("{name} is incomplete in the repository after the pull: {damage}");
        }
    }
    Ok((manifest_digest, stats, tree.map(BootTree::into_parts)))
}

/// The boot-transformed tree of an image, the boot resources it carries, and the boot
/// EROFS image committed from exactly this tree (so the tree needs no second digest
/// to be known to be the deployment's).
struct BootTree<H: FsVerityHashValue> {
    fs: FileSystem<H>,
    entries: Vec<BootEntry<H>>,
    /// The committed image in the repository's default EROFS format.
    id: H,
    /// The config's named refs to every format committed (composefs-oci's keys for
    /// the default xattr filtering).
    refs: HashMap<Box<str>, H>,
}

impl<H: FsVerityHashValue> BootTree<H> {
    /// Reads the tree of the image whose layer streams (bottom first, each checked
    /// against its `diff_id` by the pull) are `layers`, applies the OCI and boot
    /// transforms and commits the EROFS image(s) the repository's formats ask for:
    /// what `composefs_oci::generate_boot_image` does (through the stored config),
    /// keeping the tree, and before the config is stored, so it is stored once, with
    /// the refs.
    fn build(repo: &Arc<Repository<H>>, layers: &[(OciDigest, H)]) -> Result<Self> {
        use composefs::erofs::format::{FormatEpoch, FormatVersion};
        use composefs::generic_tree::Stat;
        use composefs_boot::BootOps;
        let mut fs = FileSystem::new(Stat::uninitialized());
        for (diff_id, verity) in layers {
            let mut stream = repo
                .open_stream("", Some(verity), Some(composefs_oci::LAYER_CONTENT_TYPE))
                .with_context(|| format!("opening layer {diff_id}"))?;
            while let Some(entry) = composefs_oci::tar::get_entry(&mut stream)
                .with_context(|| format!("reading layer {diff_id}"))?
            {
                composefs_oci::image::process_entry(&mut fs, entry)
                    .with_context(|| format!("reading layer {diff_id}"))?;
            }
        }
        fs.transform_for_oci(&composefs_oci::OciTransformOptions::default())
            .context("reading the image's filesystem tree")?;
        let entries = fs
            .transform_for_boot(repo)
            .context("finding the image's boot resources")?;
        let committed: HashMap<FormatVersion, H> = fs.commit_images(repo, None)?;
        let id = committed
            .get(&repo.erofs_version())
            .cloned()
            .context("no boot image in the repository's default EROFS format was committed")?;
        let refs = committed
            .into_iter()
            .map(|(version, id)| {
                let key = match version.epoch() {
                    FormatEpoch::Epoch1 => composefs_oci::BOOT_IMAGE_REF_KEY_V1,
                    FormatEpoch::Epoch2 => composefs_oci::BOOT_IMAGE_REF_KEY,
                };
                (Box::from(key), id)
            })
            .collect();
        Ok(BootTree {
            fs,
            entries,
            id,
            refs,
        })
    }

    fn into_parts(self) -> PulledTree<H> {
        PulledTree {
            fs: self.fs,
            entries: self.entries,
        }
    }
}

/// The boot-transformed tree a pull committed its boot image from, and its boot
/// resources: what [`crate::repo::boot_tree`] would read back, without reading and
/// digesting it again.
pub(crate) struct PulledTree<H: FsVerityHashValue> {
    /// The tree the boot image was written from.
    pub(crate) fs: FileSystem<H>,
    /// Its boot resources.
    pub(crate) entries: Vec<BootEntry<H>>,
}

/// Streams one layer into the repository, checking the compressed bytes against
/// `desc` and the tar against `diff_id`. Returns the (not yet named) stream.
async fn import_layer<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    source: &Source,
    what: &str,
    desc: &Descriptor,
    diff_id: &OciDigest,
    reporter: &SharedReporter,
    writeback: Option<&Writeback>,
) -> Result<(H, ImportStats)> {
    let Some(compression) = Compression::of(desc.media_type()) else {
        bail!(
            "{what}: blob {} has media type {}, not a tar layer",
            desc.digest(),
            desc.media_type()
        );
    };
    let id = ComponentId::from(diff_id.to_string());
    reporter.report(ProgressEvent::Started {
        id: id.clone(),
        total: Some(desc.size()),
        unit: composefs_oci::progress::ProgressUnit::Bytes,
    });
    let (input, driver) = source
        .blob_sync(desc)
        .await
        .with_context(|| format!("fetching {what}"))?;
    let progress = Progress {
        reporter: Arc::clone(reporter),
        id: id.clone(),
        total: Some(desc.size()),
    };
    // Reading, hashing and decompressing run on a thread of their own, splitting and
    // writing here.
    let (mut tar, decoding) = layer_stream::spawn(
        input,
        desc.size() + 1,
        compression,
        Some(progress),
        writeback,
    );
    let imported = async move {
        let imported = composefs_oci::layer::import_tar_async(Arc::clone(repo), &mut tar)
            .await
            .with_context(|| format!("importing {what}"))?;
        // The tar reader stops at the end-of-archive marker: the rest counts too.
        tokio::io::copy(&mut tar, &mut tokio::io::sink())
            .await
            .with_context(|| format!("reading {what}"))?;
        anyhow::Ok(imported)
        // Dropping the reader stops the decoding thread if it is still sending.
    };
    let (imported, driven) = tokio::join!(imported, driver);
    let decoded = decoding.await.context("the layer decoding task failed")?;
    let (digest, len) = (decoded.blob_digest, decoded.blob_len);
    check_blob(what, desc, &digest, len)?;
    decoded
        .result
        .with_context(|| format!("importing {what}"))?;
    let (verity, stats) = imported?;
    driven.with_context(|| format!("fetching {what}"))?;
    let tar_digest = decoded.tar_digest;
    if tar_digest != diff_id.as_ref() {
        bail!(
            "{what}: blob {} uncompresses to digest {tar_digest}, the config says {diff_id}",
            desc.digest()
        );
    }
    reporter.report(ProgressEvent::Done {
        id,
        transferred: len,
    });
    Ok((verity, stats))
}

/// One thing an image needs that the repository does not have (intact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// What needs it: `layer sha256:…`, `config sha256:…`, `manifest sha256:…`,
    /// `boot image`.
    pub needed_by: String,
    /// The object (hex fs-verity digest) or stream name that is missing or damaged.
    pub object: String,
    /// Why it does not count: missing, no fs-verity, wrong fs-verity digest, unreadable.
    pub problem: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} needs {}: {}",
            self.needed_by, self.object, self.problem
        )
    }
}

/// Everything wrong with an image; empty when it is intact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDamage(pub Vec<Damage>);

impl ImageDamage {
    /// Nothing is missing or damaged.
    pub fn is_intact(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ImageDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "intact"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

/// Why the object `id` does not count, or `None` when it exists and (if the repository
/// requires fs-verity) has the right fs-verity digest.
fn object_problem<H: FsVerityHashValue>(repo: &Repository<H>, id: &H) -> Option<String> {
    if present_without_verity(repo, id) {
        return None;
    }
    match repo.open_object(id) {
        Ok(_) => None,
        Err(e) => {
            let missing = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                    || c.downcast_ref::<rustix::io::Errno>()
                        .is_some_and(|e| *e == rustix::io::Errno::NOENT)
            });
            Some(if missing {
                "missing".to_string()
            } else {
                format!("{}", e.root_cause())
            })
        }
    }
}

/// Whether `id` is, by one `statx`, a regular file without fs-verity in a repository
/// that does not require it: then opening it and measuring its digest would only
/// find it missing fs-verity, which such a repository accepts (what
/// `Repository::open_object` would conclude, without its open, ioctl and close).
/// `false` whenever that cannot be told this way: the full check decides.
fn present_without_verity<H: FsVerityHashValue>(repo: &Repository<H>, id: &H) -> bool {
    use rustix::fs::{statx, AtFlags, FileType, StatxAttributes, StatxFlags};
    if !repo.is_insecure() {
        return false;
    }
    let Ok(objects) = repo.objects_dir() else {
        return false;
    };
    let Ok(st) = statx(
        objects,
        id.to_object_pathname().as_str(),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::TYPE,
    ) else {
        return false;
    };
    FileType::from_raw_mode(st.stx_mode.into()) == FileType::RegularFile
        // The filesystem says whether the file has fs-verity, and it has not.
        && st.stx_attributes_mask.contains(StatxAttributes::VERITY)
        && !st.stx_attributes.contains(StatxAttributes::VERITY)
}

/// Problems of one splitstream (opened by its fs-verity digest) and every object it
/// references that is not in `seen` (objects checked already); adds what it checks to
/// `seen`.
fn stream_problems<H: FsVerityHashValue>(
    repo: &Repository<H>,
    needed_by: &str,
    name: &str,
    verity: &H,
    content_type: Option<u64>,
    seen: &mut HashSet<H>,
) -> Vec<Damage> {
    let damage = |object: String, problem: String| Damage {
        needed_by: needed_by.to_string(),
        object,
        problem,
    };
    if let Some(p) = object_problem(repo, verity) {
        return vec![damage(format!("{name} ({})", verity.to_hex()), p)];
    }
    let reader = match repo.open_stream(name, Some(verity), content_type) {
        Ok(r) => r,
        Err(e) => return vec![damage(name.to_string(), format!("{}", e.root_cause()))],
    };
    let mut new = vec![];
    let mut i = 0;
    while let Some(id) = reader.lookup_external_ref(i) {
        if seen.insert(id.clone()) {
            new.push(id);
        }
        i += 1;
    }
    objects_problems(repo, &new)
        .into_iter()
        .map(|(id, p)| damage(id.to_hex(), p))
        .collect()
}

/// [`object_problem`] of each of `ids`, in their order; the checks are spread over two
/// threads when there are many (each is a system call or three: the kernel's path
/// lookups are what takes the time, and they run in parallel).
fn objects_problems<'a, H: FsVerityHashValue>(
    repo: &Repository<H>,
    ids: &[&'a H],
) -> Vec<(&'a H, String)> {
    let check = |part: &[&'a H]| -> Vec<(&'a H, String)> {
        part.iter()
            .filter_map(|&id| object_problem(repo, id).map(|p| (id, p)))
            .collect()
    };
    const PARALLEL_FROM: usize = 1024;
    if ids.len() < PARALLEL_FROM {
        return check(ids);
    }
    let (first, second) = ids.split_at(ids.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| check(second));
        let mut out = check(first);
        match other.join() {
            Ok(rest) => out.extend(rest),
            // The thread cannot panic short of a bug; check its half here then.
            Err(_) => out.extend(check(second)),
        }
        out
    })
}

fn layer_problems<H: FsVerityHashValue>(
    repo: &Repository<H>,
    diff_id: &OciDigest,
    verity: &H,
    seen: &mut HashSet<H>,
) -> Vec<Damage> {
    stream_problems(
        repo,
        &format!("layer {diff_id}"),
        &composefs_oci::layer_content_id(diff_id),
        verity,
        Some(composefs_oci::LAYER_CONTENT_TYPE),
        seen,
    )
}

/// Checks that every object the image `manifest_digest` needs is in `repo`: its
/// manifest, config and layer streams and every object they reference, its boot EROFS
/// image and every object that references. Where the repository requires fs-verity
/// (its `meta.json` is not insecure), each must also have the fs-verity digest it is
/// named by.
///
/// Each object is checked once, however many layers and the boot image need it.
///
/// Returns the list of what is missing or damaged (empty = intact). An `Err` means the
/// check itself could not run (e.g. the repository cannot be read); an image whose
/// manifest or config stream is gone is reported as damage, not as an error.
pub fn check_image<H: FsVerityHashValue>(
    repo: &Repository<H>,
    manifest_digest: &OciDigest,
) -> Result<ImageDamage> {
    check_image_seen(repo, manifest_digest, &mut HashSet::new(), false)
}

/// [`check_image`], taking the objects in `seen` as checked already. `boot_from_layers`:
/// the boot image was written in this run from the tree of the image's layer streams,
/// so every object it references is one those streams reference (checked here as the
/// layers' objects): only the image object itself is checked, its objects are not
/// read back out of it.
fn check_image_seen<H: FsVerityHashValue>(
    repo: &Repository<H>,
    manifest_digest: &OciDigest,
    seen: &mut HashSet<H>,
    boot_from_layers: bool,
) -> Result<ImageDamage> {
    let mut out = vec![];
    let manifest_name = composefs_oci::oci_image::manifest_identifier(manifest_digest);
    let Some(manifest_verity) = repo.has_stream(&manifest_name)? else {
        out.push(Damage {
            needed_by: format!("image {manifest_digest}"),
            object: manifest_name,
            problem: "missing".into(),
        });
        return Ok(ImageDamage(out));
    };
    out.extend(stream_problems(
        repo,
        &format!("manifest {manifest_digest}"),
        &manifest_name,
        &manifest_verity,
        Some(MANIFEST_CONTENT_TYPE),
        seen,
    ));
    if !out.is_empty() {
        return Ok(ImageDamage(out));
    }
    let img = match OciImage::open(repo, manifest_digest, None) {
        Ok(img) => img,
        Err(e) => {
            out.push(Damage {
                needed_by: format!("manifest {manifest_digest}"),
                object: config_content_id(manifest_digest),
                problem: format!("{}", e.root_cause()),
            });
            return Ok(ImageDamage(out));
        }
    };
    let config_digest = img.config_digest().clone();
    out.extend(stream_problems(
        repo,
        &format!("config {config_digest}"),
        &config_content_id(&config_digest),
        img.config_verity(),
        None,
        seen,
    ));
    for diff_id in img.layer_diff_ids() {
        let Ok(d) = OciDigest::try_from(diff_id) else {
            continue;
        };
        match img.layer_verity(diff_id) {
            Some(v) => out.extend(layer_problems(repo, &d, v, seen)),
            None => out.push(Damage {
                needed_by: format!("config {config_digest}"),
                object: composefs_oci::layer_content_id(&d),
                problem: "missing".into(),
            }),
        }
    }
    match composefs_oci::boot_image(repo, manifest_digest)? {
        None => out.push(Damage {
            needed_by: format!("image {manifest_digest}"),
            object: "boot image".into(),
            problem: "missing".into(),
        }),
        Some(image) => {
            if let Some(p) = object_problem(repo, &image) {
                out.push(Damage {
                    needed_by: "boot image".into(),
                    object: image.to_hex(),
                    problem: p,
                });
            } else if !boot_from_layers {
                match repo.objects_for_image(&image.to_hex()) {
                    Ok(objects) => {
                        // Mostly the layers' objects, checked above.
                        let mut objects: Vec<_> =
                            objects.into_iter().filter(|o| !seen.contains(o)).collect();
                        // One hex string per object, not one per comparison.
                        objects.sort_by_cached_key(|o| o.to_hex());
                        for o in objects {
                            if let Some(p) = object_problem(repo, &o) {
                                out.push(Damage {
                                    needed_by: "boot image".into(),
                                    object: o.to_hex(),
                                    problem: p,
                                });
                            }
                        }
                    }
                    Err(e) => out.push(Damage {
                        needed_by: "boot image".into(),
                        object: image.to_hex(),
                        problem: format!("{}", e.root_cause()),
                    }),
                }
            }
        }
    }
    // The same object can be needed by a layer and by the boot image: name it once.
    let mut named = HashSet::new();
    out.retain(|d| named.insert(d.object.clone()));
    Ok(ImageDamage(out))
}
