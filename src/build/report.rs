//! Progress events. The library reports; the command line draws.
use super::{ImageOutcome, LayerOutcome};

/// Receives progress from a build. Every method has a do-nothing default.
pub trait Reporter: Send + Sync {
    fn image_started(&self, _image: &str) {}
    /// A layer starts being written; `bytes` is its file content size.
    fn layer_started(&self, _image: &str, _layer: usize, _bytes: u64) {}
    fn layer_progress(&self, _image: &str, _layer: usize, _done: u64) {}
    fn layer_finished(&self, _image: &str, _layer: usize, _outcome: &LayerOutcome) {}
    fn image_finished(&self, _image: &str, _outcome: &ImageOutcome) {}
    fn image_failed(&self, _image: &str, _error: &str) {}
    /// The isolation `run:` steps of `image` use.
    fn isolation(&self, _image: &str, _isolation: crate::sandbox::Isolation, _overlay: bool) {}
    /// What the place this build runs in allows (see `sandbox::probe`):
    /// told once, before the first Debian or run layer is made.
    fn probed(&self, _probe: &crate::sandbox::Probe) {}
    /// `image`'s smoke tests start.
    fn testing(&self, _image: &str) {}
    /// A line a `run:` step or a test printed.
    fn step_output(&self, _image: &str, _line: &str) {}
    /// `image`'s Debian packages start downloading: how many are missing
    /// from the cache, and their bytes.
    fn download_started(&self, _image: &str, _packages: usize, _bytes: u64) {}
    /// More of them arrived (bytes since the last call).
    fn download_progress(&self, _image: &str, _bytes: u64) {}
    fn download_finished(&self, _image: &str) {}
    /// Something worth telling that does not fail the build.
    fn warning(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {}
