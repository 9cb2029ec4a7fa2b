//! Host-side work on disk images: `bootc install to-disk --via-loopback`, reading the
//! GPT, and editing the BLS entries on the ESP with mtools at the partition's offset (no
//! mount: the host kernel may lack vfat).

use std::fs;
use std::path::Path;
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
/// `bootc install to-disk --via-loopback`, with `--bootloader <b>` when `bootloader` is
/// given (the installer's default otherwise) and `extra` arguments appended. Returns the
/// seconds it took.
pub fn bootc_install(
    bootc: &Path,
    disk: &Path,
    size_gib: u64,
    imgref: &str,
    extra: &[&str],
    bootloader: Option<&str>,
) -> Result<f64> {
    sparse_disk(disk, size_gib)?;
    let t = Instant::now();
    let mut cmd = Command::new(bootc);
    cmd.args(["install", "to-disk", "--via-loopback"]).arg(disk);
    cmd.args(["--source-imgref", imgref, "--wipe"]);
    if let Some(b) = bootloader {
        cmd.args(["--bootloader", b]);
    }
    cmd.args(extra);
    eprintln!("host: {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bootc.display()))?;
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
    let parts = pt["partitions"]
        .as_array()
        .context("sfdisk: no partitions")?;
    Ok(parts
        .iter()
        .map(|p| Partition {
            offset: p["start"].as_u64().unwrap_or(0) * sector,
            size: p["size"].as_u64().unwrap_or(0) * sector,
            esp: p["type"]
                .as_str()
                .map(|t| t.eq_ignore_ascii_case(ESP_TYPE))
                .unwrap_or(false),
        })
        .collect())
}

/// The `composefs=` value of a kernel command line or BLS `options` line.
pub fn composefs_arg(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("composefs=").map(str::to_string))
}

/// The `composefs=` value of each `menuentry` of a GRUB menu as bootc writes it
/// (`grub2/user.cfg`: `linux` followed by single-quoted words), in menu order; `None` for
/// an entry without a `linux` line or without `composefs=` on it.
pub fn menu_composefs(cfg: &str) -> Vec<Option<String>> {
    let mut out = vec![];
    let mut in_entry = false;
    for line in cfg.lines().map(str::trim) {
        if line.starts_with("menuentry ") {
            in_entry = true;
            out.push(None);
        } else if line == "}" {
            in_entry = false;
        } else if in_entry && line.starts_with("linux ") {
            let arg = line
                .split_whitespace()
                .map(|w| w.trim_matches('\''))
                .find_map(|w| w.strip_prefix("composefs=").map(str::to_string));
            if let Some(last) = out.last_mut() {
                *last = arg;
            }
        }
    }
    out
}

/// The hex digest of a `composefs=` value (`?`, `sha256:` stripped).
pub fn composefs_hex(arg: &str) -> &str {
    let a = arg.trim_start_matches('?');
    a.split_once(':').map(|(_, h)| h).unwrap_or(a)
}

/// The mtools image spec (`<disk>@@<offset>`) of the disk's EFI system partition.
fn esp_image(disk: &Path) -> Result<String> {
    let esp = partitions(disk)?
        .into_iter()
        .find(|p| p.esp)
        .with_context(|| format!("{}: no EFI system partition", disk.display()))?;
    Ok(format!("{}@@{}", disk.display(), esp.offset))
}

/// Whether `path` (relative to the ESP's root, e.g. `EFI/BOOT/BOOTX64.EFI`) exists on the
/// disk's ESP, by `mdir` with mtools.
pub fn esp_has(disk: &Path, path: &str) -> Result<bool> {
    let img = esp_image(disk)?;
    let src = format!("::/{}", path.trim_start_matches('/'));
    let out = Command::new("mdir")
        .args(["-b", "-i", &img, &src])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .context("running mdir (apt-get install mtools)")?;
    Ok(out.status.success())
}

/// Reads the text file `path` (relative to the ESP's root, e.g. `grub2/user.cfg`) from
/// the disk's ESP with mtools; `None` when it does not exist.
pub fn esp_read(disk: &Path, path: &str) -> Result<Option<String>> {
    if !esp_has(disk, path)? {
        return Ok(None);
    }
    let img = esp_image(disk)?;
    let src = format!("::/{}", path.trim_start_matches('/'));
    Ok(Some(run(Command::new("mtype")
        .args(["-i", &img, &src])
        .env("MTOOLS_SKIP_CHECK", "1"))?))
}

/// Writes `text` as the file `path` (relative to the ESP's root) on the disk's ESP with
/// mtools, replacing it when it exists; the text passes through a file in `work`.
pub fn esp_write(disk: &Path, work: &Path, path: &str, text: &str) -> Result<()> {
    let img = esp_image(disk)?;
    let dst = format!("::/{}", path.trim_start_matches('/'));
    let tmp = work.join(".esp-write.tmp");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let r = run(Command::new("mcopy")
        .args(["-o", "-i", &img])
        .arg(&tmp)
        .arg(&dst)
        .env("MTOOLS_SKIP_CHECK", "1"));
    let _ = fs::remove_file(&tmp);
    r.map(drop)
}

/// Deletes the file `path` (relative to the ESP's root) from the disk's ESP with mtools.
pub fn esp_delete(disk: &Path, path: &str) -> Result<()> {
    let img = esp_image(disk)?;
    run(Command::new("mdel")
        .args(["-i", &img])
        .arg(format!("::/{}", path.trim_start_matches('/')))
        .env("MTOOLS_SKIP_CHECK", "1"))
    .map(drop)
}

/// The file names of the BLS entries (`*.conf`) in `loader/entries` on the disk's ESP,
/// sorted, by `mdir` with mtools.
pub fn esp_entries(disk: &Path) -> Result<Vec<String>> {
    let img = esp_image(disk)?;
    let out = run(Command::new("mdir")
        .args(["-b", "-i", &img, "::/loader/entries"])
        .env("MTOOLS_SKIP_CHECK", "1"))?;
    // `mdir -b` prints full paths (::/loader/entries/x.conf).
    let mut names: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(".conf"))
        .map(|l| l.rsplit('/').next().unwrap_or(l).to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// Rewrites the `composefs=` argument of every BLS entry on the disk's ESP with
/// `f(old) -> new`. Returns the number of entries changed. Works with mtools on the
/// image at the partition's offset (the host kernel may lack vfat).
pub fn edit_bls(disk: &Path, work: &Path, f: impl Fn(&str) -> String) -> Result<usize> {
    let img = esp_image(disk)?;
    let mut n = 0;
    for name in esp_entries(disk)? {
        let src = format!("::/loader/entries/{name}");
        let text = run(Command::new("mtype")
            .args(["-i", &img, &src])
            .env("MTOOLS_SKIP_CHECK", "1"))?;
        let (new, changed) = rewrite_options(&text, &f);
        if changed {
            esp_write(disk, work, &format!("loader/entries/{name}"), &new)?;
            eprintln!(
                "host: edited {src}: {}",
                new.lines().find(|l| l.starts_with("options")).unwrap_or("")
            );
            n += 1;
        }
    }
    if n == 0 {
        bail!(
            "{}: no BLS entry with composefs= on the ESP",
            disk.display()
        );
    }
    Ok(n)
}

/// Makes `pattern` (a systemd-boot entry id glob) the default entry: rewrites the
/// `default` line of `loader/loader.conf` on the disk's ESP (other lines kept), with
/// mtools. The host-side stand-in for a user choosing an entry in the boot menu.
pub fn esp_set_default(disk: &Path, work: &Path, pattern: &str) -> Result<()> {
    let old = esp_read(disk, "loader/loader.conf")?.unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("default"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("default {pattern}\n"));
    esp_write(disk, work, "loader/loader.conf", &text)?;
    eprintln!(
        "host: loader/loader.conf now: {}",
        text.trim().replace('\n', "; ")
    );
    Ok(())
}

/// Applies `f` to the `composefs=` value of the `options` line(s) of a BLS entry.
pub fn rewrite_options(text: &str, f: &impl Fn(&str) -> String) -> (String, bool) {
    let mut changed = false;
    let lines: Vec<String> = text
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
    (lines.join("\n") + "\n", changed)
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
        assert_eq!(
            p[0],
            Partition {
                offset: 2048 * 512,
                size: 1048576 * 512,
                esp: true
            }
        );
        assert!(!p[1].esp);
    }

    #[test]
    fn rewrites_only_composefs() {
        let e = "title T\nlinux /k\noptions root=UUID=x rw composefs=?sha256:ab console=ttyS0\n";
        let (n, c) = rewrite_options(e, &|v: &str| format!("{v}cd"));
        assert!(c);
        assert_eq!(
            n,
            "title T\nlinux /k\noptions root=UUID=x rw composefs=?sha256:abcd console=ttyS0\n"
        );
        assert!(!rewrite_options("title T\n", &|v: &str| v.to_string()).1);
    }

    #[test]
    fn grub_menu_entries_in_order() {
        let cfg = "# Written by bootc: one entry per deployment.\n\
            menuentry 'OS v2' --id 'bootc_composefs-bb' {\n\
            \x20   linux '/bootc_composefs-aa/vmlinuz' 'root=UUID=u' 'rw' 'composefs=?sha256:bb' 'console=ttyS0,115200'\n\
            \x20   initrd '/bootc_composefs-aa/initramfs.img'\n\
            }\n\
            menuentry 'OS v1' --id 'bootc_composefs-aa' {\n\
            \x20   linux '/bootc_composefs-aa/vmlinuz' 'composefs=sha256:aa'\n\
            }\n\
            menuentry 'no linux' {\n\
            }\n";
        assert_eq!(
            menu_composefs(cfg),
            vec![
                Some("?sha256:bb".to_string()),
                Some("sha256:aa".to_string()),
                None
            ]
        );
        assert!(menu_composefs("set timeout=3\n").is_empty());
        // A `linux` line outside an entry names no entry.
        assert!(menu_composefs("linux '/k' 'composefs=sha256:aa'\n").is_empty());
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
