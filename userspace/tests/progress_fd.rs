//! `--progress-fd N`: JSON lines in upstream bootc's shape (a `Start` line, then
//! `ProgressBytes` lines for the pull), read back and parsed line by line.

mod common;

use std::fs;
use std::process::Command;

use common::system::*;
use common::*;

#[test]
fn switch_writes_json_progress_lines_to_the_fd() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();
    let lines_path = s.t.path().join("progress.jsonl");

    // fd 3 of bootc is the file (the shell opens it; bootc must not need a terminal).
    let mut args = s.args(&v1, &["switch", "--progress-fd", "3"]);
    args.push(s.imgref("v2"));
    let out = Command::new("sh")
        .args(["-c", r#"exec "$B" "$@" 3>"$OUT""#, "sh"])
        .args(&args)
        .env("B", BOOTC)
        .env("OUT", &lines_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The people's lines are still there (stderr is not a terminal here).
    assert!(String::from_utf8_lossy(&out.stderr).contains("Fetched layer"));

    let text = fs::read_to_string(&lines_path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(events.len() >= 3, "{text}");
    assert_eq!(events[0]["type"], "Start", "{text}");
    assert_eq!(events[0]["version"], "0.1.0", "{text}");
    let image = s.imgref("v2");
    for e in &events[1..] {
        assert_eq!(e["type"], "ProgressBytes", "{e}");
        assert_eq!(e["task"], "pulling", "{e}");
        assert_eq!(e["id"], image.as_str(), "{e}");
        assert_eq!(
            e["description"],
            format!("Pulling Image: {image}").as_str(),
            "{e}"
        );
        for k in [
            "bytesCached",
            "bytes",
            "bytesTotal",
            "stepsCached",
            "steps",
            "stepsTotal",
        ] {
            assert!(e[k].is_u64(), "{k} in {e}");
        }
        assert!(e["bytes"].as_u64() <= e["bytesTotal"].as_u64(), "{e}");
        assert!(e["steps"].as_u64() <= e["stepsTotal"].as_u64(), "{e}");
        for t in e["subtasks"].as_array().expect("subtasks") {
            assert_eq!(t["subtask"], "layer", "{t}");
            assert!(t["id"].as_str().unwrap().starts_with("sha256:"), "{t}");
            assert!(t["bytes"].is_u64() && t["bytesTotal"].is_u64(), "{t}");
        }
    }
    // v2 shares its base layer with v1: one layer cached, one fetched, and the last
    // line says the pull is complete.
    let last = events.last().unwrap();
    assert_eq!(last["stepsCached"], 1, "{text}");
    assert_eq!(last["stepsTotal"], 1, "{text}");
    assert_eq!(last["steps"], 1, "{text}");
    assert_eq!(last["bytes"], last["bytesTotal"], "{text}");
    assert!(last["bytes"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(last["subtasks"].as_array().unwrap().len(), 0, "{text}");

    // Refusals: the standard streams, and a descriptor that is not open.
    let err = s.bootc_err(&v1, &["upgrade", "--progress-fd", "2"]);
    assert!(err.contains("cannot use fd 2 for progress JSON"), "{err}");
    let err = s.bootc_err(&v1, &["upgrade", "--progress-fd", "97"]);
    assert!(err.contains("--progress-fd 97"), "{err}");
}
