//! `bootc-vm`: the VM test rig (see tests-vm/README.md).
//!
//! ```text
//! bootc-vm run [--batch] [--insecure] [--tag v1|v2]
//!                                        build the image, install it with bootc to a disk
//!                                        image (in the installer VM: fs-verity enforced;
//!                                        --insecure: from the host, composefs=?), boot it
//!                                        (interactive serial console, or --batch: print
//!                                        and check the state, power off)
//! bootc-vm scenarios [NAME...]           run the scenarios (all by default): boot,
//!                                        bad-cmdline, boot-secure, tamper, upgrade,
//!                                        grub, bootcount, uki-boot, uki-upgrade,
//!                                        uki-tamper, uki-grub, soft
//! bootc-vm bench-boot [--runs N] [--json FILE]
//!                                        boot time of the composefs root vs the same
//!                                        image on a plain ext4 root (bench_boot.rs);
//!                                        bench/run.sh's `boot` case runs it
//! ```
//! Both build the test image first (`mkosi/build.sh`, a no-op when nothing changed)
//! unless `--no-build` is given. Must run as root (loop devices, mounts).
//!
//! A scenario that returns pending is a SKIP (with its reason) locally and a failure
//! under `CI=true` (`verdict`).
//!
//! Environment: BOOTC_BIN (host bootc, default target/release/bootc), BOOTC_DEBUG_BIN
//! (the debug bootc `upgrade`'s power cuts run in the guest, default target/debug/bootc), BOOTC_VM_OUT
//! (images, default target/vm-images), BOOTC_VM_TIMEOUT_SCALE (multiplies timeouts),
//! CI; mkosi/build.sh also reads BOOTC_SETUP_BIN.

mod bench_boot;
mod disk;
mod qemu;
mod scenarios;
mod soft;
mod uki;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use scenarios::{Ctx, Outcome};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ctx() -> Result<Ctx> {
    let ws = workspace();
    let target = ws.join("target");
    let scale = std::env::var("BOOTC_VM_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Ok(Ctx {
        images: std::env::var_os("BOOTC_VM_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("vm-images")),
        bootc: std::env::var_os("BOOTC_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release/bootc")),
        debug_bootc: std::env::var_os("BOOTC_DEBUG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("debug/bootc")),
        work: target.join("vm-work"),
        artifacts: target.join("vm-artifacts"),
        scale,
    })
}

fn build_images(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    // Without BOOTC_BIN, build.sh builds target/release/bootc (ctx.bootc's default), which
    // the host installs use too.
    let st = Command::new(workspace().join("mkosi/build.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .context("running mkosi/build.sh")?;
    if !st.success() {
        bail!("mkosi/build.sh failed ({st})");
    }
    println!("phase image-build: {:.0} s", t.elapsed().as_secs_f64());
    scenarios::check_bootc(&ctx.bootc)?;
    Ok(())
}

/// `run`: installs `tag` and boots it. By default the install is the secure one, made
/// inside the installer VM (the guest kernel has fs-verity, which a host like ours lacks;
/// `scenarios::guest_install`, as `boot-secure`), so the machine boots
/// `composefs=sha256:<id>` with `verity=require` on its root. `insecure` installs from
/// the host instead (quicker; `composefs=?`, fs-verity not enforced). `--batch` prints
/// the state, checks it is what the install promises (`scenarios::check_booted`, and
/// `bootc status` saying whether verity is enforced) and powers off.
fn cmd_run(ctx: &Ctx, batch: bool, tag: &str, insecure: bool) -> Result<()> {
    let dir = ctx.work.join("run");
    scenarios::cleanup(&dir);
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let disk = if insecure {
        ctx.host_install(&dir, "disk", tag, None)?
    } else {
        scenarios::guest_install(ctx, &dir, tag)?
    };
    println!(
        "phase install: {:.0} s ({}, {})",
        t.elapsed().as_secs_f64(),
        if insecure {
            "host install, composefs=?: fs-verity not enforced"
        } else {
            "installed in the installer VM, fs-verity enforced"
        },
        disk.display()
    );
    let vars = dir.join("vars-disk.fd");
    qemu::fresh_vars(&vars)?;
    let cfg = qemu::VmConfig {
        label: "run".into(),
        dir: dir.clone(),
        disks: vec![qemu::Disk::rw(&disk)],
        boot: qemu::Boot::Uefi { vars },
        memory_mib: 2048,
        interactive: !batch,
    };
    let mut vm = qemu::Vm::start(&cfg)?;
    if !batch {
        println!("Serial console below (root autologin). Leave with `poweroff` or Ctrl-a x.");
        vm.wait_forever()?;
        println!("disk kept at {} (delete it when done)", disk.display());
        return Ok(());
    }
    let r = (|| -> Result<()> {
        let up = vm.wait_shell(Duration::from_secs(240))?;
        println!("phase boot-to-multi-user: {:.0} s", up.as_secs_f64());
        let out = vm.ok(
            "echo '# cat /proc/cmdline'; cat /proc/cmdline; \
             echo '# mounts'; for m in / /etc /var /sysroot /boot; do findmnt -no TARGET,SOURCE,FSTYPE,OPTIONS --mountpoint $m; done; \
             echo '# bootc status'; bootc status; \
             echo '# systemctl is-system-running'; systemctl is-system-running || true",
        )?;
        print!("{out}");
        let id = scenarios::check_booted(&mut vm, !insecure)?;
        let want = if insecure {
            "FsVerity: not enforced"
        } else {
            "FsVerity: enforced"
        };
        let booted = vm.ok("bootc status --booted")?;
        anyhow::ensure!(
            booted.contains(&id) && booted.contains(want),
            "bootc status --booted does not say {id} with {want:?}:\n{booted}"
        );
        println!(
            "# checked: composefs={}sha256:{id}, {} on /, bootc status: {want}",
            if insecure { "?" } else { "" },
            if insecure {
                "no verity=require"
            } else {
                "verity=require"
            }
        );
        vm.poweroff(Duration::from_secs(180))
    })();
    match r {
        Ok(()) => {
            println!("phase run-total: {:.0} s", t.elapsed().as_secs_f64());
            scenarios::cleanup(&dir);
            Ok(())
        }
        Err(e) => {
            let kept = scenarios::keep_artifacts(ctx, "run", &dir)?;
            scenarios::cleanup(&dir);
            Err(e.context(format!("console log kept in {}", kept.display())))
        }
    }
}

fn cmd_scenarios(ctx: &Ctx, names: &[String]) -> Result<bool> {
    let selected: Vec<&str> = if names.is_empty() {
        scenarios::ALL.to_vec()
    } else {
        for n in names {
            if !scenarios::ALL.contains(&n.as_str()) {
                bail!(
                    "unknown scenario {n:?}; known: {}",
                    scenarios::ALL.join(", ")
                );
            }
        }
        scenarios::ALL
            .iter()
            .copied()
            .filter(|a| names.iter().any(|n| n == a))
            .collect()
    };
    let mut results: Vec<(String, Verdict, f64)> = vec![];
    // boot-secure leaves its disk for tamper (one installer VM run for both).
    let mut secure_disk: Option<scenarios::SecureDisk> = None;
    let secure_dir = ctx.work.join("secure");
    let mut uki = uki::Shared::default();
    for &name in &selected {
        println!("=== scenario {name}");
        let t = Instant::now();
        let dir = if name == "boot-secure" || name == "tamper" {
            secure_dir.clone()
        } else {
            ctx.work.join(name)
        };
        if name != "tamper" {
            scenarios::cleanup(&dir);
        }
        std::fs::create_dir_all(&dir)?;
        let r = match name {
            "boot" => scenarios::boot(ctx, &dir),
            "bad-cmdline" => scenarios::bad_cmdline(ctx, &dir),
            "boot-secure" => scenarios::boot_secure(ctx, &dir).map(|(o, d)| {
                secure_disk = Some(d);
                o
            }),
            "tamper" => match &secure_disk {
                Some(d) => scenarios::tamper(ctx, &dir, d),
                None if !selected.contains(&"boot-secure") => {
                    // Run alone: make the secure disk first.
                    scenarios::boot_secure(ctx, &dir)
                        .and_then(|(_, d)| scenarios::tamper(ctx, &dir, &d))
                }
                None => Err(anyhow::anyhow!(
                    "boot-secure failed, so there is no secure disk to tamper with"
                )),
            },
            "upgrade" => scenarios::upgrade(ctx, &dir),
            "grub" => scenarios::grub(ctx, &dir),
            "bootcount" => scenarios::bootcount(ctx, &dir),
            n if uki::NAMES.contains(&n) => uki::run(ctx, n, &dir, &selected, &mut uki),
            "uki-grub" => uki::uki_grub(ctx, &dir),
            "soft" => soft::soft(ctx, &dir),
            _ => unreachable!(),
        };
        let secs = t.elapsed().as_secs_f64();
        let v = verdict(&r, in_ci());
        match &v {
            Verdict::Passed => println!("=== {name}: PASSED ({secs:.0} s)"),
            Verdict::Skipped(why) => println!("=== {name}: SKIP: {why} ({secs:.0} s)"),
            Verdict::Failed(why) => {
                let kept = scenarios::keep_artifacts(ctx, name, &dir)?;
                println!(
                    "=== {name}: FAILED ({secs:.0} s): {why}\n    console logs: {}",
                    kept.display()
                );
            }
        }
        // Keep the secure disk for tamper only while it is still to run.
        let keep = name == "boot-secure" && r.is_ok() && selected.contains(&"tamper");
        if !keep {
            scenarios::cleanup(&dir);
        }
        results.push((name.to_string(), v, secs));
    }
    let count = |f: fn(&Verdict) -> bool| results.iter().filter(|r| f(&r.1)).count();
    let passed = count(|v| matches!(v, Verdict::Passed));
    let skipped = count(|v| matches!(v, Verdict::Skipped(_)));
    let failed = count(|v| matches!(v, Verdict::Failed(_)));
    println!("--- VM scenarios");
    for (n, v, s) in &results {
        let what = match v {
            Verdict::Passed => "passed".to_string(),
            Verdict::Skipped(w) => format!("SKIP: {w}"),
            Verdict::Failed(w) => format!("FAILED: {w}"),
        };
        println!("  {n:<12} {s:>5.0} s  {what}");
    }
    println!("vm: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(failed == 0)
}

/// True under the project's CI (`CI=true`), where nothing may be skipped: the same rule
/// as test-fixtures' `skip::in_ci` for the host tests.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// How one scenario ended, for the report and the exit status.
#[derive(Debug, PartialEq)]
enum Verdict {
    Passed,
    /// Pending outside CI: printed as SKIP with its reason, does not fail the run.
    Skipped(String),
    Failed(String),
}

/// The one rule for a scenario that returned pending (it could not make all of its
/// assertions, e.g. the image's `bootc` lacks a verb): a SKIP with its reason locally,
/// a failure under CI, so that CI cannot pass with work skipped.
fn verdict(r: &Result<Outcome>, ci: bool) -> Verdict {
    match r {
        Ok(Outcome::Passed) => Verdict::Passed,
        Ok(Outcome::Pending(why)) if ci => {
            Verdict::Failed(format!("pending, which fails under CI=true: {why}"))
        }
        Ok(Outcome::Pending(why)) => Verdict::Skipped(why.clone()),
        Err(e) => Verdict::Failed(format!("{e:#}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_build = args.iter().any(|a| a == "--no-build");
    let rest: Vec<String> = args
        .iter()
        .filter(|a| *a != "--no-build")
        .cloned()
        .collect();
    let r = (|| -> Result<bool> {
        let ctx = ctx()?;
        match rest.first().map(String::as_str) {
            Some("run") => {
                let batch = rest.iter().any(|a| a == "--batch");
                let tag = rest
                    .iter()
                    .position(|a| a == "--tag")
                    .and_then(|i| rest.get(i + 1))
                    .map(String::as_str)
                    .unwrap_or("v1");
                if !no_build {
                    build_images(&ctx)?;
                }
                let insecure = rest.iter().any(|a| a == "--insecure");
                cmd_run(&ctx, batch, tag, insecure)?;
                Ok(true)
            }
            Some("scenarios") => {
                if !no_build {
                    build_images(&ctx)?;
                } else {
                    scenarios::check_bootc(&ctx.bootc)?;
                }
                cmd_scenarios(&ctx, &rest[1..])
            }
            Some("bench-boot") => {
                if !no_build {
                    build_images(&ctx)?;
                } else {
                    scenarios::check_bootc(&ctx.bootc)?;
                }
                let json = bench_boot::json_arg(&rest)?;
                bench_boot::bench_boot(&ctx, bench_boot::runs_arg(&rest)?, json.as_deref())?;
                Ok(true)
            }
            _ => bail!(
                "usage: bootc-vm [--no-build] run [--batch] [--insecure] [--tag v1|v2] | scenarios [NAME...] | bench-boot [--runs N] [--json FILE]"
            ),
        }
    })();
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bootc-vm: {e:#}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_skips_locally_and_fails_under_ci() {
        let pending = || Ok(Outcome::Pending("no `bootc status`".into()));
        assert_eq!(
            verdict(&pending(), false),
            Verdict::Skipped("no `bootc status`".into())
        );
        match verdict(&pending(), true) {
            Verdict::Failed(why) => assert!(why.contains("no `bootc status`"), "{why}"),
            v => panic!("pending under CI gave {v:?}"),
        }
        assert_eq!(verdict(&Ok(Outcome::Passed), true), Verdict::Passed);
        assert_eq!(
            verdict(&Err(anyhow::anyhow!("boom")), false),
            Verdict::Failed("boom".into())
        );
    }
}
