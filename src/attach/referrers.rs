//! OCI 1.1 referrers: artifacts (SBOMs, provenance, signatures) whose
//! manifest names the image in `subject`. A registry with the referrers
//! API indexes them itself; for one without (Debian's distribution 2.8),
//! the distribution spec's fallback is kept: an image index tagged
//! `sha256-<hex>` (the subject's digest) listing every referrer.
use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::oci::image::{canonical_json, hex_of};
use crate::registry::client::Scope;
use crate::registry::transfer::{Known, put_blob};
use crate::registry::{Client, Reference, RegistryError};
use crate::store::Store;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI 1.1 empty config (`{}`).
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY: &[u8] = b"{}";

/// A referrer ready to push: its manifest, the blobs it names, and the
/// tag it also goes under (cosign's `.sig`), if any.
pub struct Referrer {
    pub artifact_type: String,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
    pub tag: Option<String>,
    /// Annotations copied into the index entry.
    pub annotations: BTreeMap<String, String>,
}

impl Referrer {
    pub fn digest(&self) -> String {
        crate::digest::digest_of(&self.manifest).to_string()
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": crate::digest::digest_of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An artifact manifest: one blob of `blob_type`, the empty config, the
/// image as `subject`.
pub fn artifact(
    artifact_type: &str,
    blob_type: &str,
    blob: Vec<u8>,
    subject: (&str, u64),
    annotations: BTreeMap<String, String>,
) -> Referrer {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(EMPTY_TYPE, EMPTY),
        "layers": [descriptor(blob_type, &blob)],
        "subject": { "mediaType": MANIFEST, "digest": subject.0, "size": subject.1 },
    });
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    Referrer {
        artifact_type: artifact_type.to_string(),
        manifest: canonical_json(&m),
        blobs: vec![EMPTY.to_vec(), blob],
        tag: None,
        annotations,
    }
}

/// The fallback tag for `subject`'s referrers: `sha256-<hex>`.
pub fn tag_of(subject: &str) -> String {
    format!("sha256-{}", hex_of(subject))
}

/// The index entry's annotation naming the tag an artifact also goes
/// under (cosign's `.sig`): a newer one under the same tag replaces it.
pub const TAG_NOTE: &str = "dev.imgbuild.tag";

/// Whether the registry answers the referrers API for this repository.
pub(crate) async fn has_api(
    client: &Client,
    r: &Reference,
    subject: &str,
) -> Result<bool, RegistryError> {
    let url = client.url(r, &format!("referrers/{subject}"));
    let resp = client
        .send(
            r,
            &[Scope::pull(&r.repository)],
            "asking for referrers",
            &|h| h.get(&url),
        )
        .await?;
    Ok(resp.status() == StatusCode::OK
        && resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(INDEX)))
}

/// The referrers of `subject` in `r`'s repository, as index entries: from
/// the referrers API where there is one, else from the fallback tag.
pub async fn list(
    client: &Client,
    r: &Reference,
    subject: &str,
) -> Result<Vec<Value>, RegistryError> {
    let url = client.url(r, &format!("referrers/{subject}"));
    let resp = client
        .send(
            r,
            &[Scope::pull(&r.repository)],
            "asking for referrers",
            &|h| h.get(&url),
        )
        .await?;
    let is_index = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(INDEX));
    if resp.status() == StatusCode::OK && is_index {
        let v: Value = resp.json().await.map_err(|e| RegistryError::Protocol {
            reference: r.to_string(),
            reason: format!("unreadable referrers index: {e}"),
        })?;
        return Ok(v["manifests"].as_array().cloned().unwrap_or_default());
    }
    fallback_index(client, r, subject).await
}

async fn fallback_index(
    client: &Client,
    r: &Reference,
    subject: &str,
) -> Result<Vec<Value>, RegistryError> {
    match client.get_manifest(&r.with_tag(&tag_of(subject))).await {
        Ok((bytes, _)) => {
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
                reference: r.with_tag(&tag_of(subject)).to_string(),
                reason: format!("the referrers tag is not an index: {e}"),
            })?;
            Ok(v["manifests"].as_array().cloned().unwrap_or_default())
        }
        Err(RegistryError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Pushes `referrers` of `subject` (digest, size) into `r`'s repository:
/// their blobs, their manifests (by digest, and under their tag), then the
/// fallback index when the registry has no referrers API. An entry of the
/// index is replaced by one of the same artifact type and tag (a `.sig`
/// that gained a signature); the rest are kept. Repeating a push changes
/// nothing: entries are keyed by digest and sorted.
pub async fn attach(
    client: &Client,
    store: &Store,
    r: &Reference,
    subject: &str,
    referrers: &[Referrer],
    known: &Known,
) -> Result<Vec<String>, RegistryError> {
    let mut pushed = Vec::new();
    for referrer in referrers {
        for blob in &referrer.blobs {
            let hex = store.put_blob(blob)?;
            put_blob(
                client,
                store,
                r,
                &format!("sha256:{hex}"),
                blob.len() as u64,
                known,
            )
            .await?;
        }
        let digest = referrer.digest();
        client
            .put_manifest(&r.with_digest(&digest), &referrer.manifest, MANIFEST)
            .await?;
        if let Some(tag) = &referrer.tag {
            client
                .put_manifest(&r.with_tag(tag), &referrer.manifest, MANIFEST)
                .await?;
        }
        pushed.push(digest);
    }
    if has_api(client, r, subject).await? {
        return Ok(pushed);
    }
    let added = referrers
        .iter()
        .map(|referrer| {
            let mut annotations = referrer.annotations.clone();
            if let Some(t) = &referrer.tag {
                annotations.insert(TAG_NOTE.into(), t.clone());
            }
            let mut e = json!({
                "mediaType": MANIFEST,
                "digest": referrer.digest(),
                "size": referrer.manifest.len(),
                "artifactType": referrer.artifact_type,
            });
            if !annotations.is_empty() {
                e["annotations"] = json!(annotations);
            }
            e
        })
        .collect();
    add_to_index(client, r, subject, added).await?;
    Ok(pushed)
}

/// Adds `added` (index entries) to `subject`'s fallback index in `r`'s
/// repository: an entry of the same digest, or of the same tag, is
/// replaced; the rest are kept. Entries are sorted, so adding what is
/// there already writes nothing.
///
/// The registry offers no conditional write of a tag, so two jobs adding
/// to the same index at once could each write over the other's entries:
/// after writing, the index is read back, and merged and written again
/// (a few times, after a pause that grows) until it holds every entry
/// added here.
pub async fn add_to_index(
    client: &Client,
    r: &Reference,
    subject: &str,
    added: Vec<Value>,
) -> Result<(), RegistryError> {
    const TRIES: u32 = 6;
    let mut current = fallback_index(client, r, subject).await?;
    for _ in 0..TRIES {
        let merged = merge_entries(current.clone(), &added);
        if merged == current {
            return Ok(());
        }
        let index = canonical_json(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": merged,
        }));
        client
            .put_manifest(&r.with_tag(&tag_of(subject)), &index, INDEX)
            .await?;
        // Another writer that read the index before this write lands its
        // own a moment later: read back after a short, random pause, so
        // that the two do not keep reading back in step.
        tokio::time::sleep(std::time::Duration::from_millis(jitter_ms())).await;
        current = fallback_index(client, r, subject).await?;
    }
    Ok(())
}

/// 40 to 160 ms, from the OS's randomness.
fn jitter_ms() -> u64 {
    use rand_core::RngCore;
    40 + u64::from(rand_core::OsRng.next_u32() % 120)
}

/// `entries` with `added` merged in, sorted by artifact type and digest.
fn merge_entries(mut entries: Vec<Value>, added: &[Value]) -> Vec<Value> {
    let tag_of_entry = |e: &Value| e["annotations"][TAG_NOTE].as_str().map(str::to_string);
    for e in added {
        let digest = e["digest"].as_str().map(str::to_string);
        let tag = tag_of_entry(e);
        entries.retain(|old| {
            old["digest"].as_str().map(str::to_string) != digest
                && !(tag.is_some() && tag_of_entry(old) == tag)
        });
        entries.push(e.clone());
    }
    entries.sort_by(|a, b| {
        (a["artifactType"].as_str(), a["digest"].as_str())
            .cmp(&(b["artifactType"].as_str(), b["digest"].as_str()))
    });
    entries
}

/// The first blob of `r`'s newest referrer of `artifact_type` (by the
/// order of the index, which is sorted by digest: one per type is usual).
pub async fn fetch_artifact(
    client: &Client,
    r: &Reference,
    artifact_type: &str,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let subject = match &r.digest {
        Some(d) => d.clone(),
        None => client
            .head_manifest(r)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                reference: r.to_string(),
                what: "the image".into(),
            })?,
    };
    for e in list(client, r, &subject).await? {
        if e["artifactType"].as_str() != Some(artifact_type) {
            continue;
        }
        let Some(d) = e["digest"].as_str() else {
            continue;
        };
        let (bytes, _) = client.get_manifest(&r.with_digest(d)).await?;
        let m: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
            reference: r.with_digest(d).to_string(),
            reason: format!("unreadable artifact manifest: {e}"),
        })?;
        let layer = &m["layers"][0];
        if let (Some(ld), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) {
            return Ok(Some(client.get_config(r, ld, size).await?));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, digest: &str, tag: Option<&str>) -> Value {
        let mut e =
            json!({ "mediaType": MANIFEST, "digest": digest, "size": 1, "artifactType": kind });
        if let Some(t) = tag {
            e["annotations"] = json!({ TAG_NOTE: t });
        }
        e
    }

    #[test]
    fn merging_replaces_by_digest_and_tag_keeps_the_rest_and_is_idempotent() {
        let old = vec![
            entry("sig", "sha256:1", Some("sha256-x.sig")),
            entry("spdx", "sha256:2", None),
        ];
        let added = vec![
            entry("sig", "sha256:3", Some("sha256-x.sig")),
            entry("prov", "sha256:4", None),
        ];
        let merged = merge_entries(old, &added);
        let digests: Vec<&str> = merged
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, ["sha256:4", "sha256:3", "sha256:2"]);
        assert_eq!(merge_entries(merged.clone(), &added), merged);
    }
}
