//! Running external commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::one_line;

/// Tool output and lists quoted in a message are cut to this many characters.
pub(crate) const MAX_QUOTED: usize = 300;

/// `s` cut to at most `max` characters, ending with "…" when something was cut.
pub(crate) fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Runs a command; on failure the error names the command and carries its stderr (on
/// one line, cut at [`MAX_QUOTED`] characters).
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    run_with_stdin(cmd, None)
}

/// Like [`run`], feeding `stdin`.
pub(crate) fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let desc = format!("{cmd:?}").replace('"', "");
    tracing::debug!("running {desc}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().with_context(|| format!("starting {desc}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe")?;
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("writing to {desc}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {desc}"))?;
    if !out.status.success() {
        let err = cap(&one_line(&String::from_utf8_lossy(&out.stderr)), MAX_QUOTED);
        bail!("{} failed ({}): {err}", cap(&desc, MAX_QUOTED), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The full path of a tool on PATH or in the sbin directories.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_cuts_with_an_ellipsis() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("abcdef", 4), "abc…");
        assert_eq!(cap("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn a_failing_tool_is_quoted_on_one_short_line() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "for i in $(seq 1 500); do echo line $i >&2; done; exit 3",
        ]);
        let e = run(&mut cmd).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.chars().count() < 2 * MAX_QUOTED + 50,
            "{} chars: {e}",
            e.len()
        );
        assert!(e.contains("line 1 line 2") && e.ends_with('…'), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
    }
}
