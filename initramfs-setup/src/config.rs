//! The optional initramfs configuration, `/usr/lib/composefs/setup-root-conf.toml`.
//!
//! ```toml
//! [etc]
//! mount = "bind"        # bind | overlay | transient | none
//! [var]
//! mount = "bind"
//! [root]
//! transient = false     # a tmpfs upper layer makes / writable until reboot
//! ```
//!
//! A missing file means the defaults above; an unknown key is an error naming it.

use std::path::Path;

use serde::Deserialize;

use crate::one_line;

/// How `/etc` or `/var` of the new root is provided.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Bind the deployment's state directory (writable, persistent).
    #[default]
    Bind,
    /// Overlay the state directory (upper) on the image's directory (lower).
    Overlay,
    /// Overlay a tmpfs on the image's directory: writable, forgotten at reboot.
    Transient,
    /// Leave the image's (read-only) directory as it is.
    None,
}

/// `[etc]` or `[var]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// How to mount it.
    #[serde(default)]
    pub mount: MountMode,
}

/// `[root]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    /// Give the root a tmpfs upper layer.
    #[serde(default)]
    pub transient: bool,
}

/// The whole configuration file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupConfig {
    /// `/etc`.
    #[serde(default)]
    pub etc: MountConfig,
    /// `/var`.
    #[serde(default)]
    pub var: MountConfig,
    /// `/`.
    #[serde(default)]
    pub root: RootConfig,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or values.
    #[error("invalid {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said, on one line.
        message: String,
    },
}

impl SetupConfig {
    /// Parses the text of a configuration file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: one_line(e.message()),
        })
    }

    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = SetupConfig::parse("", "t").unwrap();
        assert_eq!(c.etc.mount, MountMode::Bind);
        assert_eq!(c.var.mount, MountMode::Bind);
        assert!(!c.root.transient);
    }

    #[test]
    fn full() {
        let c = SetupConfig::parse(
            "[etc]\nmount = \"overlay\"\n[var]\nmount = \"none\"\n[root]\ntransient = true\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.etc.mount, MountMode::Overlay);
        assert_eq!(c.var.mount, MountMode::None);
        assert!(c.root.transient);
        let c = SetupConfig::parse("[etc]\nmount = \"transient\"\n", "t").unwrap();
        assert_eq!(c.etc.mount, MountMode::Transient);
    }

    #[test]
    fn unknown_key_is_named() {
        for (text, key) in [
            ("[etc]\nmount = \"bind\"\nfoo = 1\n", "foo"),
            ("[boot]\nx = 1\n", "boot"),
            ("[root]\ntransiant = true\n", "transiant"),
        ] {
            let e = SetupConfig::parse(text, "/x.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains("/x.toml"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn bad_values() {
        for text in [
            "[etc]\nmount = \"copy\"\n",
            "[root]\ntransient = \"yes\"\n",
            "[etc",
            "\u{0}",
        ] {
            assert!(SetupConfig::parse(text, "t").is_err(), "{text:?}");
        }
    }

    #[test]
    fn missing_file_is_default() {
        let c = SetupConfig::load(Path::new("/nonexistent/setup-root-conf.toml")).unwrap();
        assert_eq!(c, SetupConfig::default());
    }
}
