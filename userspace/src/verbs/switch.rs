//! `bootc switch`: stage another image and follow it from now on.

use anyhow::Result;

use crate::cli::{Cli, SwitchArgs};
use crate::deploy::stage;
use crate::imgref::ImageReference;

use super::upgrade::{report, stage_opts};
use super::{host, locked};

/// `bootc switch`.
pub(crate) fn switch(cli: &Cli, a: &SwitchArgs) -> Result<()> {
    let host = host(cli)?;
    let text = match &a.transport {
        Some(t) if !a.target.contains(':') || t == "registry" => {
            let t = if t == "registry" {
                "docker://".to_string()
            } else {
                format!("{t}:")
            };
            format!("{t}{}", a.target)
        }
        _ => a.target.clone(),
    };
    let imgref = ImageReference::parse(&text)?;
    let _lock = locked(&host)?;
    let outcome = stage::stage(&host, &stage_opts(cli, &a.common, Some(imgref), false))?;
    report(&host, outcome, a.apply)
}
