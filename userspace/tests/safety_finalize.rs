//! Host tests of issue 8 items 4, 10 and 11: the same kargs.d checks on switch/upgrade
//! as at install, finalize checking every file the new default needs before the
//! exchange, and finalize telling the truth (and completing) after it is killed at any
//! step past the exchange. Each reproduces the defect on a real ext4 root installed by
//! `bootc install to-filesystem` and asserts the fixed behaviour, and that nothing on
//! disk changed where a refusal is expected.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::system::*;
use common::*;

/// The steps after the exchange, in order (`deploy::finalize::STEPS_AFTER_EXCHANGE`).
const STEPS: [&str; 5] = [
    "finalize.after-exchange",
    "finalize.after-old-set-removed",
    "finalize.after-gc",
    "finalize.after-failure-cleared",
    "finalize.after-marker-cleared",
];

/// `DeploymentId::short`: `sha256:`, 12 hex digits, `…`.
fn short(hex: &str) -> String {
    format!("sha256:{}…", &hex[..12])
}

fn failure_record(s: &System) -> Option<String> {
    fs::read_to_string(s.root.join("state/finalize-failure")).ok()
}

#[test]
fn item4_switch_and_upgrade_refuse_bad_kargs_d_like_install() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let sets_composefs = format!("kargs = [\"quiet\", \"composefs=sha256:{}\"]\n", v1);
    s.kargs_image("50-bad.toml", "sets-composefs", 2, &sets_composefs);
    s.kargs_image(
        "50-bad.toml",
        "sets-digest",
        2,
        "kargs = [\"composefs.digest=v1-sha256-12:00\"]\n",
    );
    s.kargs_image("50-bad.toml", "not-toml", 3, "kargs = [\"quiet\"\n");
    s.kargs_image("50-bad.toml", "wrong-shape", 3, "args = \"quiet\"\n");

    // Install refuses them (the check that already held) ...
    for (tag, what) in [
        ("sets-composefs", "bootc sets composefs= itself"),
        ("not-toml", "expected kargs = [\"…\"]"),
    ] {
        let other = s.t.path().join(format!("other-root-{tag}"));
        fs::create_dir_all(other.join("boot")).unwrap();
        let src = s.imgref(tag);
        let out = install_to_filesystem(&src, &other, &[]);
        assert!(!out.status.success(), "install of {tag} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(what), "{err}");
        assert!(err.contains("/usr/lib/bootc/kargs.d/50-bad.toml"), "{err}");
    }

    // ... and so do switch and upgrade now, before anything is written.
    let before = s.disk();
    for (tag, what) in [
        ("sets-composefs", "bootc sets composefs= itself"),
        ("sets-digest", "bootc sets composefs= itself"),
        ("not-toml", "expected kargs = [\"…\"]"),
        ("wrong-shape", "expected kargs = [\"…\"]"),
    ] {
        let r = s.imgref(tag);
        let err = s.bootc_err(&v1, &["switch", &r]);
        assert!(err.contains(what), "{tag}: {err}");
        assert!(
            err.contains("/usr/lib/bootc/kargs.d/50-bad.toml"),
            "{tag}: {err}"
        );
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{tag}: {err}");
        assert!(
            errors[0].contains(what),
            "{tag}: the error is one line: {err}"
        );
        assert_eq!(s.disk(), before, "{tag}: switch changed the disk");
        assert_eq!(s.marker(), None);
    }
    // Upgrade: the followed tag now carries the bad kargs.d.
    s.kargs_image("50-bad.toml", "v1", 2, &sets_composefs);
    let err = s.bootc_err(&v1, &["upgrade"]);
    assert!(err.contains("bootc sets composefs= itself"), "{err}");
    assert_eq!(s.disk(), before, "upgrade changed the disk");
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    assert_eq!(s.marker(), None);

    // A good kargs.d still stages.
    s.kargs_image("50-bad.toml", "good", 2, "kargs = [\"quiet\"]\n");
    let r = s.imgref("good");
    s.bootc_ok(&v1, &["switch", &r]);
    assert!(s.marker().is_some());
}

#[test]
fn item10_finalize_checks_every_file_the_new_default_needs() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let r = s.imgref("v2");
    s.bootc_ok(&v1, &["switch", &r]);
    let v2 = s.marker().unwrap();
    let entry = s.entry_path(&v2, true);
    let good = fs::read_to_string(&entry).unwrap();

    let refused = |what: &str| {
        let before = s.disk();
        let err = s.bootc_err(&v1, &["composefs-finalize-staged"]);
        assert!(err.contains(what), "{err}");
        let stays = format!("{} stays the default", short(&v1));
        let record = failure_record(&s).expect("failure recorded");
        assert!(record.contains(what) && record.contains(&stays), "{record}");
        // Nothing else changed: the old default stays, v2's /etc is not merged into,
        // the staged set and the marker wait for a fixed retry.
        let mut after = s.disk();
        after.remove("state/finalize-failure");
        let mut before = before;
        before.remove("state/finalize-failure");
        assert_eq!(after, before);
        assert_eq!(s.order(false), vec![v1.clone()]);
        assert_eq!(s.marker().as_deref(), Some(v2.as_str()));
    };

    // A kernel path that is wrong.
    let linux = good.lines().find_map(|l| l.strip_prefix("linux ")).unwrap();
    let initrd = good
        .lines()
        .find_map(|l| l.strip_prefix("initrd "))
        .unwrap();
    fs::write(
        &entry,
        good.replace(
            &format!("linux {linux}\n"),
            &format!("linux {linux}-wrong\n"),
        ),
    )
    .unwrap();
    refused(&format!(
        "boots {linux}-wrong, which is missing on the boot partition"
    ));
    // An initrd path that names a directory.
    let dir = initrd.rsplit_once('/').unwrap().0;
    fs::write(
        &entry,
        good.replace(&format!("initrd {initrd}\n"), &format!("initrd {dir}\n")),
    )
    .unwrap();
    refused(&format!(
        "boots {dir}, which is not a regular file on the boot partition"
    ));
    fs::write(&entry, &good).unwrap();

    // The EROFS image is gone.
    let image = s.root.join(format!("composefs/images/{v2}"));
    let aside = s.root.join("composefs/image-aside");
    fs::rename(&image, &aside).unwrap();
    refused(&format!("image composefs/images/{v2} is missing"));
    fs::rename(&aside, &image).unwrap();

    // The deployment's /etc is gone.
    let etc = s.etc(&v2);
    let aside = s.root.join("state/etc-aside");
    fs::rename(&etc, &aside).unwrap();
    refused(&format!("state/deploy/{v2}/etc is missing"));
    fs::rename(&aside, &etc).unwrap();

    // Everything in place: finalize succeeds and clears the record.
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("Finalized"), "{out}");
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    assert_eq!(failure_record(&s), None);
}

/// Stages v2 on a fresh v1 system and runs finalize with the fault hook at `step`;
/// checks it really died there.
fn killed_at(step: &str) -> (System, String) {
    let s = System::install();
    let v1 = s.v1.clone();
    let r = s.imgref("v2");
    s.bootc_ok(&v1, &["switch", &r]);
    let v2 = s.marker().unwrap();
    let out = s.bootc_env(
        &v1,
        &["composefs-finalize-staged"],
        &[(bootc::sys::fault::ENV, step)],
    );
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "finalize must abort at {step}: {:?}",
        out.status
    );
    // The exchange happened: the entries boot v2 first.
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()], "{step}");
    (s, v2)
}

/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;

#[test]
fn item11_finalize_killed_after_the_exchange_completes_on_rerun() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    for step in STEPS {
        let (s, v2) = killed_at(step);
        let v1 = s.v1.clone();

        // Status tells the truth before the re-run: v2 boots next and is not "staged".
        let st = s.status(&v1);
        assert!(st["status"]["staged"].is_null(), "{step}: {st}");
        assert!(st["status"]["finalizeFailure"].is_null(), "{step}: {st}");
        assert_eq!(st["status"]["booted"]["composefs"]["verity"], v1.as_str());
        assert_eq!(
            st["status"]["rollback"]["composefs"]["verity"],
            v2.as_str(),
            "{step}: {st}"
        );

        // The re-run completes.
        let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
        if step == "finalize.after-marker-cleared" {
            assert!(out.contains("No staged deployment."), "{step}: {out}");
        } else {
            assert!(
                out.contains(&format!(
                    "Completed the interrupted finalize of {}",
                    short(&v2)
                )),
                "{step}: {out}"
            );
        }
        assert_eq!(s.marker(), None, "{step}");
        assert!(
            !s.root.join("boot/loader/entries.staged").exists(),
            "{step}"
        );
        assert_eq!(failure_record(&s), None, "{step}");
        assert_eq!(s.order(false), vec![v2.clone(), v1.clone()], "{step}");
        assert_eq!(s.status(&v1), st, "{step}: status after the re-run");
        // The merge ran once, before the exchange: v2's /etc has the image's content.
        assert!(s.etc(&v2).join("new-in-v2.conf").exists(), "{step}");

        // Rollback afterwards is a normal rollback.
        let out = s.bootc_ok(&v1, &["rollback"]);
        assert!(!out.contains("Discarded"), "{step}: {out}");
        assert!(
            out.contains(&format!("Next boot: {}", short(&v1))),
            "{step}: {out}"
        );
        assert_eq!(s.order(false), vec![v1.clone(), v2.clone()], "{step}");
    }
}

#[test]
fn item11_rollback_after_an_interrupted_finalize_never_discards_the_default() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let (s, v2) = killed_at(STEPS[0]);
    let v1 = s.v1.clone();
    // The old set is still under the staged name and the marker names v2.
    assert_eq!(s.order(true), vec![v1.clone()]);
    assert_eq!(s.marker().as_deref(), Some(v2.as_str()));

    let out = s.bootc_ok(&v1, &["rollback"]);
    assert!(!out.contains("Discarded"), "{out}");
    assert!(out.contains(&format!("Next boot: {}", short(&v1))), "{out}");
    assert_eq!(s.order(false), vec![v1.clone(), v2.clone()]);
    assert_eq!(s.marker(), None);
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    // Twice is the identity: v2 (already finalized) is the default again.
    s.bootc_ok(&v1, &["rollback"]);
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("No staged deployment."), "{out}");
}

#[test]
fn item11_an_error_after_the_exchange_names_the_real_default() {
    if !can_run(&["chattr"]) {
        return;
    }
    let _g = serial();
    let (s, v2) = killed_at(STEPS[0]);
    let v1 = s.v1.clone();
    // The old set cannot be removed (an I/O error after the exchange).
    let old = s.entry_path(&v1, true);
    run(Command::new("chattr").arg("+i").arg(&old));
    let out = s.bootc(&v1, &["composefs-finalize-staged"]);
    run(Command::new("chattr").arg("-i").arg(&old));
    assert!(!out.status.success());
    let record = failure_record(&s).expect("failure recorded");
    assert!(
        record.contains(&format!(
            "finalizing {} did not complete, but it is already the default for the next boot",
            short(&v2)
        )),
        "{record}"
    );
    assert!(!record.contains("stays the default"), "{record}");
    let st = s.status(&v1);
    assert!(st["status"]["staged"].is_null(), "{st}");
    assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v2.as_str());
    assert!(st["status"]["finalizeFailure"]
        .as_str()
        .unwrap()
        .contains("already the default"));

    // Once the error is gone, the re-run completes and clears the record.
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("Completed the interrupted finalize"), "{out}");
    assert_eq!(failure_record(&s), None);
    assert_eq!(s.marker(), None);
    assert!(!s.root.join("boot/loader/entries.staged").exists());
}

#[test]
fn item11_a_stale_marker_is_not_a_staged_update() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let r = s.imgref("v2");
    s.bootc_ok(&v1, &["switch", &r]);
    let v2 = s.marker().unwrap();
    // The staged set is gone but the marker stayed (e.g. a rollback killed between the
    // two): v2 is neither staged nor the default.
    fs::remove_dir_all(s.root.join("boot/loader/entries.staged")).unwrap();
    let st = s.status(&v1);
    assert!(st["status"]["staged"].is_null(), "{st}");
    let before = s.disk();
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(
        out.contains(&format!("the stale marker for {} was removed", short(&v2))),
        "{out}"
    );
    assert_eq!(s.marker(), None);
    assert_eq!(failure_record(&s), None, "no false failure recorded");
    let mut after = s.disk();
    after.retain(|k, _| !k.starts_with("run/"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with("run/"));
    assert_eq!(after, before, "only the marker went");
    assert_eq!(s.order(false), vec![v1]);
}
