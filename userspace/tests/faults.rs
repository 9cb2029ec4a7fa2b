//! Fault injection at every durable step (issue 13 item 1): install (to-filesystem),
//! upgrade and switch staging, finalize, rollback and gc, each with systemd-boot and GRUB,
//! killed just before each of its durable steps in turn, then a power cut.
//!
//! **How the steps are found.** Every durable primitive of `sys/durable.rs`, both menu
//! exchanges and the named finalize points are counted fault steps (`sys/fault.rs`).
//! Each operation is run once with `BOOTC_FAULT_AT=count` to learn its number of steps
//! N, then from the same starting disk with `BOOTC_FAULT_AT=durable:n` for every n in
//! 1..=N; the run must really die there (SIGABRT). A step added to any of these paths
//! later is therefore covered without being listed here, and an operation whose count
//! drops to zero fails the suite.
//!
//! **What the power cut simulates.** The root and the boot partition are two ext4
//! filesystems on loop files (the boot one mounted on `root/boot`, so a sync of one
//! does not persist the other, as with a real ESP). Right after the abort both are shut
//! down with `EXT4_IOC_SHUTDOWN` and `EXT4_GOING_FLAGS_NOLOGFLUSH` (what xfstests'
//! `godown` does to stand in for a power failure): from that instant nothing more
//! reaches the device, dirty pages are dropped and the running journal transaction is
//! discarded, so what survives is what was fsynced or committed (or written back by the
//! kernel) before the cut ([`the_power_cut_drops_what_was_not_synced`] checks this).
//! They are then unmounted and mounted again (journal replay). The run directory (`/run`,
//! a tmpfs on a real machine, holding the staged marker) is emptied, and the machine
//! "reboots" into the first entry of the current menu: the later commands run with that
//! as the booted deployment.
//!
//! Not simulated: a cut at any instant other than the abort (device-mapper's
//! `dm-flakey`/`dm-log-writes` are not in the test kernel); reordering or tearing inside
//! the device (the loop file's page cache is coherent); the ESP's real filesystem (vfat
//! has no journal; the test kernel has no vfat). And ext4 commits all earlier metadata
//! of a filesystem on any fsync there, so a missing fsync is only caught when no later
//! sync of the same filesystem happens before the cut.
//!
//! Each point is also run as a plain **crash** (only the process dies: every write
//! reaches the disk, /run keeps the marker, the same deployment stays booted and the
//! user runs the verb again), which is how an interrupted finalize is resumed.
//!
//! **What each point must survive.** (a) The current menu is the old set or the new one,
//! never a mix, and every file each entry needs exists (kernel, initrds, EROFS image,
//! `state/deploy/<id>/etc`); a staged menu, when present, is complete too. (b) `bootc
//! status --format json` works, its booted/rollback agree with the menu, and it shows as
//! staged only what finalize would apply (nothing after a cut: the marker died with
//! /run). (d) The local /etc edit made in the first deployment before anything was
//! staged is in the running /etc and in that of the deployment that boots next. (e)
//! `bootc gc` succeeds, leaves no `.bootc-tmp.*` name under `state/`, `state/deploy/`,
//! the boot partition's root, `loader/` or `grub2/`, and removes nothing the menu boots.
//! (c) Re-running the operation then succeeds and ends in the state a run without fault
//! reaches (install: `--wipe`, then gc; a stage or finalize the cut undid: staged and
//! finalized again, carrying the edit).
//!
//! Not counted as steps (so not killed inside): the composefs repository's own writes
//! (objects, images, streams: the composefs crate's), the /etc merge's renames into the
//! staged deployment's `etc/` (a new deployment that boots nothing until the exchange
//! after the sync that follows), and the plain unlinks of the marker and the failure
//! record (the named finalize points right after them are steps).
//!
//! Cost: one installed system per operation and loader (with images smaller than the
//! shared fixtures), snapshotted with `cp --sparse=always` and restored before each
//! point; points that leave byte-identical disks behind are checked once (the checks
//! are a function of the disk). The last line printed is `fault injection: N points, N
//! survived`.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use bootc_test_fixtures::{images, oci};
use common::system::*;
use common::*;

const LOADERS: &[&str] = &["systemd", "grub"];

/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;

/// The local /etc edit every case carries (d).
const EDIT: (&str, &str) = ("local-edit.conf", "edited before the update\n");

/// The operations under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Install,
    /// `switch` to v2.
    Stage,
    /// `upgrade`: the followed tag now holds v2.
    Upgrade,
    Finalize,
    Rollback,
    Gc,
}

const OPS: [Op; 6] = [
    Op::Install,
    Op::Stage,
    Op::Upgrade,
    Op::Finalize,
    Op::Rollback,
    Op::Gc,
];

/// What follows the death of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cut {
    /// A power cut: unsynced writes and /run lost, the next boot is the menu's first
    /// entry.
    Power,
    /// Only the process died (killed, OOM): the disk has every write, /run keeps the
    /// marker, the same deployment is still booted and the user runs the verb again.
    Crash,
}

/// An installed system whose root filesystem can be snapshotted, restored and cut.
struct Rig {
    s: System,
    /// Who is booted when the operation starts.
    booted: String,
    /// The current menu before the operation and after a run without fault.
    old: Vec<String>,
    new: Vec<String>,
}

fn run_dir(s: &System) -> PathBuf {
    s.t.path().join("run")
}

/// The filesystem images: the root, and (when the system has one) the boot partition
/// mounted on `root/boot`.
const IMAGES: [&str; 2] = ["root.img", "boot.img"];

fn has_boot(s: &System) -> bool {
    s.t.path().join(IMAGES[1]).exists()
}

/// Mounts `img` on `at` through a loop device of its own (never one `mount -o loop`
/// would reuse: a superblock kept alive by a mount namespace that copied ours would
/// come back, shut down).
fn mount_at(img: PathBuf, at: &std::path::Path) {
    let dev = stdout(Command::new("losetup").args(["--find", "--show"]).arg(img));
    run(Command::new("mount").arg(dev.trim()).arg(at));
}

/// Mounts the root, and the boot partition when it has one and `root/boot` exists.
fn mount(s: &System) {
    mount_at(s.t.path().join(IMAGES[0]), &s.root);
    if has_boot(s) && s.root.join("boot").is_dir() {
        mount_at(s.t.path().join(IMAGES[1]), &s.root.join("boot"));
    }
}

/// The source device of the (topmost) mount on `at`, if something is mounted there.
fn mounted_dev(at: &std::path::Path) -> Option<String> {
    let at = at.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&at)).then(|| f.get(dash + 2).map(|d| d.to_string()))?
        })
}

fn boot_mounted(s: &System) -> bool {
    mounted_dev(&s.root.join("boot")).is_some()
}

/// `EXT4_GOING_FLAGS_DEFAULT`: flush everything, then shut down.
const FLUSH_AND_SHUT: u32 = 0;
/// `EXT4_GOING_FLAGS_NOLOGFLUSH`: shut down now; the running transaction is lost.
const CUT: u32 = 2;

/// `EXT4_IOC_SHUTDOWN` with `flags` on the filesystem mounted on `at`. (The one
/// `unsafe` of the tests: rustix has no safe wrapper for this ioctl, and no tool on the
/// test machines issues it.)
#[allow(unsafe_code)]
fn shutdown(at: &std::path::Path, flags: u32) {
    // EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32).
    const SHUTDOWN: rustix::ioctl::Opcode = rustix::ioctl::opcode::read::<u32>(b'X', 125);
    let dir = fs::File::open(at).unwrap();
    // SAFETY: the ioctl reads one u32 from the pointer Setter passes.
    unsafe {
        rustix::ioctl::ioctl(
            dir.as_fd(),
            rustix::ioctl::Setter::<SHUTDOWN, u32>::new(flags),
        )
    }
    .expect("EXT4_IOC_SHUTDOWN");
}

/// Unmounts `at` and detaches its loop device. The filesystem is shut down first (a
/// no-op after a cut): if another mount namespace still holds it, it can never write to
/// the image again.
fn unmount_at(at: &std::path::Path) {
    let dev = mounted_dev(at).expect("mounted");
    shutdown(at, FLUSH_AND_SHUT);
    run(Command::new("umount").arg(at));
    run(Command::new("losetup").arg("-d").arg(&dev));
}

fn umount(s: &System) {
    if boot_mounted(s) {
        unmount_at(&s.root.join("boot"));
    }
    unmount_at(&s.root);
}

/// The power cut: both filesystems shut down without flushing their journals, then
/// unmounted and mounted again; /run emptied.
fn power_cut(s: &System) {
    shutdown(&s.root, CUT);
    if boot_mounted(s) {
        shutdown(&s.root.join("boot"), CUT);
    }
    umount(s);
    mount(s);
    let r = run_dir(s);
    fs::remove_dir_all(&r).unwrap();
    fs::create_dir(&r).unwrap();
}

/// Unmounts and detaches whatever the test mounted, without panicking (for drops).
fn cleanup(s: &System) {
    for at in [s.root.join("boot"), s.root.clone()] {
        if let Some(dev) = mounted_dev(&at) {
            let _ = Command::new("umount").arg(&at).status();
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

/// Runs [`cleanup`] when dropped.
struct Mounted<'a>(&'a System);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        cleanup(self.0);
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        cleanup(&self.s);
    }
}

impl Rig {
    /// Saves the root filesystem and the run directory as the starting point.
    fn snapshot(&self) {
        umount(&self.s);
        for img in IMAGES {
            let t = self.s.t.path();
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(t.join(img))
                .arg(t.join(format!("{img}.snap"))));
        }
        let r = run_dir(&self.s);
        let rs = self.s.t.path().join("run.snap");
        let _ = fs::remove_dir_all(&rs);
        run(Command::new("cp").arg("-a").arg(&r).arg(&rs));
        mount(&self.s);
    }

    /// Puts the starting point back.
    ///
    /// Each image is a new file (copied, then renamed over the old one): nothing cached
    /// for the old file or its loop device can leak into the next point.
    fn restore(&self) {
        umount(&self.s);
        for img in IMAGES {
            let t = self.s.t.path();
            let fresh = t.join(format!("{img}.fresh"));
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(t.join(format!("{img}.snap")))
                .arg(&fresh));
            fs::rename(&fresh, t.join(img)).unwrap();
        }
        let r = run_dir(&self.s);
        fs::remove_dir_all(&r).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(self.s.t.path().join("run.snap"))
            .arg(&r));
        mount(&self.s);
    }

    /// Runs the operation with `BOOTC_FAULT_AT=fault`.
    fn run_op(&self, op: Op, fault: &str) -> Output {
        let env = [(bootc::sys::fault::ENV, fault)];
        match op {
            Op::Install => {
                let src = self.s.imgref("v1");
                let root = self.s.root.display().to_string();
                bootc_with_env(
                    &strs(&install_args(&src, &root, &self.s.loader, false)),
                    &env,
                )
            }
            Op::Stage => self
                .s
                .bootc_env(&self.booted, &["switch", &self.s.imgref("v2")], &env),
            Op::Upgrade => self.s.bootc_env(&self.booted, &["upgrade"], &env),
            Op::Finalize => self
                .s
                .bootc_env(&self.booted, &["composefs-finalize-staged"], &env),
            Op::Rollback => self.s.bootc_env(&self.booted, &["rollback"], &env),
            Op::Gc => self.s.bootc_env(&self.booted, &["gc"], &env),
        }
    }
}

fn install_args(src: &str, root: &str, loader: &str, wipe: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "install",
        "to-filesystem",
        "--source-imgref",
        src,
        "--root-mount-spec",
        "UUID=test",
        "--bootloader",
        loader,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if wipe {
        v.push("--wipe".into());
    }
    v.push(root.to_string());
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The test image `v<version>` without the 20 MB file of the shared fixtures (this suite
/// installs and stages hundreds of times; the large file adds time, not steps), and
/// with a kernel and initrd of its own, so staging writes a new boot directory and gc
/// removes one.
fn small_image(version: u32) -> Vec<oci::Layer> {
    let kver = images::KVER;
    let base = oci::Layer::new()
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/modules", 0o755)
        .dir(&format!("usr/lib/modules/{kver}"), 0o755)
        .file(
            &format!("usr/lib/modules/{kver}/vmlinuz"),
            images::pseudo_random(16 * 1024, u64::from(version) * 2 + 1),
            0o644,
        )
        .file(
            &format!("usr/lib/modules/{kver}/initramfs.img"),
            images::pseudo_random(8 * 1024, u64::from(version) * 2 + 2),
            0o644,
        )
        .file("usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755)
        .dir("usr/share", 0o755)
        .symlink("bin", "usr/bin")
        .dir("boot", 0o755)
        .dir("sysroot", 0o755)
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .file("var/lib/seeded", "from the image\n", 0o644)
        .dir("etc", 0o755)
        .file("etc/hostname", "bootc-test\n", 0o644)
        .dir("etc/conf.d", 0o755)
        .file("etc/conf.d/keep.conf", "keep=1\n", 0o644)
        .file("etc/conf.d/removed-in-v2.conf", "old=1\n", 0o644);
    vec![base, images::variant_layer(version)]
}

/// v1 installed with `loader` on fresh ext4 loop files, v2 and v3 in the
/// layout.
fn install(loader: &str) -> System {
    let t = tempdir("bootc-faults-");
    let layout = t.path().join("oci");
    for v in 1..=3 {
        oci::write_image(&layout, &format!("v{v}"), &small_image(v), &[]).unwrap();
    }
    // A 128 MiB root and a 32 MiB boot partition (its own filesystem, so a sync of
    // one does not persist the other, as with a real ESP).
    for (img, size) in IMAGES.iter().zip([128u64 << 20, 32 << 20]) {
        let img = t.path().join(img);
        disk_image(&img, size);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    }
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::create_dir(t.path().join("run")).unwrap();
    let mut s = System {
        t,
        root,
        layout,
        v1: String::new(),
        loader: loader.to_string(),
    };
    mount(&s);
    fs::create_dir(s.root.join("boot")).unwrap();
    mount_at(s.t.path().join(IMAGES[1]), &s.root.join("boot"));
    let src = s.imgref("v1");
    let out = bootc(&strs(&install_args(
        &src,
        &s.root.display().to_string(),
        loader,
        false,
    )));
    if !out.status.success() {
        cleanup(&s);
        panic!("installing {src} failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    s.v1 = text
        .split("deployment sha256:")
        .nth(1)
        .expect("install prints the id")
        .trim()
        .to_string();
    s
}

fn edit_etc(s: &System, id: &str) {
    fs::write(s.etc(id).join(EDIT.0), EDIT.1).unwrap();
}

/// The system just before `op`, snapshotted.
fn prepare(op: Op, loader: &str) -> Rig {
    let s = install(loader);
    let v1 = s.v1.clone();
    let rig = match op {
        Op::Install => {
            // A fresh filesystem with an empty /boot, as the install tests start.
            umount(&s);
            for img in IMAGES {
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F"])
                    .arg(s.t.path().join(img)));
            }
            mount(&s);
            fs::create_dir(s.root.join("boot")).unwrap();
            mount_at(s.t.path().join(IMAGES[1]), &s.root.join("boot"));
            Rig {
                booted: String::new(),
                old: vec![],
                new: vec![v1.clone()],
                s,
            }
        }
        Op::Stage | Op::Upgrade | Op::Finalize => {
            edit_etc(&s, &v1);
            if op == Op::Upgrade {
                oci::write_image(&s.layout, "v1", &small_image(2), &[]).unwrap();
            }
            if op == Op::Finalize {
                s.bootc_ok(&v1, &["switch", &s.imgref("v2")]);
            }
            Rig {
                booted: v1.clone(),
                old: vec![v1.clone()],
                new: if op == Op::Finalize {
                    vec![s.marker().unwrap(), v1.clone()]
                } else {
                    vec![v1.clone()]
                },
                s,
            }
        }
        Op::Rollback | Op::Gc => {
            edit_etc(&s, &v1);
            let v2 = s.switch_and_finalize(&v1, "v2", &[]);
            if op == Op::Gc {
                // Garbage for gc: v3 staged, then discarded by a rollback (which only
                // discards when something is staged).
                s.bootc_ok(&v2, &["switch", &s.imgref("v3")]);
                s.bootc_ok(&v2, &["rollback"]);
            }
            let order = s.order(false);
            assert_eq!(order, vec![v2.clone(), v1.clone()]);
            let new = if op == Op::Rollback {
                vec![v1.clone(), v2.clone()]
            } else {
                order.clone()
            };
            Rig {
                booted: v2,
                old: order,
                new,
                s,
            }
        }
    };
    rig.snapshot();
    rig
}

/// Names with the temporary prefix in the places gc cleans.
fn leftovers(s: &System) -> Vec<String> {
    let mut out = vec![];
    for dir in ["state", "state/deploy", "boot", "boot/loader", "boot/grub2"] {
        if let Ok(rd) = fs::read_dir(s.root.join(dir)) {
            for e in rd {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                if n.starts_with(".bootc-tmp.") {
                    out.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    out
}

/// The checks after a cut at point `what`; returns who boots now.
fn check_after_cut(rig: &Rig, op: Op, cut: Cut, what: &str) -> Option<String> {
    let s = &rig.s;
    // (a) old or new menu, complete.
    let menu = s.menu(false);
    let ids: Vec<String> = menu.iter().map(|e| e.id.clone()).collect();
    assert!(
        ids == rig.old || ids == rig.new,
        "{what}: the menu is {ids:?}, neither the old {:?} nor the new {:?}",
        rig.old,
        rig.new
    );
    s.assert_bootable(&menu, what);
    let staged = s.menu(true);
    s.assert_bootable(&staged, &format!("{what} (staged menu)"));
    let next = ids.first()?.clone();
    let booted = match (cut, op) {
        (Cut::Power, _) | (Cut::Crash, Op::Install) => next.clone(),
        (Cut::Crash, _) => rig.booted.clone(),
    };
    // (b) status agrees with the menu: rollback is the other entry, staged only what
    // finalize would apply.
    let out = s.bootc(&booted, &["status", "--format", "json"]);
    assert!(out.status.success(), "{what}: status failed");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    validate(&st);
    assert_eq!(
        st["status"]["booted"]["composefs"]["verity"], booted,
        "{what}: {st}"
    );
    match ids.iter().find(|i| **i != booted) {
        Some(r) => assert_eq!(
            st["status"]["rollback"]["composefs"]["verity"], *r,
            "{what}: {st}"
        ),
        None => assert!(st["status"]["rollback"].is_null(), "{what}: {st}"),
    }
    let marker = s.marker();
    let pending = marker
        .as_ref()
        .filter(|m| staged.first().is_some_and(|e| e.id == **m) && next != **m);
    match pending {
        Some(m) => assert_eq!(
            st["status"]["staged"]["composefs"]["verity"], *m,
            "{what}: {st}"
        ),
        None => assert!(st["status"]["staged"].is_null(), "{what}: {st}"),
    }
    if cut == Cut::Power {
        assert_eq!(marker, None, "{what}: /run survived the cut");
    }
    // (d) the local /etc edit is in the running /etc and in the one that boots next.
    if op != Op::Install {
        for id in [&booted, &next] {
            let f = s.etc(id).join(EDIT.0);
            assert_eq!(
                fs::read_to_string(&f).ok().as_deref(),
                Some(EDIT.1),
                "{what}: the /etc edit is lost in {id}"
            );
        }
    }
    // (e) gc removes the leftovers and nothing live.
    let out = s.bootc(&booted, &["gc"]);
    assert!(out.status.success(), "{what}: gc failed");
    assert_eq!(leftovers(s), Vec::<String>::new(), "{what}: after gc");
    assert_eq!(s.order(false), ids, "{what}: gc changed the menu");
    s.assert_bootable(&s.menu(false), &format!("{what}: after gc"));
    Some(booted)
}

/// (c) The operation run again (from who boots now) succeeds and ends where a run
/// without fault does.
fn rerun(rig: &Rig, op: Op, cut: Cut, booted: Option<String>, what: &str) {
    let s = &rig.s;
    match op {
        Op::Install => {
            let src = s.imgref("v1");
            let root = s.root.display().to_string();
            let out = bootc(&strs(&install_args(&src, &root, &s.loader, true)));
            assert!(out.status.success(), "{what}: install --wipe again failed");
            assert_eq!(s.order(false), rig.new, "{what}");
            // (e) for a cut that left no menu (gc needs a booted deployment): the
            // leftovers of the first run under boot/ outlive the wipe of the root, and
            // gc removes them.
            let out = s.bootc(&rig.new[0], &["gc"]);
            assert!(out.status.success(), "{what}: gc after the install failed");
        }
        Op::Stage | Op::Upgrade | Op::Finalize => {
            let booted = booted.expect("a menu");
            if op == Op::Finalize {
                let out = s.bootc(&booted, &["composefs-finalize-staged"]);
                assert!(out.status.success(), "{what}: finalize again failed");
                if cut == Cut::Crash {
                    // The marker survived: the re-run completes the update.
                    assert_eq!(s.order(false), rig.new, "{what}: finalize again");
                }
            }
            let v1 = &s.v1;
            if s.order(false)[0] == *v1 {
                // The update did not happen: stage and finalize it again.
                let v2 = if op == Op::Upgrade {
                    s.bootc_ok(&booted, &["upgrade"]);
                    let v2 = s.marker().expect("staged marker");
                    s.bootc_ok(&booted, &["composefs-finalize-staged"]);
                    v2
                } else {
                    s.switch_and_finalize(&booted, "v2", &[])
                };
                assert_eq!(s.order(false), vec![v2, v1.clone()], "{what}");
            }
            let now = s.order(false);
            assert_eq!(now.len(), 2, "{what}: {now:?}");
            assert_eq!(
                fs::read_to_string(s.etc(&now[0]).join(EDIT.0))
                    .ok()
                    .as_deref(),
                Some(EDIT.1),
                "{what}: the /etc edit did not reach the new deployment"
            );
        }
        Op::Rollback => {
            let booted = booted.expect("a menu");
            let before = s.order(false);
            let out = s.bootc(&booted, &["rollback"]);
            assert!(out.status.success(), "{what}: rollback again failed");
            let mut flipped = before.clone();
            flipped.reverse();
            assert_eq!(s.order(false), flipped, "{what}");
        }
        Op::Gc => {
            let booted = booted.expect("a menu");
            let out = s.bootc(&booted, &["gc"]);
            assert!(out.status.success(), "{what}: gc again failed");
            assert_eq!(s.order(false), rig.new, "{what}");
        }
    }
    s.assert_bootable(&s.menu(false), &format!("{what}: after the re-run"));
    assert_eq!(
        leftovers(s),
        Vec::<String>::new(),
        "{what}: after the re-run"
    );
}

/// A digest of everything on the root filesystem (names, types, modes, owners, file
/// contents, link targets; not times) and of the run directory: two points that leave
/// the same bytes behind after the cut get the same checks with the same result.
fn fingerprint(s: &System) -> u64 {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &std::path::Path, h: &mut std::collections::hash_map::DefaultHasher) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            // A temporary name ends in the pid of the run that made it.
            let name = match name.rsplit_once('.') {
                Some((head, pid))
                    if name.starts_with(".bootc-tmp.")
                        && !pid.is_empty()
                        && pid.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    head.to_string()
                }
                _ => name,
            };
            (&name, m.mode(), m.uid(), m.gid()).hash(h);
            // The lock file holds the pid of its last holder.
            if name == "bootc.lock" {
                continue;
            }
            if m.file_type().is_symlink() {
                // (The error too: a link the cut left unreadable is part of the state.)
                match fs::read_link(&p) {
                    Ok(t) => t.hash(h),
                    Err(e) => e.to_string().hash(h),
                }
            } else if m.is_dir() {
                walk(&p, h);
                0xd1u8.hash(h);
            } else if m.is_file() {
                match fs::read(&p) {
                    Ok(b) => b.hash(h),
                    Err(e) => e.to_string().hash(h),
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    walk(&s.root, &mut h);
    walk(&run_dir(s), &mut h);
    h.finish()
}

/// The counted steps of a run with `BOOTC_FAULT_AT=count`.
fn count_steps(out: &Output) -> Vec<String> {
    let line = bootc::sys::fault::COUNT_LINE;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(line))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_power_cut_before_any_durable_step_is_survived() {
    if !can_run(&["grub-mkimage", "bootctl"]) {
        return;
    }
    let _g = serial();
    let only: Option<String> = std::env::var("FAULTS_ONLY").ok();
    let (mut points, mut survived, mut distinct) = (0usize, 0usize, 0usize);
    let mut failures: Vec<String> = vec![];
    for loader in LOADERS {
        for op in OPS {
            let name = format!("{op:?}/{loader}");
            if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            let rig = prepare(op, loader);
            // A run without fault, counting.
            let out = rig.run_op(op, bootc::sys::fault::COUNT);
            assert!(out.status.success(), "{name}: the run without fault failed");
            let steps = count_steps(&out);
            assert!(!steps.is_empty(), "{name}: no durable step counted");
            assert_eq!(rig.s.order(false), rig.new, "{name}: without fault");
            eprintln!("{name}: {} steps: {steps:?}", steps.len());
            let started = std::time::Instant::now();
            // The disk states already checked, and whether they passed.
            let mut seen: std::collections::HashMap<(Cut, u64), bool> = Default::default();
            for (n, cut) in (1..=steps.len()).flat_map(|n| [(n, Cut::Power), (n, Cut::Crash)]) {
                let what = format!("{name} killed before step {}, {cut:?}", steps[n - 1]);
                points += 1;
                rig.restore();
                let out = rig.run_op(op, &format!("durable:{n}"));
                assert_eq!(
                    out.status.signal(),
                    Some(SIGABRT),
                    "{what}: the run did not die there: {:?}",
                    out.status
                );
                if cut == Cut::Power {
                    power_cut(&rig.s);
                }
                let state = (cut, fingerprint(&rig.s));
                if let Some(&ok) = seen.get(&state) {
                    if ok {
                        survived += 1;
                    } else {
                        failures.push(format!("{what}: the same disk as an earlier failure"));
                    }
                    continue;
                }
                distinct += 1;
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let booted = check_after_cut(&rig, op, cut, &what);
                    rerun(&rig, op, cut, booted, &what);
                }));
                seen.insert(state, result.is_ok());
                match result {
                    Ok(()) => survived += 1,
                    Err(e) => {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.push(format!("{what}: {msg}"));
                    }
                }
            }
            eprintln!(
                "{name}: {} steps, {} distinct disks after the cut or crash, {:.1}s",
                steps.len(),
                seen.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("fault injection: {distinct} distinct disk states checked");
    println!("fault injection: {points} points, {survived} survived");
    eprintln!("fault injection: {points} points, {survived} survived");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cut itself: a file written and fsynced before it survives, one written after the
/// last sync does not (else the suite above would test nothing but a clean unmount).
#[test]
fn the_power_cut_drops_what_was_not_synced() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-faults-cut-");
    let img = t.path().join("root.img");
    disk_image(&img, 64 << 20);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let s = System {
        root: t.path().join("root"),
        layout: t.path().join("oci"),
        v1: String::new(),
        loader: "systemd".into(),
        t,
    };
    fs::create_dir(&s.root).unwrap();
    fs::create_dir(run_dir(&s)).unwrap();
    mount(&s);
    let _mounted = Mounted(&s);
    let synced = s.root.join("synced");
    fs::write(&synced, "kept\n").unwrap();
    fs::File::open(&synced).unwrap().sync_all().unwrap();
    fs::File::open(&s.root).unwrap().sync_all().unwrap();
    fs::write(s.root.join("unsynced"), "lost\n").unwrap();
    fs::write(run_dir(&s).join("marker"), "x\n").unwrap();
    power_cut(&s);
    assert_eq!(fs::read_to_string(&synced).unwrap(), "kept\n");
    assert!(
        !s.root.join("unsynced").exists(),
        "an unsynced file survived the cut"
    );
    assert!(
        !run_dir(&s).join("marker").exists(),
        "/run survived the cut"
    );
}
