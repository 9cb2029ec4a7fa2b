//! Generic system helpers below everything else: running commands, mounts, loop
//! devices and durable (atomic, fsynced) file writes. Nothing here knows about
//! deployments, boot loaders or images; `boot/`, `install/` and `deploy/` build on it.

pub(crate) mod cmd;
pub mod durable;
pub mod fault;
pub(crate) mod loopdev;
pub(crate) mod mount;
