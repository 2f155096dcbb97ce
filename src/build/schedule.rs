//! Scheduling: which images a build needs, in what order, on how many
//! threads, with registry parents pulled first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex};

use super::{
    BuildError, ImageOutcome, LayerCache, Options, ParentRecord, Puller, Queue, RefRecord,
    Reporter, Session, debian,
};
use crate::graph;
use crate::oci::image::ImageRecord;
use crate::registry::Reference;
use crate::spec::{Image, Parent, Spec};
use crate::store::Store;

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
            probe: std::sync::OnceLock::new(),
            told: std::sync::atomic::AtomicBool::new(false),
            overlay: std::sync::OnceLock::new(),
            archives: debian::Archives::default(),
            records: Default::default(),
            fetches: Default::default(),
            layer_facts: false,
        }
    }

    /// The same session, recording each layer's SBOM facts as it writes
    /// it: the SBOMs made after the build then read no blob back.
    pub fn with_layer_facts(mut self) -> Session<'a> {
        self.layer_facts = true;
        self
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
        for name in names {
            self.image(name)?;
        }
        let parent = |n| self.spec.parent_of(n);
        Ok(graph::closure(names.iter().map(String::as_str), parent)
            .into_iter()
            .map(str::to_string)
            .collect())
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

    /// Builds `names` and what they need, independent images in parallel.
    /// Every image gets a result; a failed image fails only its descendants.
    pub fn build(
        &self,
        names: &[String],
        reporter: &dyn Reporter,
    ) -> Result<BTreeMap<String, Result<ImageOutcome, BuildError>>, BuildError> {
        let order = self.closure(names)?;
        let pulled = self.pull_parents(&order)?;
        let jobs = self.opts.jobs.clamp(1, order.len().max(1));
        // Ready or waiting for its parent: picking the next image is O(1),
        // not a scan of everything pending (quadratic on a long chain).
        let mut queue = Queue::default();
        let building: std::collections::HashSet<&str> = order.iter().map(String::as_str).collect();
        for name in &order {
            match &self.spec.images[name].parent {
                Parent::Image(p) if building.contains(p.as_str()) => queue
                    .waiting
                    .entry(p.clone())
                    .or_default()
                    .push(name.clone()),
                _ => queue.ready.push_back(name.clone()),
            }
        }
        let state = Mutex::new(queue);
        let cv = Condvar::new();
        std::thread::scope(|s| {
            // Blobs found in the layer cache come behind the build (see
            // `fetch`): images go on with their keys and digests. As many
            // fetchers as workers, as many blobs at once as before.
            let fetchers: Vec<_> = match self.cache {
                Some(cache) => {
                    self.fetches.open();
                    (0..jobs)
                        .map(|_| s.spawn(move || self.fetches.run(cache, self.store)))
                        .collect()
                }
                None => Vec::new(),
            };
            let workers: Vec<_> = (0..jobs)
                .map(|_| s.spawn(|| self.worker(&state, &cv, &pulled, reporter)))
                .collect();
            for w in workers {
                if let Err(p) = w.join() {
                    std::panic::resume_unwind(p);
                }
            }
            self.fetches.close();
            for f in fetchers {
                if let Err(p) = f.join() {
                    std::panic::resume_unwind(p);
                }
            }
        });
        let queue = state.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut done: BTreeMap<String, Result<ImageOutcome, BuildError>> =
            queue.done.into_iter().collect();
        // A blob that did not come: tried once more, else every image made
        // with it fails (its record names a blob the store lacks).
        for (job, _) in self.fetches.take_failed() {
            let Some(cache) = self.cache else { break };
            let Err(e) = cache.fetch(&job.key, &job.desc) else {
                continue;
            };
            let reason = e.to_string();
            for (name, result) in done.iter_mut() {
                if let Ok(o) = result
                    && o.record.layers.iter().any(|l| l.digest == job.desc.digest)
                {
                    let err = super::fetch::failed(name, &job, &reason);
                    reporter.image_failed(name, &err.to_string());
                    *result = Err(err);
                }
            }
        }
        Ok(done)
    }

    /// Pulls (or finds in the store) every registry parent `order` needs.
    pub fn pull_parents(
        &self,
        order: &[String],
    ) -> Result<HashMap<Reference, ImageRecord>, BuildError> {
        let mut pulled = HashMap::new();
        for name in order {
            let image = self.image(name)?;
            if let Parent::Registry(r) = &image.parent
                && !pulled.contains_key(r)
            {
                let puller = self.puller.ok_or_else(|| BuildError::Offline {
                    image: name.clone(),
                    reference: Box::new(r.clone()),
                })?;
                let record = puller.pull(r).map_err(|source| BuildError::Pull {
                    image: name.clone(),
                    reference: Box::new(r.clone()),
                    source: Box::new(source),
                })?;
                pulled.insert(r.clone(), record);
            }
        }
        Ok(pulled)
    }

    fn worker(
        &self,
        state: &Mutex<Queue>,
        cv: &Condvar,
        pulled: &HashMap<Reference, ImageRecord>,
        reporter: &dyn Reporter,
    ) {
        loop {
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            let picked = loop {
                if let Some(n) = guard.ready.pop_front() {
                    break n;
                }
                // Nothing ready and nothing running: every image is done
                // (waiting ones were released as ready or failed).
                if guard.running == 0 {
                    return;
                }
                guard = cv.wait(guard).unwrap_or_else(|e| e.into_inner());
            };
            guard.running += 1;
            let image = &self.spec.images[&picked];
            let base = match &image.parent {
                Parent::Scratch => Ok(None),
                Parent::Registry(r) => {
                    Ok(pulled.get(r).map(|rec| (r.to_string(), None, rec.clone())))
                }
                Parent::Image(p) => match guard.done.get(p) {
                    Some(Ok(o)) => Ok(Some((p.clone(), Some(o.key.clone()), o.record.clone()))),
                    _ => Err(BuildError::ParentFailed {
                        image: picked.clone(),
                        parent: p.clone(),
                    }),
                },
            };
            drop(guard);
            let result = base.and_then(|b| {
                let base = b.as_ref().map(|(name, key, record)| {
                    (
                        name.as_str(),
                        ParentRecord {
                            key: key.as_deref(),
                            record,
                        },
                    )
                });
                self.build_image(image, base, reporter)
            });
            if let Err(e) = &result {
                reporter.image_failed(&picked, &e.to_string());
            }
            let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
            let children = guard.waiting.remove(&picked).unwrap_or_default();
            guard.ready.extend(children);
            guard.done.insert(picked, result);
            guard.running -= 1;
            cv.notify_all();
        }
    }

    /// The last build of `name` from this images.yaml, if any.
    pub fn last_build(&self, name: &str) -> Result<Option<RefRecord>, BuildError> {
        self.records.last_build(self.store, &self.graph, name)
    }
}
