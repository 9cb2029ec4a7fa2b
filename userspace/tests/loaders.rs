//! Every day-2 verb with each boot loader (issue 10): the same cases run once per loader
//! in [`LOADERS`], on a real ext4 root installed by `bootc install to-filesystem
//! --bootloader <loader>`, driven with `--sysroot`. After each step the menu (systemd-boot's
//! `loader/entries`, GRUB's `grub2/user.cfg`) names only kernels, initrds and images
//! that exist, the staged menu is complete, and gc removes nothing a menu names.

mod common;

use std::fs;

use common::system::*;
use common::*;

/// The boot loaders (`install --bootloader`) every case runs with.
const LOADERS: &[&str] = &["systemd", "grub"];

fn install(loader: &str) -> System {
    System::install_image(
        1 << 30,
        &[],
        "loop",
        |_| {},
        "v1",
        &["--bootloader", loader],
    )
}

/// The loader's menu file(s) on the boot partition, by path, for "unchanged" checks.
fn menu_files(s: &System) -> std::collections::BTreeMap<String, Vec<u8>> {
    let boot = s.root.join("boot");
    match s.loader.as_str() {
        "grub" => [("grub2/user.cfg", boot.join("grub2/user.cfg"))]
            .into_iter()
            .filter_map(|(k, p)| fs::read(p).ok().map(|b| (k.to_string(), b)))
            .collect(),
        _ => file_snapshot(&boot.join("loader/entries")),
    }
}

#[test]
fn install_upgrade_finalize_rollback_gc_with_each_loader() {
    if !can_run(&["grub-mkimage", "bootctl"]) {
        return;
    }
    let _g = serial();
    for loader in LOADERS {
        let s = install(loader);
        let v1 = s.v1.clone();
        assert_eq!(s.order(false), vec![v1.clone()], "{loader}");
        s.assert_bootable(&s.menu(false), &format!("{loader}: install"));
        // The loader is recorded in the origin and shown by status.
        let origin =
            fs::read_to_string(s.root.join(format!("state/deploy/{v1}/{v1}.origin"))).unwrap();
        assert!(
            origin.contains(&format!("\nbootloader={loader}\n")),
            "{loader}: {origin}"
        );
        let st = s.status(&v1);
        assert_eq!(
            st["status"]["booted"]["composefs"]["bootloader"], *loader,
            "{st}"
        );
        // An origin from before the key: the loader is detected from the ESP.
        let origin_path = s.root.join(format!("state/deploy/{v1}/{v1}.origin"));
        fs::write(
            &origin_path,
            origin.replace(&format!("bootloader={loader}\n"), ""),
        )
        .unwrap();
        let st = s.status(&v1);
        assert_eq!(
            st["status"]["booted"]["composefs"]["bootloader"], *loader,
            "{loader}: detected: {st}"
        );
        fs::write(&origin_path, &origin).unwrap();

        // Stage v2: the current menu is untouched, the staged one is complete.
        let before = menu_files(&s);
        s.bootc_ok(&v1, &["switch", &s.imgref("v2")]);
        let v2 = s.marker().expect("staged marker");
        assert_eq!(
            menu_files(&s),
            before,
            "{loader}: staging changes no current menu"
        );
        let staged = s.menu(true);
        assert_eq!(
            staged.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            vec![v2.clone(), v1.clone()],
            "{loader}"
        );
        s.assert_bootable(&staged, &format!("{loader}: staged"));
        let st = s.status(&v1);
        assert_eq!(st["status"]["staged"]["composefs"]["verity"], v2, "{st}");

        // Finalize: v2 first, v1 next; the staged menu is gone.
        s.bootc_ok(&v1, &["composefs-finalize-staged"]);
        assert_eq!(s.order(false), vec![v2.clone(), v1.clone()], "{loader}");
        assert!(s.menu(true).is_empty(), "{loader}: staged menu removed");
        s.assert_bootable(&s.menu(false), &format!("{loader}: finalized"));

        // Rollback twice (booted in v2): order swaps, then swaps back; entries are
        // carried as they are.
        let entries = s.menu(false);
        s.bootc_ok(&v2, &["rollback"]);
        assert_eq!(s.order(false), vec![v1.clone(), v2.clone()], "{loader}");
        s.assert_bootable(&s.menu(false), &format!("{loader}: rollback"));
        let st = s.status(&v2);
        assert_eq!(st["status"]["rollback"]["composefs"]["verity"], v1, "{st}");
        s.bootc_ok(&v2, &["rollback"]);
        assert_eq!(
            s.menu(false),
            entries,
            "{loader}: two rollbacks restore the menu"
        );

        // gc with both entries live removes no deployment; then a third deployment
        // pushes v1 out (--keep-previous 1) and gc removes exactly v1.
        let out = s.bootc_ok(&v2, &["gc"]);
        assert!(out.contains("0 deployments"), "{loader}: {out}");
        s.assert_bootable(&s.menu(false), &format!("{loader}: gc"));
        let v3 = s.switch_and_finalize(&v2, "v3", &["--keep-previous", "1"]);
        assert_eq!(s.order(false), vec![v3.clone(), v2.clone()], "{loader}");
        assert!(
            !s.root.join(format!("state/deploy/{v1}")).exists(),
            "{loader}: finalize's gc removed v1"
        );
        assert!(
            !s.root.join(format!("boot/bootc_composefs-{v1}")).exists()
                || s.menu(false).iter().any(|e| e.linux.contains(&v1)),
            "{loader}: v1's kernel directory went with it"
        );
        s.assert_bootable(&s.menu(false), &format!("{loader}: after v3"));
        if *loader == "grub" {
            assert!(
                !s.root.join("boot/loader/entries").exists(),
                "grub: no systemd-boot entries written"
            );
        }
    }
}

/// Issue 10 item 4: an entry named like ours whose `composefs=` does not parse is
/// reported, left alone byte for byte, and neither rollback nor gc panics on it.
#[test]
fn a_broken_entry_of_ours_is_reported_and_left_alone_with_each_loader() {
    if !can_run(&["grub-mkimage", "bootctl"]) {
        return;
    }
    let _g = serial();
    let ghost = "ab".repeat(32);
    for loader in LOADERS {
        let s = install(loader);
        let v1 = s.v1.clone();
        let v2 = s.switch_and_finalize(&v1, "v2", &[]);
        let boot = s.root.join("boot");
        let (path, broken): (std::path::PathBuf, String) = match *loader {
            "grub" => {
                let p = boot.join("grub2/user.cfg");
                let block = format!(
                    "menuentry 'Broken' --id 'bootc_composefs-{ghost}' {{\n    linux '/bootc_composefs-{ghost}/vmlinuz' 'composefs=sha256:not-hex'\n}}\n"
                );
                let mut text = fs::read_to_string(&p).unwrap();
                text.push_str(&block);
                fs::write(&p, &text).unwrap();
                (p, block)
            }
            _ => {
                let p = boot.join(format!("loader/entries/bootc_composefs-{ghost}.conf"));
                let text = format!(
                    "title Broken\nlinux /bootc_composefs-{ghost}/vmlinuz\noptions composefs=sha256:not-hex\n"
                );
                fs::write(&p, &text).unwrap();
                (p, text)
            }
        };
        let out = s.bootc(&v2, &["status"]);
        assert!(out.status.success(), "{loader}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("bootc_composefs-{ghost}")) && err.contains("left as it is"),
            "{loader}: status reports it: {err}"
        );
        for _ in 0..2 {
            let out = s.bootc(&v2, &["rollback"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{loader}: {err}");
            assert!(!err.contains("panicked"), "{loader}: {err}");
            assert!(
                fs::read_to_string(&path).unwrap().contains(&broken),
                "{loader}: carried byte for byte"
            );
        }
        // (The test's reader lists the broken entry too, by its name.)
        let ours = || -> Vec<MenuEntry> {
            s.menu(false)
                .into_iter()
                .filter(|e| e.id != ghost)
                .collect()
        };
        let ids: Vec<String> = ours().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![v2.clone(), v1.clone()], "{loader}");
        let out = s.bootc(&v2, &["gc"]);
        assert!(out.status.success(), "{loader}");
        assert!(
            fs::read_to_string(&path).unwrap().contains(&broken),
            "{loader}"
        );
        s.assert_bootable(&ours(), &format!("{loader}: gc"));
    }
}
