//! `bootc composefs-finalize-staged`: run at shutdown (the `ExecStop=` of
//! `bootc-composefs-finalize-staged.service`) to merge /etc into the staged deployment
//! and make it the default.
//!
//! The merge is three-way (see [`super::etc_merge`]): pristine = the booted image's
//! /etc, current = the live /etc (the booted deployment's `state/deploy/<id>/etc`, which
//! is what is bound on /etc), new = the staged deployment's `etc/`. Before anything is
//! changed, every file the new default needs is checked ([`check_bootable`]). On a
//! conflict or any error before the exchange the entry sets are not swapped: the old
//! deployment stays the default, and the reason goes to the journal (stderr) and to
//! `state/finalize-failure`, which `bootc status` shows.
//!
//! On success the entry sets are exchanged atomically. Everything after the exchange is
//! bookkeeping that a re-run completes from wherever it stopped: the marker is cleared
//! last, so as long as it names the deployment that is already the default
//! ([`Staged::Finalized`]), finalize knows the exchange happened and only completes
//! ([`STEPS_AFTER_EXCHANGE`] names the points a test kills it at).

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::with_algorithm;
use composefs::fsverity::FsVerityHashValue;
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::etc_merge;
use super::gc::{self, GcReport};
use super::host::{Host, Staged};
use super::stage::{booted_tree, plan_merge};
use crate::boot::entries::EntrySet;
use crate::repo;
use crate::sys::{durable, fault};

/// The steps after the exchange, in order; a debug build aborts at one when
/// `BOOTC_FAULT_AT` names it (see [`crate::sys::fault`]).
pub(crate) const STEPS_AFTER_EXCHANGE: [&str; 5] = [
    "finalize.after-exchange",
    "finalize.after-old-set-removed",
    "finalize.after-gc",
    "finalize.after-failure-cleared",
    "finalize.after-marker-cleared",
];

/// What finalize did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finalized {
    /// No staged deployment.
    NothingStaged,
    /// The marker named a deployment that is neither staged nor the default; removed.
    StaleMarker(DeploymentId),
    /// The staged deployment was staged by `upgrade --download-only`: left staged and
    /// not applied until `upgrade --from-downloaded`.
    DownloadOnly(DeploymentId),
    /// The staged deployment is now the default.
    Done {
        /// The new default.
        id: DeploymentId,
        /// An earlier finalize had exchanged the sets already; this run completed it.
        resumed: bool,
        /// What gc removed (None when it failed: a warning, not a finalize failure).
        gc: Option<GcReport>,
    },
}

/// Finalizes the staged deployment, or completes an interrupted finalize; records the
/// failure reason when it cannot.
pub(crate) fn finalize(host: &Host) -> Result<Finalized> {
    let (id, pending) = match host.staged_state()? {
        Staged::None => return Ok(Finalized::NothingStaged),
        Staged::Stale(id) => {
            tracing::warn!(
                "the staged marker names {}, which is neither staged nor the default: removing the marker",
                id.short()
            );
            host.clear_staged()?;
            return Ok(Finalized::StaleMarker(id));
        }
        Staged::Finalized(id) => (id, None),
        Staged::Pending { id, .. } if host.staged_download_only() => {
            tracing::info!(
                "the staged deployment {} is download-only: not applied (bootc upgrade --from-downloaded applies it)",
                id.short()
            );
            return Ok(Finalized::DownloadOnly(id));
        }
        Staged::Pending { id, set } => (id, Some(set)),
    };
    let resumed = pending.is_none();
    let result = match &pending {
        Some(set) => repo::read_algorithm(&host.sysroot)
            .and_then(|alg| with_algorithm!(alg, H => apply::<H>(host, &id, set))),
        None => Ok(()),
    }
    .and_then(|()| complete(host, &id));
    match result {
        Ok(gc) => Ok(Finalized::Done { id, resumed, gc }),
        Err(e) => {
            let reason = failure_reason(host, &id, &e);
            // Printed once, by the caller (stderr goes to the journal).
            if let Err(w) = host.set_finalize_failure(&reason) {
                tracing::error!("recording the failure: {w:#}");
            }
            Err(anyhow::anyhow!(reason))
        }
    }
}

/// The failure text, naming what really is the default (read from the entries now).
fn failure_reason(host: &Host, id: &DeploymentId, e: &anyhow::Error) -> String {
    match host.current_set() {
        Ok(set) => match set.default_deployment() {
            Some(d) if d == id => format!(
                "finalizing {} did not complete, but it is already the default for the next boot; run bootc composefs-finalize-staged again to finish: {e:#}",
                id.short()
            ),
            Some(d) => format!(
                "finalizing {} failed, {} stays the default: {e:#}",
                id.short(),
                d.short()
            ),
            None => format!(
                "finalizing {} failed, and {} boots no deployment of ours: {e:#}",
                id.short(),
                host.menu().menu_path()
            ),
        },
        Err(r) => format!(
            "finalizing {} failed, and the current boot entries cannot be read ({r:#}): {e:#}",
            id.short()
        ),
    }
}

/// Up to and including the exchange: check, merge /etc, exchange the entry sets.
fn apply<H: FsVerityHashValue>(host: &Host, staged: &DeploymentId, set: &EntrySet) -> Result<()> {
    check_bootable(host, staged, set)?;
    let repo = repo::open::<H>(&host.sysroot)?;
    let (booted, _) = booted_tree(host, &repo)?;
    let plan = plan_merge(host, &repo, &booted, staged)?;
    if !plan.conflicts.is_empty() {
        bail!("/etc cannot be merged: {}", plan.conflict_summary());
    }
    let current = durable::open_dir(&host.sysroot, layout::deploy_etc(&host.booted))?;
    let new = durable::open_dir(&host.sysroot, layout::deploy_etc(staged))?;
    // Temporaries go to state/, never inside the /etc that will boot.
    let scratch = durable::open_dir(&host.sysroot, layout::STATE)?;
    etc_merge::apply(&plan, current.as_fd(), new.as_fd(), scratch.as_fd())?;
    for p in &plan.skipped {
        tracing::info!(
            "/etc/{}: not carried over (socket, FIFO or device node)",
            p.display()
        );
    }
    durable::syncfs(host.sysroot.as_fd())?;
    // The boot loader and systemd-bless-boot rename counted entries of the current
    // menu (a try counted, a boot blessed) after staging: the staged copies take those
    // names, so the exchange loses no counter.
    if let Some(fresh) = with_current_counters(set, &host.current_set()?, staged) {
        host.menu().write_staged(host.boot.as_fd(), &fresh)?;
    }
    host.menu().exchange_staged(host.boot.as_fd())?;
    durable::syncfs(host.boot.as_fd())?;
    tracing::info!(
        "finalized {}: {} local /etc changes carried over",
        staged.short(),
        plan.actions.len()
    );
    fault::point(STEPS_AFTER_EXCHANGE[0]);
    Ok(())
}

/// `staged` with the boot counters its entries have now in `current` (matched by entry
/// name), or `None` when none changed. The entry of `new`, the deployment being
/// finalized, keeps its own: it was written fresh (a deployment that failed before and
/// is tried again gets new tries, not its old exhausted counter).
pub(crate) fn with_current_counters(
    staged: &EntrySet,
    current: &EntrySet,
    new: &DeploymentId,
) -> Option<EntrySet> {
    let mut out = staged.clone();
    let mut changed = false;
    for e in out
        .ours
        .iter_mut()
        .filter(|e| e.deployment.as_ref() != Some(new))
    {
        if let Some(c) = current
            .ours
            .iter()
            .find(|c| c.bls.file_stem == e.bls.file_stem)
        {
            if c.counter != e.counter {
                e.counter = c.counter;
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// After the exchange: remove the update stamps, the old set, collect garbage, clear
/// the failure record, and last the marker. Each step is idempotent.
fn complete(host: &Host, id: &DeploymentId) -> Result<Option<GcReport>> {
    remove_update_stamps(host, id)?;
    host.menu()
        .discard_staged(host.boot.as_fd())
        .context("removing the previous menu")?;
    fault::point(STEPS_AFTER_EXCHANGE[1]);
    let report = match gc::gc(host, false) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!("garbage collection after finalize failed: {e:#}");
            None
        }
    };
    fault::point(STEPS_AFTER_EXCHANGE[2]);
    host.clear_finalize_failure()?;
    fault::point(STEPS_AFTER_EXCHANGE[3]);
    host.clear_staged()?;
    fault::point(STEPS_AFTER_EXCHANGE[4]);
    Ok(report)
}

/// The stamp `systemd-update-done` leaves in /etc and /var: units with
/// `ConditionNeedsUpdate=` (sysusers, tmpfiles, ldconfig, hwdb) run when it is missing
/// or older than /usr.
pub(crate) const UPDATE_STAMP: &str = ".updated";

/// Removes [`UPDATE_STAMP`] from the new default's /etc and from the shared /var, so
/// those units run on its first boot: the merge carried the booted system's /etc stamp
/// over, and /usr's mtime (the composefs image's) says nothing about the update. Removed
/// only when present (then the directory is synced), so a re-run does nothing.
fn remove_update_stamps(host: &Host, id: &DeploymentId) -> Result<()> {
    for dir in [layout::deploy_etc(id), layout::SHARED_VAR.into()] {
        let fd = match durable::open_dir(&host.sysroot, &dir) {
            Ok(fd) => fd,
            // No shared /var (a physical root set up by hand): nothing to remove.
            Err(_) if dir.as_os_str() == layout::SHARED_VAR => continue,
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&fd, UPDATE_STAMP, rustix::fs::AtFlags::empty()) {
            Ok(()) => {
                fault::point("finalize.update-stamp-removed");
                durable::fsync_dir(&fd)?;
                tracing::info!("removed {}/{UPDATE_STAMP}", dir.display());
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}/{UPDATE_STAMP}", dir.display()))
            }
        }
    }
    Ok(())
}

/// Every file the staged default needs exists: its entry's `linux` and `initrd` (or `efi`) on the
/// boot partition (regular files), its state directory with `etc/`, and its EROFS image
/// `composefs/images/<hex>`. Checked before anything is changed.
pub(crate) fn check_bootable(host: &Host, id: &DeploymentId, set: &EntrySet) -> Result<()> {
    let entry = set.get(id).with_context(|| {
        format!(
            "{} has no entry for {}",
            host.menu().staged_menu_path(),
            id.short()
        )
    })?;
    let name = entry.bls.file_name();
    let paths = std::iter::once(&entry.bls.linux)
        .chain(&entry.bls.initrd)
        .chain(&entry.bls.efi)
        .filter(|p| !p.is_empty());
    for path in paths {
        if let Some(problem) = not_regular(&host.boot, path.trim_start_matches('/')) {
            bail!("the staged entry {name} boots {path}, which {problem} on the boot partition");
        }
    }
    let state = layout::deploy_dir(id);
    let etc = layout::deploy_etc(id);
    for dir in [&state, &etc] {
        if durable::open_dir(&host.sysroot, dir).is_err() {
            bail!(
                "the staged deployment's {} is missing (or not a directory) on the physical root",
                dir.display()
            );
        }
    }
    let image = layout::image_path(id);
    if let Some(problem) = not_regular(&host.sysroot, &image) {
        bail!(
            "the staged deployment's image {} {problem} on the physical root",
            image.display()
        );
    }
    Ok(())
}

/// What is wrong with `rel` (resolved inside `root`, symlinks followed there) as a
/// regular file, or None.
fn not_regular(root: impl AsFd, rel: impl AsRef<Path>) -> Option<String> {
    let open = || {
        rustix::fs::openat2(
            &root,
            rel.as_ref(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    // A rename or mount anywhere on the machine during a lookup through ".." (the image
    // is a symlink to ../objects/…) makes openat2 fail with EAGAIN; the kernel's advice
    // is to retry (shutdown, when finalize runs, unmounts a lot).
    let mut opened = open();
    for _ in 0..100 {
        if !matches!(opened, Err(rustix::io::Errno::AGAIN)) {
            break;
        }
        opened = open();
    }
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Some("is missing".into()),
        Err(e) => return Some(format!("cannot be opened ({e})")),
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => None,
        Ok(_) => Some("is not a regular file".into()),
        Err(e) => Some(format!("cannot be read ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::host::test_sets::*;
    use std::fs;

    /// A host on tempdirs with a complete deployment `x` (no root needed).
    fn host_with(x: &DeploymentId) -> (tempfile::TempDir, Host) {
        let t = tempfile::tempdir().unwrap();
        let (root, boot) = (t.path().join("root"), t.path().join("boot"));
        let dir = layout::boot_dir_name(x);
        fs::create_dir_all(boot.join(&dir)).unwrap();
        fs::write(boot.join(&dir).join("vmlinuz"), "k").unwrap();
        fs::write(boot.join(&dir).join("initramfs.img"), "i").unwrap();
        fs::create_dir_all(root.join(layout::deploy_etc(x))).unwrap();
        fs::create_dir_all(root.join(layout::image_path(x).parent().unwrap())).unwrap();
        fs::write(root.join(layout::image_path(x)), "erofs").unwrap();
        let host = Host {
            sysroot_path: root.clone(),
            sysroot: durable::open_dir(rustix::fs::CWD, &root).unwrap(),
            boot: durable::open_dir(rustix::fs::CWD, &boot).unwrap(),
            run_dir: t.path().join("run"),
            booted: id('b'),
            booted_insecure: true,
            loader: crate::boot::BootloaderKind::Systemd,
        };
        (t, host)
    }

    /// A counter the loader or systemd-bless-boot changed after staging survives the
    /// exchange: the staged copy takes the current name.
    #[test]
    fn staged_entries_take_the_counters_of_the_current_menu() {
        use crate::boot::entries::BootCount;
        let (a, b, n) = (id('a'), id('b'), id('e'));
        let staged = set(&[&n, &a, &b]);
        let mut current = set(&[&a, &b]);
        assert_eq!(
            with_current_counters(&staged, &current, &n),
            None,
            "nothing changed"
        );
        // b counted a try since staging.
        current.ours[1].counter = Some(BootCount {
            left: 1,
            done: Some(2),
        });
        let fresh = with_current_counters(&staged, &current, &n).unwrap();
        assert_eq!(fresh.ours[2].counter, current.ours[1].counter);
        assert_eq!(fresh.ours[0].counter, None, "the new entry keeps its own");
        assert_eq!(fresh.deployments(), staged.deployments());
        // b was blessed after staging: the staged copy loses its counter too.
        let mut staged2 = staged.clone();
        staged2.ours[2].counter = Some(BootCount {
            left: 2,
            done: Some(1),
        });
        let fresh = with_current_counters(&staged2, &set(&[&a, &b]), &n).unwrap();
        assert_eq!(fresh.ours[2].counter, None);
        // The deployment being finalized keeps its fresh counter even when the current
        // menu holds its old, exhausted one (upgrade --force after a failed boot).
        let mut staged3 = set(&[&a, &b]);
        staged3.ours[0].counter = Some(BootCount {
            left: 3,
            done: None,
        });
        let mut failed = set(&[&b, &a]);
        failed.ours[1].counter = Some(BootCount {
            left: 0,
            done: Some(3),
        });
        assert_eq!(with_current_counters(&staged3, &failed, &a), None);
    }

    #[test]
    fn every_file_the_new_default_needs_is_checked() {
        let x = id('c');
        let s = set(&[&x]);
        let (t, host) = host_with(&x);
        check_bootable(&host, &x, &s).unwrap();
        let dir = layout::boot_dir_name(&x);
        let boot = t.path().join("boot");
        let root = t.path().join("root");

        // A wrong kernel path in the entry.
        let mut wrong = s.clone();
        wrong.ours[0].bls.linux = format!("/{dir}/vmlinuz-typo");
        let e = check_bootable(&host, &x, &wrong).unwrap_err().to_string();
        assert!(
            e.contains("vmlinuz-typo, which is missing on the boot partition"),
            "{e}"
        );
        // An escaping path resolves inside the boot partition, and is missing there.
        wrong.ours[0].bls.linux = "/../../../../etc/passwd".into();
        let e = check_bootable(&host, &x, &wrong).unwrap_err().to_string();
        assert!(e.contains("is missing"), "{e}");

        // The initrd is a directory.
        fs::remove_file(boot.join(&dir).join("initramfs.img")).unwrap();
        fs::create_dir(boot.join(&dir).join("initramfs.img")).unwrap();
        let e = check_bootable(&host, &x, &s).unwrap_err().to_string();
        assert!(
            e.contains("initramfs.img, which is not a regular file"),
            "{e}"
        );
        fs::remove_dir(boot.join(&dir).join("initramfs.img")).unwrap();
        fs::write(boot.join(&dir).join("initramfs.img"), "i").unwrap();

        // The image is missing.
        fs::remove_file(root.join(layout::image_path(&x))).unwrap();
        let e = check_bootable(&host, &x, &s).unwrap_err().to_string();
        assert!(
            e.contains(&format!("image composefs/images/{} is missing", x.hex())),
            "{e}"
        );
        fs::write(root.join(layout::image_path(&x)), "erofs").unwrap();

        // The state's etc is missing.
        fs::remove_dir(root.join(layout::deploy_etc(&x))).unwrap();
        let e = check_bootable(&host, &x, &s).unwrap_err().to_string();
        assert!(
            e.contains(&format!("state/deploy/{}/etc is missing", x.hex())),
            "{e}"
        );
    }
}
