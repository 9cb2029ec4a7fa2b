//! One QEMU guest: TCG, q35, OVMF, virtio disks, the serial console
//! logged to a file, and a root shell on the virtio-serial port `org.bootc.test.shell`
//! (the test image's `bootc-test-shell.service`).
//!
//! The harness only ever kills the QEMU process it started (by its own `Child`), also when
//! a `Vm` is dropped on an error path.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// OVMF from Debian's `ovmf` package (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The template of the UEFI variable store; each run gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF with Secure Boot (built with SMM, which QEMU must then emulate).
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd";
/// Variables with Secure Boot on: PK, KEK and db hold Debian's snakeoil certificate
/// (`/usr/share/ovmf/PkKek-1-snakeoil.pem`, the key beside it).
pub const OVMF_VARS_SECURE: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";

/// Console lines that mean the boot has failed for good: waiting longer is pointless.
pub const FATAL_CONSOLE: &[&str] = &[
    "Kernel panic",
    "You are in emergency mode",
    "Entering emergency mode",
    "Cannot open access to console",
    "Reached target emergency.target",
    "Reached target Emergency Mode",
    // GRUB gave up on its menu: the rescue shell, or the command line it offers when
    // no menu could be read.
    "grub rescue>",
    "Minimal BASH-like line editing is supported",
];

/// How the guest firmware starts the OS.
#[derive(Debug, Clone)]
pub enum Boot {
    /// UEFI (OVMF) from the first disk: systemd-boot and its BLS entries.
    /// `vars` is this disk's own copy of the variable store.
    Uefi { vars: PathBuf },
    /// UEFI with Secure Boot enforced ([`OVMF_CODE_SECURE`], `vars` a copy of
    /// [`OVMF_VARS_SECURE`]): only binaries signed with the snakeoil key start.
    UefiSecure { vars: PathBuf },
}

/// A virtio disk.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub readonly: bool,
}

impl Disk {
    pub fn rw(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readonly: false,
        }
    }
    pub fn ro(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readonly: true,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Short label for logs and the console file name.
    pub label: String,
    /// Directory for the console log and the shell socket.
    pub dir: PathBuf,
    /// Disks in order: /dev/vda, /dev/vdb, …
    pub disks: Vec<Disk>,
    pub boot: Boot,
    pub memory_mib: u32,
    /// Serial console on this terminal (human use) instead of a log file.
    pub interactive: bool,
}

/// Copies the OVMF variable template for one disk.
pub fn fresh_vars(path: &Path) -> Result<()> {
    fs::copy(OVMF_VARS, path)
        .with_context(|| format!("copying {OVMF_VARS} (apt-get install ovmf)"))?;
    Ok(())
}

/// Copies the Secure Boot variable template ([`OVMF_VARS_SECURE`]) for one disk.
pub fn fresh_secure_vars(path: &Path) -> Result<()> {
    fs::copy(OVMF_VARS_SECURE, path)
        .with_context(|| format!("copying {OVMF_VARS_SECURE} (apt-get install ovmf)"))?;
    Ok(())
}

/// A running guest.
pub struct Vm {
    pub label: String,
    child: Child,
    pub console: PathBuf,
    sock: PathBuf,
    shell: Option<UnixStream>,
    buf: Vec<u8>,
    seq: u64,
    pub started: Instant,
    /// Console bytes before the current boot (checks only look at this boot's part).
    console_from: usize,
}

fn qemu_args(cfg: &VmConfig, console: &Path, sock: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-accel".into(),
        "tcg".into(),
        "-machine".into(),
        match cfg.boot {
            Boot::Uefi { .. } => "q35".into(),
            Boot::UefiSecure { .. } => "q35,smm=on".into(),
        },
        "-cpu".into(),
        "max".into(),
        "-smp".into(),
        "2".into(),
        "-m".into(),
        cfg.memory_mib.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
    ];
    if cfg.interactive {
        a.extend(["-nographic".into(), "-serial".into(), "mon:stdio".into()]);
    } else {
        a.extend([
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", console.display()),
        ]);
    }
    match &cfg.boot {
        Boot::Uefi { vars } => {
            a.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        }
        Boot::UefiSecure { vars } => {
            a.extend([
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECURE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]);
        }
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        a.extend([
            "-drive".into(),
            format!(
                "if=none,id=disk{i},format=raw,file={}{}",
                d.path.display(),
                if d.readonly {
                    ",readonly=on"
                } else {
                    ",cache=unsafe"
                }
            ),
            "-device".into(),
            format!(
                "virtio-blk-pci,drive=disk{i}{}",
                if i == 0 { ",bootindex=1" } else { "" }
            ),
        ]);
    }
    // The harness shell port; not for a human at the console (without a host-side
    // reader the guest shell would just restart over and over).
    if !cfg.interactive {
        a.extend([
            "-device".into(),
            "virtio-serial-pci".into(),
            "-chardev".into(),
            format!("socket,id=shell,path={},server=on,wait=off", sock.display()),
            "-device".into(),
            "virtserialport,chardev=shell,name=org.bootc.test.shell".into(),
        ]);
    }
    a.extend(["-device".into(), "virtio-rng-pci".into()]);
    a
}

impl Vm {
    /// Starts QEMU. The console log is `<dir>/console-<label>.log`.
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        fs::create_dir_all(&cfg.dir)?;
        let console = cfg.dir.join(format!("console-{}.log", cfg.label));
        let sock = cfg.dir.join(format!("shell-{}.sock", cfg.label));
        let _ = fs::remove_file(&sock);
        let args = qemu_args(cfg, &console, &sock);
        eprintln!("[{}] qemu-system-x86_64 {}", cfg.label, args.join(" "));
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(&args);
        if !cfg.interactive {
            cmd.stdin(Stdio::null());
            let err = fs::File::create(cfg.dir.join(format!("qemu-{}.stderr", cfg.label)))?;
            cmd.stdout(err.try_clone()?).stderr(err);
        }
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        Ok(Vm {
            label: cfg.label.clone(),
            child,
            console,
            sock,
            shell: None,
            buf: vec![],
            seq: 0,
            started: Instant::now(),
            console_from: 0,
        })
    }

    /// The console log of the current boot so far.
    pub fn console_text(&self) -> String {
        fs::read(&self.console)
            .map(|b| {
                String::from_utf8_lossy(b.get(self.console_from..).unwrap_or(&[])).into_owned()
            })
            .unwrap_or_default()
    }

    /// Reboots the guest (`systemctl reboot`, same QEMU) and waits for its shell again.
    pub fn reboot(&mut self, timeout: Duration) -> Result<Duration> {
        if !self.connect()? {
            bail!("[{}] the guest shell socket is gone", self.label);
        }
        self.shell
            .as_mut()
            .unwrap()
            .write_all(b"systemctl reboot\n")
            .context("writing to the guest shell")?;
        self.wait_restart(timeout)?;
        self.wait_shell(timeout)
    }

    /// Runs `script`, which ends this userspace (`systemctl soft-reboot`), and waits for
    /// the guest shell of the next userspace on the same kernel. Its output goes to the
    /// console, then `bootc-vm-soft: exited <status>`; a non-zero status fails at once,
    /// and so does a restart of the machine (a real reboot). The old userspace is told
    /// from the new one by a file on the guest's `/tmp`, a tmpfs each userspace mounts
    /// afresh. Returns the time from the script's start to the new shell.
    pub fn soft_reboot(&mut self, script: &str, timeout: Duration) -> Result<Duration> {
        const OLD: &str = "/tmp/.bootc-vm-old-userspace";
        const EXITED: &str = "bootc-vm-soft: exited ";
        self.ok(&format!("touch {OLD}"))?;
        let from = fs::read(&self.console).map(|b| b.len()).unwrap_or(0);
        let line = format!(
            "{{ bash -c \"$(echo {} | base64 -d)\" </dev/null; echo \"{EXITED}$?\"; }} >/dev/console 2>&1\n",
            base64(script.as_bytes())
        );
        self.shell
            .as_mut()
            .context("the guest shell is not connected")?
            .write_all(line.as_bytes())
            .context("writing to the guest shell")?;
        let t = Instant::now();
        let deadline = t + timeout;
        let mut last_ping = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                bail!("[{}] QEMU exited ({st}) during the soft reboot", self.label);
            }
            let text = fs::read(&self.console).unwrap_or_default();
            let text = String::from_utf8_lossy(text.get(from..).unwrap_or(&[])).into_owned();
            if text.contains("reboot: Restarting system") {
                bail!("[{}] the machine restarted: not a soft reboot", self.label);
            }
            if let Some(i) = text.find(EXITED) {
                let rc = text[i + EXITED.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if rc != "0" {
                    bail!(
                        "[{}] the soft reboot command exited {rc}:\n{}",
                        self.label,
                        &text[..i]
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "[{}] timeout ({timeout:?}) waiting for the soft-rebooted userspace; console: {}",
                    self.label,
                    self.console.display()
                );
            }
            if self.ping(
                &mut last_ping,
                |n| format!("test -e {OLD} || echo __SOFT_{n}__"),
                "__SOFT_",
            )? {
                let took = t.elapsed();
                eprintln!(
                    "[{}] soft-rebooted userspace up after {:.1} s",
                    self.label,
                    took.as_secs_f64()
                );
                return Ok(took);
            }
        }
    }

    /// Waits until the current boot ends in a restart (the kernel's `reboot: Restarting
    /// system` on the console; QEMU keeps running and the firmware starts again), then
    /// makes the next boot the current one. Returns the time from the start of the boot
    /// that ended to its restart.
    pub fn wait_restart(&mut self, timeout: Duration) -> Result<Duration> {
        const MARK: &[u8] = b"reboot: Restarting system";
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read(&self.console).unwrap_or_default();
            let new = text.get(self.console_from..).unwrap_or(&[]);
            if let Some(i) = new.windows(MARK.len()).position(|w| w == MARK) {
                let took = self.started.elapsed();
                self.console_from += i + MARK.len();
                self.buf.clear();
                self.started = Instant::now();
                return Ok(took);
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("[{}] QEMU exited ({st}) instead of rebooting", self.label);
            }
            if Instant::now() > deadline {
                bail!(
                    "[{}] the guest did not restart within {timeout:?}",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Fails when QEMU has exited or the console shows a fatal boot failure.
    fn check_alive(&mut self, what: &str) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!(
                "[{}] QEMU exited ({st}) while {what}; console: {}",
                self.label,
                self.console.display()
            );
        }
        let text = self.console_text();
        if let Some(p) = FATAL_CONSOLE.iter().find(|p| text.contains(*p)) {
            bail!(
                "[{}] boot failed while {what}: console shows {p:?}{}",
                self.label,
                initramfs_message(&text)
                    .map(|m| format!("; {m}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Waits until the console log contains one of `patterns` (returns it) or QEMU exits.
    pub fn wait_console(&mut self, patterns: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(p) = patterns.iter().find(|p| text.contains(*p)) {
                return Ok(p.to_string());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "[{}] QEMU exited ({st}) before the console showed any of {patterns:?}",
                    self.label
                );
            }
            if Instant::now() > deadline {
                bail!("[{}] timeout ({timeout:?}) waiting for the console to show any of {patterns:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn read_some(&mut self) -> Result<()> {
        let s = self.shell.as_mut().expect("connected");
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => {
                // The guest side closed (shell restarting): reconnect later.
                self.shell = None;
                std::thread::sleep(Duration::from_millis(300));
            }
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the guest shell"),
        }
        Ok(())
    }

    fn connect(&mut self) -> Result<bool> {
        if self.shell.is_some() {
            return Ok(true);
        }
        match UnixStream::connect(&self.sock) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_millis(500)))?;
                s.set_write_timeout(Some(Duration::from_secs(10)))?;
                self.shell = Some(s);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// One step of waiting for a guest shell: connects (or waits half a second when the
    /// port is not up yet), sends `line(n)` with a fresh sequence number at most every
    /// 3 s, reads what came, and says whether `marker` arrived (the buffer is then
    /// cleared).
    fn ping(
        &mut self,
        last_ping: &mut Instant,
        line: impl Fn(u64) -> String,
        marker: &str,
    ) -> Result<bool> {
        if !self.connect()? {
            std::thread::sleep(Duration::from_millis(500));
            return Ok(false);
        }
        if last_ping.elapsed() > Duration::from_secs(3) {
            self.seq += 1;
            let text = format!("{}\n", line(self.seq));
            if let Some(s) = self.shell.as_mut() {
                let _ = s.write_all(text.as_bytes());
            }
            *last_ping = Instant::now();
        }
        self.read_some()?;
        if String::from_utf8_lossy(&self.buf).contains(marker) {
            self.buf.clear();
            return Ok(true);
        }
        Ok(false)
    }

    /// Waits for the guest's root shell (i.e. multi-user reached and the harness port
    /// up). Fails early on a fatal console message or when QEMU exits.
    pub fn wait_shell(&mut self, timeout: Duration) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        let mut last_ping = Instant::now() - Duration::from_secs(10);
        loop {
            self.check_alive("waiting for the guest shell")?;
            if Instant::now() > deadline {
                bail!(
                    "[{}] timeout ({timeout:?}) waiting for the guest shell; console: {}",
                    self.label,
                    self.console.display()
                );
            }
            if self.ping(&mut last_ping, |n| format!("echo __PING_{n}__"), "__PING_")? {
                let t = self.started.elapsed();
                eprintln!(
                    "[{}] guest shell up after {:.1} s",
                    self.label,
                    t.as_secs_f64()
                );
                return Ok(t);
            }
        }
    }

    /// Runs a shell command in the guest (bash, stdin /dev/null, stderr merged) and
    /// returns its exit status and output.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        self.seq += 1;
        let n = self.seq;
        let begin = format!("__BEGIN_{n}__\n");
        let end = format!("__END_{n}__ rc=");
        let b64 = base64(script.as_bytes());
        let line = format!("echo __BEGIN_{n}__; bash -c \"$(echo {b64} | base64 -d)\" </dev/null 2>&1; echo \"__END_{n}__ rc=$?\"\n");
        if !self.connect()? {
            bail!("[{}] the guest shell socket is gone", self.label);
        }
        self.shell
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .context("writing to the guest shell")?;
        let deadline = Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(b) = text.find(&begin) {
                let rest = &text[b + begin.len()..];
                if let Some(e) = rest.find(&end) {
                    let out = rest[..e].to_string();
                    let tail = &rest[e + end.len()..];
                    if let Some(nl) = tail.find('\n') {
                        let rc: i32 = tail[..nl].trim().parse().unwrap_or(-1);
                        self.buf.clear();
                        return Ok((rc, out));
                    }
                }
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "[{}] QEMU exited ({st}) while running {script:?}",
                    self.label
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "[{}] timeout ({timeout:?}) running {script:?}; output so far: {text}",
                    self.label
                );
            }
            if self.shell.is_none() {
                bail!(
                    "[{}] the guest shell went away while running {script:?}",
                    self.label
                );
            }
            self.read_some()?;
        }
    }

    /// Runs a command that must succeed; returns its output.
    pub fn ok(&mut self, script: &str) -> Result<String> {
        self.ok_within(script, Duration::from_secs(120))
    }

    /// [`Vm::ok`] with its own timeout.
    pub fn ok_within(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(script, timeout)?;
        if rc != 0 {
            bail!(
                "[{}] `{script}` exited {rc}: {}",
                self.label,
                out.trim_end()
            );
        }
        Ok(out)
    }

    /// Powers the guest off cleanly and waits for QEMU to exit.
    pub fn poweroff(mut self, timeout: Duration) -> Result<()> {
        if self.connect()? {
            let _ = self
                .shell
                .as_mut()
                .unwrap()
                .write_all(b"systemctl poweroff\n");
        }
        self.wait_exit(timeout)
    }

    /// A power cut during the shutdown: starts `systemctl poweroff`, waits until the
    /// console shows `marker` (printed by the guest at the point to cut at, which then
    /// blocks), and SIGKILLs QEMU there: whatever the guest had not written to its
    /// virtual disk is lost. Fails when QEMU exits (a clean power-off) or `timeout`
    /// passes before the marker shows. Returns the console log of the boot.
    pub fn poweroff_cut(mut self, marker: &str, timeout: Duration) -> Result<String> {
        if !self.connect()? {
            bail!("[{}] the guest shell socket is gone", self.label);
        }
        self.shell
            .as_mut()
            .unwrap()
            .write_all(b"systemctl poweroff\n")
            .context("writing to the guest shell")?;
        self.wait_console(&[marker], timeout)?;
        // Our own QEMU, by its Child handle: SIGKILL, no flush, no clean exit.
        self.child.kill().context("killing QEMU")?;
        self.child.wait()?;
        eprintln!(
            "[{}] power cut (QEMU killed) {:.1} s after its start, at {marker:?}",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
        Ok(self.console_text())
    }

    /// Waits for QEMU to exit on its own (guest power-off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                eprintln!(
                    "[{}] QEMU exited ({st}) after {:.1} s",
                    self.label,
                    self.started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!(
            "[{}] guest did not power off within {timeout:?}",
            self.label
        )
    }

    /// Waits for QEMU to exit when the serial console is the user's terminal.
    pub fn wait_forever(&mut self) -> Result<()> {
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Only our own QEMU, by its Child handle.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.sock);
    }
}

/// The first `bootc-initramfs-setup: …` line of a console log, if any.
pub fn initramfs_message(console: &str) -> Option<String> {
    console
        .lines()
        .filter_map(|l| {
            l.find("bootc-initramfs-setup: ")
                .map(|i| l[i..].trim_end().to_string())
        })
        .next()
}

/// Standard base64 (the guest decodes commands with coreutils `base64 -d`).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_coreutils() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"echo \"$x\"\n"), "ZWNobyAiJHgiCg==");
    }

    #[test]
    fn finds_the_initramfs_message() {
        let log = "[  OK  ] x\r\n[   3.1] bootc-initramfs-setup[212]: bootc-initramfs-setup: parsing composefs=: bad\r\nmore\n";
        assert_eq!(
            initramfs_message(log).as_deref(),
            Some("bootc-initramfs-setup: parsing composefs=: bad")
        );
        assert_eq!(initramfs_message("nothing"), None);
    }

    #[test]
    fn qemu_uses_tcg_and_our_port() {
        let cfg = VmConfig {
            label: "t".into(),
            dir: "/tmp/x".into(),
            disks: vec![Disk::rw("/tmp/x/disk.img"), Disk::ro("/tmp/x/oci.img")],
            boot: Boot::Uefi {
                vars: "/tmp/x/vars.fd".into(),
            },
            memory_mib: 2048,
            interactive: false,
        };
        let a = qemu_args(&cfg, Path::new("/tmp/x/c.log"), Path::new("/tmp/x/s.sock")).join(" ");
        assert!(a.contains("-accel tcg -machine q35 -cpu max -smp 2 -m 2048"));
        assert!(a.contains("file=/tmp/x/oci.img,readonly=on"));
        assert!(a.contains("name=org.bootc.test.shell"));
        assert!(a.contains("-serial file:/tmp/x/c.log"));
    }
}
