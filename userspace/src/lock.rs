//! One `bootc` writer at a time.
//!
//! Every verb that changes the system takes an exclusive `flock` on a lock file under
//! the physical root before it reads anything it will act on, and holds it until it
//! exits. The kernel drops the lock when the process dies, so a crash never leaves a
//! stale lock; the holder's pid is written into the file only to name it in the error.
//!
//! Taking the lock needs no free space, so `bootc gc` can clean a full disk: the pid
//! is written at a fixed width over the start of the file, which keeps its size (after
//! the first run the block is already allocated), and a failure to write it (`ENOSPC`,
//! `EDQUOT`, or anything else) only costs the pid in a concurrent run's message.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
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
    // The cause is in the message and deliberately not a `source`, so `{:#}` prints
    // it once.
    #[error("cannot take the bootc lock {path}: {cause}")]
    Io {
        /// The lock file.
        path: String,
        /// What failed.
        cause: std::io::Error,
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
    let io = |cause: std::io::Error| LockError::Io {
        path: path.display().to_string(),
        cause,
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
    write_pid(&file);
    Ok(WriterLock { _file: file })
}

/// Width of the pid field: `u32::MAX` has 10 digits, then a newline.
const PID_WIDTH: usize = 11;

/// Writes our pid over the start of the held lock file, space-padded to a fixed width,
/// so the file never grows after its first write. Best effort.
fn write_pid(file: &std::fs::File) {
    let text = format!("{:<w$}\n", std::process::id(), w = PID_WIDTH - 1);
    if let Err(e) = file.write_all_at(text.as_bytes(), 0) {
        tracing::debug!("not recording the pid in the lock file: {e}");
        return;
    }
    // A longer file (an older format) would keep a tail of digits; shortening never
    // needs space.
    if file.metadata().is_ok_and(|m| m.len() > PID_WIDTH as u64) {
        let _ = file.set_len(PID_WIDTH as u64);
    }
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

    #[test]
    fn an_io_error_is_said_once() {
        let e = anyhow::Error::from(LockError::Io {
            path: "/x/state/bootc.lock".into(),
            cause: std::io::Error::from_raw_os_error(28),
        });
        let text = format!("{e:#}");
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        assert!(text.starts_with("cannot take the bootc lock /x/state/bootc.lock: "));
    }

    /// The pid is written at a fixed width over the start of the file, so the file
    /// keeps its size from one run to the next.
    #[test]
    fn the_pid_keeps_the_file_size() {
        let d = tempfile::tempdir().unwrap();
        let root =
            rustix::fs::open(d.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let file = d.path().join(LOCK_FILE);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        // An older, longer content is cut to the fixed width.
        std::fs::write(&file, "12345678901234567890\n").unwrap();
        drop(lock(&root, d.path()).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.len(), PID_WIDTH);
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock(&root, d.path()).unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), PID_WIDTH as u64);
    }

    fn second_err_message(root: &OwnedFd, p: &Path) -> String {
        lock(root, p).unwrap_err().to_string()
    }
}
