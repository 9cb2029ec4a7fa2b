//! One `bootc` writer at a time.
//!
//! Every verb that changes the system takes an exclusive `flock` on a lock file under
//! the physical root before it reads anything it will act on, and holds it until it
//! exits. The kernel drops the lock when the process dies, so a crash never leaves a
//! stale lock; the holder's pid is written into the file only to name it in the error.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{flock, openat, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use bootc_initramfs_setup::layout::LOCK_FILE;

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another process holds it.
    #[error("another bootc is running (pid {})", pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into()))]
    Busy {
        /// The holder, if it had written its pid yet.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot take the bootc lock {path}: {source}")]
    Io {
        /// The lock file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: std::fs::File,
}

/// Takes the writer lock under `sysroot` (a directory fd), without waiting.
pub(crate) fn lock(sysroot: impl AsFd, display_root: &Path) -> Result<WriterLock, LockError> {
    let path = display_root.join(LOCK_FILE);
    let io = |source: std::io::Error| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = Path::new(LOCK_FILE).parent() {
        match rustix::fs::mkdirat(&sysroot, parent, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io(e.into())),
        }
    }
    let fd: OwnedFd = openat(
        &sysroot,
        LOCK_FILE,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io(e.into()))?;
    let mut file = std::fs::File::from(fd);
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            return Err(LockError::Busy {
                pid: s.trim().parse().ok(),
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(WriterLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_is_refused_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(d.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let held = lock(&root, d.path()).unwrap();
        // flock locks belong to the open file description, so a second open conflicts
        // even within one process, as a second bootc process would.
        let second = lock(&root, d.path());
        match second {
            Err(LockError::Busy { pid }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(second_err_message(&root, d.path()).contains("another bootc is running (pid "));
        drop(held);
        lock(&root, d.path()).expect("free again after drop");
    }

    fn second_err_message(root: &OwnedFd, p: &Path) -> String {
        lock(root, p).unwrap_err().to_string()
    }
}
