//! `bootc` with the composefs backend, as a library (the binary is `main.rs`; the
//! integration tests use the repository and state functions directly).

pub mod boot;
pub mod cli;
pub mod deploy;
pub mod durable;
pub mod imgref;
pub mod install;
pub mod progress;
pub mod repo;
