//! The sealed-image scenarios (issue 11): the test image's `v1-uki` and `v2-uki` tags
//! (mkosi/build.sh: each holds a UKI in /boot/EFI/Linux/ built by `bootc container
//! ukify`, its `.cmdline` naming the image's composefs digest without `?`).
//!
//! The three share one disk, installed once from the installer VM (the host has no
//! fs-verity and a sealed command line requires it), and `uki-boot` hands its running
//! guest to `uki-upgrade`:
//!
//! - `uki-boot`: systemd-boot boots the UKI through its Type #1 entry's `efi` line
//!   (`LoaderEntrySelected` names the entry, systemd-stub's `StubInfo` is set), the
//!   command line is the sealed one, the root is mounted with `verity=require`, `bootc
//!   status` shows `bootType: Uki`.
//! - `uki-upgrade`: `bootc switch` to v2-uki, reboot (finalize at shutdown) into v2's UKI,
//!   `bootc rollback`, reboot into v1's UKI.
//! - `uki-tamper`: one byte of v1's EROFS image object flipped on the disk: the boot of
//!   v1's UKI stops with the initramfs's one-line error and never reaches multi-user.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};

use crate::disk;
use crate::qemu::{self, initramfs_message, Disk, Vm};
use crate::scenarios::{
    check_booted, cleanup, console_composefs, flip_object_byte, guest_file, guest_install,
    guest_staged, guest_status, guest_switch, limits, oci_disk, Ctx, Outcome,
};

/// The scenario names, in the order they run.
pub(crate) const NAMES: &[&str] = &["uki-boot", "uki-upgrade", "uki-tamper"];

/// systemd's vendor GUID of the boot loader interface variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// What the UKI scenarios pass on to each other.
#[derive(Default)]
pub(crate) struct Shared {
    /// The installed disk (`<work>/uki/secure.img`), v1-uki the default.
    disk: Option<PathBuf>,
    /// v1-uki's deployment id (hex).
    v1: String,
    /// The guest `uki-boot` left running (v1 booted, the OCI disk on /dev/vdb).
    vm: Option<Vm>,
    /// The UKI scenario that failed, if one did: the later ones cannot run.
    failed: Option<String>,
}

/// Runs UKI scenario `name` (one of [`NAMES`]); `dir` is the runner's per-scenario
/// directory, which receives the console logs when it fails. The disk and the VMs live
/// in `<work>/uki`, removed after the last selected UKI scenario (or a failure).
pub(crate) fn run(
    ctx: &Ctx,
    name: &str,
    dir: &Path,
    selected: &[&str],
    sh: &mut Shared,
) -> Result<Outcome> {
    let shared = ctx.work.join("uki");
    if sh.disk.is_none() && sh.failed.is_none() {
        cleanup(&shared);
        std::fs::create_dir_all(&shared)?;
    }
    let r = match (&sh.failed, name) {
        (Some(f), _) => Err(anyhow!("{f} failed, so there is no sealed disk for {name}")),
        (None, "uki-boot") => uki_boot(ctx, &shared, sh, selected.contains(&"uki-upgrade")),
        (None, "uki-upgrade") => uki_upgrade(ctx, &shared, sh),
        (None, "uki-tamper") => uki_tamper(ctx, &shared, sh),
        (None, n) => Err(anyhow!("unknown UKI scenario {n}")),
    };
    let later = selected
        .iter()
        .skip_while(|n| **n != name)
        .skip(1)
        .any(|n| NAMES.contains(n));
    if r.is_err() || !later {
        if let Some(vm) = sh.vm.take() {
            drop(vm);
        }
        if r.is_err() {
            sh.failed.get_or_insert_with(|| name.to_string());
            for e in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".log") || n.ends_with(".stderr") {
                    let _ = std::fs::copy(e.path(), dir.join(&n));
                }
            }
        }
        sh.disk = None;
        cleanup(&shared);
    }
    r
}

/// Installs v1-uki from the installer VM into `dir/secure.img` and reads v1's id from
/// its ESP: one entry `bootc_composefs-<id>.conf` whose `efi` line names the UKI the
/// install copied, and no `linux` line.
fn install(ctx: &Ctx, dir: &Path, sh: &mut Shared) -> Result<PathBuf> {
    let disk = guest_install(ctx, dir, "v1-uki")?;
    let entries = disk::esp_entries(&disk)?;
    ensure!(
        entries.len() == 1,
        "after the install of v1-uki: entries {entries:?} (expected one)"
    );
    let name = &entries[0];
    let id = name
        .strip_prefix("bootc_composefs-")
        .and_then(|s| s.split(['+', '.']).next())
        .with_context(|| format!("entry {name} is not bootc_composefs-<id>.conf"))?
        .to_string();
    let text = disk::esp_read(&disk, &format!("loader/entries/{name}"))?
        .with_context(|| format!("reading loader/entries/{name}"))?;
    let efi = format!("/EFI/Linux/bootc/bootc_composefs-{id}.efi");
    ensure!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["efi", efi.as_str()]))
            && !text.lines().any(|l| l.starts_with("linux")),
        "entry {name} does not boot {efi} (or has a linux line):\n{text}"
    );
    ensure!(
        disk::esp_has(&disk, &efi)?,
        "the entry names {efi}, which is not on the ESP"
    );
    sh.disk = Some(disk.clone());
    sh.v1 = id;
    Ok(disk)
}

/// The disks of a UKI guest: the sealed disk, the OCI layout (`/dev/vdb`, for switch).
fn disks(ctx: &Ctx, disk: &Path) -> Result<Vec<Disk>> {
    Ok(vec![Disk::rw(disk), Disk::ro(oci_disk(ctx)?)])
}

/// Checks that deployment `id` was booted from its UKI: check_booted (secure:
/// `verity=require`, the image's fs-verity digest), systemd-boot selected its entry,
/// systemd-stub ran (it sets `StubInfo`), `/proc/cmdline` has no `?`, and `bootc
/// status` shows it booted with `bootType: Uki` and `version`.
fn check_uki_booted(vm: &mut Vm, id: &str, version: &str) -> Result<serde_json::Value> {
    let booted = check_booted(vm, true)?;
    ensure!(booted == id, "booted {booted}, expected {id}");
    let vars = vm.ok(&format!(
        "cd /sys/firmware/efi/efivars && for v in LoaderEntrySelected StubInfo; do \
         printf '%s=' $v; tail -c +5 $v-{LOADER_GUID} 2>/dev/null | tr -d '\\000'; echo; done"
    ))?;
    let var = |name: &str| {
        vars.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let selected = var("LoaderEntrySelected");
    let stub = var("StubInfo");
    eprintln!(
        "[{}] LoaderEntrySelected={selected} StubInfo={stub}",
        vm.label
    );
    ensure!(
        selected.starts_with(&format!("bootc_composefs-{id}")),
        "systemd-boot selected entry {selected:?}, expected bootc_composefs-{id}"
    );
    ensure!(
        stub.starts_with("systemd-stub"),
        "StubInfo is {stub:?}: the kernel was not started by systemd-stub (no UKI boot)"
    );
    let v = guest_file(vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some(version),
        "image version {v:?}, expected {version}"
    );
    let st = guest_status(vm)?;
    let b = &st["status"]["booted"]["composefs"];
    ensure!(
        b["verity"].as_str() == Some(id) && b["bootType"] == "Uki",
        "bootc status: booted is not {id} with bootType Uki: {st}"
    );
    Ok(st)
}

/// `uki-boot`; leaves the guest running for `uki-upgrade` when `keep`.
fn uki_boot(ctx: &Ctx, dir: &Path, sh: &mut Shared, keep: bool) -> Result<Outcome> {
    let disk = install(ctx, dir, sh)?;
    let (mut vm, up) = ctx.boot_timed(dir, "uki-v1", disks(ctx, &disk)?)?;
    println!("uki-boot: v1-uki up in {:.0} s", up.as_secs_f64());
    let v1 = sh.v1.clone();
    check_uki_booted(&mut vm, &v1, "1")?;
    let cmdline = vm.ok("cat /proc/cmdline")?;
    println!("uki-boot: sealed command line: {}", cmdline.trim());
    if keep {
        sh.vm = Some(vm);
    } else {
        vm.poweroff(ctx.t(limits::POWEROFF))?;
    }
    Ok(Outcome::Passed)
}

/// `uki-upgrade`, on `uki-boot`'s guest (or a fresh install when run alone).
fn uki_upgrade(ctx: &Ctx, dir: &Path, sh: &mut Shared) -> Result<Outcome> {
    let mut vm = match sh.vm.take() {
        Some(vm) => vm,
        None => {
            let disk = match &sh.disk {
                Some(d) => d.clone(),
                None => install(ctx, dir, sh)?,
            };
            ctx.boot(dir, "uki-v1", disks(ctx, &disk)?)?
        }
    };
    let v1 = sh.v1.clone();
    let t = Instant::now();
    let out = guest_switch(ctx, &mut vm, "v2-uki")?;
    println!(
        "uki-upgrade: bootc switch v2-uki took {:.0} s: {out}",
        t.elapsed().as_secs_f64()
    );
    let v2 = guest_staged(&mut vm)?;
    ensure!(v2 != v1, "switch staged {v2}, which is v1");
    let up = vm.reboot(ctx.t(limits::BOOT + limits::POWEROFF))?;
    println!(
        "uki-upgrade: v2-uki up {:.0} s after the reboot",
        up.as_secs_f64()
    );
    let st = check_uki_booted(&mut vm, &v2, "2")?;
    let rb = &st["status"]["rollback"]["composefs"];
    ensure!(
        rb["verity"].as_str() == Some(v1.as_str()) && rb["bootType"] == "Uki",
        "bootc status: the rollback is not v1 {v1} with bootType Uki: {st}"
    );
    let n = vm.ok("ls /boot/EFI/Linux/bootc | grep -c '^bootc_composefs-.*\\.efi$'")?;
    ensure!(
        n.trim() == "2",
        "the ESP holds {} UKIs after the upgrade, expected 2",
        n.trim()
    );

    vm.ok("bootc rollback")?;
    let up = vm.reboot(ctx.t(limits::BOOT + limits::POWEROFF))?;
    println!(
        "uki-upgrade: v1-uki up {:.0} s after rollback + reboot",
        up.as_secs_f64()
    );
    let st = check_uki_booted(&mut vm, &v1, "1")?;
    let rb = &st["status"]["rollback"]["composefs"];
    ensure!(
        rb["verity"].as_str() == Some(v2.as_str()) && rb["bootType"] == "Uki",
        "bootc status after the rollback: the rollback is not v2 {v2}: {st}"
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    Ok(Outcome::Passed)
}

/// `uki-tamper`: v1's EROFS image object altered; v1's sealed boot stops in the initramfs.
fn uki_tamper(ctx: &Ctx, dir: &Path, sh: &mut Shared) -> Result<Outcome> {
    if let Some(vm) = sh.vm.take() {
        vm.poweroff(ctx.t(limits::POWEROFF))?;
    }
    let disk = match &sh.disk {
        Some(d) => d.clone(),
        None => install(ctx, dir, sh)?,
    };
    let v1 = sh.v1.clone();
    flip_object_byte(&disk, &v1)?;
    let mut vm = Vm::start(&ctx.uefi(dir, "uki-tamper", vec![Disk::rw(&disk)])?)?;
    vm.wait_console(&["bootc-initramfs-setup: "], ctx.t(limits::FAIL_MESSAGE))?;
    vm.wait_console(qemu::FATAL_CONSOLE, ctx.t(60))?;
    let text = vm.console_text();
    let took = vm.started.elapsed();
    drop(vm);
    let msg = initramfs_message(&text).context("no message from the initramfs")?;
    println!(
        "uki-tamper: the sealed boot of the tampered v1 stopped after {:.0} s: {msg}",
        took.as_secs_f64()
    );
    let booted = console_composefs(&text);
    ensure!(
        booted.as_deref() == Some(v1.as_str()),
        "the stopped boot was {booted:?}, expected v1 {v1}"
    );
    ensure!(
        !text.contains("Reached target multi-user") && !text.contains("Reached target Multi-User"),
        "the boot of the tampered v1 went on to multi-user"
    );
    Ok(Outcome::Passed)
}
