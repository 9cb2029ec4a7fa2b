//! systemd-boot: `bootctl install` onto the ESP, the menu as BLS entries in
//! `loader/entries/` (the entry-directory form of [`super::entries`]).

use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use bootc_initramfs_setup::layout;

use super::entries::{self, EntrySet};
use super::Bootloader;
use crate::sys::cmd::run;
use crate::sys::cmd::which;
use crate::sys::mount::{Mount, MountPoint};

/// systemd-boot.
#[derive(Debug)]
pub(crate) struct SystemdBoot;

impl Bootloader for SystemdBoot {
    fn name(&self) -> &'static str {
        "systemd-boot"
    }

    fn check(&self) -> Result<()> {
        which("bootctl").map(|_| ()).context(
            "bootctl is not installed: install systemd-boot (e.g. apt-get install systemd-boot) or choose another --bootloader",
        )
    }

    fn install(&self, _root: &Path, esp: &Path) -> Result<()> {
        let bootctl = which("bootctl").context("bootctl is not installed")?;
        // bootctl wants the ESP to be the root of a mount and writes
        // /etc/kernel/entry-token under --root: give it a scratch root with the ESP
        // bind-mounted at /boot, so neither the host nor the physical root is touched.
        let scratch = MountPoint::new("bootctl")?;
        let boot = scratch.path().join(super::esp_in_root());
        std::fs::create_dir(&boot).with_context(|| format!("creating {}", boot.display()))?;
        let bind = Mount::bind(esp, &boot);
        let mut cmd = Command::new(bootctl);
        cmd.arg("install")
            .arg("--root")
            .arg(scratch.path())
            .args([
                "--esp-path",
                super::ESP_MOUNT,
                "--no-variables",
                "--install-source=host",
                "--make-entry-directory=no",
                "--entry-token=literal:bootc",
            ])
            // We made this ESP ourselves; the udev-based partition checks cannot run on a
            // loop device without udev, and a kernel without vfat stages it on disk.
            .env("SYSTEMD_RELAX_ESP_CHECKS", "1");
        let result = bind.and_then(|bind| {
            let r = run(&mut cmd).context("installing systemd-boot with bootctl");
            bind.unmount()?;
            r
        });
        // Clean the scratch root without ever recursing into the ESP: bootctl wrote
        // etc/kernel/entry-token there; boot/ is only removed when empty.
        let _ = std::fs::remove_dir_all(scratch.path().join("etc"));
        let _ = std::fs::remove_dir(&boot);
        result?;
        Ok(())
    }

    fn boot_counting(&self) -> bool {
        true
    }

    fn menu_path(&self) -> &'static str {
        layout::LOADER_ENTRIES
    }

    fn staged_menu_path(&self) -> &'static str {
        layout::LOADER_ENTRIES_STAGED
    }

    fn menu_dir(&self) -> &'static str {
        entries::loader_dir()
    }

    fn read_current(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>> {
        entries::read_current(boot)
    }

    fn read_staged(&self, boot: BorrowedFd<'_>) -> Result<Option<EntrySet>> {
        entries::read_staged(boot)
    }

    fn write_staged(&self, boot: BorrowedFd<'_>, set: &EntrySet) -> Result<()> {
        entries::write_staged(boot, set)
    }

    fn exchange_staged(&self, boot: BorrowedFd<'_>) -> Result<()> {
        entries::exchange_staged(boot)
    }

    fn discard_staged(&self, boot: BorrowedFd<'_>) -> Result<bool> {
        entries::discard_staged(boot)
    }
}
