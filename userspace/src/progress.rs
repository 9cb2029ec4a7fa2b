//! Pull progress: indicatif bars on a terminal, plain lines otherwise, nothing with
//! `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use composefs_oci::{ComponentId, ProgressEvent, ProgressReporter, SharedReporter};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

/// The reporter for this invocation.
pub(crate) fn reporter(quiet: bool) -> Option<SharedReporter> {
    if quiet {
        None
    } else if std::io::stderr().is_terminal() {
        Some(Arc::new(Bars::default()))
    } else {
        Some(Arc::new(Lines::default()))
    }
}

fn short(id: &ComponentId) -> String {
    let s = id.to_string();
    match s.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => s,
    }
}

/// indicatif bars, one per layer.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl ProgressReporter for Bars {
    fn report(&self, event: ProgressEvent) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::Started { id, total, .. } => {
                let bar = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(format!("layer {}", short(&id)));
                bars.insert(id.to_string(), bar);
            }
            ProgressEvent::Progress { id, fetched, total } => {
                if let Some(bar) = bars.get(&id.to_string()) {
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    bar.set_position(fetched);
                }
            }
            ProgressEvent::Skipped { id } => {
                let _ = self
                    .multi
                    .println(format!("layer {}: already present", short(&id)));
            }
            ProgressEvent::Done { id, .. } => {
                if let Some(bar) = bars.remove(&id.to_string()) {
                    bar.finish();
                }
            }
            ProgressEvent::Message(m) => {
                let _ = self.multi.println(m);
            }
            _ => {}
        }
    }
}

/// One line per layer event, for logs and pipes.
#[derive(Default)]
struct Lines {
    totals: Mutex<HashMap<String, Option<u64>>>,
}

impl ProgressReporter for Lines {
    fn report(&self, event: ProgressEvent) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::Started { id, total, .. } => {
                let size = total
                    .map(|t| format!(" ({})", HumanBytes(t)))
                    .unwrap_or_default();
                eprintln!("Fetching layer {}{size}", short(&id));
                totals.insert(id.to_string(), total);
            }
            ProgressEvent::Progress { .. } => {}
            ProgressEvent::Skipped { id } => eprintln!("Layer {}: already present", short(&id)),
            ProgressEvent::Done { id, transferred } => {
                totals.remove(&id.to_string());
                eprintln!("Fetched layer {} ({})", short(&id), HumanBytes(transferred));
            }
            ProgressEvent::Message(m) => eprintln!("{m}"),
            _ => {}
        }
    }
}

/// What `--progress-fd` asks for: JSON lines on this file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProgressFd(pub(crate) u32);

impl std::str::FromStr for ProgressFd {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<u32>() {
            Ok(fd @ 0..=2) => Err(format!("cannot use fd {fd} for progress JSON")),
            Ok(fd) => Ok(ProgressFd(fd)),
            Err(_) => Err(format!("{s:?} is not a file descriptor number")),
        }
    }
}

impl ProgressFd {
    /// Fails when this process has no such open file descriptor.
    pub(crate) fn check(self) -> anyhow::Result<()> {
        let path = format!("/proc/self/fd/{}", self.0);
        std::fs::symlink_metadata(&path)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("file descriptor {} is not open ({path}: {e})", self.0))
    }
}

/// The reporter for a pull of `image`: bars or lines as [`reporter`] gives them, plus
/// JSON lines on `fd` when asked (terminals keep their bars).
pub(crate) fn reporter_for(
    quiet: bool,
    fd: Option<ProgressFd>,
    image: &str,
) -> anyhow::Result<Option<SharedReporter>> {
    let people = reporter(quiet);
    let Some(fd) = fd else {
        return Ok(people);
    };
    let json: SharedReporter = Arc::new(JsonLines::open(fd, image)?);
    Ok(Some(match people {
        Some(p) => Arc::new(Tee(vec![p, json])),
        None => json,
    }))
}

/// Every event to each reporter in turn.
struct Tee(Vec<SharedReporter>);

impl ProgressReporter for Tee {
    fn report(&self, event: ProgressEvent) {
        for r in &self.0 {
            r.report(event.clone());
        }
    }
}

/// The version of upstream bootc's progress protocol these lines follow.
pub(crate) const PROTOCOL_VERSION: &str = "0.1.0";

/// At most this many `Progress`-driven lines per second (starts and ends always get one).
const REFRESH_HZ: u32 = 5;

/// One line of upstream bootc's `--progress-fd` protocol (JSON lines, `type` tagged).
#[derive(Debug, serde::Serialize)]
#[serde(
    tag = "type",
    rename_all = "PascalCase",
    rename_all_fields = "camelCase"
)]
enum Event<'a> {
    /// First line: the protocol version.
    Start { version: &'a str },
    /// The pull: bytes over all layers, layers as steps, the running layers as
    /// subtasks.
    ProgressBytes {
        task: &'a str,
        description: String,
        id: &'a str,
        bytes_cached: u64,
        bytes: u64,
        bytes_total: u64,
        steps_cached: u64,
        steps: u64,
        steps_total: u64,
        subtasks: Vec<SubTaskBytes<'a>>,
    },
}

/// One layer being fetched.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SubTaskBytes<'a> {
    subtask: &'a str,
    description: &'a str,
    id: &'a str,
    bytes_cached: u64,
    bytes: u64,
    bytes_total: u64,
}

/// A layer's progress as the JSON lines sum it up.
#[derive(Debug, Default, Clone, Copy)]
struct LayerState {
    bytes: u64,
    total: u64,
    done: bool,
    cached: bool,
}

struct JsonState {
    out: Option<std::fs::File>,
    layers: std::collections::BTreeMap<String, LayerState>,
    last: Option<std::time::Instant>,
}

/// `--progress-fd`: JSON lines in upstream bootc's shape.
struct JsonLines {
    image: String,
    state: Mutex<JsonState>,
}

impl JsonLines {
    /// Opens fd `fd` of this process again for appending (through /proc, so the
    /// descriptor we were given is neither adopted nor closed) and writes the `Start`
    /// line.
    fn open(fd: ProgressFd, image: &str) -> anyhow::Result<JsonLines> {
        use anyhow::Context;
        let path = format!("/proc/self/fd/{}", fd.0);
        let out = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("--progress-fd {}: opening {path}", fd.0))?;
        let me = JsonLines {
            image: image.to_string(),
            state: Mutex::new(JsonState {
                out: Some(out),
                layers: Default::default(),
                last: None,
            }),
        };
        {
            let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
            write_line(
                &mut st.out,
                &Event::Start {
                    version: PROTOCOL_VERSION,
                },
            );
        }
        Ok(me)
    }

    /// The `ProgressBytes` line of the layers seen so far.
    fn progress_line<'a>(
        &'a self,
        layers: &'a std::collections::BTreeMap<String, LayerState>,
    ) -> Event<'a> {
        let cached: Vec<_> = layers.values().filter(|l| l.cached).collect();
        let fetched: Vec<_> = layers.values().filter(|l| !l.cached).collect();
        Event::ProgressBytes {
            task: "pulling",
            description: format!("Pulling Image: {}", self.image),
            id: &self.image,
            bytes_cached: cached.iter().map(|l| l.total).sum(),
            bytes: fetched.iter().map(|l| l.bytes).sum(),
            bytes_total: fetched.iter().map(|l| l.total).sum(),
            steps_cached: cached.len() as u64,
            steps: fetched.iter().filter(|l| l.done).count() as u64,
            steps_total: fetched.len() as u64,
            subtasks: layers
                .iter()
                .filter(|(_, l)| !l.cached && !l.done)
                .map(|(id, l)| SubTaskBytes {
                    subtask: "layer",
                    description: "Layer",
                    id,
                    bytes_cached: 0,
                    bytes: l.bytes,
                    bytes_total: l.total,
                })
                .collect(),
        }
    }
}

/// Writes one line; after a write error (e.g. the reader went away) the fd is
/// dropped with a warning and the pull goes on.
fn write_line(out: &mut Option<std::fs::File>, event: &Event<'_>) {
    use std::io::Write;
    let Some(file) = out.as_mut() else { return };
    let mut line = match serde_json::to_vec(event) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("--progress-fd: {e}");
            return;
        }
    };
    line.push(b'\n');
    if let Err(e) = file.write_all(&line) {
        tracing::warn!("--progress-fd: {e}; no more progress lines");
        *out = None;
    }
}

impl ProgressReporter for JsonLines {
    fn report(&self, event: ProgressEvent) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        let throttled = match event {
            ProgressEvent::Started { id, total, .. } => {
                let l = st.layers.entry(id.to_string()).or_default();
                l.total = total.unwrap_or(0);
                false
            }
            ProgressEvent::Progress { id, fetched, total } => {
                let l = st.layers.entry(id.to_string()).or_default();
                l.bytes = fetched;
                if let Some(t) = total {
                    l.total = t;
                }
                true
            }
            ProgressEvent::Skipped { id } => {
                let l = st.layers.entry(id.to_string()).or_default();
                l.cached = true;
                l.done = true;
                false
            }
            ProgressEvent::Done { id, transferred } => {
                let l = st.layers.entry(id.to_string()).or_default();
                l.done = true;
                l.bytes = transferred.max(l.bytes);
                l.total = l.total.max(l.bytes);
                false
            }
            _ => return,
        };
        let now = std::time::Instant::now();
        if throttled {
            if let Some(last) = st.last {
                if now.duration_since(last) < std::time::Duration::from_secs(1) / REFRESH_HZ {
                    return;
                }
            }
        }
        st.last = Some(now);
        let line = self.progress_line(&st.layers);
        write_line(&mut st.out, &line);
    }
}
