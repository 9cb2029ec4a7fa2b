//! `bootc usr-overlay` (alias `unlock`): a writable overlay on /usr until the next boot.

use anyhow::Result;

use crate::cli::UsrOverlayArgs;
use crate::deploy::usr_overlay;

/// `bootc usr-overlay`.
pub(crate) fn usr_overlay(a: &UsrOverlayArgs) -> Result<()> {
    usr_overlay::mount_overlay(&a.root, a.read_only)?;
    let mode = if a.read_only {
        "read-only"
    } else {
        "read/write"
    };
    println!("A {mode} overlayfs is now mounted on /usr.");
    println!("All changes there will be discarded on reboot.");
    Ok(())
}
