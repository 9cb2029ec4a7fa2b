//! An image reference (the command line, and back from the origin file): never a
//! panic, errors are one line, and an accepted reference reads back unchanged from
//! both its display form (`docker://…`) and its origin form
//! (`ostree-unverified-image:…`).
#![no_main]

use bootc::imgref::ImageReference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match ImageReference::parse(s) {
        Ok(r) => {
            let shown = r.to_string();
            assert_eq!(
                ImageReference::parse(&shown).as_ref(),
                Ok(&r),
                "via {shown}"
            );
            let origin = r.to_origin();
            assert_eq!(
                ImageReference::parse(&origin).as_ref(),
                Ok(&r),
                "via {origin}"
            );
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "two-line error: {e}"),
    }
});
