//! Runs the plan: keys, reuse, layer writing, image assembly, in parallel.
//!
//! A file layer's key is the hash of what goes into its tar (see
//! `layer::Entries::key`), never of its parent, so a new parent re-points a
//! client image without rebuilding its layers. An image's key adds the
//! parent's manifest digest and the config.
//!
//! One concern per file, each an `impl Session` block: `schedule` (order,
//! threads, registry parents), `layers` (file layers), `steps` (run layers
//! and tests), `assemble` (one image from its layers), `debian` (package
//! layers and the lock), `plan` (what a build would do); `stamp` reads the
//! provenance stamp from the environment.
mod assemble;
pub mod debian;
pub mod deliver;
pub mod evidence;
mod fetch;
mod follow;
mod ids;
mod layers;
pub mod plan;
mod records;
pub mod remote;
pub mod report;
mod run;
mod schedule;
mod stamp;
mod steps;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::layer::{LayerCompression, LayerError};
use crate::oci::image::{ImageRecord, LayerDesc, OciError, Stamp};
use crate::spec::Spec;
use crate::store::{Store, StoreError};

pub use ids::{Accounts, OwnerError, OwnerFinding, check_owners};
pub use records::{ParentRecord, StoredRef};
pub use report::{Reporter, Silent};
pub use run::RunError;
pub use stamp::{StampError, revision_from_env, stamp_from_env, strip_credentials};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("image {image}, layer {layer} ({src}): {source}")]
    Layer {
        image: String,
        layer: usize,
        src: String,
        source: LayerError,
    },
    #[error(
        "{file}:{line}:{column}: image {image}: owner `{owner}`: {why}\n  hint: use numeric ids (33:33), or add the account to the parent image"
    )]
    Owner {
        file: String,
        line: usize,
        column: usize,
        image: String,
        owner: String,
        why: OwnerError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image}: run: {source}")]
    Run { image: String, source: RunError },
    #[error("image {image}: run: {source}")]
    Sandbox {
        image: String,
        source: crate::sandbox::SandboxError,
    },
    #[error("image {image}: run: materialising the image: {source}")]
    Materialise {
        image: String,
        source: crate::layer::unpack::UnpackError,
    },
    #[error(
        "image {image}: run: `network: none` needs namespace or userns isolation, and only chroot is possible here; remove `network: none` to build here with the host's network"
    )]
    NoNetworkOnChroot { image: String },
    #[error(
        "image {image}: its {what} layer is not built here, as it would differ from the same layer built elsewhere: {}",
        lacks.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("; ")
    )]
    Lacking {
        image: String,
        what: &'static str,
        lacks: Vec<crate::sandbox::Lack>,
    },
    #[error("image {image}: debian: {source}")]
    Debian {
        image: String,
        // Boxed: some of the archive's errors are large, and every result
        // of the build carries this enum.
        source: Box<debian::DebianError>,
    },
    #[error("image {image}: `{command}` failed with exit status {code}{}", if output.is_empty() { String::new() } else { format!("; its last output:\n{output}") })]
    Step {
        image: String,
        command: String,
        code: i32,
        output: String,
    },
    #[error("image {image}: test `{command}` failed with exit status {code}{}", if output.is_empty() { String::new() } else { format!("; its last output:\n{output}") })]
    Test {
        image: String,
        command: String,
        code: i32,
        output: String,
    },
    #[error("image {image}: {reference}: this command does not reach registries")]
    Offline {
        image: String,
        reference: Box<crate::registry::Reference>,
    },
    // Boxed: a BuildError travels in every Result of the build.
    #[error("image {image}: {source}")]
    Pull {
        image: String,
        reference: Box<crate::registry::Reference>,
        source: Box<remote::RemoteError>,
    },
    #[error("image {image} was not built because {parent}, which it is built from, failed")]
    ParentFailed { image: String, parent: String },
    #[error(
        "image {image}: the layer {digest} (found in the registry cache by {found_by}) could not be fetched: {reason}\n  hint: check that the cache repository still holds it, or build without --cache-repo"
    )]
    CacheFetch {
        image: String,
        digest: String,
        found_by: String,
        reason: String,
    },
    #[error("no image named `{name}` in {file}{}", hint.as_ref().map(|h| format!("; did you mean `{h}`?")).unwrap_or_default())]
    UnknownImage {
        name: String,
        file: String,
        hint: Option<String>,
    },
}

/// How layers are made and stamped.
#[derive(Debug, Clone)]
pub struct Options {
    /// How layers are compressed, unless an image's `compression:` says.
    pub compression: LayerCompression,
    /// Compression threads per layer.
    pub threads: usize,
    /// Images built at once.
    pub jobs: usize,
    pub stamp: Stamp,
    /// How `run:` steps are isolated.
    pub isolation: crate::sandbox::Request,
    /// Run `test:` even when this image passed them before.
    pub force_tests: bool,
    /// Debian packages only as images.lock pins them (CI): a missing or
    /// stale lock is an error.
    pub locked: bool,
}

/// A layer as built or reused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub desc: LayerDesc,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    pub key: String,
    pub digest: String,
    pub size: u64,
    /// True when written by this build, false when reused.
    pub built: bool,
    /// True when reused from the shared (registry) cache.
    pub fetched: bool,
    pub seconds: f64,
    /// For a run or Debian layer built now: seconds to make the writable
    /// tree (`prepare`), run the steps or dpkg (`steps`), find what they
    /// changed (`snapshot`) and write the layer (`write`); a Debian layer
    /// also says how long choosing (`resolve`) and fetching (`download`)
    /// its packages took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<f64>,
    pub prepare: f64,
    pub steps: f64,
    pub snapshot: f64,
    pub write: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageOutcome {
    pub name: String,
    pub key: String,
    pub manifest: String,
    /// True when this build assembled the image, false when reused.
    pub assembled: bool,
    pub layers: Vec<LayerOutcome>,
    #[serde(skip)]
    pub record: ImageRecord,
}

/// The last build of an image, kept per graph: what `inspect` shows, what
/// `plan` compares with, and gc's roots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefRecord {
    pub key: String,
    pub layer_keys: Vec<String>,
    pub image: ImageRecord,
}

/// Images still to build, and the results so far.
#[derive(Default)]
struct Queue {
    /// Images whose parent is done (or is not built here), in build order.
    ready: std::collections::VecDeque<String>,
    /// Images waiting for a parent of this build, by parent.
    waiting: HashMap<String, Vec<String>>,
    /// Images picked and not yet finished.
    running: usize,
    done: HashMap<String, Result<ImageOutcome, BuildError>>,
}

/// Brings registry parents into the store; the caller owns the network.
pub trait Puller: Sync {
    /// The image `reference` names, with every blob in the store.
    fn pull(
        &self,
        reference: &crate::registry::Reference,
    ) -> Result<ImageRecord, remote::RemoteError>;
}

/// A layer cache shared between machines (a registry repository).
pub trait LayerCache: Sync {
    /// The layer with `key` as the cache records it, its blob not fetched;
    /// None on a miss.
    fn lookup(&self, key: &str) -> Result<Option<LayerRecord>, remote::RemoteError>;
    /// Brings the blob of the layer `lookup` found under `key` into the
    /// store, checked against its digest.
    fn fetch(&self, key: &str, desc: &LayerDesc) -> Result<(), remote::RemoteError>;
    /// Shares a layer this build wrote.
    fn put(&self, key: &str, record: &LayerRecord) -> Result<(), remote::RemoteError>;
}

/// One images.yaml, one store, one set of options.
pub struct Session<'a> {
    pub store: &'a Store,
    pub spec: &'a Spec,
    pub opts: &'a Options,
    pub graph: String,
    pub puller: Option<&'a dyn Puller>,
    pub cache: Option<&'a dyn LayerCache>,
    /// One writer per layer key: images built side by side often share a
    /// layer (two Moodle releases, one config tree).
    writing: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    probe: std::sync::OnceLock<crate::sandbox::Probe>,
    /// Whether the reporter heard what the probe found.
    told: std::sync::atomic::AtomicBool,
    /// Whether steps can run on an overlay, probed once.
    overlay: std::sync::OnceLock<bool>,
    /// Debian indexes read in this build.
    archives: debian::Archives,
    /// Image records read back, by key.
    records: records::Memo,
    /// Cache layers' blobs still coming.
    fetches: fetch::Fetches,
    /// Record each written layer's SBOM facts as it is written (an SBOM
    /// is to be made of this build's images).
    layer_facts: bool,
}
