//! The kernel command line grammar that names the deployment to boot.
//!
//! Accepted forms (docs/architecture.md section 3):
//!
//! * `composefs=[?][sha256:|sha512:]HEX`: without an algorithm prefix the hex length
//!   (64 or 128) decides;
//! * `composefs.digest=[?]v1|v2-sha256|sha512-LG:HEX`, the self-describing form the
//!   composefs crates emit.
//!
//! A leading `?` marks the boot insecure: fs-verity is used where present but not
//! required. Every malformed value, and two tokens naming different deployments, is an
//! error: the booter never guesses. We always write `composefs=sha256:HEX` (or `sha512:`),
//! with `?` in front when insecure.

use std::fmt;
use std::str::FromStr;

/// The kernel argument we write and read.
pub const KARG: &str = "composefs";
/// The self-describing kernel argument the composefs crates write; read only.
pub const KARG_DIGEST: &str = "composefs.digest";

/// The fs-verity hash algorithm of a repository and of its deployment ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// fs-verity with SHA-256 (64 hex digits).
    Sha256,
    /// fs-verity with SHA-512 (128 hex digits).
    Sha512,
}

impl Algorithm {
    /// The name used in `composefs=ALG:HEX` and on the command line of our tools.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The number of hex digits of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(Algorithm::Sha256),
            128 => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = CmdlineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(CmdlineError::UnknownAlgorithm(other.to_string())),
        }
    }
}

/// The composefs hash types behind [`Algorithm`], for [`with_algorithm!`](crate::with_algorithm).
#[doc(hidden)]
pub use composefs::fsverity::{Sha256HashValue, Sha512HashValue};

/// Runs `$body` with the type name `$h` bound to the composefs hash type of the
/// [`Algorithm`] `$alg`: the one place where a runtime algorithm picks a generic
/// instantiation.
///
/// ```ignore
/// with_algorithm!(alg, H => open::<H>(sysroot))
/// ```
#[macro_export]
macro_rules! with_algorithm {
    ($alg:expr, $h:ident => $body:expr) => {
        match $alg {
            $crate::cmdline::Algorithm::Sha256 => {
                type $h = $crate::cmdline::Sha256HashValue;
                $body
            }
            $crate::cmdline::Algorithm::Sha512 => {
                type $h = $crate::cmdline::Sha512HashValue;
                $body
            }
        }
    };
}

#[cfg(test)]
mod dispatch_tests {
    use super::Algorithm;

    #[test]
    fn with_algorithm_picks_the_hash_type() {
        fn hex_len<H: composefs::fsverity::FsVerityHashValue>() -> usize {
            2 * std::mem::size_of::<H>()
        }
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(
                crate::with_algorithm!(alg, H => hex_len::<H>()),
                alg.hex_len()
            );
        }
    }
}

/// Why a `composefs=` value (or the command line as a whole) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// Neither `composefs=` nor `composefs.digest=` is on the command line.
    #[error("no composefs= argument on the kernel command line")]
    Missing,
    /// `composefs=` (or `composefs=?`) with nothing after it.
    #[error("composefs= has an empty digest")]
    Empty,
    /// The hex part has the wrong length for the algorithm (or for any algorithm).
    #[error("composefs digest has {found} hex digits, expected {expected}")]
    WrongLength {
        /// What the algorithm (or the two known lengths) calls for.
        expected: String,
        /// How many characters were given.
        found: usize,
    },
    /// The digest contains something other than hex digits.
    #[error("composefs digest is not hex: {0:?}")]
    NotHex(String),
    /// An algorithm prefix other than `sha256`/`sha512`.
    #[error("unknown composefs digest algorithm {0:?} (expected sha256 or sha512)")]
    UnknownAlgorithm(String),
    /// A `composefs.digest=` value whose descriptor is not `v1|v2-ALG-LG`.
    #[error("malformed composefs.digest= descriptor {0:?} (expected v1-sha256-12:HEX or similar)")]
    BadDescriptor(String),
    /// Two composefs arguments that name different deployments (or differ in `?`).
    #[error("conflicting composefs arguments: {0} and {1}")]
    Conflicting(String, String),
}

/// A deployment id: the fs-verity digest of the deployment's EROFS image.
///
/// The hex is kept in lower case; it is also the file name under
/// `composefs/images/` and `state/deploy/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId {
    algorithm: Algorithm,
    hex: String,
}

impl DeploymentId {
    /// Parses `HEX`, `sha256:HEX` or `sha512:HEX`.
    pub fn parse(value: &str) -> Result<Self, CmdlineError> {
        if value.is_empty() {
            return Err(CmdlineError::Empty);
        }
        let (algorithm, hex) = match value.split_once(':') {
            Some((alg, hex)) => (Some(alg.parse::<Algorithm>()?), hex),
            None => (None, value),
        };
        Self::from_parts(algorithm, hex)
    }

    /// Builds an id from a known algorithm and its hex digest.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, CmdlineError> {
        Self::from_parts(Some(algorithm), hex)
    }

    fn from_parts(algorithm: Option<Algorithm>, hex: &str) -> Result<Self, CmdlineError> {
        if hex.is_empty() {
            return Err(CmdlineError::Empty);
        }
        if let Some(bad) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            let _ = bad;
            return Err(CmdlineError::NotHex(hex.to_string()));
        }
        let algorithm = match algorithm {
            Some(alg) if alg.hex_len() == hex.len() => alg,
            Some(alg) => {
                return Err(CmdlineError::WrongLength {
                    expected: format!("{} for {alg}", alg.hex_len()),
                    found: hex.len(),
                })
            }
            None => Algorithm::from_hex_len(hex.len()).ok_or(CmdlineError::WrongLength {
                expected: "64 (sha256) or 128 (sha512)".into(),
                found: hex.len(),
            })?,
        };
        Ok(DeploymentId {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lower-case hex digest: the image and state directory name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for messages: `sha256:0123456789ab…`.
    pub fn short(&self) -> String {
        format!("{}:{}…", self.algorithm, &self.hex[..12])
    }
}

/// `sha256:HEX`.
impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for DeploymentId {
    type Err = CmdlineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeploymentId::parse(s)
    }
}

/// What the command line says to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposefsKarg {
    /// The deployment (EROFS image digest).
    pub id: DeploymentId,
    /// `?`: do not require fs-verity.
    pub insecure: bool,
}

impl ComposefsKarg {
    /// A secure (`verity=require`) argument for `id`.
    pub fn new(id: DeploymentId, insecure: bool) -> Self {
        ComposefsKarg { id, insecure }
    }

    /// Parses the value of a `composefs=` argument (after the `=`).
    pub fn parse_value(value: &str) -> Result<Self, CmdlineError> {
        let (insecure, rest) = strip_insecure(value);
        Ok(ComposefsKarg {
            id: DeploymentId::parse(rest)?,
            insecure,
        })
    }

    /// Parses the value of a `composefs.digest=` argument: `[?]vN-ALG-LG:HEX`.
    pub fn parse_digest_value(value: &str) -> Result<Self, CmdlineError> {
        let (insecure, rest) = strip_insecure(value);
        if rest.is_empty() {
            return Err(CmdlineError::Empty);
        }
        let (descriptor, hex) = rest
            .split_once(':')
            .ok_or_else(|| CmdlineError::BadDescriptor(rest.to_string()))?;
        let mut parts = descriptor.split('-');
        let (Some(version), Some(alg), Some(lg), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CmdlineError::BadDescriptor(descriptor.to_string()));
        };
        if !matches!(version, "v1" | "v2")
            || lg.is_empty()
            || !lg.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CmdlineError::BadDescriptor(descriptor.to_string()));
        }
        let alg: Algorithm = alg.parse()?;
        Ok(ComposefsKarg {
            id: DeploymentId::new(alg, hex)?,
            insecure,
        })
    }

    /// Finds the composefs argument in a whole kernel command line.
    ///
    /// Every `composefs=` and `composefs.digest=` token is parsed; they must all agree.
    pub fn from_cmdline(cmdline: &str) -> Result<Self, CmdlineError> {
        let mut found: Option<(String, ComposefsKarg)> = None;
        for token in tokenize(cmdline) {
            let parsed = if let Some(v) = token.strip_prefix("composefs=") {
                ComposefsKarg::parse_value(v)?
            } else if let Some(v) = token.strip_prefix("composefs.digest=") {
                ComposefsKarg::parse_digest_value(v)?
            } else {
                continue;
            };
            match &found {
                Some((first, prev)) if *prev != parsed => {
                    return Err(CmdlineError::Conflicting(first.clone(), token.to_string()))
                }
                Some(_) => {}
                None => found = Some((token.to_string(), parsed)),
            }
        }
        found.map(|(_, k)| k).ok_or(CmdlineError::Missing)
    }
}

/// `composefs=sha256:HEX`, or `composefs=?sha256:HEX` when insecure.
impl fmt::Display for ComposefsKarg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = if self.insecure { "?" } else { "" };
        write!(f, "{KARG}={q}{}", self.id)
    }
}

fn strip_insecure(value: &str) -> (bool, &str) {
    match value.strip_prefix('?') {
        Some(rest) => (true, rest),
        None => (false, value),
    }
}

/// Splits a kernel command line into arguments the way the kernel does: on
/// whitespace, except inside double quotes; the quotes themselves are dropped.
pub fn tokenize(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Joins arguments into a command line that [`tokenize`] splits back into the same
/// arguments: an argument holding whitespace (or empty) is quoted the way the kernel
/// reads it, `name="value with spaces"` (or `"word with spaces"` when it has no `=`).
/// An argument that itself holds a `"` cannot be represented; callers refuse those
/// before (bootc's karg checks do).
pub fn join<S: AsRef<str>>(args: &[S]) -> String {
    let mut out = String::new();
    for a in args {
        let a = a.as_ref();
        if !out.is_empty() {
            out.push(' ');
        }
        if !a.is_empty() && !a.chars().any(char::is_whitespace) {
            out.push_str(a);
            continue;
        }
        match a.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.chars().any(char::is_whitespace) => {
                out.push_str(name);
                out.push_str("=\"");
                out.push_str(value);
                out.push('"');
            }
            _ => {
                out.push('"');
                out.push_str(a);
                out.push('"');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn h512() -> String {
        format!("{H256}{H256}")
    }

    #[test]
    fn accepts_every_form() {
        let cases: Vec<(String, Algorithm, bool)> = vec![
            (format!("composefs={H256}"), Algorithm::Sha256, false),
            (format!("composefs=?{H256}"), Algorithm::Sha256, true),
            (format!("composefs=sha256:{H256}"), Algorithm::Sha256, false),
            (format!("composefs=?sha256:{H256}"), Algorithm::Sha256, true),
            (format!("composefs={}", h512()), Algorithm::Sha512, false),
            (
                format!("composefs=?sha512:{}", h512()),
                Algorithm::Sha512,
                true,
            ),
            (
                format!("composefs.digest=v1-sha256-12:{H256}"),
                Algorithm::Sha256,
                false,
            ),
            (
                format!("composefs.digest=?v1-sha256-12:{H256}"),
                Algorithm::Sha256,
                true,
            ),
            (
                format!("composefs.digest=v2-sha512-12:{}", h512()),
                Algorithm::Sha512,
                false,
            ),
        ];
        for (arg, alg, insecure) in cases {
            let line = format!("root=UUID=x rw {arg} quiet");
            let k = ComposefsKarg::from_cmdline(&line).unwrap_or_else(|e| panic!("{arg}: {e}"));
            assert_eq!(k.id.algorithm(), alg, "{arg}");
            assert_eq!(k.insecure, insecure, "{arg}");
            assert_eq!(k.id.hex().len(), alg.hex_len());
        }
    }

    #[test]
    fn upper_case_hex_is_normalised() {
        let k = ComposefsKarg::from_cmdline(&format!("composefs={}", H256.to_uppercase())).unwrap();
        assert_eq!(k.id.hex(), H256);
    }

    /// A command line and the check its error must pass.
    type BadCase = (String, fn(&CmdlineError) -> bool);

    #[test]
    fn rejects_each_bad_case() {
        use CmdlineError::*;
        let bad: Vec<BadCase> = vec![
            ("quiet rw".into(), |e| matches!(e, Missing)),
            ("".into(), |e| matches!(e, Missing)),
            ("composefs=".into(), |e| matches!(e, Empty)),
            ("composefs=?".into(), |e| matches!(e, Empty)),
            ("composefs=sha256:".into(), |e| matches!(e, Empty)),
            (format!("composefs={}", &H256[1..]), |e| {
                matches!(e, WrongLength { found: 63, .. })
            }),
            (format!("composefs=sha512:{H256}"), |e| {
                matches!(e, WrongLength { found: 64, .. })
            }),
            (format!("composefs=sha256:{}", h512()), |e| {
                matches!(e, WrongLength { .. })
            }),
            (format!("composefs={}g", &H256[1..]), |e| {
                matches!(e, NotHex(_))
            }),
            (
                format!("composefs=md5:{H256}"),
                |e| matches!(e, UnknownAlgorithm(a) if a == "md5"),
            ),
            (format!("composefs.digest=v3-sha256-12:{H256}"), |e| {
                matches!(e, BadDescriptor(_))
            }),
            (format!("composefs.digest={H256}"), |e| {
                matches!(e, BadDescriptor(_))
            }),
            (format!("composefs.digest=v1-sha256:{H256}"), |e| {
                matches!(e, BadDescriptor(_))
            }),
            (format!("composefs.digest=v1-blake3-12:{H256}"), |e| {
                matches!(e, UnknownAlgorithm(_))
            }),
            (format!("composefs={H256} composefs={}", h512()), |e| {
                matches!(e, Conflicting(..))
            }),
            (format!("composefs={H256} composefs=?{H256}"), |e| {
                matches!(e, Conflicting(..))
            }),
        ];
        for (line, check) in bad {
            let err = ComposefsKarg::from_cmdline(&line).expect_err(&line);
            assert!(check(&err), "{line:?} gave {err:?}");
            // Every error renders as one line.
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn agreeing_duplicates_are_fine() {
        let line = format!(
            "composefs={H256} composefs=sha256:{H256} composefs.digest=v1-sha256-12:{H256}"
        );
        let k = ComposefsKarg::from_cmdline(&line).unwrap();
        assert!(!k.insecure);
    }

    #[test]
    fn round_trip() {
        for insecure in [false, true] {
            for hex in [H256.to_string(), h512()] {
                let k = ComposefsKarg::new(DeploymentId::parse(&hex).unwrap(), insecure);
                let s = k.to_string();
                let alg = k.id.algorithm();
                let q = if insecure { "?" } else { "" };
                assert_eq!(s, format!("composefs={q}{alg}:{hex}"));
                assert_eq!(ComposefsKarg::from_cmdline(&s).unwrap(), k);
            }
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(
            tokenize(r#"a "b c" d="e f"  g"#),
            vec!["a", "b c", "d=e f", "g"]
        );
        let line = format!(r#"foo="x y" "composefs={H256}""#);
        assert!(ComposefsKarg::from_cmdline(&line).is_ok());
    }

    #[test]
    fn join_quotes_what_tokenize_splits_back() {
        let args = ["a", "b c", "d=e f", "", "g=", "=x y", "quiet"];
        let line = join(&args);
        assert_eq!(line, r#"a "b c" d="e f" "" g= "=x y" quiet"#);
        assert_eq!(tokenize(&line), args);
        assert_eq!(join::<&str>(&[]), "");
    }

    #[test]
    fn never_panics_on_junk() {
        // A cheap deterministic fuzz in addition to the cargo-fuzz target.
        let alphabet = [
            "composefs=",
            "composefs.digest=",
            "?",
            ":",
            "sha256",
            "sha512",
            "v1-",
            "-12",
            "a",
            "Z",
            "0",
            " ",
            "\"",
            "é",
            "\0",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = ComposefsKarg::from_cmdline(&s);
            seed = seed.wrapping_add(1);
        }
    }
}
