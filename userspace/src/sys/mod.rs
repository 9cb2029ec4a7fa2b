//! Generic system helpers below everything else: running commands, mounts, loop
//! devices and durable (atomic, fsynced) file writes. Nothing here knows about
//! deployments, boot loaders or images; `boot/`, `install/` and `deploy/` build on it.

pub(crate) mod cmd;
pub mod durable;
pub mod fault;
pub(crate) mod loopdev;
pub(crate) mod mount;

/// The bytes of the file `name` under `dir`, never through a symlink in its last
/// component (`O_NOFOLLOW`: a link there is an error, `ELOOP`).
pub(crate) fn read_file_at(
    dir: impl std::os::fd::AsFd,
    name: impl rustix::path::Arg,
) -> std::io::Result<Vec<u8>> {
    use rustix::fs::{openat, Mode, OFlags};
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let mut bytes = vec![];
    std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes)?;
    Ok(bytes)
}
