//! `bootc` with the composefs backend, as a library (the binary is `main.rs`; the
//! integration tests use the repository and state functions directly).

pub mod boot;
pub mod check;
pub mod cli;
pub mod deploy;
pub mod durable;
pub mod gc;
pub mod imgref;
pub mod install;
pub mod integrity;
pub mod lock;
pub mod progress;
pub mod repo;
pub mod status;
