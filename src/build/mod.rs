//! Runs the plan: keys, reuse, layer writing, image assembly, in parallel.
//!
//! A file layer's key is the hash of what goes into its tar (see
//! `layer::Entries::key`), never of its parent, so a new parent re-points a
//! client image without rebuilding its layers. An image's key adds the
//! parent's manifest digest and the config.
pub mod debian;
mod follow;
mod ids;
pub mod plan;
pub mod report;
mod run;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::layer::scan::{EtcFiles, Found};
use crate::layer::statcache::StatCache;
use crate::layer::{self, Compression, Entries, EntryKind, Ids, LayerError};
use crate::oci::digest::sha256_hex;
use crate::oci::image::{self, Base, ImageRecord, LayerDesc, NewLayer, OciError, Stamp, hex_of};
use crate::spec::{Image, LayerSpec, Parent, Spec};
use crate::store::{Kind, Store, StoreError};

pub use ids::Accounts;
pub use report::{Reporter, Silent};

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
        why: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image}: run: {reason}")]
    Run { image: String, reason: String },
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
    #[error("image {image}: {reason}")]
    Pull {
        image: String,
        reference: String,
        reason: String,
    },
    #[error("image {image} was not built because {parent}, which it is built from, failed")]
    ParentFailed { image: String, parent: String },
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
    pub compression: Compression,
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
type Queue = Mutex<(
    Vec<String>,
    HashMap<String, Result<ImageOutcome, BuildError>>,
)>;

/// Brings registry parents into the store; the caller owns the network.
pub trait Puller: Sync {
    /// The image `reference` names, with every blob in the store.
    fn pull(&self, reference: &str) -> Result<ImageRecord, String>;
}

/// A layer cache shared between machines (a registry repository).
pub trait LayerCache: Sync {
    /// The layer with `key`, its blob brought into the store; None on a miss.
    fn get(&self, key: &str) -> Result<Option<LayerRecord>, String>;
    /// Shares a layer this build wrote.
    fn put(&self, key: &str, record: &LayerRecord) -> Result<(), String>;
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
    abilities: std::sync::OnceLock<crate::sandbox::Abilities>,
    /// Whether steps can run on an overlay, probed once.
    overlay: std::sync::OnceLock<bool>,
    /// Debian indexes read in this build.
    archives: debian::Archives,
}

impl<'a> Session<'a> {
    pub fn new(store: &'a Store, spec: &'a Spec, opts: &'a Options) -> Session<'a> {
        Session {
            store,
            spec,
            opts,
            graph: crate::store::graph_id(&spec.file_abs()),
            puller: None,
            cache: None,
            writing: Mutex::new(HashMap::new()),
            abilities: std::sync::OnceLock::new(),
            overlay: std::sync::OnceLock::new(),
            archives: debian::Archives::default(),
        }
    }

    /// The same session, sharing layers through `cache`.
    pub fn with_cache(mut self, cache: &'a dyn LayerCache) -> Session<'a> {
        self.cache = Some(cache);
        self
    }

    /// The same session, able to pull `from:` registry references.
    pub fn with_puller(mut self, puller: &'a dyn Puller) -> Session<'a> {
        self.puller = Some(puller);
        self
    }

    /// `names` and everything they are built from, parents first.
    pub fn closure(&self, names: &[String]) -> Result<Vec<String>, BuildError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let mut chain = Vec::new();
            let mut cur = Some(self.image(name)?);
            while let Some(img) = cur {
                if !seen.insert(img.name.clone()) {
                    break;
                }
                chain.push(img.name.clone());
                cur = match &img.parent {
                    Parent::Image(p) => Some(self.image(p)?),
                    Parent::Scratch | Parent::Registry(_) => None,
                };
            }
            order.extend(chain.into_iter().rev());
        }
        // Parents first overall: a stable sort by depth keeps that.
        let depth = |n: &String| self.depth(n);
        order.sort_by_key(depth);
        Ok(order)
    }

    fn depth(&self, name: &str) -> usize {
        let mut d = 0;
        let mut cur = self.spec.image(name);
        while let Some(Parent::Image(p)) = cur.map(|i| &i.parent) {
            d += 1;
            cur = self.spec.image(p);
        }
        d
    }

    pub fn image(&self, name: &str) -> Result<&'a Image, BuildError> {
        self.spec
            .image(name)
            .ok_or_else(|| BuildError::UnknownImage {
                name: name.to_string(),
                file: self.spec.file.display().to_string(),
                hint: crate::suggest::closest(name, self.spec.images.keys().map(String::as_str))
                    .map(str::to_string),
            })
    }

    /// Resolves a layer's owner against the parent's accounts.
    fn ids(
        &self,
        image: &Image,
        layer: &LayerSpec,
        accounts: &Accounts,
    ) -> Result<Ids, BuildError> {
        match &layer.owner {
            None => Ok(Ids::default()),
            Some(owner) => accounts.resolve(owner).map_err(|why| BuildError::Owner {
                file: self.spec.file.display().to_string(),
                line: layer.pos.line,
                column: layer.pos.col,
                image: image.name.clone(),
                owner: owner.to_string(),
                why,
            }),
        }
    }

    /// Walks a layer's source into entries and its key.
    fn walk(
        &self,
        image: &Image,
        index: usize,
        layer: &LayerSpec,
        ids: Ids,
    ) -> Result<(Entries, String), BuildError> {
        let cache_path = self.store.statcache_path(&layer.src);
        let mut cache = StatCache::load(&cache_path);
        if layer.import {
            // The tarball's hash decides; it is unpacked only to be written.
            let err = |source| BuildError::Layer {
                image: image.name.clone(),
                layer: index,
                src: layer.src_text.clone(),
                source,
            };
            let meta = std::fs::metadata(&layer.src).map_err(|e| {
                err(layer::LayerError::Io {
                    path: layer.src.clone(),
                    source: e,
                })
            })?;
            let hash = cache.hash(&layer.src, &meta).map_err(|e| {
                err(layer::LayerError::Io {
                    path: layer.src.clone(),
                    source: e,
                })
            })?;
            let _ = cache.save(&cache_path);
            let input = serde_json::json!({
                "v": 1,
                "import": hash,
                "compression": self.opts.compression.to_string(),
                "epoch": self.opts.stamp.epoch,
            });
            return Ok((
                Entries(Vec::new()),
                sha256_hex(&image::canonical_json(&input)),
            ));
        }
        let entries =
            layer::walk_with(layer, ids, &mut cache, self.opts.threads).map_err(|source| {
                BuildError::Layer {
                    image: image.name.clone(),
                    layer: index,
                    src: layer.src_text.clone(),
                    source,
                }
            })?;
        if cache.may_be_stale() {
            let seen: HashSet<&str> = entries
                .0
                .iter()
                .filter_map(|e| match &e.kind {
                    EntryKind::File { src, .. } => src.to_str(),
                    _ => None,
                })
                .collect();
            cache.retain_under(&layer.src, &seen);
        }
        // A cache that cannot be saved only costs time on the next build.
        let _ = cache.save(&cache_path);
        let key = entries.key(self.opts.compression, self.opts.stamp.epoch);
        Ok((entries, key))
    }

    /// A reusable layer: its record, if its blob is still there.
    fn cached_layer(&self, key: &str) -> Result<Option<LayerRecord>, BuildError> {
        Ok(self
            .store
            .get::<LayerRecord>(Kind::Layers, key)?
            .filter(|r| self.store.blob_size(&hex_of(&r.desc.digest)) == Some(r.desc.size)))
    }

    /// A layer from the shared cache, recorded in the local store. A cache
    /// that cannot be reached costs a rebuild, not the build.
    fn remote_layer(
        &self,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<LayerRecord>, BuildError> {
        let Some(cache) = self.cache else {
            return Ok(None);
        };
        match cache.get(key) {
            Ok(Some(record)) => {
                self.store.put(Kind::Layers, key, &record)?;
                Ok(Some(record))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                reporter.warning(&format!("layer cache: {e}; building instead"));
                Ok(None)
            }
        }
    }

    fn cached_image(&self, key: &str) -> Result<Option<ImageRecord>, BuildError> {
        Ok(self
            .store
            .get::<ImageRecord>(Kind::Images, key)?
            .filter(|r| r.blobs().iter().all(|b| self.store.has_blob(b))))
    }

    /// The image key: parent manifest, layer keys, config and stamp.
    fn image_key(
        &self,
        image: &Image,
        parent: Option<&ImageRecord>,
        layer_keys: &[String],
    ) -> String {
        let input = serde_json::json!({
            "v": 1,
            "parent": parent.map(|p| p.manifest.clone()),
            "parent_name": match &image.parent {
                Parent::Image(p) => Some(p.clone()),
                Parent::Registry(r) => Some(r.to_string()),
                Parent::Scratch => None,
            },
            "layers": layer_keys,
            "config": image.config,
            "stamp": self.opts.stamp,
        });
        sha256_hex(&image::canonical_json(&input))
    }

    fn write_layer(
        &self,
        image: &Image,
        index: usize,
        layer: &LayerSpec,
        entries: &Entries,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<LayerRecord, BuildError> {
        if layer.import {
            let work = self.store.temp_dir("import-")?;
            let entries = layer::import::entries(&layer.src, work.path(), self.opts.threads)
                .map_err(|source| BuildError::Layer {
                    image: image.name.clone(),
                    layer: index,
                    src: layer.src_text.clone(),
                    source,
                })?;
            let created_by = format!("imgbuild: import {}", layer.src_text);
            return self.write_entries(
                image,
                index,
                &layer.src_text,
                &entries,
                key,
                created_by,
                reporter,
            );
        }
        let created_by = format!("imgbuild: copy {} {}", layer.src_text, layer.dest);
        self.write_entries(
            image,
            index,
            &layer.src_text,
            entries,
            key,
            created_by,
            reporter,
        )
    }

    /// Writes entries as a layer blob and records it under `key`.
    #[allow(clippy::too_many_arguments)]
    fn write_entries(
        &self,
        image: &Image,
        index: usize,
        what: &str,
        entries: &Entries,
        key: &str,
        created_by: String,
        reporter: &dyn Reporter,
    ) -> Result<LayerRecord, BuildError> {
        let epoch = self.opts.stamp.epoch;
        self.write_entries_at(
            image, index, what, entries, key, created_by, epoch, reporter, None,
        )
    }

    /// [`Self::write_entries`] with every mtime `epoch`. With `follow`
    /// (started over `below`'s tree), the tree of `below` plus this layer is
    /// made as the layer is written and kept in the store.
    #[allow(clippy::too_many_arguments)]
    fn write_entries_at(
        &self,
        image: &Image,
        index: usize,
        what: &str,
        entries: &Entries,
        key: &str,
        created_by: String,
        epoch: i64,
        reporter: &dyn Reporter,
        follow: Option<(follow::Follow, &[LayerDesc])>,
    ) -> Result<LayerRecord, BuildError> {
        let layer_err = |source| BuildError::Layer {
            image: image.name.clone(),
            layer: index,
            src: what.to_string(),
            source,
        };
        reporter.layer_started(&image.name, index, entries.content_bytes());
        let tmp = self.store.temp_file()?;
        let (mut follow, below) = match follow {
            Some((f, below)) => (Some(f), below),
            None => (None, &[][..]),
        };
        let (tmp, blob) = layer::write_blob_with_copy(
            entries,
            epoch,
            self.opts.compression,
            self.opts.threads,
            tmp,
            &mut |done| reporter.layer_progress(&image.name, index, done),
            follow.as_mut().map(|f| f.writer()),
        )
        .map_err(layer_err)?;
        self.store.commit_blob(tmp, &hex_of(&blob.digest))?;
        if let Some(f) = follow {
            let mut hexes: Vec<String> = below.iter().map(|l| hex_of(&l.digest)).collect();
            hexes.push(hex_of(&blob.digest));
            if let Err(e) = f.finish(&self.store.root().join("rootfs"), &hexes) {
                // Only a cache: the next user unpacks the chain instead.
                reporter.warning(&format!(
                    "{}: layer {index}'s tree not kept ({e}); it is unpacked when next needed",
                    image.name
                ));
            }
        }
        ids::remember(self.store, &blob.digest, etc_files(entries)?)?;
        let record = LayerRecord {
            desc: LayerDesc {
                digest: blob.digest,
                diff_id: blob.diff_id,
                size: blob.size,
                media_type: self.opts.compression.media_type().to_string(),
            },
            created_by,
        };
        self.store.put(Kind::Entries, key, entries)?;
        self.store.put(Kind::Layers, key, &record)?;
        Ok(record)
    }

    /// Runs the image's steps over the image so far, and writes what they
    /// changed as a layer.
    fn run_steps(
        &self,
        image: &Image,
        index: usize,
        below: &[LayerDesc],
        context: &run::Context,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<(LayerRecord, Phases), BuildError> {
        let isolation = self.isolation()?;
        let mut phases = Phases::default();
        let mut clock = Instant::now();
        let mut lap = || {
            let t = clock.elapsed().as_secs_f64();
            clock = Instant::now();
            t
        };
        let network = image.network == crate::spec::Network::Host;
        if !network && isolation == crate::sandbox::Isolation::Chroot {
            return Err(BuildError::Run {
                image: image.name.clone(),
                reason: "`network: none` needs namespace or userns isolation, and only chroot is possible here; remove `network: none` to build here with the host's network".into(),
            });
        }
        let scratch = self.scratch(&image.name, "run-", below, isolation)?;
        let follow = self.follow(&image.name, scratch.lower(), reporter);
        let run_err = |reason: String| BuildError::Run {
            image: image.name.clone(),
            reason,
        };
        let owner = match &context.user {
            Some(u) => crate::sandbox::resolve_user(scratch.lower(), u).unwrap_or((0, 0)),
            None => (0, 0),
        };
        let secrets = run::Secrets::prepare(&image.secrets, &self.store.root().join("tmp"), owner)
            .map_err(run_err)?;
        scratch.ready().map_err(run_err)?;
        phases.prepare = lap();
        reporter.isolation(&image.name, isolation, scratch.is_overlay());
        for command in &image.run {
            let tail = run::Tail::default();
            let step = scratch.step(command, context, network, &secrets);
            let code = crate::sandbox::run(&step, isolation, &|_, line| {
                let line = secrets.redact(line);
                reporter.step_output(&image.name, &line);
                tail.push(&line);
            })
            .map_err(|e| BuildError::Run {
                image: image.name.clone(),
                reason: e.to_string(),
            })?;
            if code != 0 {
                return Err(BuildError::Step {
                    image: image.name.clone(),
                    command: command.clone(),
                    code,
                    output: tail.text(),
                });
            }
        }
        phases.steps = lap();
        let (entries, _report) =
            scratch
                .snapshot(isolation, self.opts.threads)
                .map_err(|source| BuildError::Layer {
                    image: image.name.clone(),
                    layer: index,
                    src: "run".into(),
                    source,
                })?;
        phases.snapshot = lap();
        let created_by = format!("imgbuild: run {}", image.run.join(" && "));
        let record = self.write_entries_at(
            image,
            index,
            "run",
            &entries,
            key,
            created_by,
            self.opts.stamp.epoch,
            reporter,
            follow.map(|f| (f, below)),
        )?;
        phases.write = lap();
        Ok((record, phases))
    }

    /// What `image`'s steps run with over `below` (the parent's layers and
    /// the image's file layers), and their layer's key.
    fn run_key(
        &self,
        image: &Image,
        parent: Option<&ImageRecord>,
        below: &[LayerDesc],
    ) -> Result<(run::Context, String), BuildError> {
        let parent_config = match parent {
            Some(rec) => Some(image::parse_config(
                &self.store.read_blob(&hex_of(&rec.config))?,
                &format!("config of {}", rec.manifest),
            )?),
            None => None,
        };
        let context = run::Context::new(parent_config.as_ref(), &image.config);
        let extra = run::KeyExtra::of(image).map_err(|reason| BuildError::Run {
            image: image.name.clone(),
            reason,
        })?;
        let key = run::key(
            below,
            &image.run,
            &context,
            self.opts.compression,
            self.opts.stamp.epoch,
            &extra,
        );
        Ok((context, key))
    }

    /// The root filesystem of `layers`, unpacked once per chain of layers
    /// and kept in the store for later builds. Nothing runs in it: steps
    /// get a [`run::Scratch`] over it.
    fn rootfs(&self, image: &str, layers: &[LayerDesc]) -> Result<PathBuf, BuildError> {
        let opts = layer::unpack::UnpackOptions::for_current_user();
        let hexes: Vec<String> = layers.iter().map(|l| hex_of(&l.digest)).collect();
        let chain = follow::chain_id(&opts, &hexes);
        let dir = self.store.root().join("rootfs");
        let done = dir.join(&chain);
        if done.is_dir() {
            return Ok(done);
        }
        let err = |reason: String| BuildError::Run {
            image: image.to_string(),
            reason,
        };
        let tmp = self.store.root().join("tmp");
        let work = self.store.temp_dir("rootfs-")?;
        let root = work.path().join("rootfs");
        let blobs: Vec<(PathBuf, String)> = layers
            .iter()
            .zip(&hexes)
            .map(|(l, hex)| (self.store.blob_path(hex), l.media_type.clone()))
            .collect();
        layer::unpack::unpack_image(&blobs, &root, &opts)
            .map_err(|e| err(format!("materialising the image: {e}")))?;
        follow::keep(&dir, &tmp, &root, &opts, &hexes)
    }

    /// The layer cached under `key`, else the one `build` makes now, with
    /// how long its phases took.
    fn cached_or(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<(LayerRecord, Phases), BuildError>,
    ) -> Result<(LayerRecord, Option<Phases>), BuildError> {
        match self.cached_layer(key)? {
            Some(r) => Ok((r, None)),
            None => build().map(|(r, p)| (r, Some(p))),
        }
    }

    /// Starts making the tree of `lower` plus the layer about to be built
    /// (see [`follow`]); None, with a warning, where that cannot start.
    fn follow(
        &self,
        image: &str,
        lower: &std::path::Path,
        reporter: &dyn Reporter,
    ) -> Option<follow::Follow> {
        follow::Follow::start(&self.store.root().join("tmp"), lower)
            .map_err(|e| reporter.warning(&format!("{image}: {e}")))
            .ok()
    }

    /// A writable view of `layers`' root filesystem for steps to change:
    /// an overlay where the sandbox can mount one, else a copy.
    fn scratch(
        &self,
        image: &str,
        prefix: &str,
        layers: &[LayerDesc],
        isolation: crate::sandbox::Isolation,
    ) -> Result<run::Scratch, BuildError> {
        let lower = self.rootfs(image, layers)?;
        let tmp = self.store.root().join("tmp");
        let overlay = *self.overlay.get_or_init(|| {
            // Probing mounts a throw-away overlay (a tenth of a second);
            // the answer holds for this kernel and store.
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let dev =
                std::fs::metadata(&tmp).map_or(0, |m| std::os::unix::fs::MetadataExt::dev(&m));
            let key = sha256_hex(format!("overlay {isolation} {} {dev}", kernel.trim()).as_bytes());
            if let Ok(Some(known)) = self.store.get::<bool>(Kind::Meta, &key) {
                return known;
            }
            let works = crate::sandbox::overlay_works(isolation, &tmp);
            let _ = self.store.put(Kind::Meta, &key, &works);
            works
        });
        run::Scratch::new(&tmp, prefix, lower, overlay).map_err(|reason| BuildError::Run {
            image: image.to_string(),
            reason,
        })
    }

    /// Runs `commands` one after the other in a throw-away root filesystem
    /// of `record`, with the image's own env, workdir and user. Each line of
    /// output goes to `line`; the first failure's command and exit code, or
    /// None when all succeed.
    pub fn run_in_image(
        &self,
        name: &str,
        record: &ImageRecord,
        commands: &[String],
        line: &(dyn Fn(crate::sandbox::Stream, &str) + Sync),
    ) -> Result<Option<(String, i32)>, BuildError> {
        let isolation = self.isolation()?;
        let scratch = self.scratch(name, "test-", &record.layers, isolation)?;
        scratch.ready().map_err(|reason| BuildError::Run {
            image: name.to_string(),
            reason,
        })?;
        let config = image::parse_config(
            &self.store.read_blob(&hex_of(&record.config))?,
            &format!("config of {}", record.manifest),
        )?;
        let context = run::Context::new(Some(&config), &crate::spec::ConfigSpec::default());
        for command in commands {
            let step = scratch.step(command, &context, true, &run::Secrets::none());
            let code =
                crate::sandbox::run(&step, isolation, line).map_err(|e| BuildError::Run {
                    image: name.to_string(),
                    reason: e.to_string(),
                })?;
            if code != 0 {
                return Ok(Some((command.clone(), code)));
            }
        }
        Ok(None)
    }

    /// Runs an image's `test:` unless this image passed these tests before.
    fn smoke_test(
        &self,
        image: &Image,
        record: &ImageRecord,
        reporter: &dyn Reporter,
    ) -> Result<(), BuildError> {
        let key = sha256_hex(format!("{}\n{}", record.manifest, image.test.join("\n")).as_bytes());
        if !self.opts.force_tests
            && self
                .store
                .get::<serde_json::Value>(Kind::Tested, &key)?
                .is_some()
        {
            return Ok(());
        }
        reporter.testing(&image.name);
        let tail = run::Tail::default();
        let failed = self.run_in_image(&image.name, record, &image.test, &|_, l| {
            reporter.step_output(&image.name, l);
            tail.push(l);
        })?;
        match failed {
            Some((command, code)) => Err(BuildError::Test {
                image: image.name.clone(),
                command,
                code,
                output: tail.text(),
            }),
            None => {
                self.store.put(
                    Kind::Tested,
                    &key,
                    &serde_json::json!({ "manifest": record.manifest, "tests": image.test }),
                )?;
                Ok(())
            }
        }
    }

    /// The isolation this build runs steps with, detected once.
    fn isolation(&self) -> Result<crate::sandbox::Isolation, BuildError> {
        let abilities = self.abilities.get_or_init(crate::sandbox::detect);
        abilities
            .choose(self.opts.isolation)
            .map_err(|e| BuildError::Run {
                image: String::new(),
                reason: e.to_string(),
            })
    }

    /// Builds (or reuses) one image whose parent is `base`.
    pub fn build_image(
        &self,
        image: &Image,
        base: Option<(&str, &ImageRecord)>,
        reporter: &dyn Reporter,
    ) -> Result<ImageOutcome, BuildError> {
        reporter.image_started(&image.name);
        let accounts = match base {
            Some((_, rec)) if image.layers.iter().any(|l| l.owner.is_some()) => {
                Accounts::of(self.store, rec)?
            }
            _ => Accounts::none(),
        };
        let mut done = Done::default();
        if let Some(d) = &image.debian {
            let started = Instant::now();
            let below: Vec<LayerDesc> = base.map(|b| b.1.layers.clone()).unwrap_or_default();
            let locked = self.debian_packages(image, d, &|| self.rootfs(&image.name, &below))?;
            let resolved = started.elapsed().as_secs_f64();
            let epoch = if self.opts.stamp.epoch_given {
                self.opts.stamp.epoch
            } else {
                locked.epoch
            };
            let key = debian::key(&below, d, &locked, self.opts.compression, epoch);
            let (record, phases) = self.cached_or(&key, || {
                let (r, mut p) =
                    self.debian_install(image, d, 0, &below, &locked, &key, reporter)?;
                p.resolve = Some(resolved);
                Ok((r, p))
            })?;
            let built = phases.is_some();
            done.push(
                &image.name,
                0,
                key,
                record,
                (built, false, phases),
                started,
                reporter,
            );
        }
        let first = done.layers.len();
        for (i, l) in image.layers.iter().enumerate() {
            let i = i + first;
            let started = Instant::now();
            let ids = self.ids(image, l, &accounts)?;
            let (entries, key) = self.walk(image, i, l, ids)?;
            let key_lock = self
                .writing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default()
                .clone();
            let _writing = key_lock.lock().unwrap_or_else(|e| e.into_inner());
            let (record, built, fetched) = match self.cached_layer(&key)? {
                Some(r) => (r, false, false),
                None => match self.remote_layer(&key, reporter)? {
                    Some(r) => (r, false, true),
                    None => {
                        let r = self.write_layer(image, i, l, &entries, &key, reporter)?;
                        if let Some(cache) = self.cache
                            && let Err(e) = cache.put(&key, &r)
                        {
                            reporter.warning(&format!(
                                "{}: layer {i} not shared with the cache: {e}",
                                image.name
                            ));
                        }
                        (r, true, false)
                    }
                },
            };
            done.push(
                &image.name,
                i,
                key,
                record,
                (built, fetched, None),
                started,
                reporter,
            );
        }
        if !image.run.is_empty() {
            let started = Instant::now();
            let index = done.layers.len();
            let mut below: Vec<LayerDesc> = base.map(|b| b.1.layers.clone()).unwrap_or_default();
            below.extend(done.layers.iter().map(|r| r.desc.clone()));
            let (context, key) = self.run_key(image, base.map(|b| b.1), &below)?;
            let (record, phases) = self.cached_or(&key, || {
                self.run_steps(image, index, &below, &context, &key, reporter)
            })?;
            let built = phases.is_some();
            done.push(
                &image.name,
                index,
                key,
                record,
                (built, false, phases),
                started,
                reporter,
            );
        }
        let Done {
            layers,
            keys,
            outcomes,
        } = done;
        let key = self.image_key(image, base.map(|b| b.1), &keys);
        let (record, assembled) = match self.cached_image(&key)? {
            Some(r) => (r, false),
            None => {
                let parent_config = match base {
                    Some((_, rec)) => Some(image::parse_config(
                        &self.store.read_blob(&hex_of(&rec.config))?,
                        &format!("config of {}", rec.manifest),
                    )?),
                    None => None,
                };
                let base_value = base
                    .zip(parent_config)
                    .map(|((name, record), config)| Base {
                        name,
                        record,
                        config,
                    });
                let new_layers: Vec<NewLayer> = layers
                    .iter()
                    .map(|r| NewLayer {
                        desc: r.desc.clone(),
                        created_by: r.created_by.clone(),
                    })
                    .collect();
                let a = image::assemble(
                    base_value.as_ref(),
                    &new_layers,
                    &image.config,
                    &self.opts.stamp,
                )?;
                // Config and manifest only after every layer blob exists.
                self.store.put_blob(&a.config_json)?;
                self.store.put_blob(&a.manifest_json)?;
                self.store.put(Kind::Images, &key, &a.record)?;
                (a.record, true)
            }
        };
        if !image.test.is_empty() {
            self.smoke_test(image, &record, reporter)?;
        }
        let ref_record = RefRecord {
            key: key.clone(),
            layer_keys: keys,
            image: record.clone(),
        };
        self.store
            .put_ref(&self.graph, &self.spec.file_abs(), &image.name, &ref_record)?;
        let outcome = ImageOutcome {
            name: image.name.clone(),
            key,
            manifest: record.manifest.clone(),
            assembled,
            layers: outcomes,
            record,
        };
        reporter.image_finished(&image.name, &outcome);
        Ok(outcome)
    }

    /// Builds `names` and what they need, independent images in parallel.
    /// Every image gets a result; a failed image fails only its descendants.
    pub fn build(
        &self,
        names: &[String],
        reporter: &dyn Reporter,
    ) -> Result<BTreeMap<String, Result<ImageOutcome, BuildError>>, BuildError> {
        let order = self.closure(names)?;
        let pulled = self.pull_parents(&order)?;
        let state: Queue = Mutex::new((order.clone(), HashMap::new()));
        let cv = Condvar::new();
        let jobs = self.opts.jobs.clamp(1, order.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| self.worker(&state, &cv, &pulled, reporter));
            }
        });
        let (_, results) = state.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(results.into_iter().collect())
    }

    /// Pulls (or finds in the store) every registry parent `order` needs.
    pub fn pull_parents(
        &self,
        order: &[String],
    ) -> Result<HashMap<String, ImageRecord>, BuildError> {
        let mut pulled = HashMap::new();
        for name in order {
            let image = self.image(name)?;
            if let Parent::Registry(r) = &image.parent
                && !pulled.contains_key(&r.to_string())
            {
                let r = &r.to_string();
                let puller = self.puller.ok_or_else(|| BuildError::Pull {
                    image: name.clone(),
                    reference: r.clone(),
                    reason: format!("{r}: this command does not reach registries"),
                })?;
                let record = puller.pull(r).map_err(|reason| BuildError::Pull {
                    image: name.clone(),
                    reference: r.clone(),
                    reason,
                })?;
                pulled.insert(r.clone(), record);
            }
        }
        Ok(pulled)
    }

    fn worker(
        &self,
        state: &Queue,
        cv: &Condvar,
        pulled: &HashMap<String, ImageRecord>,
        reporter: &dyn Reporter,
    ) {
        loop {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            let picked = loop {
                let (pending, done) = &mut *guard;
                if pending.is_empty() {
                    return;
                }
                let ready = pending
                    .iter()
                    .position(|n| match &self.spec.images[n].parent {
                        Parent::Scratch | Parent::Registry(_) => true,
                        Parent::Image(p) => {
                            done.contains_key(p) || !self.spec.images.contains_key(p)
                        }
                    });
                match ready {
                    Some(i) => break pending.remove(i),
                    None => guard = cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
                }
            };
            let image = &self.spec.images[&picked];
            let base = match &image.parent {
                Parent::Scratch => Ok(None),
                Parent::Registry(r) => Ok(pulled
                    .get(&r.to_string())
                    .map(|rec| (r.to_string(), rec.clone()))),
                Parent::Image(p) => match guard.1.get(p) {
                    Some(Ok(o)) => Ok(Some((p.clone(), o.record.clone()))),
                    _ => Err(BuildError::ParentFailed {
                        image: picked.clone(),
                        parent: p.clone(),
                    }),
                },
            };
            drop(guard);
            let result = base.and_then(|b| {
                self.build_image(image, b.as_ref().map(|(n, r)| (n.as_str(), r)), reporter)
            });
            if let Err(e) = &result {
                reporter.image_failed(&picked, &e.to_string());
            }
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            guard.1.insert(picked, result);
            cv.notify_all();
        }
    }

    /// The last build of `name` from this images.yaml, if any.
    pub fn last_build(&self, name: &str) -> Result<Option<RefRecord>, BuildError> {
        Ok(self.store.get_ref(&self.graph, name)?)
    }
}

/// The layers of an image so far, as built or reused.
#[derive(Default)]
struct Done {
    layers: Vec<LayerRecord>,
    keys: Vec<String>,
    outcomes: Vec<LayerOutcome>,
}

impl Done {
    /// Records layer `index` and reports it; `how` is (built now, fetched
    /// from the shared cache, a run layer's phases).
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        image: &str,
        index: usize,
        key: String,
        record: LayerRecord,
        how: (bool, bool, Option<Phases>),
        started: Instant,
        reporter: &dyn Reporter,
    ) {
        let (built, fetched, phases) = how;
        let outcome = LayerOutcome {
            key: key.clone(),
            digest: record.desc.digest.clone(),
            size: record.desc.size,
            built,
            fetched,
            seconds: started.elapsed().as_secs_f64(),
            phases,
        };
        reporter.layer_finished(image, index, &outcome);
        self.outcomes.push(outcome);
        self.keys.push(key);
        self.layers.push(record);
    }
}

/// /etc/passwd and /etc/group as a file layer leaves them.
fn etc_files(entries: &Entries) -> Result<EtcFiles, BuildError> {
    let mut etc = EtcFiles::default();
    for e in &entries.0 {
        let slot = match e.path.as_str() {
            "etc/passwd" => &mut etc.passwd,
            "etc/group" => &mut etc.group,
            _ => continue,
        };
        match &e.kind {
            EntryKind::File { src, .. } => {
                let text = std::fs::read_to_string(src).map_err(|source| BuildError::Io {
                    path: src.clone(),
                    source,
                })?;
                *slot = Found::Content(text);
            }
            EntryKind::Whiteout => *slot = Found::Deleted,
            _ => {}
        }
    }
    Ok(etc)
}

/// The stamp from the environment: `SOURCE_DATE_EPOCH` (default 0), the
/// revision from `IMGBUILD_REVISION`, `CI_COMMIT_SHA` or git, and the source
/// address from `CI_PROJECT_URL` or git's `origin`, without credentials.
pub fn stamp_from_env(dir: &Path) -> Result<Stamp, String> {
    let epoch_given = std::env::var("SOURCE_DATE_EPOCH").is_ok_and(|v| !v.trim().is_empty());
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|e| *e >= 0)
            .ok_or_else(|| format!("SOURCE_DATE_EPOCH={v} is not a whole number of seconds since 1970; set it to e.g. $(git log -1 --format=%ct)"))?,
        _ => 0,
    };
    let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let revision = match std::env::var("IMGBUILD_REVISION") {
        Ok(v) => Some(v).filter(|v| !v.is_empty()),
        Err(_) => nonempty("CI_COMMIT_SHA").or_else(|| git(dir, &["rev-parse", "HEAD"])),
    };
    let source = match std::env::var("IMGBUILD_SOURCE") {
        Ok(v) => Some(v).filter(|v| !v.is_empty()),
        Err(_) => nonempty("CI_PROJECT_URL").or_else(|| git(dir, &["remote", "get-url", "origin"])),
    }
    .map(|s| strip_credentials(&s));
    Ok(Stamp {
        epoch,
        epoch_given,
        arch: image::host_arch().to_string(),
        os: "linux".to_string(),
        revision,
        source,
    })
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    // Outside a checkout, spare the two process starts.
    if !dir.ancestors().any(|d| d.join(".git").exists()) {
        return None;
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `https://user:token@host/x` → `https://host/x`: a label must not carry a secret.
pub fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_labels() {
        assert_eq!(
            strip_credentials("https://gitlab-ci-token:s3cret@gitlab.example.com/agency/fleet.git"),
            "https://gitlab.example.com/agency/fleet.git"
        );
        assert_eq!(strip_credentials("git@host:x/y.git"), "git@host:x/y.git");
        assert_eq!(strip_credentials("https://host/p@q"), "https://host/p@q");
    }
}
