//! A UKI (PE file) from an image: parsing never panics, errors are one line, the
//! sections it returns lie inside the input, and reading the composefs argument of a
//! parsed `.cmdline` never panics either (one argument or a one-line error).
#![no_main]

use bootc::boot::uki;
use bootc_initramfs_setup::cmdline::tokenize;
use libfuzzer_sys::fuzz_target;

fn inside(data: &[u8], s: &[u8]) -> bool {
    let (start, end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    let p = s.as_ptr() as usize;
    s.is_empty() || (p >= start && p + s.len() <= end)
}

fuzz_target!(|data: &[u8]| {
    match uki::parse(data) {
        Ok(u) => {
            assert!(inside(data, u.linux), ".linux outside the input");
            if let Some(i) = u.initrd {
                assert!(inside(data, i), ".initrd outside the input");
            }
            match u.composefs() {
                // The digest comes from one argument as the kernel splits the line
                // (quotes removed), read case-insensitively, kept in lower case.
                Ok(k) => assert!(
                    tokenize(&u.cmdline)
                        .iter()
                        .any(|t| t.to_ascii_lowercase().contains(k.id.hex())),
                    "the digest is in no argument"
                ),
                Err(e) => assert!(!e.to_string().contains('\n'), "two-line error: {e}"),
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "two-line error: {e}"),
    }
});
