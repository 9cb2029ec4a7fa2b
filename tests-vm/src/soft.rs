//! `soft`: soft reboot and `bootc usr-overlay`, sharing one QEMU run (issue 15, items 3
//! and 4).
//!
//! A host install of v1 boots; `bootc switch` stages v2 (same kernel and initramfs) and
//! `bootc status` says a soft reboot into it is possible (`softRebootCapable` true for the
//! staged v2, false for the booted v1). `bootc switch --apply --soft-reboot=required`
//! then restarts userspace on v2 without restarting the kernel: the boot id is unchanged
//! and `/proc/cmdline` still names v1, while `/` is v2's composefs overlay, `/etc` is
//! v2's merged state (the finalize ran at the soft reboot's shutdown: v2's files, the
//! local addition kept), and `bootc status` names v2 booted and v1 the rollback. Then
//! `bootc usr-overlay` makes `/usr` writable until the next boot: a file written there
//! exists, `status.usrOverlay` is `readWrite`/`transient`; a real reboot (the boot id
//! changes) comes up on v2 (the menu's default since the finalize) without the file and
//! without the overlay.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::disk::{composefs_arg, composefs_hex};
use crate::qemu::{Disk, Vm};
use crate::scenarios::{
    check_booted, check_status_agrees, check_v2_merged, guest_file, guest_staged, guest_status,
    guest_switch, limits, mount_at, oci_disk, parse_mountinfo, Ctx, Outcome, GUEST_OCI,
};

/// The file written through the overlay.
const OVERLAY_FILE: &str = "/usr/share/bootc-test/written-through-usr-overlay";

/// The kernel's boot id: the same across a soft reboot, new after a reboot.
fn boot_id(vm: &mut Vm) -> Result<String> {
    Ok(vm
        .ok("cat /proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// The deployment `/` is composed from (its overlay source `composefs:<hex>`), with
/// `/etc` a bind of that deployment's state.
fn running_root(vm: &mut Vm) -> Result<String> {
    let mi = parse_mountinfo(&vm.ok("cat /proc/self/mountinfo")?);
    let root = mount_at(&mi, "/")?;
    ensure!(
        root.fstype == "overlay",
        "/ is {} (expected overlay)",
        root.fstype
    );
    let id = root
        .source
        .strip_prefix("composefs:")
        .with_context(|| format!("/ has source {} (expected composefs:<id>)", root.source))?
        .to_string();
    let etc = mount_at(&mi, "/etc")?;
    ensure!(
        etc.root.ends_with(&format!("state/deploy/{id}/etc")),
        "/etc is a bind of {} (expected state/deploy/{id}/etc)",
        etc.root
    );
    Ok(id)
}

/// The `softRebootCapable` of a status slot (`booted`, `staged`, `rollback`).
fn capable(st: &serde_json::Value, slot: &str) -> Option<bool> {
    st["status"][slot]["softRebootCapable"].as_bool()
}

pub fn soft(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let disk = ctx.host_install(dir, "disk", "v1", None)?;
    let oci = oci_disk(ctx)?;
    let (mut vm, up) = ctx.boot_timed(dir, "soft", vec![Disk::rw(&disk), Disk::ro(&oci)])?;
    let mut steps = vec![format!("boot v1 {:.0} s", up.as_secs_f64())];
    let id1 = check_booted(&mut vm, false)?;
    let boot1 = boot_id(&mut vm)?;
    vm.ok("echo local > /etc/bootc-test/local.conf")?;

    // Before: v2 staged, a soft reboot into it possible, not into the booted v1.
    let t = Instant::now();
    let out = guest_switch(ctx, &mut vm, "v2")?;
    steps.push(format!("stage v2 {:.0} s", t.elapsed().as_secs_f64()));
    println!("soft: bootc switch: {out}");
    let id2 = guest_staged(&mut vm)?;
    let st = guest_status(&mut vm)?;
    ensure!(
        capable(&st, "staged") == Some(true) && capable(&st, "booted") == Some(false),
        "before the soft reboot status says softRebootCapable {:?} for the staged v2 and {:?} \
         for the booted v1 (expected true, false): {st}",
        capable(&st, "staged"),
        capable(&st, "booted")
    );

    // The soft reboot: staged again (already there), applied without a kernel restart.
    let took = vm.soft_reboot(
        &format!("bootc switch --apply --soft-reboot=required {GUEST_OCI}:v2"),
        ctx.t(limits::BOOT + 300),
    )?;
    steps.push(format!("soft reboot {:.0} s", took.as_secs_f64()));
    let boot2 = boot_id(&mut vm)?;
    ensure!(
        boot2 == boot1,
        "the boot id changed ({boot1} -> {boot2}): the kernel restarted"
    );
    let cmdline = vm.ok("cat /proc/cmdline")?;
    let arg = composefs_arg(&cmdline).context("no composefs= on /proc/cmdline")?;
    ensure!(
        composefs_hex(&arg) == id1,
        "/proc/cmdline names {arg} after a soft reboot (expected v1's {id1})"
    );
    let root = running_root(&mut vm)?;
    ensure!(
        root == id2,
        "after the soft reboot / is {root}, expected the staged v2 {id2}"
    );
    check_v2_merged(&mut vm)?;
    let health = vm.console_text();
    ensure!(
        health.contains("bootc-test-health: soft reboot:"),
        "the health check did not see the soft reboot"
    );
    let st = guest_status(&mut vm)?;
    ensure!(
        st["status"]["booted"]["composefs"]["verity"].as_str() == Some(id2.as_str()),
        "after the soft reboot status.booted is not v2 {id2}: {st}"
    );
    ensure!(
        st["status"]["rollback"]["composefs"]["verity"].as_str() == Some(id1.as_str()),
        "after the soft reboot status.rollback is not v1 {id1}: {st}"
    );
    ensure!(
        st["status"]["staged"].is_null(),
        "after the soft reboot status still shows a staged deployment: {st}"
    );
    ensure!(
        capable(&st, "booted") == Some(false) && capable(&st, "rollback") == Some(true),
        "after the soft reboot softRebootCapable is {:?} for the booted v2, {:?} for v1 \
         (expected false, true): {st}",
        capable(&st, "booted"),
        capable(&st, "rollback")
    );

    // usr-overlay: writable /usr until the next boot.
    let (rc, out) = vm.run(&format!("touch {OVERLAY_FILE}"), Duration::from_secs(30))?;
    ensure!(
        rc != 0 && out.contains("Read-only file system"),
        "/usr is writable before bootc usr-overlay (rc {rc}: {out:?})"
    );
    ensure!(
        guest_status(&mut vm)?["status"]["usrOverlay"].is_null(),
        "status shows a /usr overlay before bootc usr-overlay"
    );
    vm.ok("bootc usr-overlay")?;
    vm.ok(&format!("echo written > {OVERLAY_FILE}"))?;
    ensure!(
        guest_file(&mut vm, OVERLAY_FILE)?.as_deref() == Some("written"),
        "{OVERLAY_FILE} does not read back"
    );
    let st = guest_status(&mut vm)?;
    let ov = &st["status"]["usrOverlay"];
    ensure!(
        ov["accessMode"] == "readWrite" && ov["persistence"] == "transient",
        "status.usrOverlay is {ov} (expected readWrite, transient)"
    );
    let human = vm.ok("bootc status")?;
    println!("soft: bootc status with the overlay:\n{}", human.trim_end());

    let up = vm.reboot(ctx.t(limits::BOOT))?;
    steps.push(format!("reboot {:.0} s", up.as_secs_f64()));
    ensure!(
        boot_id(&mut vm)? != boot1,
        "the boot id did not change: no reboot happened"
    );
    let id3 = check_booted(&mut vm, false)?;
    ensure!(id3 == id2, "the reboot booted {id3}, expected v2 {id2}");
    ensure!(
        guest_file(&mut vm, OVERLAY_FILE)?.is_none(),
        "{OVERLAY_FILE} survived the reboot"
    );
    let st = guest_status(&mut vm)?;
    check_status_agrees(&mut vm, &st)?;
    ensure!(
        st["status"]["usrOverlay"].is_null(),
        "status shows a /usr overlay after the reboot: {st}"
    );
    ensure!(
        guest_file(&mut vm, "/usr/share/bootc-test/version")?.as_deref() == Some("2"),
        "not v2 after the reboot"
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!(
        "soft: {}; scenario {:.0} s",
        steps.join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Passed)
}
