//! Boot loaders and their entries.
//!
//! One `Bootloader` trait: install the loader onto the ESP, and write the entries that
//! boot deployments. BLS Type #1 entries (kernel + initrd + options) are built by
//! [`bls`]; each loader decides where and how they are written.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::Result;

pub mod bls;
#[doc(hidden)]
pub mod entries; // `pub` for the fuzz targets only (`parse_entry_file`).
pub(crate) mod grub;
pub(crate) mod systemd_boot;

use bls::BlsEntry;

/// Where the boot partition (ESP) is mounted: on the booted system, and (relative) in
/// a root being installed or given with `--sysroot`.
pub(crate) const ESP_MOUNT: &str = "/boot";

/// [`ESP_MOUNT`] relative to a root directory.
pub(crate) fn esp_in_root() -> &'static str {
    ESP_MOUNT.trim_start_matches('/')
}

/// A boot loader we can install and write entries for.
pub(crate) trait Bootloader {
    /// Its name, for messages.
    fn name(&self) -> &'static str;

    /// Fails early when this loader cannot be installed here (missing tools).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Installs the loader binaries onto the ESP mounted at `esp`; the physical root is
    /// mounted at `root`.
    fn install(&self, root: &Path, esp: &Path) -> Result<()>;

    /// Writes `entries` to the boot partition (opened as `boot`).
    fn write_entries(&self, boot: &OwnedFd, entries: &[BlsEntry]) -> Result<()>;
}

/// The loaders `--bootloader` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BootloaderKind {
    /// systemd-boot, installed with bootctl; entries in loader/entries on the ESP.
    Systemd,
    /// GRUB (EFI): an image built with grub-mkimage at EFI/BOOT, menu in grub2/user.cfg.
    Grub,
}

impl BootloaderKind {
    /// The implementation.
    pub(crate) fn get(self) -> Box<dyn Bootloader> {
        match self {
            BootloaderKind::Systemd => Box::new(systemd_boot::SystemdBoot),
            BootloaderKind::Grub => Box::new(grub::Grub),
        }
    }
}
