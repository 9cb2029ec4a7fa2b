//! Host integration tests of `bootc-initramfs-setup setup-root`, as root, with real
//! mounts. This kernel has EROFS and overlayfs but no fs-verity, so the repository is
//! insecure and the deployment boots with `composefs=?…`; the secure path is shown to
//! refuse here (never an unverified mount) and is exercised for real in the VM tests.
//!
//! Each test builds an OCI layout from the fixtures, imports it with composefs-oci into a
//! repository on a fresh filesystem (an ext4 loop image, or a tmpfs for the loop-device
//! fallback), lays out the deployment state, and runs the real binary with `--target`
//! inside `unshare -m`, so every mount it makes dies with that namespace.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use bootc_test_fixtures::cmd::run;
use bootc_test_fixtures::images;
use bootc_test_fixtures::oci::{self, Kind, Layer};
use bootc_test_fixtures::skip;
use composefs::fsverity::{Algorithm, FsVerityHashValue, Sha256HashValue};
use composefs::repository::{Repository, RepositoryConfig};

const BIN: &str = env!("CARGO_BIN_EXE_bootc-initramfs-setup");

/// How the physical root is backed.
#[derive(Clone, Copy, PartialEq)]
enum Backing {
    Ext4Loop,
    Tmpfs,
}

/// A physical root with a repository holding the v1 test image and its state.
struct Fixture {
    dir: tempfile::TempDir,
    sysroot: PathBuf,
    hex: String,
    layers: Vec<Layer>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.sysroot).status();
    }
}

fn can_run() -> bool {
    skip::need_root()
        && skip::need_tools(&[
            "unshare",
            "mkfs.ext4",
            "mount",
            "umount",
            "getfattr",
            "sha256sum",
        ])
}

impl Fixture {
    fn new(backing: Backing) -> Fixture {
        Fixture::with_layers(backing, images::bootable(1))
    }

    /// A physical root whose deployment is the image made of `layers`.
    fn with_layers(backing: Backing, layers: Vec<Layer>) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("initramfs-setup-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let sysroot = dir.path().join("sysroot");
        fs::create_dir(&sysroot).unwrap();
        match backing {
            Backing::Ext4Loop => {
                let img = dir.path().join("root.img");
                let f = fs::File::create(&img).unwrap();
                f.set_len(256 << 20).unwrap();
                run(Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-O", "verity"])
                    .arg(&img));
                run(Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&img)
                    .arg(&sysroot));
            }
            Backing::Tmpfs => {
                run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=200m", "tmpfs"])
                    .arg(&sysroot));
            }
        }
        let layout = dir.path().join("oci");
        oci::write_image(&layout, "v1", &layers, &[]).unwrap();
        let hex = import(&sysroot, &layout, "v1");
        let fx = Fixture {
            dir,
            sysroot,
            hex,
            layers,
        };
        fx.write_state();
        fx
    }

    /// `state/deploy/<id>/{etc/,var}` and the shared var, as `bootc install` lays them.
    fn write_state(&self) {
        let deploy = self.sysroot.join("state/deploy").join(&self.hex);
        let etc = deploy.join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("hostname"), "from-state\n").unwrap();
        fs::write(etc.join("state-only"), "only in state\n").unwrap();
        let var = self.sysroot.join("state/os/default/var");
        fs::create_dir_all(var.join("lib")).unwrap();
        fs::write(var.join("lib/shared"), "shared var\n").unwrap();
        symlink("../../os/default/var", deploy.join("var")).unwrap();
    }

    fn cmdline(&self) -> String {
        format!("root=LABEL=x rw composefs=?sha256:{}", self.hex)
    }

    fn target(&self) -> PathBuf {
        let t = self.dir.path().join("target");
        let _ = fs::create_dir(&t);
        t
    }
}

/// Imports `layout:tag` with composefs-oci into an insecure repository; returns the
/// deployment id (the EROFS image's digest).
fn import(sysroot: &Path, layout: &Path, tag: &str) -> String {
    let (repo, _) = Repository::<Sha256HashValue>::init_path(
        rustix::fs::CWD,
        sysroot.join("composefs"),
        RepositoryConfig::new(Algorithm::SHA256).set_insecure(),
    )
    .unwrap();
    let repo = Arc::new(repo);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let imgref = format!("oci:{}:{tag}", layout.display());
    let pulled = rt
        .block_on(composefs_oci::pull(
            &repo,
            &imgref,
            Some(tag),
            Default::default(),
        ))
        .unwrap();
    let id = composefs_oci::composefs_erofs_for_manifest(
        &repo,
        &pulled.manifest_digest,
        None,
        repo.erofs_version(),
    )
    .unwrap()
    .expect("pull committed an EROFS image");
    assert!(sysroot.join("composefs/images").join(id.to_hex()).exists());
    id.to_hex()
}

/// Runs `script` in a new private mount namespace; `$BIN` is the binary.
fn in_namespace(script: &str) -> Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-euc", script])
        .env("BIN", BIN)
        .output()
        .unwrap()
}

/// The tree the image's layers describe: path → "type mode uid gid detail".
fn expected_tree(layers: &[Layer]) -> BTreeMap<String, String> {
    let mut tree: BTreeMap<String, (Kind, u32, u64, u64)> = BTreeMap::new();
    for layer in layers {
        for e in &layer.0 {
            if e.kind == Kind::Whiteout {
                let prefix = format!("{}/", e.path);
                tree.retain(|p, _| p != &e.path && !p.starts_with(&prefix));
                continue;
            }
            tree.insert(e.path.clone(), (e.kind.clone(), e.mode, e.uid, e.gid));
        }
    }
    tree.into_iter()
        .map(|(p, (kind, mode, uid, gid))| {
            let v = match kind {
                Kind::File(data) => {
                    use sha2::Digest;
                    format!(
                        "f {:o} {uid} {gid} {}",
                        mode & 0o7777,
                        hex::encode(sha2::Sha256::digest(&data))
                    )
                }
                Kind::Dir => format!("d {:o} {uid} {gid}", mode & 0o7777),
                Kind::Symlink(t) => format!("l {uid} {gid} {t}"),
                Kind::Whiteout => unreachable!(),
                Kind::Hardlink(_) => unreachable!("the test images have no hard links"),
            };
            (p, v)
        })
        .collect()
}

/// Lists the tree under `$T` (one filesystem) in the same format as [`expected_tree`].
const LIST_TREE: &str = r#"
cd "$T"
find . -xdev -mindepth 1 ! -type f ! -type l -printf '%P\td %m %U %G\n'
find . -xdev -type l -printf '%P\tl %U %G %l\n'
find . -xdev -type f -printf '%P\t%m %U %G\n' | while IFS="$(printf '\t')" read -r p meta; do
  set -- $meta
  printf '%s\tf %s %s %s %s\n' "$p" "$1" "$2" "$3" "$(sha256sum "$p" | cut -d' ' -f1)"
done
"#;

fn parse_listing(s: &str) -> BTreeMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect()
}

fn composed_root_matches_image(backing: Backing) {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(backing);
    let t = fx.target();
    let script = format!(
        r#"
T='{t}'
"$BIN" setup-root --sysroot '{sysroot}' --cmdline '{cmdline}' --config /nonexistent --target "$T"
echo '--- mountinfo'
grep -F " $T" /proc/self/mountinfo
echo '--- tree'
{LIST_TREE}
echo '--- xattr'
getfattr -e hex -n security.capability "$T/usr/bin/with-caps" | grep =
echo '--- etc'
cat "$T/etc/hostname" "$T/etc/state-only"
echo written-in-etc > "$T/etc/new-file"
echo '--- var'
cat "$T/var/lib/shared"
echo written-in-var > "$T/var/new-file"
echo '--- sysroot'
ls "$T/sysroot/composefs/images" | grep -c '{hex}'
echo '--- loop'
cat /sys/block/loop*/loop/backing_file 2>/dev/null | grep -c '{sysroot}/composefs/' || true
echo '--- readonly'
if touch "$T/usr/should-fail" 2>/dev/null; then echo WRITABLE; else echo READONLY; fi
"#,
        t = t.display(),
        sysroot = fx.sysroot.display(),
        cmdline = fx.cmdline(),
        hex = fx.hex,
    );
    let out = in_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |name: &str| -> String {
        let start = stdout
            .find(&format!("--- {name}\n"))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            + name.len()
            + 5;
        let rest = &stdout[start..];
        rest[..rest.find("\n--- ").map(|i| i + 1).unwrap_or(rest.len())].to_string()
    };

    // The root is an overlay of the EROFS image with the object store as data layer.
    let mounts = section("mountinfo");
    let root_line = mounts
        .lines()
        .find(|l| l.contains(" overlay "))
        .expect("an overlay mount");
    assert!(root_line.contains("composefs:"), "{root_line}");
    // Named by path before Linux 6.15 (`lowerdir=L::D`), by descriptor since
    // (`lowerdir+=L,datadir+=D`).
    assert!(
        root_line.contains("::") || root_line.contains(",datadir+="),
        "data-only lower layer: {root_line}"
    );
    assert!(
        root_line.contains("metacopy=on") && root_line.contains("redirect_dir=on"),
        "{root_line}"
    );
    assert!(
        root_line.contains(" ro"),
        "root must be read-only: {root_line}"
    );
    assert!(
        !root_line.contains("verity=require"),
        "insecure boot: {root_line}"
    );
    assert_eq!(
        mounts.lines().count(),
        4,
        "root, etc, var, sysroot:\n{mounts}"
    );

    // Every file, directory and symlink of the image, with modes, owners and content,
    // apart from /etc, /var and /sysroot which are other mounts.
    let mut expected = expected_tree(&fx.layers);
    expected.retain(|p, _| {
        !["etc/", "var/", "sysroot/"]
            .iter()
            .any(|d| p.starts_with(d))
    });
    let mut actual = parse_listing(&section("tree"));
    // Mount points show the mounted directory's attributes.
    for d in ["etc", "var", "sysroot"] {
        expected.remove(d);
        actual.remove(d);
    }
    assert_eq!(actual, expected);
    assert_eq!(
        section("xattr").trim(),
        format!("security.capability={}", images::FILE_CAPS_HEX)
    );

    // /etc is the deployment's state, /var the shared var, /sysroot the physical root.
    assert_eq!(section("etc"), "from-state\nonly in state\n");
    assert_eq!(section("var"), "shared var\n");
    assert_eq!(section("sysroot").trim(), "1");
    assert_eq!(section("readonly").trim(), "READONLY");
    // ext4 backs a file-backed EROFS mount; a tmpfs repository needs the loop fallback.
    let loops: u32 = section("loop").trim().parse().unwrap();
    match backing {
        Backing::Ext4Loop => assert_eq!(loops, 0, "file-backed EROFS expected"),
        Backing::Tmpfs => assert_eq!(loops, 1, "loop-device fallback expected"),
    }
    let state_etc = fx.sysroot.join("state/deploy").join(&fx.hex).join("etc");
    assert_eq!(
        fs::read_to_string(state_etc.join("new-file")).unwrap(),
        "written-in-etc\n"
    );
    assert_eq!(
        fs::read_to_string(fx.sysroot.join("state/os/default/var/new-file")).unwrap(),
        "written-in-var\n"
    );
}

#[test]
fn composed_root_on_ext4() {
    composed_root_matches_image(Backing::Ext4Loop);
}

#[test]
fn composed_root_on_tmpfs_uses_loop_fallback() {
    composed_root_matches_image(Backing::Tmpfs);
}

/// Runs the binary with `args` in a namespace; returns (exit ok, stderr, mounts changed).
///
/// "Changed" looks only where setup-root mounts: under this test's own directory (the
/// parent of `--target`) and its scratch tmpfs (/run/bootc-initramfs-setup.PID). Other
/// mounts in the namespace are copies of the host's that other tests own: when another
/// test removes its mount point directory, the kernel detaches the copies in every
/// namespace too (seen under load in CI).
fn run_failing(args: &str) -> (bool, String, bool) {
    let own = args
        .split_once("--target '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(target, _)| Path::new(target).parent().unwrap().display().to_string())
        .expect("run_failing needs --target '<dir>'");
    let script = format!(
        r#"
# Which mounts exist where setup-root mounts, not their superblock options.
mounts() {{
    awk -v own="{own}/" '{{ p = $5 "/"; if (index(p, own) == 1 || index(p, "/run/bootc-initramfs-setup.") == 1) print $1, $5 }}' /proc/self/mountinfo
}}
before=$(mounts)
set +e
"$BIN" setup-root {args} 2>/dev/stderr
rc=$?
set -e
after=$(mounts)
echo "rc=$rc"
if [ "$before" = "$after" ]; then
    echo SAME
else
    echo CHANGED
    printf '%s\n' "$before" > /tmp/.mounts-before.$$
    printf '%s\n' "$after" | diff /tmp/.mounts-before.$$ - || true
    rm -f /tmp/.mounts-before.$$
fi
"#
    );
    let out = in_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    let ok = stdout.contains("rc=0\n");
    let changed = stdout.contains("CHANGED");
    if changed {
        // The mount ids and points that differ, for the assertion that follows.
        eprintln!("mount table changed across setup-root {args}:\n{stdout}");
    }
    (
        ok,
        String::from_utf8_lossy(&out.stderr).to_string(),
        changed,
    )
}

#[track_caller]
fn assert_clean_failure(args: &str, needle: &str) {
    let (ok, stderr, changed) = run_failing(args);
    assert!(!ok, "{args}: expected failure");
    assert!(!changed, "{args}: something was left mounted");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args}: want one line, got {stderr:?}");
    assert!(lines[0].starts_with("bootc-initramfs-setup: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{args}: {stderr:?} lacks {needle:?}"
    );
}

#[test]
fn bad_input_fails_cleanly() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let t = fx.target();
    let base = format!(
        "--sysroot '{}' --config /nonexistent --target '{}'",
        fx.sysroot.display(),
        t.display()
    );
    let h = &fx.hex;

    // Malformed command lines.
    for (cmdline, needle) in [
        ("quiet rw", "no composefs= argument"),
        ("composefs=", "empty digest"),
        ("composefs=?abc", "hex digits"),
        (&format!("composefs=sha512:{h}") as &str, "expected 128"),
        (&format!("composefs=?{}zz", &h[2..]), "not hex"),
        (
            &format!("composefs=md5:{h}"),
            "unknown composefs digest algorithm",
        ),
        (
            &format!("composefs=?{h} composefs=?{}", "0".repeat(64)),
            "conflicting",
        ),
    ] {
        assert_clean_failure(&format!("{base} --cmdline '{cmdline}'"), needle);
    }

    // A digest that is not in the repository.
    let missing = "ab".repeat(32);
    assert_clean_failure(
        &format!("{base} --cmdline 'composefs=?{missing}'"),
        "not found",
    );

    // Verity required on a kernel/filesystem without it: refuse, never mount unverified.
    assert_clean_failure(
        &format!("{base} --cmdline 'composefs=sha256:{h}'"),
        "fs-verity",
    );

    // A corrupt configuration, and an unknown key in it.
    let bad = fx.dir.path().join("bad.toml");
    fs::write(&bad, "[etc\nmount=").unwrap();
    let with_cfg = |cfg: &Path| {
        format!(
            "--sysroot '{}' --config '{}' --target '{}' --cmdline '{}'",
            fx.sysroot.display(),
            cfg.display(),
            t.display(),
            fx.cmdline()
        )
    };
    assert_clean_failure(&with_cfg(&bad), "bad.toml");
    fs::write(&bad, "[etc]\nmount = \"bind\"\nmode = 1\n").unwrap();
    assert_clean_failure(&with_cfg(&bad), "mode");

    // A missing state directory.
    let deploy = fx.sysroot.join("state/deploy").join(h);
    let moved = fx.sysroot.join("state/moved");
    fs::rename(&deploy, &moved).unwrap();
    assert_clean_failure(
        &format!("{base} --cmdline '{}'", fx.cmdline()),
        "deployment state",
    );
    fs::rename(&moved, &deploy).unwrap();

    // A dangling var symlink (the shared var missing).
    let var = fx.sysroot.join("state/os/default/var");
    fs::rename(&var, fx.sysroot.join("state/os/default/var.moved")).unwrap();
    assert_clean_failure(
        &format!("{base} --cmdline '{}'", fx.cmdline()),
        "shared /var",
    );
    fs::rename(fx.sysroot.join("state/os/default/var.moved"), &var).unwrap();

    // A repository that is not one.
    let fake = fx.dir.path().join("fake-root");
    fs::create_dir_all(fake.join("composefs/images")).unwrap();
    assert_clean_failure(
        &format!(
            "--sysroot '{}' --config /nonexistent --target '{}' --cmdline '{}'",
            fake.display(),
            t.display(),
            fx.cmdline()
        ),
        "not a composefs repository",
    );

    // A physical root that does not exist.
    assert_clean_failure(
        &format!(
            "--sysroot /nonexistent-root --target '{}' --cmdline '{}'",
            t.display(),
            fx.cmdline()
        ),
        "opening the physical root",
    );

    // And after all that, the good case still works from the same disk.
    let (ok, stderr, _) = run_failing(&format!("{base} --cmdline '{}'", fx.cmdline()));
    assert!(ok, "{stderr}");
}

#[test]
fn transient_and_overlay_modes() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let t = fx.target();
    let cfg = fx.dir.path().join("conf.toml");
    fs::write(
        &cfg,
        "[etc]\nmount = \"transient\"\n[var]\nmount = \"overlay\"\n[root]\ntransient = true\n",
    )
    .unwrap();
    let script = format!(
        r#"
T='{t}'
"$BIN" setup-root --sysroot '{sysroot}' --cmdline '{cmdline}' --config '{cfg}' --target "$T"
cat "$T/etc/hostname"
echo transient > "$T/etc/transient-file"
cat "$T/var/lib/seeded" "$T/var/lib/shared"
echo via-overlay > "$T/var/overlay-file"
touch "$T/usr/root-is-writable" && echo ROOT-WRITABLE
"#,
        t = t.display(),
        sysroot = fx.sysroot.display(),
        cmdline = fx.cmdline(),
        cfg = cfg.display(),
    );
    let out = in_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // transient /etc shows the image's /etc and forgets writes; the overlaid /var shows
    // the image's var under the shared var and writes go to the shared var.
    assert_eq!(
        stdout,
        "bootc-test\nfrom the image\nshared var\nROOT-WRITABLE\n"
    );
    let state_etc = fx.sysroot.join("state/deploy").join(&fx.hex).join("etc");
    assert!(!state_etc.join("transient-file").exists());
    assert_eq!(
        fs::read_to_string(fx.sysroot.join("state/os/default/var/overlay-file")).unwrap(),
        "via-overlay\n"
    );
    assert!(
        fs::metadata(fx.sysroot.join("state/os/default/var.work"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
            == 0o700
    );
}

impl Fixture {
    /// The usual arguments: this physical root, no configuration, `--target`.
    fn args(&self) -> String {
        format!(
            "--sysroot '{}' --config /nonexistent --target '{}' --cmdline '{}'",
            self.sysroot.display(),
            self.target().display(),
            self.cmdline()
        )
    }

    /// `composefs/images/<hex>` as the error lines show it.
    fn image_link(&self) -> PathBuf {
        self.sysroot.join("composefs/images").join(&self.hex)
    }

    /// The object `images/<hex>` points to.
    fn image_object(&self) -> PathBuf {
        self.sysroot
            .join("composefs/objects")
            .join(&self.hex[..2])
            .join(&self.hex[2..])
    }

    fn deploy_etc(&self) -> PathBuf {
        self.sysroot
            .join("state/deploy")
            .join(&self.hex)
            .join("etc")
    }

    /// Replaces the deployment's `etc` directory with a symlink to `target`.
    fn replace_etc_with_symlink(&self, target: &str) {
        fs::remove_dir_all(self.deploy_etc()).unwrap();
        symlink(target, self.deploy_etc()).unwrap();
    }
}

/// Runs setup-root with `args`; asserts it failed with exactly `line` on stderr and left
/// the mount table as it was.
#[track_caller]
fn assert_refused_with(args: &str, line: &str) {
    let (ok, stderr, changed) = run_failing(args);
    assert!(!ok, "{args}: expected failure");
    assert!(!changed, "{args}: something was left mounted");
    assert_eq!(stderr, format!("{line}\n"), "{args}");
}

/// `bootable(1)` without the entries under `dir` (and `dir` itself).
fn bootable_without(dir: &str) -> Vec<Layer> {
    let prefix = format!("{dir}/");
    images::bootable(1)
        .into_iter()
        .map(|l| {
            Layer(
                l.0.into_iter()
                    .filter(|e| e.path != dir && !e.path.starts_with(&prefix))
                    .collect(),
            )
        })
        .collect()
}

/// The deployment's /etc replaced by `etc -> /etc`: the host's /etc must not be bound.
#[test]
fn etc_symlink_to_absolute_etc_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    fx.replace_etc_with_symlink("/etc");
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: opening the deployment's /etc: {}: is a symlink to /etc; \
             it must be a directory (the deployment state is damaged; choose another boot entry)",
            fx.deploy_etc().display()
        ),
    );
    // Overlay mode uses the same directory as its upper layer: refused the same way.
    let cfg = fx.dir.path().join("overlay.toml");
    fs::write(&cfg, "[etc]\nmount = \"overlay\"\n").unwrap();
    let (ok, stderr, changed) = run_failing(
        &fx.args()
            .replace("/nonexistent", &cfg.display().to_string()),
    );
    assert!(!ok && !changed, "{stderr}");
    assert!(
        stderr.contains(": is a symlink to /etc; it must be a directory"),
        "{stderr}"
    );
}

/// The shared var replaced by a symlink (here to the deployment's own /etc, inside the
/// root) is refused too: it must be the directory the layout names.
#[test]
fn shared_var_symlink_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let var = fx.sysroot.join("state/os/default/var");
    fs::rename(&var, fx.sysroot.join("state/os/default/var.moved")).unwrap();
    let target = format!("../../deploy/{}/etc", fx.hex);
    symlink(&target, &var).unwrap();
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: opening the shared /var: {}/state/deploy/{}/var: \
             state/os/default/var: is a symlink to {target}; it must be a directory \
             (the shared var must be the directory state/os/default/var)",
            fx.sysroot.display(),
            fx.hex
        ),
    );
}

/// `etc -> ../../../../etc` climbs out of the physical root (and, resolved inside it,
/// would land on its /etc): refused either way, whichever of them exists.
#[test]
fn etc_symlink_climbing_out_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    // Both places the link could resolve to exist and hold something.
    for etc in [fx.dir.path().join("etc"), fx.sysroot.join("etc")] {
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("hostname"), "not the deployment's\n").unwrap();
    }
    fx.replace_etc_with_symlink("../../../../etc");
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: opening the deployment's /etc: {}: is a symlink to \
             ../../../../etc; it must be a directory (the deployment state is damaged; \
             choose another boot entry)",
            fx.deploy_etc().display()
        ),
    );
}

#[test]
fn image_without_var_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::with_layers(Backing::Ext4Loop, bootable_without("var"));
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: checking the deployment image: {}: the image lacks /var \
             (the initramfs mounts the shared /var there) (choose another boot entry)",
            fx.image_link().display()
        ),
    );
}

#[test]
fn image_with_var_symlink_is_refused() {
    if !can_run() {
        return;
    }
    let mut layers = bootable_without("var");
    layers.push(Layer::new().symlink("var", "usr/share"));
    let fx = Fixture::with_layers(Backing::Ext4Loop, layers);
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: checking the deployment image: {}: /var is a symlink in \
             the image; it must be a directory (the initramfs mounts the shared /var there) \
             (choose another boot entry)",
            fx.image_link().display()
        ),
    );
}

#[test]
fn image_without_etc_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::with_layers(Backing::Ext4Loop, bootable_without("etc"));
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: checking the deployment image: {}: the image lacks /etc \
             (the initramfs mounts the deployment's /etc there) (choose another boot entry)",
            fx.image_link().display()
        ),
    );
}

#[test]
fn empty_image_is_called_empty() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    fs::write(fx.image_object(), b"").unwrap();
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: checking the deployment image: {}: the image is empty \
             (0 bytes) (the repository is damaged; choose another boot entry)",
            fx.image_link().display()
        ),
    );
}

#[test]
fn garbage_image_is_called_corrupt() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    fs::write(fx.image_object(), images::pseudo_random(8192, 7)).unwrap();
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: checking the deployment image: {}: the image is corrupt: \
             no EROFS superblock (8192 bytes) (the repository is damaged; choose another boot \
             entry)",
            fx.image_link().display()
        ),
    );
}

/// `images/<id>` pointing at a valid image outside the repository is not followed; the
/// same image as a plain file in its place boots (so only the link was refused).
#[test]
fn image_symlink_elsewhere_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let link = fx.image_link();
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../objects")
            .join(&fx.hex[..2])
            .join(&fx.hex[2..]),
        "the repository links images/<id> to its object"
    );
    let elsewhere = fx.dir.path().join("valid-image.erofs");
    fs::copy(fx.image_object(), &elsewhere).unwrap();
    fs::remove_file(&link).unwrap();
    symlink(&elsewhere, &link).unwrap();
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: opening the deployment image: {}: is a symlink to {}, not \
             to the image's own object ../objects/{}/{} (the repository was damaged or \
             tampered with; choose another boot entry)",
            link.display(),
            elsewhere.display(),
            &fx.hex[..2],
            &fx.hex[2..]
        ),
    );

    fs::remove_file(&link).unwrap();
    fs::copy(&elsewhere, &link).unwrap();
    let (ok, stderr, _) = run_failing(&fx.args());
    assert!(ok, "a plain image file boots: {stderr}");
}

/// An image whose superblock is intact but whose body is damaged reaches the kernel; the
/// line still blames the image (the errno text is the kernel's, so only it may vary).
#[test]
fn damaged_image_is_called_corrupt() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let good = fs::read(fx.image_object()).unwrap();
    assert!(good.len() > 8192, "the fixture image has a body to damage");
    let mut flipped = good.clone();
    for b in &mut flipped[1024 + 64..4096] {
        *b ^= 0x5a;
    }
    let prefix = format!(
        "bootc-initramfs-setup: {{}}: {}: ",
        fx.image_link().display()
    );
    for (content, step, detail, hint) in [
        // Cut just after the superblock: EROFS refuses to mount it.
        (
            &good[..1100],
            "mounting the composefs image",
            "the image is corrupt: EROFS refuses it: ",
            "(the repository is damaged; choose another boot entry)",
        ),
        // The superblock's tail scrambled: EROFS refuses to mount it.
        (
            &flipped[..],
            "mounting the composefs image",
            "the image is corrupt: EROFS refuses it: ",
            "(the repository is damaged; choose another boot entry)",
        ),
        // Mountable, but the root directory lies beyond the end.
        (
            &good[..4096],
            "checking the deployment image",
            "cannot inspect /etc in the image: ",
            "(the image is damaged; choose another boot entry)",
        ),
    ] {
        fs::write(fx.image_object(), content).unwrap();
        let (ok, stderr, changed) = run_failing(&fx.args());
        assert!(!ok && !changed, "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let want = format!("{}{detail}", prefix.replace("{}", step));
        assert!(
            lines[0].starts_with(&want),
            "{stderr:?} should start {want:?}"
        );
        assert!(lines[0].ends_with(hint), "{stderr:?} should end {hint:?}");
        assert!(
            !lines[0].contains("kernel"),
            "the kernel is not blamed: {stderr}"
        );
    }
}

/// A sha512 digest on the command line against this sha256 repository is refused before
/// anything is mounted, naming both algorithms (meta.json is read once, by the
/// repository open).
#[test]
fn digest_of_another_algorithm_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let t = fx.target();
    let sha512 = "ab".repeat(64);
    assert_refused_with(
        &format!(
            "--sysroot '{}' --config /nonexistent --target '{}' --cmdline 'composefs=?sha512:{sha512}'",
            fx.sysroot.display(),
            t.display()
        ),
        &format!(
            "bootc-initramfs-setup: opening the composefs repository: {}: the repository uses \
             sha256 but the command line names a sha512 digest (check composefs= on the \
             kernel command line)",
            fx.sysroot.join("composefs").display()
        ),
    );
}

/// `images/<id>` that is neither the link to its object nor a regular file (here a fifo,
/// which must not hang the boot either) is refused as such.
#[test]
fn image_that_is_not_a_file_is_refused() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(Backing::Ext4Loop);
    let link = fx.image_link();
    fs::remove_file(&link).unwrap();
    let st = Command::new("mkfifo").arg(&link).status().unwrap();
    assert!(st.success(), "mkfifo {}", link.display());
    assert_refused_with(
        &fx.args(),
        &format!(
            "bootc-initramfs-setup: opening the deployment image: {}: not a regular file (the \
             repository was damaged or tampered with; choose another boot entry)",
            link.display()
        ),
    );
}

/// The real binary's command line (no root needed): help and version on stdout with
/// status 0, a usage error as its one line plus the usage line on stderr with status 2,
/// and a setup failure as one line with status 1.
#[test]
fn command_line() {
    use bootc_initramfs_setup::cli::{self, NAME, USAGE};
    let out = |args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8(o.stdout).unwrap(),
            String::from_utf8(o.stderr).unwrap(),
        )
    };
    assert_eq!(out(&["--help"]), (Some(0), cli::help(), String::new()));
    assert_eq!(
        out(&["setup-root", "-V"]),
        (
            Some(0),
            format!("{NAME} {}\n", env!("CARGO_PKG_VERSION")),
            String::new()
        )
    );
    for (args, error) in [
        (&[][..], "no command given (the command is setup-root)"),
        (
            &["setup-root", "--sysroot"][..],
            "option --sysroot needs a value",
        ),
        (
            &["setup-root", "--root", "/"][..],
            "unknown option '--root'",
        ),
    ] {
        assert_eq!(
            out(args),
            (
                Some(2),
                String::new(),
                format!("{NAME}: {error}\nUsage: {USAGE}\n")
            ),
            "{args:?}"
        );
    }
    let (code, stdout, stderr) = out(&[
        "setup-root",
        "--cmdline=quiet",
        "--config",
        "/nonexistent",
        "--target=/nonexistent",
    ]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{NAME}: ")) && stderr.lines().count() == 1,
        "{stderr:?}"
    );
}
