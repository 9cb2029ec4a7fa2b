//! Reading a Unified Kernel Image (UKI, Boot Loader Specification Type #2): a PE
//! file whose named sections carry the kernel (`.linux`), the initrd (`.initrd`), the
//! kernel command line (`.cmdline`), the os-release (`.osrel`) and the kernel version
//! (`.uname`). A sealed UKI's `.cmdline` names the deployment it boots
//! (`composefs=sha256:<id>`), which is what makes it sealed.
//!
//! The parser reads untrusted bytes (an image author's file): it never panics, and
//! every error is one line saying what is wrong.

use bootc_initramfs_setup::cmdline::{tokenize, CmdlineError, ComposefsKarg, KARG, KARG_DIGEST};
use object::pe::{ImageDosHeader, ImageNtHeaders32, ImageNtHeaders64};
use object::read::pe::{ImageNtHeaders, SectionTable};

/// Why bytes are not a usable UKI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UkiError {
    /// No `MZ` DOS header: not a PE file at all.
    #[error("not a PE file (no MZ header)")]
    NotPe,
    /// The PE headers or section table cannot be read (cut short or corrupt).
    #[error("truncated or malformed PE headers: {0}")]
    BadHeaders(String),
    /// A section's data lies (partly) past the end of the file.
    #[error("truncated PE file: section {name} needs bytes {start}..{end} but the file has {len}")]
    Truncated {
        /// The section.
        name: String,
        /// Its first byte in the file.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        len: usize,
    },
    /// A section this module needs is missing.
    #[error("no {0} section: not a UKI")]
    Missing(&'static str),
    /// A text section is not UTF-8.
    #[error("the {0} section is not UTF-8")]
    NotUtf8(&'static str),
    /// `.cmdline` has more than one composefs argument.
    #[error("the .cmdline section has more than one composefs argument ({0} and {1})")]
    TwoComposefs(String, String),
    /// `.cmdline` has no composefs argument: the UKI is not sealed.
    #[error("the .cmdline section has no {KARG}= argument: the UKI is not sealed to an image")]
    NoComposefs,
    /// The composefs argument does not parse.
    #[error("the .cmdline section's {arg}: {err}")]
    BadComposefs {
        /// The argument as written.
        arg: String,
        /// Why it does not parse.
        err: CmdlineError,
    },
}

/// The sections of a UKI, borrowed from the file's bytes.
#[derive(Debug, Clone)]
pub struct Uki<'a> {
    /// `.cmdline`, trailing NULs and white space removed.
    pub cmdline: String,
    /// `.osrel`, if present.
    pub osrel: Option<String>,
    /// `.uname` (the kernel version), trailing NULs and white space removed, if present.
    pub uname: Option<String>,
    /// `.linux`: the kernel image.
    pub linux: &'a [u8],
    /// `.initrd`, if present (a UKI may carry its initrd elsewhere, e.g. addons).
    pub initrd: Option<&'a [u8]>,
}

impl Uki<'_> {
    /// The one composefs argument of `.cmdline` (`composefs=` or `composefs.digest=`):
    /// an error when there is none or more than one, even if they agree (a sealed UKI
    /// names its image once).
    pub fn composefs(&self) -> Result<ComposefsKarg, UkiError> {
        let mut found: Option<(String, ComposefsKarg)> = None;
        for token in tokenize(&self.cmdline) {
            let parsed = if let Some(v) = token.strip_prefix(&format!("{KARG}=")) {
                ComposefsKarg::parse_value(v)
            } else if let Some(v) = token.strip_prefix(&format!("{KARG_DIGEST}=")) {
                ComposefsKarg::parse_digest_value(v)
            } else {
                continue;
            };
            // Quoted and escaped: a .cmdline is outside input and may hold line breaks.
            let shown = crate::boot::bls::show(&token);
            if let Some((first, _)) = found {
                return Err(UkiError::TwoComposefs(first, shown));
            }
            let karg = parsed.map_err(|err| UkiError::BadComposefs {
                arg: shown.clone(),
                err,
            })?;
            found = Some((shown, karg));
        }
        found.map(|(_, k)| k).ok_or(UkiError::NoComposefs)
    }
}

/// Parses a UKI: a PE file (PE32+ or PE32) with at least `.linux` and `.cmdline`.
/// When a section name appears more than once (multi-profile UKIs), the first one
/// counts: it is the base profile's.
pub fn parse(data: &[u8]) -> Result<Uki<'_>, UkiError> {
    if !data.starts_with(b"MZ") {
        return Err(UkiError::NotPe);
    }
    let sections = section_table(data)?;
    let section = |name: &'static str| section(data, &sections, name);
    let text = |name: &'static str| text(data, &sections, name);
    let linux = section(".linux")?.ok_or(UkiError::Missing(".linux"))?;
    let cmdline = text(".cmdline")?.ok_or(UkiError::Missing(".cmdline"))?;
    Ok(Uki {
        cmdline,
        osrel: text(".osrel")?,
        uname: text(".uname")?,
        linux,
        initrd: section(".initrd")?,
    })
}

/// The `.cmdline` of a UKI addon (a PE file that carries no kernel), if it has one.
pub fn addon_cmdline(data: &[u8]) -> Result<Option<String>, UkiError> {
    if !data.starts_with(b"MZ") {
        return Err(UkiError::NotPe);
    }
    let sections = section_table(data)?;
    text(data, &sections, ".cmdline")
}

/// The data of section `name` (the first of that name), if present.
fn section<'a>(
    data: &'a [u8],
    sections: &SectionTable<'a>,
    name: &'static str,
) -> Result<Option<&'a [u8]>, UkiError> {
    let Some(s) = sections.iter().find(|s| s.raw_name() == name.as_bytes()) else {
        return Ok(None);
    };
    let (offset, size) = s.pe_file_range();
    let (start, end) = (u64::from(offset), u64::from(offset) + u64::from(size));
    // Both fit in u64; on a 32-bit host a range past usize::MAX is past the end too.
    let range =
        usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX);
    match data.get(range) {
        Some(bytes) => Ok(Some(bytes)),
        None => Err(UkiError::Truncated {
            name: name.to_string(),
            start,
            end,
            len: data.len(),
        }),
    }
}

/// Section `name` as text, trailing NULs and white space removed, if present.
fn text(
    data: &[u8],
    sections: &SectionTable<'_>,
    name: &'static str,
) -> Result<Option<String>, UkiError> {
    match section(data, sections, name)? {
        None => Ok(None),
        Some(bytes) => {
            let s = std::str::from_utf8(bytes).map_err(|_| UkiError::NotUtf8(name))?;
            Ok(Some(
                s.trim_end_matches(['\0', ' ', '\n', '\t', '\r'])
                    .to_string(),
            ))
        }
    }
}

/// The section table, whichever PE flavour (PE32+ first: every UKI for x86-64 and
/// arm64 is one).
fn section_table(data: &[u8]) -> Result<SectionTable<'_>, UkiError> {
    fn with<'a, Pe: ImageNtHeaders>(data: &'a [u8]) -> object::Result<SectionTable<'a>> {
        let dos = ImageDosHeader::parse(data)?;
        let mut offset = u64::from(dos.nt_headers_offset());
        let (nt, _) = Pe::parse(data, &mut offset)?;
        nt.sections(data, offset)
    }
    with::<ImageNtHeaders64>(data)
        .or_else(|e64| with::<ImageNtHeaders32>(data).map_err(|_| e64))
        .map_err(|e| UkiError::BadHeaders(e.to_string()))
}

/// Reads and parses the UKI at `path`; errors name the file. The caller keeps the
/// bytes (`buf`), which the returned [`Uki`] borrows.
pub fn read<'a>(path: &std::path::Path, buf: &'a mut Vec<u8>) -> anyhow::Result<Uki<'a>> {
    use anyhow::Context;
    *buf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(buf).with_context(|| format!("{} is not a usable UKI", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ file with the given sections (name, data), laid out the way
    /// ukify does: headers, then each section's raw data, 512-byte aligned.
    pub(crate) fn tiny_pe(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let n = sections.len();
        let pe_off = 0x40usize;
        let opt_size = 240usize; // PE32+ optional header with 16 data directories
        let sec_table = pe_off + 4 + 20 + opt_size;
        let headers_end = (sec_table + 40 * n).div_ceil(512) * 512;
        let mut out = vec![0u8; headers_end];
        out[0..2].copy_from_slice(b"MZ");
        out[0x3c..0x40].copy_from_slice(&(pe_off as u32).to_le_bytes());
        out[pe_off..pe_off + 4].copy_from_slice(b"PE\0\0");
        let coff = pe_off + 4;
        out[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        out[coff + 2..coff + 4].copy_from_slice(&(n as u16).to_le_bytes());
        out[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
        out[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
        let opt = coff + 20;
        out[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        out[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // section align
        out[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // file align
        out[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let mut va = 0x1000u32;
        for (i, (name, data)) in sections.iter().enumerate() {
            let raw = out.len();
            let raw_size = data.len().div_ceil(512) * 512;
            out.extend_from_slice(data);
            out.resize(raw + raw_size, 0);
            let h = sec_table + 40 * i;
            let mut nm = [0u8; 8];
            nm[..name.len()].copy_from_slice(name.as_bytes());
            out[h..h + 8].copy_from_slice(&nm);
            out[h + 8..h + 12].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out[h + 12..h + 16].copy_from_slice(&va.to_le_bytes());
            out[h + 16..h + 20].copy_from_slice(&(raw_size as u32).to_le_bytes());
            out[h + 20..h + 24].copy_from_slice(&(raw as u32).to_le_bytes());
            out[h + 36..h + 40].copy_from_slice(&0x4000_0040u32.to_le_bytes());
            va += (data.len() as u32).div_ceil(0x1000).max(1) * 0x1000;
        }
        out
    }

    const ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sealed(cmdline: &str) -> Vec<u8> {
        tiny_pe(&[
            (".osrel", b"ID=test\nVERSION_ID=1\n"),
            (".cmdline", format!("{cmdline}\0").as_bytes()),
            (".uname", b"6.12.0-test\n"),
            (".linux", b"KERNEL"),
            (".initrd", b"INITRD"),
        ])
    }

    #[test]
    fn reads_every_section() {
        let data = sealed(&format!("quiet composefs={ID}"));
        let uki = parse(&data).unwrap();
        assert_eq!(uki.cmdline, format!("quiet composefs={ID}"));
        assert_eq!(uki.osrel.as_deref(), Some("ID=test\nVERSION_ID=1"));
        assert_eq!(uki.uname.as_deref(), Some("6.12.0-test"));
        assert_eq!(uki.linux, b"KERNEL");
        assert_eq!(uki.initrd, Some(&b"INITRD"[..]));
        let k = uki.composefs().unwrap();
        assert_eq!(k.id.to_string(), ID);
        assert!(!k.insecure);
        let data = sealed(&format!("composefs=?{ID}"));
        assert!(parse(&data).unwrap().composefs().unwrap().insecure);
    }

    #[test]
    fn malformed_files_give_one_line_errors() {
        let good = sealed(&format!("composefs={ID}"));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\x7fELF".to_vec(), "not a PE file"),
            (vec![], "not a PE file"),
            (good[..0x50].to_vec(), "truncated or malformed PE headers"),
            (
                good[..good.len() - 600].to_vec(),
                "truncated PE file: section",
            ),
            (
                tiny_pe(&[(".linux", b"K"), (".osrel", b"ID=x")]),
                "no .cmdline section",
            ),
            (tiny_pe(&[(".cmdline", b"x")]), "no .linux section"),
            (
                tiny_pe(&[(".linux", b"K"), (".cmdline", b"\xff\xfe")]),
                ".cmdline section is not UTF-8",
            ),
        ];
        for (data, want) in cases {
            let e = parse(&data).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "two-line error {e:?}");
        }
        // Every prefix of a good file is refused cleanly (or, past the last section
        // used, still parses); none panics.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
    }

    /// A UKI as systemd's ukify builds it (stub, kernel, initrd, command line,
    /// os-release, uname), read back section by section.
    #[test]
    fn reads_a_uki_built_by_ukify() {
        let ukify = std::path::Path::new("/usr/lib/systemd/ukify");
        let python = std::path::Path::new("/usr/bin/python3");
        let usable = ukify.is_file()
            && std::process::Command::new(python)
                .args(["-c", "import pefile"])
                .status()
                .is_ok_and(|s| s.success());
        if !usable {
            bootc_test_fixtures::skip::skip("ukify (systemd) or python3-pefile is not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let linux = bootc_test_fixtures::images::pseudo_random(40_000, 7);
        let initrd = bootc_test_fixtures::images::pseudo_random(3_000, 8);
        std::fs::write(t.path().join("vmlinuz"), &linux).unwrap();
        std::fs::write(t.path().join("initrd"), &initrd).unwrap();
        let out = t.path().join("uki.efi");
        let cmdline = format!("console=ttyS0 composefs=?{ID}");
        let st = std::process::Command::new(python)
            .arg(ukify)
            .arg("build")
            .arg("--linux")
            .arg(t.path().join("vmlinuz"))
            .arg("--initrd")
            .arg(t.path().join("initrd"))
            .args(["--cmdline", &cmdline])
            .args(["--os-release", "ID=ukitest\nVERSION_ID=3\n"])
            .args(["--uname", "6.1.0-uki"])
            .arg("--output")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "ukify build failed: {st}");
        let mut buf = vec![];
        let uki = read(&out, &mut buf).unwrap();
        assert_eq!(uki.cmdline, cmdline);
        assert_eq!(uki.uname.as_deref(), Some("6.1.0-uki"));
        assert!(uki.osrel.as_deref().unwrap().contains("ID=ukitest"));
        assert_eq!(uki.linux, linux.as_slice());
        assert!(uki.initrd.unwrap().ends_with(&initrd));
        let k = uki.composefs().unwrap();
        assert_eq!((k.id.to_string().as_str(), k.insecure), (ID, true));

        // Cut anywhere, a real UKI gives an error (or, cut in trailing padding, still
        // parses), never a panic; cut inside .linux, the error says truncated.
        let data = std::fs::read(&out).unwrap();
        for n in (0..data.len()).step_by(997) {
            if let Err(e) = parse(&data[..n]) {
                assert!(!e.to_string().contains('\n'));
            }
        }
        let at = data.len() / 2;
        let e = parse(&data[..at]).unwrap_err().to_string();
        assert!(e.starts_with("truncated PE file: section"), "{e}");
    }

    #[test]
    fn composefs_argument_rules() {
        let two = sealed(&format!("composefs={ID} rw composefs={ID}"));
        let e = parse(&two).unwrap().composefs().unwrap_err();
        assert!(matches!(e, UkiError::TwoComposefs(..)), "{e}");
        let mixed = sealed(&format!("composefs={ID} composefs.digest=v2-sha256-12:0"));
        assert!(matches!(
            parse(&mixed).unwrap().composefs().unwrap_err(),
            UkiError::TwoComposefs(..)
        ));
        // Found by the uki_pe fuzz target: the argument is shown escaped, on one line.
        let odd = sealed("composefs=\u{1}\u{b}\u{c}x");
        let e = parse(&odd).unwrap().composefs().unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        let none = sealed("quiet rw");
        assert_eq!(
            parse(&none).unwrap().composefs().unwrap_err(),
            UkiError::NoComposefs
        );
        let bad = sealed("composefs=sha256:xyz");
        let e = parse(&bad).unwrap().composefs().unwrap_err().to_string();
        assert!(
            e.starts_with("the .cmdline section's \"composefs=sha256:xyz\":"),
            "{e}"
        );
    }
}
