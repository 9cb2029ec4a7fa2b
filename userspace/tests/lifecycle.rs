//! Host integration tests of the day-2 verbs (upgrade, switch, finalize with the /etc
//! merge, rollback, status, gc, locking), as root, on a real ext4 root installed by
//! `bootc install to-filesystem`, driven with `--sysroot DIR --booted-deployment ID`
//! instead of reboots. The boot partition is a plain directory here (this host's kernel
//! may lack vfat); the entry-set swap is the same `renameat2(RENAME_EXCHANGE)`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci;
use common::system::*;
use common::*;

#[test]
fn upgrade_finalize_merge_rollback_status() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    assert_eq!(s.order(false), vec![v1.clone()]);

    // Upgrade with nothing new: says so, changes nothing.
    let before = file_snapshot(&s.root.join("boot/loader/entries"));
    let out = s.bootc_ok(&v1, &["upgrade"]);
    assert!(out.contains("No update available"), "{out}");
    assert_eq!(file_snapshot(&s.root.join("boot/loader/entries")), before);
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    let out = s.bootc_ok(&v1, &["upgrade", "--check"]);
    assert!(out.contains("No update available"), "{out}");

    // Local changes to the live /etc (the booted deployment's state), one per rule.
    let etc = s.etc(&v1);
    fs::write(etc.join("local-added.conf"), "mine\n").unwrap();
    fs::write(etc.join("hostname"), "edited-locally\n").unwrap();
    fs::set_permissions(
        etc.join("conf.d/keep.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(etc.join("shadow"), Some(1234), Some(42)).unwrap();
    fs::remove_file(etc.join("localtime")).unwrap();
    symlink("../usr/share/zoneinfo/Europe/Paris", etc.join("localtime")).unwrap();
    fs::remove_file(etc.join("os-release")).unwrap();
    fs::create_dir(etc.join("local.d")).unwrap();
    fs::write(etc.join("local.d/x.conf"), "x\n").unwrap();

    // --check sees the update and what it would cost.
    let out = s.bootc_ok(&v1, &["switch", "--help"]);
    assert!(out.contains("IMGREF"));
    let r2 = s.imgref("v2");
    let out = s.bootc_ok(&v1, &["switch", &r2]);
    assert!(out.contains("Staged deployment"), "{out}");
    let v2 = s.marker().expect("marker names the staged deployment");
    assert_ne!(v2, v1);
    // Staged: the new set waits in entries.staged; the booted set is untouched.
    assert_eq!(s.order(true), vec![v2.clone(), v1.clone()]);
    assert_eq!(s.order(false), vec![v1.clone()]);
    assert!(s
        .root
        .join("state/deploy")
        .join(&v2)
        .join(format!("{v2}.origin"))
        .exists());
    let staged_entry = fs::read_to_string(s.entry_path(&v2, true)).unwrap();
    assert!(
        staged_entry.contains(&format!("composefs=?sha256:{v2}")),
        "{staged_entry}"
    );
    assert!(
        staged_entry.contains("sort-key bootc-000"),
        "{staged_entry}"
    );
    assert!(
        staged_entry.contains("title Bootc Test OS v2"),
        "{staged_entry}"
    );
    let st = s.status(&v1);
    assert_eq!(st["status"]["staged"]["composefs"]["verity"], v2.as_str());
    assert_eq!(st["status"]["booted"]["composefs"]["verity"], v1.as_str());
    assert_eq!(
        st["status"]["booted"]["composefs"]["missingVerityAllowed"],
        true
    );

    // Finalize: the merged /etc is exactly: v2's /etc with every local change carried.
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("Finalized"), "{out}");
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    assert_eq!(s.marker(), None);
    let merged = snapshot(&s.etc(&v2));
    let expected: BTreeMap<String, String> = [
        ("conf.d", "d 755 0 0"),
        ("conf.d/keep.conf", "f 600 0 0 keep=1\n"),
        ("default.conf", "f 644 0 0 setting=v2\n"),
        ("hostname", "f 644 0 0 edited-locally\n"),
        ("local-added.conf", "f 644 0 0 mine\n"),
        ("local.d", "d 755 0 0"),
        ("local.d/x.conf", "f 644 0 0 x\n"),
        ("localtime", "l ../usr/share/zoneinfo/Europe/Paris"),
        ("new-in-v2.conf", "f 644 0 0 new=1\n"),
        ("shadow", "f 600 1234 42 root:*:19000:0:99999:7:::\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(merged, expected);

    // "Reboot" into v2.
    let st = s.status(&v2);
    assert_eq!(st["status"]["booted"]["composefs"]["verity"], v2.as_str());
    assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v1.as_str());
    assert_eq!(st["status"]["rollbackQueued"], false);
    assert!(st["status"]["booted"]["image"]["image"]["image"]
        .as_str()
        .unwrap()
        .ends_with(":v2"));
    assert!(st["status"]["booted"]["image"]["imageDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(st["spec"]["image"]["transport"], "oci");

    // Switching to what is booted is no change (as upstream: exit 0, tests/upstream.rs).
    let out = s.bootc_ok(&v2, &["switch", &r2]);
    assert!(out.contains("Image specification is unchanged."), "{out}");

    // Rollback twice is the identity.
    let entries = s.root.join("boot/loader/entries");
    let before = file_snapshot(&entries);
    let out = s.bootc_ok(&v2, &["rollback"]);
    assert!(out.contains(&v1[..12]), "{out}");
    assert_eq!(s.order(false), vec![v1.clone(), v2.clone()]);
    let st = s.status(&v2);
    assert_eq!(st["status"]["rollbackQueued"], true);
    assert_eq!(st["spec"]["bootOrder"], "rollback");
    s.bootc_ok(&v2, &["rollback"]);
    assert_eq!(file_snapshot(&entries), before);

    // Human and YAML forms.
    let human = s.bootc_ok(&v2, &["status", "--format", "human"]);
    assert!(human.contains("● Booted image: oci:"), "{human}");
    assert!(human.contains("Rollback image"), "{human}");
    let yaml = s.bootc_ok(&v2, &["status", "--format", "yaml"]);
    assert!(
        yaml.contains("apiVersion: org.containers.bootc/v1"),
        "{yaml}"
    );
    let booted_only: serde_json::Value =
        serde_json::from_str(&s.bootc_ok(&v2, &["status", "--json", "--booted"])).unwrap();
    assert!(booted_only["status"]["rollback"].is_null());
}

#[test]
fn conflicts_are_refused_and_leave_the_old_default() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let etc = s.etc(&v1);
    let r2 = s.imgref("v2");

    // default.conf changes upstream in v2; locally it became a directory: a conflict
    // found before anything is staged.
    fs::remove_file(etc.join("default.conf")).unwrap();
    fs::create_dir(etc.join("default.conf")).unwrap();
    let err = s.bootc_err(&v1, &["switch", &r2]);
    assert!(
        err.contains("conflict") && err.contains("default.conf"),
        "{err}"
    );
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    assert_eq!(s.marker(), None);
    assert_eq!(
        fs::read_dir(s.root.join("state/deploy"))
            .unwrap()
            .filter(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        1
    );

    // Staged without a conflict; the conflict appears before shutdown: finalize
    // refuses, the old entries stay, and status says why.
    fs::remove_dir(etc.join("default.conf")).unwrap();
    fs::write(etc.join("default.conf"), "setting=v1\n").unwrap();
    s.bootc_ok(&v1, &["switch", &r2]);
    let v2 = s.marker().unwrap();
    fs::remove_file(etc.join("default.conf")).unwrap();
    fs::create_dir(etc.join("default.conf")).unwrap();
    let entries_before = file_snapshot(&s.root.join("boot/loader/entries"));
    let err = s.bootc_err(&v1, &["composefs-finalize-staged"]);
    assert!(err.contains("default.conf"), "{err}");
    assert_eq!(
        file_snapshot(&s.root.join("boot/loader/entries")),
        entries_before
    );
    assert_eq!(s.order(false), vec![v1.clone()]);
    let st = s.status(&v1);
    let failure = st["status"]["finalizeFailure"]
        .as_str()
        .expect("status shows the failure");
    assert!(
        failure.contains("default.conf") && failure.contains(&v2[..12]),
        "{failure}"
    );
    assert!(s
        .bootc_ok(&v1, &["status", "--format", "human"])
        .contains("was not applied"));
}

#[test]
fn gc_keeps_exactly_what_live_deployments_need() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    // The second upgrade keeps one previous deployment: v1 falls out and finalize's GC
    // removes it.
    let v3 = s.switch_and_finalize(&v2, "v3", &["--keep-previous", "1"]);
    assert_eq!(s.order(false), vec![v3.clone(), v2.clone()]);
    let deployments: BTreeSet<String> = fs::read_dir(s.root.join("state/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(deployments, [v2.clone(), v3.clone()].into_iter().collect());
    // The shared kernel directory is kept (v2 and v3 boot from v1's copy), nothing else.
    for id in [&v2, &v3] {
        let e = fs::read_to_string(s.entry_path(id, false)).unwrap();
        let dir = e
            .lines()
            .find_map(|l| l.strip_prefix("linux /"))
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(s.root.join("boot").join(&dir).join("vmlinuz").exists());
    }

    // Compare object sets with a fresh repository holding only v2 and v3.
    let fresh = s.t.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    let fresh_fd = rustix::fs::open(
        &fresh,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let repo = bootc::repo::init::<composefs::fsverity::Sha256HashValue>(&fresh_fd, false).unwrap();
    for tag in ["v2", "v3"] {
        let r = bootc::imgref::ImageReference::parse(&s.imgref(tag)).unwrap();
        bootc::repo::pull(&repo, &r, &Default::default()).unwrap();
    }
    // A pull rewrites metadata streams and leaves the old ones for the next GC.
    repo.gc(&[]).unwrap();
    drop(repo);
    // Every object, except the OCI manifest and config records: composefs-oci 0.9.4
    // rewrites those with their references in no fixed order, so their digests differ
    // between two repositories holding the same images.
    let objects = |root: &Path| -> BTreeSet<String> {
        let repo = root.join("composefs");
        let mut metadata = BTreeSet::new();
        for e in fs::read_dir(repo.join("streams")).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("oci-manifest-") || name.starts_with("oci-config-") {
                let target = fs::canonicalize(e.path()).unwrap();
                let rel = target
                    .strip_prefix(fs::canonicalize(repo.join("objects")).unwrap())
                    .unwrap();
                metadata.insert(rel.to_string_lossy().into_owned());
            }
        }
        assert!(
            !metadata.is_empty(),
            "no OCI metadata streams found under {}",
            repo.display()
        );
        let mut out = BTreeSet::new();
        for d in fs::read_dir(repo.join("objects")).unwrap() {
            let d = d.unwrap();
            if d.file_type().unwrap().is_dir() && d.file_name().len() == 2 {
                for f in fs::read_dir(d.path()).unwrap() {
                    let o = format!(
                        "{}/{}",
                        d.file_name().to_string_lossy(),
                        f.unwrap().file_name().to_string_lossy()
                    );
                    if !metadata.contains(&o) {
                        out.insert(o);
                    }
                }
            }
        }
        out
    };
    let count = |root: &Path| {
        bootc::repo::count_objects(
            rustix::fs::open(
                root,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        count(&s.root),
        count(&fresh),
        "same number of objects, metadata included"
    );
    assert_eq!(objects(&s.root), objects(&fresh));

    // Nothing more to collect; a dry run says so and removes nothing.
    let out = s.bootc_ok(&v3, &["gc", "--dry-run"]);
    assert!(out.contains("0 deployments"), "{out}");
    let out = s.bootc_ok(&v3, &["gc"]);
    assert!(
        out.contains("Removed: 0 deployments, 0 boot directories, 0 tags, 0 objects"),
        "{out}"
    );
    assert_eq!(objects(&s.root), objects(&fresh));
}

#[test]
fn a_second_writer_is_refused_and_status_survives_damage() {
    if !can_run(&["flock"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let lock = s.root.join("state/bootc.lock");

    // Another writer holds the lock (flock(1) stands in for a long-running bootc and
    // writes a pid the way bootc does). We wait for its "ready", not for a time.
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args([
            "sh",
            "-c",
            "echo 4242 > \"$0\"; echo ready; read _",
            lock.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let err = s.bootc_err(&v1, &["switch", &s.imgref("v2")]);
    assert!(err.contains("another bootc is running (pid 4242)"), "{err}");
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    holder.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.wait().unwrap().success());

    // Two at once: whatever the interleaving, at most one stages and the result is a
    // consistent staged set.
    let r2 = s.imgref("v2");
    let args = |s: &System| -> Vec<String> {
        vec![
            "--sysroot".into(),
            s.root.display().to_string(),
            "--run-dir".into(),
            s.t.path().join("run").display().to_string(),
            "--booted-deployment".into(),
            format!("sha256:{v1}"),
            "switch".into(),
            r2.clone(),
        ]
    };
    let a = Command::new(BOOTC)
        .args(args(&s))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = Command::new(BOOTC)
        .args(args(&s))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{a:?} {b:?}");
    for o in [&a, &b] {
        if !o.status.success() {
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(
                e.contains("another bootc is running") || e.contains("already deployed"),
                "{e}"
            );
        }
    }
    let v2 = s.marker().unwrap();
    assert_eq!(s.order(true), vec![v2.clone(), v1.clone()]);

    // Status survives a corrupt origin, junk in the loader directory, no /run/composefs.
    fs::write(
        s.root
            .join("state/deploy")
            .join(&v1)
            .join(format!("{v1}.origin")),
        "this is not ini [\n",
    )
    .unwrap();
    fs::write(s.root.join("boot/loader/entries/junk.conf"), "nonsense\n").unwrap();
    fs::remove_dir_all(s.t.path().join("run/composefs")).unwrap();
    let st = s.status(&v1);
    assert_eq!(st["status"]["booted"]["incompatible"], true);
    assert!(st["status"]["booted"]["image"].is_null());
    // Without the marker (as after a reboot) the staged set is stale: nothing is staged.
    assert!(st["status"]["staged"].is_null(), "{st}");
}

#[test]
fn not_booted_from_composefs_is_a_clear_error() {
    // This host was not booted with composefs= (the VM tests cover the booted case).
    if std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .contains("composefs")
    {
        bootc_test_fixtures::skip::skip(
            "this host was booted with composefs= on its kernel command line",
        );
        return;
    }
    let out = bootc(&["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not booted from a composefs deployment"),
        "{err}"
    );
    let out = bootc(&["upgrade"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not booted from a composefs deployment"));

    // With an OSTree-backend bootc installed, the verb is handed over to it, arguments
    // and all.
    let t = tempdir("bootc-handover-");
    let fake = t.path().join("bootc-ostree");
    fs::write(&fake, "#!/bin/sh\necho \"ostree bootc: $*\"\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BOOTC)
        .args(["status", "--format", "json"])
        .env("BOOTC_OSTREE_BIN", &fake)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ostree bootc: status --format json\n"
    );
}

#[test]
fn upgrade_follows_the_tag_and_rollback_discards_a_staged_update() {
    if !can_run(&["skopeo"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();

    // A new image is published under the followed tag.
    oci::write_image(&s.layout, "v1", &images::bootable(2), &[]).unwrap();
    let out = s.bootc_ok(&v1, &["upgrade", "--check"]);
    assert!(out.contains("Update available"), "{out}");
    // Only the small top layer is new; the 20 MB base layer is already stored.
    let field = |name: &str| -> u64 {
        out.split(name)
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (download, stored) = (field(" bytes to download"), field(" bytes already stored"));
    assert!(download > 0 && download < 1 << 20, "{out}");
    assert!(stored > images::BIG_FILE_SIZE as u64, "{out}");
    assert!(out.contains("1 of 2 layers"), "{out}");
    assert!(
        !s.root.join("boot/loader/entries.staged").exists(),
        "--check changes nothing"
    );

    // --download-only stages it locked (cli_compat.rs covers the lock); a plain
    // upgrade stages it again, unlocked.
    let out = s.bootc_ok(&v1, &["upgrade", "--download-only"]);
    assert!(out.contains("(download-only)"), "{out}");

    let out = s.bootc_ok(&v1, &["upgrade"]);
    assert!(out.contains("Staged deployment"), "{out}");
    let v2 = s.marker().unwrap();
    let origin = fs::read_to_string(
        s.root
            .join("state/deploy")
            .join(&v2)
            .join(format!("{v2}.origin")),
    )
    .unwrap();
    assert!(
        origin.contains(&format!(
            "container-image-reference=ostree-unverified-image:oci:{}:v1",
            s.layout.display()
        )),
        "{origin}"
    );

    // Rolling back with an update staged discards it and keeps v1 the default.
    let out = s.bootc_ok(&v1, &["rollback"]);
    assert!(out.contains("Discarded the staged deployment"), "{out}");
    assert_eq!(s.marker(), None);
    assert!(!s.root.join("boot/loader/entries.staged").exists());
    // Only one entry: there is nothing to roll back to, and it says so.
    let err = s.bootc_err(&v1, &["rollback"]);
    assert!(err.contains("no previous deployment"), "{err}");
    assert_eq!(s.order(false), vec![v1.clone()]);
}
