//! `bootc-initramfs-setup`: the command the initrd runs to mount the composefs root.
//!
//! CLI only; the work is in [`bootc_initramfs_setup::setup`].

use std::path::PathBuf;
use std::process::ExitCode;

use bootc_initramfs_setup::config::SetupConfig;
use bootc_initramfs_setup::layout;
use bootc_initramfs_setup::setup::{setup_root, SetupArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bootc-initramfs-setup",
    version,
    about = "Mount a composefs deployment as the root filesystem (run from the initramfs)",
    // Written out: clap's generated usage (its `usage` feature) costs 10 KiB of every initrd.
    override_usage = "bootc-initramfs-setup setup-root [--sysroot DIR] [--cmdline TEXT] [--config FILE] [--target DIR]"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compose the deployment named by composefs= and make it the new root.
    #[command(
        override_usage = "bootc-initramfs-setup setup-root [--sysroot DIR] [--cmdline TEXT] [--config FILE] [--target DIR]"
    )]
    SetupRoot {
        /// The physical root filesystem (holds composefs/ and state/).
        #[arg(long, default_value = layout::DEFAULT_SYSROOT)]
        sysroot: PathBuf,
        /// Use this kernel command line instead of /proc/cmdline.
        #[arg(long)]
        cmdline: Option<String>,
        /// Configuration file.
        #[arg(long, default_value = layout::SETUP_CONFIG)]
        config: PathBuf,
        /// Attach the composed root here and leave the physical root alone.
        #[arg(long)]
        target: Option<PathBuf>,
    },
}

const NAME: &str = "bootc-initramfs-setup";

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::SetupRoot {
            sysroot,
            cmdline,
            config,
            target,
        } => {
            let cmdline = match cmdline {
                Some(c) => c,
                None => std::fs::read_to_string("/proc/cmdline")
                    .map_err(|e| format!("reading the kernel command line: /proc/cmdline: {e}"))?,
            };
            let config = SetupConfig::load(&config)
                .map_err(|e| format!("reading the configuration: {e}"))?;
            setup_root(&SetupArgs {
                sysroot,
                cmdline,
                config,
                target,
            })
            .map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, on stderr, which the initrd's console and journal show.
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    }
}
