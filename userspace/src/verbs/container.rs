//! `bootc container …`: verbs run on an image's root while it is built; they need no
//! installed system (no host, no lock).

use anyhow::Result;

use crate::cli::{ContainerCommand, LintArgs};
use crate::lint;

/// Runs the `bootc container` verb the command line names.
pub(crate) fn container(c: &ContainerCommand) -> Result<()> {
    match c {
        ContainerCommand::Lint(a) => lint_verb(a),
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
