//! `bootc completion SHELL` and the hidden `bootc man --directory DIR`: shell completions
//! and man pages, both generated from the clap definitions in [`crate::cli`], so they
//! name exactly the verbs and flags the binary accepts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs, ManArgs};
use crate::sys::durable;

/// The section of every page: system administration commands.
const MAN_SECTION: &str = "8";

/// `bootc completion SHELL`: the script on stdout.
pub(crate) fn completion(a: &CompletionArgs) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "bootc", &mut std::io::stdout().lock());
    Ok(())
}

/// `bootc man --directory DIR`: writes the pages and prints their paths.
pub(crate) fn man(a: &ManArgs) -> Result<()> {
    for p in write_man_pages(&a.directory)? {
        println!("{}", p.display());
    }
    Ok(())
}

/// Writes `bootc.8` and one page per visible verb at every level (`bootc-upgrade.8`,
/// `bootc-install-to-disk.8`, `bootc-container-lint.8`, …) into `dir` (created if
/// missing), each durably; returns their paths, `bootc.8` first.
pub(crate) fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dirfd = durable::open_dir(rustix::fs::CWD, dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Propagates the global options and gives each verb its display name (`bootc-upgrade`).
    cmd.build();
    let mut pages = vec![];
    collect(&cmd, &mut pages);
    let mut out = vec![];
    for c in pages {
        let man = clap_mangen::Man::new(c)
            .section(MAN_SECTION)
            .manual("bootc")
            .source(format!("bootc {}", env!("CARGO_PKG_VERSION")));
        let mut buf = vec![];
        man.render(&mut buf).context("rendering a man page")?;
        let name = man.get_filename();
        durable::write_file(&dirfd, &name, &buf, 0o644)?;
        out.push(dir.join(name));
    }
    Ok(out)
}

/// `cmd` then, depth first, every subcommand that is not hidden.
fn collect(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}
