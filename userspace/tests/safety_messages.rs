//! Host tests of what bootc writes and says when an image is hostile or broken: values
//! that would break out of a boot entry's line (issue 8, item 3), and errors a person
//! can act on (item 14). Each case runs `bootc install to-filesystem` through the binary
//! into a plain directory under /var/tmp (`--root-mount-spec` names the root, so no
//! mount is needed).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bootc_test_fixtures::skip;

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
    _t: tempfile::TempDir,
    root: PathBuf,
    layout: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let t = tempdir("bootc-msg-");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        let layout = t.path().join("oci");
        Scratch {
            _t: t,
            root,
            layout,
        }
    }

    /// Installs an image made of `layers` (with `extra` install options); returns
    /// (success, stderr).
    fn install(&self, tag: &str, layers: &[Layer], extra: &[&str]) -> (bool, String) {
        oci::write_image(&self.layout, tag, layers, &[]).unwrap();
        let src = format!("oci:{}:{tag}", self.layout.display());
        let mut args = vec![
            "install",
            "to-filesystem",
            "--quiet",
            "--root-mount-spec",
            "UUID=test",
            "--source-imgref",
            &src,
        ];
        args.extend_from_slice(extra);
        args.push(self.root.to_str().unwrap());
        let out = bootc(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The `error:` line of a failed run, checked to be a message a person can act on:
/// the only line besides warnings, under 300 characters, no Rust debug dump.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim_start().starts_with("WARN"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line in:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.chars().count() < 300, "{} chars: {line}", line.len());
    for dump in [
        "{",
        "PhantomData",
        "LeafId",
        "Leaf(",
        "Directory {",
        "Stat {",
    ] {
        assert!(!line.contains(dump), "{dump:?} in {line}");
    }
    line.to_string()
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

/// Installs `layers` into a fresh root and expects a refusal that names `path`, with
/// nothing left in the root but the empty `boot/` it started with.
fn refused(tag: &str, layers: &[Layer], extra: &[&str], expected: &[&str]) -> String {
    let s = Scratch::new();
    let before = tree(&s.root);
    let (ok, err) = s.install(tag, layers, extra);
    assert!(!ok, "{tag}: the install succeeded");
    let line = error_line(&err);
    for e in expected {
        assert!(line.contains(e), "{tag}: expected {e:?} in {line}");
    }
    assert_eq!(
        tree(&s.root),
        before,
        "{tag}: the failed install left files"
    );
    line
}

fn root_and_tools() -> bool {
    skip::need_root() && skip::need_tools(&["bootctl"])
}

// Item 3: a value that would break out of its line in a boot entry.

#[test]
fn kernel_version_with_a_line_break_is_refused_with_nothing_written() {
    if !root_and_tools() {
        return;
    }
    let _g = serial();
    // No VERSION_ID: the entry's version would be the kernel version.
    for (tag, kver, shown) in [
        (
            "kver-lf",
            "6.1\noptions systemd.unit=rescue.target",
            "\"6.1\\noptions systemd.unit=rescue.target\"",
        ),
        ("kver-cr", "6.1\rx", "\"6.1\\rx\""),
        ("kver-esc", "6.1\x1b[2J", "\"6.1\\x1b[2J\""),
        ("kver-space", "6.1 quiet", "\"6.1 quiet\""),
    ] {
        let line = refused(
            tag,
            &[small_layer(kver, "NAME=x\n")],
            &[],
            &[
                "the image's kernel directory name",
                shown,
                "is not a valid kernel version",
            ],
        );
        eprintln!("{tag}: {line}");
    }
}

#[test]
fn hostile_kernel_arguments_are_refused_with_nothing_written() {
    if !root_and_tools() {
        return;
    }
    let _g = serial();
    // From the image's kargs.d (a TOML escape makes the line break).
    let kargs = small_layer(KVER, OS_RELEASE)
        .dir("usr/lib/bootc", 0o755)
        .dir("usr/lib/bootc/kargs.d", 0o755)
        .file(
            "usr/lib/bootc/kargs.d/10-evil.toml",
            "kargs = [\"quiet\\noptions systemd.unit=rescue.target\"]\n",
            0o644,
        );
    refused(
        "kargs-d",
        &[kargs],
        &[],
        &["/usr/lib/bootc/kargs.d", "control character \"\\n\""],
    );
    // From --karg.
    refused(
        "karg-cr",
        &[small_layer(KVER, OS_RELEASE)],
        &["--karg", "a\rb"],
        &["--karg", "control character \"\\r\""],
    );
    // A command line the kernel would cut (losing composefs=, which comes last).
    let long = format!("x={}", "y".repeat(3000));
    refused(
        "karg-long",
        &[small_layer(KVER, OS_RELEASE)],
        &["--karg", &long],
        &["kernel command line would be", "keeps only 2047"],
    );
}

#[test]
fn hostile_os_release_is_sanitised_into_exactly_the_expected_lines() {
    if !root_and_tools() {
        return;
    }
    let _g = serial();
    let s = Scratch::new();
    let long = "L".repeat(500);
    let os_release = format!(
        "PRETTY_NAME=\"Evil\rOS\x1b[2J\t$HOME \\\\ 'q' {long}\"\nVERSION_ID=\"1\r\x00options init=/bin/sh\"\n"
    );
    let (ok, err) = s.install("title", &[small_layer(KVER, &os_release)], &[]);
    assert!(ok, "{err}");
    let entries: Vec<_> = std::fs::read_dir(s.root.join("boot/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1);
    let name = entries[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keys: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        keys,
        ["title", "version", "sort-key", "linux", "initrd", "options"],
        "{text:?}"
    );
    assert!(!text.contains('\r') && !text.contains('\0') && !text.contains('\x1b'));
    let title = lines[0].strip_prefix("title ").unwrap();
    assert!(
        title.starts_with("Evil OS [2J $HOME \\ 'q' LLL") && title.ends_with('…'),
        "{title}"
    );
    assert_eq!(title.chars().count(), 128, "{title}");
    assert_eq!(lines[1], "version 1 options init=/bin/sh");
    assert_eq!(lines[3], format!("linux /{name}/vmlinuz"));
    let hex = name.strip_prefix("bootc_composefs-").unwrap();
    assert_eq!(
        lines[5],
        format!("options root=UUID=test rw composefs=?sha256:{hex}")
    );
}

// Item 14: errors a person can act on.

#[test]
fn broken_image_trees_are_named_in_one_line() {
    if !root_and_tools() {
        return;
    }
    let _g = serial();
    let etc_file = {
        let l = without("etc");
        l.file("etc", "not a directory\n", 0o644)
    };
    let cases: Vec<(&str, Vec<Layer>, &[&str])> = vec![
        ("noboot", vec![without("boot")], &["the image lacks /boot"]),
        (
            "bootfile",
            vec![without("boot").file("boot", "x", 0o644)],
            &["the image's /boot is not a directory"],
        ),
        (
            "nosysroot",
            vec![without("sysroot")],
            &["the image lacks /sysroot"],
        ),
        ("nousr", vec![without("usr")], &["the image lacks /usr"]),
        (
            "etcfile",
            vec![etc_file],
            &["the image's /etc is not a directory"],
        ),
        (
            // /etc replaced by a file, then a later layer adds /etc/passwd: composefs
            // reported this with a dump of its inode (`Leaf(LeafId(6), PhantomData<…>)`).
            "etcfile-layer",
            vec![
                small_layer(KVER, OS_RELEASE),
                Layer::new().whiteout("etc").file("etc", "x", 0o644),
                Layer::new().file("etc/passwd", "x", 0o644),
            ],
            &["the image's /etc is not a directory", "/etc/passwd"],
        ),
        (
            "nomodules",
            vec![without("usr/lib/modules")],
            &["the image has no kernel", "/usr/lib/modules/<kver>/vmlinuz"],
        ),
        (
            "noinitrd",
            vec![without(&format!("usr/lib/modules/{KVER}/initramfs.img"))],
            &["/usr/lib/modules/6.12.0-msg-test/initramfs.img"],
        ),
    ];
    // A kargs.d file that is not TOML: toml's message is a multi-line snippet.
    let bad_kargs = small_layer(KVER, OS_RELEASE)
        .dir("usr/lib/bootc", 0o755)
        .dir("usr/lib/bootc/kargs.d", 0o755)
        .file(
            "usr/lib/bootc/kargs.d/10-broken.toml",
            "# comment\nkargs = \"quiet\"\n",
            0o644,
        );
    let mut cases = cases;
    cases.push((
        "kargs-not-toml",
        vec![bad_kargs],
        &[
            "/usr/lib/bootc/kargs.d/10-broken.toml: not a kargs file at line 2",
            "expected kargs = [",
        ],
    ));
    for (tag, layers, expected) in cases {
        let line = refused(tag, &layers, &[], expected);
        eprintln!("{tag}: {line}");
    }
}

#[test]
fn long_lists_are_cut() {
    if !root_and_tools() {
        return;
    }
    let _g = serial();
    let s = Scratch::new();
    for i in 0..400 {
        std::fs::write(s.root.join(format!("leftover-file-{i:03}")), "").unwrap();
    }
    let (ok, err) = s.install("v1", &[small_layer(KVER, OS_RELEASE)], &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("is not empty (found 400 entries: leftover-file-000, leftover-file-001")
            && line.contains('…'),
        "{line}"
    );
    assert!(line.contains("pass --wipe"), "{line}");
}
