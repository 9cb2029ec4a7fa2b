//! The composefs repository on the physical root: create/open it, pull images into it,
//! commit the boot image (whose fs-verity digest is the deployment id), and read an
//! image's boot-transformed tree back.

use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{Algorithm, DeploymentId};
use bootc_initramfs_setup::layout;
use composefs::fsverity::{Algorithm as CfsAlgorithm, FsVerityHashValue};
use composefs::generic_tree::OciTransformOptions;
use composefs::repository::{read_repo_algorithm, Repository, RepositoryConfig};
use composefs::tree::FileSystem;
use composefs_boot::bootloader::BootEntry;
use composefs_oci::oci_image::OciImage;
use composefs_oci::{ImportStats, SharedReporter};
use containers_image_proxy::ImageProxyConfig;

use crate::imgref::{ImageReference, Transport};
use crate::integrity::PulledTree;

/// Prefix of the tag that keeps a deployment's image alive across GC.
pub(crate) const DEPLOYMENT_TAG_PREFIX: &str = "bootc-deployment-";

/// The tag naming the image a deployment was made from.
pub fn deployment_tag(id: &DeploymentId) -> String {
    format!("{DEPLOYMENT_TAG_PREFIX}{}", id.hex())
}

/// Our algorithm for a composefs hash type.
pub(crate) fn algorithm_of<H: FsVerityHashValue>() -> Algorithm {
    match CfsAlgorithm::for_hash::<H>().hash_name() {
        "sha512" => Algorithm::Sha512,
        _ => Algorithm::Sha256,
    }
}

/// The algorithm of the repository under `sysroot` (from its `meta.json`).
pub(crate) fn read_algorithm(sysroot: impl AsFd) -> Result<Algorithm> {
    let repo_dir = crate::sys::durable::open_dir(&sysroot, layout::REPOSITORY)
        .context("opening the composefs repository")?;
    match read_repo_algorithm(&repo_dir)? {
        Some(a) => a
            .hash_name()
            .parse::<Algorithm>()
            .with_context(|| format!("repository uses unsupported algorithm {a}")),
        None => bail!(
            "{} is not a composefs repository (no meta.json)",
            layout::REPOSITORY
        ),
    }
}

/// The configuration `install` creates the repository with; its EROFS format is the
/// one every boot image (deployment id) is computed in, so
/// [`crate::digest`] takes it from here too.
pub(crate) fn repo_config<H: FsVerityHashValue>(verity: bool) -> RepositoryConfig {
    let config = RepositoryConfig::new(CfsAlgorithm::for_hash::<H>());
    if verity {
        config
    } else {
        config.set_insecure()
    }
}

/// Creates the repository (`composefs/`, mode 0700) under `sysroot`.
pub fn init<H: FsVerityHashValue>(sysroot: impl AsFd, verity: bool) -> Result<Arc<Repository<H>>> {
    let config = repo_config::<H>(verity);
    let (repo, _) = Repository::<H>::init_path(&sysroot, layout::REPOSITORY, config)
        .with_context(|| format!("creating the composefs repository {}", layout::REPOSITORY))?;
    Ok(Arc::new(repo))
}

/// Opens the existing repository under `sysroot`.
pub(crate) fn open<H: FsVerityHashValue>(sysroot: impl AsFd) -> Result<Arc<Repository<H>>> {
    let repo = Repository::<H>::open_path(&sysroot, layout::REPOSITORY)
        .with_context(|| format!("opening the composefs repository {}", layout::REPOSITORY))?;
    Ok(Arc::new(repo))
}

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOpts {
    /// Skip TLS verification when talking to a registry.
    pub insecure_registry: bool,
    /// Progress reporting.
    pub progress: Option<SharedReporter>,
    /// Also check, before returning, that every object the whole image needs is in the
    /// repository ([`crate::integrity::check_image`]), sharing the checks the pull made
    /// of the layers it already had: each object is checked once. An image that was
    /// already present is always checked.
    pub check_complete: bool,
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// The deployment id: fs-verity digest of the committed boot EROFS image.
    pub id: DeploymentId,
    /// What was stored.
    pub stats: ImportStats,
}

/// Pulls `imgref` into the repository, commits its boot image and tags it with the
/// deployment id, so a later GC keeps it.
pub fn pull<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    imgref: &ImageReference,
    opts: &PullOpts,
) -> Result<Pulled> {
    Ok(pull_tree(repo, imgref, opts)?.0)
}

/// [`pull`], also returning the boot tree ([`boot_tree`]) when the pull committed the
/// boot image from it (not when the image was already stored): the caller then need
/// not read and digest the tree again.
pub(crate) fn pull_tree<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    imgref: &ImageReference,
    opts: &PullOpts,
) -> Result<(Pulled, Option<PulledTree<H>>)> {
    let proxy_config = || proxy_config(opts.insecure_registry);
    let source = imgref.to_skopeo();
    // An image that is already in the repository with its boot image is not pulled
    // again: re-importing would rewrite its metadata streams for nothing.
    // The manifest digest and, when it can be told without fetching a layer, the
    // layers (compressed size, diff id) for the free-space check.
    let (known, layers) = match imgref.layout_path_and_tag() {
        Some((dir, tag)) if imgref.transport == Transport::OciDir => {
            let digest = layout_manifest(dir, tag);
            let layers = match &digest {
                Some(d) => {
                    Some(layout_layers(dir, d).with_context(|| format!("pulling {source}"))?)
                }
                None => None,
            };
            (digest, layers)
        }
        // Archives are read in-process by the pull; without skopeo, skip the check.
        _ if imgref.transport == Transport::OciArchive
            && crate::sys::cmd::which("skopeo").is_none() =>
        {
            (None, None)
        }
        _ => {
            let (digest, layers) = interruptible(resolve_manifest(source.clone(), proxy_config()))
                .with_context(|| format!("pulling {source}"))?;
            (Some(digest), Some(layers))
        }
    };
    if let Some(digest) = known {
        // Only an intact image counts as present: a damaged one is pulled again, which
        // re-fetches its damaged layers.
        if composefs_oci::oci_image::has_manifest(repo, &digest)?.is_some()
            && crate::integrity::check_image(repo, &digest)?.is_intact()
        {
            if let Some(image_id) = composefs_oci::boot_image(repo, &digest)? {
                let id = DeploymentId::new(algorithm_of::<H>(), &image_id.to_hex())
                    .context("the boot image digest is not a valid deployment id")?;
                composefs_oci::tag_image(repo, &digest, &deployment_tag(&id))
                    .with_context(|| format!("tagging {source} in the repository"))?;
                tracing::info!("{source} ({digest}) is already in the repository");
                let pulled = Pulled {
                    manifest_digest: digest.to_string(),
                    id,
                    stats: ImportStats::default(),
                };
                return Ok((pulled, None));
            }
        }
    }

    if let Some(layers) = layers {
        check_free_space(repo, &layers).with_context(|| format!("pulling {source}"))?;
    }
    tracing::info!("pulling {source}");
    let proxy = proxy_config();
    let (task_repo, task_imgref, progress, check) = (
        Arc::clone(repo),
        imgref.clone(),
        opts.progress.clone(),
        opts.check_complete,
    );
    // Every blob is checked against its digest before anything is named after it.
    let pull = async move {
        crate::integrity::pull_verified(&task_repo, &task_imgref, proxy, progress, check).await
    };
    let (manifest_digest, stats, tree) =
        interruptible(pull).with_context(|| format!("pulling {source}"))?;
    let image_id = composefs_oci::boot_image(repo, &manifest_digest)
        .with_context(|| format!("looking up the boot image of {source}"))?
        .with_context(|| format!("{source} did not produce a boot image (is it a container image with /usr, /boot and /sysroot?)"))?;
    let id = DeploymentId::new(algorithm_of::<H>(), &image_id.to_hex())
        .context("the boot image digest is not a valid deployment id")?;
    composefs_oci::tag_image(repo, &manifest_digest, &deployment_tag(&id))
        .with_context(|| format!("tagging {source} in the repository"))?;
    tracing::info!("imported {source}: {stats}");
    let pulled = Pulled {
        manifest_digest: manifest_digest.to_string(),
        id,
        stats,
    };
    Ok((pulled, tree))
}

/// Runs `fut` to completion on a fresh runtime, or fails on SIGINT/SIGTERM: the network
/// steps are the long ones, and an interrupt must turn into an error so the caller's
/// guards unmount and detach what the install set up. The work runs as a task, so a
/// step that blocks its thread cannot keep the signal from being seen; on an interrupt
/// the runtime is abandoned (skopeo dies with us: it runs with a parent-death signal).
fn interruptible<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let task = rt.spawn(fut);
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("watching for SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
        tokio::select! {
            r = task => r.context("the pull task failed")?,
            _ = int.recv() => bail!("interrupted (SIGINT)"),
            _ = term.recv() => bail!("terminated (SIGTERM)"),
        }
    });
    rt.shutdown_background();
    result
}

/// The manifest digest an OCI layout directory names for `tag` (or its only manifest),
/// read in-process; `None` when it cannot tell (the pull then reports why).
fn layout_manifest(dir: &str, tag: Option<&str>) -> Option<composefs_oci::OciDigest> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::path::Path::new(dir).join("index.json")).ok()?)
            .ok()?;
    let manifests = index.get("manifests")?.as_array()?;
    let found = match tag {
        Some(tag) => manifests.iter().find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
        })?,
        None if manifests.len() == 1 => &manifests[0],
        None => return None,
    };
    if found["mediaType"].as_str() != Some("application/vnd.oci.image.manifest.v1+json") {
        return None;
    }
    found["digest"].as_str()?.try_into().ok()
}

/// Skopeo image-proxy settings; `insecure_registry` skips TLS verification.
pub(crate) fn proxy_config(insecure_registry: bool) -> ImageProxyConfig {
    let mut proxy = ImageProxyConfig::default();
    if insecure_registry {
        proxy.insecure_skip_tls_verification = Some(true);
    }
    proxy
}

/// What an image's manifest (and optionally its config) says, read through skopeo's
/// image proxy; no layer is fetched.
#[derive(Debug, Clone)]
pub(crate) struct RemoteMetadata {
    /// `sha256:…` of the manifest.
    pub(crate) digest: String,
    /// Compressed size of each layer, bottom first.
    pub(crate) layer_sizes: Vec<u64>,
    /// The raw config JSON, when asked for.
    pub(crate) config: Option<Vec<u8>>,
}

/// Reads `source`'s manifest (and config when `with_config`).
pub(crate) async fn fetch_metadata(
    source: &str,
    config: ImageProxyConfig,
    with_config: bool,
) -> Result<RemoteMetadata> {
    let proxy = containers_image_proxy::ImageProxy::new_with_config(config)
        .await
        .context("starting skopeo experimental-image-proxy")?;
    let img = proxy
        .open_image(source)
        .await
        .context("opening the image")?;
    let (digest, manifest) = proxy
        .fetch_manifest(&img)
        .await
        .context("fetching the manifest")?;
    let config = if with_config {
        Some(
            proxy
                .fetch_config_raw(&img)
                .await
                .context("fetching the config")?,
        )
    } else {
        None
    };
    let _ = proxy.close_image(&img).await;
    let _ = proxy.finalize().await;
    Ok(RemoteMetadata {
        digest,
        layer_sizes: manifest.layers().iter().map(|l| l.size()).collect(),
        config,
    })
}

/// The manifest digest `source` currently points to, and its layers.
async fn resolve_manifest(
    source: String,
    config: ImageProxyConfig,
) -> Result<(composefs_oci::OciDigest, Vec<Layer>)> {
    let meta = fetch_metadata(&source, config, true).await?;
    let digest = meta
        .digest
        .as_str()
        .try_into()
        .with_context(|| format!("invalid manifest digest {}", meta.digest))?;
    let layers = meta.layers()?;
    Ok((digest, layers))
}

/// One layer of an image: its compressed size (what the manifest says a pull fetches)
/// and its diff id (how the repository names its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// Compressed bytes.
    pub(crate) size: u64,
    /// `sha256:…` of the uncompressed tar.
    pub(crate) diff_id: String,
}

impl RemoteMetadata {
    /// The layers, bottom first (needs the config).
    pub(crate) fn layers(&self) -> Result<Vec<Layer>> {
        layers_of(
            &self.layer_sizes,
            self.config.as_deref().unwrap_or_default(),
        )
    }
}

/// Pairs the manifest's layer sizes with the config's `rootfs.diff_ids`.
fn layers_of(sizes: &[u64], config: &[u8]) -> Result<Vec<Layer>> {
    let config: serde_json::Value =
        serde_json::from_slice(config).context("parsing the image config")?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        sizes.len() == diff_ids.len(),
        "the manifest has {} layers but the config {}",
        sizes.len(),
        diff_ids.len()
    );
    Ok(sizes
        .iter()
        .zip(diff_ids)
        .map(|(&size, diff_id)| Layer { size, diff_id })
        .collect())
}

/// The layers of manifest `digest` in the OCI layout `dir`, read in-process.
fn layout_layers(dir: &str, digest: &composefs_oci::OciDigest) -> Result<Vec<Layer>> {
    let blob = |d: &str| -> Result<Vec<u8>> {
        let (alg, hex) = d
            .split_once(':')
            .with_context(|| format!("invalid digest {d:?}"))?;
        let path = std::path::Path::new(dir).join("blobs").join(alg).join(hex);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(digest.as_ref())?)
        .with_context(|| format!("parsing the manifest {digest}"))?;
    let sizes: Vec<u64> = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?
        .iter()
        .map(|l| l["size"].as_u64().context("a layer without a size"))
        .collect::<Result<_>>()?;
    let config = manifest["config"]["digest"]
        .as_str()
        .context("the manifest names no config")?;
    layers_of(&sizes, &blob(config)?)
}

/// Whether the repository already holds the content of the layer `diff_id`.
pub(crate) fn has_layer<H: FsVerityHashValue>(repo: &Repository<H>, diff_id: &str) -> Result<bool> {
    let digest: composefs_oci::OciDigest = diff_id
        .try_into()
        .with_context(|| format!("invalid diff id {diff_id}"))?;
    Ok(repo
        .has_stream(&composefs_oci::layer_content_id(&digest))?
        .is_some())
}

/// Not enough room on the physical root for what a pull would store.
#[derive(Debug, thiserror::Error)]
#[error("Insufficient free space: need {need} MiB, have {have} MiB")]
pub(crate) struct InsufficientSpace {
    /// MiB the new layers need (rounded up).
    pub(crate) need: u64,
    /// MiB free (rounded down).
    pub(crate) have: u64,
}

/// Refuses a pull whose new layers (those the repository does not hold yet; their
/// compressed sizes, as upstream bootc counts) exceed the free space of the filesystem
/// holding the repository, before anything is fetched or written.
pub(crate) fn check_free_space<H: FsVerityHashValue>(
    repo: &Repository<H>,
    layers: &[Layer],
) -> Result<()> {
    let mut need = 0u64;
    for l in layers {
        if !has_layer(repo, &l.diff_id)? {
            need = need.saturating_add(l.size);
        }
    }
    let objects = repo
        .objects_dir()
        .context("opening the repository's objects")?;
    let st =
        rustix::fs::fstatvfs(objects).context("reading the free space of the physical root")?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if need > free {
        const MIB: u64 = 1 << 20;
        return Err(InsufficientSpace {
            need: need.div_ceil(MIB),
            have: free / MIB,
        }
        .into());
    }
    Ok(())
}

/// The image's boot-transformed tree (exactly what the deployment's EROFS holds) and
/// the boot resources it carries. Checked against the committed image's digest.
pub fn boot_tree<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    pulled: &Pulled,
) -> Result<(FileSystem<H>, Vec<BootEntry<H>>)> {
    image_tree(repo, pulled, true)
}

/// The boot tree of a pull: the one it committed the boot image from, else read back
/// and checked against the committed image ([`boot_tree`]). Either way checked to be
/// bootable.
pub(crate) fn pulled_boot_tree<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    pulled: &Pulled,
    tree: Option<PulledTree<H>>,
) -> Result<(FileSystem<H>, Vec<BootEntry<H>>)> {
    match tree {
        Some(t) => {
            check_bootable(&t.fs).context("the image cannot boot with composefs")?;
            Ok((t.fs, t.entries))
        }
        None => boot_tree(repo, pulled),
    }
}

/// [`boot_tree`], with `check_id` false for an image that was checked when it was
/// deployed (the booted one): its tree is then not digested again, which writes the
/// whole EROFS image in memory.
pub(crate) fn image_tree<H: FsVerityHashValue>(
    repo: &Arc<Repository<H>>,
    pulled: &Pulled,
    check_id: bool,
) -> Result<(FileSystem<H>, Vec<BootEntry<H>>)> {
    use composefs_boot::BootOps;
    let digest: composefs_oci::OciDigest = pulled
        .manifest_digest
        .as_str()
        .try_into()
        .with_context(|| format!("invalid manifest digest {}", pulled.manifest_digest))?;
    let img = OciImage::open(repo, &digest, None).context("opening the pulled image")?;
    let mut fs = composefs_oci::image::create_filesystem(
        repo,
        img.config_digest(),
        Some(img.config_verity()),
        &OciTransformOptions::default(),
    )
    .context("reading the image's filesystem tree")?;
    let entries = fs
        .transform_for_boot(repo)
        .context("finding the image's boot resources")?;
    check_bootable(&fs).context("the image cannot boot with composefs")?;
    if !check_id {
        return Ok((fs, entries));
    }
    let computed = fs.compute_image_id(repo.erofs_version());
    if computed.to_hex() != pulled.id.hex() {
        bail!(
            "the image tree digests to {} but its committed boot image is {}",
            computed.to_hex(),
            pulled.id.hex()
        );
    }
    Ok((fs, entries))
}

/// Refuses a tree the initramfs could not boot, by the initramfs's own rule
/// ([`bootc_initramfs_setup::bootable`]): what the boot would fail on is said here,
/// before anything is staged.
pub(crate) fn check_bootable<H: FsVerityHashValue>(
    fs: &FileSystem<H>,
) -> std::result::Result<(), bootc_initramfs_setup::bootable::NotBootable> {
    use bootc_initramfs_setup::bootable::{self, NodeKind};
    use composefs::generic_tree::{Inode, LeafContent};
    let root = fs.as_dir();
    bootable::check(|name| {
        match root
            .entries()
            .find(|(n, _)| *n == std::ffi::OsStr::new(name))
        {
            None => NodeKind::Missing,
            Some((_, Inode::Directory(_))) => NodeKind::Directory,
            Some((_, Inode::Leaf(id, _))) => match root.leaf(*id).content {
                LeafContent::Symlink(_) => NodeKind::Symlink,
                _ => NodeKind::Other,
            },
        }
    })
}

/// The number of objects in the repository's object store (for tests and reports).
pub fn count_objects(sysroot: impl AsFd) -> Result<usize> {
    use std::os::fd::AsRawFd;
    let path = format!(
        "/proc/self/fd/{}/{}/{}",
        sysroot.as_fd().as_raw_fd(),
        layout::REPOSITORY,
        layout::REPO_OBJECTS
    );
    let mut n = 0;
    for d in std::fs::read_dir(&path)
        .with_context(|| format!("reading {}/{}", layout::REPOSITORY, layout::REPO_OBJECTS))?
    {
        let d = d?;
        if d.file_name().len() == 2 && d.file_type()?.is_dir() {
            n += std::fs::read_dir(d.path())?.count();
        }
    }
    Ok(n)
}
