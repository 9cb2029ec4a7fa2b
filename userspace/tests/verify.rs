//! Content integrity (issue 8, items 1 and 9): a blob that is not what its digest says
//! is refused before anything is named after it, from an `oci:` layout and from a
//! registry on 127.0.0.1; a clean image sharing a refused layer is not poisoned; an
//! object missing from the repository is reported and the next pull restores it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bootc::imgref::ImageReference;
use bootc::repo::{PullOpts, Pulled};
use bootc_test_fixtures::oci::{self, ImageInfo, Layer};
use bootc_test_fixtures::{images, skip};
use common::*;
use composefs::fsverity::{FsVerityHashValue, Sha256HashValue};
use composefs::repository::Repository;
use composefs::tree::RegularFile;
use sha2::{Digest, Sha256};

type Repo = Arc<Repository<Sha256HashValue>>;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `variant_layer(1)` with `/usr/share/version` saying `6` instead of `1`: a valid tar
/// of exactly the same size.
fn tampered_variant_tar() -> Vec<u8> {
    let os_release =
        "NAME=\"Bootc Test OS\"\nID=bootc-test\nVERSION_ID=1\nPRETTY_NAME=\"Bootc Test OS v1\"\n";
    let tar = Layer::new()
        .file("usr/lib/os-release", os_release, 0o644)
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("usr/share/version", "6\n", 0o644)
        .file("etc/default.conf", "setting=v1\n", 0o644)
        .to_tar()
        .unwrap();
    let clean = images::variant_layer(1).to_tar().unwrap();
    assert_eq!(tar.len(), clean.len());
    assert_ne!(tar, clean);
    tar
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// A clean layout with `v1` at `dir/clean` and a copy at `dir/bad` whose second layer
/// blob holds [`tampered_variant_tar`]. Returns (clean, bad, info, tampered digest).
fn clean_and_tampered(dir: &Path) -> (PathBuf, PathBuf, ImageInfo, String) {
    let clean = dir.join("clean");
    let bad = dir.join("bad");
    let info = oci::write_image(&clean, "v1", &images::bootable(1), &[]).unwrap();
    oci::write_image(&bad, "v1", &images::bootable(1), &[]).unwrap();
    let tampered = tampered_variant_tar();
    std::fs::write(blob_path(&bad, &info.layer_digests[1]), &tampered).unwrap();
    (clean, bad, info, sha256(&tampered))
}

/// Rewrites image `tag` of `layout` so its config's second diff_id is `diff_id`
/// (the layer blobs are untouched and match their own digests).
fn with_wrong_diff_id(layout: &Path, tag: &str, info: &ImageInfo, diff_id: &str) {
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_path(layout, &info.config_digest)).unwrap())
            .unwrap();
    config["rootfs"]["diff_ids"][1] = diff_id.into();
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config);
    std::fs::write(blob_path(layout, &config_digest), &config).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob_path(layout, &info.manifest_digest)).unwrap())
            .unwrap();
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = sha256(&manifest);
    std::fs::write(blob_path(layout, &manifest_digest), &manifest).unwrap();
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag {
            m["digest"] = manifest_digest.clone().into();
            m["size"] = manifest.len().into();
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A fresh (insecure: no fs-verity here) repository under `dir/sysroot`.
fn new_repo(dir: &Path) -> (PathBuf, Repo) {
    let sysroot = dir.join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let fd = bootc::sys::durable::open_dir(rustix::fs::CWD, &sysroot).unwrap();
    let repo = bootc::repo::init::<Sha256HashValue>(&fd, false).unwrap();
    (sysroot, repo)
}

fn pull(repo: &Repo, imgref: &str, opts: &PullOpts) -> anyhow::Result<Pulled> {
    bootc::repo::pull(repo, &ImageReference::parse(imgref).unwrap(), opts)
}

/// Every name under the repository's `streams/` and `images/` (recursively).
fn names(repo_dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = vec![];
    for sub in ["streams", "images"] {
        walk(repo_dir, &repo_dir.join(sub), &mut out);
    }
    out.sort();
    out
}

/// Asserts nothing in the repository at `repo_dir` names the image, its config, the
/// layer `diff_id`, or any tag or EROFS image.
fn assert_nothing_named(repo_dir: &Path, info: &ImageInfo, diff_id: &str) {
    let names = names(repo_dir);
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();
    for n in &names {
        assert!(
            !n.contains(&hex(diff_id)),
            "a stream is named after the refused layer: {n} (all: {names:?})"
        );
        assert!(!n.contains("oci-manifest-"), "manifest stored: {n}");
        assert!(!n.contains("oci-config-"), "config stored: {n}");
        assert!(!n.contains("refs/"), "tag stored: {n}");
        assert!(!n.starts_with("images/"), "image stored: {n}");
        assert!(!n.contains(&hex(&info.manifest_digest)), "{n}");
    }
}

/// The content of `/usr/share/version` in the image's deployed tree.
fn deployed_version(repo: &Repo, pulled: &Pulled) -> String {
    let (fs, _) = bootc::repo::boot_tree(repo, pulled).unwrap();
    match bootc::boot::bls::image_file(&fs, "/usr/share/version").unwrap() {
        RegularFile::Inline(data) => String::from_utf8(data.to_vec()).unwrap(),
        _ => panic!("/usr/share/version is not stored inline"),
    }
}

#[test]
fn tampered_layer_is_refused_by_install() {
    if !skip::need_root() || !skip::need_tools(&["mkfs.ext4", "mount", "umount", "blkid"]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-verify-");
    let (_, bad, info, tampered) = clean_and_tampered(t.path());

    let root_img = t.path().join("root.img");
    disk_image(&root_img, 512 << 20);
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&root_img));
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&root_img)
        .arg(&root));
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let umount = Umount(root.clone());
    std::fs::create_dir(root.join("boot")).unwrap();

    let imgref = format!("oci:{}:v1", bad.display());
    let out = bootc(&[
        "install",
        "to-filesystem",
        "--quiet",
        "--source-imgref",
        &imgref,
        root.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a tampered layer was installed");
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "layer 2 of {imgref}: blob {} has digest {tampered}",
        info.layer_digests[1]
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(&expected), "{err}");
    // Nothing names the refused layer, the image or a deployment.
    assert_nothing_named(&root.join("composefs"), &info, &info.layer_digests[1]);
    assert!(
        !root.join("boot/loader/entries").exists() || {
            std::fs::read_dir(root.join("boot/loader/entries"))
                .unwrap()
                .next()
                .is_none()
        }
    );
    let deployments = std::fs::read_dir(root.join("state/deploy"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(deployments, 0);
    drop(umount);
}

#[test]
fn tampered_layer_does_not_poison_a_clean_pull() {
    let t = tempdir("bootc-verify-");
    let (clean, bad, info, tampered) = clean_and_tampered(t.path());
    let (sysroot, repo) = new_repo(t.path());

    let bad_ref = format!("oci:{}:v1", bad.display());
    let err = pull(&repo, &bad_ref, &PullOpts::default()).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "layer 2 of {bad_ref}: blob {} has digest {tampered}",
            info.layer_digests[1]
        )),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
    assert_nothing_named(&sysroot.join("composefs"), &info, &info.layer_digests[1]);

    // The clean image shares that layer (same diff_id): it is fetched, not reused.
    let pulled = pull(
        &repo,
        &format!("oci:{}:v1", clean.display()),
        &PullOpts::default(),
    )
    .unwrap();
    assert_eq!(pulled.manifest_digest, info.manifest_digest);
    assert_eq!(deployed_version(&repo, &pulled), "1\n");
    let digest: composefs_oci::OciDigest = info.manifest_digest.as_str().try_into().unwrap();
    let damage = bootc::integrity::check_image(&repo, &digest).unwrap();
    assert!(damage.is_intact(), "{damage}");
}

#[test]
fn wrong_diff_id_is_refused() {
    let t = tempdir("bootc-verify-");
    let layout = t.path().join("oci");
    let info = oci::write_image(&layout, "v1", &images::bootable(1), &[]).unwrap();
    // The config claims the tampered tar's digest for the (clean) second layer.
    let claimed = sha256(&tampered_variant_tar());
    with_wrong_diff_id(&layout, "v1", &info, &claimed);
    let (sysroot, repo) = new_repo(t.path());

    let imgref = format!("oci:{}:v1", layout.display());
    let err = format!(
        "{:#}",
        pull(&repo, &imgref, &PullOpts::default()).unwrap_err()
    );
    let expected = format!(
        "layer 2 of {imgref}: blob {} uncompresses to digest {}, the config says {claimed}",
        info.layer_digests[1], info.layer_digests[1]
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_nothing_named(&sysroot.join("composefs"), &info, &claimed);
}

#[test]
fn registry_serving_tampered_blobs_is_refused() {
    if !skip::need_tools(&["skopeo", "/usr/bin/docker-registry"]) {
        return;
    }
    let t = tempdir("bootc-verify-");
    let (clean, _, info, wrong_diff_id) = clean_and_tampered(t.path());
    let registry = Registry::start();

    // A registry whose stored blob was replaced with other content of the same size.
    // The push compresses the layers: the registry's manifest (tag `latest`) names them.
    let name = registry.push(&clean, "v1", "tampered");
    let v2 = registry.data_dir().join("docker/registry/v2");
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        v2.join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    let manifest_digest = std::fs::read_to_string(
        v2.join("repositories/tampered/_manifests/tags/latest/current/link"),
    )
    .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest.trim())).unwrap()).unwrap();
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = blob(&layer);
    let original = std::fs::read(&stored).unwrap();
    let mut data = original.clone();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let tampered = sha256(&data);
    std::fs::write(&stored, &data).unwrap();

    let opts = PullOpts {
        insecure_registry: true,
        ..Default::default()
    };
    let (sysroot, repo) = new_repo(t.path());
    let imgref = format!("docker://{name}");
    let err = format!("{:#}", pull(&repo, &imgref, &opts).unwrap_err());
    assert!(
        err.contains(&format!(
            "layer 2 of {imgref}: blob {layer} has digest {tampered}"
        )),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert_nothing_named(&sysroot.join("composefs"), &info, &info.layer_digests[1]);

    // The registry shares blobs between repositories: serve the good one again.
    std::fs::write(&stored, &original).unwrap();

    // An image whose config names a wrong diff_id: skopeo pushes and serves it (it
    // checks no diff_id); the pull refuses it.
    let wrong = t.path().join("wrong");
    let winfo = oci::write_image(&wrong, "v1", &images::bootable(1), &[]).unwrap();
    with_wrong_diff_id(&wrong, "v1", &winfo, &wrong_diff_id);
    let name = registry.push(&wrong, "v1", "wrong-diff-id");
    let imgref = format!("docker://{name}");
    let err = format!("{:#}", pull(&repo, &imgref, &opts).unwrap_err());
    assert!(
        err.contains(&format!(
            "uncompresses to digest {}, the config says {wrong_diff_id}",
            winfo.layer_digests[1]
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("layer 2 of {imgref}: blob ")),
        "{err}"
    );
    assert_nothing_named(&sysroot.join("composefs"), &winfo, &wrong_diff_id);
    drop(registry);
}

/// The objects under `composefs/objects/`, as `xx/rest` names.
fn object_files(repo_dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for d in std::fs::read_dir(repo_dir.join("objects")).unwrap() {
        let d = d.unwrap();
        if d.file_name().len() != 2 {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap() {
            out.push(format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                f.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn missing_object_is_reported_and_restored_by_the_next_pull() {
    let t = tempdir("bootc-verify-");
    let layout = t.path().join("oci");
    let info = oci::write_image(&layout, "v1", &images::bootable(1), &[]).unwrap();
    let (sysroot, repo) = new_repo(t.path());
    let repo_dir = sysroot.join("composefs");
    let imgref = format!("oci:{}:v1", layout.display());
    let digest: composefs_oci::OciDigest = info.manifest_digest.as_str().try_into().unwrap();

    let first = pull(&repo, &imgref, &PullOpts::default()).unwrap();
    assert!(bootc::integrity::check_image(&repo, &digest)
        .unwrap()
        .is_intact());
    let before = object_files(&repo_dir);

    // Remove the object of the 20 MB file (in the base layer and the boot image).
    let (fs, _) = bootc::repo::boot_tree(&repo, &first).unwrap();
    let big = match bootc::boot::bls::image_file(&fs, "/usr/share/big/blob.bin").unwrap() {
        RegularFile::External(id, _) | RegularFile::ExternalNoVerity(id, _) => id.to_hex(),
        _ => panic!("the big file is not an object"),
    };
    let path = repo_dir.join("objects").join(&big[..2]).join(&big[2..]);
    std::fs::remove_file(&path).unwrap();

    let damage = bootc::integrity::check_image(&repo, &digest).unwrap();
    assert!(!damage.is_intact());
    assert_eq!(damage.0.len(), 1, "{damage}");
    assert_eq!(damage.0[0].object, big);
    assert_eq!(damage.0[0].problem, "missing");
    assert_eq!(
        damage.to_string(),
        format!("layer {} needs {big}: missing", info.layer_digests[0])
    );

    // The next pull of the same image (the upgrade/switch path) re-fetches that layer.
    let again = pull(&repo, &imgref, &PullOpts::default()).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.stats.layers_already_present, 1, "{}", again.stats);
    assert!(path.is_file(), "the object was not restored");
    assert!(bootc::integrity::check_image(&repo, &digest)
        .unwrap()
        .is_intact());
    assert_eq!(object_files(&repo_dir), before);

    // The boot image's own object is checked too, and regenerated by a pull.
    let image = first.id.hex().to_string();
    let image_path = repo_dir.join("objects").join(&image[..2]).join(&image[2..]);
    std::fs::remove_file(&image_path).unwrap();
    let damage = bootc::integrity::check_image(&repo, &digest).unwrap();
    assert_eq!(
        damage.to_string(),
        format!("boot image needs {image}: missing")
    );
    let third = pull(&repo, &imgref, &PullOpts::default()).unwrap();
    assert_eq!(third.id, first.id);
    assert!(image_path.is_file());
    assert!(bootc::integrity::check_image(&repo, &digest)
        .unwrap()
        .is_intact());
}

#[test]
fn tampered_manifest_or_config_is_refused() {
    let t = tempdir("bootc-verify-");
    let (sysroot, repo) = new_repo(t.path());
    for which in ["config", "manifest"] {
        let layout = t.path().join(which);
        let info = oci::write_image(&layout, "v1", &images::bootable(1), &[]).unwrap();
        let digest = if which == "config" {
            &info.config_digest
        } else {
            &info.manifest_digest
        };
        // Same size, still valid JSON: one character of a value changed.
        let path = blob_path(&layout, digest);
        let text = std::fs::read_to_string(&path).unwrap();
        let tampered = if which == "config" {
            text.replacen("bootc-test-fixtures", "bootc-test-fixturez", 1)
        } else {
            text.replacen("\"schemaVersion\":2", "\"schemaVersion\":3", 1)
        };
        assert_ne!(tampered, text);
        assert_eq!(tampered.len(), text.len());
        std::fs::write(&path, &tampered).unwrap();

        let imgref = format!("oci:{}:v1", layout.display());
        let err = format!(
            "{:#}",
            pull(&repo, &imgref, &PullOpts::default()).unwrap_err()
        );
        let expected = format!(
            "{which} of {imgref}: blob {digest} has digest {}",
            sha256(tampered.as_bytes())
        );
        assert!(err.contains(&expected), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert_nothing_named(&sysroot.join("composefs"), &info, &info.layer_digests[1]);
    }
}
