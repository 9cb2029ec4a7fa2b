//! `bootc-initramfs-setup`: the command the initrd runs to mount the composefs root.
//!
//! The entry point only; the grammar is [`bootc_initramfs_setup::cli`], the work
//! [`bootc_initramfs_setup::setup`]. Exit status: 0 when the root is in place, 1 when
//! the setup failed (one line on stderr), 2 for a usage error (the error and the usage
//! line on stderr).
//!
//! The binary has no Rust `main`: glibc calls the C `main` below directly, which skips
//! std's runtime start-up (reading /proc/self/maps for the stack guard, a signal stack,
//! the SIGPIPE disposition, polling the standard descriptors). None of it is needed by a
//! short-lived program whose descriptors the initrd's service manager opened, and it is
//! work in every boot. std still learns the arguments from glibc (`std::env::args_os`).

#![no_main]

use std::ffi::{c_char, c_int};
use std::io::Write;

use bootc_initramfs_setup::cli::{self, Action, SetupRootArgs, NAME, USAGE};
use bootc_initramfs_setup::config::SetupConfig;
use bootc_initramfs_setup::setup::{setup_root, SetupArgs};

fn run(args: SetupRootArgs) -> Result<(), String> {
    let cmdline = match args.cmdline {
        Some(c) => c,
        None => std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| format!("reading the kernel command line: /proc/cmdline: {e}"))?,
    };
    let config =
        SetupConfig::load(&args.config).map_err(|e| format!("reading the configuration: {e}"))?;
    setup_root(&SetupArgs {
        sysroot: args.sysroot,
        cmdline,
        config,
        target: args.target,
    })
    .map_err(|e| e.to_string())
}

fn print(text: &str) -> c_int {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{NAME}: writing to stdout: {e}");
            1
        }
    }
}

// The C entry point (see the module documentation): exporting the unmangled `main`
// symbol is what `no_main` requires, and nothing here reads argc/argv directly.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    match cli::parse(std::env::args_os().skip(1)) {
        Ok(Action::Help) => print(&cli::help()),
        Ok(Action::Version) => print(&format!("{NAME} {}\n", env!("CARGO_PKG_VERSION"))),
        Ok(Action::SetupRoot(args)) => match run(args) {
            Ok(()) => 0,
            Err(e) => {
                // One line, on stderr, which the initrd's console and journal show.
                eprintln!("{NAME}: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{NAME}: {e}\nUsage: {USAGE}");
            2
        }
    }
}
