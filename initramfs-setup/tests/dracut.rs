//! The dracut module `dracut/51bootc` in a real initramfs: real `dracut` builds an image
//! for the Debian 6.12 kernel fetched by `tests-vm/fetch-kernel.sh`, with the workspace
//! binary and `systemd/bootc-root-setup.service`, and the image is checked with `lsinitrd`.
//!
//! Nothing is written into the host's dracut: dracut honours `dracutbasedir` from the
//! environment, so each run gets a temporary base dir whose files link to the host's
//! `/usr/lib/dracut` and whose `modules.d` holds a small systemd-initrd set of the host's
//! modules plus ours. `--conf /dev/null --confdir <empty>` keeps the host config out.
//! Both images are built in dracut's default "all modules that pass check()" mode, so the
//! image built without `--add bootc` shows the module really is opt-in.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use bootc_test_fixtures::skip;

const BIN: &str = env!("CARGO_BIN_EXE_bootc-initramfs-setup");
const HOST_DRACUT: &str = "/usr/lib/dracut";
const UNIT: &str = "usr/lib/systemd/system/bootc-root-setup.service";
const WANTS: &str = "usr/lib/systemd/system/initrd-root-fs.target.wants/bootc-root-setup.service";
const SETUP: &str = "usr/lib/bootc/initramfs-setup";
/// Loads erofs and overlay early; pulled in by [`UNIT`]'s `Wants=`.
const MODULES_UNIT: &str = "usr/lib/systemd/system/bootc-root-modules.service";

/// Host dracut modules linked into the temporary base dir: what a systemd initrd needs
/// (dracut-systemd and its dependencies). Missing ones are left out; dracut then says which
/// dependency it lacks.
const HOST_MODULES: &[&str] = &[
    "bash",
    "dash",
    "shell-interpreter",
    "systemd",
    "systemd-ask-password",
    "systemd-initrd",
    "systemd-journald",
    "systemd-modules-load",
    "systemd-sysctl",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "systemd-udevd",
    "udev-rules",
    "dracut-systemd",
    "base",
    "fs-lib",
];

/// Whether this test can run here: root and the tools. Prints `SKIP: reason` and returns
/// false when it cannot; under `CI=true` that panics instead (nothing skips in CI).
fn can_run() -> bool {
    skip::need_root()
        && skip::need_tools(&[
            "dracut",
            "lsinitrd",
            "apt-get",
            "apt-cache",
            "dpkg-deb",
            "depmod",
            "flock",
        ])
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Kernel {
    kver: String,
    root: PathBuf,
}

/// The kernel from `tests-vm/fetch-kernel.sh`, fetched once per test binary.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let script = workspace().join("tests-vm/fetch-kernel.sh");
        let start = Instant::now();
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.trim_end();
        assert_eq!(
            line.lines().count(),
            1,
            "fetch-kernel.sh must print one line, got {stdout:?}"
        );
        let (kver, root) = line
            .strip_prefix("KVER=")
            .and_then(|l| l.split_once(" ROOT="))
            .unwrap_or_else(|| panic!("unexpected fetch-kernel.sh output {line:?}"));
        let k = Kernel {
            kver: kver.into(),
            root: root.into(),
        };
        assert!(
            k.root.join(format!("boot/vmlinuz-{}", k.kver)).is_file(),
            "no vmlinuz in {line}"
        );
        assert!(
            k.root
                .join(format!("lib/modules/{}/modules.dep", k.kver))
                .is_file(),
            "no modules.dep in {line}"
        );
        eprintln!("fetch-kernel.sh: {line} ({:.1?})", start.elapsed());
        k
    })
}

/// A temporary dracutbasedir: the host's dracut files and the chosen modules, linked.
fn dracut_basedir(dir: &Path) -> PathBuf {
    let base = dir.join("dracut");
    let modules = base.join("modules.d");
    fs::create_dir_all(&modules).unwrap();
    for entry in fs::read_dir(HOST_DRACUT).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "modules.d" {
            symlink(entry.path(), base.join(entry.file_name())).unwrap();
        }
    }
    for entry in fs::read_dir(Path::new(HOST_DRACUT).join("modules.d")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        // Module directories are named NNname.
        let bare = name.get(2..).unwrap_or_default();
        if name.as_bytes().iter().take(2).all(u8::is_ascii_digit) && HOST_MODULES.contains(&bare) {
            symlink(entry.path(), modules.join(&name)).unwrap();
        }
    }
    symlink(workspace().join("dracut/51bootc"), modules.join("51bootc")).unwrap();
    base
}

/// Builds an uncompressed initramfs in `dir` with real dracut; returns its path.
fn build_initramfs(dir: &Path, add_bootc: bool) -> PathBuf {
    let k = kernel();
    let base = dracut_basedir(dir);
    let confdir = dir.join("conf.d");
    let tmpdir = dir.join("tmp");
    fs::create_dir(&confdir).unwrap();
    fs::create_dir(&tmpdir).unwrap();
    let image = dir.join("initramfs.img");

    let mut cmd = Command::new("dracut");
    cmd.env("dracutbasedir", &base)
        .env("BOOTC_INITRAMFS_SETUP", BIN)
        .env("BOOTC_UNIT_DIR", workspace().join("systemd"))
        .args([
            "--force",
            "--no-hostonly",
            "--no-hostonly-cmdline",
            "--no-early-microcode",
            "--no-compress",
        ])
        .args(["--conf", "/dev/null", "--confdir"])
        .arg(&confdir)
        .arg("--tmpdir")
        .arg(&tmpdir)
        .args(["--kver", &k.kver, "--kmoddir"])
        .arg(k.root.join("lib/modules").join(&k.kver));
    if add_bootc {
        cmd.args(["--add", "bootc"]);
    }
    cmd.arg(&image);

    let start = Instant::now();
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{log}");
    let size = fs::metadata(&image).unwrap().len();
    eprintln!(
        "dracut {} bootc: {:.1?}, {:.1} MiB uncompressed",
        if add_bootc { "with" } else { "without" },
        start.elapsed(),
        size as f64 / (1 << 20) as f64
    );
    for l in log
        .lines()
        .filter(|l| l.starts_with("dracut[E]") || l.starts_with("dracut[W]"))
    {
        eprintln!("  {l}");
    }
    image
}

/// One entry of `lsinitrd`'s `ls -l` style listing.
struct Entry {
    mode: String,
    path: String,
    target: Option<String>,
}

fn lsinitrd(image: &Path) -> Vec<Entry> {
    let out = Command::new("lsinitrd").arg(image).output().unwrap();
    assert!(
        out.status.success(),
        "lsinitrd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode links owner group size month day time|year path [-> target]
            let mode = *fields.first()?;
            if fields.len() < 9 || mode.len() != 10 || !"-dlcbps".contains(&mode[..1]) {
                return None;
            }
            let (path, target) = match fields[8..] {
                [path] => (path, None),
                [path, "->", target] => (path, Some(target.to_string())),
                _ => return None,
            };
            Some(Entry {
                mode: mode.into(),
                path: path.into(),
                target,
            })
        })
        .collect()
}

fn find<'a>(entries: &'a [Entry], path: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.path == path)
}

fn file_in_image(image: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("lsinitrd")
        .arg(image)
        .args(["-f", path])
        .output()
        .unwrap();
    assert!(out.status.success(), "lsinitrd -f {path} failed");
    out.stdout
}

/// A kernel module `name` in the image, plain or compressed.
fn has_kmod(entries: &[Entry], kver: &str, name: &str) -> bool {
    let dir = format!("usr/lib/modules/{kver}/");
    entries.iter().any(|e| {
        e.mode.starts_with('-')
            && e.path.starts_with(&dir)
            && e.path.rsplit('/').next().is_some_and(|f| {
                [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                    .iter()
                    .any(|ext| f == format!("{name}{ext}"))
            })
    })
}

#[test]
fn dracut_module_installs_setup_unit_and_kernel_modules() {
    if !can_run() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bootc-dracut-")
        .tempdir()
        .unwrap();
    let image = build_initramfs(dir.path(), true);
    let entries = lsinitrd(&image);

    let setup = find(&entries, SETUP).unwrap_or_else(|| panic!("{SETUP} missing"));
    assert!(
        setup.mode.starts_with("-rwx"),
        "{SETUP} is not an executable file: {}",
        setup.mode
    );

    let unit = find(&entries, UNIT).unwrap_or_else(|| panic!("{UNIT} missing"));
    assert!(
        unit.mode.starts_with('-'),
        "{UNIT} is not a file: {}",
        unit.mode
    );
    let repo_unit = fs::read(workspace().join("systemd/bootc-root-setup.service")).unwrap();
    assert_eq!(
        file_in_image(&image, UNIT),
        repo_unit,
        "{UNIT} differs from systemd/"
    );

    // The early module loader: there, as in systemd/, pulled in by the setup unit, and
    // its modprobe with it.
    let repo_modules = fs::read(workspace().join("systemd/bootc-root-modules.service")).unwrap();
    assert_eq!(
        file_in_image(&image, MODULES_UNIT),
        repo_modules,
        "{MODULES_UNIT} differs from systemd/ (or is missing)"
    );
    assert!(
        String::from_utf8_lossy(&repo_unit)
            .lines()
            .any(|l| l == "Wants=bootc-root-modules.service"),
        "bootc-root-setup.service does not pull in bootc-root-modules.service"
    );
    assert!(
        String::from_utf8_lossy(&repo_modules).contains("ExecStart=-/sbin/modprobe "),
        "bootc-root-modules.service does not run /sbin/modprobe"
    );
    assert!(
        ["usr/sbin/modprobe", "sbin/modprobe"]
            .iter()
            .any(|p| find(&entries, p).is_some()),
        "modprobe missing from the image"
    );

    let wants = find(&entries, WANTS).unwrap_or_else(|| panic!("{WANTS} missing"));
    assert!(
        wants.mode.starts_with('l'),
        "{WANTS} is not a symlink: {}",
        wants.mode
    );
    let target = wants.target.as_deref().unwrap();
    let resolved = if target.starts_with('/') {
        target.trim_start_matches('/').to_string()
    } else {
        format!(
            "usr/lib/systemd/system/{}",
            target.trim_start_matches("../")
        )
    };
    assert_eq!(resolved, UNIT, "{WANTS} points to {target}");
    assert!(find(&entries, "usr/lib/systemd/system/initrd-root-fs.target").is_some());
    // The unit's ConditionPathExists=/etc/initrd-release must be satisfiable.
    assert!(
        find(&entries, "etc/initrd-release").is_some()
            || find(&entries, "usr/lib/initrd-release").is_some()
    );

    let kver = &kernel().kver;
    for m in ["erofs", "overlay", "loop"] {
        assert!(
            has_kmod(&entries, kver, m),
            "kernel module {m} missing from the image"
        );
    }
}

#[test]
fn dracut_module_is_opt_in() {
    if !can_run() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bootc-dracut-")
        .tempdir()
        .unwrap();
    let image = build_initramfs(dir.path(), false);
    let entries = lsinitrd(&image);
    // The image is otherwise complete: the systemd initrd modules passed check().
    assert!(find(&entries, "usr/lib/systemd/system/initrd-root-fs.target").is_some());
    for path in [SETUP, UNIT, MODULES_UNIT, WANTS] {
        assert!(
            find(&entries, path).is_none(),
            "{path} is in an image built without --add bootc"
        );
    }
}
