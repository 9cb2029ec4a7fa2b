//! Host tests of issue 8 items 8 and 9 on a real ext4 root installed by
//! `bootc install to-filesystem`: an image the initramfs could not boot is refused when
//! it is staged (by the initramfs's own rule), and a repository that lost an object of
//! the booted image says so in `bootc status` and is healed by the next pull instead of
//! handing the hole on to the next deployment.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Layer};
use common::system::*;
use common::*;

/// The largest object file in the repository (the test image's 20 MB file, which the
/// base layer shared by v1 and v2 holds).
fn largest_object(root: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for d in fs::read_dir(root.join("composefs/objects")).unwrap() {
        let d = d.unwrap();
        if !d.file_type().unwrap().is_dir() {
            continue;
        }
        for f in fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let len = f.metadata().unwrap().len();
            if best.as_ref().is_none_or(|(l, _)| len > *l) {
                best = Some((len, f.path()));
            }
        }
    }
    best.expect("the repository holds objects").1
}

#[test]
fn item9_missing_object_is_reported_and_the_next_pull_heals_it() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let st = s.status(&v1);
    assert!(
        st["status"]["booted"]["composefs"]["damage"].is_null(),
        "{st:#}"
    );

    let object = largest_object(&s.root);
    let hex = format!(
        "{}{}",
        object
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        object.file_name().unwrap().to_string_lossy()
    );
    fs::remove_file(&object).unwrap();

    // Status names the damage (JSON and for people).
    let st = s.status(&v1);
    let damage = st["status"]["booted"]["composefs"]["damage"]
        .as_str()
        .unwrap_or_else(|| panic!("no damage reported: {st:#}"));
    assert!(
        damage.contains(&hex) && damage.contains("missing"),
        "{damage}"
    );
    let human = s.bootc_ok(&v1, &["status", "--format", "human"]);
    assert!(human.contains("Damaged: "), "{human}");

    // v2 shares the damaged base layer: staging it re-fetches that layer instead of
    // inheriting the hole.
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    assert!(object.is_file(), "the object was not restored");
    let st = s.status(&v2);
    assert!(
        st["status"]["booted"]["composefs"]["damage"].is_null(),
        "{st:#}"
    );
    assert!(
        st["status"]["rollback"]["composefs"]["damage"].is_null(),
        "{st:#}"
    );
}

/// v1 with `layers` on top, written to the system's layout as `tag`.
fn image_with(s: &System, tag: &str, layers: Vec<Layer>) {
    let mut all = images::bootable(1);
    all.extend(layers);
    oci::write_image(&s.layout, tag, &all, &[]).unwrap();
}

#[test]
fn item8_an_image_the_initramfs_cannot_boot_is_refused_at_install_and_switch() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let cases: Vec<(&str, Vec<Layer>, &str)> = vec![
        (
            "novar",
            vec![Layer::new().whiteout("var")],
            "the image lacks /var",
        ),
        (
            "varlink",
            vec![
                Layer::new().whiteout("var"),
                Layer::new().symlink("var", "usr/share"),
            ],
            "/var is a symlink in the image",
        ),
        (
            "noetc",
            vec![Layer::new().whiteout("etc")],
            "the image lacks /etc",
        ),
    ];
    for (tag, layers, message) in cases {
        image_with(&s, tag, layers);
        let before = s.disk();
        let err = s.bootc_err(&v1, &["switch", &s.imgref(tag)]);
        assert!(
            err.contains(message),
            "{tag}: expected {message:?} in:\n{err}"
        );
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{tag}: not one error line:\n{err}");
        assert!(errors[0].contains(message), "{tag}: {}", errors[0]);
        assert_eq!(s.disk(), before, "{tag}: switch changed the disk");
        assert!(s.marker().is_none(), "{tag}: a staged marker was written");

        // Install refuses the same image, by the same rule, leaving the target empty.
        let target = s.t.path().join(format!("target-{tag}"));
        fs::create_dir_all(target.join("boot")).unwrap();
        let out = install_to_filesystem(&s.imgref(tag), &target, &[]);
        assert!(!out.status.success(), "{tag}: install succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(message),
            "{tag}: expected {message:?} in:\n{err}"
        );
        let left: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            vec!["boot".to_string()],
            "{tag}: install left {left:?}"
        );
    }
    // A good image still stages.
    s.bootc_ok(&v1, &["switch", &s.imgref("v2")]);
    assert!(s.marker().is_some());
}
