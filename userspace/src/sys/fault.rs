//! Test-only fault injection: kill the process at a named step.
//!
//! Crash safety is a claim about what the disk holds when the process dies between two
//! steps, and the only honest test of it is to really die there. [`point`] marks such a
//! step (e.g. `finalize.after-exchange`); a debug build aborts at it when the
//! environment variable [`ENV`] names it, so a host test can run the real binary, kill
//! it at each step in turn and check that a re-run finishes the work. Release builds
//! compile [`point`] to nothing: they carry no hook and read no variable.

/// The environment variable naming the step to abort at.
pub const ENV: &str = "BOOTC_FAULT_AT";

/// Aborts the process (no unwinding, no destructors: as close to `kill -9` as a process
/// can do to itself) when this is a debug build and [`ENV`] equals `step`.
#[inline]
pub(crate) fn point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os(ENV).is_some_and(|v| v == step) {
        eprintln!("{ENV}={step}: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
