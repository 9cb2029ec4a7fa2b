//! `bootc switch`: stage another image and follow it from now on.

use anyhow::{Context, Result};

use crate::cli::{Cli, SwitchArgs};
use crate::deploy::stage;
use crate::imgref::ImageReference;

use super::upgrade::{report, stage_opts};
use super::{host, locked};

/// `bootc switch`.
pub(crate) fn switch(cli: &Cli, a: &SwitchArgs) -> Result<()> {
    let host = host(cli)?;
    let imgref = ImageReference::parse_with_default(&a.target, a.transport.as_deref())
        .with_context(|| format!("bootc switch {}", a.target))?;
    let _lock = locked(&host)?;
    let outcome = stage::stage(&host, &stage_opts(cli, &a.common, Some(imgref), false))?;
    report(&host, outcome, a.apply)
}
