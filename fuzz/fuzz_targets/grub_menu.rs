//! A GRUB menu (`grub2/user.cfg`) as read from the boot partition, where anyone may
//! have edited it: reading never panics, and a rewrite keeps our entries and carries
//! every other byte (`bootc::boot::grub::check_menu_round_trip`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bootc::boot::grub::check_menu_round_trip(data);
});
