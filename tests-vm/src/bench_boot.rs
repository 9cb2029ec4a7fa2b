//! `bench-boot`: the cost of a composefs root at boot (issue 14, case 5).
//!
//! Two disks of the same image (tag v1), booted alternately under the same QEMU config:
//! - composefs: the host install (`Ctx::host_install`; `composefs=?`, fs-verity not
//!   enforced: the host has no fs-verity);
//! - plain: a second host install whose root partition is replaced by an ext4 holding
//!   the unpacked v1 layer, booted by a Type #1 entry with the image's own kernel and
//!   initramfs (the ones bootc put on the ESP) and the composefs entry's options without
//!   `composefs=` and with `root=UUID=<the ext4>`.
//!
//! Each boot's initrd and userspace times are systemd's own (the manager's
//! `InitRDTimestampMonotonic`, `UserspaceTimestampMonotonic`, `FinishTimestampMonotonic`,
//! which `systemd-analyze time` prints), read once the boot has finished. Under TCG only
//! the ratios mean something.
//!
//! `--json FILE` also writes every measured boot (not the warm-ups) for bench/bench.py,
//! which renders the `boot` section of bench/RESULTS.md from it: see [`report_json`].
//!
//! Diagnostics (environment): `BOOTC_BENCH_BOOT_JOURNAL=DIR` keeps each boot's journal
//! (the initrd's part included) to time single steps; `BOOTC_BENCH_BOOT_BASELINE=IMAGES`
//! adds the composefs install of another image build to the rotation, for a before/after
//! of an image change under the same load.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::disk::{self, run};
use crate::qemu::Disk;
use crate::scenarios::{self, limits, Ctx};

/// The drop-in that lets the plain root boot: the image's health check requires a
/// composefs root and the harness shell requires the check. It still runs (same work as
/// on the composefs boot), its failure is ignored (`-`).
const HEALTH_DROPIN: &str = "[Service]\nExecStart=\nExecStart=-/usr/lib/bootc-test/health-check\n";

/// Diagnostics: when set to a directory, every boot's journal (`journalctl -b -o
/// short-monotonic`, the initrd's part included) is written there as `<label>.journal`,
/// to time single steps (far less noisy than whole phases under TCG).
const JOURNAL_ENV: &str = "BOOTC_BENCH_BOOT_JOURNAL";

/// Diagnostics: when set to another images directory (the `BOOTC_VM_OUT` of an older
/// build), a third disk, the host install of that directory's v1, joins the rotation as
/// `baseline`: a before/after of an image change under the same load. Its boots are
/// printed, not in the report or the JSON.
const BASELINE_ENV: &str = "BOOTC_BENCH_BOOT_BASELINE";

/// systemd's boot phases of one boot, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Phases {
    pub kernel: f64,
    pub initrd: f64,
    pub userspace: f64,
}

impl Phases {
    pub(crate) fn total(&self) -> f64 {
        self.initrd + self.userspace
    }
}

/// Parses `systemctl show -p InitRDTimestampMonotonic -p UserspaceTimestampMonotonic -p
/// FinishTimestampMonotonic` (µs since the kernel started) into phases as
/// `systemd-analyze time` computes them. Fails on a boot without an initrd or not finished.
pub(crate) fn parse_phases(text: &str) -> Result<Phases> {
    let get = |k: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix('='))
            .with_context(|| format!("no {k} in {text:?}"))?
            .parse()
            .with_context(|| format!("{k} is not a number in {text:?}"))
    };
    let initrd = get("InitRDTimestampMonotonic")?;
    let user = get("UserspaceTimestampMonotonic")?;
    let finish = get("FinishTimestampMonotonic")?;
    ensure!(
        initrd > 0,
        "the boot had no initrd (InitRDTimestampMonotonic=0)"
    );
    ensure!(
        user > initrd && finish > user,
        "boot not finished or timestamps out of order: {text:?}"
    );
    Ok(Phases {
        kernel: initrd as f64 / 1e6,
        initrd: (user - initrd) as f64 / 1e6,
        userspace: (finish - user) as f64 / 1e6,
    })
}

/// A named phase of [`Phases`], for the report.
type Field = (&'static str, fn(&Phases) -> f64);

/// The median of `v` (mean of the middle two for an even count); NaN when empty.
pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The options of the plain entry: the composefs entry's, without `composefs=` and with
/// `root=UUID=<uuid>` (and `rw`) in place of its root.
pub(crate) fn plain_options(composefs_options: &str, uuid: &str) -> String {
    let mut o = vec![format!("root=UUID={uuid}"), "rw".to_string()];
    o.extend(
        composefs_options
            .split_whitespace()
            .filter(|w| !w.starts_with("root=") && !w.starts_with("composefs=") && *w != "rw")
            .map(str::to_string),
    );
    o.join(" ")
}

/// The layer blobs of `tag` in the OCI layout `oci`, in order.
fn layers(oci: &Path, tag: &str) -> Result<Vec<PathBuf>> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        serde_json::from_slice(&fs::read(p).with_context(|| format!("reading {}", p.display()))?)
            .with_context(|| format!("parsing {}", p.display()))
    };
    let blob = |digest: &str| -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("digest {digest} is not sha256"))?;
        Ok(oci.join("blobs/sha256").join(hex))
    };
    let index = read(&oci.join("index.json"))?;
    let m = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .with_context(|| format!("{}: no tag {tag}", oci.display()))?;
    let manifest = read(&blob(m["digest"].as_str().context("manifest digest")?)?)?;
    manifest["layers"]
        .as_array()
        .context("manifest without layers")?
        .iter()
        .map(|l| blob(l["digest"].as_str().context("layer digest")?))
        .collect()
}

/// Turns the host-installed `disk` into the plain one: its root partition becomes an ext4
/// of the unpacked `tag` layers (plus [`HEALTH_DROPIN`]), its only boot entry boots it.
fn make_plain(ctx: &Ctx, dir: &Path, disk: &Path, tag: &str) -> Result<()> {
    let parts = disk::partitions(disk)?;
    let root = parts
        .iter()
        .filter(|p| !p.esp)
        .max_by_key(|p| p.size)
        .with_context(|| format!("{}: no root partition", disk.display()))?;
    let entries = disk::esp_entries(disk)?;
    ensure!(
        entries.len() == 1,
        "expected one BLS entry after the install, found {entries:?}"
    );
    let entry = disk::esp_read(disk, &format!("loader/entries/{}", entries[0]))?
        .context("the BLS entry vanished")?;

    let tree = dir.join("rootfs");
    fs::create_dir_all(&tree)?;
    let layers = layers(&ctx.images.join("oci"), tag)?;
    ensure!(
        layers.len() == 1,
        "tag {tag} has {} layers; only a single-layer image is unpacked (no whiteouts)",
        layers.len()
    );
    run(Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&layers[0])
        .arg("-C")
        .arg(&tree))?;
    let dropin = tree.join("etc/systemd/system/bootc-test-health.service.d");
    fs::create_dir_all(&dropin)?;
    fs::write(dropin.join("50-bench-plain-root.conf"), HEALTH_DROPIN)?;

    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_string();
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "plain-root", "-U", &uuid])
        .arg("-E")
        .arg(format!("offset={}", root.offset))
        .arg("-d")
        .arg(&tree)
        .arg(disk)
        .arg(format!("{}k", root.size / 1024)))?;
    let _ = fs::remove_dir_all(&tree);

    let mut text = String::from("title plain ext4 root (bootc-vm bench-boot)\n");
    for l in entry.lines() {
        if l.starts_with("linux") || l.starts_with("initrd") {
            text.push_str(l);
            text.push('\n');
        }
    }
    let opts = entry
        .lines()
        .find_map(|l| l.strip_prefix("options"))
        .context("the BLS entry has no options line")?;
    text.push_str(&format!("options {}\n", plain_options(opts, &uuid)));
    ensure!(
        text.contains("\nlinux") && text.contains("\ninitrd"),
        "the BLS entry lacks linux/initrd lines:\n{entry}"
    );

    disk::esp_delete(disk, &format!("loader/entries/{}", entries[0]))?;
    disk::esp_write(disk, dir, "loader/entries/plain.conf", &text)?;
    disk::esp_set_default(disk, dir, "plain.conf")?;
    println!(
        "bench-boot: plain disk: ext4 UUID {uuid} on the root partition; entry:\n{}",
        text.trim_end()
    );
    Ok(())
}

/// One measured boot: systemd's phases and its slowest non-device units
/// (`systemd-analyze blame`, e.g. `6.512s systemd-boot-update.service`).
#[derive(Debug, Clone)]
pub(crate) struct Boot {
    pub phases: Phases,
    pub slowest: Vec<String>,
}

/// Boots `disk`, waits for the boot to finish, checks the root is of `fstype`, and
/// returns systemd's phases and its slowest units.
fn measure(ctx: &Ctx, dir: &Path, label: &str, disk: &Path, fstype: &str) -> Result<Boot> {
    let mut vm = ctx.boot(dir, label, vec![Disk::rw(disk)])?;
    let out = vm.ok_within(
        "systemctl is-system-running --wait >/dev/null || true; \
         echo \"root=$(findmnt -no FSTYPE /)\"; \
         systemd-analyze time | head -n1; \
         systemd-analyze blame --no-pager | grep -v '[.]device$' | head -n 4 | sed 's/^ */blame: /'; \
         systemctl show -p InitRDTimestampMonotonic -p UserspaceTimestampMonotonic -p FinishTimestampMonotonic",
        ctx.t(limits::BOOT),
    )?;
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("root="))
        .unwrap_or("")
        .trim();
    ensure!(root == fstype, "[{label}] / is {root:?}, expected {fstype}");
    let p = parse_phases(&out)?;
    let analyze = out
        .lines()
        .find(|l| l.starts_with("Startup finished"))
        .unwrap_or("");
    let blame: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("blame: "))
        .collect();
    println!(
        "  {label}: {analyze}\n    slowest units: {}",
        blame.join(", ")
    );
    if let Some(dir) = std::env::var_os(JOURNAL_ENV) {
        let journal = vm.ok_within(
            "journalctl -b -o short-monotonic --no-pager",
            ctx.t(limits::BOOT),
        )?;
        let path = Path::new(&dir).join(format!("{label}.journal"));
        fs::write(&path, journal).with_context(|| format!("writing {}", path.display()))?;
    }
    vm.poweroff(ctx.t(limits::POWEROFF))?;
    Ok(Boot {
        phases: p,
        slowest: blame.iter().map(|b| b.trim().to_string()).collect(),
    })
}

/// The machine-readable results of `bench-boot --json FILE`: per root (`composefs`,
/// `plain`), every measured boot in the order it ran, with its phases in seconds
/// (`initrd + userspace` as `total`) and its slowest units; `runs` boots of each, round
/// `i` is index `i` of both lists.
pub(crate) fn report_json(runs: usize, composefs: &[Boot], plain: &[Boot]) -> serde_json::Value {
    let boots = |v: &[Boot]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|b| {
                serde_json::json!({
                    "kernel": b.phases.kernel,
                    "initrd": b.phases.initrd,
                    "userspace": b.phases.userspace,
                    "total": b.phases.total(),
                    "slowest": b.slowest,
                })
            })
            .collect()
    };
    serde_json::json!({
        "runs": runs,
        "composefs": boots(composefs),
        "plain": boots(plain),
    })
}

/// Writes `value` to `path` whole or not at all (a temporary file renamed into place).
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", path.display()))
}

/// `bench-boot [--runs N] [--json FILE]`: one warm-up boot of each disk, then `runs`
/// boots of each, alternating; prints the medians and the ratios composefs / plain, and
/// writes every measured boot to `json` when given ([`report_json`]).
pub(crate) fn bench_boot(ctx: &Ctx, runs: usize, json: Option<&Path>) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let dir = ctx.work.join("bench-boot");
    scenarios::cleanup(&dir);
    fs::create_dir_all(&dir)?;
    let r = (|| -> Result<()> {
        let cfs = ctx.host_install(&dir, "composefs", "v1", None)?;
        let plain = ctx.host_install(&dir, "plain", "v1", None)?;
        make_plain(ctx, &dir, &plain, "v1")?;
        let baseline = match std::env::var_os(BASELINE_ENV) {
            None => None,
            Some(images) => Some(
                Ctx {
                    images: images.into(),
                    ..ctx.clone()
                }
                .host_install(&dir, "baseline", "v1", None)?,
            ),
        };
        let mut disks = vec![("composefs", &cfs, "overlay"), ("plain", &plain, "ext4")];
        if let Some(b) = &baseline {
            disks.push(("baseline", b, "overlay"));
        }
        println!("bench-boot: warm-up boot of each disk (not counted)");
        for &(name, d, fstype) in &disks {
            measure(ctx, &dir, &format!("{name}-warmup"), d, fstype)?;
        }
        let mut all: Vec<Vec<Boot>> = vec![vec![]; disks.len()];
        for i in 0..runs {
            // Alternate, and rotate which goes first.
            for k in 0..disks.len() {
                let j = (i + k) % disks.len();
                let (name, d, fstype) = disks[j];
                all[j].push(measure(ctx, &dir, &format!("{name}-{}", i + 1), d, fstype)?);
            }
        }
        if let Some(b) = all.get(2) {
            let runs: Vec<String> = b
                .iter()
                .map(|b| format!("{:.2}+{:.2}", b.phases.initrd, b.phases.userspace))
                .collect();
            println!(
                "bench-boot: baseline (composefs from ${BASELINE_ENV}) runs (initrd+userspace s): {}",
                runs.join(", ")
            );
        }
        let mut all = all.into_iter();
        let boots: [Vec<Boot>; 2] = [all.next().unwrap(), all.next().unwrap()];
        if let Some(path) = json {
            write_json(path, &report_json(runs, &boots[0], &boots[1]))?;
            println!("bench-boot: wrote {}", path.display());
        }
        let res = boots.map(|v| v.into_iter().map(|b| b.phases).collect::<Vec<_>>());
        let med =
            |v: &[Phases], f: fn(&Phases) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let fields: [Field; 4] = [
            ("kernel", |p| p.kernel),
            ("initrd", |p| p.initrd),
            ("userspace", |p| p.userspace),
            ("initrd+userspace", |p| p.total()),
        ];
        println!(
            "--- bench-boot: {runs} boot(s) each after a warm-up, medians (TCG: only the ratios mean something; composefs=? host install, fs-verity not enforced)"
        );
        println!(
            "  {:<18} {:>10} {:>10} {:>10}",
            "phase", "composefs", "plain", "ratio"
        );
        for (n, f) in fields {
            let (c, p) = (med(&res[0], f), med(&res[1], f));
            println!("  {n:<18} {c:>9.2}s {p:>9.2}s {:>9.3}×", c / p);
        }
        // Each round's two boots ran back to back: their ratio cancels load that drifts
        // between rounds.
        let paired: Vec<f64> = res[0]
            .iter()
            .zip(&res[1])
            .map(|(c, p)| c.total() / p.total())
            .collect();
        println!(
            "  initrd+userspace, median of the per-round ratios: {:.3}×",
            median(&paired)
        );
        for (j, (name, ..)) in disks.iter().take(2).enumerate() {
            let all: Vec<String> = res[j]
                .iter()
                .map(|p| format!("{:.2}+{:.2}", p.initrd, p.userspace))
                .collect();
            println!("  {name} runs (initrd+userspace s): {}", all.join(", "));
        }
        Ok(())
    })();
    match r {
        Ok(()) => {
            scenarios::cleanup(&dir);
            Ok(())
        }
        Err(e) => {
            let kept = scenarios::keep_artifacts(ctx, "bench-boot", &dir)?;
            scenarios::cleanup(&dir);
            Err(e.context(format!("console logs kept in {}", kept.display())))
        }
    }
}

/// The `--json` value of the arguments, if any.
pub(crate) fn json_arg(args: &[String]) -> Result<Option<PathBuf>> {
    match args.iter().position(|a| a == "--json") {
        None => Ok(None),
        Some(i) => Ok(Some(PathBuf::from(
            args.get(i + 1).context("--json needs a file name")?,
        ))),
    }
}

/// The `--runs` value of the arguments (default 3).
pub(crate) fn runs_arg(args: &[String]) -> Result<usize> {
    match args.iter().position(|a| a == "--runs") {
        None => Ok(3),
        Some(i) => args
            .get(i + 1)
            .context("--runs needs a number")?
            .parse()
            .context("--runs needs a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_as_systemd_analyze_computes_them() {
        let t = "InitRDTimestampMonotonic=2500000\nUserspaceTimestampMonotonic=10000000\nFinishTimestampMonotonic=40000000\n";
        let p = parse_phases(t).unwrap();
        assert_eq!(p.kernel, 2.5);
        assert_eq!(p.initrd, 7.5);
        assert_eq!(p.userspace, 30.0);
        assert_eq!(p.total(), 37.5);
        // Not finished yet, or no initrd.
        assert!(parse_phases(&t.replace("=40000000", "=0")).is_err());
        assert!(parse_phases(&t.replace("=2500000", "=0")).is_err());
        assert!(parse_phases("garbage").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn plain_entry_options() {
        let o = "root=UUID=aaaa rw composefs=?sha256:abcd console=ttyS0,115200 systemd.firstboot=off audit=0 rw";
        assert_eq!(
            plain_options(o, "bbbb"),
            "root=UUID=bbbb rw console=ttyS0,115200 systemd.firstboot=off audit=0"
        );
    }

    #[test]
    fn runs_argument() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(runs_arg(&a(&["bench-boot"])).unwrap(), 3);
        assert_eq!(runs_arg(&a(&["bench-boot", "--runs", "5"])).unwrap(), 5);
        assert!(runs_arg(&a(&["bench-boot", "--runs"])).is_err());
        assert!(runs_arg(&a(&["bench-boot", "--runs", "x"])).is_err());
    }

    #[test]
    fn json_argument() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(json_arg(&a(&["bench-boot"])).unwrap(), None);
        assert_eq!(
            json_arg(&a(&["bench-boot", "--runs", "1", "--json", "/tmp/b.json"])).unwrap(),
            Some(PathBuf::from("/tmp/b.json"))
        );
        assert!(json_arg(&a(&["bench-boot", "--json"])).is_err());
    }

    #[test]
    fn json_report_has_every_boot() {
        let b = |i: f64, u: f64| Boot {
            phases: Phases {
                kernel: 1.0,
                initrd: i,
                userspace: u,
            },
            slowest: vec!["6.512s systemd-boot-update.service".into()],
        };
        let v = report_json(2, &[b(2.0, 3.0), b(2.5, 3.5)], &[b(2.0, 4.0), b(2.0, 5.0)]);
        assert_eq!(v["runs"], 2);
        assert_eq!(v["composefs"].as_array().unwrap().len(), 2);
        assert_eq!(v["composefs"][1]["initrd"], 2.5);
        assert_eq!(v["composefs"][1]["total"], 6.0);
        assert_eq!(v["plain"][1]["userspace"], 5.0);
        assert_eq!(
            v["plain"][0]["slowest"][0],
            "6.512s systemd-boot-update.service"
        );
    }
}
