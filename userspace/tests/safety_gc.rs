//! Host tests of issue 8 items 5, 6, 7, 12 and 13: gc never deletes what might boot,
//! refuses without boot entries, entry rewrites carry foreign files byte for byte,
//! interrupted runs leave no debris in what boots, and a full disk can be cleaned.
//! Each reproduces the reported case on a `to-filesystem` install driven with
//! `--sysroot/--booted-deployment`, as root, and asserts that nothing on disk changed
//! where a refusal is expected.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::system::{hashed_listing, System};
use common::*;

/// What these tests ask of the shared [`System`] besides its own helpers.
trait GcSystem {
    /// Runs bootc, asserts success, returns (stdout, stderr).
    fn ok(&self, booted: &str, args: &[&str]) -> (String, String);
    /// Runs bootc, asserts failure, returns stderr.
    fn err(&self, booted: &str, args: &[&str]) -> String;
    /// Stages `tag` as `booted`; returns its id.
    fn stage(&self, booted: &str, tag: &str) -> String;
    /// `boot/loader/entries`.
    fn entries(&self) -> PathBuf;
    /// Our entry of deployment `id`.
    fn entry(&self, id: &str) -> PathBuf;
    /// The deployments with state, sorted.
    fn deployments(&self) -> Vec<String>;
    /// A listing with content hashes of state/, the boot partition and composefs/.
    fn hashed(&self) -> BTreeMap<String, String>;
}

impl GcSystem for System {
    fn ok(&self, booted: &str, args: &[&str]) -> (String, String) {
        let out = self.bootc(booted, args);
        assert!(out.status.success(), "bootc {args:?} failed");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn err(&self, booted: &str, args: &[&str]) -> String {
        let out = self.bootc(booted, args);
        assert!(!out.status.success(), "bootc {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn stage(&self, booted: &str, tag: &str) -> String {
        self.ok(booted, &["switch", &self.imgref(tag)]);
        self.marker().expect("staged marker")
    }

    fn entries(&self) -> PathBuf {
        self.root.join("boot/loader/entries")
    }

    fn entry(&self, id: &str) -> PathBuf {
        self.entry_path(id, false)
    }

    fn deployments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("state/deploy"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn hashed(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for top in ["state", "boot", "composefs"] {
            hashed_listing(&self.root, &self.root.join(top), &mut out);
        }
        out
    }
}

fn tree_has_tmp_names(dir: &Path) -> Vec<String> {
    let mut out = BTreeMap::new();
    hashed_listing(dir, dir, &mut out);
    out.into_keys()
        .filter(|k| k.contains(".bootc-tmp."))
        .collect()
}

/// Issue 8 item 5: gc deleted the deployment of any entry it could not parse, even the
/// default one (a non-UTF-8 byte in `title`, a missing `linux` line, junk). Now such an
/// entry keeps what it names, gc says so, and nothing changes on disk.
#[test]
fn gc_keeps_what_an_unparsable_entry_names() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    // v2 becomes the default while v1 still runs: v2 is protected only by its entry.
    let v2 = s.stage(&v1, "v2");
    s.ok(&v1, &["composefs-finalize-staged"]);
    let good = fs::read(s.entry(&v2)).unwrap();
    assert!(good.starts_with(b"title "));

    let mut non_utf8 = good.clone();
    non_utf8.insert("title ".len(), 0xff);
    let no_linux: Vec<u8> = String::from_utf8(good.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("linux "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes();
    let junk = b"\x00\x01\x02 this is not a boot entry \xfe\n".to_vec();
    for (what, bytes) in [
        ("non-UTF-8 title", non_utf8),
        ("no linux line", no_linux),
        ("junk", junk),
    ] {
        fs::write(s.entry(&v2), &bytes).unwrap();
        let before = s.hashed();
        let (out, err) = s.ok(&v1, &["gc"]);
        assert_eq!(s.hashed(), before, "{what}: gc changed nothing");
        assert!(s.deployments().contains(&v2), "{what}: v2 kept");
        let name = s
            .entry(&v2)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let file = format!("loader/entries: {name} cannot be parsed");
        assert!(
            err.contains(&file) && err.contains(&format!("deployment {v2}")),
            "{what}: gc names the file and what it keeps: {err}"
        );
        assert_eq!(
            err.lines().filter(|l| l.contains(&name)).count(),
            1,
            "{what}: said once: {err}"
        );
        assert!(out.contains("Removed: 0 deployments"), "{what}: {out}");
        assert!(
            out.contains(&format!("Kept deployment {v2}")),
            "{what}: {out}"
        );
    }
}

/// Issue 8 item 6: gc with `loader/entries` missing (ESP not mounted, wrong
/// `--boot-dir`) deleted every deployment but the booted one. Now it refuses.
#[test]
fn gc_refuses_without_boot_entries() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let v2 = s.stage(&v1, "v2");
    s.ok(&v1, &["composefs-finalize-staged"]);

    // An empty directory where the ESP should be mounted.
    let unmounted = s.t.path().join("esp-not-mounted");
    fs::create_dir(&unmounted).unwrap();
    let before = s.hashed();
    let err = s.err(&v1, &["--boot-dir", unmounted.to_str().unwrap(), "gc"]);
    assert!(
        err.contains(&format!(
            "no boot entries in {u}/loader/entries: is the ESP mounted at {u}? nothing removed",
            u = unmounted.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(s.hashed(), before, "nothing changed");
    assert_eq!(fs::read_dir(&unmounted).unwrap().count(), 0);

    // Also an entries directory with none of ours (another OS's ESP) while deployments
    // exist.
    fs::create_dir_all(unmounted.join("loader/entries")).unwrap();
    fs::write(
        unmounted.join("loader/entries/other.conf"),
        "title Other\nlinux /vmlinuz\n",
    )
    .unwrap();
    let err = s.err(&v1, &["--boot-dir", unmounted.to_str().unwrap(), "gc"]);
    assert!(
        err.contains("has no bootc entry but 2 deployments exist")
            && err.contains("nothing removed"),
        "{err}"
    );
    assert_eq!(s.hashed(), before, "nothing changed");
    // Also with the ESP's loader/entries gone.
    fs::rename(s.entries(), s.root.join("boot/loader/entries.away")).unwrap();
    let before = s.hashed();
    let err = s.err(&v1, &["gc"]);
    assert!(err.contains("no boot entries in"), "{err}");
    assert_eq!(s.hashed(), before, "nothing changed");
    fs::rename(s.root.join("boot/loader/entries.away"), s.entries()).unwrap();
    assert_eq!(s.deployments(), {
        let mut v = vec![v1.clone(), v2.clone()];
        v.sort();
        v
    });
}

/// Issue 8 item 7: rollback and finalize deleted foreign entries without a `linux` key
/// (`memtest.conf`, `windows.conf` with `efi …`) and foreign junk. Now every file that
/// is not a parsable entry of ours is carried byte for byte.
#[test]
fn rollback_and_finalize_carry_foreign_entries_byte_for_byte() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let dir = s.entries();
    let odd = std::ffi::OsStr::from_bytes(b"junk-\xff\xfe.conf");
    let foreign: Vec<(PathBuf, Vec<u8>, u32)> = vec![
        (
            dir.join("memtest.conf"),
            b"title Memtest86+\nefi /efi/memtest86/memtest.efi\n".to_vec(),
            0o644,
        ),
        (
            dir.join("windows.conf"),
            b"title Windows Boot Manager\r\nefi /EFI/Microsoft/Boot/bootmgfw.efi\r\n".to_vec(),
            0o600,
        ),
        (dir.join(odd), b"\x00\xff junk \x01".to_vec(), 0o644),
        (
            dir.join("notes.txt"),
            b"not an entry at all".to_vec(),
            0o640,
        ),
        // Named like ours but not parsable: carried too, never renamed.
        (
            dir.join("bootc_composefs-hand-made.conf"),
            b"title \xffhand made\nsort-key bootc-009\n".to_vec(),
            0o644,
        ),
    ];
    let check = |when: &str| {
        for (p, bytes, mode) in &foreign {
            assert_eq!(&fs::read(p).unwrap(), bytes, "{when}: {}", p.display());
            let m = fs::metadata(p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(m, *mode, "{when}: mode of {}", p.display());
        }
    };
    for (p, bytes, mode) in &foreign {
        fs::write(p, bytes).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    let v2 = s.stage(&v1, "v2");
    check("staged");
    s.ok(&v1, &["composefs-finalize-staged"]);
    check("after finalize");
    assert!(s.entry(&v2).exists() && s.entry(&v1).exists());
    s.ok(&v1, &["rollback"]);
    check("after rollback");
    s.ok(&v1, &["rollback"]);
    check("after a second rollback");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        foreign.len() + 2,
        "nothing else appeared or vanished"
    );
}

/// Issue 8 item 12: a kill during the /etc merge left a temporary inside the new
/// deployment's /etc that survived the re-run and got booted; a kill during staging
/// left `state/.bootc-tmp.pristine-etc.*`. The merge is killed for real (strace
/// injects SIGKILL at its second rename); the re-run yields an /etc without debris,
/// and gc removes every leftover with bootc's temporary prefix, nothing else.
#[test]
fn an_interrupted_merge_leaves_no_debris_in_what_boots() {
    if !can_run(&["strace"]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    // Local changes, so the merge copies several files.
    let etc1 = s.root.join("state/deploy").join(&v1).join("etc");
    for i in 0..4 {
        fs::write(etc1.join(format!("local-{i}.conf")), format!("local {i}\n")).unwrap();
    }
    fs::write(etc1.join("hostname"), "edited\n").unwrap();
    let v2 = s.stage(&v1, "v2");
    let etc2 = s.root.join("state/deploy").join(&v2).join("etc");

    // Kill at the merge's second rename into the new /etc (strace -P matches the
    // directory fd the rename targets), wherever its temporary was written.
    let state = s.root.join("state");
    let mut args = vec![
        "-f".to_string(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-P".into(),
        etc2.display().to_string(),
        "-e".into(),
        "trace=rename,renameat,renameat2".into(),
        "-e".into(),
        "inject=rename,renameat,renameat2:signal=KILL:when=2".into(),
        BOOTC.into(),
    ];
    args.extend(s.args(&v1, &["composefs-finalize-staged"]));
    let out = Command::new("strace").args(&args).output().unwrap();
    assert!(!out.status.success(), "finalize was killed");
    let left: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bootc-tmp.merge."))
        .collect();
    assert_eq!(
        left.len(),
        1,
        "the kill left the merge's temporary in state/"
    );
    assert!(
        tree_has_tmp_names(&etc2).is_empty(),
        "none inside the new /etc"
    );
    assert_eq!(s.marker().as_deref(), Some(v2.as_str()), "still staged");

    // Debris as kills elsewhere leave it, and look-alikes that are not ours.
    fs::create_dir_all(state.join(".bootc-tmp.pristine-etc.Ab12/etc")).unwrap();
    fs::write(state.join(".bootc-tmp.pristine-etc.Ab12/etc/x"), "x").unwrap();
    fs::create_dir(state.join("deploy/.bootc-tmp.deadbeef")).unwrap();
    fs::create_dir(s.root.join("boot/.bootc-tmp.bootc_composefs-1234")).unwrap();
    fs::create_dir(s.root.join("boot/loader/.bootc-tmp.entries.staged")).unwrap();
    for keep in [
        "state/.bootc-tmpx",
        "state/bootc-tmp.x",
        "boot/.bootc-other",
    ] {
        fs::write(s.root.join(keep), "not ours").unwrap();
    }

    let (out, _) = s.ok(&v1, &["composefs-finalize-staged"]);
    assert!(out.contains("Finalized"), "{out}");
    assert!(
        tree_has_tmp_names(&etc2).is_empty(),
        "the booted /etc is clean"
    );
    assert_eq!(
        fs::read_to_string(etc2.join("hostname")).unwrap(),
        "edited\n"
    );
    for i in 0..4 {
        assert_eq!(
            fs::read_to_string(etc2.join(format!("local-{i}.conf"))).unwrap(),
            format!("local {i}\n")
        );
    }
    // Finalize's gc removed every leftover with our prefix and nothing else.
    let rest = tree_has_tmp_names(&s.root.join("state"))
        .into_iter()
        .chain(tree_has_tmp_names(&s.root.join("boot")))
        .collect::<Vec<_>>();
    assert!(rest.is_empty(), "leftovers remain: {rest:?}");
    for keep in [
        "state/.bootc-tmpx",
        "state/bootc-tmp.x",
        "boot/.bootc-other",
    ] {
        assert_eq!(fs::read_to_string(s.root.join(keep)).unwrap(), "not ours");
    }
}

/// Issue 8 item 13: on a full disk even `gc` could not run, because taking the lock
/// wrote the pid; and finalize printed its error twice. Now the lock needs no space,
/// gc frees what is dead, and the error is printed once.
#[test]
fn gc_cleans_a_full_disk() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    // A few MiB more than the install needs.
    let s = System::install_on(64 << 20, &["-m", "0"], "loop,nodelalloc");
    let v1 = s.v1.clone();
    // Garbage: a staged update discarded by rollback leaves its deployment behind.
    let v2 = s.stage(&v1, "v2");
    s.ok(&v1, &["rollback"]);
    // And an update waiting for finalize.
    let v3 = s.stage(&v1, "v3");
    let lock = s.root.join("state/bootc.lock");
    assert_eq!(fs::metadata(&lock).unwrap().len(), 11, "a fixed-width pid");
    // As right after install, which takes no lock: no lock file yet.
    fs::remove_file(&lock).unwrap();

    // A local /etc change finalize must carry into v3's /etc (the merge itself reads the
    // pristine /etc in place and needs no space; writing a carried file does).
    fs::write(
        s.root.join(format!("state/deploy/{v1}/etc/local-change")),
        vec![b'x'; 64 << 10],
    )
    .unwrap();

    // Fill the filesystem to ENOSPC.
    let fill = s.root.join("fill");
    fill_up(&s.root, &fill);

    // Finalize needs space to carry the change: it fails with the reason, printed once.
    let err = s.err(&v1, &["composefs-finalize-staged"]);
    let reason: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("No space left on device") && !l.contains("recording the failure"))
        .collect();
    assert_eq!(reason.len(), 1, "the error is printed once: {err}");
    assert!(reason[0].contains("stays the default"), "{err}");
    assert_eq!(s.marker().as_deref(), Some(v3.as_str()), "still staged");

    // gc takes the lock and removes the dead deployment, on a disk that is still full.
    let fill2 = s.root.join("fill2");
    fill_up(&s.root, &fill2);
    let (out, err) = s.ok(&v1, &["gc"]);
    assert!(out.contains("Removed: 1 deployments"), "{out}");
    assert!(!err.contains("rror"), "{err}");
    let mut live = vec![v1.clone(), v3.clone()];
    live.sort();
    assert_eq!(s.deployments(), live);
    assert!(
        !s.hashed().keys().any(|k| k.contains(&v2)),
        "no state, tag or image of the dead deployment is left"
    );
    assert!(
        lock.exists(),
        "the lock file was created without space for the pid"
    );
    fs::remove_file(&fill).unwrap();
    fs::remove_file(&fill2).unwrap();
}

/// Fills the filesystem holding `dir` until not one byte more can be written to a new
/// file.
fn fill_up(dir: &Path, fill: &Path) {
    use std::io::Write;
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", fill.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
        "dd filled the disk"
    );
    // dd stops when a 1 MiB allocation fails; fill the last blocks in ever smaller
    // writes (the filesystem's blocks may be 1 KiB).
    let mut f = fs::OpenOptions::new().append(true).open(fill).unwrap();
    for size in [4096, 512, 1] {
        let mut refused = 0;
        while refused < 2 {
            run(Command::new("sync").arg("-f").arg(dir));
            match f.write_all(&vec![0u8; size]).and_then(|_| f.sync_all()) {
                Ok(()) => refused = 0,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "{e}");
                    refused += 1;
                }
            }
        }
    }
    let probe = dir.join("probe");
    let r = fs::write(&probe, vec![0u8; 4096])
        .and_then(|_| fs::OpenOptions::new().write(true).open(&probe)?.sync_all());
    let _ = fs::remove_file(&probe);
    assert_eq!(
        r.unwrap_err().raw_os_error(),
        Some(28),
        "not one block left"
    );
}
