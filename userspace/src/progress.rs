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
