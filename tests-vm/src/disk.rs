//! Host-side work on disk images: `bootc install to-disk --via-loopback`, and looking
//! into (or changing) a partition of an installed disk through a loop mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// GPT type of an EFI system partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates a sparse disk image of `size_gib`.
pub fn sparse_disk(path: &Path, size_gib: u64) -> Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size_gib << 30)?;
    Ok(())
}

/// Installs `imgref` to the disk image `disk` (created sparse, `size_gib`) with the host's
/// `bootc install to-disk --via-loopback`. Returns the seconds it took.
pub fn bootc_install(bootc: &Path, disk: &Path, size_gib: u64, imgref: &str, kargs: &[&str]) -> Result<f64> {
    sparse_disk(disk, size_gib)?;
    let t = Instant::now();
    let mut cmd = Command::new(bootc);
    cmd.args(["install", "to-disk", "--via-loopback"]).arg(disk);
    cmd.args(["--source-imgref", imgref, "--wipe"]);
    for k in kargs {
        cmd.args(["--karg", k]);
    }
    eprintln!("host: {cmd:?}");
    let out = cmd.output().with_context(|| format!("running {}", bootc.display()))?;
    if !out.status.success() {
        bail!(
            "bootc install failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!("host: bootc install took {secs:.1} s");
    Ok(secs)
}

/// A partition of a disk image: byte offset and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub offset: u64,
    pub size: u64,
    pub esp: bool,
}

/// Reads the GPT of a disk image with `sfdisk --json`.
pub fn partitions(disk: &Path) -> Result<Vec<Partition>> {
    let json = run(Command::new("sfdisk").arg("--json").arg(disk))?;
    parse_sfdisk(&json)
}

fn parse_sfdisk(json: &str) -> Result<Vec<Partition>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parsing sfdisk --json")?;
    let pt = &v["partitiontable"];
    let sector = pt["sectorsize"].as_u64().unwrap_or(512);
    let parts = pt["partitions"].as_array().context("sfdisk: no partitions")?;
    Ok(parts
        .iter()
        .map(|p| Partition {
            offset: p["start"].as_u64().unwrap_or(0) * sector,
            size: p["size"].as_u64().unwrap_or(0) * sector,
            esp: p["type"].as_str().map(|t| t.eq_ignore_ascii_case(ESP_TYPE)).unwrap_or(false),
        })
        .collect())
}

/// Mounts one partition of `disk` (the ESP, or the root: the first non-ESP partition) on
/// a fresh directory under `work`, calls `f` with it, and unmounts again.
pub fn with_partition<T>(disk: &Path, esp: bool, work: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let parts = partitions(disk)?;
    let p = parts
        .iter()
        .find(|p| p.esp == esp)
        .with_context(|| format!("{}: no {} partition", disk.display(), if esp { "EFI system" } else { "root" }))?;
    let mnt = work.join(if esp { "mnt-esp" } else { "mnt-root" });
    fs::create_dir_all(&mnt)?;
    run(Command::new("mount")
        .args(["-o", &format!("loop,offset={},sizelimit={}", p.offset, p.size)])
        .arg(disk)
        .arg(&mnt))?;
    let r = f(&mnt);
    let u = run(Command::new("umount").arg(&mnt));
    let _ = fs::remove_dir(&mnt);
    let v = r?;
    u?;
    Ok(v)
}

/// Every `loader/entries/*.conf` under `root` (an ESP or a /boot).
pub fn bls_entries(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    for dir in ["loader/entries", "boot/loader/entries"] {
        let d = root.join(dir);
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "conf") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `composefs=` value of a kernel command line or BLS `options` line.
pub fn composefs_arg(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("composefs=").map(str::to_string))
}

/// The hex digest of a `composefs=` value (`?`, `sha256:` stripped).
pub fn composefs_hex(arg: &str) -> &str {
    let a = arg.trim_start_matches('?');
    a.split_once(':').map(|(_, h)| h).unwrap_or(a)
}

/// Rewrites the `composefs=` argument of every BLS entry on the disk's ESP (or root,
/// wherever the entries are) with `f(old) -> new`. Returns the entries changed.
pub fn edit_bls(disk: &Path, work: &Path, f: impl Fn(&str) -> String) -> Result<usize> {
    let mut n = 0;
    for esp in [true, false] {
        n += with_partition(disk, esp, work, |mnt| {
            let mut n = 0;
            for e in bls_entries(mnt)? {
                let text = fs::read_to_string(&e)?;
                let mut changed = false;
                let new: Vec<String> = text
                    .lines()
                    .map(|l| {
                        if l.starts_with("options") {
                            l.split(' ')
                                .map(|w| match w.strip_prefix("composefs=") {
                                    Some(v) => {
                                        changed = true;
                                        format!("composefs={}", f(v))
                                    }
                                    None => w.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                if changed {
                    fs::write(&e, new.join("\n") + "\n")?;
                    eprintln!("host: edited {}: {}", e.display(), new.iter().find(|l| l.starts_with("options")).unwrap());
                    n += 1;
                }
            }
            Ok(n)
        })?;
        if n > 0 {
            break;
        }
    }
    if n == 0 {
        bail!("{}: no BLS entry with composefs= found", disk.display());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfdisk_json() {
        let j = r#"{"partitiontable":{"label":"gpt","unit":"sectors","sectorsize":512,"partitions":[
            {"node":"d1","start":2048,"size":1048576,"type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
            {"node":"d2","start":1050624,"size":2000000,"type":"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"}]}}"#;
        let p = parse_sfdisk(j).unwrap();
        assert_eq!(p[0], Partition { offset: 2048 * 512, size: 1048576 * 512, esp: true });
        assert!(!p[1].esp);
    }

    #[test]
    fn composefs_args() {
        let c = "root=UUID=x rw composefs=?sha256:abcd console=ttyS0";
        assert_eq!(composefs_arg(c).as_deref(), Some("?sha256:abcd"));
        assert_eq!(composefs_hex("?sha256:abcd"), "abcd");
        assert_eq!(composefs_hex("abcd"), "abcd");
        assert_eq!(composefs_hex("sha512:ef"), "ef");
        assert_eq!(composefs_arg("quiet"), None);
    }
}
