//! The command line of `bootc-initramfs-setup`, parsed by hand.
//!
//! The binary has one verb and four options; a general parser (clap) cost a fifth of the
//! static binary and start-up work in every boot. The grammar is
//! `setup-root [--sysroot DIR] [--cmdline TEXT] [--config FILE] [--target DIR]`, each
//! option as `--opt VALUE` or `--opt=VALUE` and at most once (a value is taken as it
//! is, even one that starts with `-`); `-h`/`--help` and `-V`/`--version` print and stop
//! wherever they come before an error. Every error is a [`UsageError`] on one line
//! (arguments are shown escaped), so the initrd's console shows it whole.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use crate::layout;

/// The program's name, at the start of every line it writes to stderr.
pub const NAME: &str = "bootc-initramfs-setup";

/// The synopsis printed by `--help` and after a usage error.
pub const USAGE: &str =
    "bootc-initramfs-setup setup-root [--sysroot DIR] [--cmdline TEXT] [--config FILE] [--target DIR]";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Print [`help`] on stdout.
    Help,
    /// Print the name and version on stdout.
    Version,
    /// Compose the deployment named by `composefs=` and make it the root.
    SetupRoot(SetupRootArgs),
}

/// The options of `setup-root`, defaults filled in.
#[derive(Debug, PartialEq, Eq)]
pub struct SetupRootArgs {
    /// The physical root filesystem (holds `composefs/` and `state/`).
    pub sysroot: PathBuf,
    /// A kernel command line to use instead of `/proc/cmdline`.
    pub cmdline: Option<String>,
    /// The configuration file (absent: the defaults).
    pub config: PathBuf,
    /// Attach the composed root here and leave the physical root alone.
    pub target: Option<PathBuf>,
}

/// A command line that does not follow the grammar. Displays as one line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No arguments at all.
    #[error("no command given (the command is setup-root)")]
    NoCommand,
    /// An option before the command.
    #[error("option '{0}' before the command (the command, setup-root, comes first)")]
    OptionBeforeCommand(String),
    /// A first word that is not `setup-root`.
    #[error("unknown command '{0}' (the command is setup-root)")]
    UnknownCommand(String),
    /// An option `setup-root` does not have.
    #[error("unknown option '{0}'")]
    UnknownOption(String),
    /// An option at the end of the line without its value.
    #[error("option --{0} needs a value")]
    MissingValue(&'static str),
    /// The same option twice.
    #[error("option --{0} given more than once")]
    Repeated(&'static str),
    /// A `--cmdline` value that is not UTF-8.
    #[error("the value of --{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A word after the command that is not an option.
    #[error("unexpected argument '{0}'")]
    Unexpected(String),
}

/// The options `setup-root` takes, in the order `--help` lists them.
const OPTIONS: [&str; 4] = ["sysroot", "cmdline", "config", "target"];

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Action, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut args = args.into_iter();
    let mut have_verb = false;
    let mut values: [Option<OsString>; 4] = Default::default();
    while let Some(arg) = args.next() {
        let bytes = arg.as_encoded_bytes();
        match bytes {
            b"-h" | b"--help" => return Ok(Action::Help),
            b"-V" | b"--version" => return Ok(Action::Version),
            _ => {}
        }
        if !have_verb {
            if bytes == b"setup-root" {
                have_verb = true;
                continue;
            }
            return Err(if bytes.starts_with(b"-") {
                UsageError::OptionBeforeCommand(shown(&arg))
            } else {
                UsageError::UnknownCommand(shown(&arg))
            });
        }
        let Some(rest) = bytes.strip_prefix(b"--") else {
            return Err(UsageError::Unexpected(shown(&arg)));
        };
        let (name, inline) = match rest.iter().position(|&b| b == b'=') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let Some(slot) = OPTIONS.iter().position(|o| o.as_bytes() == name) else {
            return Err(UsageError::UnknownOption(shown(&arg)));
        };
        let option = OPTIONS[slot];
        if values[slot].is_some() {
            return Err(UsageError::Repeated(option));
        }
        let value = match inline {
            Some(v) => os_from_bytes(v),
            None => args.next().ok_or(UsageError::MissingValue(option))?,
        };
        values[slot] = Some(value);
    }
    if !have_verb {
        return Err(UsageError::NoCommand);
    }
    let [sysroot, cmdline, config, target] = values;
    let cmdline = match cmdline {
        Some(c) => Some(
            c.into_string()
                .map_err(|_| UsageError::NotUtf8("cmdline"))?,
        ),
        None => None,
    };
    Ok(Action::SetupRoot(SetupRootArgs {
        sysroot: sysroot.map_or_else(|| layout::DEFAULT_SYSROOT.into(), PathBuf::from),
        cmdline,
        config: config.map_or_else(|| layout::SETUP_CONFIG.into(), PathBuf::from),
        target: target.map(PathBuf::from),
    }))
}

/// An argument as an error shows it: lossy UTF-8, control characters escaped, so the
/// message stays on one line.
fn shown(arg: &OsStr) -> String {
    arg.to_string_lossy().escape_debug().to_string()
}

/// The bytes of part of a Unix argument as an argument again.
fn os_from_bytes(bytes: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes).to_owned()
}

/// The text `--help` prints.
pub fn help() -> String {
    format!(
        "Mount a composefs deployment as the root filesystem (run from the initramfs)\n\
         \n\
         Usage: {USAGE}\n\
         \n\
         setup-root composes the deployment named by composefs= on the kernel command line\n\
         and makes it the new root.\n\
         \n\
         Options:\n\
         \x20 --sysroot DIR   the physical root filesystem, holding composefs/ and state/\n\
         \x20                 (default {sysroot})\n\
         \x20 --cmdline TEXT  use this kernel command line instead of /proc/cmdline\n\
         \x20 --config FILE   the configuration file (default {config})\n\
         \x20 --target DIR    attach the composed root here and leave the physical root alone\n\
         \x20 -h, --help      print this help\n\
         \x20 -V, --version   print the version\n",
        sysroot = layout::DEFAULT_SYSROOT,
        config = layout::SETUP_CONFIG,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn p(args: &[&str]) -> Result<Action, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn setup(args: &[&str]) -> SetupRootArgs {
        match p(args) {
            Ok(Action::SetupRoot(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_both_value_forms() {
        let a = setup(&["setup-root"]);
        assert_eq!(a.sysroot, PathBuf::from(layout::DEFAULT_SYSROOT));
        assert_eq!(a.config, PathBuf::from(layout::SETUP_CONFIG));
        assert_eq!((a.cmdline, a.target), (None, None));

        let a = setup(&[
            "setup-root",
            "--sysroot",
            "/s",
            "--cmdline=composefs=?ab =x",
            "--config=",
            "--target",
            "--sysroot",
        ]);
        assert_eq!(a.sysroot, PathBuf::from("/s"));
        assert_eq!(a.cmdline.as_deref(), Some("composefs=?ab =x"));
        assert_eq!(a.config, PathBuf::from(""));
        // A value is taken as it is, even when it looks like an option.
        assert_eq!(a.target, Some(PathBuf::from("--sysroot")));
    }

    #[test]
    fn help_and_version_stop_the_parse() {
        assert_eq!(p(&["--help"]), Ok(Action::Help));
        assert_eq!(
            p(&["setup-root", "--bogus=1", "-h"]),
            Err(UsageError::UnknownOption("--bogus=1".into()))
        );
        assert_eq!(p(&["setup-root", "--target", "/t", "-h"]), Ok(Action::Help));
        assert_eq!(p(&["-V", "nonsense"]), Ok(Action::Version));
        assert!(help().contains(USAGE));
    }

    #[test]
    fn usage_errors() {
        use UsageError::*;
        let cases: &[(&[&str], UsageError)] = &[
            (&[], NoCommand),
            (
                &["--sysroot", "/s"],
                OptionBeforeCommand("--sysroot".into()),
            ),
            (&["mount"], UnknownCommand("mount".into())),
            (
                &["setup-root", "--root=/"],
                UnknownOption("--root=/".into()),
            ),
            (&["setup-root", "-t"], Unexpected("-t".into())),
            (&["setup-root", "extra"], Unexpected("extra".into())),
            (&["setup-root", "--target"], MissingValue("target")),
            (
                &["setup-root", "--config=a", "--config", "b"],
                Repeated("config"),
            ),
            (&["setup-root", "--x\ny"], UnknownOption("--x\\ny".into())),
        ];
        for (args, want) in cases {
            assert_eq!(p(args).as_ref(), Err(want), "{args:?}");
            assert!(!want.to_string().contains('\n'));
        }
    }

    #[test]
    fn paths_need_not_be_utf8_but_the_cmdline_must() {
        let bad = OsString::from_vec(vec![b'/', 0xff]);
        let a = parse(["setup-root".into(), "--sysroot".into(), bad.clone()]);
        let Ok(Action::SetupRoot(a)) = a else {
            panic!("{a:?}")
        };
        assert_eq!(a.sysroot, PathBuf::from(bad.clone()));
        let mut inline = b"--cmdline=".to_vec();
        inline.push(0xff);
        assert_eq!(
            parse(["setup-root".into(), OsString::from_vec(inline)]),
            Err(UsageError::NotUtf8("cmdline"))
        );
        assert_eq!(
            parse([bad]),
            Err(UsageError::UnknownCommand("/\u{fffd}".into()))
        );
    }
}
