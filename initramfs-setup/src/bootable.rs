//! What a composed image must contain for `setup-root` to boot it: one definition,
//! used by the initramfs on the mounted image and by `bootc` before it stages one.
//!
//! `setup-root` mounts the deployment's `/etc`, the shared `/var` and the physical root
//! on directories of the image. An image without one of them, or with a symlink or a
//! file there, would install and stage fine and then fail at boot; [`check`] refuses it
//! up front with a sentence a person can act on.
//!
//! # Contract for callers
//!
//! [`check`] does not read anything itself. It asks `kind_of(name)` what the entry
//! `name` of the image's root directory is, where `name` is a single path component
//! without slashes (`"etc"`, `"var"`, `"sysroot"`). The answer must describe the entry
//! itself, **without following a symlink** (`lstat`, not `stat`): a symlink is
//! [`NodeKind::Symlink`] whatever it points to. It returns the first failing rule in a
//! fixed order, or `Ok(())` when the image is bootable.
//!
//! - In the initramfs, `kind_of` is `statat(root, name, AT_SYMLINK_NOFOLLOW)` on the
//!   mounted image ([`NodeKind::from_file_type`]).
//! - In userspace, `kind_of` looks `name` up in the root directory of the composefs tree
//!   that is about to be committed or staged (a missing entry is [`NodeKind::Missing`]).
//!
//! The error's `Display` is a complete sentence, e.g. "the image lacks /var (the
//! initramfs mounts the shared /var there)"; callers prefix the image they checked.

use crate::layout;

/// What an entry of the image's root directory is, not following symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// No such entry.
    Missing,
    /// A directory.
    Directory,
    /// A symbolic link, wherever it points.
    Symlink,
    /// A regular file, device, fifo or socket.
    Other,
    /// The entry could not be inspected; the text says why (e.g. an I/O error).
    Unreadable(String),
}

impl NodeKind {
    /// The kind of an entry from its (not followed) file type.
    pub fn from_file_type(t: rustix::fs::FileType) -> NodeKind {
        match t {
            rustix::fs::FileType::Directory => NodeKind::Directory,
            rustix::fs::FileType::Symlink => NodeKind::Symlink,
            _ => NodeKind::Other,
        }
    }
}

/// A directory the image must have, and why.
struct MountPoint {
    name: &'static str,
    mounted_there: &'static str,
}

/// Every directory of the image `setup-root` mounts something on, in checking order.
const MOUNT_POINTS: [MountPoint; 3] = [
    MountPoint {
        name: layout::ETC_IN_ROOT,
        mounted_there: "the deployment's /etc",
    },
    MountPoint {
        name: layout::VAR_IN_ROOT,
        mounted_there: "the shared /var",
    },
    MountPoint {
        name: layout::SYSROOT_IN_ROOT,
        mounted_there: "the physical root",
    },
];

/// Why an image cannot be booted by `setup-root`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBootable {
    /// A required directory is missing.
    #[error("the image lacks /{name} (the initramfs mounts {mounted_there} there)")]
    Missing {
        /// The entry, e.g. `var`.
        name: &'static str,
        /// What is mounted on it.
        mounted_there: &'static str,
    },
    /// A required directory is a symlink.
    #[error("/{name} is a symlink in the image; it must be a directory (the initramfs mounts {mounted_there} there)")]
    Symlink {
        /// The entry.
        name: &'static str,
        /// What is mounted on it.
        mounted_there: &'static str,
    },
    /// A required directory is a file or another non-directory.
    #[error("/{name} is not a directory in the image; it must be one (the initramfs mounts {mounted_there} there)")]
    NotDirectory {
        /// The entry.
        name: &'static str,
        /// What is mounted on it.
        mounted_there: &'static str,
    },
    /// A required directory could not be inspected.
    #[error("cannot inspect /{name} in the image: {detail}")]
    Unreadable {
        /// The entry.
        name: &'static str,
        /// Why.
        detail: String,
    },
}

impl NotBootable {
    /// The root-directory entry the failure is about, e.g. `var`.
    pub fn name(&self) -> &'static str {
        match self {
            NotBootable::Missing { name, .. }
            | NotBootable::Symlink { name, .. }
            | NotBootable::NotDirectory { name, .. }
            | NotBootable::Unreadable { name, .. } => name,
        }
    }
}

/// Checks that the image has every directory `setup-root` mounts on. See the module
/// documentation for what `kind_of` must answer.
pub fn check(mut kind_of: impl FnMut(&str) -> NodeKind) -> Result<(), NotBootable> {
    for mp in &MOUNT_POINTS {
        let (name, mounted_there) = (mp.name, mp.mounted_there);
        match kind_of(name) {
            NodeKind::Directory => {}
            NodeKind::Missing => {
                return Err(NotBootable::Missing {
                    name,
                    mounted_there,
                })
            }
            NodeKind::Symlink => {
                return Err(NotBootable::Symlink {
                    name,
                    mounted_there,
                })
            }
            NodeKind::Other => {
                return Err(NotBootable::NotDirectory {
                    name,
                    mounted_there,
                })
            }
            NodeKind::Unreadable(detail) => return Err(NotBootable::Unreadable { name, detail }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose root has `dirs` as directories and `others` as given.
    fn image<'a>(
        dirs: &'a [&'a str],
        others: &'a [(&'a str, NodeKind)],
    ) -> impl FnMut(&str) -> NodeKind + 'a {
        move |name| {
            assert!(!name.contains('/'), "single components only: {name}");
            if let Some((_, k)) = others.iter().find(|(n, _)| *n == name) {
                k.clone()
            } else if dirs.contains(&name) {
                NodeKind::Directory
            } else {
                NodeKind::Missing
            }
        }
    }

    const ALL: &[&str] = &["etc", "var", "sysroot", "usr", "boot"];

    #[test]
    fn complete_image_is_bootable() {
        assert_eq!(check(image(ALL, &[])), Ok(()));
        // Only the mount points matter to the initramfs.
        assert_eq!(check(image(&["etc", "var", "sysroot"], &[])), Ok(()));
    }

    #[test]
    fn asks_about_each_mount_point_once_in_order() {
        let mut asked = vec![];
        check(|n| {
            asked.push(n.to_string());
            NodeKind::Directory
        })
        .unwrap();
        assert_eq!(asked, ["etc", "var", "sysroot"]);
    }

    #[test]
    fn missing_directories() {
        for (dirs, msg) in [
            (
                &["etc", "sysroot"][..],
                "the image lacks /var (the initramfs mounts the shared /var there)",
            ),
            (
                &["var", "sysroot"][..],
                "the image lacks /etc (the initramfs mounts the deployment's /etc there)",
            ),
            (
                &["etc", "var"][..],
                "the image lacks /sysroot (the initramfs mounts the physical root there)",
            ),
            (
                &[][..],
                "the image lacks /etc (the initramfs mounts the deployment's /etc there)",
            ),
        ] {
            let e = check(image(dirs, &[])).unwrap_err();
            assert_eq!(e.to_string(), msg);
        }
    }

    #[test]
    fn symlinks_are_refused_whatever_they_point_to() {
        let e = check(image(ALL, &[("var", NodeKind::Symlink)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/var is a symlink in the image; it must be a directory \
             (the initramfs mounts the shared /var there)"
        );
        assert_eq!(e.name(), "var");
        let e = check(image(ALL, &[("etc", NodeKind::Symlink)])).unwrap_err();
        assert!(matches!(e, NotBootable::Symlink { name: "etc", .. }));
    }

    #[test]
    fn files_and_unreadable_entries_are_refused() {
        let e = check(image(ALL, &[("sysroot", NodeKind::Other)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/sysroot is not a directory in the image; it must be one \
             (the initramfs mounts the physical root there)"
        );
        let e = check(image(
            ALL,
            &[("etc", NodeKind::Unreadable("Input/output error".into()))],
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot inspect /etc in the image: Input/output error"
        );
    }

    #[test]
    fn node_kind_from_file_type() {
        use rustix::fs::FileType;
        assert_eq!(
            NodeKind::from_file_type(FileType::Directory),
            NodeKind::Directory
        );
        assert_eq!(
            NodeKind::from_file_type(FileType::Symlink),
            NodeKind::Symlink
        );
        assert_eq!(
            NodeKind::from_file_type(FileType::RegularFile),
            NodeKind::Other
        );
        assert_eq!(NodeKind::from_file_type(FileType::Fifo), NodeKind::Other);
    }
}
