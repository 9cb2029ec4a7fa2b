//! A Type #1 entry as read from the boot partition (anyone can write there): parsing
//! never panics, and an entry whose values our writers accept renders to text that
//! parses back to the same entry. Through `parse_entry_file` (what reading an entry
//! directory does with one file), an entry taken as ours boots a deployment its
//! `composefs=` argument names.
#![no_main]

use std::ffi::OsStr;

use bootc::boot::bls::{check_entry, BlsEntry};
use bootc::boot::entries::parse_entry_file;
use bootc_initramfs_setup::cmdline::ComposefsKarg;
use libfuzzer_sys::fuzz_target;

const STEM: &str =
    "bootc_composefs-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    match parse_entry_file(OsStr::new(&format!("{STEM}.conf")), data) {
        Ok(Some(e)) => {
            assert!(ComposefsKarg::from_cmdline(&e_options(&e)).is_ok());
        }
        Ok(None) => panic!("a file named like ours is never foreign"),
        Err(why) => assert!(!why.contains('\n'), "two-line problem: {why}"),
    }
    assert_eq!(
        parse_entry_file(OsStr::new("other.conf"), data),
        Ok(None),
        "a file not named like ours is carried, never parsed"
    );
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match BlsEntry::parse(STEM, text) {
        Ok(e) => {
            if check_entry(&e).is_ok() {
                let again = BlsEntry::parse(STEM, &e.render()).expect("our own rendering parses");
                assert_eq!(again, e, "render then parse changed the entry");
            }
        }
        Err(err) => assert!(!format!("{err:#}").contains('\n')),
    }
});

/// The `options` line, read back from the rendering (the fields are crate-private).
fn e_options(e: &BlsEntry) -> String {
    e.render()
        .lines()
        .filter_map(|l| l.strip_prefix("options "))
        .collect::<Vec<_>>()
        .join(" ")
}
