//! Host tests of issue 15 items 1 and 5: the install configuration an image ships
//! (`bootc/install/*.toml`), `install print-configuration`, `--karg-delete`,
//! `--root-ssh-authorized-keys`, and the update stamps finalize removes.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bootc_test_fixtures::{images, oci};
use common::system::*;
use common::*;

/// The boot loaders (`install --bootloader`) the kargs scenario runs with.
const LOADERS: &[&str] = &["systemd", "grub"];

/// An architecture that is not this machine's.
fn other_arch() -> &'static str {
    if std::env::consts::ARCH == "x86_64" {
        "aarch64"
    } else {
        "x86_64"
    }
}

/// Writes `v1` plus the layer `extra` to the OCI layout at `layout` as `tag`.
fn image_with(layout: &Path, tag: &str, extra: oci::Layer) {
    let mut layers = images::bootable(1);
    layers.push(extra);
    oci::write_image(layout, tag, &layers, &[]).unwrap();
}

/// A layer with `/usr/lib/bootc/install/<name>` for each `(name, toml)`.
fn install_configs(files: &[(&str, &str)]) -> oci::Layer {
    let mut l = oci::Layer::new()
        .dir("usr/lib/bootc", 0o755)
        .dir("usr/lib/bootc/install", 0o755);
    for (name, toml) in files {
        l = l.file(&format!("usr/lib/bootc/install/{name}"), *toml, 0o644);
    }
    l
}

#[test]
fn install_configuration_kargs_deletions_and_root_keys_land_in_the_deployment() {
    if !can_run(&["grub-mkimage", "bootctl"]) {
        return;
    }
    let _g = serial();
    let this = std::env::consts::ARCH;
    let other = other_arch();
    let keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBootcTest test@bootc\n";
    for loader in LOADERS {
        let keys_dir = tempdir("bootc-keys-");
        let keys_file = keys_dir.path().join("authorized_keys");
        fs::write(&keys_file, keys).unwrap();
        let keys_arg = keys_file.to_str().unwrap().to_string();
        let s = System::install_image(
            1 << 30,
            &[],
            "loop",
            |layout| {
                let base = "[install]\nkargs = [\"cfg=1\", \"gone=1\", \"console=tty0\"]\nkarg-deletes = [\"drop\"]\n# to-filesystem keeps the filesystem it is given\nroot-fs-type = \"xfs\"\n";
                let other_arch = format!(
                    "[install]\nmatch-architectures = [\"{other}\"]\nkargs = [\"never=1\"]\n"
                );
                let this_arch = format!(
                    "[install]\nmatch-architectures = [\"{this}\"]\nkargs = [\"arch=1\"]\n"
                );
                let layer = install_configs(&[
                    ("10-base.toml", base),
                    ("20-other-arch.toml", &other_arch),
                    ("30-this-arch.toml", &this_arch),
                    ("README", "not a .toml file: not read\n"),
                ])
                // /etc's file of the same name replaces /usr/lib's.
                .dir("etc/bootc", 0o755)
                .dir("etc/bootc/install", 0o755)
                .file(
                    "etc/bootc/install/30-this-arch.toml",
                    "[install]\nkargs = [\"etc=1\"]\n",
                    0o644,
                )
                .dir("usr/lib/bootc/kargs.d", 0o755)
                .file(
                    "usr/lib/bootc/kargs.d/10.toml",
                    "kargs = [\"kd=1\", \"drop\", \"drop=2\"]\n",
                    0o644,
                )
                .symlink("root", "var/roothome");
                image_with(layout, "config", layer);
            },
            "config",
            &[
                "--bootloader",
                loader,
                "--karg",
                "u=1",
                "--karg-delete",
                "gone",
                "--karg-delete",
                "console=tty0",
                "--root-ssh-authorized-keys",
                &keys_arg,
            ],
        );
        let v1 = s.v1.clone();
        // The configuration's kargs in file order (20 is for another architecture, 30
        // comes from /etc), kargs.d, the deletions (config's `drop`, --karg-delete's
        // `gone` by name and `console=tty0` exactly), then --karg, then composefs.
        assert_eq!(
            s.entry_of(&v1).options(),
            format!("root=UUID=test rw cfg=1 etc=1 kd=1 u=1 composefs=?sha256:{v1}"),
            "{loader}"
        );

        // root's keys, in the shared /var where the image's /root leads.
        let home = s.root.join("state/os/default/var/roothome");
        let file = home.join(".ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&file).unwrap(), keys, "{loader}");
        let m = fs::symlink_metadata(&file).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 0, 0));
        let m = fs::symlink_metadata(home.join(".ssh")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 0, 0));
        let m = fs::symlink_metadata(&home).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            0o700,
            "a home created for root is private"
        );
    }
}

/// Each bad input fails with a message naming what is wrong, and leaves the target as
/// it was.
#[test]
fn bad_configuration_or_options_write_nothing() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-instcfg-bad-");
    let layout = t.path().join("oci");
    oci::write_image(&layout, "v1", &images::bootable(1), &[]).unwrap();
    image_with(
        &layout,
        "bad-toml",
        install_configs(&[("50-bad.toml", "[install]\nkargs = [\"a\",\n")]),
    );
    image_with(
        &layout,
        "bad-fs",
        install_configs(&[("10-fs.toml", "[install]\nroot-fs-type = \"zfs\"\n")]),
    );
    image_with(&layout, "root-dir", oci::Layer::new().dir("root", 0o700));
    let keys = t.path().join("keys");
    fs::write(&keys, "ssh-ed25519 AAAA x\n").unwrap();
    let keys = keys.to_str().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "bad-toml",
            &[],
            "/usr/lib/bootc/install/50-bad.toml: not valid TOML at line",
        ),
        (
            "bad-fs",
            &[],
            "/usr/lib/bootc/install/10-fs.toml: install.root-fs-type must be one of",
        ),
        (
            "v1",
            &["--root-ssh-authorized-keys", keys],
            "the image has no /root",
        ),
        (
            "root-dir",
            &["--root-ssh-authorized-keys", keys],
            "the image's /root is a directory",
        ),
        (
            "v1",
            &["--root-ssh-authorized-keys", "/nonexistent/keys"],
            "reading /nonexistent/keys",
        ),
        ("v1", &["--karg-delete", "a b"], "one word"),
    ];
    for (tag, extra, want) in cases {
        let root = t.path().join("root");
        fs::create_dir_all(root.join("boot")).unwrap();
        let before = snapshot(&root);
        let src = format!("oci:{}:{tag}", layout.display());
        let out = install_to_filesystem(&src, &root, extra);
        assert!(!out.status.success(), "{tag} {extra:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{tag} {extra:?}: {err}");
        assert_eq!(snapshot(&root), before, "{tag} {extra:?} left files behind");
        fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn print_configuration_merges_as_upstream() {
    let t = tempdir("bootc-printcfg-");
    let root = t.path();
    let print = |all: bool| {
        let r = root.to_str().unwrap();
        let mut args = vec!["install", "print-configuration", "--root", r];
        if all {
            args.push("--all");
        }
        bootc(&args)
    };
    let json = |all: bool| -> serde_json::Value {
        let out = print(all);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No configuration: every key unset.
    assert_eq!(
        json(false),
        serde_json::json!({"filesystem": null, "match-architectures": null, "root-fs-type": null})
    );

    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    put(
        "usr/lib/bootc/install/10-a.toml",
        "[install]\nroot-fs-type = \"xfs\"\nkargs = [\"overridden\"]\n",
    );
    put(
        "usr/lib/bootc/install/20-other.toml",
        &format!(
            "[install]\nmatch-architectures = [\"{}\"]\nroot-fs-type = \"btrfs\"\nkargs = [\"never\"]\n",
            other_arch()
        ),
    );
    put(
        "usr/lib/bootc/install/30-c.toml",
        "[install]\nkargs = [\"c=1\"]\n",
    );
    put(
        "etc/bootc/install/10-a.toml",
        "[install]\nkargs = [\"a=1\"]\n[install.filesystem.root]\ntype = \"ext4\"\n",
    );
    put(
        "run/bootc/install/40-d.toml",
        "[install]\nkarg-deletes = [\"quiet\"]\nblock = [\"direct\"]\n",
    );
    assert_eq!(
        json(false),
        serde_json::json!({
            "filesystem": {"root": {"type": "ext4"}},
            "match-architectures": null,
            "root-fs-type": "ext4",
        })
    );
    assert_eq!(
        json(true),
        serde_json::json!({
            "filesystem": {"root": {"type": "ext4"}},
            "karg-deletes": ["quiet"],
            "kargs": ["a=1", "c=1"],
            "match-architectures": null,
            "root-fs-type": "ext4",
        })
    );
    let out = print(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("40-d.toml: install.block does not apply"),
        "a known upstream key is ignored with a warning: {err}"
    );

    // A malformed file: an error naming it, nothing printed.
    put("etc/bootc/install/50-bad.toml", "[install]\nkargs = 1\n");
    let out = print(false);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let bad = root.join("etc/bootc/install/50-bad.toml");
    assert!(
        err.contains(&format!(
            "{}: install.kargs must be an array of strings",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn finalize_removes_the_update_stamps() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let var = s.root.join("state/os/default/var");
    // What systemd-update-done left on the booted system.
    fs::write(s.etc(&v1).join(".updated"), "").unwrap();
    fs::write(var.join(".updated"), "").unwrap();
    let r = s.imgref("v2");
    s.bootc_ok(&v1, &["switch", &r]);
    let v2 = s.marker().expect("staged marker");
    // Killed right after the first stamp is removed (debug builds): the exchange is
    // done, and the re-run completes the removal.
    let out = s.bootc_env(
        &v1,
        &["composefs-finalize-staged"],
        &[("BOOTC_FAULT_AT", "finalize.update-stamp-removed")],
    );
    assert!(!out.status.success(), "the fault point was not reached");
    assert!(!s.etc(&v2).join(".updated").exists());
    assert!(
        var.join(".updated").exists(),
        "killed before the second one"
    );
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert_eq!(s.order(false)[0], v2);
    assert!(
        !s.etc(&v2).join(".updated").exists(),
        "the merge carried /etc/.updated into the new deployment"
    );
    assert!(!var.join(".updated").exists(), "/var/.updated stayed");
    assert!(
        s.etc(&v1).join(".updated").exists(),
        "the previous deployment's /etc is not touched"
    );
    // Finalizing again (nothing staged) is fine.
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
}

/// `to-disk` formats ext4 only: an image asking for another root filesystem type is
/// refused unless `--filesystem` says what to make, and nothing is left attached.
#[test]
fn to_disk_refuses_another_root_fs_type_unless_told() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-instcfg-disk-");
    let before = system_state(t.path());
    let layout = t.path().join("oci");
    image_with(
        &layout,
        "xfs",
        install_configs(&[(
            "10-fs.toml",
            "[install]\n[install.filesystem.root]\ntype = \"xfs\"\n",
        )]),
    );
    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let src = format!("oci:{}:xfs", layout.display());
    let img_s = img.to_str().unwrap();
    let args = ["install", "to-disk", "--via-loopback", "--wipe"];
    let mut refused: Vec<&str> = args.to_vec();
    refused.extend(["--source-imgref", &src, img_s]);
    let out = bootc(&refused);
    assert!(!out.status.success(), "an xfs configuration was installed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("asks for a xfs root filesystem") && err.contains("--filesystem ext4"),
        "{err}"
    );
    assert_eq!(system_state(t.path()), before, "the refusal leaked");
    let mut told: Vec<&str> = args.to_vec();
    told.extend(["--filesystem", "ext4", "--source-imgref", &src, img_s]);
    let out = bootc(&told);
    assert!(
        out.status.success(),
        "--filesystem ext4 overrides the image"
    );
    assert_eq!(system_state(t.path()), before, "the install leaked");
}
