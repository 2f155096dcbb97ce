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
