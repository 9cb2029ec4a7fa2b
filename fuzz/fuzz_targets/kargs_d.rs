//! One `/usr/lib/bootc/kargs.d/*.toml` file of an image (the image author's text):
//! never a panic, errors are one line, and every argument it yields is one bootc
//! accepts (`check_karg`: no control character, not composefs=, not empty).
#![no_main]

use bootc::boot::bls::kargs_file;
use bootc_initramfs_setup::cmdline::ComposefsKarg;
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/usr/lib/bootc/kargs.d/fuzz.toml";

fuzz_target!(|data: &[u8]| {
    match kargs_file(PATH, data) {
        Ok(kargs) => {
            for k in &kargs {
                assert!(!k.trim().is_empty(), "empty argument");
                assert!(!k.contains(|c: char| c.is_control()), "control character");
            }
            // None of them can set or override the deployment to boot.
            assert!(ComposefsKarg::from_cmdline(&kargs.join(" ")).is_err());
        }
        Err(e) => assert!(!format!("{e:#}").contains('\n'), "two-line error: {e:#}"),
    }
});
