//! A layer blob as a registry serves it, decoded before its digest can be compared:
//! decoding never panics, an error is one line, and what gzip decodes is what the
//! system's zlib (flate2's `MultiGzDecoder`, as `gzip -d`) makes of the same bytes.
#![no_main]

use std::io::Read;

use bootc::layer_stream::{decode_all, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let (out, result) = decode_all(data, c);
        match result {
            Err(e) => assert!(!format!("{e:#}").contains('\n'), "two-line error: {e:#}"),
            Ok(()) if c == Compression::None => assert_eq!(out, data),
            Ok(()) if c == Compression::Gzip => {
                let mut want = vec![];
                flate2::read::MultiGzDecoder::new(data)
                    .read_to_end(&mut want)
                    .expect("flate2 refuses a gzip stream we decoded");
                assert_eq!(out, want, "gzip decoded differently from zlib");
            }
            Ok(()) => {}
        }
    }
});
