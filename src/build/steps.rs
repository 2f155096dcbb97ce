//! Run layers and tests: the image's steps in a sandbox over a writable
//! tree of the layers below, and its `test:` commands likewise.

use std::path::PathBuf;
use std::time::Instant;

use super::layers::LayerWrite;
use super::{BuildError, LayerRecord, Phases, Reporter, Session, follow, run};
use crate::layer;
use crate::oci::digest::sha256_hex;
use crate::oci::image::{self, ImageRecord, LayerDesc, hex_of};
use crate::spec::Image;
use crate::store::Kind;

/// Where a run or Debian layer came from.
pub(super) enum Made {
    /// The local store.
    Reused,
    /// The shared (registry) cache.
    Fetched,
    /// Built now, in these phases.
    Built(Phases),
}

impl<'a> Session<'a> {
    /// Runs the image's steps over the image so far, and writes what they
    /// changed as a layer.
    pub(super) fn run_steps(
        &self,
        image: &Image,
        index: usize,
        below: &[LayerDesc],
        context: &run::Context,
        key: &str,
        reporter: &dyn Reporter,
    ) -> Result<(LayerRecord, Phases), BuildError> {
        let isolation = self.isolation(&image.name)?;
        self.refuse_if_lacking(&image.name, "run", isolation, reporter)?;
        let mut phases = Phases::default();
        let mut clock = Instant::now();
        let mut lap = || {
            let t = clock.elapsed().as_secs_f64();
            clock = Instant::now();
            t
        };
        let network = image.network == crate::spec::Network::Host;
        if !network && isolation == crate::sandbox::Isolation::Chroot {
            return Err(BuildError::NoNetworkOnChroot {
                image: image.name.clone(),
            });
        }
        let scratch = self.scratch(&image.name, "run-", below, isolation)?;
        let follow = self.follow(&image.name, scratch.lower(), reporter);
        let run_err = |source| BuildError::Run {
            image: image.name.clone(),
            source,
        };
        let owner = match &context.user {
            Some(u) => crate::sandbox::resolve_user(scratch.lower(), u).unwrap_or((0, 0)),
            None => (0, 0),
        };
        let secrets =
            run::Secrets::prepare(&image.secrets, &self.store.tmp_dir(), owner).map_err(run_err)?;
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
            .map_err(|source| BuildError::Sandbox {
                image: image.name.clone(),
                source,
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
        let w = LayerWrite {
            image,
            index,
            what: "run",
            key,
            created_by,
            epoch: self.opts.stamp.epoch,
            follow: follow.map(|f| (f, below)),
        };
        let record = self.write_entries(&entries, w, reporter)?;
        phases.write = lap();
        Ok((record, phases))
    }

    /// What `image`'s steps run with over `below` (the parent's layers and
    /// the image's file layers), and their layer's key.
    pub(super) fn run_key(
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
        let mut extra = run::KeyExtra::of(image).map_err(|source| BuildError::Run {
            image: image.name.clone(),
            source,
        })?;
        extra.chroot = self.keyed_chroot();
        let key = run::key(
            below,
            &image.run,
            &context,
            self.compression(image),
            self.opts.stamp.epoch,
            &extra,
        );
        Ok((context, key))
    }

    /// The root filesystem of `layers`, unpacked once per chain of layers
    /// and kept in the store for later builds. Nothing runs in it: steps
    /// get a [`run::Scratch`] over it.
    pub(super) fn rootfs(&self, image: &str, layers: &[LayerDesc]) -> Result<PathBuf, BuildError> {
        let opts = layer::unpack::UnpackOptions::for_current_user();
        let hexes: Vec<String> = layers.iter().map(|l| hex_of(&l.digest)).collect();
        let chain = follow::chain_id(&opts, &hexes);
        let done = self.store.rootfs_tree(&chain);
        if done.is_dir() {
            return Ok(done);
        }
        // The layers' bytes, some perhaps still coming from the cache.
        self.fetches.settle()?;
        let tmp = self.store.tmp_dir();
        let work = self.store.temp_dir("rootfs-")?;
        let root = work.path().join("rootfs");
        let blobs: Vec<(PathBuf, String)> = layers
            .iter()
            .zip(&hexes)
            .map(|(l, hex)| (self.store.blob_path(hex), l.media_type.clone()))
            .collect();
        let materialise = |source| BuildError::Materialise {
            image: image.to_string(),
            source,
        };
        // A tree kept for the chain's longest prefix (the parent's, for a
        // client whose tests run on its core plus a thin layer) is cloned
        // with hard links and only the layers above it are applied: fifty
        // clients of one core cost fifty small layers, not fifty copies of
        // the core (the unpacker unlinks before it writes, so the clone
        // never writes through into the tree it shares files with).
        let below = (1..hexes.len()).rev().find_map(|k| {
            let tree = self
                .store
                .rootfs_tree(&follow::chain_id(&opts, &hexes[..k]));
            tree.is_dir().then_some((k, tree))
        });
        if let Some((k, tree)) = below
            && follow::link_tree(&tree, &root).is_ok()
        {
            for (blob, media_type) in &blobs[k..] {
                layer::unpack::apply_layer(blob, media_type, &root, &opts).map_err(materialise)?;
            }
        } else {
            // A clone that failed part-way is not a start.
            if root.exists() {
                crate::fsutil::remove_tree(&root).map_err(|source| BuildError::Io {
                    path: root.clone(),
                    source,
                })?;
            }
            layer::unpack::unpack_image(&blobs, &root, &opts).map_err(materialise)?;
        }
        follow::keep(&self.store.rootfs_dir(), &tmp, &root, &opts, &hexes)
    }

    /// The layer cached under `key` in the store, else in the shared
    /// (registry) cache, else the one `build` makes now, with how long its
    /// phases took; a layer built now is shared with the cache. Run and
    /// Debian layers are keyed by what makes them, so a runner with an
    /// empty store fetches what another runner's job built.
    pub(super) fn cached_or(
        &self,
        key: &str,
        image: &str,
        reporter: &dyn Reporter,
        build: impl FnOnce() -> Result<(LayerRecord, Phases), BuildError>,
    ) -> Result<(LayerRecord, Made), BuildError> {
        if let Some(r) = self.cached_layer(key)? {
            return Ok((r, Made::Reused));
        }
        if let Some(r) = self.remote_layer(image, key, reporter)? {
            return Ok((r, Made::Fetched));
        }
        let (r, p) = build()?;
        if let Some(cache) = self.cache
            && let Err(e) = cache.put(key, &r)
        {
            reporter.warning(&format!(
                "{image}: layer {key} not shared with the cache: {e}"
            ));
        }
        Ok((r, Made::Built(p)))
    }

    /// Starts making the tree of `lower` plus the layer about to be built
    /// (see [`follow`]); None, with a warning, where that cannot start.
    pub(super) fn follow(
        &self,
        image: &str,
        lower: &std::path::Path,
        reporter: &dyn Reporter,
    ) -> Option<follow::Follow> {
        follow::Follow::start(&self.store.tmp_dir(), lower)
            .map_err(|e| reporter.warning(&format!("{image}: {e}")))
            .ok()
    }

    /// A writable view of `layers`' root filesystem for steps to change:
    /// an overlay where the sandbox can mount one, else a copy.
    pub(super) fn scratch(
        &self,
        image: &str,
        prefix: &str,
        layers: &[LayerDesc],
        isolation: crate::sandbox::Isolation,
    ) -> Result<run::Scratch, BuildError> {
        let lower = self.rootfs(image, layers)?;
        let tmp = self.store.tmp_dir();
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
        run::Scratch::new(&tmp, prefix, lower, overlay).map_err(|source| BuildError::Run {
            image: image.to_string(),
            source,
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
        let isolation = self.isolation(name)?;
        let scratch = self.scratch(name, "test-", &record.layers.to_vec(), isolation)?;
        scratch.ready().map_err(|source| BuildError::Run {
            image: name.to_string(),
            source,
        })?;
        let config = image::parse_config(
            &self.store.read_blob(&hex_of(&record.config))?,
            &format!("config of {}", record.manifest),
        )?;
        let context = run::Context::new(Some(&config), &crate::spec::ConfigSpec::default());
        for command in commands {
            let step = scratch.step(command, &context, true, &run::Secrets::none());
            let code = crate::sandbox::run(&step, isolation, line).map_err(|source| {
                BuildError::Sandbox {
                    image: name.to_string(),
                    source,
                }
            })?;
            if code != 0 {
                return Ok(Some((command.clone(), code)));
            }
        }
        Ok(None)
    }

    /// Runs an image's `test:` unless this image passed these tests before.
    pub(super) fn smoke_test(
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

    /// What this process may do here, probed once, when an image first
    /// needs a sandbox or a key that depends on it.
    pub fn probe(&self) -> &crate::sandbox::Probe {
        self.probe.get_or_init(|| {
            crate::sandbox::probe(
                self.opts.isolation,
                self.store.root(),
                &self.store.tmp_dir(),
            )
        })
    }

    /// The probe, when this session made one.
    pub fn probed(&self) -> Option<&crate::sandbox::Probe> {
        self.probe.get()
    }

    /// The isolation this build runs steps with, detected once; an error
    /// names `image`, the first that needs it.
    pub(super) fn isolation(&self, image: &str) -> Result<crate::sandbox::Isolation, BuildError> {
        self.probe()
            .abilities
            .choose(self.opts.isolation)
            .map_err(|source| BuildError::Sandbox {
                image: image.to_string(),
                source,
            })
    }

    /// Whether keys of Debian and run layers say "chroot": steps under
    /// chroot see no /proc (no mount is allowed), and may write other bytes
    /// than under namespace or userns isolation, which give the same. When
    /// no isolation is possible nothing is built, and keys are as under
    /// namespaces, for layers fetched from a cache.
    pub(super) fn keyed_chroot(&self) -> bool {
        self.probe().isolation == Some(crate::sandbox::Isolation::Chroot)
    }

    /// Refuses to make `image`'s `what` layer (debian, run) with
    /// `isolation` when this place would make it differ silently from the
    /// same layer made elsewhere. Tells the reporter what the probe found,
    /// once a session.
    pub(super) fn refuse_if_lacking(
        &self,
        image: &str,
        what: &'static str,
        isolation: crate::sandbox::Isolation,
        reporter: &dyn Reporter,
    ) -> Result<(), BuildError> {
        let probe = self.probe();
        if !self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            reporter.probed(probe);
        }
        let lacks = probe.lacks(isolation);
        if lacks.is_empty() {
            return Ok(());
        }
        Err(BuildError::Lacking {
            image: image.to_string(),
            what,
            lacks,
        })
    }
}
