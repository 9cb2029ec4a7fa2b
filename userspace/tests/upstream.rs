//! Upstream bootc's own expectations (its tmt scenarios and the unit tests of its
//! kargs, composefs status and gc code), ported as host tests: each test's doc comment
//! names the upstream behaviour it checks, so a change that drifts from upstream fails
//! here first. Everything runs on a real ext4 root installed by
//! `bootc install to-filesystem` (tests/common/system.rs), with real OCI layouts.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Layer};
use common::system::*;
use common::*;

/// upstream: kargs.d files are parsed strictly (`deny_unknown_fields`): an unknown key
/// such as the typo `match-architecture` is an error naming the file and the key, at
/// install and on every upgrade/switch, and nothing is written.
#[test]
fn kargs_d_unknown_key_is_refused_naming_file_and_key() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let typo = "kargs = [\"quiet\"]\nmatch-architecture = [\"x86_64\"]\n";
    s.kargs_image("50-x.toml", "typo", 2, typo);
    let want = |err: &str| {
        assert!(
            err.contains("/usr/lib/bootc/kargs.d/50-x.toml: unknown key `match-architecture`"),
            "{err}"
        );
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "one line: {err}");
    };

    // Install.
    let other = s.t.path().join("other-root");
    fs::create_dir_all(other.join("boot")).unwrap();
    let src = s.imgref("typo");
    let out = install_to_filesystem(&src, &other, &[]);
    assert!(!out.status.success(), "install must refuse");
    want(&String::from_utf8_lossy(&out.stderr));

    // Switch, then upgrade once the followed tag carries the typo.
    let before = s.disk();
    want(&s.bootc_err(&v1, &["switch", &src]));
    assert_eq!(s.disk(), before, "switch changed the disk");
    s.kargs_image("50-x.toml", "v1", 2, typo);
    want(&s.bootc_err(&v1, &["upgrade"]));
    assert_eq!(s.disk(), before, "upgrade changed the disk");
    assert_eq!(s.marker(), None);
}

/// `v<version>` plus one layer holding `mib` MiB of incompressible bytes (`seed`).
fn big_layers(version: u32, mib: usize, seed: u64) -> Vec<Layer> {
    let mut layers = images::bootable(version);
    layers.push(Layer::new().dir("usr/share", 0o755).file(
        &format!("usr/share/big-{seed}"),
        images::pseudo_random(mib << 20, seed),
        0o644,
    ));
    layers
}

/// Free bytes of the filesystem holding `dir` (for an unprivileged writer, as bootc
/// counts them).
fn free_bytes(dir: &Path) -> u64 {
    let out = stdout(Command::new("stat").args(["-f", "-c", "%a %S"]).arg(dir));
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[0] * v[1]
}

/// Leaves about `mib` MiB free on the filesystem holding `dir` with one allocated file.
fn leave_free(dir: &Path, mib: u64) -> std::path::PathBuf {
    let fill = dir.join("filler");
    let len = free_bytes(dir) - (mib << 20);
    run(Command::new("fallocate")
        .args(["-l", &len.to_string()])
        .arg(&fill));
    fill
}

/// `Insufficient free space: need N MiB, have M MiB` → (N, M).
fn space_error(err: &str) -> (u64, u64) {
    let line = err
        .lines()
        .find(|l| l.contains("Insufficient free space"))
        .unwrap_or_else(|| panic!("no free-space refusal: {err}"));
    let rest = line.split("Insufficient free space: need ").nth(1).unwrap();
    let (need, rest) = rest.split_once(" MiB, have ").expect(line);
    let have = rest.strip_suffix(" MiB").expect(line);
    (need.parse().unwrap(), have.parse().unwrap())
}

/// upstream: before pulling, bootc compares the bytes of the layers it must fetch with
/// the free space of the physical root and refuses early with "Insufficient free
/// space: need N MiB, have M MiB", writing nothing; layers already stored count zero.
/// Checked at install (a small real ext4) and at switch and upgrade.
#[test]
fn pull_refuses_early_without_free_space() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    oci::write_image(&s.layout, "big", &big_layers(2, 48, 7), &[]).unwrap();

    // Install onto a 32 MiB ext4: refused before the pull, the root left as it was.
    let img = s.t.path().join("small.img");
    disk_image(&img, 32 << 20);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(&img));
    let small = s.t.path().join("small");
    fs::create_dir(&small).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&small));
    fs::create_dir(small.join("boot")).unwrap();
    let before = snapshot(&small);
    let src = s.imgref("big");
    let out = install_to_filesystem(&src, &small, &[]);
    let after = snapshot(&small);
    run(Command::new("umount").arg(&small));
    assert!(!out.status.success(), "install must refuse");
    let (need, have) = space_error(&String::from_utf8_lossy(&out.stderr));
    assert!(need >= 48 && have < 32, "need {need}, have {have}");
    assert_eq!(after, before, "install left something behind");

    // Switch with 16 MiB free: refused, nothing written (not even to the repository).
    let fill = leave_free(&s.root, 16);
    let before = (s.disk(), snapshot(&s.root.join("composefs")));
    let err = s.bootc_err(&v1, &["switch", &src]);
    let (need, have) = space_error(&err);
    assert!(
        need >= 48 && (15..=16).contains(&have),
        "need {need}, have {have}"
    );
    assert_eq!(
        (s.disk(), snapshot(&s.root.join("composefs"))),
        before,
        "switch wrote something"
    );
    // Upgrade too, once the followed tag points at the big image.
    oci::write_image(&s.layout, "v1", &big_layers(2, 48, 7), &[]).unwrap();
    space_error(&s.bootc_err(&v1, &["upgrade"]));
    assert_eq!(s.disk(), before.0, "upgrade wrote something");

    // With room it pulls; then an image sharing the big layer needs only its new one.
    fs::remove_file(&fill).unwrap();
    s.bootc_ok(&v1, &["switch", &src]);
    let mut layers = big_layers(2, 48, 7);
    layers.push(Layer::new().file("usr/share/small", "x", 0o644));
    oci::write_image(&s.layout, "big-plus", &layers, &[]).unwrap();
    let fill = leave_free(&s.root, 16);
    s.bootc_ok(&v1, &["switch", &s.imgref("big-plus")]);
    fs::remove_file(&fill).unwrap();
}

/// upstream: `bootc switch` to the image already deployed (the same reference, the
/// booted digest) prints "Image specification is unchanged." and exits 0, writing
/// nothing; a different reference to the same digest stays refused.
#[test]
fn switch_to_the_booted_image_is_unchanged() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let before = s.disk();
    let out = s.bootc_ok(&v1, &["switch", &s.imgref("v1")]);
    assert_eq!(out.trim(), "Image specification is unchanged.");
    assert_eq!(s.disk(), before, "an unchanged switch wrote something");
    assert_eq!(s.marker(), None);

    // Another tag naming the same image: not the followed reference, still refused.
    oci::write_image(&s.layout, "v1-again", &images::bootable(1), &[]).unwrap();
    let err = s.bootc_err(&v1, &["switch", &s.imgref("v1-again")]);
    assert!(err.contains("is the booted deployment"), "{err}");
    assert_eq!(s.disk(), before);
    assert_eq!(s.marker(), None);
}

/// The image reference a deployment's origin follows.
fn origin_ref(s: &System, id: &str) -> String {
    let text = fs::read_to_string(s.root.join(format!("state/deploy/{id}/{id}.origin"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("container-image-reference="))
        .unwrap()
        .to_string()
}

/// upstream: `bootc upgrade --tag TAG` upgrades to another tag of the same image
/// reference (the origin's reference with the tag replaced), and the origin follows
/// the new tag from then on; `--check --tag` asks about that tag.
#[test]
fn upgrade_tag_follows_another_tag_of_the_same_image() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let before = s.disk();
    let err = s.bootc_err(&v1, &["upgrade", "--tag", "a/b"]);
    assert!(err.contains("\"a/b\" is not an image tag"), "{err}");
    assert_eq!(s.disk(), before);

    let out = s.bootc_ok(&v1, &["upgrade", "--check", "--tag", "v2"]);
    assert!(out.starts_with("Update available:"), "{out}");
    assert!(out.contains(&s.imgref("v2")), "{out}");

    s.bootc_ok(&v1, &["upgrade", "--tag", "v2"]);
    let v2 = s.marker().expect("staged");
    assert_eq!(
        origin_ref(&s, &v2),
        format!("ostree-unverified-image:{}", s.imgref("v2"))
    );
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert_eq!(s.order(false)[0], v2);

    // Booted v2, a plain upgrade follows v2 (now pointing at v3's content), not v1.
    oci::write_image(&s.layout, "v2", &images::bootable(3), &[]).unwrap();
    s.bootc_ok(&v2, &["upgrade"]);
    let v3 = s.marker().expect("staged");
    assert_ne!(v3, v2);
    assert_ne!(v3, v1);
    assert_eq!(origin_ref(&s, &v3), origin_ref(&s, &v2));
}

/// upstream: status skips a boot entry named like bootc's whose deployment has no state
/// on disk, with a warning, instead of showing it as the rollback with `image: null`.
#[test]
fn status_skips_an_entry_without_deployment_state() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let entries = s.root.join("boot/loader/entries");
    let ghost = "ab".repeat(32);
    let text = fs::read_to_string(entries.join(format!("bootc_composefs-{v1}.conf"))).unwrap();
    let text = text
        .replace(&v1, &ghost)
        .replace("sort-key bootc-000", "sort-key bootc-001");
    fs::write(entries.join(format!("bootc_composefs-{ghost}.conf")), text).unwrap();

    let out = s.bootc(&v1, &["status", "--format", "json"]);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    validate(&st);
    assert_eq!(st["status"]["rollback"], serde_json::Value::Null, "{st}");
    assert_eq!(
        st["status"]["otherDeployments"],
        serde_json::json!([]),
        "{st}"
    );
    assert_eq!(st["status"]["booted"]["composefs"]["verity"], v1.as_str());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bootc_composefs-{ghost} in loader/entries"))
            && err.contains("has no state on disk"),
        "{err}"
    );

    // A deployment with state but an unreadable origin is still shown (incompatible).
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    fs::write(
        s.root.join(format!("state/deploy/{v1}/{v1}.origin")),
        "[origin\n",
    )
    .unwrap();
    let st = s.status(&v2);
    assert_eq!(
        st["status"]["rollback"]["composefs"]["verity"],
        v1.as_str(),
        "{st}"
    );
    assert_eq!(st["status"]["rollback"]["incompatible"], true, "{st}");
}

/// The `bootc_composefs-*` directories on the ESP.
fn boot_dirs(s: &System) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(s.root.join("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bootc_composefs-"))
        .collect();
    out.sort();
    out
}

/// upstream: one copy of each kernel on the ESP: deployments with the same kernel and
/// initrd share one boot directory, found by content whatever deployment it is named
/// after, also once that deployment has been collected; and gc keeps a directory a
/// live entry boots from, whatever its name.
#[test]
fn one_copy_of_each_kernel_after_its_first_deployment_is_collected() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let shared = vec![format!("bootc_composefs-{v1}")];
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    // Keeping one previous entry drops v1: finalize's gc collects its deployment but
    // keeps its boot directory, which v2 and v3 boot from.
    let v3 = s.switch_and_finalize(&v2, "v3", &["--keep-previous", "1"]);
    assert!(
        !s.root.join("state/deploy").join(&v1).exists(),
        "v1 collected"
    );
    assert_eq!(boot_dirs(&s), shared);

    // A fourth image with the same kernel shares that directory instead of a 2nd copy.
    oci::write_image(&s.layout, "v4", &images::bootable(4), &[]).unwrap();
    s.bootc_ok(&v3, &["switch", &s.imgref("v4")]);
    let v4 = s.marker().expect("staged");
    assert_eq!(boot_dirs(&s), shared, "a second copy of the kernel");
    let entry = fs::read_to_string(s.entry_path(&v4, true)).unwrap();
    assert!(
        entry.contains(&format!("linux /bootc_composefs-{v1}/vmlinuz")),
        "{entry}"
    );
    s.bootc_ok(&v3, &["composefs-finalize-staged"]);
    s.bootc_ok(&v4, &["gc"]);
    assert_eq!(boot_dirs(&s), shared, "gc removed the shared directory");
}

/// upstream: `bootc upgrade --tag TAG` on a system following a registry image replaces
/// the tag of that registry reference (the port of `127.0.0.1:PORT` is not a tag).
#[test]
fn upgrade_tag_on_a_registry_reference() {
    if !can_run(&["docker-registry", "skopeo"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let reg = Registry::start();
    let v2_name = reg.push(&s.layout, "v2", "os:v2");
    let v3_name = reg.push(&s.layout, "v3", "os:v3");
    let tls = "--tls-verify-false";
    s.bootc_ok(&v1, &["switch", &format!("docker://{v2_name}"), tls]);
    let v2 = s.marker().expect("staged");
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);

    s.bootc_ok(&v2, &["upgrade", "--tag", "v3", tls]);
    let v3 = s.marker().expect("staged");
    assert_ne!(v3, v2);
    assert_eq!(
        origin_ref(&s, &v3),
        format!("ostree-unverified-image:registry:{v3_name}")
    );
}
