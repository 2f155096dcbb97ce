//! Layer blobs from the shared cache, fetched behind the build: a layer
//! found in the cache is recorded at once and its bytes come while the
//! build goes on. A child's file layer needs its parents' layer keys and
//! digests, not their bytes, so a job whose parents are all in the cache
//! starts its own layer without waiting for them; what reads layers'
//! bytes (a root filesystem for steps, Debian or tests; /etc/passwd for
//! owners) waits for them first ([`Fetches::settle`]), and a build ends
//! only once every blob is in the store.
use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{BuildError, LayerCache};
use crate::oci::image::{LayerDesc, hex_of};
use crate::store::Store;

/// A layer whose blob is still to fetch.
#[derive(Debug, Clone)]
pub(super) struct Job {
    /// The image that found it in the cache, for errors.
    pub image: String,
    pub key: String,
    pub desc: LayerDesc,
}

#[derive(Default)]
struct State {
    /// Whether a fetcher runs (inside `Session::build`); if not, a layer's
    /// blob is fetched where it is found.
    open: bool,
    queue: VecDeque<Job>,
    /// Digests queued or being fetched.
    pending: HashSet<String>,
    /// Fetches that failed, and why.
    failed: Vec<(Job, String)>,
}

#[derive(Default)]
pub(super) struct Fetches {
    state: Mutex<State>,
    changed: Condvar,
}

impl Fetches {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fetcher runs from now on.
    pub fn open(&self) {
        self.lock().open = true;
    }

    /// No more jobs: the fetcher ends once the queue is empty.
    pub fn close(&self) {
        self.lock().open = false;
        self.changed.notify_all();
    }

    /// Queues `job`; false when no fetcher runs (the caller fetches).
    pub fn push(&self, job: Job) -> bool {
        let mut s = self.lock();
        if !s.open {
            return false;
        }
        if s.pending.insert(job.desc.digest.clone()) {
            s.queue.push_back(job);
            self.changed.notify_all();
        }
        true
    }

    /// A fetcher: fetches queued blobs one at a time until closed and
    /// drained (several may run).
    pub fn run(&self, cache: &dyn LayerCache, store: &Store) {
        loop {
            let job = {
                let mut s = self.lock();
                loop {
                    if let Some(job) = s.queue.pop_front() {
                        break job;
                    }
                    if !s.open {
                        return;
                    }
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let result = if store.has_blob(&hex_of(&job.desc.digest)) {
                Ok(())
            } else {
                cache.fetch(&job.key, &job.desc)
            };
            let mut s = self.lock();
            s.pending.remove(&job.desc.digest);
            if let Err(e) = result {
                s.failed.push((job, e.to_string()));
            }
            self.changed.notify_all();
        }
    }

    /// Waits until every queued blob is in the store; an error names the
    /// first that could not be fetched.
    pub fn settle(&self) -> Result<(), BuildError> {
        let mut s = self.lock();
        while !s.pending.is_empty() {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        match s.failed.first() {
            Some((job, reason)) => Err(failed(&job.image, job, reason)),
            None => Ok(()),
        }
    }

    /// The fetches that failed, taken.
    pub fn take_failed(&self) -> Vec<(Job, String)> {
        std::mem::take(&mut self.lock().failed)
    }
}

pub(super) fn failed(image: &str, job: &Job, reason: &str) -> BuildError {
    BuildError::CacheFetch {
        image: image.to_string(),
        digest: job.desc.digest.clone(),
        found_by: job.image.clone(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::LayerRecord;
    use crate::build::remote::RemoteError;

    /// A cache whose blobs are in memory; `missing` ones fail to fetch.
    struct Memory<'s> {
        store: &'s Store,
        blobs: Vec<Vec<u8>>,
        missing: Vec<String>,
    }

    impl LayerCache for Memory<'_> {
        fn lookup(&self, _key: &str) -> Result<Option<LayerRecord>, RemoteError> {
            Ok(None)
        }

        fn fetch(&self, _key: &str, desc: &LayerDesc) -> Result<(), RemoteError> {
            if self.missing.contains(&desc.digest) {
                return Err(RemoteError::NoRegistry);
            }
            for b in &self.blobs {
                if format!("sha256:{}", crate::digest::sha256_hex(b)) == desc.digest {
                    self.store.put_blob(b).map_err(|e| {
                        RemoteError::Registry(crate::registry::RegistryError::Protocol {
                            reference: "memory".into(),
                            reason: e.to_string(),
                        })
                    })?;
                }
            }
            Ok(())
        }

        fn put(&self, _key: &str, _record: &LayerRecord) -> Result<(), RemoteError> {
            Ok(())
        }
    }

    fn job(image: &str, bytes: &[u8]) -> Job {
        Job {
            image: image.into(),
            key: format!("key-{image}"),
            desc: LayerDesc {
                digest: format!("sha256:{}", crate::digest::sha256_hex(bytes)),
                diff_id: String::new(),
                size: bytes.len() as u64,
                media_type: String::new(),
            },
        }
    }

    #[test]
    fn settle_waits_for_every_queued_blob_and_names_one_that_failed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let (a, b, gone) = (b"parent a".to_vec(), b"parent b".to_vec(), b"gone".to_vec());
        let cache = Memory {
            store: &store,
            blobs: vec![a.clone(), b.clone()],
            missing: vec![job("x", &gone).desc.digest],
        };
        let fetches = Fetches::default();
        // No fetcher yet: the caller fetches itself.
        assert!(!fetches.push(job("core", &a)));
        fetches.open();
        std::thread::scope(|s| {
            let fetcher = s.spawn(|| fetches.run(&cache, &store));
            assert!(fetches.push(job("core", &a)));
            assert!(fetches.push(job("big", &b)));
            // The same blob twice is fetched once.
            assert!(fetches.push(job("big-again", &b)));
            fetches.settle().unwrap();
            for blob in [&a, &b] {
                assert!(store.has_blob(&crate::digest::sha256_hex(blob)));
            }
            assert!(fetches.push(job("child", &gone)));
            let err = fetches.settle().unwrap_err().to_string();
            assert!(
                err.contains("image child") && err.contains(&job("x", &gone).desc.digest),
                "{err}"
            );
            fetches.close();
            fetcher.join().unwrap();
        });
        assert_eq!(fetches.take_failed().len(), 1);
    }
}
