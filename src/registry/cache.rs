//! The registry as a shared layer cache: each built layer is kept in a
//! cache repository under the tag `layer-<key>`, as a manifest whose config
//! is the layer's record. A runner with an empty store fetches the layer
//! instead of building it; pushes to the same registry then mount it.
use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{DescriptorBuilder, Digest, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use super::transfer::Known;
use super::{Client, Reference, RegistryError};
use crate::oci::image::{LayerDesc, canonical_json};
use crate::store::Store;

/// The config media type of a cache entry.
pub const CACHE_CONFIG: &str = "application/vnd.imgbuild.layer-cache.v1+json";

/// What a cache entry records of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub desc: LayerDesc,
    pub created_by: String,
}

pub fn tag(key: &str) -> String {
    format!("layer-{key}")
}

fn err(r: &Reference, reason: String) -> RegistryError {
    RegistryError::Protocol {
        reference: r.to_string(),
        reason,
    }
}

/// Brings the layer blob of `entry` (from [`lookup`] in `repo`) into the
/// store, its digest and size checked.
pub async fn fetch(
    client: &Client,
    store: &Store,
    repo: &Reference,
    entry: &Entry,
) -> Result<(), RegistryError> {
    let at = repo.with_tag(&tag(&entry.key));
    super::pull::fetch_blob(client, store, &at, &entry.desc.digest, entry.desc.size).await
}

/// Looks up `key` in `repo`: the entry (the manifest and its config, both
/// small), the layer blob not fetched.
pub async fn lookup(
    client: &Client,
    repo: &Reference,
    key: &str,
) -> Result<Option<Entry>, RegistryError> {
    let at = repo.with_tag(&tag(key));
    let (bytes, _) = match client.get_manifest(&at).await {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| err(&at, format!("unreadable cache manifest: {e}")))?;
    if manifest.config().media_type().to_string() != CACHE_CONFIG || manifest.layers().len() != 1 {
        return Err(err(&at, "not an imgbuild cache entry".into()));
    }
    // Capped and checked against its digest.
    let config = client
        .get_config(
            &at,
            manifest.config().digest().as_ref(),
            manifest.config().size(),
        )
        .await?;
    let entry: Entry = serde_json::from_slice(&config)
        .map_err(|e| err(&at, format!("unreadable cache entry: {e}")))?;
    let layer = &manifest.layers()[0];
    if entry.key != key
        || entry.desc.digest != layer.digest().to_string()
        || entry.desc.size != layer.size()
    {
        return Err(err(&at, "cache entry disagrees with its manifest".into()));
    }
    Ok(Some(entry))
}

/// Stores a built layer in the cache repository.
pub async fn put(
    client: &Client,
    store: &Store,
    repo: &Reference,
    entry: &Entry,
    known: &Known,
) -> Result<(), RegistryError> {
    let at = repo.with_tag(&tag(&entry.key));
    let config = canonical_json(entry);
    let config_hex = store.put_blob(&config)?;
    let config_digest = format!("sha256:{config_hex}");
    let blobs: HashMap<String, u64> = HashMap::from([
        (entry.desc.digest.clone(), entry.desc.size),
        (config_digest.clone(), config.len() as u64),
    ]);
    for (digest, size) in &blobs {
        super::transfer::put_blob(client, store, &at, digest, *size, known).await?;
    }
    let digest = |d: &str| Digest::from_str(d).map_err(|_| err(&at, format!("bad digest {d}")));
    let build = |e: oci_spec::OciSpecError| err(&at, e.to_string());
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::Other(CACHE_CONFIG.to_string()))
                .digest(digest(&config_digest)?)
                .size(config.len() as u64)
                .build()
                .map_err(build)?,
        )
        .layers(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::from(entry.desc.media_type.as_str()))
                .digest(digest(&entry.desc.digest)?)
                .size(entry.desc.size)
                .build()
                .map_err(build)?,
        ])
        .build()
        .map_err(build)?;
    client
        .put_manifest(
            &at,
            &canonical_json(&manifest),
            MediaType::ImageManifest.as_ref(),
        )
        .await
}
