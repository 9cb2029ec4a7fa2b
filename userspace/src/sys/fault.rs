//! Test-only fault injection: kill the process just before a durable step.
//!
//! Crash safety is a claim about what the disk holds when the process dies between two
//! steps, and the only honest test of it is to really die there. Two kinds of points:
//!
//! - **Counted steps.** Every durable primitive of [`super::durable`] (and the two
//!   menu exchanges, `boot::entries` and `boot::grub`) calls [`durable_step`] first, so
//!   the steps of any run are numbered 1, 2, … in the order they happen. With
//!   `BOOTC_FAULT_AT=durable:N` a debug build aborts just before its Nth step; with
//!   `BOOTC_FAULT_AT=count` it prints `BOOTC_FAULT_AT=count: step N <what>` to stderr
//!   at each step. A test runs an operation once with `count` to learn how many steps
//!   it has and then kills it before each one in turn, so a durable step added later is
//!   covered without anyone listing it (tests/faults.rs).
//! - **Named points** ([`point`], e.g. `finalize.after-exchange`): a debug build aborts
//!   at one when `BOOTC_FAULT_AT` names it. A named point is also a counted step, so it
//!   covers what happens right after a write that does not go through `durable` (the
//!   marker and the failure record are removed with a plain unlink).
//!
//! Why an environment variable honoured only by debug builds rather than a cargo
//! feature: the host tests run the very binary `cargo test` builds (debug, the same one
//! every other test runs), so no second build of the crate is needed and no feature can
//! be left on by mistake in a shipped build; release builds (`debug_assertions` off)
//! compile every hook to nothing, carry no counter and never read the variable.
//!
//! Aborting is `std::process::abort`: no unwinding, no destructors, no flush, as close
//! to `kill -9` as a process can do to itself.

/// The environment variable naming the step to abort at.
pub const ENV: &str = "BOOTC_FAULT_AT";

/// `BOOTC_FAULT_AT=durable:N` aborts just before the Nth counted step.
pub const DURABLE_PREFIX: &str = "durable:";

/// `BOOTC_FAULT_AT=count` prints each counted step (see [`COUNT_LINE`]).
pub const COUNT: &str = "count";

/// The start of each line `BOOTC_FAULT_AT=count` prints: `<COUNT_LINE> N <what>`.
pub const COUNT_LINE: &str = "BOOTC_FAULT_AT=count: step";

#[cfg(debug_assertions)]
mod hook {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    pub(super) enum Mode {
        Off,
        Named(std::ffi::OsString),
        Nth(u64),
        Count,
    }

    pub(super) fn mode() -> &'static Mode {
        static MODE: OnceLock<Mode> = OnceLock::new();
        MODE.get_or_init(|| match std::env::var_os(super::ENV) {
            None => Mode::Off,
            Some(v) if v == super::COUNT => Mode::Count,
            Some(v) => match v
                .to_str()
                .and_then(|s| s.strip_prefix(super::DURABLE_PREFIX))
                .and_then(|n| n.parse().ok())
            {
                Some(n) => Mode::Nth(n),
                None => Mode::Named(v),
            },
        })
    }

    /// The number of counted steps so far in this process.
    pub(super) static STEPS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn step(what: &str) {
        let mode = mode();
        if matches!(mode, Mode::Off) {
            return;
        }
        let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
        match mode {
            Mode::Count => eprintln!("{} {n} {what}", super::COUNT_LINE),
            Mode::Nth(at) if *at == n => {
                eprintln!(
                    "{}={}{n}: aborting before {what}",
                    super::ENV,
                    super::DURABLE_PREFIX
                );
                std::process::abort();
            }
            _ => {}
        }
    }
}

/// A counted durable step is about to happen (`what` names it in messages): aborts when
/// this is a debug build and it is the step `BOOTC_FAULT_AT=durable:N` names.
#[inline]
pub(crate) fn durable_step(what: &str) {
    #[cfg(debug_assertions)]
    hook::step(what);
    #[cfg(not(debug_assertions))]
    let _ = what;
}

/// A named point, also a counted step: aborts when this is a debug build and
/// `BOOTC_FAULT_AT` equals `step` (or names its number).
#[inline]
pub(crate) fn point(step: &str) {
    #[cfg(debug_assertions)]
    {
        if let hook::Mode::Named(v) = hook::mode() {
            if v == step {
                eprintln!("{ENV}={step}: aborting");
                std::process::abort();
            }
        }
        hook::step(step);
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}
