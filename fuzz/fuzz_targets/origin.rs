//! A deployment's `.origin` INI file (state an administrator may edit): parsing never
//! panics, errors are one line, and what parses renders to text that parses back to
//! the same origin.
#![no_main]

use std::path::Path;

use bootc::deploy::state::Origin;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("state/deploy/x/x.origin");
    match Origin::parse(text, path) {
        Ok(o) => {
            let again = Origin::parse(&o.render(), path).expect("our own rendering parses");
            assert_eq!(again, o, "render then parse changed the origin");
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "two-line error: {e}"),
    }
});
