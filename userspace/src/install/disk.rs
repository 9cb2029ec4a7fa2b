//! Block devices for `install to-disk`: the partition table and filesystems. Loop
//! devices and mounts are guards from [`crate::sys`] that release them on drop, so every
//! exit path (errors included) unmounts and detaches what was set up.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::cmd::{run, run_with_stdin, which};
use crate::sys::mount::mount_table;

/// GPT type of the EFI System Partition.
pub(crate) const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type of the x86-64 root partition (found by systemd-gpt-auto-generator).
pub(crate) const ROOT_TYPE_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// GPT type of the aarch64 root partition.
pub(crate) const ROOT_TYPE_AARCH64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
/// Size of the ESP.
pub(crate) const ESP_SIZE_MIB: u64 = 512;
/// The smallest root partition we create.
pub(crate) const MIN_ROOT_MIB: u64 = 512;
/// The smallest target: GPT + ESP + root.
pub(crate) const MIN_DISK_BYTES: u64 = (ESP_SIZE_MIB + MIN_ROOT_MIB + 2) << 20;
/// Label of the ESP filesystem.
pub(crate) const ESP_LABEL: &str = "EFI-SYSTEM";
/// Label of the root filesystem.
pub(crate) const ROOT_LABEL: &str = "root";

/// The root partition type for this architecture.
pub(crate) fn root_type() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => ROOT_TYPE_AARCH64,
        _ => ROOT_TYPE_X86_64,
    }
}

/// The size of a block device or file, in bytes.
pub(crate) fn size_of(path: &Path) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::End(0))
        .with_context(|| format!("finding the size of {}", path.display()))
}

/// Fails unless `path` is a block device.
pub(crate) fn require_block_device(path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !md.file_type().is_block_device() {
        bail!(
            "{} is not a block device (use --via-loopback to install to a disk image file)",
            path.display()
        );
    }
    Ok(())
}

/// Fails if the target is smaller than [`MIN_DISK_BYTES`].
pub(crate) fn check_size(path: &Path, size: u64) -> Result<()> {
    if size < MIN_DISK_BYTES {
        bail!(
            "{} is too small: {} MiB, need at least {} MiB ({} MiB ESP + {} MiB root)",
            path.display(),
            size >> 20,
            MIN_DISK_BYTES >> 20,
            ESP_SIZE_MIB,
            MIN_ROOT_MIB
        );
    }
    Ok(())
}

/// The device nodes of `dev`'s partitions, from sysfs.
pub(crate) fn partitions(dev: &Path) -> Result<Vec<PathBuf>> {
    let real =
        std::fs::canonicalize(dev).with_context(|| format!("resolving {}", dev.display()))?;
    let name = real
        .file_name()
        .context("device name")?
        .to_string_lossy()
        .into_owned();
    let sys = PathBuf::from("/sys/class/block").join(&name);
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(&sys) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&name) && e.path().join("partition").exists() {
                out.push(PathBuf::from("/dev").join(n));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Fails if the device or one of its partitions is mounted.
pub(crate) fn check_not_mounted(dev: &Path) -> Result<()> {
    let mut devs = vec![std::fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf())];
    devs.extend(partitions(dev)?);
    for m in mount_table()? {
        if devs.iter().any(|d| Path::new(&m.source) == d) {
            bail!(
                "{} is mounted on {}; unmount it before installing to {}",
                m.source,
                m.target.display(),
                dev.display()
            );
        }
    }
    Ok(())
}

/// The partition table or filesystem signatures found on `dev` (empty when blank).
pub(crate) fn signatures(dev: &Path) -> Result<Vec<String>> {
    let mut found = vec![];
    for d in std::iter::once(dev.to_path_buf()).chain(partitions(dev)?) {
        let out = run(Command::new("wipefs")
            .args(["--no-act", "--noheadings", "--output", "TYPE"])
            .arg(&d))
        .with_context(|| format!("probing {} for existing data", d.display()))?;
        for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let sig = format!("{l} on {}", d.display());
            if !found.contains(&sig) {
                found.push(sig);
            }
        }
    }
    Ok(found)
}

/// Erases every signature on the partitions and the device.
pub(crate) fn wipe(dev: &Path) -> Result<()> {
    for p in partitions(dev)? {
        run(Command::new("wipefs").args(["--all", "--quiet"]).arg(&p))
            .with_context(|| format!("wiping {}", p.display()))?;
    }
    run(Command::new("wipefs").args(["--all", "--quiet"]).arg(dev))
        .with_context(|| format!("wiping {}", dev.display()))?;
    udev_settle();
    Ok(())
}

/// Waits for udev to process its queue, when udev runs: its watch on the disk re-reads
/// a new partition table when sfdisk closes the device, and the partition nodes vanish
/// for a moment (mkfs then fails to open them). Without udev there is nothing to wait for.
pub(crate) fn udev_settle() {
    if !Path::new("/run/udev/control").exists() {
        return;
    }
    let Some(udevadm) = which("udevadm") else {
        return;
    };
    if let Err(e) = run(Command::new(udevadm).args(["settle", "--timeout=60"])) {
        tracing::warn!("waiting for udev: {e:#}");
    }
}

/// The node of partition `n` of `dev` (`/dev/sda1`, `/dev/loop0p1`, `/dev/nvme0n1p1`).
pub(crate) fn partition_path(dev: &Path, n: u32) -> PathBuf {
    let s = dev.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// The sfdisk script of our layout.
pub(crate) fn sfdisk_script() -> String {
    format!(
        "label: gpt\nsize={ESP_SIZE_MIB}MiB, type={ESP_TYPE}, name=\"EFI System Partition\"\ntype={}, name=\"root\"\n",
        root_type()
    )
}

/// Writes the GPT (ESP + root) and waits for the partition nodes; returns (esp, root).
pub(crate) fn partition(dev: &Path) -> Result<(PathBuf, PathBuf)> {
    run_with_stdin(
        Command::new("sfdisk")
            .args(["--quiet", "--wipe", "always", "--wipe-partitions", "always"])
            .arg(dev),
        Some(&sfdisk_script()),
    )
    .with_context(|| format!("partitioning {}", dev.display()))?;
    // Make the kernel see the new table (sfdisk asks too; partx covers devices where
    // that did not take, without udev).
    let _ = run(Command::new("partx").arg("--update").arg(dev));
    udev_settle();
    // The nodes must exist and stay: wait until they have been present for a moment.
    let esp = partition_path(dev, 1);
    let root = partition_path(dev, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut since: Option<Instant> = None;
    loop {
        let ready = [&esp, &root].iter().all(|p| {
            std::fs::metadata(p)
                .map(|m| m.file_type().is_block_device())
                .unwrap_or(false)
        });
        match (ready, since) {
            (true, Some(t)) if t.elapsed() >= Duration::from_millis(200) => return Ok((esp, root)),
            (true, None) => since = Some(Instant::now()),
            (true, Some(_)) => {}
            (false, _) => since = None,
        }
        if Instant::now() > deadline {
            bail!(
                "the partitions of {} did not appear ({} and {})",
                dev.display(),
                esp.display(),
                root.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Root filesystem types `--filesystem` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Filesystem {
    /// ext4 with the verity feature.
    Ext4,
}

/// Formats the ESP (FAT32) and the root (ext4 with fs-verity enabled).
pub(crate) fn mkfs(esp: &Path, root: &Path, fs: Filesystem) -> Result<()> {
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", ESP_LABEL])
        .arg(esp))
    .with_context(|| format!("formatting the ESP {}", esp.display()))?;
    match fs {
        Filesystem::Ext4 => run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "verity", "-L", ROOT_LABEL])
            .arg(root))
        .with_context(|| format!("formatting the root {}", root.display()))?,
    };
    // Closing the written devices makes udev probe them again.
    udev_settle();
    Ok(())
}

/// Copies the contents of `dir` into the root of the FAT filesystem on `dev` with
/// mtools, for kernels that cannot mount vfat.
pub(crate) fn copy_to_fat(dir: &Path, dev: &Path) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    if entries.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("mcopy");
    cmd.args(["-s", "-p", "-m", "-Q", "-i"])
        .arg(dev)
        .args(&entries)
        .arg("::/")
        .env("MTOOLS_SKIP_CHECK", "1");
    run(&mut cmd)
        .with_context(|| format!("copying the ESP contents to {} with mtools", dev.display()))?;
    Ok(())
}

/// The filesystem UUID of a block device (probed directly, no udev or cache).
pub(crate) fn fs_uuid(dev: &Path) -> Result<String> {
    let out = run(Command::new("blkid")
        .args(["--probe", "--match-tag", "UUID", "--output", "value"])
        .arg(dev))
    .with_context(|| format!("reading the filesystem UUID of {}", dev.display()))?;
    let uuid = out.trim().to_string();
    if uuid.is_empty() {
        bail!("{} has no filesystem UUID", dev.display());
    }
    Ok(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(
            partition_path(Path::new("/dev/sda"), 1),
            PathBuf::from("/dev/sda1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop3"), 2),
            PathBuf::from("/dev/loop3p2")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 2),
            PathBuf::from("/dev/nvme0n1p2")
        );
    }

    #[test]
    fn script() {
        let s = sfdisk_script();
        assert!(s.starts_with("label: gpt\n"));
        assert!(s.contains(&format!("size=512MiB, type={ESP_TYPE}")));
        assert!(s.contains(root_type()));
    }

    #[test]
    fn too_small() {
        let e = check_size(Path::new("disk.img"), 100 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too small") && e.contains("100 MiB"), "{e}");
        check_size(Path::new("disk.img"), MIN_DISK_BYTES).unwrap();
    }
}
