//! `bootc container lint --rootfs DIR` on image roots built here as plain directories:
//! a good root passes; each defect gives its exact one-line message and the exit code
//! its severity implies; several defects are all listed. No root needed.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

use common::*;

const KVER: &str = "6.12.0-bootc-test";

/// A root that passes every lint: API directories, /etc, /var, /sysroot, an empty
/// /boot, one kernel with its initramfs, os-release, a valid kargs.d file, /var/run a
/// symlink.
fn good_root(dir: &Path) {
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "var/log",
        "sysroot",
        "boot",
        "usr/lib/bootc/kargs.d",
    ] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let k = dir.join("usr/lib/modules").join(KVER);
    fs::create_dir_all(&k).unwrap();
    fs::write(k.join("vmlinuz"), "kernel").unwrap();
    fs::write(k.join("initramfs.img"), "initramfs").unwrap();
    fs::write(dir.join("usr/lib/os-release"), "NAME=Test\nVERSION_ID=1\n").unwrap();
    symlink("../usr/lib/os-release", dir.join("etc/os-release")).unwrap();
    fs::write(
        dir.join("usr/lib/bootc/kargs.d/10-console.toml"),
        "kargs = [\"console=ttyS0\"]\nmatch-architectures = [\"x86_64\", \"aarch64\"]\n",
    )
    .unwrap();
    symlink("../run", dir.join("var/run")).unwrap();
    fs::write(dir.join("var/log/empty.log"), "").unwrap();
    fs::write(dir.join("etc/hostname"), "host\n").unwrap();
}

fn lint(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["container", "lint", "--rootfs", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    bootc(&args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lines naming problems (without the counts).
fn problems(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Failed lint: ") || l.starts_with("Lint warning: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_good_root_passes() {
    let t = tempdir("bootc-lint-");
    good_root(t.path());
    let out = lint(t.path(), &["--fatal-warnings"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(problems(&out), Vec::<String>::new());
    assert_eq!(text(&out.stdout), "Checks passed: 11\n");
}

/// One defect per case: what to do to a good root, and the exact problem line.
type Defect = (&'static str, fn(&Path), &'static str);

const FATAL: &[Defect] = &[
    (
        "two kernels",
        |r| {
            let k = r.join("usr/lib/modules/6.1.0-old");
            fs::create_dir_all(&k).unwrap();
            fs::write(k.join("vmlinuz"), "k").unwrap();
            fs::write(k.join("initramfs.img"), "i").unwrap();
        },
        "Failed lint: kernel: the image has more than one kernel (6.1.0-old, 6.12.0-bootc-test); expected exactly one under /usr/lib/modules",
    ),
    (
        "no initramfs",
        |r| fs::remove_file(r.join("usr/lib/modules").join(KVER).join("initramfs.img")).unwrap(),
        "Failed lint: kernel: the image's kernel 6.12.0-bootc-test has no initramfs: expected /usr/lib/modules/6.12.0-bootc-test/initramfs.img",
    ),
    (
        "no kernel",
        |r| fs::remove_dir_all(r.join("usr/lib/modules").join(KVER)).unwrap(),
        "Failed lint: kernel: the image has no kernel: expected /usr/lib/modules/<kver>/vmlinuz and initramfs.img",
    ),
    (
        "kargs.d with an unknown key",
        |r| {
            fs::write(
                r.join("usr/lib/bootc/kargs.d/20-typo.toml"),
                "kargs = [\"quiet\"]\nmatch-architecture = [\"x86_64\"]\n",
            )
            .unwrap()
        },
        "Failed lint: bootc-kargs: /usr/lib/bootc/kargs.d/20-typo.toml: unknown key `match-architecture` at line 2: expected kargs = [\"…\"] and optionally match-architectures = [\"…\"]",
    ),
    (
        "kargs.d setting composefs=",
        |r| {
            fs::write(
                r.join("usr/lib/bootc/kargs.d/30-cfs.toml"),
                "kargs = [\"composefs=sha256:abcd\"]\n",
            )
            .unwrap()
        },
        "Failed lint: bootc-kargs: kernel argument \"composefs=sha256:abcd\" from /usr/lib/bootc/kargs.d/30-cfs.toml: bootc sets composefs= itself",
    ),
    (
        "no os-release",
        |r| fs::remove_file(r.join("usr/lib/os-release")).unwrap(),
        "Failed lint: os-release: missing /usr/lib/os-release (the boot entry's title and version come from it)",
    ),
    (
        "/var a symlink",
        |r| {
            fs::remove_dir_all(r.join("var")).unwrap();
            symlink("usr/var", r.join("var")).unwrap();
        },
        "Failed lint: bootable: /var is a symlink in the image; it must be a directory (the initramfs mounts the shared /var there)",
    ),
    (
        "no /sysroot",
        |r| fs::remove_dir(r.join("sysroot")).unwrap(),
        "Failed lint: bootable: the image lacks /sysroot (the initramfs mounts the physical root there)",
    ),
    (
        "no /proc",
        |r| fs::remove_dir(r.join("proc")).unwrap(),
        "Failed lint: api-base-directories: missing /proc (systemd mounts an API filesystem there)",
    ),
    (
        "/var/run a directory",
        |r| {
            fs::remove_file(r.join("var/run")).unwrap();
            fs::create_dir(r.join("var/run")).unwrap();
        },
        "Failed lint: var-run: /var/run is not a symlink (it must point to /run)",
    ),
    (
        "/usr/etc",
        |r| fs::create_dir(r.join("usr/etc")).unwrap(),
        "Failed lint: etc-usretc: found /usr/etc: configuration belongs in /etc (each deployment gets a copy of the image's /etc; /usr/etc is never read)",
    ),
];

const WARNINGS: &[Defect] = &[
    (
        "content in /boot",
        |r| {
            fs::write(r.join("boot/vmlinuz-6.12"), "k").unwrap();
            fs::create_dir(r.join("boot/grub2")).unwrap();
        },
        "Lint warning: nonempty-boot: found content in /boot, which the boot partition hides and install does not copy: /boot/grub2, /boot/vmlinuz-6.12",
    ),
    (
        "a log file",
        |r| {
            fs::create_dir(r.join("var/log/dnf")).unwrap();
            fs::write(r.join("var/log/dnf/dnf.log"), "installed\n").unwrap();
        },
        "Lint warning: var-log: found non-empty log files: /var/log/dnf/dnf.log",
    ),
    (
        "leftovers in /tmp",
        |r| fs::write(r.join("tmp/build.sh"), "x").unwrap(),
        "Lint warning: nonempty-run-tmp: found content in /run or /tmp (tmpfs at run time): /tmp/build.sh",
    ),
    (
        "an empty resolv.conf",
        |r| fs::write(r.join("etc/resolv.conf"), "").unwrap(),
        "Lint warning: buildah-injected: /etc/resolv.conf is an empty file; the container build may have left it there",
    ),
];

#[test]
fn each_fatal_defect_fails_with_its_message() {
    for (what, spoil, expected) in FATAL {
        let t = tempdir("bootc-lint-");
        good_root(t.path());
        spoil(t.path());
        let out = lint(t.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: exit code");
        assert_eq!(problems(&out), vec![expected.to_string()], "{what}");
        assert_eq!(
            text(&out.stderr).trim_end(),
            "error: Checks failed: 1",
            "{what}"
        );
    }
}

#[test]
fn each_warning_passes_unless_warnings_are_fatal() {
    for (what, spoil, expected) in WARNINGS {
        let t = tempdir("bootc-lint-");
        good_root(t.path());
        spoil(t.path());
        let out = lint(t.path(), &[]);
        assert!(out.status.success(), "{what}: a warning alone passes");
        assert_eq!(problems(&out), vec![expected.to_string()], "{what}");
        assert!(text(&out.stdout).contains("Warnings: 1\n"), "{what}");
        let out = lint(t.path(), &["--fatal-warnings"]);
        assert_eq!(out.status.code(), Some(1), "{what}: --fatal-warnings");
        assert_eq!(problems(&out), vec![expected.to_string()], "{what}");
    }
}

#[test]
fn every_problem_is_listed_and_skip_skips() {
    let t = tempdir("bootc-lint-");
    let r = t.path();
    good_root(r);
    // Every defect at once (the kernel ones are alternatives: keep "two kernels"; a
    // symlinked /var would hide the /var ones).
    for (what, spoil, _) in FATAL.iter().chain(WARNINGS) {
        if !matches!(*what, "no initramfs" | "no kernel" | "/var a symlink") {
            spoil(r);
        }
    }
    let out = lint(r, &[]);
    assert_eq!(out.status.code(), Some(1));
    let mut expected: Vec<String> = FATAL
        .iter()
        .chain(WARNINGS)
        .filter(|(w, _, _)| !matches!(*w, "no initramfs" | "no kernel" | "/var a symlink"))
        .map(|(_, _, m)| m.to_string())
        .collect();
    let mut got = problems(&out);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Two bootc-kargs lines: 7 fatal lints, 4 warnings.
    assert_eq!(text(&out.stderr).trim_end(), "error: Checks failed: 7");
    assert!(text(&out.stdout).contains("Warnings: 4\n"));

    let out = lint(r, &["--skip", "kernel", "--skip", "nonempty-boot"]);
    let got = problems(&out);
    assert!(!got.iter().any(|l| l.contains(": kernel: ")), "{got:?}");
    assert!(
        !got.iter().any(|l| l.contains(": nonempty-boot: ")),
        "{got:?}"
    );
    assert!(text(&out.stdout).contains("Checks skipped: 2\n"));
    assert_eq!(text(&out.stderr).trim_end(), "error: Checks failed: 6");

    let out = lint(r, &["--skip", "no-such-lint"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--skip no-such-lint: no such lint"));
}

#[test]
fn long_lists_are_truncated_unless_asked() {
    let t = tempdir("bootc-lint-");
    good_root(t.path());
    for i in 0..8 {
        fs::write(t.path().join(format!("boot/f{i}")), "x").unwrap();
    }
    let out = lint(t.path(), &[]);
    assert_eq!(
        problems(&out),
        vec!["Lint warning: nonempty-boot: found content in /boot, which the boot partition hides and install does not copy: /boot/f0, /boot/f1, /boot/f2, /boot/f3, /boot/f4, and 3 more (--no-truncate lists them)".to_string()]
    );
    let out = lint(t.path(), &["--no-truncate"]);
    let p = problems(&out);
    assert!(p[0].ends_with("/boot/f6, /boot/f7"), "{p:?}");
}

#[test]
fn absolute_symlinks_resolve_inside_the_root() {
    // os-release through an absolute symlink: found in the image, not on the build host.
    let t = tempdir("bootc-lint-");
    let r = t.path();
    good_root(r);
    fs::rename(
        r.join("usr/lib/os-release"),
        r.join("usr/lib/os-release.real"),
    )
    .unwrap();
    symlink("/usr/lib/os-release.real", r.join("usr/lib/os-release")).unwrap();
    assert!(lint(r, &[]).status.success());
    fs::remove_file(r.join("usr/lib/os-release.real")).unwrap();
    // The host's /usr/lib/os-release exists; the image's link dangles.
    assert_eq!(
        problems(&lint(r, &[])),
        vec!["Failed lint: os-release: missing /usr/lib/os-release (the boot entry's title and version come from it)".to_string()]
    );
}

#[test]
fn list_names_every_lint() {
    let out = bootc(&["container", "lint", "--list"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    let v: serde_yaml::Value = serde_yaml::from_str(&s).unwrap();
    let names: Vec<&str> = v
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for n in [
        "api-base-directories",
        "bootable",
        "bootc-kargs",
        "buildah-injected",
        "etc-usretc",
        "kernel",
        "nonempty-boot",
        "nonempty-run-tmp",
        "os-release",
        "var-log",
        "var-run",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn every_bootable_problem_is_listed() {
    let t = tempdir("bootc-lint-");
    let r = t.path();
    good_root(r);
    fs::remove_dir_all(r.join("var")).unwrap();
    fs::write(r.join("var"), "").unwrap();
    fs::remove_dir(r.join("sysroot")).unwrap();
    assert_eq!(
        problems(&lint(r, &["--skip", "var-log"])),
        vec![
            "Failed lint: bootable: /var is not a directory in the image; it must be one (the initramfs mounts the shared /var there)".to_string(),
            "Failed lint: bootable: the image lacks /sysroot (the initramfs mounts the physical root there)".to_string(),
        ]
    );
}

#[test]
fn the_running_root_skips_what_only_a_build_leaves() {
    // `--rootfs /` is the build container itself: buildah-injected does not apply (the
    // runtime injects /etc/hostname), whatever else this host fails.
    let out = bootc(&["container", "lint"]);
    assert!(
        text(&out.stdout).contains("Checks skipped: 1\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(!problems(&out)
        .iter()
        .any(|l| l.contains("buildah-injected")));
}
