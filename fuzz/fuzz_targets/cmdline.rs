//! The kernel command line parser must never panic, and whatever it accepts must
//! render to a `composefs=` argument that parses back to the same value.
#![no_main]

use bootc_initramfs_setup::cmdline::ComposefsKarg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = ComposefsKarg::from_cmdline(s) {
        let again = ComposefsKarg::from_cmdline(&k.to_string()).expect("our own rendering parses");
        assert_eq!(again, k);
    }
});
