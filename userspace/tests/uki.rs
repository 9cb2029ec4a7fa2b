//! Host integration tests of UKI deployments (boot type `uki`), as root, with UKIs
//! built by `bootc container ukify` (systemd's ukify) from the test images: install
//! puts the UKI on the ESP with an entry booting it (systemd-boot: `efi`, GRUB:
//! `chainloader`) and `boot_type=uki`; a UKI sealed to
//! another image and an addon that sets `composefs=` are refused with nothing changed
//! on disk; upgrade, finalize, rollback; gc keeps the UKIs entries use and removes the
//! dropped one with its addons; status says `bootType: Uki` and `missingVerityAllowed`
//! as each UKI's sealed command line does.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Layer};
use bootc_test_fixtures::skip;
use common::system::*;
use common::*;

const UKIFY: &str = "/usr/lib/systemd/ukify";
const ADDON_STUB: &str = "/usr/lib/systemd/boot/efi/addonx64.efi.stub";

/// Whether ukify can run (else a skip, or a failure under CI).
fn have_ukify() -> bool {
    let ok = Path::new(UKIFY).is_file()
        && Path::new(ADDON_STUB).is_file()
        && Command::new("/usr/bin/python3")
            .args(["-c", "import pefile"])
            .status()
            .is_ok_and(|s| s.success());
    ok || skip::skip("ukify, its addon stub or python3-pefile is not installed")
}

/// The sealed UKI of the test image `v<version>` (written to `out`), built as an OS
/// builder would: unpack the rootfs, `bootc container ukify --rootfs [EXTRA…]` it.
fn build_uki(layout: &Path, version: u32, work: &Path, extra: &[&str]) -> Vec<u8> {
    let tag = format!("v{version}");
    let rootfs = work.join(format!("rootfs-{tag}"));
    fs::create_dir(&rootfs).unwrap();
    oci::unpack_image(layout, &tag, &rootfs).unwrap();
    let out = work.join(format!("{tag}.efi"));
    let mut args = vec!["container", "ukify", "--rootfs", rootfs.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["--", "--output", out.to_str().unwrap()]);
    bootc_ok(&args);
    fs::read(out).unwrap()
}

/// A UKI addon whose `.cmdline` is `cmdline`, built with ukify and the addon stub.
fn build_addon(cmdline: &str, out: &Path) -> Vec<u8> {
    let st = Command::new("/usr/bin/python3")
        .args([
            UKIFY,
            "build",
            "--stub",
            ADDON_STUB,
            "--cmdline",
            cmdline,
            "--output",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success(), "ukify build of the addon failed");
    fs::read(out).unwrap()
}

/// Writes `tag`: test image `v<version>` with `uki` at /boot/EFI/Linux/os.efi and each
/// addon at /boot/EFI/Linux/os.efi.extra.d/<name>.
fn uki_image(layout: &Path, tag: &str, version: u32, uki: &[u8], addons: &[(&str, &[u8])]) {
    let mut layers = images::bootable(version);
    let mut l = Layer::new()
        .dir("boot/EFI", 0o755)
        .dir("boot/EFI/Linux", 0o755)
        .file("boot/EFI/Linux/os.efi", uki.to_vec(), 0o644);
    if !addons.is_empty() {
        l = l.dir("boot/EFI/Linux/os.efi.extra.d", 0o755);
        for (name, data) in addons {
            l = l.file(
                &format!("boot/EFI/Linux/os.efi.extra.d/{name}"),
                data.to_vec(),
                0o644,
            );
        }
    }
    layers.push(l);
    oci::write_image(layout, tag, &layers, &[]).unwrap();
}

/// What the tests build: the UKIs of v1–v3 and two addons.
#[derive(Clone)]
struct Built {
    uki: Vec<Vec<u8>>,
    addon: Vec<u8>,
    hostile: Vec<u8>,
}

/// Builds the UKIs of v1–v3 (from the test images in `layout`) and the addons in `work`.
fn build(layout: &Path, work: &Path) -> Built {
    // v3's is sealed with `composefs=?…` (boots without fs-verity).
    let uki: Vec<Vec<u8>> = (1..=3)
        .map(|v| {
            let extra: &[&str] = if v == 3 {
                &["--allow-missing-verity"]
            } else {
                &[]
            };
            build_uki(layout, v, work, extra)
        })
        .collect();
    let addon = build_addon("console=ttyS1", &work.join("console.addon.efi"));
    let hostile = build_addon(
        &format!("composefs=sha256:{}", "ab".repeat(32)),
        &work.join("hostile.addon.efi"),
    );
    Built {
        uki,
        addon,
        hostile,
    }
}

/// Writes v1-uki, v2-uki (with an addon), v3-uki, v2-bad (v2 carrying v1's UKI) and
/// v2-hostile (v2's UKI with an addon setting composefs=) into `layout`.
fn write_images(layout: &Path, b: &Built) {
    let (uki, addon, hostile) = (&b.uki, &b.addon, &b.hostile);
    uki_image(layout, "v1-uki", 1, &uki[0], &[]);
    uki_image(
        layout,
        "v2-uki",
        2,
        &uki[1],
        &[("console.addon.efi", addon)],
    );
    uki_image(layout, "v3-uki", 3, &uki[2], &[]);
    uki_image(layout, "v2-bad", 2, &uki[0], &[]);
    uki_image(
        layout,
        "v2-hostile",
        2,
        &uki[1],
        &[("hostile.addon.efi", hostile)],
    );
}

fn uki_on_esp(s: &System, id: &str) -> PathBuf {
    s.root
        .join(format!("boot/EFI/Linux/bootc/bootc_composefs-{id}.efi"))
}

fn origin(s: &System, id: &str) -> String {
    fs::read_to_string(s.root.join(format!("state/deploy/{id}/{id}.origin"))).unwrap()
}

/// The UKI lifecycle with each boot loader: systemd-boot boots the UKI from an `efi`
/// entry, GRUB chainloads it from a `chainloader` block; the same UKIs (built once)
/// for both.
#[test]
fn uki_install_upgrade_rollback_gc() {
    if !can_run(&["touch", "grub-mkimage"]) || !have_ukify() {
        return;
    }
    let _g = serial();
    let work = tempdir("bootc-uki-");
    let mut built: Option<Built> = None;
    for loader in ["systemd", "grub"] {
        let s = System::install_image(
            1 << 30,
            &[],
            "loop",
            |layout| {
                let b = built.get_or_insert_with(|| build(layout, work.path()));
                write_images(layout, b)
            },
            "v1-uki",
            &["--bootloader", loader],
        );
        uki_lifecycle(&s, built.as_ref().unwrap());
    }
}

fn uki_lifecycle(s: &System, built: &Built) {
    let v1 = s.v1.clone();
    let loader = s.loader.as_str();

    // Install: the UKI on the ESP, an entry booting it (systemd-boot: `efi`, GRUB:
    // `chainloader`) with no kernel, initrd or arguments, no kernel directory.
    assert_eq!(fs::read(uki_on_esp(s, &v1)).unwrap(), built.uki[0]);
    let e = s.entry_of(&v1);
    assert_eq!(
        e.efi,
        format!("/EFI/Linux/bootc/bootc_composefs-{v1}.efi"),
        "{loader}: {}",
        e.text
    );
    assert!(
        e.linux.is_empty() && e.initrd.is_empty() && e.args.is_empty(),
        "{loader}: {}",
        e.text
    );
    let keyword = if loader == "grub" {
        "    chainloader '"
    } else {
        "efi /"
    };
    assert!(e.text.contains(keyword), "{loader}: {}", e.text);
    s.assert_bootable(&s.menu(false), &format!("{loader}: install"));
    assert!(!s.root.join(format!("boot/bootc_composefs-{v1}")).exists());
    let o = origin(s, &v1);
    assert!(o.contains("boot_type=uki"), "{o}");
    assert!(o.contains("\ndigest="), "{o}");
    let st = s.status(&v1);
    assert_eq!(st["status"]["booted"]["composefs"]["bootType"], "Uki");

    // A UKI sealed to another image: refused with both digests and the rebuild
    // command, nothing written.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["switch", &s.imgref("v2-bad")]);
    assert!(err.contains(&format!("sealed to sha256:{v1}")), "{err}");
    assert!(err.contains("but this image is sha256:"), "{err}");
    assert!(err.contains("bootc container ukify"), "{err}");
    assert_eq!(s.disk(), before, "a refused UKI changed the disk");

    // An addon that sets composefs=: refused, nothing written.
    let err = s.bootc_err(&v1, &["switch", &s.imgref("v2-hostile")]);
    assert!(err.contains("hostile.addon.efi"), "{err}");
    assert!(err.contains("composefs="), "{err}");
    assert_eq!(s.disk(), before, "a hostile addon changed the disk");

    // Upgrade to v2-uki: its UKI and its addon, the new entry first after finalize.
    let v2 = s.switch_and_finalize(&v1, "v2-uki", &[]);
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
    assert_eq!(fs::read(uki_on_esp(s, &v2)).unwrap(), built.uki[1]);
    let addon = s.root.join(format!(
        "boot/EFI/Linux/bootc/bootc_composefs-{v2}.efi.extra.d/console.addon.efi"
    ));
    assert_eq!(fs::read(&addon).unwrap(), built.addon);
    assert!(origin(s, &v2).contains("boot_type=uki"));
    let st = s.status(&v2);
    assert_eq!(st["status"]["booted"]["composefs"]["bootType"], "Uki");
    assert_eq!(st["status"]["rollback"]["composefs"]["bootType"], "Uki");

    // Rollback: v1 first again; gc keeps both UKIs (both have entries).
    s.bootc_ok(&v2, &["rollback"]);
    assert_eq!(s.order(false), vec![v1.clone(), v2.clone()]);
    let out = s.bootc_ok(&v1, &["gc"]);
    assert!(out.contains("0 deployments"), "{out}");
    assert!(uki_on_esp(s, &v1).is_file() && uki_on_esp(s, &v2).is_file());

    // Booted v1, upgrade to v3-uki keeping one previous: v2 drops out of the menu, and
    // finalize's gc removes its UKI and its addons, never the UKIs entries reference.
    let v3 = s.switch_and_finalize(&v1, "v3-uki", &["--keep-previous", "1"]);
    assert_eq!(s.order(false), vec![v3.clone(), v1.clone()]);
    // v3's UKI is sealed with `composefs=?`, v1's is not: status follows each UKI.
    let st = s.status(&v3);
    assert_eq!(
        st["status"]["booted"]["composefs"]["missingVerityAllowed"],
        true
    );
    assert_eq!(
        st["status"]["rollback"]["composefs"]["missingVerityAllowed"],
        false
    );
    assert!(origin(s, &v3).contains("\nmissing_verity_allowed=true\n"));
    assert!(!s.root.join(format!("state/deploy/{v2}")).exists());
    let out = s.bootc_ok(&v3, &["gc"]);
    assert!(out.contains("0 deployments, 0 boot directories"), "{out}");
    assert!(!uki_on_esp(s, &v2).exists(), "gc left v2's UKI");
    assert!(!addon.exists() && !addon.parent().unwrap().exists());
    assert_eq!(fs::read(uki_on_esp(s, &v1)).unwrap(), built.uki[0]);
    assert_eq!(fs::read(uki_on_esp(s, &v3)).unwrap(), built.uki[2]);
    s.assert_bootable(&s.menu(false), &format!("{loader}: after gc"));
    assert_eq!(s.menu(false).len(), 2, "{loader}");
}

#[test]
fn mismatching_uki_install_refused_before_writing() {
    if !can_run(&["touch"]) || !have_ukify() {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-uki-");
    let layout = t.path().join("oci");
    for v in 1..=2 {
        oci::write_image(&layout, &format!("v{v}"), &images::bootable(v), &[]).unwrap();
    }
    let uki1 = build_uki(&layout, 1, t.path(), &[]);
    uki_image(&layout, "v2-bad", 2, &uki1, &[]);
    let root = t.path().join("root");
    fs::create_dir_all(root.join("boot")).unwrap();
    let before = snapshot(&root);
    let src = format!("oci:{}:v2-bad", layout.display());
    let out = install_to_filesystem(&src, &root, &[]);
    assert!(
        !out.status.success(),
        "installing a mismatching UKI succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is sealed to sha256:"), "{err}");
    assert!(err.contains("but this image is sha256:"), "{err}");
    assert!(err.contains("bootc container ukify"), "{err}");
    // The repository may hold what the pull stored; nothing else is written: no
    // state, nothing on the boot partition.
    let after: std::collections::BTreeMap<_, _> = snapshot(&root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("composefs"))
        .collect();
    assert_eq!(
        after, before,
        "a refused install wrote outside the repository"
    );
}
