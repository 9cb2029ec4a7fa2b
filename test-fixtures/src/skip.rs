//! Skip rules: a test that cannot run here says why; in CI that is a failure.

use std::path::Path;

/// True when running under the project's CI (`CI=true`), where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Prints `SKIP: reason` and returns false, or panics under CI.
pub fn skip(reason: &str) -> bool {
    if in_ci() {
        panic!("test cannot run in CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// True when running as root; otherwise skips (or fails in CI).
pub fn need_root() -> bool {
    if rustix_is_root() {
        true
    } else {
        skip("needs root")
    }
}

fn rustix_is_root() -> bool {
    // Reading our own status avoids an extra dependency for geteuid().
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// True when every tool is on PATH (or an absolute path that exists); otherwise skips.
pub fn need_tools(tools: &[&str]) -> bool {
    for t in tools {
        if find_tool(t).is_none() {
            return skip(&format!("{t} is not installed"));
        }
    }
    true
}

/// The full path of a tool, searching PATH plus the sbin directories.
pub fn find_tool(tool: &str) -> Option<std::path::PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).exists().then(|| tool.into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}
