//! Boot counting (issue 12), on a real ext4 root installed by `bootc install
//! to-filesystem`, driven with `--sysroot`. What the boot loader and
//! `systemd-bless-boot` do between boots (count a try down, bless a good boot) is done
//! here by renaming the entry file exactly as they do (UAPI Boot Loader Specification:
//! `NAME+LEFT-DONE.conf`), so every reader of entries is exercised with real counters.

mod common;

use std::fs;
use std::path::PathBuf;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci;
use common::system::*;
use common::*;

fn install(loader: &str, extra: &[&str]) -> System {
    let mut args = vec!["--bootloader", loader];
    args.extend_from_slice(extra);
    // `stream` is the tag the system follows; the tests move it to v2.
    System::install_image(
        1 << 30,
        &[],
        "loop",
        |l| {
            oci::write_image(l, "stream", &images::bootable(1), &[]).unwrap();
        },
        "stream",
        &args,
    )
}

fn entry_file(s: &System, id: &str) -> PathBuf {
    let e = s.entry_of(id);
    s.root.join(format!(
        "boot/loader/entries/bootc_composefs-{id}{}.conf",
        e.counter.unwrap_or_default()
    ))
}

/// Renames `id`'s entry to carry `counter` ("" = blessed), as the loader or
/// systemd-bless-boot would.
fn set_counter(s: &System, id: &str, counter: &str) {
    let from = entry_file(s, id);
    let to = s.root.join(format!(
        "boot/loader/entries/bootc_composefs-{id}{counter}.conf"
    ));
    fs::rename(&from, &to).unwrap();
}

fn counting(st: &serde_json::Value, which: &str) -> serde_json::Value {
    st["status"][which]["composefs"]["bootCounting"].clone()
}

#[test]
fn new_deployments_are_counted_and_the_counter_survives_finalize() {
    if !can_run(&["bootctl"]) {
        return;
    }
    let _g = serial();
    let s = install("systemd", &[]);
    let v1 = s.v1.clone();
    assert_eq!(
        s.entry_of(&v1).counter,
        None,
        "the installed entry is not counted"
    );

    // Default: 3 tries, and the staged entry says so.
    s.bootc_ok(&v1, &["switch", &s.imgref("v2")]);
    let v2 = s.marker().unwrap();
    let staged = s.menu(true);
    assert_eq!(staged[0].counter.as_deref(), Some("+3"));
    assert_eq!(staged[1].counter, None, "v1 is never given a counter");
    let st = s.status(&v1);
    assert_eq!(
        counting(&st, "staged"),
        serde_json::json!({"triesLeft": 3, "triesDone": 0})
    );
    assert_eq!(counting(&st, "booted"), serde_json::Value::Null);

    // Between staging and finalize the loader's view of v1 changes (here: it gets a
    // counter, as if a try had been counted); the exchange keeps the current name.
    set_counter(&s, &v1, "+1-2");
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    assert_eq!(s.entry_of(&v1).counter.as_deref(), Some("+1-2"));
    assert_eq!(s.entry_of(&v2).counter.as_deref(), Some("+3"));

    // First boot of v2: the loader counts a try; then it is blessed.
    set_counter(&s, &v2, "+2-1");
    let st = s.status(&v2);
    assert_eq!(
        counting(&st, "booted"),
        serde_json::json!({"triesLeft": 2, "triesDone": 1})
    );
    assert_eq!(st["status"]["booted"]["composefs"]["failedBoot"], false);
    let human = s.bootc_ok(&v2, &["status"]);
    assert!(human.contains("2 left, 1 done"), "{human}");
    set_counter(&s, &v2, "");
    set_counter(&s, &v1, "");
    let st = s.status(&v2);
    assert_eq!(counting(&st, "booted"), serde_json::Value::Null);

    // --boot-tries 2 and 0; blessed entries stay blessed.
    s.bootc_ok(&v2, &["switch", &s.imgref("v3"), "--boot-tries", "2"]);
    let staged = s.menu(true);
    assert_eq!(staged[0].counter.as_deref(), Some("+2"));
    assert_eq!(staged[1].counter, None);
    s.bootc_ok(&v2, &["rollback"]);
    s.bootc_ok(&v2, &["switch", &s.imgref("v3"), "--boot-tries", "0"]);
    assert_eq!(s.menu(true)[0].counter, None, "--boot-tries 0: no counter");
}

#[test]
fn a_failed_deployment_falls_back_and_is_not_staged_again() {
    if !can_run(&["bootctl"]) {
        return;
    }
    let _g = serial();
    let s = install("systemd", &["--boot-tries", "2"]);
    let v1 = s.v1.clone();
    // The followed tag moves to v2; upgrade stages it with the install-time tries.
    oci::write_image(&s.layout, "stream", &images::bootable(2), &[]).unwrap();
    s.bootc_ok(&v1, &["upgrade"]);
    let v2 = s.marker().unwrap();
    assert_eq!(s.menu(true)[0].counter.as_deref(), Some("+2"));
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);

    // v2 never reached boot-complete.target twice: out of tries; the loader falls
    // back to v1, which is what bootc reads as the boot order too.
    set_counter(&s, &v2, "+0-2");
    assert_eq!(s.order(false), vec![v1.clone(), v2.clone()]);
    let st = s.status(&v1);
    assert_eq!(st["status"]["booted"]["composefs"]["verity"], v1);
    assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v2);
    assert_eq!(st["status"]["rollback"]["composefs"]["failedBoot"], true);
    assert_eq!(
        counting(&st, "rollback"),
        serde_json::json!({"triesLeft": 0, "triesDone": 2})
    );
    assert_eq!(st["status"]["rollbackQueued"], false);
    let human = s.bootc_ok(&v1, &["status"]);
    assert!(human.contains("Failed:"), "{human}");

    // upgrade (the timer) does not stage it again, says so, exits 0, changes nothing.
    let before = s.disk();
    let out = s.bootc_ok(&v1, &["upgrade"]);
    assert!(out.contains("failed to boot (2 tries)"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(s.disk(), before, "nothing written");
    assert_eq!(s.marker(), None);

    // Rolling back to it is refused: the loader would not boot it.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["rollback"]);
    assert!(err.contains("failed to boot (2 tries)"), "{err}");
    assert_eq!(s.disk(), before, "nothing written");

    // gc keeps it (it has an entry) and the booted one.
    s.bootc_ok(&v1, &["gc"]);
    assert!(s.root.join(format!("state/deploy/{v2}")).is_dir());

    // upgrade --force tries it again with fresh tries; its old entry is replaced.
    s.bootc_ok(&v1, &["upgrade", "--force"]);
    assert_eq!(s.marker().as_deref(), Some(v2.as_str()));
    let staged = s.menu(true);
    assert_eq!(
        staged
            .iter()
            .map(|e| (e.id.clone(), e.counter.clone()))
            .collect::<Vec<_>>(),
        vec![(v2.clone(), Some("+2".to_string())), (v1.clone(), None)]
    );
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    let names: Vec<String> = fs::read_dir(s.root.join("boot/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&v2))
        .collect();
    assert_eq!(names, vec![format!("bootc_composefs-{v2}+2.conf")]);
}

#[test]
fn grub_has_no_boot_counting_and_says_so() {
    if !can_run(&["grub-mkimage"]) {
        return;
    }
    let _g = serial();
    let s = install("grub", &[]);
    let v1 = s.v1.clone();
    let out = s.bootc(&v1, &["switch", &s.imgref("v2"), "--boot-tries", "2"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("boot counting is not available with grub"),
        "{err}"
    );
    let text = fs::read_to_string(s.root.join("boot/grub2/user.cfg.staged")).unwrap();
    assert!(!text.contains('+'), "{text}");
    let st = s.status(&v1);
    assert_eq!(counting(&st, "staged"), serde_json::Value::Null);
}
