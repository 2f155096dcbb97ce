//! The registry side of a build: pulling `from:` references (falling back
//! to the last pull when the registry cannot be reached), the layer cache
//! shared through a registry repository (given up for the run after it
//! could not be reached once), and planning pushes: parents first, mount
//! sources, the registry prefix, and where each tag goes.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::{ImageOutcome, LayerCache, LayerRecord, Puller, Reporter, Session};
use crate::env;
use crate::graph;
use crate::oci::image::{ImageRecord, LayerDesc, host_arch};
use crate::registry::pull::{last_pull, pull};
use crate::registry::transfer::{self, Known, PushStats};
use crate::registry::{Client, Reference, ReferenceError, RegistryError, auth::Sources, cache};
use crate::spec::{Parent, Spec};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registry was unreachable while the cache was read: the cache is
    /// not asked again in this run.
    #[error("{source} (not using the cache for the rest of this run)")]
    CacheDown { source: RegistryError },
    /// The cache repository is not a repository reference.
    #[error(transparent)]
    CacheRepo(ReferenceError),
    /// A tag names a repository that is not a reference under the prefix.
    #[error(transparent)]
    Destination(ReferenceError),
    #[error(
        "push needs a registry: pass --registry HOST/PATH, set `registry:` in images.yaml, or set IMGBUILD_REGISTRY"
    )]
    NoRegistry,
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error(transparent)]
    Sign(Box<crate::sign::SignError>),
}

impl RemoteError {
    /// True when what the user gave (flags, images.yaml, environment) is
    /// wrong, as opposed to the registry or the machine failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RemoteError::CacheRepo(_) | RemoteError::Destination(_) | RemoteError::NoRegistry
        )
    }
}

/// How a build reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// The prefix to push under, `HOST[:PORT]/PATH` (default: `registry:`
    /// in images.yaml, then $IMGBUILD_REGISTRY, then $CI_REGISTRY_IMAGE).
    pub registry: Option<String>,
    /// More tags to push every image under (besides `latest` and `tags:`).
    pub tags: Vec<String>,
    /// Registries spoken to in plain HTTP.
    pub insecure: Vec<String>,
    /// The layer cache's repository, `HOST/REPO` (default:
    /// $IMGBUILD_CACHE_REPO).
    pub cache_repo: Option<String>,
    /// Push no `latest` tag (a branch's pipeline: only the default branch
    /// moves `latest`); `tags` then names the image.
    pub no_latest: bool,
}

impl RemoteOptions {
    /// The prefix to push `spec`'s images under.
    pub fn prefix(&self, spec: &Spec) -> Result<String, RemoteError> {
        self.registry
            .clone()
            .or_else(|| spec.registry.clone())
            .or_else(|| env::var(env::IMGBUILD_REGISTRY))
            .or_else(|| env::var(env::CI_REGISTRY_IMAGE))
            .map(|p| p.trim_end_matches('/').to_string())
            .ok_or(RemoteError::NoRegistry)
    }

    /// The cache repository as a reference, tagged `cache` (each entry is
    /// then tagged on its own).
    fn cache_reference(&self) -> Result<Option<Reference>, RemoteError> {
        self.cache_repo
            .clone()
            .or_else(|| env::var(env::IMGBUILD_CACHE_REPO))
            .map(|c| {
                format!("{}:cache", c.trim_end_matches('/'))
                    .parse()
                    .map_err(RemoteError::CacheRepo)
            })
            .transpose()
    }
}

/// The async runtime registry work runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// One build's connection to registries: it pulls parents, serves as the
/// shared layer cache, and pushes.
pub struct Remote<'a> {
    store: &'a Store,
    options: RemoteOptions,
    /// Where warnings go (an offline fallback).
    reporter: &'a dyn Reporter,
    client: Client,
    rt: tokio::runtime::Runtime,
    /// Where blobs were seen this run, for mounts.
    known: Known,
    cache_repo: Option<Reference>,
    /// Set once the cache could not be reached: it is given up for the run
    /// instead of costing retries on every layer.
    cache_down: AtomicBool,
    /// The referrers API's presence per registry, and the indexes written.
    api: crate::attach::referrers::Api,
    /// What each destination held of its image's referrers, read while the
    /// layers went up (by pushed reference): the attach only writes.
    priors: std::sync::Mutex<std::collections::HashMap<String, crate::sign::Prior>>,
}

impl<'a> Remote<'a> {
    pub fn new(
        store: &'a Store,
        options: &RemoteOptions,
        reporter: &'a dyn Reporter,
    ) -> Result<Remote<'a>, RemoteError> {
        let cache_repo = options.cache_reference()?;
        Ok(Remote {
            store,
            options: options.clone(),
            reporter,
            client: Client::new(Sources::from_process(), options.insecure.clone())?,
            rt: runtime().map_err(RemoteError::Runtime)?,
            known: Known::default(),
            cache_repo,
            cache_down: AtomicBool::new(false),
            api: Default::default(),
            priors: Default::default(),
        })
    }

    /// Whether a cache repository was given.
    pub fn has_cache(&self) -> bool {
        self.cache_repo.is_some()
    }

    /// The cache repository, unless it was given up.
    fn cache(&self) -> Option<&Reference> {
        if self.cache_down.load(Ordering::Relaxed) {
            return None;
        }
        self.cache_repo.as_ref()
    }

    fn cache_failed(&self, e: RegistryError) -> RemoteError {
        if e.is_unreachable() {
            self.cache_down.store(true, Ordering::Relaxed);
            RemoteError::CacheDown { source: e }
        } else {
            e.into()
        }
    }

    fn pull_image(&self, r: &Reference) -> Result<ImageRecord, RemoteError> {
        match self
            .rt
            .block_on(pull(&self.client, self.store, r, "linux", host_arch()))
        {
            Ok(record) => Ok(record),
            Err(e) if !e.is_unreachable() => Err(e.into()),
            Err(e) => match last_pull(self.store, r) {
                // Offline, or the registry is down: the last pull will do.
                Ok(Some(p)) if p.record.blobs().iter().all(|b| self.store.has_blob(b)) => {
                    self.reporter.warning(&format!(
                        "{r}: {e}; using the copy pulled before ({})",
                        p.record.manifest
                    ));
                    Ok(p.record)
                }
                _ => Err(e.into()),
            },
        }
    }

    fn cache_lookup(&self, key: &str) -> Result<Option<LayerRecord>, RemoteError> {
        let Some(repo) = self.cache() else {
            return Ok(None);
        };
        let entry = self
            .rt
            .block_on(cache::lookup(&self.client, repo, key))
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

    fn cache_fetch(&self, key: &str, desc: &LayerDesc) -> Result<(), RemoteError> {
        // Given up on since the look-up: the blob is not to be had.
        let repo = self.cache_repo.as_ref().ok_or(RemoteError::NoRegistry)?;
        let entry = cache::Entry {
            key: key.to_string(),
            desc: desc.clone(),
            created_by: String::new(),
        };
        self.rt
            .block_on(cache::fetch(&self.client, self.store, repo, &entry))
            .map_err(RemoteError::from)
    }

    fn cache_put(&self, key: &str, record: &LayerRecord) -> Result<(), RemoteError> {
        let Some(repo) = self.cache() else {
            return Ok(());
        };
        let entry = cache::Entry {
            key: key.to_string(),
            desc: record.desc.clone(),
            created_by: record.created_by.clone(),
        };
        self.rt.block_on(cache::put(
            &self.client,
            self.store,
            repo,
            &entry,
            &self.known,
        ))?;
        Ok(())
    }

    /// Pushes built images, parents first; returns what was pushed, one
    /// entry per repository an image went to.
    pub fn push(&self, spec: &Spec, images: &[&ImageOutcome]) -> Result<Vec<Pushed>, RemoteError> {
        self.push_with(spec, images, None)
    }

    /// [`Remote::push`], taking each image's evidence as it is made: its
    /// blobs (and, with the key, its signature's) go up beside the
    /// layers, and the manifests (the tags) only once `early` is closed
    /// having sent every image's.
    pub fn push_with(
        &self,
        spec: &Spec,
        images: &[&ImageOutcome],
        early: Option<EarlyEvidence<'_>>,
    ) -> Result<Vec<Pushed>, RemoteError> {
        let prefix = self.options.prefix(spec)?;
        // Parents first: a shared blob's first home is the image that adds
        // it, and children mount it from there.
        let mut images: Vec<&&ImageOutcome> = images.iter().collect();
        images.sort_by_key(|i| graph::depth(&i.name, |n| spec.parent_of(n)));
        let mut items = Vec::new();
        let mut meta = Vec::new();
        for image in images {
            let spec_image = &spec.images[&image.name];
            self.guess_mounts(spec, &prefix, image);
            let mut dests =
                destinations(&prefix, &image.name, &spec_image.tags, &self.options.tags)?;
            if self.options.no_latest {
                for tags in dests.values_mut() {
                    tags.retain(|t| t != "latest");
                }
                dests.retain(|_, tags| !tags.is_empty());
            }
            for (repo, tags) in dests {
                let dest: Reference = format!("{repo}:{}", tags[0])
                    .parse()
                    .map_err(RemoteError::Destination)?;
                items.push(transfer::PushItem {
                    record: &image.record,
                    dest: dest.clone(),
                    tags: tags[1..].to_vec(),
                });
                meta.push((
                    image.name.clone(),
                    dest.to_string(),
                    image.manifest.clone(),
                    tags,
                ));
            }
        }
        let side = |in_place| self.early_blobs(&items, &meta, in_place, early);
        let stats = self.rt.block_on(transfer::push_beside(
            &self.client,
            self.store,
            &items,
            &self.known,
            side,
        ))?;
        Ok(meta
            .into_iter()
            .zip(stats)
            .map(|((name, reference, digest, tags), stats)| Pushed {
                name,
                reference,
                digest,
                tags,
                stats,
                referrers: Vec::new(),
            })
            .collect())
    }

    /// Sends each image's evidence blobs, as `early` hands them over, to
    /// every repository the image goes to (the attach then finds them
    /// there and puts only manifests); fails when `early` says the
    /// evidence could not be made.
    async fn early_blobs(
        &self,
        items: &[transfer::PushItem<'_>],
        meta: &[(String, String, String, Vec<String>)],
        in_place: Vec<bool>,
        early: Option<EarlyEvidence<'_>>,
    ) -> Result<(), RegistryError> {
        use futures_util::{StreamExt, TryStreamExt};
        let Some(EarlyEvidence { incoming, key }) = early else {
            return Ok(());
        };
        // What each destination holds of its image's referrers is read now,
        // beside the uploads, so the attach after the tags only writes. A
        // read that fails here is made again there, and reported there.
        let signing = key.is_some();
        let priors = futures_util::stream::iter(items.iter().zip(meta))
            .map(|(item, (_, reference, digest, _))| async move {
                let read =
                    crate::sign::read_prior(&self.client, &item.dest, digest, signing, &self.api)
                        .await;
                if let (Ok(prior), Ok(mut priors)) = (read, self.priors.lock()) {
                    priors.insert(reference.clone(), prior);
                }
            })
            .buffer_unordered(EVIDENCE_PARALLEL)
            .collect::<Vec<()>>();
        let made = futures_util::stream::unfold(incoming, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        // Images side by side, but few requests at once: they are small,
        // and a registry flooded with them slows the layers' big uploads,
        // which every manifest waits for.
        let in_place = &in_place;
        let gate = tokio::sync::Semaphore::new(EVIDENCE_PARALLEL);
        let gate = &gate;
        let sent = made
            .map(|made| async move {
                let Some((name, blobs)) = made else {
                    return Err(RegistryError::Setup(
                        "the images' evidence could not be made: no tag was moved".into(),
                    ));
                };
                let mut jobs = Vec::new();
                // An image whose tags were all in place most likely has its
                // evidence there too: the attach sends what its listing lacks.
                let pushed = items.iter().zip(meta).zip(in_place);
                for ((item, (_, _, digest, tags)), _) in
                    pushed.filter(|((_, m), in_place)| m.0 == name && !**in_place)
                {
                    let r = &item.dest;
                    let mut all: BTreeMap<String, Vec<u8>> = blobs
                        .iter()
                        .map(|b| (crate::digest::digest_of(b).to_string(), b.clone()))
                        .collect();
                    if let Some(key) = key {
                        // The signature as the attach will make it where there
                        // is none yet (RFC 6979: the same bytes again).
                        let repo = crate::sign::repository(r);
                        let signed: Vec<_> = tags
                            .iter()
                            .map(|t| {
                                let id = format!("{repo}:{t}");
                                crate::sign::cosign::sign(
                                    key,
                                    &crate::sign::cosign::payload(&id, digest),
                                )
                            })
                            .collect();
                        let subject = (digest.as_str(), item.record.manifest_size);
                        for b in crate::sign::cosign::manifest(&signed, subject).blobs {
                            all.insert(crate::digest::digest_of(&b).to_string(), b);
                        }
                    }
                    for (d, b) in all {
                        jobs.push(async move {
                            let _permit = gate.acquire().await;
                            transfer::put_bytes(&self.client, r, &d, &b, &self.known).await
                        });
                    }
                }
                futures_util::future::try_join_all(jobs).await.map(|_| ())
            })
            .buffer_unordered(transfer::PARALLEL)
            .try_collect::<Vec<()>>();
        let (sent, _) = futures_util::future::join(sent, priors).await;
        sent.map(|_| ())
    }

    /// Where `image`'s layers probably are already, offered as mount
    /// sources (an upload if they are not).
    fn guess_mounts(&self, spec: &Spec, prefix: &str, image: &ImageOutcome) {
        // Layers built or fetched with a cache repository are in it.
        if let Some(cache) = &self.cache_repo {
            for l in image.record.layers.iter() {
                self.known
                    .guess(&cache.registry, &l.digest, &cache.repository);
            }
        }
        // The parent's layers most likely sit in the parent's repository.
        let spec_image = &spec.images[&image.name];
        if let Parent::Image(parent) = &spec_image.parent {
            let inherited = image
                .record
                .layers
                .len()
                .saturating_sub(spec_image.layers.len());
            if let Ok(r) = format!("{prefix}/{parent}:latest").parse::<Reference>() {
                for l in image.record.layers.iter().take(inherited) {
                    self.known.guess(&r.registry, &l.digest, &r.repository);
                }
            }
        }
    }
}

impl Puller for Remote<'_> {
    fn pull(&self, reference: &Reference) -> Result<ImageRecord, RemoteError> {
        self.pull_image(reference)
    }
}

impl Remote<'_> {
    /// Attaches each pushed image's referrers (by image name) in every
    /// repository it went to, and signs it there for each of its tags
    /// when `key` is given, in one update of its referrers index; records
    /// what was attached in `pushed`. Runs after the images' own push, so
    /// a referrer never names a manifest the registry lacks.
    pub fn attach(
        &self,
        pushed: &mut [Pushed],
        referrers: &BTreeMap<String, Vec<crate::attach::referrers::Referrer>>,
        key: Option<&p256::ecdsa::SigningKey>,
    ) -> Result<(), RemoteError> {
        use futures_util::StreamExt;
        let api = &self.api;
        // Each image's referrers are a few round trips in a row (read what
        // is there, put the blobs, the manifests, the index): images go
        // side by side so those do not add up over a fleet.
        let jobs = pushed.iter().enumerate().map(|(i, p)| async move {
            let r: Reference = p.reference.parse().map_err(RemoteError::Destination)?;
            let list = referrers
                .get(&p.name)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if list.is_empty() && key.is_none() {
                return Ok((i, Vec::new()));
            }
            let repo = crate::sign::repository(&r);
            let ids: Vec<String> = p.tags.iter().map(|t| format!("{repo}:{t}")).collect();
            // The manifest was pushed from the store: its size is there.
            let hex = crate::oci::image::hex_of(&p.digest);
            let size = self.store.blob_size(&hex).ok_or_else(|| {
                RemoteError::Registry(RegistryError::Io {
                    path: self.store.blob_path(&hex),
                    source: std::io::ErrorKind::NotFound.into(),
                })
            })?;
            let signing = key.map(|k| (k, ids.as_slice()));
            let prior = self
                .priors
                .lock()
                .ok()
                .and_then(|mut m| m.remove(&p.reference));
            let subject = (p.digest.as_str(), size);
            let attached = crate::sign::attach_signed(
                &self.client,
                &r,
                subject,
                list,
                signing,
                &self.known,
                api,
                prior,
            )
            .await
            .map_err(|e| match e {
                crate::sign::SignError::Registry(e) => RemoteError::Registry(e),
                other => RemoteError::Sign(Box::new(other)),
            })?;
            Ok::<_, RemoteError>((i, attached))
        });
        let results: Vec<Result<_, RemoteError>> = self.rt.block_on(
            futures_util::stream::iter(jobs)
                .buffer_unordered(ATTACH_PARALLEL)
                .collect(),
        );
        for r in results {
            let (i, attached) = r?;
            pushed[i].referrers = attached;
        }
        // Once for the run: every index written, read back side by side.
        self.rt.block_on(api.settle(&self.client))?;
        Ok(())
    }

    /// Attaches `referrers` to images of the graph this run did not push
    /// (`images`: name, manifest digest), in their own repository under the
    /// prefix: the parents' SBOMs that pushed images' thin SBOMs reference.
    /// Nothing is signed there.
    pub fn attach_unpushed(
        &self,
        spec: &Spec,
        images: &[(String, String)],
        referrers: &BTreeMap<String, Vec<crate::attach::referrers::Referrer>>,
    ) -> Result<(), RemoteError> {
        let prefix = self.options.prefix(spec)?;
        let mut targets: Vec<Pushed> = images
            .iter()
            .map(|(name, digest)| Pushed {
                name: name.clone(),
                reference: format!("{prefix}/{name}@{digest}"),
                digest: digest.clone(),
                tags: Vec::new(),
                stats: PushStats::default(),
                referrers: Vec::new(),
            })
            .collect();
        self.attach(&mut targets, referrers, None)
    }
}

/// Evidence handed to a push as it is made: `Some((image, blobs))` per
/// image, `None` when it could not be made; closed when all is sent.
pub struct EarlyEvidence<'k> {
    pub incoming: tokio::sync::mpsc::UnboundedReceiver<Option<(String, Vec<Vec<u8>>)>>,
    /// The signing key, whose signature blobs go up early too.
    pub key: Option<&'k p256::ecdsa::SigningKey>,
}

/// Evidence blobs sent at once while the layers go up.
const EVIDENCE_PARALLEL: usize = 2;

/// Images whose referrers are attached at once: each is a chain of small
/// requests, so more of them than blobs in flight keep the registry busy.
const ATTACH_PARALLEL: usize = 8;

impl LayerCache for Remote<'_> {
    fn lookup(&self, key: &str) -> Result<Option<LayerRecord>, RemoteError> {
        self.cache_lookup(key)
    }

    fn fetch(&self, key: &str, desc: &LayerDesc) -> Result<(), RemoteError> {
        self.cache_fetch(key, desc)
    }

    fn put(&self, key: &str, record: &LayerRecord) -> Result<(), RemoteError> {
        self.cache_put(key, record)
    }
}

impl<'a> Session<'a> {
    /// The same session, pulling `from:` references through `remote` and
    /// sharing layers through its cache repository, if it has one.
    pub fn with_remote(self, remote: &'a Remote<'_>) -> Session<'a> {
        let session = self.with_puller(remote);
        if remote.has_cache() {
            session.with_cache(remote)
        } else {
            session
        }
    }
}

/// An image pushed to one repository.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub name: String,
    /// The repository and the first tag.
    pub reference: String,
    pub digest: String,
    pub tags: Vec<String>,
    pub stats: PushStats,
    /// What was attached to it there (SBOMs, provenance, signature).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<crate::attach::referrers::Attached>,
}

/// Where an image's tags point, as (repository, tag) pairs without the
/// registry prefix, in order and without repeats: `name:latest` first,
/// then each of `tags`, a bare `tag` in the image's own repository and a
/// `repo:tag` in `repo`.
fn tag_targets<'t>(
    name: &str,
    tags: impl IntoIterator<Item = &'t String>,
) -> Vec<(String, String)> {
    let mut out = vec![(name.to_string(), "latest".to_string())];
    for t in tags {
        let target = match t.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (name.to_string(), t.clone()),
        };
        if !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// The `repo:tag` names an image carries in a docker-archive or OCI
/// layout output: `name:latest` plus its `tags:`.
pub fn repo_tags(name: &str, tags: &[String]) -> Vec<String> {
    tag_targets(name, tags)
        .into_iter()
        .map(|(repo, tag)| format!("{repo}:{tag}"))
        .collect()
}

/// References an image is pushed to, grouped by repository under
/// `prefix`: the image's name with `latest`, its `tags:` and the `extra`
/// tags.
pub fn destinations(
    prefix: &str,
    name: &str,
    tags: &[String],
    extra: &[String],
) -> Result<BTreeMap<String, Vec<String>>, RemoteError> {
    let mut by_repo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (repo, tag) in tag_targets(name, tags.iter().chain(extra)) {
        by_repo
            .entry(format!("{prefix}/{repo}"))
            .or_default()
            .push(tag);
    }
    for repo in by_repo.keys() {
        format!("{repo}:latest")
            .parse::<Reference>()
            .map_err(RemoteError::Destination)?;
    }
    Ok(by_repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_map_to_repositories() {
        let d = destinations(
            "reg.example/agency",
            "client-acme",
            &[
                "client-acme:5.1.4".into(),
                "5.1".into(),
                "fleet:acme".into(),
            ],
            &["ci-123".into()],
        )
        .ok()
        .unwrap();
        assert_eq!(
            d["reg.example/agency/client-acme"],
            ["latest", "5.1.4", "5.1", "ci-123"]
        );
        assert_eq!(d["reg.example/agency/fleet"], ["acme"]);
    }

    #[test]
    fn output_names_follow_the_tags_in_order() {
        let tags: Vec<String> = vec![
            "fleet:acme".into(),
            "5.1".into(),
            "client-acme:5.1".into(),
            "x:y/z".into(),
        ];
        assert_eq!(
            repo_tags("client-acme", &tags),
            [
                "client-acme:latest",
                "fleet:acme",
                "client-acme:5.1",
                "client-acme:x:y/z"
            ]
        );
    }
}
