//! GRUB (EFI): a GRUB image built with `grub-mkimage` at the removable-media path of the
//! ESP (`EFI/BOOT/BOOTX64.EFI`, no NVRAM changes), a fixed `grub2/grub.cfg`, and the
//! menu entries in `grub2/user.cfg` (docs/architecture.md, on-disk layout), one per
//! deployment.
//!
//! `grub-install` is not used: it insists on probing a mounted FAT ESP, which a host
//! without vfat (and a staged ESP) cannot offer, and it edits EFI variables.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use bootc_initramfs_setup::layout;

use super::bls::{self, BlsEntry};
use super::Bootloader;
use crate::sys::cmd::{run, which};
use crate::sys::durable;

/// GRUB.
#[derive(Debug)]
pub(crate) struct Grub;

/// GRUB's platform directory and the removable-media file name for this architecture.
fn platform() -> Result<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(("x86_64-efi", "BOOTX64.EFI")),
        "aarch64" => Ok(("arm64-efi", "BOOTAA64.EFI")),
        other => bail!("GRUB installs are not supported on {other}"),
    }
}

/// The modules built into the image: enough to find the ESP, read the menu and boot
/// a Linux kernel.
const MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "search",
    "search_fs_file",
    "configfile",
    "normal",
    "linux",
    "echo",
    "test",
    "gzio",
    "all_video",
];

/// The directory (on the ESP) holding grub.cfg and user.cfg.
fn grub_dir() -> &'static str {
    Path::new(layout::GRUB_USER_CFG)
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("grub2")
}

/// The configuration built into the image: find the ESP by our grub.cfg and read it.
fn embedded_cfg() -> String {
    let dir = grub_dir();
    format!(
        "search --no-floppy --set=root --file /{dir}/grub.cfg\nset prefix=($root)/{dir}\nconfigfile ($root)/{dir}/grub.cfg\n"
    )
}

/// `grub2/grub.cfg`: the fixed part of the menu; the entries are in user.cfg.
pub(crate) fn grub_cfg() -> String {
    let user = Path::new(layout::GRUB_USER_CFG)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("user.cfg");
    format!(
        "# Written by bootc; the menu entries are in {user}.\nset timeout=3\nset default=0\nif [ -f ${{prefix}}/{user} ]; then\n  source ${{prefix}}/{user}\nfi\n"
    )
}

/// Quotes one word for GRUB's shell-like syntax: inside single quotes nothing is
/// special (no `$` expansion, no `\` escapes, no `;`, `#`, `{`), and a `'` is written
/// as `'\''`. Values are checked with [`bls::check_entry`] before; a control character
/// that slipped through is still written as a space, so no word spans two lines.
fn quote(s: &str) -> String {
    let s = s.replace(|c: char| c.is_control(), " ");
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `grub2/user.cfg`: one menu entry per BLS entry, in order. Every value is one
/// quoted word: the title, the id, the kernel and initrd paths, and each kernel
/// argument (split as the kernel splits its command line; GRUB's `linux` joins them
/// again, quoting an argument that holds a space).
pub(crate) fn user_cfg(entries: &[BlsEntry]) -> String {
    let mut s = String::from("# Written by bootc: one entry per deployment.\n");
    for e in entries {
        let args: Vec<String> = bootc_initramfs_setup::cmdline::tokenize(&e.options)
            .iter()
            .map(|a| quote(a))
            .collect();
        s.push_str(&format!(
            "menuentry {} --id {} {{\n    linux {} {}\n",
            quote(&e.title),
            quote(&e.file_stem),
            quote(&e.linux),
            args.join(" ")
        ));
        for i in &e.initrd {
            s.push_str(&format!("    initrd {}\n", quote(i)));
        }
        s.push_str("}\n");
    }
    s
}

impl Bootloader for Grub {
    fn name(&self) -> &'static str {
        "grub"
    }

    fn check(&self) -> Result<()> {
        let (platform, _) = platform()?;
        which("grub-mkimage").context(
            "grub-mkimage is not installed: install grub-common and grub-efi-amd64-bin, or choose --bootloader systemd",
        )?;
        let modules = PathBuf::from("/usr/lib/grub").join(platform);
        if !modules.join("linux.mod").exists() {
            bail!(
                "the GRUB {platform} modules are not installed ({}): install grub-efi-amd64-bin, or choose --bootloader systemd",
                modules.display()
            );
        }
        Ok(())
    }

    fn install(&self, _root: &Path, esp: &Path) -> Result<()> {
        let (platform, file) = platform()?;
        let esp_fd = durable::open_dir(rustix::fs::CWD, esp)?;
        let dir = durable::ensure_dir_all(&esp_fd, grub_dir(), 0o755)?;
        durable::write_file(&dir, "grub.cfg", grub_cfg().as_bytes(), 0o644)
            .with_context(|| format!("writing {}/grub.cfg", grub_dir()))?;

        let scratch = tempfile::Builder::new()
            .prefix(&durable::tmp_name("grub."))
            .tempdir()
            .context("creating a scratch directory")?;
        let cfg = scratch.path().join("embedded.cfg");
        std::fs::write(&cfg, embedded_cfg())
            .with_context(|| format!("writing {}", cfg.display()))?;
        let image = scratch.path().join(file);
        let mut cmd = Command::new(which("grub-mkimage").context("grub-mkimage is not installed")?);
        cmd.args(["-O", platform, "-o"])
            .arg(&image)
            .arg("-c")
            .arg(&cfg)
            .args(["-p", &format!("/{}", grub_dir())])
            .args(MODULES);
        run(&mut cmd).context("building the GRUB EFI image")?;
        let data = std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
        let boot = durable::ensure_dir_all(&esp_fd, "EFI/BOOT", 0o755)?;
        durable::write_file(&boot, file, &data, 0o644)
            .with_context(|| format!("writing EFI/BOOT/{file}"))?;
        Ok(())
    }

    fn write_entries(&self, boot: &OwnedFd, entries: &[BlsEntry]) -> Result<()> {
        for e in entries {
            bls::check_entry(e)?;
        }
        let dir = durable::ensure_dir_all(boot, grub_dir(), 0o755)?;
        let name = Path::new(layout::GRUB_USER_CFG)
            .file_name()
            .and_then(|n| n.to_str())
            .context("user.cfg name")?;
        durable::write_file(&dir, name, user_cfg(entries).as_bytes(), 0o644)
            .with_context(|| format!("writing {}", layout::GRUB_USER_CFG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu() {
        let e = BlsEntry {
            file_stem: "bootc_composefs-ab".into(),
            title: "It's OS v1".into(),
            version: "1".into(),
            sort_key: None,
            linux: "/bootc_composefs-ab/vmlinuz".into(),
            initrd: vec!["/bootc_composefs-ab/initramfs.img".into()],
            options: "root=UUID=u rw composefs=?sha256:ab".into(),
        };
        assert_eq!(
            user_cfg(&[e]),
            "# Written by bootc: one entry per deployment.\nmenuentry 'It'\\''s OS v1' --id 'bootc_composefs-ab' {\n    linux '/bootc_composefs-ab/vmlinuz' 'root=UUID=u' 'rw' 'composefs=?sha256:ab'\n    initrd '/bootc_composefs-ab/initramfs.img'\n}\n"
        );
        assert!(grub_cfg().contains("source ${prefix}/user.cfg"));
        assert!(embedded_cfg().contains("--file /grub2/grub.cfg"));
    }

    #[test]
    fn hostile_values_stay_inside_their_quotes() {
        let e = BlsEntry {
            file_stem: "bootc_composefs-ab".into(),
            title: "a'b$c\\d\"e;{f}#".into(),
            version: "1".into(),
            sort_key: None,
            linux: "/bootc_composefs-ab/vmlinuz".into(),
            initrd: vec!["/bootc_composefs-ab/initramfs.img".into()],
            options: "root=UUID=u init=$x a=\"b c\" e;f} 'q' composefs=?sha256:ab".into(),
        };
        assert_eq!(
            user_cfg(std::slice::from_ref(&e)),
            concat!(
                "# Written by bootc: one entry per deployment.\n",
                "menuentry 'a'\\''b$c\\d\"e;{f}#' --id 'bootc_composefs-ab' {\n",
                "    linux '/bootc_composefs-ab/vmlinuz' 'root=UUID=u' 'init=$x' 'a=b c' 'e;f}' ''\\''q'\\''' 'composefs=?sha256:ab'\n",
                "    initrd '/bootc_composefs-ab/initramfs.img'\n",
                "}\n"
            )
        );
        // A line break, CR or NUL never reaches the menu: refused before writing, and
        // even unchecked each entry keeps its four lines.
        let t = tempfile::tempdir().unwrap();
        let boot = durable::open_dir(rustix::fs::CWD, t.path()).unwrap();
        for bad in ["x\n}\nmenuentry evil {", "x\ry", "x\0y"] {
            for field in 0..3 {
                let mut e = e.clone();
                match field {
                    0 => e.title = bad.into(),
                    1 => e.options = format!("quiet {bad}"),
                    _ => e.linux = bad.into(),
                }
                let err = Grub.write_entries(&boot, &[e.clone()]).unwrap_err();
                assert!(err.to_string().contains("control character"), "{err}");
                assert_eq!(user_cfg(&[e]).lines().count(), 5);
            }
        }
        assert!(!t.path().join(grub_dir()).exists(), "nothing written");
    }
}
