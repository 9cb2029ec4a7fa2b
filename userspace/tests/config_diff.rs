//! `bootc config-diff` on a real installed root (ext4, `install to-filesystem`), driven
//! with `--sysroot --booted-deployment`: the deployment's /etc edited by hand (one
//! addition, one modification, one deletion, plus a mode change and a new directory)
//! gives exactly those paths, in the human and the JSON form. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::system::*;
use common::*;

#[test]
fn lists_exactly_the_local_etc_changes() {
    if !can_run(&[]) {
        return;
    }
    let _g = serial();
    let s = System::install();
    let v1 = s.v1.clone();

    // Freshly installed: nothing changed.
    let out = s.bootc(&v1, &["config-diff"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("No local changes to /etc."));
    let json: serde_json::Value =
        serde_json::from_str(&s.bootc_ok(&v1, &["config-diff", "--format", "json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"added": [], "modified": [], "removed": []})
    );

    // Local changes to the live /etc (the booted deployment's state).
    let etc = s.etc(&v1);
    fs::write(etc.join("local-added.conf"), "mine\n").unwrap();
    fs::write(etc.join("hostname"), "edited-locally\n").unwrap();
    fs::remove_file(etc.join("conf.d/keep.conf")).unwrap();
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(etc.join("local.d")).unwrap();
    fs::write(etc.join("local.d/x.conf"), "x\n").unwrap();
    // Same content rewritten (new mtime): not a change, as for the merge.
    let default = fs::read(etc.join("default.conf")).unwrap();
    fs::write(etc.join("default.conf"), default).unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&s.bootc_ok(&v1, &["config-diff", "--format", "json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "added": ["/etc/local-added.conf", "/etc/local.d", "/etc/local.d/x.conf"],
            "modified": ["/etc/hostname", "/etc/shadow"],
            "removed": ["/etc/conf.d/keep.conf"],
        })
    );
    assert_eq!(
        s.bootc_ok(&v1, &["config-diff"]),
        "Added    /etc/local-added.conf\n\
         Added    /etc/local.d\n\
         Added    /etc/local.d/x.conf\n\
         Modified /etc/hostname\n\
         Modified /etc/shadow\n\
         Removed  /etc/conf.d/keep.conf\n"
    );

    // The pristine copy it compared against is gone, and the image untouched.
    let leftovers: Vec<_> = fs::read_dir(s.root.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bootc-tmp."))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&s.bootc_ok(&v1, &["config-diff", "--format", "yaml"])).unwrap();
    assert_eq!(yaml["removed"][0].as_str(), Some("/etc/conf.d/keep.conf"));
}
