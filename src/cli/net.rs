//! The network side of a build: pulling `from:` references and the shared
//! layer cache in a registry repository.
use imgbuild::build::remote::RemoteError;
use imgbuild::build::{LayerCache, LayerRecord, Puller};
use imgbuild::oci::image::{ImageRecord, host_arch};
use imgbuild::registry::pull::{last_pull, pull};
use imgbuild::registry::transfer::Known;
use imgbuild::registry::{Client, Reference, auth::Sources, cache};
use imgbuild::store::Store;

use super::{Failure, runtime};

pub struct Net<'a> {
    store: &'a Store,
    pub client: Client,
    pub rt: tokio::runtime::Runtime,
    /// Where blobs were seen this run, for mounts.
    pub known: Known,
    pub cache_repo: Option<Reference>,
    /// Set once the cache failed: a cache that cannot be reached is given
    /// up for the run instead of costing retries on every layer.
    cache_down: std::sync::atomic::AtomicBool,
}

impl<'a> Net<'a> {
    pub fn new(
        store: &'a Store,
        insecure: &[String],
        cache_repo: Option<&str>,
    ) -> Result<Net<'a>, Failure> {
        let env = std::env::var("IMGBUILD_CACHE_REPO")
            .ok()
            .filter(|v| !v.is_empty());
        let cache_repo = match cache_repo.map(str::to_string).or(env) {
            Some(c) => Some(
                format!("{}:cache", c.trim_end_matches('/'))
                    .parse::<Reference>()
                    .map_err(Failure::usage)?,
            ),
            None => None,
        };
        Ok(Net {
            store,
            client: Client::new(Sources::from_process(), insecure.to_vec())
                .map_err(Failure::failed)?,
            rt: runtime()?,
            known: Known::default(),
            cache_repo,
            cache_down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn has_cache(&self) -> bool {
        self.cache_repo.is_some()
    }

    fn cache(&self) -> Option<&Reference> {
        if self.cache_down.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.cache_repo.as_ref()
    }

    fn cache_failed(&self, e: imgbuild::registry::RegistryError) -> RemoteError {
        if e.is_unreachable() {
            self.cache_down
                .store(true, std::sync::atomic::Ordering::Relaxed);
            RemoteError::CacheDown { source: e }
        } else {
            e.into()
        }
    }
}

impl Puller for Net<'_> {
    fn pull(&self, r: &Reference) -> Result<ImageRecord, RemoteError> {
        match self
            .rt
            .block_on(pull(&self.client, self.store, r, "linux", host_arch()))
        {
            Ok(record) => Ok(record),
            Err(e) if !e.is_unreachable() => Err(e.into()),
            Err(e) => match last_pull(self.store, r) {
                // Offline, or the registry is down: the last pull will do.
                Ok(Some(p)) if p.record.blobs().iter().all(|b| self.store.has_blob(b)) => {
                    eprintln!(
                        "warning: {r}: {e}; using the copy pulled before ({})",
                        p.record.manifest
                    );
                    Ok(p.record)
                }
                _ => Err(e.into()),
            },
        }
    }
}

impl LayerCache for Net<'_> {
    fn get(&self, key: &str) -> Result<Option<LayerRecord>, RemoteError> {
        let Some(repo) = self.cache() else {
            return Ok(None);
        };
        let entry = self
            .rt
            .block_on(cache::get(&self.client, self.store, repo, key))
            .map_err(|e| self.cache_failed(e))?;
        Ok(entry.map(|e| {
            self.known
                .add(&repo.registry, &e.desc.digest, &repo.repository);
            LayerRecord {
                desc: e.desc,
                created_by: e.created_by,
            }
        }))
    }

    fn put(&self, key: &str, record: &LayerRecord) -> Result<(), RemoteError> {
        let Some(repo) = self.cache() else {
            return Ok(());
        };
        let entry = cache::Entry {
            key: key.to_string(),
            desc: record.desc.clone(),
            created_by: record.created_by.clone(),
        };
        self.rt
            .block_on(cache::put(
                &self.client,
                self.store,
                repo,
                &entry,
                &self.known,
            ))
            .map_err(RemoteError::from)
    }
}
