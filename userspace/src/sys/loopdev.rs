//! Loop devices, detached on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cmd::run;

/// An attached loop device, detached on drop.
#[derive(Debug)]
pub(crate) struct Loopback {
    dev: PathBuf,
}

impl Loopback {
    /// Attaches `file` with partition scanning.
    pub(crate) fn attach(file: &Path) -> Result<Loopback> {
        let out = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file))
        .with_context(|| format!("attaching {} to a loop device", file.display()))?;
        let dev = PathBuf::from(out.trim());
        tracing::info!("attached {} as {}", file.display(), dev.display());
        let lo = Loopback { dev };
        // The kernel's partition scan does not always happen (or show in /dev) without
        // udev: add the partitions explicitly. A blank image has none; that is fine.
        let _ = run(Command::new("partx").arg("--add").arg(&lo.dev));
        Ok(lo)
    }

    /// `/dev/loopN`.
    pub(crate) fn dev(&self) -> &Path {
        &self.dev
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        // A just-unmounted partition can keep the device busy for a moment.
        for i in 0..20 {
            match run(Command::new("losetup").arg("--detach").arg(&self.dev)) {
                Ok(_) => return,
                Err(e) if i == 19 => tracing::warn!("detaching {}: {e:#}", self.dev.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
