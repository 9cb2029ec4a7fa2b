//! Host integration tests of the sealed-image build commands, as root:
//! `bootc container compute-composefs-digest` gives exactly the deployment id
//! `bootc install` gives the same image (the test image, and one with whiteouts, hard
//! links, xattrs and a 0600 file of another owner), whatever is mounted below the
//! rootfs; `bootc container ukify` builds a UKI whose `.cmdline` names that id.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use bootc::boot::uki;
use bootc_test_fixtures::images::{self, FILE_CAPS};
use bootc_test_fixtures::oci::{self, Layer};
use bootc_test_fixtures::skip;
use common::system::*;
use common::*;

/// The image with everything the digest must treat exactly as the install does.
fn tricky_layers() -> Vec<Layer> {
    let mut layers = images::bootable(2);
    layers.push(
        Layer::new()
            .dir("usr/share/tricky", 0o755)
            .file("usr/share/tricky/linked", "one inode, three names\n", 0o644)
            .hardlink("usr/share/tricky/link-1", "usr/share/tricky/linked")
            .hardlink("usr/share/tricky/link-2", "usr/share/tricky/linked")
            .file("usr/share/tricky/secret", "0600, uid 4321\n", 0o600)
            .owner(4321, 4322)
            .file("usr/bin/capable", "caps\n", 0o755)
            .xattr("security.capability", &FILE_CAPS)
            .xattr("user.dropped", b"not in the allowlist")
            .file("usr/share/tricky/sticky", "x\n", 0o1755)
            // Whiteouts of a file and of a whole directory of the base layer.
            .whiteout("usr/bin/hello")
            .whiteout("usr/share/empty")
            .whiteout("etc/conf.d/keep.conf")
            // Emptied by the transforms on both sides.
            .file("boot/stale-kernel", "x\n", 0o644)
            .dir("run", 0o755)
            .dir("run/lock", 0o755)
            .dir("tmp", 0o1777)
            .file("tmp/kept", "part of the image\n", 0o644),
    );
    layers
}

/// `bootc container compute-composefs-digest ARGS…`, asserted to succeed; stdout.
fn digest(args: &[&str]) -> String {
    let mut all = vec!["container", "compute-composefs-digest"];
    all.extend_from_slice(args);
    let out = bootc_ok(&all);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn unpack(layout: &Path, tag: &str, dest: &Path) {
    fs::create_dir(dest).unwrap();
    oci::unpack_image(layout, tag, dest).unwrap();
}

#[test]
fn digest_of_test_image_equals_install_id() {
    if !can_run(&["touch"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let t = tempdir("bootc-sealed-");
    let rootfs = t.path().join("rootfs");
    unpack(&s.layout, "v1", &rootfs);
    let dump = t.path().join("dump");
    let got = digest(&[
        rootfs.to_str().unwrap(),
        "--write-dumpfile-to",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(got, format!("sha256:{}", s.v1));
    // The dumpfile is the boot-transformed tree: /boot emptied, the kernel listed.
    let text = fs::read_to_string(&dump).unwrap();
    assert!(text.lines().any(|l| l.starts_with("/boot ")), "{text}");
    assert!(!text.contains("/boot/"), "{text}");
    assert!(text.contains(&format!("/usr/lib/modules/{}/vmlinuz ", images::KVER)));

    // Another algorithm, another id (the one a sha512 repository would give).
    let sha512 = digest(&[rootfs.to_str().unwrap(), "--algorithm", "sha512"]);
    assert!(
        sha512.starts_with("sha512:") && sha512.len() == 7 + 128,
        "{sha512}"
    );
}

#[test]
fn digest_of_tricky_image_equals_install_id() {
    if !can_run(&["touch"]) {
        return;
    }
    let _g = serial();
    let s = System::install_image(
        1 << 30,
        &[],
        "loop",
        |layout| {
            oci::write_image(layout, "tricky", &tricky_layers(), &[]).unwrap();
        },
        "tricky",
        &[],
    );
    let t = tempdir("bootc-sealed-");
    let rootfs = t.path().join("rootfs");
    unpack(&s.layout, "tricky", &rootfs);
    // The unpacked tree really has what the test is about.
    let md = |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(md("usr/share/tricky/linked").nlink(), 3);
    assert_eq!(
        (
            md("usr/share/tricky/secret").uid(),
            md("usr/share/tricky/secret").mode() & 0o7777
        ),
        (4321, 0o600)
    );
    assert!(!rootfs.join("usr/bin/hello").exists());
    assert!(!rootfs.join("usr/share/empty").exists());
    let caps = Command::new("getfattr")
        .args(["-n", "security.capability", "--only-values"])
        .arg(rootfs.join("usr/bin/capable"))
        .output()
        .unwrap();
    assert_eq!(caps.stdout, FILE_CAPS);

    assert_eq!(
        digest(&[rootfs.to_str().unwrap()]),
        format!("sha256:{}", s.v1)
    );
}

#[test]
fn sha512_digest_equals_sha512_install_id() {
    if !can_run(&["touch"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-sealed-");
    let layout = t.path().join("oci");
    oci::write_image(&layout, "v2", &images::bootable(2), &[]).unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("boot")).unwrap();
    let src = format!("oci:{}:v2", layout.display());
    let out = install_to_filesystem(&src, &root, &["--composefs-algorithm", "sha512"]);
    assert!(out.status.success(), "install of {src} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .split("deployment ")
        .nth(1)
        .expect("install prints the id")
        .trim()
        .to_string();
    assert!(id.starts_with("sha512:"), "{id}");
    let rootfs = t.path().join("rootfs");
    unpack(&layout, "v2", &rootfs);
    assert_eq!(
        digest(&[rootfs.to_str().unwrap(), "--algorithm", "sha512"]),
        id
    );
}

#[test]
fn mounts_are_left_out() {
    if !can_run(&["touch"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-sealed-");
    let layout = t.path().join("oci");
    oci::write_image(&layout, "v1", &images::bootable(1), &[]).unwrap();
    let rootfs = t.path().join("rootfs");
    unpack(&layout, "v1", &rootfs);
    let before = digest(&[rootfs.to_str().unwrap()]);
    let mut mounted = vec![];
    for (dir, fstype) in [("proc", "proc"), ("sys", "sysfs"), ("tmp", "tmpfs")] {
        let d = rootfs.join(dir);
        fs::create_dir_all(&d).unwrap();
        mounted.push(d.clone());
        run(Command::new("mount").args(["-t", fstype, fstype]).arg(&d));
    }
    fs::write(rootfs.join("tmp/build-junk"), "x").unwrap();
    let host_file = t.path().join("hostname");
    fs::write(&host_file, "the build container\n").unwrap();
    let hostname = rootfs.join("etc/hostname");
    run(Command::new("mount")
        .arg("--bind")
        .arg(&host_file)
        .arg(&hostname));
    mounted.push(hostname);
    let during = digest(&[rootfs.to_str().unwrap()]);
    for d in mounted.iter().rev() {
        run(Command::new("umount").arg(d));
    }
    // proc, sys and tmp did not exist in the image: the empty mount points are the
    // only difference the mounts leave (the same as creating the directories).
    let after = digest(&[rootfs.to_str().unwrap()]);
    assert_eq!(during, after, "the mounts' content changed the digest");
    assert_ne!(
        before, after,
        "three new directories must change the digest"
    );
}

/// Whether ukify can run (else a skip, or a failure under CI).
fn have_ukify() -> bool {
    let ok = Path::new("/usr/lib/systemd/ukify").is_file()
        && Command::new("/usr/bin/python3")
            .args(["-c", "import pefile"])
            .status()
            .is_ok_and(|s| s.success());
    ok || skip::skip("ukify or python3-pefile is not installed")
}

#[test]
fn ukify_builds_a_sealed_uki() {
    if !can_run(&["touch"]) || !have_ukify() {
        return;
    }
    let t = tempdir("bootc-sealed-");
    let layout = t.path().join("oci");
    let mut layers = images::bootable(1);
    layers.push(
        Layer::new()
            .dir("usr/lib/bootc", 0o755)
            .dir("usr/lib/bootc/kargs.d", 0o755)
            .file(
                "usr/lib/bootc/kargs.d/10-console.toml",
                "kargs = [\"console=ttyS0,115200\", \"quiet\"]\n",
                0o644,
            ),
    );
    oci::write_image(&layout, "k", &layers, &[]).unwrap();
    let rootfs = t.path().join("rootfs");
    unpack(&layout, "k", &rootfs);
    let id = digest(&[rootfs.to_str().unwrap()]);

    let out = t.path().join("sealed.efi");
    bootc_ok(&[
        "container",
        "ukify",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "--output",
        out.to_str().unwrap(),
    ]);
    let mut buf = vec![];
    let u = uki::read(&out, &mut buf).unwrap();
    assert_eq!(
        u.cmdline,
        format!("console=ttyS0,115200 quiet composefs={id}")
    );
    let k = u.composefs().unwrap();
    assert_eq!(k.id.to_string(), id);
    assert!(!k.insecure);
    assert_eq!(u.uname.as_deref(), Some(images::KVER));
    assert!(u.osrel.as_deref().unwrap().contains("ID=bootc-test"));
    let kernel =
        fs::read(rootfs.join(format!("usr/lib/modules/{}/vmlinuz", images::KVER))).unwrap();
    assert_eq!(u.linux, kernel.as_slice());
    let initrd =
        fs::read(rootfs.join(format!("usr/lib/modules/{}/initramfs.img", images::KVER))).unwrap();
    assert!(u.initrd.unwrap().ends_with(&initrd));

    // Put into the image's /boot (as the README says), it does not change the digest
    // it carries: /boot is emptied by the boot transform.
    fs::create_dir_all(rootfs.join("boot/EFI/Linux")).unwrap();
    fs::copy(&out, rootfs.join("boot/EFI/Linux/os.efi")).unwrap();
    assert_eq!(digest(&[rootfs.to_str().unwrap()]), id);

    // --allow-missing-verity: composefs=?…, the same digest.
    let out2 = t.path().join("insecure.efi");
    bootc_ok(&[
        "container",
        "ukify",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--allow-missing-verity",
        "--",
        "--output",
        out2.to_str().unwrap(),
    ]);
    let mut buf = vec![];
    let u = uki::read(&out2, &mut buf).unwrap();
    assert!(
        u.cmdline.ends_with(&format!(" composefs=?{id}")),
        "{}",
        u.cmdline
    );
    assert!(u.composefs().unwrap().insecure);

    // A broken kargs.d file is refused before ukify runs, naming the file.
    fs::write(
        rootfs.join("usr/lib/bootc/kargs.d/20-bad.toml"),
        "kargs = [\"composefs=sha256:00\"]\n",
    )
    .unwrap();
    let out3 = t.path().join("bad.efi");
    let o = bootc(&[
        "container",
        "ukify",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "--output",
        out3.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("20-bad.toml"), "{err}");
    assert!(!out3.exists());
}
