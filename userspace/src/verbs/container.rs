//! `bootc container …`: verbs run on an image's root while it is built; they need no
//! installed system (no host, no lock). `lint` checks the root; `compute-composefs-digest`
//! and `ukify` are the build side of a sealed image: build the rootfs, compute its
//! digest, build a UKI whose `.cmdline` names it, put the UKI into the image
//! ([`crate::digest`] does the work).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::cmdline::ComposefsKarg;

use crate::cli::{ComputeDigestArgs, ContainerCommand, LintArgs, UkifyArgs};
use crate::digest::Rootfs;
use crate::lint;

/// Where Debian's `systemd` package installs ukify (not on PATH).
const UKIFY_LIBEXEC: &str = "/usr/lib/systemd/ukify";

/// Runs the `bootc container` verb the command line names.
pub(crate) fn container(c: &ContainerCommand) -> Result<()> {
    match c {
        ContainerCommand::Lint(a) => lint_verb(a),
        ContainerCommand::ComputeComposefsDigest(a) => compute_composefs_digest(a),
        ContainerCommand::Ukify(a) => ukify(a),
    }
}

/// `bootc container lint`: the report on stdout; an error (exit code 1) when a check
/// failed.
fn lint_verb(a: &LintArgs) -> Result<()> {
    let out = std::io::stdout().lock();
    if a.list {
        return lint::list(out);
    }
    let opts = lint::LintOpts {
        fatal_warnings: a.fatal_warnings,
        skip: a.skip.clone(),
        no_truncate: a.no_truncate,
    };
    lint::lint(&a.rootfs, &opts, out)?;
    Ok(())
}

/// Prints the deployment id of the image at PATH.
fn compute_composefs_digest(args: &ComputeDigestArgs) -> Result<()> {
    let rootfs = Rootfs::open(&args.path)?;
    let id = rootfs
        .deployment_id(args.algorithm, args.write_dumpfile_to.as_deref())
        .with_context(|| format!("computing the composefs digest of {}", args.path.display()))?;
    println!("{id}");
    Ok(())
}

/// Builds a sealed UKI with ukify from the image at `--rootfs`.
fn ukify(args: &UkifyArgs) -> Result<()> {
    let rootfs = Rootfs::open(&args.rootfs)?;
    let (kver, vmlinuz, initrd) = rootfs.kernel(args.kver.as_deref())?;
    let mut cmdline = rootfs.kargs()?;
    let id = rootfs
        .deployment_id(args.algorithm, None)
        .with_context(|| {
            format!(
                "computing the composefs digest of {}",
                args.rootfs.display()
            )
        })?;
    cmdline.push(ComposefsKarg::new(id.clone(), args.allow_missing_verity).to_string());
    let cmdline = cmdline.join(" ");
    tracing::info!(
        "{} is {id}; UKI command line: {cmdline}",
        args.rootfs.display()
    );

    let mut cmd = ukify_command()?;
    cmd.arg("build")
        .arg("--linux")
        .arg(&vmlinuz)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--uname")
        .arg(&kver)
        .arg("--cmdline")
        .arg(&cmdline);
    if let Some(osrel) = ["usr/lib/os-release", "etc/os-release"]
        .iter()
        .map(|p| args.rootfs.join(p))
        .find(|p| p.is_file())
    {
        let mut v = std::ffi::OsString::from("@");
        v.push(osrel);
        cmd.arg("--os-release").arg(v);
    }
    cmd.args(&args.ukify_args);
    tracing::debug!("running {cmd:?}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("ukify build failed ({st})");
    }
    Ok(())
}

/// `ukify` from PATH, else Debian's `/usr/lib/systemd/ukify` run by the distribution's
/// `/usr/bin/python3` (whose modules, python3-pefile, it needs; a `python3` earlier on
/// PATH, e.g. a virtualenv, may lack them).
fn ukify_command() -> Result<Command> {
    if let Some(bin) = crate::sys::cmd::which("ukify") {
        return Ok(Command::new(bin));
    }
    let libexec = PathBuf::from(UKIFY_LIBEXEC);
    if !libexec.is_file() {
        bail!(
            "ukify not found (neither on PATH nor {UKIFY_LIBEXEC}): install systemd-ukify \
             (Debian: systemd from bookworm-backports, and python3-pefile)"
        );
    }
    let python = ["/usr/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::sys::cmd::which("python3"))
        .context("ukify needs python3, which is not installed")?;
    let mut cmd = Command::new(python);
    cmd.arg(libexec);
    Ok(cmd)
}
