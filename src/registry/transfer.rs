//! Moving images: push from the store, tag, copy between repositories.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use tokio::sync::Semaphore;

use super::{Client, Reference, RegistryError};
use crate::oci::image::{ImageRecord, hex_of};
use crate::store::Store;

/// Blobs sent at once.
pub const PARALLEL: usize = 4;

/// What a push did, for reports and tests.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PushStats {
    pub blobs_present: u64,
    pub blobs_mounted: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub manifests: u64,
}

/// Remembers where blobs live on each registry during a run, so a second
/// repository can mount instead of upload.
#[derive(Default)]
pub struct Known {
    by_digest: Mutex<HashMap<(String, String), String>>,
    /// Every (registry, repository, digest) seen: a blob many repositories
    /// share (the empty config of every referrer) is not sent twice.
    placed: Mutex<HashSet<(String, String, String)>>,
}

impl Known {
    pub fn get(&self, registry: &str, digest: &str) -> Option<String> {
        self.by_digest
            .lock()
            .ok()?
            .get(&(registry.to_string(), digest.to_string()))
            .cloned()
    }

    /// Records where a blob was seen; replaces a guess.
    pub fn add(&self, registry: &str, digest: &str, repository: &str) {
        if let Ok(mut m) = self.by_digest.lock() {
            m.insert(
                (registry.to_string(), digest.to_string()),
                repository.to_string(),
            );
        }
        if let Ok(mut p) = self.placed.lock() {
            p.insert((
                registry.to_string(),
                repository.to_string(),
                digest.to_string(),
            ));
        }
    }

    /// Whether this run saw the blob in this repository.
    pub fn has(&self, registry: &str, repository: &str, digest: &str) -> bool {
        self.placed.lock().is_ok_and(|p| {
            p.contains(&(
                registry.to_string(),
                repository.to_string(),
                digest.to_string(),
            ))
        })
    }

    /// Records where a blob probably is, unless its place is known.
    pub fn guess(&self, registry: &str, digest: &str, repository: &str) {
        if let Ok(mut m) = self.by_digest.lock() {
            m.entry((registry.to_string(), digest.to_string()))
                .or_insert_with(|| repository.to_string());
        }
    }
}

/// One image to push: where, and under which further tags (same repository).
pub struct PushItem<'a> {
    pub record: &'a ImageRecord,
    pub dest: Reference,
    pub tags: Vec<String>,
}

fn blobs_of(record: &ImageRecord) -> Vec<(String, u64)> {
    let mut blobs: Vec<(String, u64)> = record
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    blobs.push((record.config.clone(), record.config_size));
    let mut seen = BTreeSet::new();
    blobs.retain(|(d, _)| seen.insert(d.clone()));
    blobs
}

/// Runs `jobs` at most `PARALLEL` at a time, each to its end; the first
/// error wins.
pub async fn bounded<F>(jobs: Vec<F>) -> Result<(), RegistryError>
where
    F: std::future::Future<Output = Result<(), RegistryError>>,
{
    let sem = Semaphore::new(PARALLEL);
    let sem = &sem;
    let all = jobs.into_iter().map(|job| async move {
        let _permit = sem
            .acquire()
            .await
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        job.await
    });
    futures_util::future::join_all(all)
        .await
        .into_iter()
        .collect()
}

/// Pushes several images at once, in three phases so a fleet's shared
/// blobs go up once and side by side: (1) each distinct blob to the first
/// repository that needs it, all in parallel, so a big Moodle layer does
/// not hold up fifty small clients; (2) every other repository mounts what
/// phase 1 put; (3) manifests, only after every blob is confirmed, so no
/// tag ever names a missing blob.
pub async fn push_many(
    client: &Client,
    store: &Store,
    items: &[PushItem<'_>],
    known: &Known,
) -> Result<Vec<PushStats>, RegistryError> {
    push_beside(client, store, items, known, |_| async { Ok(()) }).await
}

/// [`push_many`], with `side` run beside the blob uploads and the
/// manifests (the tags) put only once both are done: the images' SBOMs
/// are made and their blobs sent while the layers go up, and a failure
/// there leaves every tag where it was. `side` is told which items had
/// every tag in place already (nothing of theirs is pushed).
pub async fn push_beside<S, F>(
    client: &Client,
    store: &Store,
    items: &[PushItem<'_>],
    known: &Known,
    side: S,
) -> Result<Vec<PushStats>, RegistryError>
where
    S: FnOnce(Vec<bool>) -> F,
    F: std::future::Future<Output = Result<(), RegistryError>>,
{
    let stats: Vec<Mutex<PushStats>> = items
        .iter()
        .map(|_| Mutex::new(PushStats::default()))
        .collect();
    let current = tags_in_place(client, items).await?;
    let mut first: Vec<(usize, String, u64)> = Vec::new();
    let mut rest: Vec<(usize, String, u64)> = Vec::new();
    let mut homes: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        // A tag already naming this manifest means its repository holds
        // every blob of it (a registry takes a manifest only then): an
        // unchanged image of a fleet costs a HEAD per tag, no blob check
        // and no manifest put; its blobs are offered for mounting.
        if current[i].iter().any(|&c| c) {
            let blobs = blobs_of(item.record);
            for (digest, _) in &blobs {
                known.add(&item.dest.registry, digest, &item.dest.repository);
            }
            if let Ok(mut s) = stats[i].lock() {
                s.blobs_present += blobs.len() as u64;
            }
            continue;
        }
        for (digest, size) in blobs_of(item.record) {
            let home = (item.dest.registry.clone(), digest.clone());
            if homes.insert(home) {
                first.push((i, digest, size));
            } else {
                rest.push((i, digest, size));
            }
        }
    }
    // Biggest first: the long uploads start at once.
    first.sort_by_key(|b| std::cmp::Reverse(b.2));
    let stats_of = |i: usize| &stats[i];
    let blobs = async {
        for phase in [first, rest] {
            let jobs = phase
                .iter()
                .map(|(i, digest, size)| async move {
                    let placed =
                        put_blob(client, store, &items[*i].dest, digest, *size, known).await?;
                    if let Ok(mut s) = stats_of(*i).lock() {
                        s.count(placed);
                    }
                    Ok(())
                })
                .collect();
            bounded(jobs).await?;
        }
        Ok::<(), RegistryError>(())
    };
    let in_place = current.iter().map(|c| c.iter().all(|&c| c)).collect();
    let (blobs, side) = futures_util::future::join(blobs, side(in_place)).await;
    blobs?;
    side?;
    let media = MediaType::ImageManifest.to_string();
    let mut puts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let manifest = store.read_blob(&hex_of(&item.record.manifest))?;
        let targets: Vec<Reference> = targets_of(item)
            .into_iter()
            .zip(&current[i])
            .filter(|(_, in_place)| !**in_place)
            .map(|(t, _)| t)
            .collect();
        if let Ok(mut s) = stats[i].lock() {
            s.manifests = targets.len() as u64;
        }
        for t in targets {
            let manifest = manifest.clone();
            let media = media.clone();
            puts.push(async move { client.put_manifest(&t, &manifest, &media).await });
        }
    }
    bounded(puts).await?;
    Ok(stats
        .into_iter()
        .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect())
}

/// Pushes an image from the store to `dest` and each of `tags`.
pub async fn push(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    dest: &Reference,
    tags: &[String],
    known: &Known,
) -> Result<PushStats, RegistryError> {
    let item = PushItem {
        record,
        dest: dest.clone(),
        tags: tags.to_vec(),
    };
    let mut stats = push_many(client, store, std::slice::from_ref(&item), known).await?;
    Ok(stats.pop().unwrap_or_default())
}

/// How a blob came to be in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// It was there already.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Uploaded, this many bytes.
    Uploaded(u64),
}

impl PushStats {
    fn count(&mut self, placed: Placed) {
        match placed {
            Placed::Present => self.blobs_present += 1,
            Placed::Mounted => self.blobs_mounted += 1,
            Placed::Uploaded(bytes) => {
                self.blobs_uploaded += 1;
                self.bytes_uploaded += bytes;
            }
        }
    }
}

/// The item's tag and its further tags, in that order.
fn targets_of(item: &PushItem<'_>) -> Vec<Reference> {
    let mut targets = vec![item.dest.clone()];
    targets.extend(item.tags.iter().map(|t| item.dest.with_tag(t)));
    targets
}

/// For each item, which of its tags already name its manifest. A failed
/// check only means "not known": the push then does it.
async fn tags_in_place(
    client: &Client,
    items: &[PushItem<'_>],
) -> Result<Vec<Vec<bool>>, RegistryError> {
    let found: Vec<Vec<Mutex<bool>>> = items
        .iter()
        .map(|i| (0..=i.tags.len()).map(|_| Mutex::new(false)).collect())
        .collect();
    let found_ref = &found;
    let mut heads = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for (k, target) in targets_of(item).into_iter().enumerate() {
            heads.push(async move {
                if let Ok(Some(d)) = client.head_manifest(&target).await
                    && d == item.record.manifest
                    && let Ok(mut f) = found_ref[i][k].lock()
                {
                    *f = true;
                }
                Ok(())
            });
        }
    }
    bounded(heads).await?;
    Ok(found
        .into_iter()
        .map(|v| {
            v.into_iter()
                .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
                .collect()
        })
        .collect())
}

/// Makes sure `dest`'s repository has a blob from the store: present,
/// mounted from where this run saw it, or uploaded.
pub async fn put_blob(
    client: &Client,
    store: &Store,
    dest: &Reference,
    digest: &str,
    size: u64,
    known: &Known,
) -> Result<Placed, RegistryError> {
    if client.blob_size(dest, digest).await? == Some(size) {
        known.add(&dest.registry, digest, &dest.repository);
        return Ok(Placed::Present);
    }
    if let Some(from) = known.get(&dest.registry, digest)
        && from != dest.repository
        && client.mount(dest, digest, &from).await?
    {
        return Ok(Placed::Mounted);
    }
    let path = store.blob_path(&hex_of(digest));
    // The upload's 201, naming this digest, confirms it.
    client.upload(dest, digest, size, &path, &|_| {}).await?;
    known.add(&dest.registry, digest, &dest.repository);
    Ok(Placed::Uploaded(size))
}

/// Makes sure `dest`'s repository has a small blob held in memory (an
/// SBOM, a signature): nothing when this run put it there, a mount when it
/// saw it in another repository, else one upload without asking first (a
/// HEAD would cost as much as the upload of a few KB).
pub async fn put_bytes(
    client: &Client,
    dest: &Reference,
    digest: &str,
    bytes: &[u8],
    known: &Known,
) -> Result<(), RegistryError> {
    if known.has(&dest.registry, &dest.repository, digest) {
        return Ok(());
    }
    let mounted = match known.get(&dest.registry, digest) {
        Some(from) if from != dest.repository => client.mount(dest, digest, &from).await?,
        _ => false,
    };
    if !mounted {
        client.upload_bytes(dest, digest, bytes).await?;
    }
    known.add(&dest.registry, digest, &dest.repository);
    Ok(())
}

/// Points `dst` (a tag in any repository of the same registry, or another
/// registry) at what `src` names. Within one repository no blob moves.
pub async fn copy(
    client: &Client,
    src: &Reference,
    dst: &Reference,
    known: &Known,
) -> Result<String, RegistryError> {
    // Capped, and checked against the digest `src` pins, if any.
    let (bytes, media_type) = client.get_manifest(src).await?;
    let digest = format!("sha256:{}", crate::digest::sha256_hex(&bytes));
    if !(src.registry == dst.registry && src.repository == dst.repository) {
        let blobs = referenced(src, &bytes, &media_type, client).await?;
        // Child manifests only once their own blobs are there.
        let (children, blobs): (Vec<_>, Vec<_>) = blobs
            .into_iter()
            .partition(|(d, _)| d.starts_with("manifest:"));
        for group in [blobs, children] {
            let jobs = group
                .iter()
                .map(|(d, size)| copy_blob(client, src, dst, d, *size, known))
                .collect();
            bounded(jobs).await?;
        }
    }
    client.put_manifest(dst, &bytes, &media_type).await?;
    Ok(digest)
}

/// The blobs (and child manifests, copied first) a manifest needs.
async fn referenced(
    src: &Reference,
    bytes: &[u8],
    media_type: &str,
    client: &Client,
) -> Result<Vec<(String, u64)>, RegistryError> {
    let bad = |e: serde_json::Error| RegistryError::Protocol {
        reference: src.to_string(),
        reason: format!("unreadable manifest: {e}"),
    };
    if media_type.contains("index") || media_type.contains("manifest.list") {
        let index: ImageIndex = serde_json::from_slice(bytes).map_err(bad)?;
        let mut all = Vec::new();
        for m in index.manifests() {
            let child = src.with_digest(m.digest().as_ref());
            let (b, mt) = client.get_manifest(&child).await?;
            all.extend(Box::pin(referenced(&child, &b, &mt, client)).await?);
            all.push((format!("manifest:{}", m.digest()), m.size()));
        }
        return Ok(all);
    }
    let m: ImageManifest = serde_json::from_slice(bytes).map_err(bad)?;
    let mut all: Vec<(String, u64)> = m
        .layers()
        .iter()
        .map(|l| (l.digest().to_string(), l.size()))
        .collect();
    all.push((m.config().digest().to_string(), m.config().size()));
    Ok(all)
}

async fn copy_blob(
    client: &Client,
    src: &Reference,
    dst: &Reference,
    digest: &str,
    size: u64,
    known: &Known,
) -> Result<(), RegistryError> {
    if let Some(child) = digest.strip_prefix("manifest:") {
        // A child manifest of an index: copy it by digest.
        let (b, mt) = client.get_manifest(&src.with_digest(child)).await?;
        return client.put_manifest(&dst.with_digest(child), &b, &mt).await;
    }
    if client.blob_size(dst, digest).await? == Some(size) {
        return Ok(());
    }
    if src.registry == dst.registry && client.mount(dst, digest, &src.repository).await? {
        return Ok(());
    }
    if let Some(from) = known.get(&dst.registry, digest)
        && client.mount(dst, digest, &from).await?
    {
        return Ok(());
    }
    // Across registries: through a temporary file, so memory stays flat.
    let tmp = tempfile::NamedTempFile::new().map_err(|e| RegistryError::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut f = tmp.reopen().map_err(|e| RegistryError::Io {
        path: tmp.path().to_path_buf(),
        source: e,
    })?;
    // Resumed or restarted as the connection allows, digest checked.
    client.get_blob(src, digest, size, &mut f).await?;
    drop(f);
    client
        .upload(dst, digest, size, tmp.path(), &|_| {})
        .await?;
    known.add(&dst.registry, digest, &dst.repository);
    Ok(())
}
