//! Container image references as users write them for bootc and skopeo.
//!
//! `TRANSPORT:NAME`, where the transport is one of `docker://` (alias `registry:`),
//! `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `containers-storage:NAME`. The origin
//! file stores `ostree-unverified-image:<transport>:<name>` (and upstream bootc's
//! `ostree-unverified-registry:<name>` is read back as a registry reference).

use std::fmt;
use std::str::FromStr;

/// How an image is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    /// A registry (`docker://NAME`, `registry:NAME`).
    Registry,
    /// An OCI image layout directory (`oci:DIR[:TAG]`).
    OciDir,
    /// A tar archive of an OCI image layout (`oci-archive:FILE[:TAG]`).
    OciArchive,
    /// The local containers-storage (podman) store (`containers-storage:NAME`).
    ContainersStorage,
}

/// The transports we accept, as users spell them (for error messages).
pub(crate) const VALID_TRANSPORTS: &str =
    "docker://, registry:, oci:, oci-archive:, containers-storage:";

impl Transport {
    /// The name used in `ostree-unverified-image:<transport>:<name>`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Registry => "registry",
            Transport::OciDir => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::ContainersStorage => "containers-storage",
        }
    }

    /// The transport named by `--transport`/`--target-transport` (upstream's names:
    /// `registry`, `oci`, `oci-archive`, `containers-storage`; `docker` too).
    pub(crate) fn from_cli_name(name: &str) -> Result<Self, ImgRefError> {
        Ok(match name.trim_end_matches(':') {
            "registry" | "docker" => Transport::Registry,
            "oci" => Transport::OciDir,
            "oci-archive" => Transport::OciArchive,
            "containers-storage" => Transport::ContainersStorage,
            other => {
                return Err(ImgRefError::UnknownTransportName(other.to_string()));
            }
        })
    }

    /// The prefix skopeo (and composefs-oci) understands.
    fn skopeo_prefix(self) -> &'static str {
        match self {
            Transport::Registry => "docker://",
            Transport::OciDir => "oci:",
            Transport::OciArchive => "oci-archive:",
            Transport::ContainersStorage => "containers-storage:",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an image reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImgRefError {
    /// `--transport` names a transport we do not know.
    #[error("unknown transport {0:?} (valid: registry, oci, oci-archive, containers-storage)")]
    UnknownTransportName(String),
    /// Nothing given.
    #[error("empty image reference")]
    Empty,
    /// No `TRANSPORT:` prefix.
    #[error("image reference {0:?} has no transport (expected one of {VALID_TRANSPORTS} e.g. docker://quay.io/example/os:latest)")]
    MissingTransport(String),
    /// A prefix we do not know.
    #[error("unknown transport {transport:?} in image reference {input:?} (valid transports: {VALID_TRANSPORTS})")]
    UnknownTransport {
        /// The transport as given.
        transport: String,
        /// The whole reference.
        input: String,
    },
    /// `docker://` with nothing after it, `oci:` without a path, …
    #[error("image reference {0:?} has no image name or path after the transport")]
    EmptyName(String),
    /// `upgrade --tag` with something that is not a tag.
    #[error("{0:?} is not an image tag (up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-')")]
    BadTag(String),
}

/// An image reference: transport and transport-specific name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// How to fetch it.
    pub(crate) transport: Transport,
    /// Registry name (`quay.io/org/os:tag`), `DIR[:TAG]`, `FILE[:TAG]` or a storage name.
    pub(crate) name: String,
}

impl ImageReference {
    /// Parses a reference as written on the command line.
    pub fn parse(input: &str) -> Result<Self, ImgRefError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ImgRefError::Empty);
        }
        // Origin-file forms.
        if let Some(rest) = input.strip_prefix("ostree-unverified-registry:") {
            return Self::with(Transport::Registry, rest, input);
        }
        if let Some(rest) = input.strip_prefix("ostree-unverified-image:") {
            return Self::parse(rest);
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            return Self::with(Transport::Registry, rest, input);
        }
        let Some((transport, rest)) = input.split_once(':') else {
            return Err(ImgRefError::MissingTransport(input.to_string()));
        };
        let transport = match transport {
            "registry" => Transport::Registry,
            "oci" => Transport::OciDir,
            "oci-archive" => Transport::OciArchive,
            "containers-storage" => Transport::ContainersStorage,
            // `quay.io/foo:tag` or `localhost:5000/foo`: a name without a transport.
            t if t.contains('/')
                || t.contains('.')
                || rest.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                return Err(ImgRefError::MissingTransport(input.to_string()))
            }
            t => {
                return Err(ImgRefError::UnknownTransport {
                    transport: format!("{t}:"),
                    input: input.to_string(),
                })
            }
        };
        Self::with(transport, rest, input)
    }

    /// Parses IMGREF as `bootc switch` and `install --target-imgref` take it: as
    /// upstream, a name without a transport is a registry image (`quay.io/x/os:v2`,
    /// `localhost:5000/os`, `os:latest`); `TRANSPORT:NAME` with a transport we know is
    /// still accepted. With `transport` (`--transport`), IMGREF is a name for that
    /// transport (a repeated prefix of the same transport is accepted).
    pub(crate) fn parse_with_default(
        input: &str,
        transport: Option<&str>,
    ) -> Result<Self, ImgRefError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(ImgRefError::Empty);
        }
        if let Some(t) = transport {
            let t = Transport::from_cli_name(t)?;
            return match Self::parse(input) {
                Ok(r) if r.transport == t => Ok(r),
                _ => Self::with(t, input, input),
            };
        }
        match Self::parse(input) {
            Err(ImgRefError::MissingTransport(_)) => Self::with(Transport::Registry, input, input),
            // `os:latest`: a short registry name with a tag (a tag holds no `/`), not a
            // transport; `oci-archve:/x` stays a misspelt transport.
            Err(ImgRefError::UnknownTransport { .. })
                if input
                    .split_once(':')
                    .is_some_and(|(_, tag)| !tag.is_empty() && !tag.contains('/')) =>
            {
                Self::with(Transport::Registry, input, input)
            }
            r => r,
        }
    }

    fn with(transport: Transport, name: &str, input: &str) -> Result<Self, ImgRefError> {
        let name = match transport {
            Transport::Registry => name.trim_start_matches('/'),
            _ => name,
        };
        if name.is_empty() || name.starts_with(':') {
            return Err(ImgRefError::EmptyName(input.to_string()));
        }
        Ok(ImageReference {
            transport,
            name: name.to_string(),
        })
    }

    /// The string composefs-oci and skopeo take (`docker://…`, `oci:…`).
    pub(crate) fn to_skopeo(&self) -> String {
        format!("{}{}", self.transport.skopeo_prefix(), self.name)
    }

    /// `ostree-unverified-image:<transport>:<name>`, the origin file's form.
    pub fn to_origin(&self) -> String {
        format!("ostree-unverified-image:{}:{}", self.transport, self.name)
    }

    /// For `oci:` and `oci-archive:`, the path and the optional tag.
    pub(crate) fn layout_path_and_tag(&self) -> Option<(&str, Option<&str>)> {
        match self.transport {
            Transport::OciDir | Transport::OciArchive => Some(match self.name.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
                _ => (self.name.as_str(), None),
            }),
            _ => None,
        }
    }

    /// The same image with its tag replaced by `tag` (a digest, `@sha256:…`, is dropped
    /// too): `quay.io/os:v1` → `quay.io/os:TAG`, `oci:/dir:v1` → `oci:/dir:TAG`.
    pub(crate) fn with_tag(&self, tag: &str) -> Result<Self, ImgRefError> {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(ImgRefError::BadTag(tag.to_string()));
        }
        let base = match self.layout_path_and_tag() {
            Some((path, _)) => path,
            None => {
                let name = self.name.split('@').next().unwrap_or_default();
                // A tag is a `:` in the last path component (`host:5000/os` has none).
                let last = name.rfind('/').map_or(0, |i| i + 1);
                match name[last..].rfind(':') {
                    Some(i) => &name[..last + i],
                    None => name,
                }
            }
        };
        Ok(ImageReference {
            transport: self.transport,
            name: format!("{base}:{tag}"),
        })
    }

    /// Makes a relative `oci:`/`oci-archive:` path absolute (so the origin stays valid).
    pub(crate) fn absolutize(&self) -> std::io::Result<Self> {
        let Some((path, tag)) = self.layout_path_and_tag() else {
            return Ok(self.clone());
        };
        if path.starts_with('/') {
            return Ok(self.clone());
        }
        let abs = std::env::current_dir()?.join(path);
        let mut name = abs.to_string_lossy().into_owned();
        if let Some(tag) = tag {
            name.push(':');
            name.push_str(tag);
        }
        Ok(ImageReference {
            transport: self.transport,
            name,
        })
    }
}

/// `TRANSPORT:NAME` with the user-facing transport spelling (`docker://…`).
impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_skopeo())
    }
}

impl FromStr for ImageReference {
    type Err = ImgRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageReference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn transports() {
        let cases = [
            (
                "docker://quay.io/org/os:latest",
                Transport::Registry,
                "quay.io/org/os:latest",
            ),
            (
                "registry:quay.io/org/os:latest",
                Transport::Registry,
                "quay.io/org/os:latest",
            ),
            (
                "registry://127.0.0.1:5000/test:v1",
                Transport::Registry,
                "127.0.0.1:5000/test:v1",
            ),
            (
                "oci:/var/tmp/layout:v1",
                Transport::OciDir,
                "/var/tmp/layout:v1",
            ),
            ("oci:/var/tmp/layout", Transport::OciDir, "/var/tmp/layout"),
            (
                "oci-archive:/tmp/a.tar:v2",
                Transport::OciArchive,
                "/tmp/a.tar:v2",
            ),
            (
                "containers-storage:localhost/os",
                Transport::ContainersStorage,
                "localhost/os",
            ),
            (
                "ostree-unverified-registry:quay.io/x:1",
                Transport::Registry,
                "quay.io/x:1",
            ),
            (
                "ostree-unverified-image:oci:/d:t",
                Transport::OciDir,
                "/d:t",
            ),
            (
                "ostree-unverified-image:registry:q.io/x",
                Transport::Registry,
                "q.io/x",
            ),
            (
                "ostree-unverified-image:docker://q.io/x",
                Transport::Registry,
                "q.io/x",
            ),
            // Extra slashes go whatever the spelling, so the reference reads back
            // from `docker://q.io/x` unchanged (found by the imgref fuzz target).
            ("registry:////q.io/x", Transport::Registry, "q.io/x"),
            ("docker:///q.io/x", Transport::Registry, "q.io/x"),
        ];
        for (input, t, name) in cases {
            let r = p(input);
            assert_eq!(r.transport, t, "{input}");
            assert_eq!(r.name, name, "{input}");
        }
    }

    #[test]
    fn renderings() {
        let r = p("registry:quay.io/org/os:latest");
        assert_eq!(r.to_skopeo(), "docker://quay.io/org/os:latest");
        assert_eq!(
            r.to_origin(),
            "ostree-unverified-image:registry:quay.io/org/os:latest"
        );
        assert_eq!(p(&r.to_origin()), r);
        let o = p("oci:/a/b:v1");
        assert_eq!(o.to_skopeo(), "oci:/a/b:v1");
        assert_eq!(o.to_origin(), "ostree-unverified-image:oci:/a/b:v1");
        assert_eq!(p(&o.to_origin()), o);
        assert_eq!(o.layout_path_and_tag(), Some(("/a/b", Some("v1"))));
        assert_eq!(p("oci:/a/b").layout_path_and_tag(), Some(("/a/b", None)));
    }

    #[test]
    fn relative_layouts_become_absolute() {
        let r = p("oci:layout:v1").absolutize().unwrap();
        assert!(r.name.starts_with('/'));
        assert!(r.name.ends_with("/layout:v1"));
        assert_eq!(p("docker://x/y").absolutize().unwrap(), p("docker://x/y"));
    }

    #[test]
    fn without_a_transport_is_a_registry_image_as_upstream() {
        let d = |s: &str, t: Option<&str>| {
            ImageReference::parse_with_default(s, t).unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        for (input, name) in [
            ("quay.io/x/os:v2", "quay.io/x/os:v2"),
            ("localhost:5000/os", "localhost:5000/os"),
            ("127.0.0.1:5000/os:v1", "127.0.0.1:5000/os:v1"),
            ("os:latest", "os:latest"),
            ("image", "image"),
            ("docker://quay.io/x:1", "quay.io/x:1"),
            ("registry:quay.io/x:1", "quay.io/x:1"),
        ] {
            let r = d(input, None);
            assert_eq!(r.transport, Transport::Registry, "{input}");
            assert_eq!(r.name, name, "{input}");
        }
        // Known transports are still read from IMGREF.
        assert_eq!(d("oci:/srv/os:v2", None), p("oci:/srv/os:v2"));
        assert_eq!(
            d("containers-storage:localhost/os", None),
            p("containers-storage:localhost/os")
        );
        // --transport names the transport of a bare name.
        assert_eq!(
            d("quay.io/x:1", Some("registry")),
            p("docker://quay.io/x:1")
        );
        assert_eq!(d("/srv/os:v2", Some("oci")), p("oci:/srv/os:v2"));
        assert_eq!(d("oci:/srv/os:v2", Some("oci")), p("oci:/srv/os:v2"));
        assert_eq!(d("/a.tar", Some("oci-archive")), p("oci-archive:/a.tar"));
        assert_eq!(d("docker://q.io/x", Some("registry")), p("docker://q.io/x"));
        // Misspelt transports and unknown --transport values are refused.
        let e = ImageReference::parse_with_default("oci-archve:/x.tar", None).unwrap_err();
        assert!(
            e.to_string().contains("unknown transport \"oci-archve:\""),
            "{e}"
        );
        let e = ImageReference::parse_with_default("x", Some("docker-daemon")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown transport \"docker-daemon\" (valid: registry, oci, oci-archive, containers-storage)"
        );
        assert_eq!(
            ImageReference::parse_with_default(" ", None),
            Err(ImgRefError::Empty)
        );
        assert!(matches!(
            ImageReference::parse_with_default("docker://", None),
            Err(ImgRefError::EmptyName(_))
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(ImageReference::parse(""), Err(ImgRefError::Empty));
        let e = ImageReference::parse("ftp://x/y").unwrap_err();
        assert!(
            matches!(&e, ImgRefError::UnknownTransport { transport, .. } if transport == "ftp:")
        );
        let msg = e.to_string();
        for t in [
            "docker://",
            "registry:",
            "oci:",
            "oci-archive:",
            "containers-storage:",
        ] {
            assert!(msg.contains(t), "{msg}");
        }
        assert!(matches!(
            ImageReference::parse("dir:/x"),
            Err(ImgRefError::UnknownTransport { .. })
        ));
        assert!(matches!(
            ImageReference::parse("quay.io/x/y:tag"),
            Err(ImgRefError::MissingTransport(_))
        ));
        assert!(matches!(
            ImageReference::parse("localhost:5000/x"),
            Err(ImgRefError::MissingTransport(_))
        ));
        assert!(matches!(
            ImageReference::parse("image"),
            Err(ImgRefError::MissingTransport(_))
        ));
        assert!(matches!(
            ImageReference::parse("docker://"),
            Err(ImgRefError::EmptyName(_))
        ));
        assert!(matches!(
            ImageReference::parse("oci:"),
            Err(ImgRefError::EmptyName(_))
        ));
        assert!(matches!(
            ImageReference::parse("oci-archive::tag"),
            Err(ImgRefError::EmptyName(_))
        ));
    }

    #[test]
    fn tags_are_replaced() {
        let t = |r: &str, tag: &str| p(r).with_tag(tag).map(|r| r.to_skopeo());
        assert_eq!(
            t("docker://quay.io/org/os:v1", "v2").unwrap(),
            "docker://quay.io/org/os:v2"
        );
        assert_eq!(
            t("docker://quay.io/org/os", "v2").unwrap(),
            "docker://quay.io/org/os:v2"
        );
        assert_eq!(
            t("registry:127.0.0.1:5000/os:v1", "latest").unwrap(),
            "docker://127.0.0.1:5000/os:latest"
        );
        assert_eq!(
            t("docker://127.0.0.1:5000/os", "v2").unwrap(),
            "docker://127.0.0.1:5000/os:v2"
        );
        assert_eq!(
            t(&format!("docker://q.io/os@sha256:{}", "a".repeat(64)), "v2").unwrap(),
            "docker://q.io/os:v2"
        );
        assert_eq!(t("oci:/srv/layout:v1", "v3").unwrap(), "oci:/srv/layout:v3");
        assert_eq!(t("oci:/srv/layout", "v3").unwrap(), "oci:/srv/layout:v3");
        assert_eq!(
            t("oci-archive:/a.tar:v1", "x_1.2-3").unwrap(),
            "oci-archive:/a.tar:x_1.2-3"
        );
        for bad in ["", "-x", ".x", "a/b", "a:b", "a b", &"x".repeat(129)] {
            assert_eq!(
                t("docker://q.io/os:v1", bad),
                Err(ImgRefError::BadTag(bad.to_string())),
                "{bad}"
            );
        }
    }
}
