//! Host tests of what bootc writes and says when an image is hostile or broken: values
//! that would break out of a boot entry's line (issue 8, item 3), and errors a person
//! can act on (item 14). Each case runs `bootc install to-filesystem` through the binary
//! into a plain directory under /var/tmp (`--root-mount-spec` names the root, so no
//! mount is needed).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bootc_test_fixtures::oci::{self, Layer};
use common::*;

const KVER: &str = "6.12.0-msg-test";

/// A small bootable image: kernel + initrd, os-release, /etc, /var, /boot, /sysroot.
fn small_layer(kver: &str, os_release: &str) -> Layer {
    Layer::new()
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/modules", 0o755)
        .dir(&format!("usr/lib/modules/{kver}"), 0o755)
        .file(
            &format!("usr/lib/modules/{kver}/vmlinuz"),
            "kernel\n",
            0o644,
        )
        .file(
            &format!("usr/lib/modules/{kver}/initramfs.img"),
            "initrd\n",
            0o644,
        )
        .file("usr/lib/os-release", os_release, 0o644)
        .dir("etc", 0o755)
        .file("etc/hostname", "msg-test\n", 0o644)
        .dir("var", 0o755)
        .dir("boot", 0o755)
        .dir("sysroot", 0o755)
}

const OS_RELEASE: &str = "NAME=\"Msg Test OS\"\nVERSION_ID=1\nPRETTY_NAME=\"Msg Test OS 1\"\n";

/// `small_layer` without the entries under (or at) `path`.
fn without(path: &str) -> Layer {
    let mut l = small_layer(KVER, OS_RELEASE);
    l.0.retain(|e| e.path != path && !e.path.starts_with(&format!("{path}/")));
    l
}

/// A scratch directory with an OCI layout and an empty root (with `boot/`).
struct Scratch {
    t: tempfile::TempDir,
    root: PathBuf,
    layout: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let t = tempdir("bootc-msg-");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        let layout = t.path().join("oci");
        Scratch { t, root, layout }
    }

    /// Installs an image made of `layers`; returns (success, stderr).
    fn install(&self, tag: &str, layers: &[Layer]) -> (bool, String) {
        oci::write_image(&self.layout, tag, layers, &[]).unwrap();
        let src = format!("oci:{}:{tag}", self.layout.display());
        let out = bootc(&[
            "install",
            "to-filesystem",
            "--quiet",
            "--root-mount-spec",
            "UUID=test",
            "--source-imgref",
            &src,
            self.root.to_str().unwrap(),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Every path under `dir`, relative.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn explore() {
    if !skip::need_root() {
        return;
    }
    let _g = serial();
    let cases: Vec<(&str, Vec<Layer>)> = vec![
        ("noboot", vec![without("boot")]),
        ("nomodules", vec![without("usr/lib/modules")]),
        ("nousr", vec![without("usr")]),
        ("nosysroot", vec![without("sysroot")]),
        (
            "etcfile",
            vec![{
                let mut l = without("etc");
                l = l.file("etc", "not a dir\n", 0o644);
                l
            }],
        ),
        (
            "etcfile2",
            vec![
                small_layer(KVER, OS_RELEASE),
                Layer::new().whiteout("etc").file("etc", "x", 0o644),
                Layer::new().file("etc/passwd", "x", 0o644),
            ],
        ),
        (
            "kvernl",
            vec![small_layer(
                "6.1\noptions systemd.unit=rescue.target",
                "NAME=x\n",
            )],
        ),
        ("bootfile", vec![without("boot").file("boot", "x", 0o644)]),
    ];
    for (tag, layers) in cases {
        let s = Scratch::new();
        let (ok, err) = s.install(tag, &layers);
        eprintln!("=== {tag}: ok={ok}\n{err}\ntree: {:?}", tree(&s.root));
        drop(s.t);
    }
}

use bootc_test_fixtures::skip;
