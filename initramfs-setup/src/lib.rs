//! The boot contract of the composefs-native bootc.
//!
//! This crate owns what the kernel command line and the disk mean: the `composefs=`
//! grammar ([`cmdline`]), the on-disk layout ([`layout`]), the initramfs configuration
//! ([`config`]), what an image must contain to boot ([`bootable`]), the code that
//! composes the root at boot ([`setup`]) and the grammar of the command that runs it
//! ([`cli`]). The userspace `bootc` depends on this library so each fact is defined once.

pub mod bootable;
pub mod cli;
pub mod cmdline;
mod compose;
pub mod config;
pub mod layout;
pub mod setup;

/// A message on one line: every run of whitespace (line breaks included) becomes one
/// space, for tool output quoted in a one-line error.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
