//! Deployments: their state directories and origin files.

pub mod state;
