//! GRUB: not supported by this backend yet; selecting it fails before anything is
//! written.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Result};

use super::bls::BlsEntry;
use super::Bootloader;

/// GRUB.
#[derive(Debug)]
pub struct Grub;

const UNSUPPORTED: &str =
    "--bootloader grub is not supported yet by the composefs backend; use --bootloader systemd";

impl Bootloader for Grub {
    fn name(&self) -> &'static str {
        "grub"
    }

    fn check(&self) -> Result<()> {
        bail!(UNSUPPORTED)
    }

    fn install(&self, _root: &Path, _esp: &Path) -> Result<()> {
        bail!(UNSUPPORTED)
    }

    fn write_entries(&self, _boot: &OwnedFd, _entries: &[BlsEntry]) -> Result<()> {
        bail!(UNSUPPORTED)
    }
}
