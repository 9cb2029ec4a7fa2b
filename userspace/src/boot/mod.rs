//! Boot loaders and their entries.
//!
//! One [`Bootloader`] trait: install the loader onto the ESP, and keep its menu (the
//! ordered [`entries::EntrySet`]) on the boot partition. BLS Type #1 entries (kernel +
//! initrd + options) are built by [`bls`]; each loader decides where and how its menu
//! is written: systemd-boot as one file per entry in `loader/entries/`
//! ([`systemd_boot`]), GRUB as `menuentry` blocks in `grub2/user.cfg` ([`grub`]).

use std::os::fd::BorrowedFd;
use std::path::Path;

use anyhow::Result;

pub mod bls;
#[doc(hidden)]
pub mod entries; // `pub` for the fuzz targets only (`parse_entry_file`).
#[doc(hidden)]
pub mod grub; // `pub` for the fuzz targets only (`check_menu_round_trip`).
pub(crate) mod systemd_boot;
pub mod uki;
pub(crate) mod uki_deploy;

use entries::EntrySet;

/// Where the boot partition (ESP) is mounted: on the booted system, and (relative) in
/// a root being installed or given with `--sysroot`.
pub(crate) const ESP_MOUNT: &str = "/boot";

/// [`ESP_MOUNT`] relative to a root directory.
pub(crate) fn esp_in_root() -> &'static str {
    ESP_MOUNT.trim_start_matches('/')
}

/// A boot loader: how it is installed, and where and how its menu, the ordered set of
/// boot entries, is kept on the boot partition. Every verb goes through this trait; no
/// verb names a loader's files.
///
/// The menu is never edited in place. A new menu is written in full as the *staged*
/// menu ([`Bootloader::write_staged`]), then [`Bootloader::exchange_staged`] makes it
/// the current one in one atomic step (the old one is left under the staged name until
/// [`Bootloader::discard_staged`]). A power cut at any instant leaves the old complete
/// menu or the new one. What a loader cannot parse as one of ours is carried over byte
/// for byte ([`entries::RawEntry`]).
pub(crate) trait Bootloader: Sync {
    /// Its name, for messages.
    fn name(&self) -> &'static str;

    /// Fails early when this loader cannot be installed here (missing tools).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Installs the loader binaries onto the ESP mounted at `esp`; the physical root is
    /// mounted at `root`.
    fn install(&self, root: &Path, esp: &Path) -> Result<()>;

    /// Where the current menu lives on the boot partition, for messages
    /// (`loader/entries`, `grub2/user.cfg`).
    fn menu_path(&self) -> &'static str;

    /// Where the staged menu lives on the boot partition, for messages.
    fn staged_menu_path(&self) -> &'static str;

    /// The directory on the boot partition holding both menus: where leftovers of an
    /// interrupted write (temporary names) are found.
    fn menu_dir(&self) -> &'static str;

    /// Whether it implements boot counting (the UAPI `+LEFT-DONE` entry names that
    /// systemd-boot counts down and `systemd-bless-boot` removes).
    fn boot_counting(&self) -> bool {
        false
    }

    /// The current menu; `None` when there is none at all (not an empty menu).
    fn read_current(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>>;

    /// The staged menu, if one exists.
    fn read_staged(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>>;

    /// Writes `set` as the complete staged menu, replacing an earlier one. Everything
    /// is checked before anything is written; the write is durable when this returns.
    fn write_staged(&self, boot: BorrowedFd<'_>, set: &EntrySet) -> Result<()>;

    /// Makes the staged menu the current one in one atomic exchange; the old menu is
    /// left under the staged name.
    fn exchange_staged(&self, boot: BorrowedFd<'_>) -> Result<()>;

    /// Removes the staged menu; whether there was one.
    fn discard_staged(&self, boot: BorrowedFd<'_>) -> Result<bool>;

    /// Replaces the current menu with `set`: staged, exchanged, the old one removed.
    fn replace(&self, boot: BorrowedFd<'_>, set: &EntrySet) -> Result<()> {
        self.write_staged(boot, set)?;
        self.exchange_staged(boot)?;
        self.discard_staged(boot)?;
        Ok(())
    }
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
    /// Both, in the order detection tries them.
    pub(crate) const ALL: [BootloaderKind; 2] = [BootloaderKind::Systemd, BootloaderKind::Grub];

    /// The implementation.
    pub(crate) fn get(self) -> &'static dyn Bootloader {
        match self {
            BootloaderKind::Systemd => &systemd_boot::SystemdBoot,
            BootloaderKind::Grub => &grub::Grub,
        }
    }

    /// The name recorded in origin files (`[boot] bootloader=`) and shown by `status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BootloaderKind::Systemd => "systemd",
            BootloaderKind::Grub => "grub",
        }
    }

    /// The inverse of [`BootloaderKind::as_str`].
    pub(crate) fn parse(s: &str) -> Option<BootloaderKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// For installs that predate `[boot] bootloader=`: the loader whose menu holds an
    /// entry of ours; else the one whose menu exists; else systemd-boot (what every
    /// install before GRUB support used).
    pub(crate) fn detect(boot: BorrowedFd<'_>) -> BootloaderKind {
        let menus: Vec<(BootloaderKind, Option<EntrySet>)> = Self::ALL
            .into_iter()
            .map(|k| (k, k.get().read_current(boot).ok().flatten()))
            .collect();
        menus
            .iter()
            .find(|(_, m)| m.as_ref().is_some_and(|m| !m.ours.is_empty()))
            .or_else(|| menus.iter().find(|(_, m)| m.is_some()))
            .map(|(k, _)| *k)
            .unwrap_or(BootloaderKind::Systemd)
    }
}

impl std::fmt::Display for BootloaderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
