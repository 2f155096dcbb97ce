//! Image assembly: one image's layers in order (Debian, files, run),
//! then its config and manifest, keyed and reused like layers.

use std::time::Instant;

use super::{
    Accounts, BuildError, ImageOutcome, LayerOutcome, LayerRecord, ParentRecord, Phases, RefRecord,
    Reporter, Session, debian, records, steps::Made,
};
use crate::oci::digest::sha256_hex;
use crate::oci::image::{self, Base, ImageRecord, LayerDesc, NewLayer, hex_of};
use crate::spec::{Image, Parent};
use crate::store::Kind;

impl<'a> Session<'a> {
    /// The image of `key` on `parent` (a record this build made or reused,
    /// so its blobs are known to be here) if stored with all its blobs:
    /// only the image's own blobs are checked, each image once.
    pub(super) fn cached_image(
        &self,
        key: &str,
        parent: Option<&ImageRecord>,
    ) -> Result<Option<ImageRecord>, BuildError> {
        let Some(stored) = self.store.get::<records::Stored>(Kind::Images, key)? else {
            return Ok(None);
        };
        if !stored.own_blobs().iter().all(|b| self.store.has_blob(b)) {
            return Ok(None);
        }
        Ok(stored.on(parent))
    }

    /// The image key: parent manifest, layer keys, config and stamp.
    pub(super) fn image_key(
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

    /// Builds (or reuses) one image whose parent is `base`.
    pub fn build_image(
        &self,
        image: &Image,
        base: Option<(&str, ParentRecord<'_>)>,
        reporter: &dyn Reporter,
    ) -> Result<ImageOutcome, BuildError> {
        let parent = base.map(|(_, p)| p);
        let base = base.map(|(name, p)| (name, p.record));
        reporter.image_started(&image.name);
        let accounts = match base {
            Some((_, rec)) if image.layers.iter().any(|l| l.owner.is_some()) => {
                // Owners by name: the parents' /etc/passwd, their bytes.
                self.fetches.settle()?;
                Accounts::of(self.store, rec)?
            }
            _ => Accounts::none(),
        };
        let mut done = Done::new(&image.name, reporter);
        if let Some(d) = &image.debian {
            let started = Instant::now();
            let below: Vec<LayerDesc> = base.map(|b| b.1.layers.to_vec()).unwrap_or_default();
            let locked = self.debian_packages(image, d, &|| self.rootfs(&image.name, &below))?;
            let resolved = started.elapsed().as_secs_f64();
            let epoch = if self.opts.stamp.epoch_given {
                self.opts.stamp.epoch
            } else {
                locked.epoch
            };
            let key = debian::key(
                &below,
                d,
                &locked,
                self.compression(image),
                epoch,
                self.keyed_chroot(),
            );
            let (record, made) = self.cached_or(&key, &image.name, reporter, || {
                let install = debian::Install {
                    spec: d,
                    index: 0,
                    below: &below,
                    locked: &locked,
                    key: &key,
                };
                let (r, mut p) = self.debian_install(image, &install, reporter)?;
                p.resolve = Some(resolved);
                Ok((r, p))
            })?;
            done.push(key, record, made.into(), started);
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
            let (record, how) = match self.cached_layer(&key)? {
                Some(r) => (r, How::Reused),
                None => match self.remote_layer(&image.name, &key, reporter)? {
                    Some(r) => (r, How::Fetched),
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
                        (r, How::Built(None))
                    }
                },
            };
            done.push(key, record, how, started);
        }
        if !image.run.is_empty() {
            let started = Instant::now();
            let index = done.layers.len();
            let mut below: Vec<LayerDesc> = base.map(|b| b.1.layers.to_vec()).unwrap_or_default();
            below.extend(done.layers.iter().map(|r| r.desc.clone()));
            let (context, key) = self.run_key(image, base.map(|b| b.1), &below)?;
            let (record, made) = self.cached_or(&key, &image.name, reporter, || {
                self.run_steps(image, index, &below, &context, &key, reporter)
            })?;
            done.push(key, record, made.into(), started);
        }
        let Done {
            layers,
            keys,
            outcomes,
            ..
        } = done;
        let key = self.image_key(image, base.map(|b| b.1), &keys);
        let (record, assembled) = match self.cached_image(&key, base.map(|b| b.1))? {
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
                self.store
                    .put(Kind::Images, &key, &records::Stored::of(&a.record, parent))?;
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
        let stored = records::StoredRef::of(&ref_record, parent);
        // Unchanged (a no-change build): nothing to write.
        let last: Option<records::StoredRef> =
            self.store.get_ref(&self.graph, &image.name).ok().flatten();
        if last.as_ref() != Some(&stored) {
            self.store
                .put_ref(&self.graph, &self.spec.file_abs(), &image.name, &stored)?;
        }
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
}

/// The layers of an image so far, as built or reused.
struct Done<'r> {
    image: &'r str,
    reporter: &'r dyn Reporter,
    layers: Vec<LayerRecord>,
    keys: Vec<String>,
    outcomes: Vec<LayerOutcome>,
}

/// Where a layer came from.
enum How {
    /// From the local store.
    Reused,
    /// From the shared (registry) cache.
    Fetched,
    /// Written now; a run or Debian layer says how long its phases took.
    Built(Option<Phases>),
}

impl From<Made> for How {
    fn from(made: Made) -> How {
        match made {
            Made::Reused => How::Reused,
            Made::Fetched => How::Fetched,
            Made::Built(p) => How::Built(Some(p)),
        }
    }
}

impl<'r> Done<'r> {
    fn new(image: &'r str, reporter: &'r dyn Reporter) -> Done<'r> {
        Done {
            image,
            reporter,
            layers: Vec::new(),
            keys: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// Records the next layer and reports it.
    fn push(&mut self, key: String, record: LayerRecord, how: How, started: Instant) {
        let index = self.layers.len();
        let (built, fetched, phases) = match how {
            How::Reused => (false, false, None),
            How::Fetched => (false, true, None),
            How::Built(phases) => (true, false, phases),
        };
        let outcome = LayerOutcome {
            key: key.clone(),
            digest: record.desc.digest.clone(),
            size: record.desc.size,
            built,
            fetched,
            seconds: started.elapsed().as_secs_f64(),
            phases,
        };
        self.reporter.layer_finished(self.image, index, &outcome);
        self.outcomes.push(outcome);
        self.keys.push(key);
        self.layers.push(record);
    }
}
