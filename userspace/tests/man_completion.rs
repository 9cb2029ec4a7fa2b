//! `bootc completion SHELL` and `bootc man --directory DIR`, checked against what the
//! binary's own `--help` lists: every verb in each shell's script, one man page per
//! verb, each naming every flag of its verb. No root needed.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;

/// The visible verbs, as paths below `bootc` (the oracle; `--help` is checked to agree).
const VERBS: &[&[&str]] = &[
    &["install"],
    &["install", "to-disk"],
    &["install", "to-filesystem"],
    &["install", "print-configuration"],
    &["upgrade"],
    &["switch"],
    &["rollback"],
    &["status"],
    &["gc"],
    &["usr-overlay"],
    &["container"],
    &["container", "lint"],
    &["container", "compute-composefs-digest"],
    &["container", "ukify"],
    &["config-diff"],
    &["completion"],
];

fn out_ok(args: &[&str]) -> String {
    let out = bootc(args);
    assert!(out.status.success(), "bootc {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommand names `bootc PATH --help` lists under "Commands:".
fn help_verbs(path: &[&str]) -> BTreeSet<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let h = out_ok(&args);
    h.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_string)
        .collect()
}

/// Every `--flag` `bootc PATH --help` names.
fn help_flags(path: &[&str]) -> BTreeSet<String> {
    let mut args = path.to_vec();
    args.push("--help");
    out_ok(&args)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

#[test]
fn the_verb_list_matches_help() {
    let mut from_help = BTreeSet::new();
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        for v in help_verbs(&path) {
            let mut p: Vec<&str> = path.clone();
            p.push(Box::leak(v.into_boxed_str()));
            from_help.insert(p.join(" "));
            todo.push(p);
        }
    }
    let ours: BTreeSet<String> = VERBS.iter().map(|p| p.join(" ")).collect();
    assert_eq!(from_help, ours);
    // The flag oracle reads what it should.
    let f = help_flags(&["upgrade"]);
    assert!(f.contains("--check") && f.contains("--tls-verify"), "{f:?}");
}

#[test]
fn completion_scripts_name_every_verb() {
    for shell in ["bash", "zsh", "fish"] {
        let s = out_ok(&["completion", shell]);
        assert!(s.len() > 1000, "{shell}: a real script");
        for path in VERBS {
            let verb = path.last().unwrap();
            assert!(s.contains(verb), "{shell}: {verb} missing");
        }
        // Flags too: one deep in a nested verb.
        assert!(s.contains("fatal-warnings"), "{shell}");
        assert!(s.contains("via-loopback"), "{shell}");
    }
    let out = bootc(&["completion", "tcsh"]);
    assert!(!out.status.success());
}

#[test]
fn one_man_page_per_verb_naming_its_flags() {
    let t = tempdir("bootc-man-");
    let dir = t.path().join("man8");
    let listed = out_ok(&["man", "--directory", dir.to_str().unwrap()]);
    let mut expected: BTreeSet<String> = VERBS
        .iter()
        .map(|p| format!("bootc-{}.8", p.join("-")))
        .collect();
    expected.insert("bootc.8".into());
    let written: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected);
    assert_eq!(listed.lines().count(), expected.len());

    for path in VERBS.iter().copied().chain([&[][..]]) {
        let name = if path.is_empty() {
            "bootc.8".to_string()
        } else {
            format!("bootc-{}.8", path.join("-"))
        };
        let page = fs::read_to_string(dir.join(&name)).unwrap();
        let title = name.trim_end_matches(".8");
        assert!(
            page.contains(&format!(".TH {title} 8")),
            "{name}: title and section"
        );
        assert!(page.contains(".SH NAME"), "{name}");
        for flag in help_flags(path) {
            // roff escapes each '-' as '\-'.
            let roff = flag.replace('-', "\\-");
            assert!(page.contains(&roff), "{name}: {flag} not documented");
        }
    }
    // The hidden verbs have no page.
    assert!(!dir.join("bootc-man.8").exists());
    assert!(!dir.join("bootc-composefs-finalize-staged.8").exists());
}
