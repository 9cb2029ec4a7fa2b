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
//!
//! `uki-grub` has its own disk: v1-uki installed from the installer VM with
//! `--bootloader grub`; GRUB chainloads the UKI (its menu block has a `chainloader` line
//! and nothing else), then `bootc switch` to v2-uki and a reboot into v2's UKI through
//! the new menu. Under the plain firmware: bootc's GRUB is built by grub-mkimage and
//! not signed.
//!
//! With Secure Boot: when the build made the signed variants (`v1-uki-sb`, `v2-uki-sb`
//! and `systemd-bootx64.efi.signed`, all signed with Debian's snakeoil key; needs
//! sbsigntool), the scenarios install and switch to those, the installer's bootctl is
//! offered the signed systemd-boot, and every boot runs under OVMF with Secure Boot
//! enforced (the snakeoil variables): firmware → systemd-boot → UKI → every byte of the
//! root. `uki-boot` asserts that Secure Boot is on in the guest. Without them the
//! unsigned tags boot under the plain firmware and `uki-boot` is pending (a SKIP
//! locally, a failure under CI).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

use crate::disk;
use crate::qemu::{self, initramfs_message, Boot, Disk, Vm, VmConfig};
use crate::scenarios::{
    check_booted, cleanup, console_composefs, flip_object_byte, guest_file, guest_install_with,
    guest_staged, guest_status, guest_switch, limits, oci_disk, Ctx, Outcome, GRUB_USER_CFG,
    GUEST_ESP,
};

/// The scenario names, in the order they run.
pub(crate) const NAMES: &[&str] = &["uki-boot", "uki-upgrade", "uki-tamper"];

/// systemd's vendor GUID of the boot loader interface variables.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The UEFI global variables' GUID (`SecureBoot`).
const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The image's systemd-boot signed with the snakeoil key (mkosi/build.sh).
const SIGNED_SD_BOOT: &str = "systemd-bootx64.efi.signed";

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
    /// Secure Boot: the signed tags, the snakeoil firmware.
    secure: bool,
}

impl Shared {
    /// The tag of version `v` (1 or 2) the scenarios use.
    fn tag(&self, v: u8) -> String {
        format!("v{v}-uki{}", if self.secure { "-sb" } else { "" })
    }
}

/// Whether the build made the signed variants (see the module doc).
fn signed_variants(ctx: &Ctx) -> bool {
    let index = std::fs::read_to_string(ctx.images.join("oci/index.json")).unwrap_or_default();
    ctx.images.join(SIGNED_SD_BOOT).is_file()
        && index.contains("\"v1-uki-sb\"")
        && index.contains("\"v2-uki-sb\"")
}

/// The configuration of a UKI guest: Secure Boot enforced when `sh.secure`.
fn vm_config(
    ctx: &Ctx,
    dir: &Path,
    label: &str,
    disks: Vec<Disk>,
    secure: bool,
) -> Result<VmConfig> {
    if !secure {
        return ctx.uefi(dir, label, disks);
    }
    let vars = dir.join("vars-uki-secure.fd");
    if !vars.exists() {
        qemu::fresh_secure_vars(&vars)?;
    }
    Ok(VmConfig {
        label: label.into(),
        dir: dir.into(),
        disks,
        boot: Boot::UefiSecure { vars },
        memory_mib: 2048,
        interactive: false,
    })
}

/// Boots a UKI guest and waits for its shell; returns the time that took.
fn boot(
    ctx: &Ctx,
    dir: &Path,
    label: &str,
    disks: Vec<Disk>,
    secure: bool,
) -> Result<(Vm, Duration)> {
    let mut vm = Vm::start(&vm_config(ctx, dir, label, disks, secure)?)?;
    let up = vm.wait_shell(ctx.t(limits::BOOT))?;
    Ok((vm, up))
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
        sh.secure = signed_variants(ctx);
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

/// Installs v1-uki (v1-uki-sb) from the installer VM into `dir/secure.img` and reads
/// v1's id from its ESP: one entry `bootc_composefs-<id>.conf` whose `efi` line names
/// the UKI the install copied, and no `linux` line. With Secure Boot the installer's
/// bootctl finds the signed systemd-boot beside the unsigned one (a copy of its
/// `/usr/lib/systemd/boot/efi` with `systemd-bootx64.efi.signed` added, bind-mounted
/// over it; bootctl installs the `.signed` file when there is one).
fn install(ctx: &Ctx, dir: &Path, sh: &mut Shared) -> Result<PathBuf> {
    let (extra, prep) = if sh.secure {
        let src = dir.join("sd-boot");
        std::fs::create_dir_all(&src)?;
        std::fs::copy(ctx.images.join(SIGNED_SD_BOOT), src.join(SIGNED_SD_BOOT))?;
        let img = dir.join("sd-boot.ext4");
        disk::run(
            std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&src)
                .arg(&img)
                .arg("8M"),
        )?;
        let efi = "/usr/lib/systemd/boot/efi";
        (
            vec![Disk::ro(&img)],
            format!(
                "set -e; mkdir -p /run/sd-boot-src /run/sd-boot; \
                 mount -o ro /dev/vdd /run/sd-boot-src; cp -a {efi}/. /run/sd-boot/; \
                 cp /run/sd-boot-src/{SIGNED_SD_BOOT} /run/sd-boot/; \
                 mount --bind /run/sd-boot {efi}; ls {efi}"
            ),
        )
    } else {
        (vec![], String::new())
    };
    let disk = guest_install_with(ctx, dir, &sh.tag(1), extra, &prep, "")?;
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
    check_uki_booted_by(vm, id, version, "systemd")
}

/// [`check_uki_booted`] for the boot loader `loader`: `systemd` (systemd-boot selected
/// the entry) or `grub` (GRUB's menu was on the console, systemd-boot never ran: no
/// `LoaderEntrySelected`; the command line is the sealed one, without the
/// `BOOT_IMAGE=` GRUB's `linux` adds).
fn check_uki_booted_by(
    vm: &mut Vm,
    id: &str,
    version: &str,
    loader: &str,
) -> Result<serde_json::Value> {
    let booted = check_booted(vm, true)?;
    ensure!(booted == id, "booted {booted}, expected {id}");
    let vars = vm.ok(&format!(
        "cd /sys/firmware/efi/efivars && for v in LoaderEntrySelected StubInfo; do \
         printf '%s=' $v; cat $v-{LOADER_GUID} 2>/dev/null | tail -c +5 | tr -d '\\000'; echo; done; \
         echo \"vars: $(ls | grep -E '^(Loader|Stub)' | cut -d- -f1 | sort | paste -sd' ')\""
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
    if loader == "grub" {
        ensure!(
            selected.is_empty(),
            "LoaderEntrySelected is {selected:?}: systemd-boot ran, not GRUB"
        );
        ensure!(
            vm.console_text().contains("GNU GRUB"),
            "the console never showed GRUB's menu (`GNU GRUB`)"
        );
        let cmdline = vm.ok("cat /proc/cmdline")?;
        ensure!(
            !cmdline.contains("BOOT_IMAGE="),
            "/proc/cmdline has GRUB's BOOT_IMAGE=: the kernel was not started from the UKI: {}",
            cmdline.trim()
        );
    } else {
        ensure!(
            selected.starts_with(&format!("bootc_composefs-{id}")),
            "systemd-boot selected entry {selected:?}, expected bootc_composefs-{id} ({})",
            var("vars")
        );
    }
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
        b["verity"].as_str() == Some(id)
            && b["bootType"] == "Uki"
            && b["bootloader"] == loader
            && b["missingVerityAllowed"] == false,
        "bootc status: booted is not {id} with bootType Uki, bootloader {loader} and \
         missingVerityAllowed false: {st}"
    );
    Ok(st)
}

/// After an upgrade: the guest's ESP holds two UKIs of ours (the booted one's and the
/// rollback's).
fn check_two_ukis(vm: &mut Vm) -> Result<()> {
    let n = vm.ok(&format!(
        "ls {GUEST_ESP}/EFI/Linux/bootc | grep -c '^bootc_composefs-.*\\.efi$'"
    ))?;
    ensure!(
        n.trim() == "2",
        "the ESP holds {} UKIs after the upgrade, expected 2",
        n.trim()
    );
    Ok(())
}

/// `uki-boot`; leaves the guest running for `uki-upgrade` when `keep`.
fn uki_boot(ctx: &Ctx, dir: &Path, sh: &mut Shared, keep: bool) -> Result<Outcome> {
    let disk = install(ctx, dir, sh)?;
    let (mut vm, up) = boot(ctx, dir, "uki-v1", disks(ctx, &disk)?, sh.secure)?;
    println!(
        "uki-boot: {} up in {:.0} s (Secure Boot firmware: {})",
        sh.tag(1),
        up.as_secs_f64(),
        sh.secure
    );
    let v1 = sh.v1.clone();
    check_uki_booted(&mut vm, &v1, "1")?;
    let cmdline = vm.ok("cat /proc/cmdline")?;
    println!("uki-boot: sealed command line: {}", cmdline.trim());
    let sb = secure_boot_state(&mut vm)?;
    println!("uki-boot: in the guest: {sb}");
    if sh.secure {
        ensure!(
            sb.starts_with("SecureBoot=1 "),
            "Secure Boot is not on in the guest booted by the snakeoil firmware: {sb}"
        );
    }
    if keep {
        sh.vm = Some(vm);
    } else {
        vm.poweroff(ctx.t(limits::POWEROFF))?;
    }
    Ok(if sh.secure {
        Outcome::Passed
    } else {
        Outcome::Pending(
            "the sealed boot passed without Secure Boot: the build made no signed variants \
             (install sbsigntool and rebuild the image)"
                .into(),
        )
    })
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
            boot(ctx, dir, "uki-v1", disks(ctx, &disk)?, sh.secure)?.0
        }
    };
    let v1 = sh.v1.clone();
    let t = Instant::now();
    let out = guest_switch(ctx, &mut vm, &sh.tag(2))?;
    println!(
        "uki-upgrade: bootc switch {} took {:.0} s: {out}",
        sh.tag(2),
        t.elapsed().as_secs_f64()
    );
    let v2 = guest_staged(&mut vm)?;
    ensure!(v2 != v1, "switch staged {v2}, which is v1");
    let up = vm.reboot(ctx.t(limits::BOOT + limits::POWEROFF))?;
    println!(
        "uki-upgrade: {} up {:.0} s after the reboot",
        sh.tag(2),
        up.as_secs_f64()
    );
    let st = check_uki_booted(&mut vm, &v2, "2")?;
    let rb = &st["status"]["rollback"]["composefs"];
    ensure!(
        rb["verity"].as_str() == Some(v1.as_str()) && rb["bootType"] == "Uki",
        "bootc status: the rollback is not v1 {v1} with bootType Uki: {st}"
    );
    check_two_ukis(&mut vm)?;

    vm.ok("bootc rollback")?;
    let up = vm.reboot(ctx.t(limits::BOOT + limits::POWEROFF))?;
    println!(
        "uki-upgrade: {} up {:.0} s after rollback + reboot",
        sh.tag(1),
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
    let mut vm = Vm::start(&vm_config(
        ctx,
        dir,
        "uki-tamper",
        vec![Disk::rw(&disk)],
        sh.secure,
    )?)?;
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

/// `SecureBoot=<0|1> <bootctl's Secure Boot line>` in the guest: the UEFI variable
/// (its last byte) and what systemd-boot's tool reads.
fn secure_boot_state(vm: &mut Vm) -> Result<String> {
    let out = vm.ok(&format!(
        "printf 'SecureBoot=%s ' $(od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL_GUID}); \
         bootctl status 2>/dev/null | grep -m1 'Secure Boot' | sed 's/^ *//'"
    ))?;
    Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The deployments of GRUB menu `cfg` (`grub2/user.cfg`), in order, each block checked
/// to chainload its own UKI and nothing else (no `linux` or `initrd` line).
fn grub_uki_menu(cfg: &str) -> Result<Vec<String>> {
    let mut ids = vec![];
    for block in cfg.split("menuentry ").skip(1) {
        let id = block
            .split("--id 'bootc_composefs-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .with_context(|| format!("a menu block without an id of ours:\n{cfg}"))?;
        let efi = format!("chainloader '/EFI/Linux/bootc/bootc_composefs-{id}.efi'");
        ensure!(
            block.contains(&efi) && !block.contains("linux ") && !block.contains("initrd "),
            "the GRUB block of {id} does not chainload its UKI alone:\n{cfg}"
        );
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// `uki-grub` (see the module doc).
pub(crate) fn uki_grub(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let disk = guest_install_with(ctx, dir, "v1-uki", vec![], "", "--bootloader grub")?;
    let cfg = disk::esp_read(&disk, GRUB_USER_CFG)?
        .with_context(|| format!("the GRUB install left no {GRUB_USER_CFG} on the ESP"))?;
    let installed = grub_uki_menu(&cfg)?;
    ensure!(
        installed.len() == 1,
        "{GRUB_USER_CFG} after the install of v1-uki has {} entries, expected 1:\n{cfg}",
        installed.len()
    );
    let v1 = installed[0].clone();
    for f in [
        "EFI/BOOT/BOOTX64.EFI".to_string(),
        format!("EFI/Linux/bootc/bootc_composefs-{v1}.efi"),
    ] {
        ensure!(
            disk::esp_has(&disk, &f)?,
            "the install left no {f} on the ESP"
        );
    }
    let (mut vm, up) = boot(ctx, dir, "uki-grub-v1", disks(ctx, &disk)?, false)?;
    println!(
        "uki-grub: v1-uki up through GRUB in {:.0} s",
        up.as_secs_f64()
    );
    check_uki_booted_by(&mut vm, &v1, "1", "grub")?;

    let out = guest_switch(ctx, &mut vm, "v2-uki")?;
    println!("uki-grub: bootc switch v2-uki: {out}");
    let v2 = guest_staged(&mut vm)?;
    ensure!(v2 != v1, "switch staged {v2}, which is v1");
    let up = vm.reboot(ctx.t(limits::BOOT + limits::POWEROFF))?;
    println!(
        "uki-grub: v2-uki up {:.0} s after the reboot",
        up.as_secs_f64()
    );
    check_uki_booted_by(&mut vm, &v2, "2", "grub")?;
    let cfg = vm.ok(&format!("cat {GUEST_ESP}/{GRUB_USER_CFG}"))?;
    let menu = grub_uki_menu(&cfg)?;
    ensure!(
        menu == [v2.clone(), v1.clone()],
        "the GRUB menu lists {menu:?} after the upgrade, expected [v2, v1]:\n{cfg}"
    );
    check_two_ukis(&mut vm)?;
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!("uki-grub: scenario {:.0} s", t0.elapsed().as_secs_f64());
    Ok(Outcome::Passed)
}
