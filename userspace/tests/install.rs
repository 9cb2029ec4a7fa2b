//! Host integration tests of `bootc install`, as root, with real loop devices, mounts,
//! a local registry and the real initramfs binary. This kernel has no fs-verity, so the
//! repository is created insecure and the entry carries `composefs=?sha256:…`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use bootc::deploy::state::Origin;
use bootc_initramfs_setup::cmdline::DeploymentId;
use bootc_test_fixtures::images;
use bootc_test_fixtures::skip;
use common::*;
use sha2::{Digest, Sha256};

/// Runs `install to-disk --via-loopback` and returns the deployment id.
fn install(img: &Path, imgref: &str, extra: &[&str]) -> DeploymentId {
    let mut args = vec!["install", "to-disk", "--via-loopback"];
    args.extend_from_slice(extra);
    let img_s = img.to_str().unwrap();
    args.extend_from_slice(&["--source-imgref", imgref, img_s]);
    let out = bootc_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Installation complete: deployment "))
        .unwrap_or_else(|| panic!("no deployment id in {text:?}"));
    DeploymentId::parse(id.trim()).unwrap()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

#[test]
fn install_to_disk_from_oci_layout() {
    if !can_run(&["unshare", "sh", "find"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-install-");
    let before = system_state(t.path());
    let l = layout(t.path());
    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let imgref = format!("oci:{}:v1", l.path.display());
    let id = install(
        &img,
        &imgref,
        &["--karg", "console=ttyS0", "--karg", "quiet"],
    );
    assert_eq!(
        system_state(t.path()),
        before,
        "install left mounts or loop devices behind"
    );
    let hex = id.hex().to_string();

    // The partition table: GPT, an ESP of 512 MiB and an x86-64 root.
    let table: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["size"].as_u64().unwrap() * 512, 512 << 20);
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");

    let insp = Inspect::new(&img);
    let uuid = insp.root_uuid();

    // ESP: systemd-boot, the entry, the kernel and initrd copies.
    assert!(
        insp.esp.join("EFI/systemd/systemd-bootx64.efi").is_file(),
        "systemd-boot not installed"
    );
    assert!(
        insp.esp.join("EFI/BOOT/BOOTX64.EFI").is_file(),
        "fallback loader not installed"
    );
    let entries: Vec<_> = std::fs::read_dir(insp.esp.join("loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec![format!("bootc_composefs-{hex}.conf")]);
    let entry = std::fs::read_to_string(
        insp.esp
            .join(format!("loader/entries/bootc_composefs-{hex}.conf")),
    )
    .unwrap();
    assert_eq!(
        entry,
        format!(
            "title Bootc Test OS v1\nversion 1\nsort-key bootc-000\nlinux /bootc_composefs-{hex}/vmlinuz\ninitrd /bootc_composefs-{hex}/initramfs.img\noptions root=UUID={uuid} rw console=ttyS0 quiet composefs=?sha256:{hex}\n"
        )
    );
    let kernel = images::pseudo_random(256 * 1024, 1);
    let initrd = images::pseudo_random(128 * 1024, 2);
    assert_eq!(
        std::fs::read(insp.esp.join(format!("bootc_composefs-{hex}/vmlinuz"))).unwrap(),
        kernel
    );
    assert_eq!(
        std::fs::read(
            insp.esp
                .join(format!("bootc_composefs-{hex}/initramfs.img"))
        )
        .unwrap(),
        initrd
    );

    // The root: repository, image, state, shared var, origin.
    let root = &insp.root;
    let repo_md = std::fs::metadata(root.join("composefs")).unwrap();
    assert_eq!(repo_md.permissions().mode() & 0o7777, 0o700);
    assert!(root.join("composefs/meta.json").is_file());
    assert!(root.join(format!("composefs/images/{hex}")).exists());
    let deploy = root.join(format!("state/deploy/{hex}"));
    assert_eq!(
        std::fs::read_to_string(deploy.join("etc/hostname")).unwrap(),
        "bootc-test\n"
    );
    assert_eq!(
        std::fs::read_to_string(deploy.join("etc/default.conf")).unwrap(),
        "setting=v1\n"
    );
    let shadow = std::fs::symlink_metadata(deploy.join("etc/shadow")).unwrap();
    assert_eq!(shadow.permissions().mode() & 0o7777, 0o600);
    assert_eq!(
        std::fs::read_link(deploy.join("etc/localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/UTC")
    );
    assert_eq!(
        std::fs::read_link(deploy.join("var")).unwrap(),
        Path::new("../../os/default/var")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("state/os/default/var/lib/seeded")).unwrap(),
        "from the image\n"
    );
    let top: Vec<_> = std::fs::read_dir(root.join("state/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, vec![hex.clone()], "no leftovers in state/deploy");
    let origin_path = deploy.join(format!("{hex}.origin"));
    let origin = Origin::parse(
        &std::fs::read_to_string(&origin_path).unwrap(),
        &origin_path,
    )
    .unwrap();
    assert_eq!(
        origin.image_reference,
        format!("ostree-unverified-image:{imgref}")
    );
    assert_eq!(origin.boot_type, "bls");
    assert_eq!(
        origin.boot_digest.as_deref(),
        Some(sha256_hex(&[&kernel, &initrd]).as_str())
    );
    assert_eq!(
        origin.manifest_digest.as_deref(),
        Some(l.v1.manifest_digest.as_str())
    );
    // The image is tagged (a GC root).
    let refs = std::fs::read_dir(root.join("composefs/streams/refs/oci"))
        .unwrap()
        .count();
    assert!(refs >= 1, "the pulled image is not tagged");

    // The initramfs binary mounts exactly the image's tree from this disk.
    let bin = initramfs_setup_bin();
    let target = insp.dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    // The root is mounted read-only for inspection; setup-root only reads it.
    let script = format!(
        "set -e; {bin} setup-root --sysroot {root} --cmdline 'root=UUID={uuid} rw composefs=?sha256:{hex}' --target {target}; cd {target}; {LIST_SCRIPT}",
        bin = bin.display(),
        root = root.display(),
        target = target.display(),
    );
    let listing = stdout(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let found = parse_listing(&listing);
    let expected = expected_tree(&images::bootable(1));
    let diff: Vec<String> = expected
        .keys()
        .chain(found.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| expected.get(*k) != found.get(*k))
        .map(|k| {
            format!(
                "{k}: expected {:?}, found {:?}",
                expected.get(k),
                found.get(k)
            )
        })
        .collect();
    assert!(
        diff.is_empty(),
        "the mounted tree differs from the image:\n{}",
        diff.join("\n")
    );
    drop(insp);
    assert_eq!(
        system_state(t.path()),
        before,
        "inspection left mounts or loop devices behind"
    );
}

#[test]
fn install_via_registry_and_oci_archive() {
    if !can_run(&["skopeo", "/usr/bin/docker-registry", "tar"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-transports-");
    let before = system_state(t.path());
    let l = layout(t.path());
    let reg = Registry::start();
    let name = reg.push(&l.path, "v1", "test:v1");

    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let from_registry = install(
        &img,
        &format!("registry:{name}"),
        &["--tls-verify=false", "--quiet"],
    );
    {
        let insp = Inspect::new(&img);
        let hex = from_registry.hex();
        let origin_path = insp.root.join(format!("state/deploy/{hex}/{hex}.origin"));
        let origin = Origin::parse(
            &std::fs::read_to_string(&origin_path).unwrap(),
            &origin_path,
        )
        .unwrap();
        assert_eq!(
            origin.image_reference,
            format!("ostree-unverified-image:registry:{name}")
        );
        assert!(insp
            .esp
            .join(format!("loader/entries/bootc_composefs-{hex}.conf"))
            .is_file());
    }

    let archive = t.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&l.path)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    let img2 = t.path().join("disk2.img");
    disk_image(&img2, DISK_SIZE);
    let from_archive = install(
        &img2,
        &format!("oci-archive:{}:v1", archive.display()),
        &["--quiet"],
    );

    let img3 = t.path().join("disk3.img");
    disk_image(&img3, DISK_SIZE);
    let from_docker = install(
        &img3,
        &format!("docker://{name}"),
        &["--insecure-registry", "--quiet"],
    );

    // The deployment id is the digest of the image's tree: the same whatever the transport.
    let from_oci = {
        // Computed without a disk: pull into a plain directory.
        let sysroot = t.path().join("sysroot");
        std::fs::create_dir(&sysroot).unwrap();
        let fd = bootc::sys::durable::open_dir(rustix::fs::CWD, &sysroot).unwrap();
        let repo = bootc::repo::init::<composefs::fsverity::Sha256HashValue>(&fd, false).unwrap();
        let r =
            bootc::imgref::ImageReference::parse(&format!("oci:{}:v1", l.path.display())).unwrap();
        bootc::repo::pull(&repo, &r, &Default::default())
            .unwrap()
            .id
    };
    assert_eq!(from_registry, from_oci);
    assert_eq!(from_archive, from_oci);
    assert_eq!(from_docker, from_oci);
    assert_eq!(
        system_state(t.path()),
        before,
        "installs left mounts or loop devices behind"
    );
}

#[test]
fn pulls_store_only_new_objects() {
    // Plain directories and the in-process oci: reader: no root needed.
    let t = tempdir("bootc-dedup-");
    let l = layout(t.path());
    let sysroot = t.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let fd = bootc::sys::durable::open_dir(rustix::fs::CWD, &sysroot).unwrap();
    let repo = bootc::repo::init::<composefs::fsverity::Sha256HashValue>(&fd, false).unwrap();
    let r = |tag: &str| {
        bootc::imgref::ImageReference::parse(&format!("oci:{}:{tag}", l.path.display())).unwrap()
    };
    let objects_size = || -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        for d in std::fs::read_dir(sysroot.join("composefs/objects")).unwrap() {
            let d = d.unwrap();
            if d.file_name().len() != 2 {
                continue;
            }
            for f in std::fs::read_dir(d.path()).unwrap() {
                n += 1;
                bytes += f.unwrap().metadata().unwrap().len();
            }
        }
        (n, bytes)
    };

    let v1 = bootc::repo::pull(&repo, &r("v1"), &Default::default()).unwrap();
    let (n1, b1) = objects_size();
    assert_eq!(bootc::repo::count_objects(&fd).unwrap(), n1);
    assert!(b1 > images::BIG_FILE_SIZE as u64);

    let again = bootc::repo::pull(&repo, &r("v1"), &Default::default()).unwrap();
    assert_eq!(again.id, v1.id);
    assert_eq!(again.stats.new_objects(), 0, "{}", again.stats);
    assert_eq!(
        objects_size(),
        (n1, b1),
        "pulling the same image again stored something"
    );

    let v2 = bootc::repo::pull(&repo, &r("v2"), &Default::default()).unwrap();
    assert_ne!(v2.id, v1.id);
    let (n2, b2) = objects_size();
    assert!(n2 > n1);
    // Only the new layer, its metadata and the new EROFS images: the 20 MB base layer
    // and its objects are shared.
    assert!(b2 - b1 < 1 << 20, "v2 added {} bytes", b2 - b1);
    assert_eq!(
        v2.stats.objects_already_present + v2.stats.new_objects(),
        v2.stats.total_objects()
    );

    // Both images are tagged by their deployment.
    for id in [&v1.id, &v2.id] {
        let tag = bootc::repo::deployment_tag(id);
        assert!(
            composefs_oci::resolve_ref(&repo, &tag).is_ok(),
            "{tag} missing"
        );
    }
}

/// A failing install: non-zero exit, the expected message, nothing left mounted.
fn expect_failure(dir: &Path, args: &[&str], message: &str) {
    let before = system_state(dir);
    let out = bootc(args);
    assert!(!out.status.success(), "bootc {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
    assert_eq!(
        system_state(dir),
        before,
        "bootc {args:?} left mounts or loop devices behind"
    );
}

#[test]
fn bad_input_fails_cleanly() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-bad-");
    let l = layout(t.path());
    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let img_s = img.to_str().unwrap();
    let lay = l.path.display().to_string();

    // Unknown transport: rejected while parsing, listing the valid ones.
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--source-imgref",
            "ftp://example.com/os",
            img_s,
        ],
        "unknown transport \"ftp:\"",
    );
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--source-imgref",
            "ftp://example.com/os",
            img_s,
        ],
        "docker://, registry:, oci:, oci-archive:, containers-storage:",
    );
    // Too small.
    let small = t.path().join("small.img");
    disk_image(&small, 100 << 20);
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--source-imgref",
            &format!("oci:{lay}:v1"),
            small.to_str().unwrap(),
        ],
        "is too small: 100 MiB",
    );
    // Unreachable registry (nothing listens on that port).
    let port = free_port();
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--wipe",
            "--tls-verify=false",
            "--source-imgref",
            &format!("docker://127.0.0.1:{port}/nothing:v1"),
            img_s,
        ],
        &format!("pulling docker://127.0.0.1:{port}/nothing:v1"),
    );
    // Missing tag.
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--wipe",
            "--source-imgref",
            &format!("oci:{lay}:nope"),
            img_s,
        ],
        &format!("pulling oci:{lay}:nope"),
    );
    // An image without a kernel.
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--wipe",
            "--source-imgref",
            &format!("oci:{lay}:nokernel"),
            img_s,
        ],
        "the image has no kernel",
    );
    // The disk now holds a partition table: refused without --wipe.
    expect_failure(
        t.path(),
        &[
            "install",
            "to-disk",
            "--via-loopback",
            "--source-imgref",
            &format!("oci:{lay}:v1"),
            img_s,
        ],
        "is not empty (found gpt",
    );
    let fresh = t.path().join("fresh.img");
    disk_image(&fresh, DISK_SIZE);
    // --require-verity: this kernel has no fs-verity, so it must fail (on a kernel
    // with it, the install succeeds).
    let before = system_state(t.path());
    let out = bootc(&[
        "install",
        "to-disk",
        "--via-loopback",
        "--require-verity",
        "--quiet",
        "--source-imgref",
        &format!("oci:{lay}:v1"),
        fresh.to_str().unwrap(),
    ]);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("fs-verity is required"), "{err}");
    }
    assert_eq!(system_state(t.path()), before);
}

#[test]
fn install_to_filesystem_sha512_with_image_kargs() {
    if !can_run(&["unshare", "sh"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-tofs-");
    let before = system_state(t.path());
    let layout_dir = t.path().join("oci");
    let mut layers = images::bootable(1);
    layers.push(
        bootc_test_fixtures::oci::Layer::new()
            .dir("usr/lib/bootc", 0o755)
            .dir("usr/lib/bootc/kargs.d", 0o755)
            .file(
                "usr/lib/bootc/kargs.d/10-console.toml",
                "kargs = [\"console=ttyS0,115200\", \"loglevel=3\"]\n",
                0o644,
            )
            .file(
                "usr/lib/bootc/kargs.d/05-first.toml",
                "kargs = [\"first\"]\n",
                0o644,
            )
            .file(
                "usr/lib/bootc/kargs.d/20-s390x.toml",
                "kargs = [\"nope\"]\nmatch-architectures = [\"s390x\"]\n",
                0o644,
            ),
    );
    bootc_test_fixtures::oci::write_image(&layout_dir, "kargs", &layers, &[]).unwrap();

    // A root filesystem mounted by the caller, with /boot to receive the boot files.
    let root_img = t.path().join("root.img");
    disk_image(&root_img, 1 << 30);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "verity"])
        .arg(&root_img));
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&root_img)
        .arg(&root));
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _umount = Umount(root.clone());
    std::fs::create_dir(root.join("boot")).unwrap();
    let uuid = stdout(
        Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(&root_img),
    )
    .trim()
    .to_string();

    let imgref = format!("oci:{}:kargs", layout_dir.display());
    let root_s = root.to_str().unwrap();
    let args = [
        "install",
        "to-filesystem",
        "--composefs-algorithm",
        "sha512",
        "--karg",
        "extra=1",
        "--quiet",
        "--source-imgref",
        &imgref,
        root_s,
    ];
    let out = bootc_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let id = DeploymentId::parse(
        text.trim()
            .strip_prefix("Installation complete: deployment ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(id.algorithm().name(), "sha512");
    let hex = id.hex();
    assert_eq!(hex.len(), 128);
    let meta = std::fs::read_to_string(root.join("composefs/meta.json")).unwrap();
    assert!(meta.contains("sha512"), "{meta}");
    let entry = std::fs::read_to_string(
        root.join(format!("boot/loader/entries/bootc_composefs-{hex}.conf")),
    )
    .unwrap();
    assert!(
        entry.contains(&format!("\noptions root=UUID={uuid} rw first console=ttyS0,115200 loglevel=3 extra=1 composefs=?sha512:{hex}\n")),
        "{entry}"
    );
    assert!(root.join("boot/EFI/systemd/systemd-bootx64.efi").is_file());
    assert!(root
        .join(format!("boot/bootc_composefs-{hex}/vmlinuz"))
        .is_file());
    assert!(
        !root.join("etc").exists(),
        "bootctl wrote into the physical root"
    );

    // The sha512 deployment mounts.
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let script = format!(
        "set -e; {bin} setup-root --sysroot {root_s} --cmdline 'rw composefs=?sha512:{hex}' --target {target}; cat {target}/usr/share/version {target}/etc/hostname",
        bin = initramfs_setup_bin().display(),
        target = target.display(),
    );
    let shown = stdout(Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert_eq!(shown, "1\nbootc-test\n");

    // Installed once: a second install is refused without --wipe, and works with it.
    let out = bootc(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    let mut wipe_args = args.to_vec();
    wipe_args.insert(2, "--wipe");
    bootc_ok(&wipe_args);
    let deployments = std::fs::read_dir(root.join("state/deploy"))
        .unwrap()
        .count();
    assert_eq!(deployments, 1);
    drop(_umount);
    assert_eq!(
        system_state(t.path()),
        before,
        "left mounts or loop devices behind"
    );
}

#[test]
fn kernel_and_initrd_are_shared_between_deployments() {
    // v1 and v2 have the same kernel and initrd: the second deployment's entry uses the
    // first one's boot directory instead of a second copy.
    if !skip::need_root() {
        return;
    }
    use bootc::boot::bls;
    use bootc::deploy::state::{self, Origin};
    use composefs::fsverity::Sha256HashValue;
    let t = tempdir("bootc-bootdedup-");
    let l = layout(t.path());
    let sysroot = t.path().join("sysroot");
    let boot = sysroot.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let fd = bootc::sys::durable::open_dir(rustix::fs::CWD, &sysroot).unwrap();
    let boot_fd = bootc::sys::durable::open_dir(rustix::fs::CWD, &boot).unwrap();
    let repo = bootc::repo::init::<Sha256HashValue>(&fd, false).unwrap();
    let mut dirs = vec![];
    let mut ids = vec![];
    for (i, tag) in ["v1", "v2"].iter().enumerate() {
        let r = bootc::imgref::ImageReference::parse(&format!("oci:{}:{tag}", l.path.display()))
            .unwrap();
        let pulled = bootc::repo::pull(&repo, &r, &Default::default()).unwrap();
        let (fs, entries) = bootc::repo::boot_tree(&repo, &pulled).unwrap();
        let kernel = bls::find_kernel(entries).unwrap();
        let digest = bls::boot_digest(&repo, &kernel).unwrap();
        let origin = Origin {
            image_reference: r.to_origin(),
            boot_type: "bls".into(),
            boot_digest: Some(digest.clone()),
            bootloader: None,
            boot_tries: None,
            missing_verity_allowed: false,
            manifest_digest: Some(pulled.manifest_digest.clone()),
        };
        state::write_deployment(&fd, &repo, &fs, &pulled.id, &origin, i == 0).unwrap();
        dirs.push(
            state::install_kernel(&repo, &fd, &boot_fd, &pulled.id, &kernel, &digest).unwrap(),
        );
        assert_eq!(Origin::load(&fd, &pulled.id).unwrap(), origin);
        ids.push(pulled.id);
    }
    assert_eq!(
        dirs[0], dirs[1],
        "the second deployment copied the kernel again"
    );
    let copies = std::fs::read_dir(&boot).unwrap().count();
    assert_eq!(copies, 1);
    let mut listed = ids.clone();
    listed.sort();
    assert_eq!(state::list_deployments(&fd).unwrap(), listed);
    // Each deployment's /etc is its own image's.
    let etc = |i: usize, f: &str| sysroot.join(format!("state/deploy/{}/etc/{f}", ids[i].hex()));
    assert!(etc(1, "new-in-v2.conf").is_file());
    assert!(!etc(1, "conf.d/removed-in-v2.conf").exists());
    assert!(etc(0, "conf.d/removed-in-v2.conf").is_file());
    assert_eq!(
        std::fs::read_to_string(etc(1, "default.conf")).unwrap(),
        "setting=v2\n"
    );
}

#[test]
fn interrupted_install_cleans_up() {
    // A "registry" that accepts connections and never answers: the install hangs in the
    // pull until SIGTERM, then must exit with an error and leave nothing mounted.
    if !can_run(&["skopeo"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-interrupt-");
    let before = system_state(t.path());
    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The first connection tells us the install is in its pull (after partitioning and
    // mounting): the moment to interrupt it.
    let (connected, pulling) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = vec![];
        for c in listener.incoming() {
            held.push(c);
            let _ = connected.send(());
        }
    });
    let mut child = Command::new(BOOTC)
        .args(["install", "to-disk", "--via-loopback", "--tls-verify=false"])
        .arg("--source-imgref")
        .arg(format!("docker://127.0.0.1:{port}/hang:v1"))
        .arg(&img)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if pulling
        .recv_timeout(std::time::Duration::from_secs(120))
        .is_err()
    {
        let _ = child.kill();
        panic!("the install never reached its pull");
    }
    assert!(
        !system_state(t.path()).0.is_empty(),
        "the install should have its target mounted while pulling"
    );
    run(Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string()));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(!out.status.success());
    assert!(err.contains("terminated (SIGTERM)"), "{err}");
    assert_eq!(
        system_state(t.path()),
        before,
        "an interrupted install left mounts or loop devices behind"
    );
}

#[test]
fn install_to_disk_with_grub() {
    if !can_run(&["grub-mkimage"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-grub-");
    let before = system_state(t.path());
    let l = layout(t.path());
    let img = t.path().join("disk.img");
    disk_image(&img, DISK_SIZE);
    let imgref = format!("oci:{}:v1", l.path.display());
    let id = install(&img, &imgref, &["--bootloader", "grub", "--quiet"]);
    assert_eq!(system_state(t.path()), before);
    let hex = id.hex();
    let insp = Inspect::new(&img);
    let uuid = insp.root_uuid();
    let efi = std::fs::read(insp.esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    assert_eq!(&efi[..2], b"MZ", "not a PE image");
    assert!(
        !insp.esp.join("loader/entries").exists(),
        "systemd-boot entries written for GRUB"
    );
    assert!(std::fs::read_to_string(insp.esp.join("grub2/grub.cfg"))
        .unwrap()
        .contains("source ${prefix}/user.cfg"));
    let user = std::fs::read_to_string(insp.esp.join("grub2/user.cfg")).unwrap();
    assert!(
        user.contains(&format!(
            "menuentry 'Bootc Test OS v1' --id 'bootc_composefs-{hex}' {{\n    # version '1'\n    linux '/bootc_composefs-{hex}/vmlinuz' 'root=UUID={uuid}' 'rw' 'composefs=?sha256:{hex}'\n    initrd '/bootc_composefs-{hex}/initramfs.img'\n}}\n"
        )),
        "{user}"
    );
    assert!(insp
        .esp
        .join(format!("bootc_composefs-{hex}/vmlinuz"))
        .is_file());
    drop(insp);
    assert_eq!(system_state(t.path()), before);
}
