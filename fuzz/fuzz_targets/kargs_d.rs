//! One `/usr/lib/bootc/kargs.d/*.toml` file of an image (the image author's text):
//! never a panic, errors are one line, and every argument it yields is one bootc
//! accepts (`check_karg`: no control character, not empty) and none, alone or on the
//! command line with the others, sets composefs=.
#![no_main]

use bootc::boot::bls::kargs_file;
use bootc_initramfs_setup::cmdline::{tokenize, KARG, KARG_DIGEST};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/usr/lib/bootc/kargs.d/fuzz.toml";

fuzz_target!(|data: &[u8]| {
    match kargs_file(PATH, data) {
        Ok(kargs) => {
            for k in &kargs {
                assert!(!k.trim().is_empty(), "empty argument");
                assert!(!k.contains(|c: char| c.is_control()), "control character");
            }
            // None of them, alone or with its neighbours on the command line (quotes
            // can span arguments), sets the deployment to boot: bootc adds that.
            let line = kargs.join(" ");
            for t in tokenize(&line) {
                let name = t.split('=').next().unwrap_or_default();
                assert!(name != KARG && name != KARG_DIGEST, "{line:?} sets {t:?}");
            }
        }
        Err(e) => assert!(!format!("{e:#}").contains('\n'), "two-line error: {e:#}"),
    }
});
