//! Upstream bootc's own expectations (its tmt scenarios and the unit tests of its
//! kargs, composefs status and gc code), ported as host tests: each test's doc comment
//! names the upstream behaviour it checks, so a change that drifts from upstream fails
//! here first. Everything runs on a real ext4 root installed by
//! `bootc install to-filesystem` (tests/common/system.rs), with real OCI layouts.

mod common;

use std::fs;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Layer};
use common::system::*;
use common::*;

/// `v<version>` plus a `kargs.d/50-x.toml` holding `toml`, written as `tag`.
fn kargs_image(s: &System, tag: &str, version: u32, toml: &str) {
    let mut layers = images::bootable(version);
    layers.push(
        Layer::new()
            .dir("usr/lib/bootc", 0o755)
            .dir("usr/lib/bootc/kargs.d", 0o755)
            .file("usr/lib/bootc/kargs.d/50-x.toml", toml, 0o644),
    );
    oci::write_image(&s.layout, tag, &layers, &[]).unwrap();
}

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
    kargs_image(&s, "typo", 2, typo);
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
    let out = bootc(&[
        "install",
        "to-filesystem",
        "--source-imgref",
        &src,
        "--root-mount-spec",
        "UUID=test",
        other.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "install must refuse");
    want(&String::from_utf8_lossy(&out.stderr));

    // Switch, then upgrade once the followed tag carries the typo.
    let before = s.disk();
    want(&s.bootc_err(&v1, &["switch", &src]));
    assert_eq!(s.disk(), before, "switch changed the disk");
    kargs_image(&s, "v1", 2, typo);
    want(&s.bootc_err(&v1, &["upgrade"]));
    assert_eq!(s.disk(), before, "upgrade changed the disk");
    assert_eq!(s.marker(), None);
}
