//! Moving images: push from the store, tag, copy between repositories.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

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
    }

    /// Records where a blob probably is, unless its place is known.
    pub fn guess(&self, registry: &str, digest: &str, repository: &str) {
        if let Ok(mut m) = self.by_digest.lock() {
            m.entry((registry.to_string(), digest.to_string()))
                .or_insert_with(|| repository.to_string());
        }
    }
}

/// Pushes an image from the store to `dest` and each of `tags` (same
/// repository). Blobs first, in parallel; the manifest only after every
/// blob is confirmed, so no tag ever names a missing blob.
pub async fn push(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    dest: &Reference,
    tags: &[String],
    known: &Known,
) -> Result<PushStats, RegistryError> {
    let stats = Arc::new(Mutex::new(PushStats::default()));
    let mut blobs: Vec<(String, u64)> = record
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    blobs.push((record.config.clone(), record.config_size));
    let mut seen = BTreeSet::new();
    blobs.retain(|(d, _)| seen.insert(d.clone()));
    let sem = Arc::new(Semaphore::new(PARALLEL));
    let tasks = blobs.iter().map(|(digest, size)| {
        let sem = sem.clone();
        let stats = stats.clone();
        async move {
            let _permit = sem
                .acquire()
                .await
                .map_err(|e| RegistryError::Setup(e.to_string()))?;
            push_blob(client, store, dest, digest, *size, known, &stats).await
        }
    });
    for r in futures_join_all(tasks).await {
        r?;
    }
    let manifest = store.read_blob(&hex_of(&record.manifest))?;
    let media = MediaType::ImageManifest.to_string();
    let mut targets: Vec<Reference> = vec![dest.clone()];
    targets.extend(tags.iter().map(|t| dest.with_tag(t)));
    for t in &targets {
        client.put_manifest(t, &manifest, &media).await?;
    }
    let mut s = stats.lock().map(|s| s.clone()).unwrap_or_default();
    s.manifests = targets.len() as u64;
    Ok(s)
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
) -> Result<(), RegistryError> {
    push_blob(
        client,
        store,
        dest,
        digest,
        size,
        known,
        &Mutex::new(PushStats::default()),
    )
    .await
}

async fn push_blob(
    client: &Client,
    store: &Store,
    dest: &Reference,
    digest: &str,
    size: u64,
    known: &Known,
    stats: &Mutex<PushStats>,
) -> Result<(), RegistryError> {
    let bump = |f: &dyn Fn(&mut PushStats)| {
        if let Ok(mut s) = stats.lock() {
            f(&mut s);
        }
    };
    if client.blob_size(dest, digest).await? == Some(size) {
        bump(&|s| s.blobs_present += 1);
        known.add(&dest.registry, digest, &dest.repository);
        return Ok(());
    }
    if let Some(from) = known.get(&dest.registry, digest)
        && from != dest.repository
        && client.mount(dest, digest, &from).await?
    {
        bump(&|s| s.blobs_mounted += 1);
        return Ok(());
    }
    let path = store.blob_path(&hex_of(digest));
    client.upload(dest, digest, size, &path, &|_| {}).await?;
    // Confirm before anything names it.
    if client.blob_size(dest, digest).await? != Some(size) {
        return Err(RegistryError::Protocol {
            reference: dest.to_string(),
            reason: format!("blob {digest} is not there after its upload"),
        });
    }
    known.add(&dest.registry, digest, &dest.repository);
    bump(&|s| {
        s.blobs_uploaded += 1;
        s.bytes_uploaded += size;
    });
    Ok(())
}

/// Awaits futures side by side, results in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futs).await
}

/// Points `dst` (a tag in any repository of the same registry, or another
/// registry) at what `src` names. Within one repository no blob moves.
pub async fn copy(
    client: &Client,
    src: &Reference,
    dst: &Reference,
    known: &Known,
) -> Result<String, RegistryError> {
    let (bytes, media_type) = client.get_manifest(src).await?;
    let digest = format!("sha256:{}", crate::oci::digest::sha256_hex(&bytes));
    if !(src.registry == dst.registry && src.repository == dst.repository) {
        let blobs = referenced(src, &bytes, &media_type, client).await?;
        for (d, size) in blobs {
            copy_blob(client, src, dst, &d, size, known).await?;
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
    let mut hashing = crate::oci::digest::HashingWriter::new(&mut f);
    client.get_blob(src, digest, &mut hashing).await?;
    let (_, hex, n) = hashing.finish();
    if format!("sha256:{hex}") != digest || n != size {
        return Err(RegistryError::Mismatch {
            reference: src.to_string(),
            digest: digest.to_string(),
            expected: format!("{digest} ({size} bytes)"),
            actual: format!("sha256:{hex} ({n} bytes)"),
        });
    }
    client
        .upload(dst, digest, size, tmp.path(), &|_| {})
        .await?;
    known.add(&dst.registry, digest, &dst.repository);
    Ok(())
}
