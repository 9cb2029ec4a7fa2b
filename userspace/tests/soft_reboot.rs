//! Host tests of `bootc usr-overlay` and of soft reboot (`--apply --soft-reboot`): the
//! mounts are made inside a private mount namespace (`unshare -m`), checked there by a
//! shell script, and vanish with it; the tests then check that nothing underneath
//! changed. `systemctl soft-reboot` itself is never run: with another --sysroot, bootc
//! prepares the next root and stops.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::system::*;
use common::*;

/// Runs `script` with `sh -e` in a new private mount namespace; `$B` is bootc.
fn in_namespace(script: &str, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script, "sh"])
        .args(args)
        .env("B", BOOTC)
        .output()
        .expect("running unshare")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fake_root(dir: &Path) {
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::write(dir.join("usr/bin/hello"), "original\n").unwrap();
}

#[test]
fn usr_overlay_is_writable_transient_and_not_stacked() {
    if !skip_unless(&["unshare", "findmnt"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-usr-overlay-");
    let root = t.path().join("root");
    fake_root(&root);
    let r = root.display().to_string();

    let out = in_namespace(
        r#"
        "$B" usr-overlay --root "$1"
        echo added > "$1/usr/new-file"
        echo changed > "$1/usr/bin/hello"
        echo "new-file: $(cat "$1/usr/new-file")"
        echo "hello: $(cat "$1/usr/bin/hello")"
        echo "mount: $(findmnt -n -o FSTYPE,SOURCE --mountpoint "$1/usr")"
        echo "upper attached: $(findmnt -n -t tmpfs -o SOURCE | grep -c bootc-usr-overlay)"
        echo "held dirs: $(ls -a /run | grep -c bootc-usr-overlay)"
        if "$B" usr-overlay --root "$1" 2>"$1/../second.err"; then echo second: mounted; else echo second: refused; fi
        cat "$1/../second.err"
        "#,
        &[&r],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("overlayfs is now mounted on /usr"), "{all}");
    assert!(all.contains("new-file: added"), "{all}");
    assert!(all.contains("hello: changed"), "{all}");
    assert!(all.contains("mount: overlay bootc-usr-overlay"), "{all}");
    // The upper layer's tmpfs was attached (under /run) only while the overlay was
    // mounted: no tmpfs of ours is left attached, no directory left behind.
    assert!(all.contains("upper attached: 0"), "{all}");
    assert!(all.contains("held dirs: 0"), "{all}");
    assert!(all.contains("second: refused"), "{all}");
    assert!(
        all.contains("an overlay is already mounted there")
            && all.contains("refusing to stack a second one"),
        "{all}"
    );
    // The lower /usr never saw the writes; the namespace took the overlay with it.
    assert_eq!(
        fs::read_to_string(root.join("usr/bin/hello")).unwrap(),
        "original\n"
    );
    assert!(!root.join("usr/new-file").exists());

    // The alias, and --read-only: the overlay is there but refuses writes.
    let out = in_namespace(
        r#"
        "$B" unlock --read-only --root "$1"
        if echo x > "$1/usr/new-file" 2>/dev/null; then echo write: ok; else echo write: refused; fi
        echo "opts: $(findmnt -n -o FSTYPE,OPTIONS --mountpoint "$1/usr")"
        "#,
        &[&r],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("A read-only overlayfs"), "{all}");
    assert!(all.contains("write: refused"), "{all}");
    assert!(all.contains("opts: overlay ro"), "{all}");
    assert!(!root.join("usr/new-file").exists());
}

fn skip_unless(tools: &[&str]) -> bool {
    bootc_test_fixtures::skip::need_root() && bootc_test_fixtures::skip::need_tools(tools)
}

#[test]
fn soft_reboot_prepares_nextroot_only_when_the_kernel_is_the_same() {
    if !can_run(&["unshare", "findmnt"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let run = s.t.path().join("run");
    let nextroot = run.join("nextroot");

    // v2 has v1's kernel, initramfs and kernel arguments: the next root is composed at
    // RUN/nextroot, as the initramfs would compose it.
    let mut args = s.args(&v1, &["switch", "--apply", "--soft-reboot=required"]);
    args.push(s.imgref("v2"));
    let script = format!(
        r#"
        "$B" "$@"
        echo "version: $(cat {n}/usr/share/version)"
        echo "etc: $(cat {n}/etc/default.conf)"
        echo "root: $(findmnt -n -o FSTYPE --mountpoint {n})"
        test -d {n}/sysroot/composefs && echo sysroot: bound
        "#,
        n = nextroot.display()
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_namespace(&script, &refs);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Prepared "), "{all}");
    assert!(all.contains("Not soft-rebooting"), "{all}");
    assert!(all.contains("version: 2"), "{all}");
    assert!(all.contains("etc: setting=v2"), "{all}");
    assert!(all.contains("root: overlay"), "{all}");
    assert!(all.contains("sysroot: bound"), "{all}");
    // Outside the namespace nothing stays mounted.
    assert!(fs::read_dir(&nextroot).unwrap().next().is_none());

    // Status: the staged v2 can be soft-rebooted into.
    let st = s.status(&v1);
    assert_eq!(st["status"]["staged"]["softRebootCapable"], true, "{st}");
    assert_eq!(st["status"]["booted"]["softRebootCapable"], false, "{st}");
    assert!(st["status"]["usrOverlay"].is_null(), "{st}");
    let human = s.bootc_ok(&v1, &["status"]);
    assert!(human.contains("Soft-reboot: yes"), "{human}");

    // Other kernel arguments: `required` refuses, `auto` reboots instead, and neither
    // mounts anything.
    s.kargs_image("k.toml", "kargs", 2, "kargs = [\"quiet\"]\n");
    let mut args = s.args(&v1, &["switch", "--apply", "--soft-reboot=required"]);
    args.push(s.imgref("kargs"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_namespace(r#""$B" "$@""#, &refs);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("cannot soft-reboot into") && all.contains("other kernel arguments"),
        "{all}"
    );
    let st = s.status(&v1);
    assert_eq!(st["status"]["staged"]["softRebootCapable"], false, "{st}");

    // (The staged deployment is applied as it is: staging it again would be unchanged.)
    let args = s.args(
        &v1,
        &[
            "upgrade",
            "--from-downloaded",
            "--apply",
            "--soft-reboot=auto",
        ],
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_namespace(
        &format!(
            r#""$B" "$@"; findmnt --mountpoint {} >/dev/null && echo nextroot: mounted || echo nextroot: empty"#,
            nextroot.display()
        ),
        &refs,
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Soft reboot not possible"), "{all}");
    assert!(all.contains("Not rebooting"), "{all}");
    assert!(all.contains("nextroot: empty"), "{all}");

    // Without --apply (as upstream) the next root is only prepared: a later
    // `systemctl soft-reboot` boots it, nothing is restarted now.
    let mut args = s.args(&v1, &["switch", "--soft-reboot=required"]);
    args.push(s.imgref("v2"));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = in_namespace(
        &format!(
            r#""$B" "$@"; echo "version: $(cat {}/usr/share/version)""#,
            nextroot.display()
        ),
        &refs,
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Prepared "), "{all}");
    assert!(all.contains("`systemctl soft-reboot` boots it"), "{all}");
    assert!(!all.contains("Not soft-rebooting"), "{all}");
    assert!(all.contains("version: 2"), "{all}");

    // --check only looks: it takes no --soft-reboot.
    let out = s.bootc(&v1, &["upgrade", "--check", "--soft-reboot=auto"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--check"),
        "{out:?}"
    );
}
