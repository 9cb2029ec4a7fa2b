//! The initramfs configuration parser must never panic, and its errors are one line.
#![no_main]

use bootc_initramfs_setup::config::SetupConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = SetupConfig::parse(s, "fuzz.toml") {
        assert!(!e.to_string().contains('\n'));
    }
});
