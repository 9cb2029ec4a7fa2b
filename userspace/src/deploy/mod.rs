//! Deployments: their state directories and origin files, and the day-2 lifecycle:
//! staging an update, finalizing it with the /etc merge, rolling back, collecting
//! garbage, checking for updates and reporting status.

pub(crate) mod check;
pub(crate) mod config_diff;
pub(crate) mod etc_merge;
pub(crate) mod finalize;
pub(crate) mod gc;
pub(crate) mod host;
pub(crate) mod rollback;
pub(crate) mod soft_reboot;
pub(crate) mod stage;
pub mod state;
pub(crate) mod status;
pub(crate) mod usr_overlay;
