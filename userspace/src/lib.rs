//! `bootc` with the composefs backend, as a library (the binary is `main.rs`; the
//! integration tests use the repository and state functions directly).
//!
//! Layers, each depending only on those below it: [`sys`] (commands, mounts, loop
//! devices, durable writes), then [`boot`] (boot loaders and entries), [`repo`] (the
//! composefs repository) and [`integrity`] (verified pulls, damage checks), then [`deploy`] (deployments and the day-2 lifecycle) and
//! `install`, then `verbs` (one driver per command) and [`cli`] (the command line).

pub mod boot;
pub mod cli;
pub mod deploy;
pub(crate) mod digest;
pub mod imgref;
pub(crate) mod install;
pub mod integrity;
#[doc(hidden)]
pub mod layer_stream; // `pub` for the fuzz target only (`decode_all`).
pub(crate) mod lint;
pub(crate) mod lock;
pub(crate) mod progress;
pub mod repo;
pub mod sys;
pub(crate) mod verbs;

/// Runs the verb `cli` names (what the binary does after parsing its arguments).
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    verbs::run(cli)
}
