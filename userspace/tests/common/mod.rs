//! Helpers for bootc's host integration tests: OCI layouts from the fixtures, a local
//! registry, running bootc, inspecting disk images, and leak checks.

#![allow(dead_code)]

pub mod system;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bootc_test_fixtures::oci::{self, ImageInfo, Kind, Layer};
use bootc_test_fixtures::{images, skip};

pub const BOOTC: &str = env!("CARGO_BIN_EXE_bootc");

/// Tests that mount, attach loop devices or compare the mount table run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn can_run(extra: &[&str]) -> bool {
    let mut tools = vec![
        "mcopy",
        "losetup",
        "sfdisk",
        "mkfs.ext4",
        "mkfs.vfat",
        "wipefs",
        "blkid",
        "partx",
        "bootctl",
        "mount",
        "umount",
    ];
    tools.extend_from_slice(extra);
    skip::need_root() && skip::need_tools(&tools)
}

pub use bootc_test_fixtures::cmd::run;

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// A scratch directory under /var/tmp (a real filesystem, not tmpfs).
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// An OCI layout with the test images: `v1`, `v2`, `nokernel`.
pub struct Layout {
    pub path: PathBuf,
    pub v1: ImageInfo,
    pub v2: ImageInfo,
    pub nokernel: ImageInfo,
}

pub fn layout(dir: &Path) -> Layout {
    let path = dir.join("oci");
    let v1 = oci::write_image(&path, "v1", &images::bootable(1), &[]).unwrap();
    let v2 = oci::write_image(&path, "v2", &images::bootable(2), &[]).unwrap();
    let nokernel = oci::write_image(&path, "nokernel", &images::without_kernel(), &[]).unwrap();
    Layout {
        path,
        v1,
        v2,
        nokernel,
    }
}

/// A sparse disk image file.
pub fn disk_image(path: &Path, size: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
}

pub const DISK_SIZE: u64 = 1536 << 20;

/// Runs bootc; returns the output without asserting.
pub fn bootc(args: &[&str]) -> Output {
    bootc_with_env(args, &[])
}

/// [`bootc`] with extra environment variables (e.g. `BOOTC_FAULT_AT`).
pub fn bootc_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BOOTC)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running bootc");
    eprintln!(
        "bootc {} -> {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `bootc install to-filesystem --source-imgref SRC --root-mount-spec UUID=test EXTRA…
/// ROOT`: the install every day-2 test starts from (ROOT is a mounted filesystem or a
/// plain directory with `boot/` in it).
pub fn install_to_filesystem(src: &str, root: &Path, extra: &[&str]) -> Output {
    let root = root.to_str().unwrap();
    let mut all = vec![
        "install",
        "to-filesystem",
        "--source-imgref",
        src,
        "--root-mount-spec",
        "UUID=test",
    ];
    all.extend_from_slice(extra);
    all.push(root);
    bootc(&all)
}

pub fn bootc_ok(args: &[&str]) -> Output {
    let out = bootc(args);
    assert!(out.status.success(), "bootc {args:?} failed");
    out
}

/// The mounts and loop devices that belong to the test using `dir`, to show nothing
/// leaked. Other work on the same host (other tests, VM harnesses running bootc)
/// mounts and attaches things concurrently, so only loop devices backed by files under
/// `dir`, mounts of those devices and mounts under `dir` count.
pub fn system_state(dir: &Path) -> (Vec<String>, Vec<String>) {
    let dir = dir.to_string_lossy().into_owned();
    let mut loops: Vec<String> = stdout(Command::new("losetup").arg("-a"))
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_string)
        .collect();
    loops.sort();
    let devs: Vec<String> = loops
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mountpoint = f.get(4).copied().unwrap_or("");
            let source = f
                .iter()
                .position(|x| *x == "-")
                .and_then(|i| f.get(i + 2))
                .copied()
                .unwrap_or("");
            mountpoint.starts_with(&dir)
                || devs.iter().any(|d| {
                    source == d
                        || source
                            .strip_prefix(d.as_str())
                            .is_some_and(|r| r.starts_with('p'))
                })
        })
        .map(|l| {
            // Drop the mount ids, which change when something is remounted.
            l.split(' ').skip(2).collect::<Vec<_>>().join(" ")
        })
        .collect();
    mounts.sort();
    (mounts, loops)
}

/// A disk image attached read-only with its partitions mounted (root, and the ESP on
/// its own mount point), undone on drop.
pub struct Inspect {
    pub dir: tempfile::TempDir,
    pub dev: String,
    pub root: PathBuf,
    pub esp: PathBuf,
}

impl Inspect {
    pub fn new(img: &Path) -> Inspect {
        let dev = stdout(
            Command::new("losetup")
                .args(["--find", "--show", "--partscan", "--read-only"])
                .arg(img),
        )
        .trim()
        .to_string();
        let dir = tempdir("bootc-inspect-");
        let root = dir.path().join("root");
        let esp = dir.path().join("esp");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&esp).unwrap();
        let insp = Inspect {
            dir,
            dev: dev.clone(),
            root,
            esp,
        };
        let _ = Command::new("partx").arg("--add").arg(&dev).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&format!("{dev}p2")).exists() {
            assert!(Instant::now() < deadline, "{dev}p2 did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        run(Command::new("mount")
            .args(["-o", "ro"])
            .arg(format!("{dev}p2"))
            .arg(&insp.root));
        // The ESP is read with mtools: not every test kernel has vfat.
        run(Command::new("mcopy")
            .args(["-s", "-n", "-m", "-i"])
            .arg(format!("{dev}p1"))
            .arg("::*")
            .arg(&insp.esp)
            .env("MTOOLS_SKIP_CHECK", "1"));
        insp
    }

    pub fn root_uuid(&self) -> String {
        stdout(
            Command::new("blkid")
                .args(["-p", "-s", "UUID", "-o", "value"])
                .arg(format!("{}p2", self.dev)),
        )
        .trim()
        .to_string()
    }
}

impl Drop for Inspect {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.root).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A `docker-registry` on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempdir("bootc-registry-");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let mut reg = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The registry's storage root (`docker/registry/v2/…` lives under it).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Pushes `oci:LAYOUT:TAG` as `127.0.0.1:PORT/NAME`.
    pub fn push(&self, layout: &Path, tag: &str, name: &str) -> String {
        let dest = format!("127.0.0.1:{}/{name}", self.port);
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{dest}")));
        dest
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bootc-initramfs-setup`, built (once per test run) next to bootc.
pub fn initramfs_setup_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo)
                .args(["build", "--quiet", "-p", "bootc-initramfs-setup"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")));
            let bin = Path::new(BOOTC)
                .parent()
                .unwrap()
                .join("bootc-initramfs-setup");
            assert!(bin.exists(), "{} was not built", bin.display());
            bin
        })
        .clone()
}

/// The tree the test image's layers declare, as find(1) would print it
/// (`path|type|mode|uid|gid|size-or-target`), with whiteouts applied and /boot and
/// /sysroot emptied (the boot transform).
pub fn expected_tree(layers: &[Layer]) -> BTreeMap<String, String> {
    let mut entries: BTreeMap<String, oci::Entry> = BTreeMap::new();
    for l in layers {
        for e in &l.0 {
            if e.kind == Kind::Whiteout {
                let p = e.path.clone();
                entries.retain(|k, _| k != &p && !k.starts_with(&format!("{p}/")));
            } else {
                entries.insert(e.path.clone(), e.clone());
            }
        }
    }
    entries
        .into_iter()
        .filter(|(p, _)| !p.starts_with("boot/") && !p.starts_with("sysroot/"))
        .map(|(p, e)| {
            let (t, mode, extra) = match &e.kind {
                Kind::File(data) => ('f', e.mode, data.len().to_string()),
                Kind::Dir => ('d', e.mode, String::new()),
                Kind::Symlink(target) => ('l', 0o777, target.clone()),
                Kind::Hardlink(_) => ('h', e.mode, String::new()),
                Kind::Whiteout => unreachable!(),
            };
            (p, format!("{t}|{mode:o}|{}|{}|{extra}", e.uid, e.gid))
        })
        .collect()
}

/// Parses the listing printed by [`LIST_SCRIPT`] into the same form.
pub fn parse_listing(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(7, '|');
            let path = f.next()?.trim_start_matches("./").to_string();
            let t = f.next()?;
            let mode = u32::from_str_radix(f.next()?, 8).ok()?;
            let uid = f.next()?;
            let gid = f.next()?;
            let size = f.next()?;
            let target = f.next().unwrap_or("");
            let extra = match t {
                "f" => size.to_string(),
                "l" => target.to_string(),
                _ => String::new(),
            };
            if path == "." {
                return None;
            }
            Some((path, format!("{t}|{mode:o}|{uid}|{gid}|{extra}")))
        })
        .collect()
}

/// find(1) listing of the current directory, not descending into ./sysroot.
pub const LIST_SCRIPT: &str = r"find . -path ./sysroot -prune -printf '%p|%y|%m|%U|%G|%s|%l\n' -o -printf '%p|%y|%m|%U|%G|%s|%l\n'";
