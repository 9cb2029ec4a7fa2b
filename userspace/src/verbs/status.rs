//! `bootc status`: the host as a summary for people, or a `BootcHost` object for
//! programs.

use anyhow::Result;

use crate::cli::{Cli, OutputFormat, StatusArgs};
use crate::deploy::status as st;

use super::host;

/// `bootc status`.
pub(crate) fn status(cli: &Cli, a: &StatusArgs) -> Result<()> {
    let host = host(cli)?;
    let mut h = st::host_status(&host)?;
    if a.booted {
        h = st::only_booted(h);
    }
    let format = match (a.json, a.format) {
        (true, _) => OutputFormat::Json,
        (_, Some(f)) => f,
        // As upstream: the human summary whether or not stdout is a terminal.
        _ => OutputFormat::Human,
    };
    match format {
        OutputFormat::Human => print!("{}", st::render_human(&h, a.booted, a.verbose)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&h)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(&h)?),
    }
    Ok(())
}
