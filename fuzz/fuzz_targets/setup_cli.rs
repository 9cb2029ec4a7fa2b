//! The initramfs binary's argument parser must never panic, and its errors are one line.
//! The input is the argument list, NUL-separated (arguments cannot hold NUL).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use bootc_initramfs_setup::cli::{parse, Action};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = data.split(|&b| b == 0).map(|a| OsString::from_vec(a.to_vec()));
    match parse(args) {
        Ok(Action::SetupRoot(a)) => {
            // A value is taken from the input as it is, never rewritten.
            if let Some(c) = a.cmdline {
                let c = c.as_bytes();
                assert!(c.is_empty() || data.windows(c.len()).any(|w| w == c));
            }
        }
        Ok(Action::Help | Action::Version) => {}
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
