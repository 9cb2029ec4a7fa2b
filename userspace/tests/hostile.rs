//! Hostile and broken inputs (issue 13 item 5) and permissions (item 6), on a real ext4
//! root installed by `bootc install to-filesystem`: each input is refused with its one
//! expected error line and the root (`boot/`, `composefs/`, `state/`) is byte for byte
//! what it was; what cannot be refused (an /etc full of odd files) is carried safely.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Layer};
use common::system::*;
use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Everything under the root's `boot/`, `composefs/` and `state/` ([`hashed_listing`]),
/// without the `composefs/objects/XX` fan-out directories, which gc leaves in place.
fn disk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for top in ["boot", "composefs", "state"] {
        hashed_listing(root, &root.join(top), &mut out);
    }
    out.retain(|k, v| !(k.starts_with("composefs/objects/") && v.starts_with("d ")));
    out
}

/// The differences between two [`disk`] listings, one line each.
fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = vec![];
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("- {k}")),
            Some(w) if w != v => out.push(format!("~ {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("+ {k}"));
    }
    out
}

/// One ustar header block for `name` (raw bytes: `..` and a leading `/` allowed, which
/// the `tar` crate refuses to write), then `data` padded to 512 bytes.
fn raw_entry(
    name: &[u8],
    kind: u8,
    link: &[u8],
    data: &[u8],
    mode: u32,
    dev: (u32, u32),
) -> Vec<u8> {
    let mut h = [0u8; 512];
    let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    h[..name.len()].copy_from_slice(name);
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, oci::MTIME);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h, 329, 8, dev.0 as u64);
    octal(&mut h, 337, 8, dev.1 as u64);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, data: &[u8]) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'0', b"", data, 0o644, (0, 0))
}

fn symlink(name: &str, target: &str) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'2', target.as_bytes(), b"", 0o777, (0, 0))
}

fn hardlink(name: &str, target: &str) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'1', target.as_bytes(), b"", 0o644, (0, 0))
}

fn chardev(name: &str, dev: (u32, u32)) -> Vec<u8> {
    raw_entry(name.as_bytes(), b'3', b"", b"", 0o666, dev)
}

/// A tar of `entries` with its end-of-archive blocks.
fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// One layer blob as the manifest lists it.
struct Blob {
    data: Vec<u8>,
    media_type: &'static str,
    diff_id: String,
}

impl Blob {
    fn tar(data: Vec<u8>) -> Blob {
        let diff_id = sha256(&data);
        Blob {
            data,
            media_type: "application/vnd.oci.image.layer.v1.tar",
            diff_id,
        }
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&d["sha256:".len()..]), data).unwrap();
    d
}

/// Writes image `tag` to `layout`: `v1`'s layers, then `extra` (raw blobs), with
/// `config` as the config blob when given (else a valid one).
fn write_raw(layout: &Path, tag: &str, extra: Vec<Blob>, config: Option<&[u8]>) {
    let mut blobs: Vec<Blob> = images::bootable(1)
        .iter()
        .map(|l| Blob::tar(l.to_tar().unwrap()))
        .collect();
    blobs.extend(extra);
    let descs: Vec<_> = blobs
        .iter()
        .map(|b| json!({"mediaType": b.media_type, "digest": write_blob(layout, &b.data), "size": b.data.len()}))
        .collect();
    let valid = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": blobs.iter().map(|b| b.diff_id.clone()).collect::<Vec<_>>()},
    }))
    .unwrap();
    let config = config.unwrap_or(&valid);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": write_blob(layout, config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = write_blob(layout, &manifest);
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let ms = index["manifests"].as_array_mut().unwrap();
    ms.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    ms.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The one `error:` line of a failed run: the last line, and the only one.
fn error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line in:\n{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");
    errors[0].to_string()
}

/// Is this [`diff`] line an unnamed piece of an import: an object, or a layer, config
/// or manifest stream checked against its digest (a cache `gc` removes)? With
/// `tagged`, also the boot image and deployment tag a pull makes before the staging
/// checks refuse the image (gc removes a tag no entry boots). Anything else
/// (`state/`, `boot/`, other tags) must not change.
fn import_debris(line: &str, tagged: bool) -> bool {
    let Some(path) = line.strip_prefix("+ ") else {
        return false;
    };
    let mut prefixes = vec![
        "composefs/objects/",
        "composefs/streams/oci-layer-sha256:",
        "composefs/streams/oci-config-sha256:",
        "composefs/streams/oci-manifest-sha256:",
    ];
    if tagged {
        prefixes.extend([
            "composefs/images/",
            "composefs/streams/refs/oci/bootc-deployment-",
        ]);
    }
    prefixes.iter().any(|p| path.starts_with(p))
}

/// `bootc switch` to `tag` fails with one line containing every `expected`; nothing
/// but unnamed import debris was added (see [`import_debris`]), and after `bootc gc`
/// the root is byte for byte what it was.
fn refused(s: &System, tag: &str, tagged: bool, expected: &[&str]) -> String {
    let before = disk(&s.root);
    let err = s.bootc_err(&s.v1, &["switch", &s.imgref(tag)]);
    let line = error_line(&err);
    for e in expected {
        assert!(line.contains(e), "{tag}: expected {e:?} in {line}");
    }
    let d = diff(&before, &disk(&s.root));
    let named: Vec<&String> = d.iter().filter(|l| !import_debris(l, tagged)).collect();
    assert!(
        named.is_empty(),
        "{tag}: the refused switch changed the disk: {named:#?}"
    );
    s.bootc_ok(&s.v1, &["gc"]);
    let d = diff(&before, &disk(&s.root));
    assert!(d.is_empty(), "{tag}: gc left the import behind: {d:#?}");
    eprintln!("{tag}: {line}");
    line
}

#[test]
fn hostile_layers_are_refused_with_nothing_changed() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let outside = tempdir("bootc-outside-");
    let out = outside.path().display().to_string();
    let s = System::install_image(
        1 << 30,
        &[],
        "loop",
        |l| {
            let raw = |tag: &str, entries: Vec<Vec<u8>>| {
                write_raw(l, tag, vec![Blob::tar(tar(&entries))], None)
            };
            raw("dotdot", vec![file("usr/../../../escaped", b"x\n")]);
            raw(
                "dotdot-abs",
                vec![file(&format!("/..{out}/escaped"), b"x\n")],
            );
            raw(
                "symlink-write",
                vec![
                    symlink("usr/share/out", &out),
                    file("usr/share/out/written", b"through the link\n"),
                ],
            );
            raw(
                "symlink-dotdot-write",
                vec![
                    symlink("etc/up", "../../../../../../../../.."),
                    file(&format!("etc/up{out}/written"), b"x\n"),
                ],
            );
            raw(
                "hardlink-out",
                vec![hardlink("usr/share/shadow", "../../../../etc/shadow")],
            );
            raw(
                "hardlink-missing",
                vec![hardlink("usr/share/shadow", "/usr/share/no-such-file")],
            );
            // Corrupt gzip: the blob matches its digest but does not decompress.
            write_raw(
                l,
                "gzip",
                vec![Blob {
                    data: b"\x1f\x8b\x08\x00garbage that is not deflate".repeat(20),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
                    diff_id: sha256(b"whatever"),
                }],
                None,
            );
            // Garbage config JSON (its digest matches).
            write_raw(l, "config", vec![], Some(b"{\"architecture\": amd64,,"));
            // A blob whose digest does not match: v2's top layer replaced in place.
            let v2 = oci::write_image(l, "tampered", &images::bootable(2), &[]).unwrap();
            let hex = &v2.layer_digests[1]["sha256:".len()..];
            let p = l.join("blobs/sha256").join(hex);
            let mut data = fs::read(&p).unwrap();
            let i = data.len() / 2;
            data[i] ^= 1;
            fs::write(&p, data).unwrap();
            // Two kernels.
            let mut two = images::bootable(1);
            two.push(
                Layer::new()
                    .dir("usr/lib/modules/6.1.0-other", 0o755)
                    .file("usr/lib/modules/6.1.0-other/vmlinuz", "k", 0o644)
                    .file("usr/lib/modules/6.1.0-other/initramfs.img", "i", 0o644),
            );
            oci::write_image(l, "twokernels", &two, &[]).unwrap();
        },
        "v1",
        &[],
    );
    let o = out.as_str();
    let dotdot_abs = format!("the image has an invalid file name \"/..{o}\"");
    let through = format!("(a layer adds \"/etc/up{o}/written\" under it)");
    let cases: &[(&str, &[&str])] = &[
        ("dotdot", &["the image has an invalid file name \"/usr/../../..\""]),
        ("dotdot-abs", &[&dotdot_abs]),
        (
            "symlink-write",
            &["the image's /usr/share/out is not a directory (a layer adds \"/usr/share/out/written\" under it)"],
        ),
        ("symlink-dotdot-write", &["the image's /etc/up is not a directory", &through]),
        ("hardlink-out", &["the image has an invalid file name \"/../../../../etc\""]),
        (
            "hardlink-missing",
            &["the image lacks \"no-such-file\" (named by a hard link, or on the way to its target)"],
        ),
        (
            "gzip",
            &["importing layer 3 of oci:", ":gzip: deflate decompression error: invalid code lengths set"],
        ),
        ("config", &[":config: parsing the image config: expected value at line 1 column 18"]),
        (
            "tampered",
            &[":tampered: layer 2 of oci:", " has digest sha256:"],
        ),
        (
            "twokernels",
            &["error: deploying oci:", "the image has more than one kernel (6.1.0-other, 6.12.0-bootc-test); expected exactly one under /usr/lib/modules"],
        ),
    ];
    // What install left that nothing needs goes first, so every case starts clean.
    s.bootc_ok(&s.v1, &["gc"]);
    let mut failures = vec![];
    for (tag, expected) in cases {
        let tagged = *tag == "twokernels";
        let r = std::panic::catch_unwind(|| refused(&s, tag, tagged, expected));
        if let Err(e) = r {
            failures.push(format!("{tag}: {:?}", e.downcast_ref::<String>()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "something was written outside the root"
    );
}

/// Every device node under `dir` (not following symlinks).
fn device_nodes(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for (k, v) in disk_tree(dir) {
        if v.starts_with("s ") && (v.ends_with(" 20000") || v.ends_with(" 60000")) {
            out.push(k);
        }
    }
    out
}

/// [`disk`] of any directory.
fn disk_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.file_type().is_dir() {
            for (k, v) in disk_tree(&e.path()) {
                out.insert(format!("{name}/{k}"), v);
            }
            out.insert(name, "d".into());
        } else if m.file_type().is_file() || m.file_type().is_symlink() {
            out.insert(name, "f".into());
        } else {
            out.insert(name, format!("s {:o}", m.mode() & 0o170000));
        }
    }
    out
}

/// Absolute entry names and absolute hard-link targets stay inside the image (as GNU
/// tar and container engines read them); a device node under /usr lives only in the
/// EROFS image, never as a node on the disk; one under /etc is dropped from the
/// writable copy like the merge drops one from a live /etc.
#[test]
fn absolute_names_and_device_nodes_stay_inside_the_image() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    write_raw(
        &s.layout,
        "abs",
        vec![Blob::tar(tar(&[
            file("/usr/share/abs-file", b"absolute\n"),
            file("/etc/abs-conf", b"absolute in etc\n"),
            hardlink("etc/abs-link", "/etc/abs-conf"),
            chardev("usr/share/mem", (1, 1)),
            chardev("etc/mem", (1, 1)),
        ]))],
        None,
    );
    let out = s.bootc(&s.v1, &["switch", &s.imgref("abs")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("/etc/mem: a device node, not copied"), "{err}");
    let id = s.marker().expect("staged");
    s.bootc_ok(&s.v1, &["composefs-finalize-staged"]);
    let etc = s.etc(&id);
    assert_eq!(
        fs::read_to_string(etc.join("abs-conf")).unwrap(),
        "absolute in etc\n"
    );
    let (a, b) = (
        fs::metadata(etc.join("abs-conf")).unwrap(),
        fs::metadata(etc.join("abs-link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "the hard link is kept");
    assert_eq!(
        device_nodes(&s.root),
        Vec::<String>::new(),
        "device nodes on the disk"
    );
    assert!(!etc.join("mem").exists());
}

/// An /etc holding a symlink out of the tree, a FIFO and a socket goes through the
/// merge at finalize: the symlinks are carried as links (never followed, nothing
/// written where they point), the FIFO and socket are left out and named in the log,
/// finalize does not block on the FIFO, and the booted /etc is untouched.
#[test]
fn etc_with_outside_symlinks_a_fifo_and_a_socket_is_merged_safely() {
    if !can_run(&["mkfifo"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let outside = tempdir("bootc-outside-");
    let o = outside.path().display().to_string();
    let etc = s.etc(&v1);
    std::os::unix::fs::symlink(&o, etc.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../..", etc.join("escape-up")).unwrap();
    // A local file replaced by a link out of the tree: the new version's file must not
    // be written through it.
    fs::remove_file(etc.join("default.conf")).unwrap();
    std::os::unix::fs::symlink(format!("{o}/default.conf"), etc.join("default.conf")).unwrap();
    run(Command::new("mkfifo").arg(etc.join("fifo")));
    // A socket node (bind(2) would need a path shorter than this one).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        etc.join("socket"),
        rustix::fs::FileType::Socket,
        rustix::fs::Mode::from_raw_mode(0o755),
        0,
    )
    .unwrap();
    let old = disk_listing(&etc);

    let r = s.imgref("v2");
    s.bootc_ok(&v1, &["switch", &r]);
    let id = s.marker().expect("staged");
    let out = s.bootc(&v1, &["composefs-finalize-staged"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(s.order(false)[0], id);
    for name in ["fifo", "socket"] {
        assert!(
            err.contains(&format!(
                "/etc/{name}: not carried over (socket, FIFO or device node)"
            )),
            "{err}"
        );
    }
    let new = s.etc(&id);
    assert_eq!(fs::read_link(new.join("escape")).unwrap(), outside.path());
    assert_eq!(
        fs::read_link(new.join("escape-up")).unwrap(),
        Path::new("../../../../../../../../..")
    );
    assert_eq!(
        fs::read_link(new.join("default.conf")).unwrap(),
        Path::new(&format!("{o}/default.conf"))
    );
    for name in ["fifo", "socket"] {
        assert!(
            fs::symlink_metadata(new.join(name)).is_err(),
            "{name} carried"
        );
    }
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "written outside"
    );
    assert_eq!(disk_listing(&etc), old, "the booted /etc changed");
}

/// [`disk`]'s listing of one directory.
fn disk_listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in disk_tree(dir) {
        let p = dir.join(&k);
        let m = fs::symlink_metadata(&p).unwrap();
        let v = if m.file_type().is_symlink() {
            format!("l {}", fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!(
                "f {:o} {}",
                m.mode() & 0o7777,
                sha256(&fs::read(&p).unwrap())
            )
        } else {
            format!("{v} {:o}", m.mode() & 0o7777)
        };
        out.insert(k, v);
    }
    out
}

/// A repository missing an object the booted image needs: status says so, and gc
/// does not make it worse (it removes nothing the booted image or the rollback
/// names, and the damage it reports is the same).
#[test]
fn gc_does_not_make_a_missing_object_worse() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    // v1's top layer holds /usr/share/version "1"; remove one object only v1 uses.
    let objects = |root: &Path| -> Vec<String> {
        disk(root)
            .into_keys()
            .filter(|k| k.starts_with("composefs/objects/"))
            .collect()
    };
    s.bootc_ok(&v2, &["gc"]);
    let all = objects(&s.root);
    let st = s.status(&v2);
    assert!(
        st["status"]["rollback"]["composefs"]["damage"].is_null(),
        "{st:#}"
    );
    // The v1 kernel/initrd are shared; find an object whose removal damages v1 only.
    let mut damaged = None;
    for o in &all {
        let p = s.root.join(o);
        let data = fs::read(&p).unwrap();
        fs::remove_file(&p).unwrap();
        let st = s.status(&v2);
        let d1 = st["status"]["rollback"]["composefs"]["damage"]
            .as_str()
            .map(String::from);
        let d2 = st["status"]["booted"]["composefs"]["damage"]
            .as_str()
            .map(String::from);
        if let (Some(d1), None) = (d1, d2) {
            damaged = Some((o.clone(), d1));
            break;
        }
        fs::write(&p, data).unwrap();
    }
    let (gone, damage) = damaged.expect("an object only the rollback image uses");
    let before = disk(&s.root);
    let (out, err) = {
        let o = s.bootc(&v2, &["gc"]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(out, "gc failed: {err}");
    let d = diff(&before, &disk(&s.root));
    assert!(d.is_empty(), "gc changed the damaged repository: {d:#?}");
    let st = s.status(&v2);
    assert_eq!(
        st["status"]["rollback"]["composefs"]["damage"].as_str(),
        Some(damage.as_str()),
        "{st:#}"
    );
    assert!(damage.contains("missing"), "{damage}");
    let human = s.bootc_ok(&v2, &["status", "--format", "human"]);
    assert!(human.contains("Damaged: "), "{human}");
    eprintln!("removed {gone}: {damage}");
}

/// Every path under `dir` writable by others (symlinks aside, whose mode means
/// nothing), and every path whose mode is not `expected[path]` when listed.
fn world_writable(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            // A sticky, world-writable directory (a tmp) is what the image says.
            let sticky_tmp = m.is_dir() && m.mode() & 0o1000 != 0;
            if m.mode() & 0o002 != 0 && !sticky_tmp {
                out.push(format!("{} {:o}", e.path().display(), m.mode() & 0o7777));
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Issue 13 item 6: after install and after an upgrade, nothing in the repository
/// or the state directory is writable by others, the top directories are 0700 or
/// 0755, and the /etc copy keeps the image's modes (and a local chmod).
#[test]
fn repository_and_state_are_not_world_writable() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let check = |when: &str| {
        for top in ["composefs", "state"] {
            let w = world_writable(&s.root.join(top));
            assert!(w.is_empty(), "{when}: world-writable under {top}: {w:#?}");
            let mode = fs::metadata(s.root.join(top)).unwrap().permissions().mode() & 0o7777;
            assert!(mode & 0o022 == 0, "{when}: {top} is {mode:o}");
        }
    };
    check("after install");
    // The image's modes in /etc (shadow 0600 in the test image) are kept, and so is
    // a local chmod across the upgrade.
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&s.etc(&v1).join("shadow")), 0o600);
    fs::set_permissions(
        s.etc(&v1).join("default.conf"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    check("after the upgrade");
    assert_eq!(mode(&s.etc(&v2).join("shadow")), 0o600);
    assert_eq!(mode(&s.etc(&v2).join("default.conf")), 0o640);
    s.bootc_ok(&v2, &["gc"]);
    check("after gc");
}

/// A gzip layer holding `path` with `len` bytes of a repeating pseudo-random block:
/// a few hundred KiB on the wire (the free-space pre-check passes), `len` on disk.
fn gzip_blob(path: &str, len: usize, seed: u64) -> Blob {
    let block = images::pseudo_random(4096, seed);
    let data: Vec<u8> = block.iter().copied().cycle().take(len).collect();
    let plain = tar(&[file(path, &data)]);
    let mut child = Command::new("gzip")
        .args(["-c", "-1", "-n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&plain).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    Blob {
        diff_id: sha256(&tar(&[file(path, &data)])),
        data: out.stdout,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
    }
}

/// Leaves `mib` MiB free on the filesystem of `root` (a `-m 0` ext4: root has no
/// reserve) with a preallocated file, returned.
fn leave_free(root: &Path, mib: u64) -> std::path::PathBuf {
    let st = rustix::fs::statvfs(root).unwrap();
    let free = st.f_bavail * st.f_frsize;
    assert!(free > (mib + 1) << 20, "only {} MiB free", free >> 20);
    let hog = root.join("hog");
    run(Command::new("fallocate")
        .args(["-l", &(free - (mib << 20)).to_string()])
        .arg(&hog));
    run(Command::new("sync").arg("-f").arg(root));
    hog
}

/// The disk fills during a pull (case "pull": a layer larger than the free space) or
/// during staging (case "stage": the pull fits, the /etc copy does not): one error
/// line naming ENOSPC, the boot entries and state exactly as before (no half-written
/// deployment directory; the old deployment still boots, status works, nothing is
/// staged), and once space is back `gc` reclaims the import, leaving the root byte
/// for byte as before.
#[test]
fn a_full_disk_during_pull_or_staging_changes_nothing_that_boots() {
    if !can_run(&["fallocate", "gzip"]) {
        return;
    }
    let _g = serial();
    for (case, path, len, free, expected) in [
        (
            "pull",
            "usr/share/huge",
            48usize << 20,
            16u64,
            ":full: importing layer 3 of oci:",
        ),
        (
            "stage",
            "etc/huge",
            32 << 20,
            48,
            "error: copying the image's /etc to state/deploy/",
        ),
    ] {
        let s = System::install_image(
            256 << 20,
            &["-m", "0"],
            "loop",
            |l| write_raw(l, "full", vec![gzip_blob(path, len, 7)], None),
            "v1",
            &[],
        );
        let v1 = s.v1.clone();
        s.bootc_ok(&v1, &["gc"]);
        let before = disk(&s.root);
        let menu = s.menu(false);
        let hog = leave_free(&s.root, free);
        let err = s.bootc_err(&v1, &["switch", &s.imgref("full")]);
        let line = error_line(&err);
        assert!(line.contains(expected), "{case}: {line}");
        assert!(
            line.ends_with("No space left on device (os error 28)"),
            "{case}: {line}"
        );
        eprintln!("{case}: {line}");
        let after = disk(&s.root);
        let d: Vec<String> = diff(&before, &after)
            .into_iter()
            .filter(|l| !import_debris(l, true))
            .collect();
        assert!(d.is_empty(), "{case}: changed beyond the import: {d:#?}");
        assert_eq!(s.menu(false), menu, "{case}: the boot menu changed");
        assert!(s.marker().is_none(), "{case}: something is staged");
        let st = s.status(&v1);
        assert!(st["status"]["staged"].is_null(), "{case}: {st:#}");
        assert!(
            st["status"]["booted"]["composefs"]["damage"].is_null(),
            "{case}: {st:#}"
        );
        fs::remove_file(&hog).unwrap();
        s.bootc_ok(&v1, &["gc"]);
        let d = diff(&before, &disk(&s.root));
        assert!(d.is_empty(), "{case}: gc left the partial import: {d:#?}");
    }
}
