//! `bootc upgrade` and `bootc switch`: pull, commit, check the /etc merge, write the new
//! deployment's state and the staged entry set, and record the staged marker.
//!
//! Nothing the running system boots from is changed here: the new menu is written as
//! the boot loader's staged menu and only exchanged with the current one by
//! `composefs-finalize-staged` at shutdown, after the /etc merge succeeded.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::{ComposefsKarg, DeploymentId};
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;
use composefs::generic_tree::Stat;
use composefs::repository::Repository;
use composefs::tree::{Directory, FileSystem, RegularFile};

use super::etc_merge;
use super::host::Host;
use super::state::{self, Origin};
use crate::boot::entries::{BootCount, Entry, EntrySet};
use crate::boot::{bls, uki_deploy};
use crate::imgref::ImageReference;
use crate::repo::{self, PullOpts, Pulled};
use crate::sys::durable;

/// What `upgrade`/`switch` should do.
#[derive(Debug, Clone)]
pub(crate) struct StageOpts {
    /// `switch`: the new image to follow. `upgrade`: None (the booted origin's image).
    pub(crate) switch_to: Option<ImageReference>,
    /// `upgrade --tag`: follow this tag of the booted origin's image from now on.
    pub(crate) tag: Option<String>,
    /// Skip TLS verification for registries.
    pub(crate) insecure_registry: bool,
    /// No progress output.
    pub(crate) quiet: bool,
    /// `--progress-fd`: JSON progress lines on this descriptor.
    pub(crate) progress_fd: Option<crate::progress::ProgressFd>,
    /// How many previous deployments keep an entry (besides the new one).
    pub(crate) retain: usize,
    /// Stage it locked: finalize leaves it until `upgrade --from-downloaded`.
    pub(crate) download_only: bool,
    /// Boot counting for the new entry: tries before the loader falls back (0: off).
    /// `None`: the booted origin's setting, else [`DEFAULT_BOOT_TRIES`].
    pub(crate) boot_tries: Option<u32>,
    /// `upgrade --force`: stage an image even though its deployment failed to boot.
    pub(crate) force: bool,
}

/// Tries a new deployment gets before the loader falls back to the previous one.
pub(crate) const DEFAULT_BOOT_TRIES: u32 = 3;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageOutcome {
    /// The image is the one already booted (upgrade only).
    NoUpdate(DeploymentId),
    /// `switch` to the reference the booted deployment follows, at the booted digest.
    Unchanged(DeploymentId),
    /// Staged, but not applied at shutdown until `upgrade --from-downloaded`
    /// (`--download-only`).
    Downloaded(DeploymentId),
    /// Staged; it becomes the default at the next shutdown.
    Staged(DeploymentId),
    /// `upgrade` found an image whose deployment already failed to boot (it ran out of
    /// boot tries): not staged again without `--force`.
    FailedBefore {
        /// The deployment.
        id: DeploymentId,
        /// How many boots were tried, when the counter says.
        tries: Option<u32>,
    },
}

/// The image the booted deployment follows.
pub(crate) fn booted_imgref(host: &Host) -> Result<ImageReference> {
    let origin = Origin::load(&host.sysroot, &host.booted).with_context(|| {
        format!(
            "reading the origin of the booted deployment {}",
            host.booted.short()
        )
    })?;
    ImageReference::parse(&origin.image_reference).with_context(|| {
        format!(
            "the booted origin names an unusable image {:?}",
            origin.image_reference
        )
    })
}

/// The image `upgrade`/`switch` pulls: the switch target, or the booted origin's image
/// (with its tag replaced for `upgrade --tag`).
pub(crate) fn target(host: &Host, opts: &StageOpts) -> Result<ImageReference> {
    match (&opts.switch_to, &opts.tag) {
        (Some(r), _) => r.absolutize().context("resolving the image path"),
        (None, Some(tag)) => Ok(booted_imgref(host)?.with_tag(tag)?),
        (None, None) => booted_imgref(host),
    }
}

/// Pulls and stages. See the module documentation.
pub(crate) fn stage(host: &Host, opts: &StageOpts) -> Result<StageOutcome> {
    with_algorithm!(repo::read_algorithm(&host.sysroot)?, H => stage_typed::<H>(host, opts))
}

fn stage_typed<H: FsVerityHashValue>(host: &Host, opts: &StageOpts) -> Result<StageOutcome> {
    let imgref = target(host, opts)?;
    let repo = repo::open::<H>(&host.sysroot)?;
    let current = host.current_set()?;

    let (pulled, tree) = repo::pull_tree(
        &repo,
        &imgref,
        &PullOpts {
            insecure_registry: opts.insecure_registry,
            progress: crate::progress::reporter_for(
                opts.quiet,
                opts.progress_fd,
                &imgref.to_string(),
            )?,
            // Whatever is missing after the pull would be missing at boot.
            check_complete: true,
        },
    )
    .map_err(bls::explain_image_error)?;
    let id = pulled.id.clone();
    if id == host.booted {
        if opts.switch_to.is_some() {
            // Upstream: the same spec is no change, and scripts rely on exit 0.
            if booted_imgref(host).ok().as_ref() == Some(&imgref) {
                return Ok(StageOutcome::Unchanged(id));
            }
            bail!(
                "{imgref} ({}) is the booted deployment {}: nothing to switch to",
                pulled.manifest_digest,
                id.short()
            );
        }
        return Ok(StageOutcome::NoUpdate(id));
    }
    let failed = current.get(&id).filter(|e| e.failed());
    if let Some(f) = failed {
        // Deployed before and fell back from: the timer must not loop on it.
        if opts.switch_to.is_none() && !opts.force {
            return Ok(StageOutcome::FailedBefore {
                id,
                tries: f.counter.and_then(|c| c.done),
            });
        }
    } else if let Some(pos) = current.deployments().iter().position(|d| d == &id) {
        let what = if pos == 0 {
            "the default boot entry"
        } else {
            "an existing boot entry (use bootc rollback to boot it)"
        };
        bail!(
            "{imgref} ({}) is already deployed as {}: {what}",
            pulled.manifest_digest,
            id.short()
        );
    }
    // The pull healed what it found damaged and checked the whole image
    // (`check_complete`): nothing it needs is missing.
    let (fs, boot_entries) = repo::pulled_boot_tree(&repo, &pulled, tree)
        .map_err(bls::explain_image_error)
        .with_context(|| format!("deploying {imgref}"))?;
    // A sealed UKI makes it a UKI deployment, checked before anything is written.
    let sealed = uki_deploy::find(&repo, &boot_entries, &id)
        .with_context(|| format!("refusing {imgref}"))?;
    let kernel = match &sealed {
        Some(_) => None,
        None => {
            Some(bls::find_kernel(boot_entries).with_context(|| format!("deploying {imgref}"))?)
        }
    };
    // The booted image's tree: the kernel arguments it added (when the new entry starts
    // from the booted one), its kernel, and the pristine side of the /etc merge. Read once.
    let booted_fs = booted_tree(host, &repo);
    let digest = match (&sealed, &kernel) {
        (Some(u), _) => u.digest(),
        (None, Some(k)) => match same_kernel_digest(host, &booted_fs, k) {
            Some(d) => d,
            None => bls::boot_digest(&repo, k)?,
        },
        (None, None) => unreachable!("a kernel when there is no UKI"),
    };
    let os = bls::os_info(&repo, &fs)?;
    // The same kargs.d checks as install, and the new entry's kernel arguments
    // (docs/architecture.md section 3), before anything is written.
    let new_kargs = bls::image_kargs(&repo, &fs).with_context(|| format!("refusing {imgref}"))?;
    let booted_entry = current.get(&host.booted).cloned();
    let base = booted_entry
        .as_ref()
        .or_else(|| current.ours.first())
        .context("no boot entry to take the kernel arguments from")?;
    let insecure = booted_entry
        .as_ref()
        .map(|e| e.insecure)
        .unwrap_or(host.booted_insecure);
    if sealed.is_none() && base.bls.efi.is_some() {
        bail!(
            "refusing {imgref}: it has no UKI, and the entry it would take its kernel arguments from ({}) boots a UKI, whose arguments are sealed inside it; install the image instead",
            bls::show(&base.bls.file_name())
        );
    }
    // The arguments the image of the entry we start from added, to take them out again.
    let old_kargs = match base.deployment.as_ref() {
        Some(from) if from == &host.booted => match &booted_fs {
            Ok((fs, _)) => bls::image_kargs(&repo, fs),
            Err(e) => Err(anyhow::anyhow!("reading its image: {e:#}")),
        }
        .map_err(|e| (format!("deployment {}", from.short()), e)),
        Some(from) => deployed_image_kargs(host, &repo, from)
            .map_err(|e| (format!("deployment {}", from.short()), e)),
        None => Err((
            format!("boot entry {}", bls::show(&base.bls.file_name())),
            anyhow::anyhow!("the entry names no deployment"),
        )),
    };
    let old_kargs = old_kargs.unwrap_or_else(|(whose, e)| {
        let why = crate::sys::cmd::cap(&bootc_initramfs_setup::one_line(&format!("{e:#}")), 200);
        tracing::warn!(
            "the kernel arguments the image of {whose} added could not be read ({why}): \
             they cannot be told apart from yours, so all of that entry's kernel arguments \
             are kept"
        );
        vec![]
    });
    let options = bls::carried_options(
        &base.bls.options,
        &old_kargs,
        &new_kargs,
        &ComposefsKarg::new(id.clone(), insecure),
    )
    .with_context(|| format!("refusing {imgref}"))?;
    let booted_origin = Origin::load(&host.sysroot, &host.booted).ok();
    let tries = opts
        .boot_tries
        .or(booted_origin.and_then(|o| o.boot_tries))
        .unwrap_or(DEFAULT_BOOT_TRIES);
    let counter = (tries > 0 && host.menu().boot_counting()).then_some(BootCount {
        left: tries,
        done: None,
    });
    if opts.boot_tries.is_some_and(|t| t > 0) && counter.is_none() {
        tracing::warn!(
            "boot counting is not available with {}: --boot-tries is ignored",
            host.menu().name()
        );
    }
    let mut origin = Origin::for_image(&imgref, &digest, &pulled.manifest_digest, host.loader);
    origin.boot_tries = Some(tries);
    if let Some(u) = &sealed {
        origin.boot_type = uki_deploy::BOOT_TYPE_UKI.to_string();
        origin.missing_verity_allowed = u.insecure;
    }
    state::write_deployment(&host.sysroot, &repo, &fs, &id, &origin, false)?;

    // Refuse before anything boots differently if the /etc merge cannot succeed now.
    let checked = booted_fs
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(|(booted, _)| precheck_merge(host, &repo, booted, &id));
    if let Err(e) = checked {
        let deploy_root = durable::open_dir(&host.sysroot, layout::STATE_DEPLOY)?;
        durable::remove_all(&deploy_root, id.hex())?;
        return Err(e);
    }

    let entry = match (&sealed, &kernel) {
        (Some(u), _) => {
            uki_deploy::copy_uki(&host.boot, &id, u)?;
            uki_deploy::deployment_entry(&id, os, u)
        }
        (None, Some(kernel)) => {
            let dir =
                state::install_kernel(&repo, &host.sysroot, &host.boot, &id, kernel, &digest)?;
            bls::deployment_entry(&id, &dir, os, &kernel.kver, options)
        }
        (None, None) => unreachable!("a kernel when there is no UKI"),
    };

    let new = Entry::new(entry).with_counter(counter);
    let staged = new_entry_set(&current, &host.booted, new, opts.retain);
    host.menu().write_staged(host.boot.as_fd(), &staged)?;
    durable::syncfs(host.boot.as_fd())?;
    durable::syncfs(host.sysroot.as_fd())?;
    host.set_staged_as(&id, opts.download_only)?;
    host.clear_finalize_failure()?;
    Ok(if opts.download_only {
        StageOutcome::Downloaded(id)
    } else {
        StageOutcome::Staged(id)
    })
}

/// The set after an update: the new entry first, then the booted deployment, then the
/// other previous ones in their order, keeping `retain` previous entries in all.
pub(crate) fn new_entry_set(
    current: &EntrySet,
    booted: &DeploymentId,
    new: Entry,
    retain: usize,
) -> EntrySet {
    // An earlier entry of the new deployment (one that failed to boot, staged again)
    // is replaced by the new one.
    let others = current
        .ours
        .iter()
        .filter(|e| e.bls.file_stem != new.bls.file_stem);
    let mut previous: Vec<Entry> = others
        .clone()
        .filter(|e| e.deployment.as_ref() == Some(booted))
        .cloned()
        .collect();
    previous.extend(
        others
            .filter(|e| e.deployment.as_ref() != Some(booted))
            .cloned(),
    );
    previous.truncate(retain.max(1));
    let mut ours = vec![new];
    ours.extend(previous);
    EntrySet {
        ours,
        foreign: current.foreign.clone(),
    }
}

/// The boot digest the booted origin records, when the new kernel and initrd are the
/// very repository objects the booted image boots (same fs-verity digests, so the same
/// bytes): then hashing them again would give the same digest. None otherwise.
fn same_kernel_digest<H: FsVerityHashValue>(
    host: &Host,
    booted: &Result<(FileSystem<H>, Option<bls::Kernel<H>>)>,
    new: &bls::Kernel<H>,
) -> Option<String> {
    let old = booted.as_ref().ok()?.1.as_ref()?;
    let same = |a: &RegularFile<H>, b: &RegularFile<H>| match (a, b) {
        (RegularFile::External(x, sx), RegularFile::External(y, sy)) => x == y && sx == sy,
        _ => false,
    };
    if !(same(&old.vmlinuz, &new.vmlinuz) && same(&old.initrd, &new.initrd)) {
        return None;
    }
    Origin::load(&host.sysroot, &host.booted).ok()?.boot_digest
}

/// The `kargs.d` arguments of deployment `id`'s image ([`bls::image_kargs`]), read
/// from the repository by the manifest digest its origin records. An error when the
/// origin records none or the image is no longer in the repository.
fn deployed_image_kargs<H: FsVerityHashValue>(
    host: &Host,
    repo: &Arc<Repository<H>>,
    id: &DeploymentId,
) -> Result<Vec<String>> {
    let origin = Origin::load(&host.sysroot, id)?;
    let manifest_digest = origin
        .manifest_digest
        .context("its origin has no [image] manifest_digest")?;
    let pulled = Pulled {
        manifest_digest,
        id: id.clone(),
        stats: Default::default(),
    };
    let (fs, _) = repo::boot_tree(repo, &pulled).context("reading its image")?;
    bls::image_kargs(repo, &fs)
}

/// The booted deployment's image tree (the pristine side of the /etc merge) and its
/// kernel (None when it has no single one), read from the repository by the manifest digest its origin records.
/// Not digested again: it was checked against its image id when it was deployed, and
/// the kernel checks that image at every boot.
pub(crate) fn booted_tree<H: FsVerityHashValue>(
    host: &Host,
    repo: &Arc<Repository<H>>,
) -> Result<(FileSystem<H>, Option<bls::Kernel<H>>)> {
    let origin = Origin::load(&host.sysroot, &host.booted)?;
    let manifest_digest = origin.manifest_digest.context(
        "the booted origin has no [image] manifest_digest: cannot tell its pristine /etc",
    )?;
    let pulled = Pulled {
        manifest_digest,
        id: host.booted.clone(),
        stats: Default::default(),
    };
    let (fs, entries) =
        repo::image_tree(repo, &pulled, false).context("reading the booted image")?;
    Ok((fs, bls::find_kernel(entries).ok()))
}

/// Plans the three-way merge for staging `new` over the booted deployment, whose image
/// tree is `booted` ([`booted_tree`]): its /etc is compared in place, not extracted.
pub(crate) fn plan_merge<H: FsVerityHashValue>(
    host: &Host,
    repo: &Arc<Repository<H>>,
    booted: &FileSystem<H>,
    new: &DeploymentId,
) -> Result<etc_merge::MergePlan> {
    let empty;
    let etc = match booted.root.get_directory_opt(OsStr::new("etc")) {
        Ok(Some(d)) => d,
        // As state::copy_image_dir: no /etc in the image is an empty one.
        Ok(None) => {
            empty = Directory::new(Stat {
                st_mode: 0o755,
                ..Stat::uninitialized()
            });
            &empty
        }
        Err(_) => bail!("the booted image's /etc is not a directory"),
    };
    let p = etc_merge::ImageDir {
        dir: etc,
        fs: booted,
        repo,
    };
    let c = durable::open_dir(&host.sysroot, layout::deploy_etc(&host.booted))
        .context("opening the live /etc (the booted deployment's state)")?;
    let n = durable::open_dir(&host.sysroot, layout::deploy_etc(new))?;
    etc_merge::plan(p, c.as_fd(), n.as_fd())
}

fn precheck_merge<H: FsVerityHashValue>(
    host: &Host,
    repo: &Arc<Repository<H>>,
    booted: &FileSystem<H>,
    new: &DeploymentId,
) -> Result<()> {
    let plan = plan_merge(host, repo, booted, new)?;
    if !plan.conflicts.is_empty() {
        bail!(
            "local changes to /etc conflict with the new image, nothing was staged: {}",
            plan.conflict_summary()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::host::test_sets::*;

    fn ids(s: &EntrySet) -> Vec<DeploymentId> {
        s.deployments()
    }

    #[test]
    fn new_entry_set_puts_new_then_booted_then_the_rest_and_keeps_foreign() {
        let (a, b, c, n) = (id('a'), id('b'), id('c'), id('e'));
        // Booted b is not the default (a rollback is queued): still right after the new.
        let current = set(&[&a, &b, &c]);
        let out = new_entry_set(&current, &b, ours(&n), 2);
        assert_eq!(ids(&out), vec![n.clone(), b.clone(), a.clone()]);
        assert_eq!(
            out.foreign, current.foreign,
            "foreign entries carried as they are"
        );
        // retain counts previous entries; 0 still keeps the booted one.
        assert_eq!(
            ids(&new_entry_set(&current, &b, ours(&n), 0)),
            vec![n.clone(), b.clone()]
        );
        assert_eq!(
            ids(&new_entry_set(&current, &b, ours(&n), 10)),
            vec![n.clone(), b.clone(), a.clone(), c.clone()]
        );
        // The booted deployment without an entry: the others follow in order.
        let out = new_entry_set(&set(&[&a, &c]), &b, ours(&n), 2);
        assert_eq!(ids(&out), vec![n.clone(), a.clone(), c.clone()]);
        // An empty set (first update after a manual cleanup): only the new entry.
        let empty = EntrySet::default();
        assert_eq!(ids(&new_entry_set(&empty, &b, ours(&n), 2)), vec![n]);
    }
}
