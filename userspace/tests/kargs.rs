//! Host tests of issue 10 item 3: kernel arguments across `switch`/`upgrade`. The new
//! entry gets the booted entry's arguments, minus those the booted image's `kargs.d`
//! added, plus those the new image's `kargs.d` adds (`bls::carried_options`), and a
//! quoted value stays one argument through install, switch, finalize and rollback. Each
//! runs on a real ext4 root installed by `bootc install to-filesystem`, once per boot
//! loader in [`LOADERS`].

mod common;

use bootc_initramfs_setup::cmdline::tokenize;
use common::system::*;
use common::*;

/// The boot loaders (`install --bootloader`) every scenario runs with.
const LOADERS: &[&str] = &["systemd", "grub"];

/// The `options` of deployment `id`'s entry, and the text that holds it.
fn entry_options(s: &System, id: &str) -> (String, String) {
    let e = s.entry_of(id);
    (e.options(), e.text)
}

/// How the menu's text holds the one argument `c=x y`: an entry file as the kernel
/// reads it, a GRUB menu as one quoted word.
fn one_argument(loader: &str) -> &'static str {
    match loader {
        "grub" => " 'c=x y' ",
        _ => " c=\"x y\" ",
    }
}

/// `options` split into arguments the way the kernel splits them, sorted.
fn multiset(options: &str) -> Vec<String> {
    let mut v = tokenize(options);
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn switch_carries_user_kargs_and_follows_the_images_kargs_d() {
    if !can_run(&["grub-mkimage", "bootctl"]) {
        return;
    }
    let _g = serial();
    for loader in LOADERS {
        let s = System::install_image(
            1 << 30,
            &[],
            "loop",
            |layout| {
                kargs_image(
                    layout,
                    "10-test.toml",
                    "kargs-v1",
                    1,
                    "kargs = [\"a\", \"b\"]\n",
                );
                kargs_image(
                    layout,
                    "10-test.toml",
                    "kargs-v2",
                    2,
                    "kargs = [\"a\", \"d\"]\n",
                );
            },
            "kargs-v1",
            &["--bootloader", loader, "--karg", "c=\"x y\""],
        );
        let v1 = s.v1.clone();
        let (installed, text) = entry_options(&s, &v1);
        let cfs1 = format!("composefs=?sha256:{v1}");
        assert_eq!(
            installed,
            format!("root=UUID=test rw a b c=\"x y\" {cfs1}"),
            "{loader}: install (kargs.d, then --karg, as upstream)"
        );
        assert!(text.contains(one_argument(loader)), "{loader}: {text}");

        // Switch to v2 (kargs.d a d): b, which only v1's kargs.d added, goes; d comes;
        // a is there once; the user's c="x y" stays one argument.
        let v2 = s.switch_and_finalize(&v1, "kargs-v2", &[]);
        let (options, text) = entry_options(&s, &v2);
        let cfs2 = format!("composefs=?sha256:{v2}");
        assert_eq!(
            multiset(&options),
            sorted(&["root=UUID=test", "rw", "a", "c=x y", "d", &cfs2]),
            "{loader}: {options}"
        );
        assert_eq!(
            options,
            format!("root=UUID=test rw c=\"x y\" a d {cfs2}"),
            "{loader}: the booted order, then the new image's"
        );
        assert!(text.contains(one_argument(loader)), "{loader}: {text}");
        assert_eq!(
            entry_options(&s, &v1).0,
            installed,
            "{loader}: the previous entry is carried as it is"
        );

        // Rollback twice: each entry keeps its options byte for byte.
        for round in 1..=2 {
            s.bootc_ok(&v2, &["rollback"]);
            assert_eq!(entry_options(&s, &v2).0, options, "{loader}: {round}");
            assert_eq!(entry_options(&s, &v1).0, installed, "{loader}: {round}");
        }
        assert_eq!(s.order(false), vec![v2.clone(), v1.clone()]);

        // Booted in v2, switch to v3, which has no kargs.d: v2's a and d go, the user's
        // argument stays.
        let v3 = s.switch_and_finalize(&v2, "v3", &[]);
        let (options, text) = entry_options(&s, &v3);
        assert_eq!(
            options,
            format!("root=UUID=test rw c=\"x y\" composefs=?sha256:{v3}"),
            "{loader}"
        );
        assert!(text.contains(one_argument(loader)), "{loader}: {text}");
    }
}
