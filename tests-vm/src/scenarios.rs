//! The VM scenarios. Each asserts inside the guest, from real kernel state
//! (`/proc/cmdline`, `/proc/self/mountinfo`, fs-verity measurements, read errors), or
//! from the console log when the boot is meant to stop.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::disk::{self, composefs_arg, composefs_hex, run};
use crate::qemu::{self, initramfs_message, Boot, Disk, Vm, VmConfig};

/// Where things are.
#[derive(Clone)]
pub struct Ctx {
    /// `target/vm-images`: oci/, vmlinuz, initramfs.img, kver.
    pub images: PathBuf,
    /// The host's `bootc`.
    pub bootc: PathBuf,
    /// A debug build of the same `bootc` (BOOTC_DEBUG_BIN, default target/debug/bootc):
    /// the one that honours `BOOTC_FAULT_AT`, run by the guest's finalize for the power
    /// cuts of `upgrade` (see [`arm_cut`]).
    pub debug_bootc: PathBuf,
    /// Scratch root: one directory per scenario, removed afterwards.
    pub work: PathBuf,
    /// Console logs of failed scenarios are kept here.
    pub artifacts: PathBuf,
    /// Multiplies every timeout (BOOTC_VM_TIMEOUT_SCALE).
    pub scale: f64,
}

/// Timeouts, about 3× (or more) what was measured on 2 shared cores under TCG.
pub mod limits {
    /// OVMF + systemd-boot + kernel + initrd to the harness shell (measured: ≤ 45 s on a
    /// first boot).
    pub const BOOT: u64 = 240;
    /// `systemctl poweroff` until QEMU exits (measured: ≤ 10 s). Longer than systemd's
    /// DefaultTimeoutStopSec (90 s), after which systemd kills a unit whose stop hangs and
    /// powers off anyway: with 90 s here, a guest slowed down by a loaded host failed while
    /// systemd-networkd's stop was still pending (its start had not finished either).
    pub const POWEROFF: u64 = 180;
    /// The console showing our failure message (measured: ≤ 25 s).
    pub const FAIL_MESSAGE: u64 = 180;
    /// `bootc install to-disk` of the image inside the installer VM.
    pub const GUEST_INSTALL: u64 = 1500;
}

/// The end of a scenario that did not fail.
pub enum Outcome {
    Passed,
    /// Some assertions could not be made (the reason says which and why). The runner
    /// (`verdict` in main.rs) reports it as SKIP locally and fails it under `CI=true`.
    Pending(String),
}

/// The names, in the order they run.
pub const ALL: &[&str] = &[
    "boot",
    "bad-cmdline",
    "boot-secure",
    "tamper",
    "upgrade",
    "grub",
    "bootcount",
    "uki-boot",
    "uki-upgrade",
    "uki-tamper",
    "uki-grub",
    "soft",
];

impl Ctx {
    pub(crate) fn t(&self, secs: u64) -> Duration {
        Duration::from_secs_f64(secs as f64 * self.scale)
    }

    pub fn imgref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.images.join("oci").display())
    }

    pub(crate) fn uefi(&self, dir: &Path, label: &str, disks: Vec<Disk>) -> Result<VmConfig> {
        let vars = dir.join(format!(
            "vars-{}.fd",
            disks[0].path.file_stem().unwrap().to_string_lossy()
        ));
        if !vars.exists() {
            qemu::fresh_vars(&vars)?;
        }
        Ok(VmConfig {
            label: label.into(),
            dir: dir.into(),
            disks,
            boot: Boot::Uefi { vars },
            memory_mib: 2048,
            interactive: false,
        })
    }

    /// Boots `disk` with OVMF and waits for the guest shell.
    pub fn boot(&self, dir: &Path, label: &str, disks: Vec<Disk>) -> Result<Vm> {
        Ok(self.boot_timed(dir, label, disks)?.0)
    }

    /// [`Ctx::boot`], also returning the time from QEMU's start to the guest shell.
    pub fn boot_timed(&self, dir: &Path, label: &str, disks: Vec<Disk>) -> Result<(Vm, Duration)> {
        let mut vm = Vm::start(&self.uefi(dir, label, disks)?)?;
        let up = vm.wait_shell(self.t(limits::BOOT))?;
        Ok((vm, up))
    }

    /// Host install of `tag` to `dir/<name>.img`, with `--bootloader <b>` when
    /// `bootloader` is given (the installer's default, systemd-boot, otherwise).
    pub fn host_install(
        &self,
        dir: &Path,
        name: &str,
        tag: &str,
        bootloader: Option<&str>,
    ) -> Result<PathBuf> {
        let disk = dir.join(format!("{name}.img"));
        disk::bootc_install(&self.bootc, &disk, 8, &self.imgref(tag), &[], bootloader)?;
        Ok(disk)
    }
}

/// A `/proc/self/mountinfo` line.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub root: String,
    pub mount_point: String,
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let a: Vec<&str> = a.split(' ').collect();
            let b: Vec<&str> = b.split(' ').collect();
            Some(MountInfo {
                root: a.get(3)?.to_string(),
                mount_point: a.get(4)?.to_string(),
                mount_opts: a.get(5)?.to_string(),
                fstype: b.first()?.to_string(),
                source: b.get(1)?.to_string(),
                super_opts: b.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The visible (last) mount on `mp`.
pub(crate) fn mount_at<'a>(m: &'a [MountInfo], mp: &str) -> Result<&'a MountInfo> {
    m.iter()
        .rev()
        .find(|x| x.mount_point == mp)
        .with_context(|| format!("nothing mounted on {mp}"))
}

/// Checks the booted deployment from inside the guest; returns its id (hex).
pub fn check_booted(vm: &mut Vm, secure: bool) -> Result<String> {
    let cmdline = vm.ok("cat /proc/cmdline")?;
    let arg = composefs_arg(&cmdline)
        .with_context(|| format!("no composefs= in /proc/cmdline: {cmdline}"))?;
    ensure!(
        arg.starts_with('?') != secure,
        "composefs={arg}: expected a {} boot",
        if secure { "secure" } else { "insecure" }
    );
    let id = composefs_hex(&arg).to_string();
    ensure!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "composefs={arg}: not a sha256 digest"
    );

    let mi = parse_mountinfo(&vm.ok("cat /proc/self/mountinfo")?);
    let root = mount_at(&mi, "/")?;
    eprintln!(
        "[{}] / is {} {} ({}) {}",
        vm.label, root.fstype, root.source, root.mount_opts, root.super_opts
    );
    ensure!(
        root.fstype == "overlay",
        "/ is {} (expected overlay)",
        root.fstype
    );
    ensure!(
        root.source.starts_with("composefs") && root.source.contains(&id),
        "/ has source {} (expected composefs:{id})",
        root.source
    );
    ensure!(
        root.super_opts
            .split(',')
            .any(|o| o.starts_with("lowerdir=") && o.contains("::"))
            || root.super_opts.contains("datadir+="),
        "/ overlay has no data-only lower layer (`::` in lowerdir): {}",
        root.super_opts
    );
    ensure!(
        root.mount_opts.split(',').any(|o| o == "ro"),
        "/ is not mounted read-only: {}",
        root.mount_opts
    );
    ensure!(
        root.super_opts.contains("verity=require") == secure,
        "/ overlay options {} {} verity=require",
        root.super_opts,
        if secure { "lack" } else { "have" }
    );

    let etc = mount_at(&mi, "/etc")?;
    ensure!(
        etc.root.ends_with(&format!("state/deploy/{id}/etc")),
        "/etc is a bind of {} (expected state/deploy/{id}/etc)",
        etc.root
    );
    let var = mount_at(&mi, "/var")?;
    ensure!(
        var.root.ends_with("state/os/default/var"),
        "/var is a bind of {} (expected state/os/default/var)",
        var.root
    );

    let (rc, out) = vm.run("touch /usr/.bootc-vm-test", Duration::from_secs(30))?;
    ensure!(
        rc != 0 && out.contains("Read-only file system"),
        "/usr is writable (touch: rc {rc}, {out:?})"
    );

    if secure {
        let m = vm.ok(&format!("fsverity measure /sysroot/composefs/images/{id}"))?;
        ensure!(
            m.split_whitespace().next() == Some(&format!("sha256:{id}")),
            "fsverity measure of the image: {m:?} (expected sha256:{id})"
        );
    }
    Ok(id)
}

/// `bootc status --format json` names the booted deployment, or pending when this
/// `bootc` has no `status` verb yet.
pub fn check_status(vm: &mut Vm, id: &str) -> Result<Option<String>> {
    let (rc, _) = vm.run(
        "bootc status --help >/dev/null 2>&1",
        Duration::from_secs(30),
    )?;
    if rc != 0 {
        return Ok(Some("`bootc status` does not exist yet".into()));
    }
    let out = vm.ok("bootc status --format json")?;
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("bootc status --format json: {out}"))?;
    let booted = &v["status"]["booted"];
    ensure!(!booted.is_null(), "bootc status: no status.booted: {out}");
    ensure!(
        booted.to_string().contains(id),
        "bootc status: status.booted does not name {id}: {booted}"
    );
    Ok(None)
}

/// `boot`: host install of v1 (insecure, the host has no fs-verity), boot, check the
/// mounts, write to /etc and /var, boot again and find them.
pub fn boot(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let disk = ctx.host_install(dir, "disk", "v1", None)?;
    let mut vm = ctx.boot(dir, "boot1", vec![Disk::rw(&disk)])?;
    let id = check_booted(&mut vm, false)?;
    vm.ok("echo etc-$(cat /proc/sys/kernel/random/boot_id) > /etc/bootc-vm-persist && cp /etc/bootc-vm-persist /var/bootc-vm-persist && sync")?;
    let written = vm.ok("cat /etc/bootc-vm-persist")?;
    vm.reboot(ctx.t(limits::BOOT))?;
    let boot_id = vm.ok("echo etc-$(cat /proc/sys/kernel/random/boot_id)")?;
    ensure!(
        boot_id != written,
        "the boot id did not change: no reboot happened"
    );
    let id2 = check_booted(&mut vm, false)?;
    ensure!(id2 == id, "second boot booted {id2}, first {id}");
    ensure!(
        vm.ok("cat /etc/bootc-vm-persist")? == written,
        "/etc/bootc-vm-persist did not survive the reboot"
    );
    ensure!(
        vm.ok("cat /var/bootc-vm-persist")? == written,
        "/var/bootc-vm-persist did not survive the reboot"
    );
    let status = check_status(&mut vm, &id)?;
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    Ok(match status {
        None => Outcome::Passed,
        Some(why) => Outcome::Pending(format!(
            "everything but the `bootc status` assertion passed: {why}"
        )),
    })
}

/// `bad-cmdline`: a well-formed digest of no image on the command line (edited in the BLS
/// entry from the host) stops the boot with our one-line message.
pub fn bad_cmdline(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let disk = ctx.host_install(dir, "disk", "v1", None)?;
    let wrong = "?sha256:".to_string() + &"0123456789abcdef".repeat(4);
    disk::edit_bls(&disk, dir, |_| wrong.clone())?;
    let mut vm = Vm::start(&ctx.uefi(dir, "bad-cmdline", vec![Disk::rw(&disk)])?)?;
    vm.wait_console(&["bootc-initramfs-setup: "], ctx.t(limits::FAIL_MESSAGE))?;
    // The boot must stop there (emergency mode), never reach the real root.
    vm.wait_console(qemu::FATAL_CONSOLE, ctx.t(60))?;
    let text = vm.console_text();
    let msg = initramfs_message(&text).context("no message")?;
    println!("bad-cmdline: console shows: {msg}");
    ensure!(
        msg.contains("0123456789ab"),
        "the message does not name the digest: {msg}"
    );
    ensure!(
        !text.contains("Reached target multi-user") && !text.contains("Reached target Multi-User"),
        "the boot went on to multi-user"
    );
    Ok(Outcome::Passed)
}

/// Reads a file in the guest (trimmed), or `None` when it does not exist.
pub(crate) fn guest_file(vm: &mut Vm, path: &str) -> Result<Option<String>> {
    let (rc, out) = vm.run(&format!("cat {path}"), Duration::from_secs(30))?;
    Ok((rc == 0).then(|| out.trim().to_string()))
}

/// v2 runs with the /etc 3-way merge done on top of v1 plus the local addition
/// `/etc/bootc-test/local.conf` (`local`): v2's `/usr/share/bootc-test/version`, the
/// untouched default took v2's, v2's new file appears, the file v2 removed is gone, the
/// local addition stays.
pub(crate) fn check_v2_merged(vm: &mut Vm) -> Result<()> {
    let v = guest_file(vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some("2"),
        "/usr/share/bootc-test/version is {v:?} in v2"
    );
    let d = guest_file(vm, "/etc/bootc-test/default.conf")?;
    ensure!(
        d.as_deref() == Some("default=v2"),
        "untouched /etc default: {d:?} (expected v2's)"
    );
    let n = guest_file(vm, "/etc/bootc-test/new-in-v2.conf")?;
    ensure!(
        n.is_some(),
        "/etc/bootc-test/new-in-v2.conf missing after the merge"
    );
    let r = guest_file(vm, "/etc/bootc-test/removed-in-v2.conf")?;
    ensure!(
        r.is_none(),
        "/etc/bootc-test/removed-in-v2.conf survived: {r:?}"
    );
    let l = guest_file(vm, "/etc/bootc-test/local.conf")?;
    ensure!(
        l.as_deref() == Some("local"),
        "the local addition was lost: {l:?}"
    );
    Ok(())
}

/// `bootc status --format json` in the guest.
pub(crate) fn guest_status(vm: &mut Vm) -> Result<serde_json::Value> {
    let out = vm.ok("bootc status --format json")?;
    serde_json::from_str(out.trim()).with_context(|| format!("bootc status --format json: {out}"))
}

/// `upgrade`: day 2 on a host-installed v1: local /etc changes, `bootc switch` to v2
/// (the OCI layout on a second disk), the finalize at shutdown, the /etc 3-way merge,
/// then `bootc rollback` back to v1. Pending while the image's bootc lacks the verbs.
///
/// Both finalizes are power cuts (issue 13 item 2; the debug bootc on a third disk, see
/// [`arm_cut`]): the first is cut before the entry sets are exchanged
/// ([`CUT_BEFORE_EXCHANGE`]), so v1 boots again with the local /etc edit and `bootc
/// status` agreeing with `/proc/cmdline`; the switch is run again and that finalize is
/// cut right after the exchange ([`CUT_AFTER_EXCHANGE`]), so v2 boots, merged, and the
/// rest of the scenario runs on a system whose last finalize never completed its
/// bookkeeping. The insecure install stays insecure after the upgrade (`composefs=?`,
/// and status says `missingVerityAllowed` for both deployments).
pub fn upgrade(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let disk = ctx.host_install(dir, "disk", "v1", None)?;
    let oci = oci_disk(ctx)?;
    let cut = cut_disk(ctx, dir)?;
    let disks = || vec![Disk::rw(&disk), Disk::ro(&oci), Disk::ro(&cut)];
    let mut boots: Vec<String> = vec![];
    let (mut vm, up) = ctx.boot_timed(dir, "upgrade1", disks())?;
    boots.push(format!("v1 {:.0} s", up.as_secs_f64()));
    let (rc, _) = vm.run(
        "bootc switch --help && bootc rollback --help && bootc status --help",
        Duration::from_secs(30),
    )?;
    if rc != 0 {
        vm.poweroff(ctx.t(limits::POWEROFF))?;
        return Ok(Outcome::Pending(
            "needs day-2 lifecycle (bootc switch/rollback/status in the image)".into(),
        ));
    }
    let id1 = check_booted(&mut vm, false)?;
    ensure!(guest_file(&mut vm, "/usr/share/bootc-test/version")?.as_deref() == Some("1"));
    let (rc, out) = vm.run("findmnt -no SOURCE,FSTYPE /boot", Duration::from_secs(30))?;
    ensure!(
        rc == 0 && out.contains("vfat"),
        "the ESP is not mounted on /boot: {out:?}"
    );
    // Local changes the merge must keep: an added file.
    vm.ok("echo local > /etc/bootc-test/local.conf")?;
    let out = guest_switch(ctx, &mut vm, "v2")?;
    println!("upgrade: bootc switch: {out}");
    let staged = guest_staged(&mut vm)?;

    // Power cut 1: the finalize dies before the exchange, the machine loses power.
    arm_cut(&mut vm, CUT_BEFORE_EXCHANGE)?;
    let console = vm.poweroff_cut(CUT_MARK, ctx.t(limits::POWEROFF * 3))?;
    println!("upgrade: power cut 1: {}", cut_report(&console)?);
    let names = disk::esp_entries(&disk)?;
    ensure!(
        !names.iter().any(|n| n.contains(&staged)),
        "after a cut before the exchange loader/entries names the staged {staged}: {names:?}"
    );
    let (mut vm, up) = ctx.boot_timed(dir, "upgrade-cut1", disks())?;
    boots.push(format!("v1 after cut 1 {:.0} s", up.as_secs_f64()));
    let id = check_booted(&mut vm, false)?;
    ensure!(
        id == id1,
        "after a cut before the exchange booted {id}, expected the old {id1}"
    );
    let l = guest_file(&mut vm, "/etc/bootc-test/local.conf")?;
    ensure!(
        l.as_deref() == Some("local"),
        "the local /etc edit was lost by the cut before the exchange: {l:?}"
    );
    let st = guest_status(&mut vm)?;
    check_status_agrees(&mut vm, &st)?;
    ensure!(
        st["status"]["staged"].is_null(),
        "after the cut status still shows a staged deployment (the marker died with /run): {st}"
    );
    // Re-running the operation succeeds: the same image is staged again.
    let out = guest_switch(ctx, &mut vm, "v2")?;
    println!("upgrade: bootc switch again: {out}");
    let again = guest_staged(&mut vm)?;
    ensure!(
        again == staged,
        "the switch again staged {again}, the first {staged}"
    );

    // Power cut 2: the finalize dies right after the exchange.
    arm_cut(&mut vm, CUT_AFTER_EXCHANGE)?;
    let console = vm.poweroff_cut(CUT_MARK, ctx.t(limits::POWEROFF * 3))?;
    println!("upgrade: power cut 2: {}", cut_report(&console)?);
    // The new entry is counted (default 3 tries) until its first good boot blesses it.
    let names = disk::esp_entries(&disk)?;
    println!("upgrade: loader/entries after the cut after the exchange: {names:?}");
    ensure!(
        names.contains(&format!("bootc_composefs-{staged}+3.conf")),
        "after the exchange no counted entry bootc_composefs-{staged}+3.conf: {names:?}"
    );

    let (mut vm, up) = ctx.boot_timed(dir, "upgrade2", disks())?;
    boots.push(format!("v2 after cut 2 {:.0} s", up.as_secs_f64()));
    let id2 = check_booted(&mut vm, false)?;
    ensure!(id2 != id1, "still booted {id1} after the switch to v2");
    ensure!(id2 == staged, "booted {id2}, but {staged} was staged");
    check_v2_merged(&mut vm)?;
    let st = check_blessed(&mut vm, &id2)?;
    check_status_agrees(&mut vm, &st)?;
    ensure!(
        st["status"]["booted"].to_string().contains(&id2),
        "status.booted does not name {id2}: {st}"
    );
    ensure!(
        st["status"]["rollback"].to_string().contains(&id1),
        "status.rollback does not name {id1}: {st}"
    );
    // Installed insecure, upgraded: still insecure (check_booted: `composefs=?`), and
    // status says so for both deployments.
    check_verity_status(&st, false)?;
    vm.ok("bootc rollback")?;
    vm.poweroff(ctx.t(limits::POWEROFF * 3))?;

    let (mut vm, up) = ctx.boot_timed(dir, "upgrade3", disks())?;
    boots.push(format!("v1 after rollback {:.0} s", up.as_secs_f64()));
    let id3 = check_booted(&mut vm, false)?;
    ensure!(
        id3 == id1,
        "after the rollback booted {id3}, expected {id1}"
    );
    let v = guest_file(&mut vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some("1"),
        "/usr/share/bootc-test/version is {v:?} after the rollback"
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!(
        "upgrade: boots to the guest shell: {}; scenario {:.0} s",
        boots.join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Passed)
}

/// The finalize cut of power cut 1 ([`arm_cut`]): a debug bootc aborts before its first
/// counted durable step, after the /etc merge into the staged deployment (whose renames
/// are not counted steps) and before the entry sets are exchanged: the staged `etc/` is
/// merged but not synced, the old menu is current.
pub const CUT_BEFORE_EXCHANGE: &str = "durable:1";
/// Power cut 2: the named point right after the exchange and the boot partition's sync
/// (`finalize.after-exchange`): the new menu is current, the old set, gc and the
/// marker's removal are still to do.
pub const CUT_AFTER_EXCHANGE: &str = "finalize.after-exchange";
/// What the guest prints on the console once the cut finalize has died; it then blocks
/// until QEMU is killed.
const CUT_MARK: &str = "bootc-vm-cut: finalize exited";
/// Where the guest keeps the debug bootc: /run (a tmpfs) is never unmounted before the
/// finalize runs at shutdown, unlike the disk it came from.
const CUT_BIN: &str = "/run/bootc-vm-cut/bootc";

/// An ext4 image holding the debug `bootc` (stripped; [`Ctx::debug_bootc`]), attached
/// read-only as the third disk of `upgrade` (`/dev/vdc`). Only the finalize of a cut
/// runs it; everything else in the guest is the image's release bootc.
fn cut_disk(ctx: &Ctx, dir: &Path) -> Result<PathBuf> {
    let bin = &ctx.debug_bootc;
    ensure!(
        bin.exists(),
        "{} is missing: the power cuts need the debug bootc (cargo build -p bootc), the \
         build that honours BOOTC_FAULT_AT",
        bin.display()
    );
    let stage = dir.join("cut-stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    run(Command::new("strip")
        .arg("-o")
        .arg(stage.join("bootc"))
        .arg(bin))?;
    let size = fs::metadata(stage.join("bootc"))?.len();
    let img = dir.join("cut.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "bootc-cut", "-d"])
        .arg(&stage)
        .arg(&img)
        .arg(format!("{}M", size / (1 << 20) * 5 / 4 + 16)))?;
    fs::remove_dir_all(&stage)?;
    Ok(img)
}

/// Makes this boot's finalize a power cut at `point` (a `BOOTC_FAULT_AT` value): copies
/// the debug bootc from `/dev/vdc` ([`cut_disk`]) to [`CUT_BIN`] and gives the running
/// finalize unit a runtime drop-in whose `ExecStop=` runs it with `BOOTC_FAULT_AT=point`,
/// prints [`CUT_MARK`] and its exit status on the console and blocks, holding the
/// shutdown there until [`Vm::poweroff_cut`] kills QEMU. No timing is involved: the
/// harness cuts when the guest says the finalize has died.
fn arm_cut(vm: &mut Vm, point: &str) -> Result<()> {
    let dir = CUT_BIN.rsplit_once('/').map(|(d, _)| d).unwrap_or("/run");
    // `vm.run` hands the script to bash base64-encoded: the quoted here-document is
    // written as is. In the unit file `$$` is systemd's escape for `$`.
    let script = format!(
        r#"set -e
mkdir -p {dir}/mnt
mount -o ro /dev/vdc {dir}/mnt
cp {dir}/mnt/bootc {CUT_BIN}
umount {dir}/mnt
{CUT_BIN} --help >/dev/null
d=/run/systemd/system/bootc-composefs-finalize-staged.service.d
mkdir -p $d
cat > $d/50-vm-cut.conf <<'END'
[Service]
Environment=BOOTC_FAULT_AT={point}
ExecStop=
ExecStop=/bin/sh -c '{CUT_BIN} composefs-finalize-staged >/dev/console 2>&1; echo "{CUT_MARK} $$?" >/dev/console; exec sleep infinity'
END
systemctl daemon-reload
systemctl is-active bootc-composefs-finalize-staged.service
systemctl show -p ExecStop --value bootc-composefs-finalize-staged.service"#
    );
    let out = vm.ok(&script)?;
    ensure!(
        out.contains(CUT_BIN) && out.contains("active"),
        "the finalize unit did not take the cut drop-in: {out}"
    );
    eprintln!("[{}] finalize armed to die at {point}", vm.label);
    Ok(())
}

/// Checks the console of a cut shutdown: the debug bootc aborted at its fault point
/// (SIGABRT, exit status 134 from the shell) and said where. Returns that line.
fn cut_report(console: &str) -> Result<String> {
    let status = console
        .lines()
        .find_map(|l| l.split_once(CUT_MARK).map(|(_, r)| r.trim().to_string()))
        .context("no cut marker on the console")?;
    let at = console
        .lines()
        .find_map(|l| {
            l.find("BOOTC_FAULT_AT=")
                .map(|i| l[i..].trim_end().to_string())
        })
        .with_context(|| {
            format!("the finalize exited {status} without a BOOTC_FAULT_AT line: it did not die at its point")
        })?;
    ensure!(
        status == "134",
        "the cut finalize exited {status}, expected 134 (SIGABRT at the point): {at}"
    );
    ensure!(
        at.contains("aborting"),
        "the fault hook did not abort: {at}"
    );
    Ok(at)
}

/// The staged deployment `bootc status --format json` shows.
pub(crate) fn guest_staged(vm: &mut Vm) -> Result<String> {
    let st = guest_status(vm)?;
    Ok(st["status"]["staged"]["composefs"]["verity"]
        .as_str()
        .with_context(|| format!("bootc status shows nothing staged: {st}"))?
        .to_string())
}

/// `bootc status` agrees with the kernel: `status.booted` is the `composefs=` digest on
/// `/proc/cmdline`.
pub(crate) fn check_status_agrees(vm: &mut Vm, st: &serde_json::Value) -> Result<()> {
    let cmdline = vm.ok("cat /proc/cmdline")?;
    let arg = composefs_arg(&cmdline).context("no composefs= on /proc/cmdline")?;
    let booted = &st["status"]["booted"]["composefs"]["verity"];
    ensure!(
        booted.as_str() == Some(composefs_hex(&arg)),
        "bootc status says booted {booted}, /proc/cmdline has composefs={arg}"
    );
    Ok(())
}

/// Every deployment `bootc status` lists says whether it boots without fs-verity
/// (`composefs.missingVerityAllowed`): all `!secure`.
fn check_verity_status(st: &serde_json::Value, secure: bool) -> Result<()> {
    let all = status_entries(st);
    ensure!(
        all.len() >= 2,
        "bootc status lists fewer than 2 deployments: {st}"
    );
    for e in all {
        let allowed = &e["composefs"]["missingVerityAllowed"];
        ensure!(
            allowed.as_bool() == Some(!secure),
            "bootc status: {} has missingVerityAllowed {allowed} on a{} system",
            e["composefs"]["verity"],
            if secure { " secure" } else { "n insecure" }
        );
    }
    Ok(())
}

/// A good boot of a counted entry is blessed: waits for the boot to finish (`systemctl
/// is-system-running --wait`: boot-complete.target and systemd-bless-boot.service ran by
/// then), checks that systemd-bless-boot.service ran (its generator pulls it in only when
/// systemd-boot counted the booted entry), that the entry of `id` in `/boot/loader/entries`
/// has no `+` counter left and that `bootc status` shows no `bootCounting` for the booted
/// deployment. Returns the status.
fn check_blessed(vm: &mut Vm, id: &str) -> Result<serde_json::Value> {
    let (_, state) = vm.run(
        "systemctl is-system-running --wait",
        Duration::from_secs(300),
    )?;
    let bless = vm.ok(
        "systemctl show --property=ActiveState,Result --value systemd-bless-boot.service | paste -sd' '; \
         /usr/lib/systemd/systemd-bless-boot status || true",
    )?;
    let names = guest_entries(vm)?;
    println!(
        "[{}] system {}; systemd-bless-boot.service: {}; /boot/loader/entries: {}",
        vm.label,
        state.trim(),
        bless.split_whitespace().collect::<Vec<_>>().join(" "),
        names.join(" ")
    );
    // `systemctl show` prints the two properties in its own order, one word each.
    let words: Vec<&str> = bless.split_whitespace().take(2).collect();
    ensure!(
        words.contains(&"active") && words.contains(&"success"),
        "systemd-bless-boot.service did not run (was the entry counted?): {bless}"
    );
    let mine: Vec<&String> = names.iter().filter(|n| n.contains(id)).collect();
    ensure!(
        mine.len() == 1 && !mine[0].contains('+'),
        "after a good boot the entry of {id} still has a counter (or is not one file): {names:?}"
    );
    let st = guest_status(vm)?;
    let counting = &st["status"]["booted"]["composefs"]["bootCounting"];
    ensure!(
        counting.is_null(),
        "bootc status: the blessed booted entry still shows bootCounting {counting}"
    );
    Ok(st)
}

/// The file names in the guest's `/boot/loader/entries` (the ESP), sorted.
fn guest_entries(vm: &mut Vm) -> Result<Vec<String>> {
    Ok(vm
        .ok("ls -1 /boot/loader/entries")?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Every deployment `bootc status --format json` lists (booted, staged, rollback,
/// otherDeployments).
fn status_entries(st: &serde_json::Value) -> Vec<&serde_json::Value> {
    let s = &st["status"];
    let mut v: Vec<&serde_json::Value> = ["booted", "staged", "rollback"]
        .iter()
        .map(|k| &s[*k])
        .filter(|e| !e.is_null())
        .collect();
    if let Some(others) = s["otherDeployments"].as_array() {
        v.extend(others.iter());
    }
    v
}

/// The deployment `id` in a status, if listed.
fn status_entry<'a>(st: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status_entries(st)
        .into_iter()
        .find(|e| e["composefs"]["verity"] == id)
}

/// The console line our health check printed in this boot (`bootc-test-health: …`).
fn health_line(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            l.find("bootc-test-health: ")
                .map(|i| l[i..].trim_end().to_string())
        })
        .next()
}

/// The `composefs=` digest (hex) on the kernel's `Command line:` in a boot's console.
pub(crate) fn console_composefs(text: &str) -> Option<String> {
    text.lines()
        .find(|l| l.contains("Command line:"))
        .and_then(composefs_arg)
        .map(|a| composefs_hex(&a).to_string())
}

/// `bootcount`: the boot loader's try counter, for real. A host install of v1 boots;
/// `bootc switch <v2-bad> --boot-tries 2` stages an image whose boots fail the test
/// image's health check (bootc-test-health.service, required by boot-complete.target,
/// reboots on failure); power-off finalizes. The next power-on is one QEMU run of three
/// boots: systemd-boot boots v2-bad twice (each fails its check and reboots by itself, its
/// counter going +2 → +1-1 → +0-2), then, with no tries left, v1. On v1: booted is v1,
/// status shows v2-bad with failedBoot and bootCounting {0, 2}, and `bootc upgrade --tag
/// v2-bad` (v1 follows the same layout) refuses that image with exit 0, staging nothing.
/// Four boots. The install records `oci:/run/oci:v1` as the image v1 follows
/// (`--target-imgref`): where the guest mounts the OCI disk.
pub fn bootcount(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let disk = dir.join("disk.img");
    disk::bootc_install(
        &ctx.bootc,
        &disk,
        8,
        &ctx.imgref("v1"),
        &["--target-imgref", &format!("{GUEST_OCI}:v1")],
        None,
    )?;
    let oci = oci_disk(ctx)?;
    let disks = || vec![Disk::rw(&disk), Disk::ro(&oci)];
    let mount_oci =
        "mkdir -p /run/oci && { mountpoint -q /run/oci || mount -o ro /dev/vdb /run/oci; }";
    let mut boots: Vec<String> = vec![];

    let (mut vm, up) = ctx.boot_timed(dir, "bootcount1", disks())?;
    boots.push(format!("v1 {:.0} s", up.as_secs_f64()));
    let id1 = check_booted(&mut vm, false)?;
    vm.ok(mount_oci)?;
    let out = vm.ok_within(
        &format!("bootc switch {GUEST_OCI}:v2-bad --boot-tries 2"),
        ctx.t(limits::GUEST_INSTALL),
    )?;
    println!(
        "bootcount: bootc switch v2-bad --boot-tries 2: {}",
        out.trim().lines().last().unwrap_or("")
    );
    let st = guest_status(&mut vm)?;
    let staged = &st["status"]["staged"];
    let bad = staged["composefs"]["verity"]
        .as_str()
        .with_context(|| format!("bootc status shows nothing staged after the switch: {st}"))?
        .to_string();
    println!(
        "bootcount: staged {bad}, bootCounting {}",
        staged["composefs"]["bootCounting"]
    );
    // The finalize (at shutdown) writes the counted entry.
    vm.poweroff(ctx.t(limits::POWEROFF * 3))?;
    let names = disk::esp_entries(&disk)?;
    println!("bootcount: loader/entries after the finalize: {names:?}");
    ensure!(
        names.contains(&format!("bootc_composefs-{bad}+2.conf")),
        "after the finalize no entry bootc_composefs-{bad}+2.conf: {names:?}"
    );

    // One power-on: two failing boots of v2-bad, each rebooting by itself, then v1.
    let mut vm = Vm::start(&ctx.uefi(dir, "bootcount2", disks())?)?;
    for n in 1..=2 {
        let took = vm.wait_restart(ctx.t(limits::BOOT))?;
        let text = fs::read(&vm.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        // This boot's part of the log: from the previous restart on.
        let this = text
            .split("reboot: Restarting system")
            .nth(n - 1)
            .unwrap_or("");
        let booted = console_composefs(this);
        let health = health_line(this);
        println!(
            "bootcount: v2-bad boot {n}: restarted by itself after {:.0} s; booted {}; {}",
            took.as_secs_f64(),
            booted
                .as_deref()
                .unwrap_or("(no Command line: on the console)"),
            health.as_deref().unwrap_or("(no health check line)")
        );
        boots.push(format!("v2-bad {:.0} s", took.as_secs_f64()));
        ensure!(
            booted.as_deref() == Some(bad.as_str()),
            "failing boot {n} booted {booted:?}, expected v2-bad {bad}"
        );
        ensure!(
            health
                .as_deref()
                .is_some_and(|h| h.contains("FAILED") && h.contains("fail-health-check")),
            "failing boot {n}: the health check did not fail on the marker: {health:?}"
        );
        ensure!(
            !this.contains("__PING_") && !this.contains("bootc-test-health: OK"),
            "failing boot {n} looked good"
        );
    }
    let up = vm.wait_shell(ctx.t(limits::BOOT))?;
    boots.push(format!("v1 (fallback) {:.0} s", up.as_secs_f64()));
    let id = check_booted(&mut vm, false)?;
    ensure!(
        id == id1,
        "after v2-bad ran out of tries booted {id}, expected v1 {id1}"
    );
    let names = guest_entries(&mut vm)?;
    println!("bootcount: on v1: /boot/loader/entries: {names:?}");
    ensure!(
        names.contains(&format!("bootc_composefs-{bad}+0-2.conf")),
        "no entry bootc_composefs-{bad}+0-2.conf after two failed boots: {names:?}"
    );
    let st = guest_status(&mut vm)?;
    ensure!(
        st["status"]["booted"]["composefs"]["verity"] == id1.as_str(),
        "status.booted is not v1 {id1}: {st}"
    );
    let e = status_entry(&st, &bad)
        .with_context(|| format!("bootc status does not list v2-bad {bad}: {st}"))?;
    let c = &e["composefs"];
    println!(
        "bootcount: status of v2-bad: failedBoot {}, bootCounting {}",
        c["failedBoot"], c["bootCounting"]
    );
    ensure!(
        c["failedBoot"] == true,
        "v2-bad: failedBoot is not true: {e}"
    );
    ensure!(
        c["bootCounting"]["triesLeft"] == 0 && c["bootCounting"]["triesDone"] == 2,
        "v2-bad: bootCounting {} (expected triesLeft 0, triesDone 2)",
        c["bootCounting"]
    );

    // v1 follows the same layout: its tag moved on to v2-bad is refused, exit 0.
    vm.ok(mount_oci)?;
    let (rc, out) = vm.run("bootc upgrade --tag v2-bad", ctx.t(limits::GUEST_INSTALL))?;
    println!(
        "bootcount: bootc upgrade --tag v2-bad: rc {rc}: {}",
        out.trim()
    );
    ensure!(
        rc == 0 && out.contains("Not staging") && out.contains("--force"),
        "bootc upgrade to the failed image: rc {rc}, {out:?} (expected exit 0 and \"Not staging … --force\")"
    );
    let st = guest_status(&mut vm)?;
    ensure!(
        st["status"]["staged"].is_null(),
        "bootc upgrade staged something after refusing: {st}"
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!(
        "bootcount: boots: {}; scenario {:.0} s",
        boots.join(", "),
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Passed)
}

/// `bootc switch` in the guest to `tag` of the OCI layout offered on its second disk
/// (`/dev/vdb`, the read-only ext4 of [`oci_disk`], mounted on `/run/oci`). Returns
/// the last line bootc printed.
pub(crate) fn guest_switch(ctx: &Ctx, vm: &mut Vm, tag: &str) -> Result<String> {
    let out = vm.ok_within(
        &format!(
            "mkdir -p /run/oci && {{ mountpoint -q /run/oci || mount -o ro /dev/vdb /run/oci; }} \
             && bootc switch oci:/run/oci:{tag}"
        ),
        ctx.t(limits::GUEST_INSTALL),
    )?;
    Ok(out.trim().lines().last().unwrap_or("").to_string())
}

/// The OCI layout as the guest sees it: [`oci_disk`] on `/dev/vdb`, mounted on `/run/oci`.
pub(crate) const GUEST_OCI: &str = "oci:/run/oci";

/// The GRUB menu on the ESP, relative to its root (the userspace's
/// `layout::GRUB_USER_CFG`, spelled again here: the harness checks the disk as a boot
/// loader reads it).
pub(crate) const GRUB_USER_CFG: &str = "grub2/user.cfg";
/// Where the test image mounts the ESP (`bootc-test-esp.service`).
pub(crate) const GUEST_ESP: &str = "/boot";

/// The `composefs=` digests (hex) of the menu entries of a `grub2/user.cfg`, in order;
/// fails when an entry has none.
fn menu_ids(cfg: &str) -> Result<Vec<String>> {
    disk::menu_composefs(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.map(|a| composefs_hex(&a).to_string())
                .with_context(|| format!("menu entry {i} has no composefs= argument:\n{cfg}"))
        })
        .collect()
}

/// Boots a GRUB disk (see [`grub`]), prints the time to the guest shell and checks that
/// GRUB's menu was on the console. When the boot fails, the error carries the
/// `grub2/user.cfg` read from the disk (QEMU has exited by then) and GRUB's lines from
/// the console.
fn grub_boot(ctx: &Ctx, dir: &Path, label: &str, disks: Vec<Disk>) -> Result<(Vm, f64)> {
    let disk = disks[0].path.clone();
    let console = dir.join(format!("console-{label}.log"));
    match ctx.boot_timed(dir, label, disks) {
        Ok((vm, up)) => {
            let secs = up.as_secs_f64();
            println!("grub: boot {label}: guest shell after {secs:.0} s");
            // OVMF mirrors the firmware console, GRUB's menu included, to the serial log.
            ensure!(
                vm.console_text().contains("GNU GRUB"),
                "boot {label}: the console never showed GRUB's menu (`GNU GRUB`)"
            );
            Ok((vm, secs))
        }
        Err(e) => {
            let cfg = match disk::esp_read(&disk, GRUB_USER_CFG) {
                Ok(Some(c)) => c,
                Ok(None) => "(absent)".into(),
                Err(e) => format!("(unreadable: {e:#})"),
            };
            let text = fs::read(&console)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let grub_lines: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("grub") || l.contains("error") || l.contains("booting")
                })
                .take(20)
                .collect();
            Err(e.context(format!(
                "boot {label} of the GRUB disk failed; {GRUB_USER_CFG} on the disk:\n{cfg}\n\
                 console lines naming GRUB or errors:\n{}",
                grub_lines.join("\n")
            )))
        }
    }
}

/// What a GRUB boot must show in the guest: the command line came from GRUB (its `linux`
/// command puts `BOOT_IMAGE=` first, systemd-boot never does), the menu on the ESP
/// (`/boot/grub2/user.cfg`) lists `expect_menu` in this order, and `bootc status` names
/// `id` booted with the loader `grub`. Returns the status.
fn check_grub_guest(vm: &mut Vm, id: &str, expect_menu: &[&str]) -> Result<serde_json::Value> {
    let cmdline = vm.ok("cat /proc/cmdline")?;
    ensure!(
        cmdline.trim_start().starts_with("BOOT_IMAGE="),
        "/proc/cmdline does not start with GRUB's BOOT_IMAGE=: {}",
        cmdline.trim()
    );
    let cfg = vm.ok(&format!("cat {GUEST_ESP}/{GRUB_USER_CFG}"))?;
    let ids = menu_ids(&cfg)?;
    eprintln!("[{}] GRUB menu entries (composefs=): {ids:?}", vm.label);
    ensure!(
        ids.iter()
            .map(String::as_str)
            .eq(expect_menu.iter().copied()),
        "the GRUB menu lists {ids:?}, expected {expect_menu:?}:\n{cfg}"
    );
    if let Some(why) = check_status(vm, id)? {
        bail!("{why}");
    }
    let st = guest_status(vm)?;
    let loader = &st["status"]["booted"]["composefs"]["bootloader"];
    ensure!(
        loader == "grub",
        "bootc status: status.booted.composefs.bootloader is {loader}, expected \"grub\""
    );
    Ok(st)
}

/// `grub`: the GRUB path end to end. Host install of v1 with `--bootloader grub` (GRUB at
/// `EFI/BOOT/BOOTX64.EFI`, the menu in `grub2/user.cfg`), boot it with OVMF; `bootc
/// switch` to v2 (the OCI layout on a second disk, as in `upgrade`), power cycle, v2
/// boots and heads the menu; `bootc rollback`, power cycle, v1 boots again. Three boots;
/// never pending.
pub fn grub(ctx: &Ctx, dir: &Path) -> Result<Outcome> {
    let t0 = Instant::now();
    let disk = ctx.host_install(dir, "disk", "v1", Some("grub"))?;
    println!(
        "grub: host install with --bootloader grub: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    for f in ["EFI/BOOT/BOOTX64.EFI", "grub2/grub.cfg"] {
        ensure!(
            disk::esp_has(&disk, f)?,
            "the GRUB install left no {f} on the ESP"
        );
    }
    let cfg = disk::esp_read(&disk, GRUB_USER_CFG)?
        .with_context(|| format!("the GRUB install left no {GRUB_USER_CFG} on the ESP"))?;
    let installed = menu_ids(&cfg)?;
    ensure!(
        installed.len() == 1,
        "{GRUB_USER_CFG} after the install has {} entries, expected 1:\n{cfg}",
        installed.len()
    );
    let oci = oci_disk(ctx)?;
    let disks = || vec![Disk::rw(&disk), Disk::ro(&oci)];
    let mut boots = vec![];

    let (mut vm, secs) = grub_boot(ctx, dir, "grub1", disks())?;
    boots.push(secs);
    let id1 = check_booted(&mut vm, false)?;
    ensure!(
        installed[0] == id1,
        "booted {id1}, but the installed menu entry names {}",
        installed[0]
    );
    check_grub_guest(&mut vm, &id1, &[&id1])?;
    let v = guest_file(&mut vm, "/usr/share/bootc-test/version")?;
    ensure!(v.as_deref() == Some("1"), "version {v:?} on the v1 install");
    let out = guest_switch(ctx, &mut vm, "v2")?;
    println!("grub: bootc switch: {out}");
    let st = guest_status(&mut vm)?;
    ensure!(
        !st["status"]["staged"].is_null(),
        "bootc status shows nothing staged after the switch: {st}"
    );
    // The finalize (at shutdown) writes the new menu.
    vm.poweroff(ctx.t(limits::POWEROFF * 3))?;

    let (mut vm, secs) = grub_boot(ctx, dir, "grub2", disks())?;
    boots.push(secs);
    let id2 = check_booted(&mut vm, false)?;
    ensure!(id2 != id1, "still booted {id1} after the switch to v2");
    let v = guest_file(&mut vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some("2"),
        "version {v:?} after the switch to v2"
    );
    let st = check_grub_guest(&mut vm, &id2, &[&id2, &id1])?;
    ensure!(
        st["status"]["rollback"].to_string().contains(&id1),
        "status.rollback does not name {id1}: {st}"
    );
    vm.ok("bootc rollback")?;
    vm.poweroff(ctx.t(limits::POWEROFF * 3))?;

    let (mut vm, secs) = grub_boot(ctx, dir, "grub3", disks())?;
    boots.push(secs);
    let id3 = check_booted(&mut vm, false)?;
    ensure!(
        id3 == id1,
        "after the rollback booted {id3}, expected {id1}"
    );
    let v = guest_file(&mut vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some("1"),
        "version {v:?} after the rollback"
    );
    check_grub_guest(&mut vm, &id1, &[&id1, &id2])?;
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!(
        "grub: boots to the guest shell: {} s; scenario {:.0} s",
        boots
            .iter()
            .map(|s| format!("{s:.0}"))
            .collect::<Vec<_>>()
            .join(" + "),
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Passed)
}

/// An ext4 image holding the OCI layout, attached read-only to the installer VM.
pub(crate) fn oci_disk(ctx: &Ctx) -> Result<PathBuf> {
    let img = ctx.images.join("oci.ext4");
    let stamp = fs::read_to_string(ctx.images.join("build-stamp")).unwrap_or_default();
    let stamp_file = ctx.images.join("oci.ext4.stamp");
    if img.exists() && fs::read_to_string(&stamp_file).unwrap_or_default() == stamp {
        return Ok(img);
    }
    let layout = ctx.images.join("oci");
    let size: u64 = run(Command::new("du").args(["-sb"]).arg(&layout))?
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("du")?;
    let _ = fs::remove_file(&img);
    disk::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "bootc-oci", "-d"])
            .arg(&layout)
            .arg(&img)
            .arg(format!("{}M", size / (1 << 20) * 5 / 4 + 64)),
    )?;
    fs::write(&stamp_file, stamp)?;
    Ok(img)
}

/// The secure path: boot the host-installed (insecure) disk as an installer with a blank
/// second disk and the OCI layout on a third, run `bootc install to-disk /dev/vdb` there
/// (the guest kernel has fs-verity), and return the installed disk.
pub fn guest_install(ctx: &Ctx, dir: &Path, tag: &str) -> Result<PathBuf> {
    guest_install_with(ctx, dir, tag, vec![], "", "")
}

/// [`guest_install`] with `extra` disks after the three (`/dev/vdd`, …), `prep`, a
/// shell command run in the installer before `bootc install`, and `args`, more
/// arguments to `bootc install to-disk` (e.g. `--bootloader grub`).
pub(crate) fn guest_install_with(
    ctx: &Ctx,
    dir: &Path,
    tag: &str,
    extra: Vec<Disk>,
    prep: &str,
    args: &str,
) -> Result<PathBuf> {
    let installer = ctx.host_install(dir, "installer", "v1", None)?;
    let target = dir.join("secure.img");
    disk::sparse_disk(&target, 8)?;
    let oci = oci_disk(ctx)?;
    let mut disks = vec![Disk::rw(&installer), Disk::rw(&target), Disk::ro(&oci)];
    disks.extend(extra);
    let mut vm = ctx.boot(dir, "installer", disks)?;
    // udev runs during the install, as on a real machine: its watch re-reads the fresh
    // partition table and re-probes the formatted partitions, which bootc waits for.
    let (rc, out) = vm.run(
        "systemctl is-active systemd-udevd.service",
        Duration::from_secs(30),
    )?;
    ensure!(
        rc == 0,
        "systemd-udevd is not running in the installer VM: {}",
        out.trim()
    );
    if !prep.is_empty() {
        vm.ok(prep)?;
    }
    let t = Instant::now();
    let out = vm.ok_within(
        &format!(
            "set -e; mkdir -p /run/oci; mount -o ro /dev/vdc /run/oci; \
             bootc install to-disk /dev/vdb --source-imgref oci:/run/oci:{tag} --wipe --require-verity {args}"
        ),
        ctx.t(limits::GUEST_INSTALL),
    )?;
    println!(
        "installer VM: bootc install to-disk took {:.0} s: {}",
        t.elapsed().as_secs_f64(),
        out.lines().last().unwrap_or("")
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    let _ = fs::remove_file(&installer);
    Ok(target)
}

/// Content of the image's /usr/share/bootc-test/tamper-target.bin (mkosi.postinst.chroot).
pub fn tamper_target_content() -> Vec<u8> {
    b"bootc-tamper-target\n"
        .iter()
        .copied()
        .cycle()
        .take(65536)
        .collect()
}

/// The disk `boot-secure` leaves for `tamper`: installed secure with v1, switched to v2
/// (the default), v1 the rollback.
pub struct SecureDisk {
    pub path: PathBuf,
    /// v1's deployment id (hex).
    pub v1: String,
    /// v2's deployment id (hex).
    pub v2: String,
}

/// `boot-secure`: install from the installer VM, boot with composefs=sha256:…
/// (verity=require), check mounts and the image's fs-verity digest; then secure after an
/// upgrade (issue 13 item 3): `bootc switch` to v2 in the guest, power-off finalizes,
/// and v2 boots secure too: `composefs=sha256:` without `?`, `verity=require`, v2's
/// EROFS image measures as its id, every object in the repository (v2's new ones
/// included) has fs-verity, and status says no deployment may miss verity. Leaves the
/// disk for `tamper`.
pub fn boot_secure(ctx: &Ctx, dir: &Path) -> Result<(Outcome, SecureDisk)> {
    let disk = guest_install(ctx, dir, "v1")?;
    let oci = oci_disk(ctx)?;
    let disks = || vec![Disk::rw(&disk), Disk::ro(&oci)];
    let (mut vm, up) = ctx.boot_timed(dir, "secure", disks())?;
    let mut boots = vec![format!("v1 {:.0} s", up.as_secs_f64())];
    let id = check_booted(&mut vm, true)?;
    let content = vm.ok("sha256sum < /usr/share/bootc-test/tamper-target.bin")?;
    eprintln!("[secure] tamper target reads fine: {}", content.trim());
    let status = check_status(&mut vm, &id)?;
    if let Some(why) = status {
        vm.poweroff(ctx.t(limits::POWEROFF))?;
        return Ok((
            Outcome::Pending(format!(
                "everything but the `bootc status` assertion and the upgrade passed: {why}"
            )),
            SecureDisk {
                path: disk,
                v1: id,
                v2: String::new(),
            },
        ));
    }
    let t = Instant::now();
    let out = guest_switch(ctx, &mut vm, "v2")?;
    println!(
        "boot-secure: bootc switch v2 took {:.0} s: {out}",
        t.elapsed().as_secs_f64()
    );
    let staged = guest_staged(&mut vm)?;
    vm.poweroff(ctx.t(limits::POWEROFF * 3))?;

    let (mut vm, up) = ctx.boot_timed(dir, "secure-v2", disks())?;
    boots.push(format!("v2 {:.0} s", up.as_secs_f64()));
    let id2 = check_booted(&mut vm, true)?;
    ensure!(
        id2 == staged,
        "booted {id2} after the switch, {staged} was staged"
    );
    let v = guest_file(&mut vm, "/usr/share/bootc-test/version")?;
    ensure!(
        v.as_deref() == Some("2"),
        "version {v:?} after the switch to v2"
    );
    // Every object has fs-verity (`fsverity measure` fails on a file without it); those
    // newer than v1's image were written by the switch (v2's EROFS image at least).
    let out = vm.ok_within(
        &format!(
            "set -e -o pipefail; cd /sysroot/composefs; \
             all=$(find objects -type f | wc -l); \
             new=$(find objects -type f -newer images/{id} | wc -l); \
             measured=$(find objects -type f -print0 | xargs -0 fsverity measure | wc -l); \
             echo $all $new $measured"
        ),
        ctx.t(300),
    )?;
    let n: Vec<u64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    ensure!(n.len() == 3, "counting objects: {out:?}");
    println!(
        "boot-secure: after the upgrade {} objects, {} written by the switch, {} measured with fs-verity",
        n[0], n[1], n[2]
    );
    ensure!(
        n[1] >= 1 && n[2] == n[0],
        "objects without fs-verity after the upgrade: {} of {} measured ({} new)",
        n[2],
        n[0],
        n[1]
    );
    let st = guest_status(&mut vm)?;
    check_status_agrees(&mut vm, &st)?;
    ensure!(
        st["status"]["rollback"]["composefs"]["verity"].as_str() == Some(id.as_str()),
        "status.rollback is not v1 {id}: {st}"
    );
    check_verity_status(&st, true)?;
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!(
        "boot-secure: boots to the guest shell: {}",
        boots.join(", ")
    );
    Ok((
        Outcome::Passed,
        SecureDisk {
            path: disk,
            v1: id,
            v2: id2,
        },
    ))
}

/// The fs-verity digest (sha256, 4 KiB blocks, as composefs uses) of `data`, by
/// `fsverity digest` (userspace: works without kernel fs-verity).
fn fsverity_digest(dir: &Path, data: &[u8]) -> Result<String> {
    let f = dir.join("tamper-target.bin");
    fs::write(&f, data)?;
    let out = run(Command::new("fsverity")
        .args(["digest", "--hash-alg=sha256", "--block-size=4096"])
        .arg(&f))?;
    let _ = fs::remove_file(&f);
    let d = out
        .split_whitespace()
        .next()
        .and_then(|d| d.strip_prefix("sha256:"))
        .context("fsverity digest output")?;
    Ok(d.to_string())
}

/// Flips one byte of the object `composefs/objects/<xx>/<rest>` on the root partition of
/// `disk`, in place on the image (no mount: the guest-made ext4 has the verity feature
/// the host kernel may not mount read-write). Returns the object's path.
pub(crate) fn flip_object_byte(disk: &Path, hex: &str) -> Result<String> {
    let obj = format!("/composefs/objects/{}/{}", &hex[..2], &hex[2..]);
    let root = disk::partitions(disk)?
        .into_iter()
        .find(|p| !p.esp)
        .context("no root partition")?;
    let loopdev = run(Command::new("losetup")
        .args([
            "--find",
            "--show",
            "--read-only",
            "--offset",
            &root.offset.to_string(),
            "--sizelimit",
            &root.size.to_string(),
        ])
        .arg(disk))?
    .trim()
    .to_string();
    let probe = (|| -> Result<(u64, u64)> {
        let bs = run(Command::new("dumpe2fs").args(["-h"]).arg(&loopdev))?;
        let bs: u64 = bs
            .lines()
            .find_map(|l| l.strip_prefix("Block size:"))
            .and_then(|v| v.trim().parse().ok())
            .context("dumpe2fs: no block size")?;
        let b = run(Command::new("debugfs")
            .args(["-R", &format!("bmap {obj} 0")])
            .arg(&loopdev))?;
        let blk: u64 = b
            .trim()
            .parse()
            .with_context(|| format!("debugfs bmap {obj}: {b:?}"))?;
        ensure!(
            blk != 0,
            "{obj} is not in the repository (debugfs bmap gives 0)"
        );
        Ok((bs, blk))
    })();
    let _ = run(Command::new("losetup").arg("-d").arg(&loopdev));
    let (bs, blk) = probe?;
    let at = root.offset + blk * bs + 100;
    let mut f = fs::OpenOptions::new().read(true).write(true).open(disk)?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(at))?;
    f.write_all(&[b[0] ^ 0xff])?;
    f.sync_all()?;
    eprintln!(
        "host: flipped byte 100 of {obj} (disk offset {at}: {:#04x} -> {:#04x})",
        b[0],
        b[0] ^ 0xff
    );
    Ok(obj)
}

/// `tamper`, on `boot-secure`'s disk (v2 the default, v1 the rollback, both secure):
/// one byte flipped in the object of `/usr/share/bootc-test/tamper-target.bin` (shared
/// by v1 and v2) and one in v2's EROFS image object (`composefs/images/<v2>` is a link
/// to `objects/<v2>`). The secure boot of v2 stops with our one-line initramfs message
/// and never reaches multi-user; the previous entry, v1 (made the default from the host
/// in `loader/loader.conf`, as a user picks it in the menu), still boots secure, and
/// reading the tampered file there fails with EIO. Then the entries are edited to
/// `composefs=?…`: the same disk boots v1 insecure (no `verity=require`).
pub fn tamper(ctx: &Ctx, dir: &Path, secure: &SecureDisk) -> Result<Outcome> {
    let disk = secure.path.as_path();
    ensure!(
        !secure.v2.is_empty(),
        "boot-secure did not upgrade its disk to v2"
    );
    let hex = fsverity_digest(dir, &tamper_target_content())?;
    flip_object_byte(disk, &hex)?;
    flip_object_byte(disk, &secure.v2)?;
    let mut boots = vec![];

    // v2, the default: the initramfs cannot mount its tampered image.
    let mut vm = Vm::start(&ctx.uefi(dir, "tamper-v2", vec![Disk::rw(disk)])?)?;
    vm.wait_console(&["bootc-initramfs-setup: "], ctx.t(limits::FAIL_MESSAGE))?;
    vm.wait_console(qemu::FATAL_CONSOLE, ctx.t(60))?;
    let text = vm.console_text();
    boots.push(format!(
        "v2 tampered: stopped after {:.0} s",
        vm.started.elapsed().as_secs_f64()
    ));
    drop(vm);
    let msg = initramfs_message(&text).context("no message")?;
    println!("tamper: secure boot of the tampered v2 stopped: {msg}");
    let booted = console_composefs(&text);
    ensure!(
        booted.as_deref() == Some(secure.v2.as_str()),
        "the stopped boot was {booted:?}, expected v2 {}",
        secure.v2
    );
    ensure!(
        !text.contains("Reached target multi-user") && !text.contains("Reached target Multi-User"),
        "the boot of the tampered v2 went on to multi-user"
    );

    // The previous entry still boots.
    let names = disk::esp_entries(disk)?;
    let v1_entry = names
        .iter()
        .find(|n| n.contains(&secure.v1))
        .with_context(|| format!("no entry for v1 {} on the ESP: {names:?}", secure.v1))?;
    let stem = v1_entry.split(['+', '.']).next().unwrap_or(v1_entry);
    disk::esp_set_default(disk, dir, &format!("{stem}*"))?;
    let (mut vm, up) = ctx.boot_timed(dir, "tamper-v1", vec![Disk::rw(disk)])?;
    boots.push(format!("v1 {:.0} s", up.as_secs_f64()));
    let id = check_booted(&mut vm, true)?;
    ensure!(
        id == secure.v1,
        "with v1 chosen booted {id}, expected {}",
        secure.v1
    );
    let (rc, out) = vm.run(
        "cat /usr/share/bootc-test/tamper-target.bin > /dev/null",
        Duration::from_secs(60),
    )?;
    println!(
        "tamper: secure boot of v1, reading the tampered file: rc {rc}: {}",
        out.trim()
    );
    ensure!(
        rc != 0 && out.contains("Input/output error"),
        "reading a tampered object did not fail with EIO (rc {rc}: {out:?})"
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;

    disk::edit_bls(disk, dir, |v| {
        if v.starts_with('?') {
            v.to_string()
        } else {
            format!("?{v}")
        }
    })?;
    let (mut vm, up) = ctx.boot_timed(dir, "tamper-insecure", vec![Disk::rw(disk)])?;
    boots.push(format!("v1 insecure {:.0} s", up.as_secs_f64()));
    check_booted(&mut vm, false)?;
    // The object file itself still has fs-verity enabled, so ext4 verifies every read of
    // it whatever the overlay options are: the file reads as EIO here too. What `?`
    // changes is that the boot does not depend on verity (shown above); print the read.
    let (rc, out) = vm.run(
        "sha256sum < /usr/share/bootc-test/tamper-target.bin",
        Duration::from_secs(60),
    )?;
    println!(
        "tamper: composefs=? boot is up; reading the tampered file: rc {rc}: {}",
        out.trim()
    );
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    println!("tamper: boots: {}", boots.join(", "));
    Ok(Outcome::Passed)
}

/// Moves the console logs of a failed scenario to the artifacts directory.
pub fn keep_artifacts(ctx: &Ctx, name: &str, dir: &Path) -> Result<PathBuf> {
    let dst = ctx.artifacts.join(name);
    let _ = fs::remove_dir_all(&dst);
    fs::create_dir_all(&dst)?;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".log") || n.ends_with(".stderr") {
                fs::copy(&p, dst.join(&n))?;
            }
        }
    }
    Ok(dst)
}

/// Throws a scenario's disks and scratch files away.
pub fn cleanup(dir: &Path) {
    if dir.exists() {
        if let Err(e) = fs::remove_dir_all(dir) {
            eprintln!("warning: removing {}: {e}", dir.display());
        }
    }
}

/// Fails unless `bootc install --help` works.
pub fn check_bootc(bootc: &Path) -> Result<()> {
    let out = Command::new(bootc)
        .args(["install", "to-disk", "--help"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "{} install to-disk --help fails: build bootc first (cargo build --release -p bootc)",
            bootc.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo() {
        let t = "23 1 0:21 / / ro,relatime shared:1 - overlay composefs:abcd ro,lowerdir=/a::/b,redirect_dir=on,metacopy=on,verity=require\n\
                 30 23 254:2 /state/deploy/abcd/etc /etc rw,relatime shared:2 - ext4 /dev/vda2 rw\n";
        let m = parse_mountinfo(t);
        let r = mount_at(&m, "/").unwrap();
        assert_eq!(r.fstype, "overlay");
        assert_eq!(r.source, "composefs:abcd");
        assert!(r.super_opts.contains("::"));
        assert_eq!(mount_at(&m, "/etc").unwrap().root, "/state/deploy/abcd/etc");
        assert!(mount_at(&m, "/var").is_err());
    }

    #[test]
    fn reads_a_boot_from_its_console() {
        let hex = "ab".repeat(32);
        let log = format!(
            "[    0.000000] Command line: initrd=\\x composefs=?sha256:{hex} rw console=ttyS0\r\n\
             [   12.5] health-check[301]: bootc-test-health: FAILED: marker\r\n"
        );
        assert_eq!(console_composefs(&log).as_deref(), Some(hex.as_str()));
        assert_eq!(
            health_line(&log).as_deref(),
            Some("bootc-test-health: FAILED: marker")
        );
        assert_eq!(console_composefs("no kernel line"), None);
        assert_eq!(health_line("nothing"), None);
    }

    #[test]
    fn finds_a_deployment_in_any_status_slot() {
        let st = serde_json::json!({"status": {
            "booted": {"composefs": {"verity": "a"}},
            "staged": null,
            "rollback": {"composefs": {"verity": "b"}},
            "otherDeployments": [{"composefs": {"verity": "c"}}]
        }});
        for id in ["a", "b", "c"] {
            assert_eq!(status_entry(&st, id).unwrap()["composefs"]["verity"], id);
        }
        assert!(status_entry(&st, "d").is_none());
    }

    #[test]
    fn reads_a_cut_from_its_console() {
        let log = format!(
            "[  40.1] systemd[1]: Stopping bootc-composefs-finalize-staged.service\r\n\
             BOOTC_FAULT_AT=durable:1: aborting before syncfs\r\n\
             {CUT_MARK} 134\r\n"
        );
        assert_eq!(
            cut_report(&log).unwrap(),
            "BOOTC_FAULT_AT=durable:1: aborting before syncfs"
        );
        // A finalize that did not die at its point (a release build ignores the hook).
        let clean = format!("{CUT_MARK} 0\r\n");
        assert!(cut_report(&clean).is_err());
        let wrong = format!("BOOTC_FAULT_AT=durable:1: aborting before x\n{CUT_MARK} 1\n");
        assert!(cut_report(&wrong).is_err());
        assert!(cut_report("nothing").is_err());
    }

    #[test]
    fn tamper_target_matches_the_image_recipe() {
        let c = tamper_target_content();
        assert_eq!(c.len(), 65536);
        assert!(c.starts_with(b"bootc-tamper-target\nbootc-tamper-target\n"));
    }
}
