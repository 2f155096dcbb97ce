//! Pulling an image into the store: the platform's manifest, then every
//! blob streamed to a temporary file, its digest and size checked, renamed
//! into place. Layers whose entries would escape the root are refused.
use std::str::FromStr;

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use super::{Client, Reference, RegistryError};
use crate::digest::sha256_hex;
use crate::oci::image::{ImageRecord, LayerDesc, hex_of, parse_config};
use crate::store::{Kind, Store};

/// A pulled image, remembered by reference so a build can go on offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pulled {
    pub reference: String,
    pub record: ImageRecord,
}

fn pulled_key(r: &Reference) -> String {
    sha256_hex(r.to_string().as_bytes())
}

/// The last pull of `r`, if any (for offline builds).
pub fn last_pull(store: &Store, r: &Reference) -> Result<Option<Pulled>, RegistryError> {
    Ok(store.get(Kind::Pulled, &pulled_key(r))?)
}

/// Docker's media types name the same bytes as OCI's.
fn oci_layer_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            MediaType::ImageLayerGzip.to_string()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer.to_string(),
        other => other.to_string(),
    }
}

/// Pulls `r` for `os`/`arch` into the store.
pub async fn pull(
    client: &Client,
    store: &Store,
    r: &Reference,
    os: &str,
    arch: &str,
) -> Result<ImageRecord, RegistryError> {
    let bad = |reason: String| RegistryError::Protocol {
        reference: r.to_string(),
        reason,
    };
    // Checked against the digest `r` pins, if any, and capped in size.
    let (mut bytes, mut media_type) = client.get_manifest(r).await?;
    let mut at = r.clone();
    if media_type.contains("index") || media_type.contains("manifest.list") {
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("unreadable index: {e}")))?;
        let chosen = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == os && p.architecture().to_string() == arch
                })
            })
            .ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests()
                    .iter()
                    .filter_map(|m| m.platform().as_ref())
                    .map(|p| format!("{}/{}", p.os(), p.architecture()))
                    .collect();
                bad(format!(
                    "no image for {os}/{arch} in its index (it has {})",
                    have.join(", ")
                ))
            })?;
        at = r.with_digest(chosen.digest().as_ref());
        (bytes, media_type) = client.get_manifest(&at).await?;
    }
    let _ = media_type;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
    let config_digest = manifest.config().digest().to_string();
    let limit = client.manifest_limit;
    if manifest.config().size() > limit {
        return Err(RegistryError::TooLarge {
            reference: r.to_string(),
            what: format!("config {config_digest}"),
            limit,
        });
    }
    fetch_blob(client, store, &at, &config_digest, manifest.config().size()).await?;
    let config_bytes = store.read_blob(&hex_of(&config_digest))?;
    let config =
        parse_config(&config_bytes, &format!("config of {r}")).map_err(|e| bad(e.to_string()))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(format!(
            "{} layers but {} diff_ids in its config",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let layers: Vec<LayerDesc> = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| LayerDesc {
            digest: l.digest().to_string(),
            diff_id: diff_id.clone(),
            size: l.size(),
            media_type: oci_layer_type(l.media_type().as_ref()),
        })
        .collect();
    // Side by side; one layer that cannot come does not stop the others
    // (they stay in the store for the next try), and its error names it.
    let at = &at;
    let jobs = layers
        .iter()
        .map(|l| async move {
            fetch_blob(client, store, at, &l.digest, l.size).await?;
            check_layer(store, at, &l.digest, &l.media_type)
        })
        .collect();
    super::transfer::bounded(jobs).await?;
    store.put_blob(&bytes)?;
    let record = ImageRecord {
        manifest: format!("sha256:{}", sha256_hex(&bytes)),
        manifest_size: bytes.len() as u64,
        config: config_digest,
        config_size: manifest.config().size(),
        layers: layers.into(),
    };
    store.put(
        Kind::Pulled,
        &pulled_key(r),
        &Pulled {
            reference: r.to_string(),
            record: record.clone(),
        },
    )?;
    Ok(record)
}

/// Streams a blob into the store unless it is there, checking it.
pub(super) async fn fetch_blob(
    client: &Client,
    store: &Store,
    r: &Reference,
    digest: &str,
    size: u64,
) -> Result<(), RegistryError> {
    let hex = hex_of(digest);
    if store.blob_size(&hex) == Some(size) {
        return Ok(());
    }
    oci_spec::image::Digest::from_str(digest).map_err(|_| RegistryError::Protocol {
        reference: r.to_string(),
        reason: format!("`{digest}` is not a digest"),
    })?;
    let tmp = store.temp_file()?;
    let mut file = tmp.reopen().map_err(|e| RegistryError::Io {
        path: tmp.path().to_path_buf(),
        source: e,
    })?;
    // Resumed or restarted as the connection allows; digest and size
    // checked, never more than `size` bytes read.
    client.get_blob(r, digest, size, &mut file).await?;
    drop(file);
    store.commit_blob(tmp, &hex)?;
    Ok(())
}

fn check_layer(
    store: &Store,
    r: &Reference,
    digest: &str,
    media_type: &str,
) -> Result<(), RegistryError> {
    let path = store.blob_path(&hex_of(digest));
    match crate::layer::scan::check_paths(&path, media_type) {
        Ok(()) => Ok(()),
        Err(crate::layer::scan::PathProblem::Io(e)) => Err(RegistryError::Io { path, source: e }),
        Err(crate::layer::scan::PathProblem::Escapes { entry, why }) => {
            // Not kept: nothing may build on it.
            let _ = std::fs::remove_file(&path);
            Err(RegistryError::Protocol {
                reference: r.to_string(),
                reason: format!("layer {digest} is refused: its entry `{entry}` {why}"),
            })
        }
    }
}
