//! Deployments: their state directories and origin files, and the day-2 lifecycle:
//! staging an update, finalizing it with the /etc merge, rolling back, collecting
//! garbage, checking for updates and reporting status.

pub mod check;
pub mod etc_merge;
pub mod finalize;
pub mod gc;
pub mod host;
pub mod rollback;
pub mod stage;
pub mod state;
pub mod status;
