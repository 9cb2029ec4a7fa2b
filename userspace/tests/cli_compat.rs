//! Host tests of issue 15, "compatibility of what exists": upstream bootc's spellings
//! work unchanged (a bare IMGREF is a registry image, `--tls-verify=false`,
//! `switch --retain`, `upgrade --download-only` / `--from-downloaded`, `status`'s
//! human default and `--format-version`, `install --composefs-backend
//! --allow-missing-verity`), the old spellings still work as hidden aliases, and bad
//! values are refused with one clear line and nothing changed on disk. Each runs against
//! a real ext4 root installed by `bootc install to-filesystem`.

mod common;

use std::fs;

use common::system::*;
use common::*;

/// The origin file of deployment `id`.
fn origin(s: &System, id: &str) -> String {
    fs::read_to_string(
        s.root
            .join("state/deploy")
            .join(id)
            .join(format!("{id}.origin")),
    )
    .unwrap()
}

#[test]
fn switch_transport_names_the_transport_of_a_bare_name() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    // Upstream's spelling: the transport apart, IMGREF a name for it.
    let path = format!("{}:v2", s.layout.display());
    let out = s.bootc_ok(&v1, &["switch", "--transport", "oci", &path]);
    assert!(out.contains("Staged deployment"), "{out}");
    let v2 = s.marker().unwrap();
    assert!(
        origin(&s, &v2).contains(&format!(
            "container-image-reference=ostree-unverified-image:oci:{path}\n"
        )),
        "{}",
        origin(&s, &v2)
    );

    // An unknown transport and a misspelt prefix: one line, nothing changed.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["switch", "--transport", "docker-daemon", "x"]);
    assert!(
        err.contains("unknown transport \"docker-daemon\" (valid: registry, oci, oci-archive, containers-storage)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = s.bootc_err(&v1, &["switch", &format!("oci-archve:{path}")]);
    assert!(err.contains("unknown transport \"oci-archve:\""), "{err}");
    assert_eq!(s.disk(), before);
}

#[test]
fn install_target_imgref_without_transport_is_a_registry_image() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-compat-target-");
    let layout = t.path().join("oci");
    bootc_test_fixtures::oci::write_image(
        &layout,
        "v1",
        &bootc_test_fixtures::images::bootable(1),
        &[],
    )
    .unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--target-imgref", "quay.io/example/os:v2"],
            "ostree-unverified-image:registry:quay.io/example/os:v2",
        ),
        (
            &["--target-imgref", "/srv/os:v2", "--target-transport", "oci"],
            "ostree-unverified-image:oci:/srv/os:v2",
        ),
        // The transport prefix is still read.
        (
            &["--target-imgref", "containers-storage:localhost/os"],
            "ostree-unverified-image:containers-storage:localhost/os",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let root = t.path().join(format!("root{i}"));
        fs::create_dir_all(root.join("boot")).unwrap();
        let src = format!("oci:{}:v1", layout.display());
        let out = install_to_filesystem(&src, &root, args);
        assert!(out.status.success(), "install with {args:?} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .split("deployment sha256:")
            .nth(1)
            .expect("install prints the id")
            .trim()
            .to_string();
        let o = fs::read_to_string(
            root.join("state/deploy")
                .join(&id)
                .join(format!("{id}.origin")),
        )
        .unwrap();
        assert!(
            o.contains(&format!("container-image-reference={want}\n")),
            "{args:?}: {o}"
        );
    }
    // --target-transport without --target-imgref is refused by the parser.
    let out = bootc(&[
        "install",
        "to-filesystem",
        "--source-imgref",
        "oci:/nonexistent",
        "--target-transport",
        "oci",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--target-imgref"), "{err}");
}

#[test]
fn tls_verify_false_reads_a_plain_http_registry_on_every_verb() {
    if !can_run(&["skopeo", "docker-registry"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let reg = Registry::start();
    let name = reg.push(&s.layout, "v2", "os:v2");

    // Without it the registry (plain HTTP) is refused by the TLS check; nothing changed.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["switch", &name]);
    assert!(
        err.contains("http") || err.contains("HTTP") || err.contains("tls"),
        "{err}"
    );
    assert_eq!(s.disk(), before);

    // switch: a bare name (registry, as upstream) with --tls-verify=false.
    let out = s.bootc_ok(&v1, &["switch", &name, "--tls-verify=false", "--quiet"]);
    assert!(out.contains("Staged deployment"), "{out}");
    let v2 = s.marker().unwrap();
    assert!(
        origin(&s, &v2).contains(&format!(
            "container-image-reference=ostree-unverified-image:registry:{name}\n"
        )),
        "{}",
        origin(&s, &v2)
    );
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);

    // upgrade --check and upgrade on v2, which follows the registry: v3 is published
    // under the followed tag. Every spelling reads it: the upstream one, `--tls-verify
    // false`, and the older hidden aliases.
    reg.push(&s.layout, "v3", "os:v2");
    for flag in [
        &["--tls-verify=false"][..],
        &["--tls-verify", "false"],
        &["--tls-verify-false"],
        &["--insecure-registry"],
    ] {
        let mut args = vec!["upgrade", "--check"];
        args.extend_from_slice(flag);
        let out = s.bootc_ok(&v2, &args);
        assert!(out.contains("Update available"), "{flag:?}: {out}");
    }
    let err = s.bootc_err(&v2, &["upgrade", "--check"]);
    assert!(
        err.contains("http") || err.contains("HTTP") || err.contains("tls"),
        "{err}"
    );
    let out = s.bootc_ok(&v2, &["upgrade", "--tls-verify=false", "--quiet"]);
    assert!(out.contains("Staged deployment"), "{out}");

    // A value other than true/false is refused by the parser, naming the option.
    let err = s.bootc_err(&v2, &["upgrade", "--tls-verify=no"]);
    assert!(err.contains("--tls-verify"), "{err}");
    assert!(err.contains("invalid value 'no'"), "{err}");
}

#[test]
fn switch_retain_keeps_the_booted_image_and_keep_previous_counts_entries() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let refs = s.root.join("composefs/streams/refs/oci");

    // `--keep-previous 0` would drop the rollback: refused in one line, nothing changed.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["switch", &s.imgref("v2"), "--keep-previous", "0"]);
    assert!(
        err.contains("invalid value '0' for '--keep-previous <N>': must be at least 1"),
        "{err}"
    );
    let err = s.bootc_err(&v1, &["upgrade", "--keep-previous", "x"]);
    assert!(err.contains("\"x\" is not a number of entries"), "{err}");
    assert_eq!(s.disk(), before);

    // upstream's --retain is a yes/no flag (no value): v1's image gets its own tag.
    let v2 = s.switch_and_finalize(&v1, "v2", &["--retain"]);
    let retained = refs.join(format!("bootc-retained-{v1}"));
    assert!(retained.exists(), "{}", retained.display());
    // v3 keeping one previous entry: v1 leaves the entries and gc removes its
    // deployment, but not its retained image.
    let v3 = s.switch_and_finalize(&v2, "v3", &["--keep-previous", "1"]);
    assert_eq!(s.order(false), vec![v3.clone(), v2.clone()]);
    assert!(!s.root.join("state/deploy").join(&v1).exists());
    assert!(!refs.join(format!("bootc-deployment-{v1}")).exists());
    assert!(
        fs::metadata(&retained).is_ok(),
        "the retained tag still resolves to v1's manifest"
    );
    // Without --retain nothing is tagged for v2.
    assert!(!refs.join(format!("bootc-retained-{v2}")).exists());
}

#[test]
fn status_prints_the_human_summary_by_default_and_takes_format_version() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let v2 = s.switch_and_finalize(&v1, "v2", &[]);
    s.bootc_ok(&v2, &["switch", &s.imgref("v3")]);
    let v3 = s.marker().unwrap();
    let st = s.status(&v2);

    // stdout is a pipe here: still the human summary, not YAML.
    let human = s.bootc_ok(&v2, &["status"]);
    assert!(!human.contains("apiVersion"), "{human}");
    let blocks: Vec<&str> = human.split("\n\n").collect();
    assert_eq!(blocks.len(), 3, "staged, booted, rollback: {human}");
    for (block, title, id, slot) in [
        (blocks[0], "  Staged image: oci:", &v3, "staged"),
        (blocks[1], "● Booted image: oci:", &v2, "booted"),
        (blocks[2], "  Rollback image: oci:", &v1, "rollback"),
    ] {
        assert!(block.starts_with(title), "{block}");
        let image = &st["status"][slot]["image"];
        let digest = image["imageDigest"].as_str().unwrap();
        let arch = image["architecture"].as_str().unwrap();
        // Rows end under the title's colon, as upstream's.
        let width = title[..title.find(':').unwrap()].chars().count();
        let row = |name: &str, value: &str| format!("\n{name:>width$}: {value}\n", width = width);
        assert!(
            block.contains(&row("Digest", &format!("{digest} ({arch})"))),
            "{block}"
        );
        assert!(block.contains(&row("Verity", id)), "{block}");
        let version = image["version"].as_str();
        let ts = image["timestamp"].as_str();
        match (version, ts) {
            (Some(v), Some(t)) => {
                assert!(
                    block.contains(&format!("Version: {v} ({}", &t[..19])),
                    "{block}"
                )
            }
            (Some(v), None) => assert!(block.contains(&format!("Version: {v}\n"))),
            (None, Some(_)) => assert!(block.contains("Timestamp: "), "{block}"),
            (None, None) => {}
        }
        assert!(block.contains("FsVerity: not enforced"), "{block}");
    }
    // Without --verbose a deployment no soft reboot reaches has no Soft-reboot row;
    // with it (upstream's `--verbose` / `-v`) every block says yes or no, and
    // Download-only too.
    assert!(!blocks[1].contains("Soft-reboot"), "{human}");
    let verbose = s.bootc_ok(&v2, &["status", "--verbose"]);
    assert_eq!(s.bootc_ok(&v2, &["status", "-v"]), verbose);
    let vblocks: Vec<&str> = verbose.split("\n\n").collect();
    assert_eq!(vblocks.len(), 3, "{verbose}");
    for (block, slot) in vblocks.iter().zip(["staged", "booted", "rollback"]) {
        let capable = st["status"][slot]["softRebootCapable"].as_bool().unwrap();
        let want = format!("Soft-reboot: {}", if capable { "yes" } else { "no" });
        let has = |row: &str| block.lines().any(|l| l.trim_start() == row);
        assert!(has(&want), "{slot}: {block}");
        assert!(has("Download-only: no"), "{slot}: {block}");
    }
    // --booted: one block.
    let booted = s.bootc_ok(&v2, &["status", "--booted"]);
    assert!(booted.starts_with("● Booted image: oci:"), "{booted}");
    assert!(!booted.contains("\n\n"), "{booted}");

    // --format-version 0 and 1 are the same (the only) version; others are refused.
    let json = s.bootc_ok(&v2, &["status", "--format", "json"]);
    for v in ["0", "1"] {
        assert_eq!(
            s.bootc_ok(&v2, &["status", "--format", "json", "--format-version", v]),
            json
        );
    }
    assert_eq!(s.bootc_ok(&v2, &["status", "--format-version=1"]), human);
    let err = s.bootc_err(&v2, &["status", "--format-version", "2"]);
    assert!(
        err.contains("unsupported format version \"2\" (supported: 0 and 1"),
        "{err}"
    );
    // --format yaml|json unchanged.
    let yaml = s.bootc_ok(&v2, &["status", "--format", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: org.containers.bootc/v1"),
        "{yaml}"
    );
}

#[test]
fn install_accepts_upstreams_composefs_backend_and_allow_missing_verity() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let t = tempdir("bootc-compat-install-");
    let layout = t.path().join("oci");
    bootc_test_fixtures::oci::write_image(
        &layout,
        "v1",
        &bootc_test_fixtures::images::bootable(1),
        &[],
    )
    .unwrap();
    let src = format!("oci:{}:v1", layout.display());
    let root = t.path().join("root");
    fs::create_dir_all(root.join("boot")).unwrap();
    let base = [
        "install",
        "to-filesystem",
        "--source-imgref",
        &src,
        "--root-mount-spec",
        "UUID=test",
    ];

    // Together with --require-verity it contradicts itself: refused before anything.
    let mut args = base.to_vec();
    args.extend([
        "--allow-missing-verity",
        "--require-verity",
        root.to_str().unwrap(),
    ]);
    let out = bootc(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'--allow-missing-verity' cannot be used with '--require-verity'"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        1,
        "only boot/ is there"
    );

    // An upstream composefs install line: the default path (no fs-verity on this host:
    // a warning and composefs=?).
    let mut args = base.to_vec();
    args.extend([
        "--composefs-backend",
        "--allow-missing-verity",
        root.to_str().unwrap(),
    ]);
    let out = bootc_ok(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .split("deployment sha256:")
        .nth(1)
        .expect("install prints the id")
        .trim()
        .to_string();
    let entry =
        fs::read_to_string(root.join(format!("boot/loader/entries/bootc_composefs-{id}.conf")))
            .unwrap();
    assert!(
        entry.contains(&format!("composefs=?sha256:{id}")),
        "{entry}"
    );
}

#[test]
fn download_only_stages_locked_until_from_downloaded() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let marker = s.t.path().join("run/composefs/staged-deployment");

    // Nothing staged: --from-downloaded has nothing to apply.
    let before = s.disk();
    let err = s.bootc_err(&v1, &["upgrade", "--from-downloaded"]);
    assert!(
        err.contains("no update is staged: run `bootc upgrade --download-only` first"),
        "{err}"
    );
    for bad in [
        &["upgrade", "--download-only", "--apply"][..],
        &["upgrade", "--from-downloaded", "--check"],
        &["upgrade", "--from-downloaded", "--download-only"],
    ] {
        let err = s.bootc_err(&v1, bad);
        assert!(err.contains("cannot be used with"), "{bad:?}: {err}");
    }
    assert_eq!(s.disk(), before);

    // An update under the followed tag, staged download-only.
    bootc_test_fixtures::oci::write_image(
        &s.layout,
        "v1",
        &bootc_test_fixtures::images::bootable(2),
        &[],
    )
    .unwrap();
    let out = s.bootc_ok(&v1, &["upgrade", "--download-only"]);
    assert!(out.contains("(download-only)"), "{out}");
    let text = fs::read_to_string(&marker).unwrap();
    let v2 = text.lines().next().unwrap().to_string();
    assert_eq!(text, format!("{v2}\ndownload-only\n"));
    let st = s.status(&v1);
    assert_eq!(st["status"]["staged"]["composefs"]["verity"], v2.as_str());
    assert_eq!(st["status"]["staged"]["downloadOnly"], true, "{st}");
    assert_eq!(st["status"]["booted"]["downloadOnly"], false, "{st}");
    let human = s.bootc_ok(&v1, &["status"]);
    assert!(human.contains("Download-only: yes"), "{human}");

    // Shutdown: finalize leaves it staged and the old default in place.
    let order = s.order(false);
    let out = s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("is download-only: not applied"), "{out}");
    assert_eq!(s.order(false), order);
    assert_eq!(s.order(false)[0], v1);
    assert_eq!(s.order(true)[0], v2);
    assert!(s.status(&v1)["status"]["finalizeFailure"].is_null());

    // --from-downloaded unlocks it without fetching; the next finalize applies it.
    let out = s.bootc_ok(&v1, &["upgrade", "--from-downloaded"]);
    assert!(out.contains("no longer download-only"), "{out}");
    assert_eq!(fs::read_to_string(&marker).unwrap(), format!("{v2}\n"));
    assert_eq!(s.status(&v1)["status"]["staged"]["downloadOnly"], false);
    s.bootc_ok(&v1, &["composefs-finalize-staged"]);
    assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);
}

/// Upstream's spellings that need no system: `update` is `upgrade`, `status` takes
/// `--verbose`/`-v`, and `config-diff --help` describes its own formats (not status's
/// BootcHost).
#[test]
fn update_is_upgrade_and_help_texts_name_their_own_formats() {
    let help = |args: &[&str]| {
        let o = std::process::Command::new(BOOTC)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "bootc {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let upgrade = help(&["upgrade", "--help"]);
    assert!(upgrade.contains("Usage: bootc upgrade"), "{upgrade}");
    assert_eq!(help(&["update", "--help"]), upgrade);
    let status = help(&["status", "--help"]);
    assert!(status.contains("-v, --verbose"), "{status}");
    let diff = help(&["config-diff", "--help"]);
    assert!(!diff.contains("BootcHost"), "{diff}");
    for f in ["human", "json", "yaml", "`added`, `modified` and `removed`"] {
        assert!(diff.contains(f), "config-diff --help lacks {f:?}: {diff}");
    }
}
