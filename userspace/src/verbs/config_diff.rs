//! `bootc config-diff`: the local changes to /etc against the booted image's /etc.

use anyhow::Result;

use crate::cli::{Cli, ConfigDiffArgs, ConfigDiffFormat};
use crate::deploy::config_diff;

use super::{host, locked};

/// `bootc config-diff`.
pub(crate) fn config_diff(cli: &Cli, a: &ConfigDiffArgs) -> Result<()> {
    let host = host(cli)?;
    // The pristine /etc is extracted under state/, which gc cleans: one bootc at a time.
    let _lock = locked(&host)?;
    let d = config_diff::config_diff(&host)?;
    match a.format.unwrap_or(ConfigDiffFormat::Human) {
        ConfigDiffFormat::Human if d.is_empty() => eprintln!("No local changes to /etc."),
        ConfigDiffFormat::Human => print!("{}", d.render_human()),
        ConfigDiffFormat::Json => println!("{}", serde_json::to_string_pretty(&d)?),
        ConfigDiffFormat::Yaml => print!("{}", serde_yaml::to_string(&d)?),
    }
    Ok(())
}
