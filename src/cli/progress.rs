//! Draws build progress on stderr: bars on a terminal, lines otherwise.
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use imgbuild::build::{ImageOutcome, LayerOutcome, Reporter};

pub struct Progress {
    quiet: bool,
    bars: Option<MultiProgress>,
    layers: Mutex<HashMap<(String, usize), ProgressBar>>,
    started: Mutex<HashMap<String, Instant>>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && std::env::var_os(imgbuild::env::CI).is_none();
        let bars =
            (!quiet && tty).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            quiet,
            bars,
            layers: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

/// A bar counting bytes, its prefix saying what.
fn bytes_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

impl Reporter for Progress {
    fn image_started(&self, image: &str) {
        if let Ok(mut s) = self.started.lock() {
            s.insert(image.to_string(), Instant::now());
        }
    }

    fn layer_started(&self, image: &str, layer: usize, bytes: u64) {
        match &self.bars {
            Some(m) => {
                let bar = m.add(bytes_bar(bytes));
                bar.set_prefix(format!("{image} layer {layer}"));
                if let Ok(mut l) = self.layers.lock() {
                    l.insert((image.to_string(), layer), bar);
                }
            }
            None => self.line(format!("{image}: writing layer {layer} ({})", mib(bytes))),
        }
    }

    fn layer_progress(&self, image: &str, layer: usize, done: u64) {
        if let Ok(l) = self.layers.lock()
            && let Some(bar) = l.get(&(image.to_string(), layer))
        {
            bar.set_position(done);
        }
    }

    fn layer_finished(&self, image: &str, layer: usize, outcome: &LayerOutcome) {
        if let Ok(mut l) = self.layers.lock()
            && let Some(bar) = l.remove(&(image.to_string(), layer))
        {
            bar.finish_and_clear();
        }
        let what = match (outcome.built, outcome.fetched) {
            (true, _) => "built",
            (false, true) => "fetched from the cache",
            (false, false) => "reused",
        };
        self.line(format!(
            "{image}: layer {layer} {what} {} ({}, {:.2} s)",
            short(&outcome.digest),
            mib(outcome.size),
            outcome.seconds
        ));
    }

    fn image_finished(&self, image: &str, outcome: &ImageOutcome) {
        let secs = self
            .started
            .lock()
            .ok()
            .and_then(|s| s.get(image).map(|t| t.elapsed().as_secs_f64()))
            .unwrap_or_default();
        let what = if outcome.assembled {
            "built"
        } else {
            "up to date"
        };
        self.line(format!(
            "{image}: {what} {} ({secs:.2} s)",
            short(&outcome.manifest)
        ));
    }

    fn download_started(&self, image: &str, packages: usize, bytes: u64) {
        match &self.bars {
            Some(m) => {
                let bar = m.add(bytes_bar(bytes));
                bar.set_prefix(format!("{image} {packages} .debs"));
                if let Ok(mut l) = self.layers.lock() {
                    l.insert((image.to_string(), usize::MAX), bar);
                }
            }
            None => self.line(format!(
                "{image}: downloading {packages} Debian packages ({})",
                mib(bytes)
            )),
        }
    }

    fn download_progress(&self, image: &str, bytes: u64) {
        if let Ok(l) = self.layers.lock()
            && let Some(bar) = l.get(&(image.to_string(), usize::MAX))
        {
            bar.inc(bytes);
        }
    }

    fn download_finished(&self, image: &str) {
        if let Ok(mut l) = self.layers.lock()
            && let Some(bar) = l.remove(&(image.to_string(), usize::MAX))
        {
            bar.finish_and_clear();
        }
    }

    fn image_failed(&self, image: &str, error: &str) {
        self.line(format!("{image}: FAILED: {error}"));
    }

    fn isolation(&self, image: &str, isolation: imgbuild::sandbox::Isolation, overlay: bool) {
        let tree = if overlay {
            "on an overlay"
        } else {
            "in a copy"
        };
        self.line(format!(
            "{image}: running steps with {isolation} isolation, {tree}"
        ));
    }

    fn probed(&self, probe: &imgbuild::sandbox::Probe) {
        self.line(probe.summary());
    }

    fn testing(&self, image: &str) {
        self.line(format!("{image}: running its tests"));
    }

    fn step_output(&self, image: &str, line: &str) {
        self.line(format!("{image} | {line}"));
    }

    fn warning(&self, message: &str) {
        // Warnings show even with -q.
        match &self.bars {
            Some(m) => {
                let _ = m.println(format!("warning: {message}"));
            }
            None => eprintln!("warning: {message}"),
        }
    }
}

/// "sha256:0123456789ab…" for humans.
pub fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}
