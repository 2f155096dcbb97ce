//! Carrying an image's referrers along a copy: its SBOMs, provenance,
//! attestations and signatures go where the image goes, so an image
//! promoted to another repository or registry keeps its evidence.
use serde_json::Value;

use super::referrers::{TAG_NOTE, add_to_index, has_api, list};
use crate::registry::transfer::{Known, copy};
use crate::registry::{Client, Reference, RegistryError};
use crate::sign::cosign::sig_tag;

/// What was carried: the referrers' manifest digests.
#[derive(Debug, Default)]
pub struct Carried {
    pub referrers: Vec<String>,
}

/// Copies the referrers of `subject` (a manifest digest present in both
/// repositories) from `src`'s repository to `dst`'s: each artifact with its
/// blobs, under its digest and under its tag (cosign's `.sig`, also when
/// cosign itself made it and no index lists it), then `dst`'s fallback
/// index when its registry has no referrers API. Nothing to carry when
/// both are the same repository: referrers are kept per repository.
pub async fn carry(
    client: &Client,
    src: &Reference,
    dst: &Reference,
    subject: &str,
    known: &Known,
) -> Result<Carried, RegistryError> {
    let mut carried = Carried::default();
    if src.registry == dst.registry && src.repository == dst.repository {
        return Ok(carried);
    }
    let entries: Vec<Value> = list(client, src, subject).await?;
    let mut index_entries = Vec::new();
    for e in &entries {
        let Some(d) = e["digest"].as_str() else {
            continue;
        };
        copy(client, &src.with_digest(d), &dst.with_digest(d), known).await?;
        if let Some(tag) = e["annotations"][TAG_NOTE].as_str() {
            copy(client, &src.with_digest(d), &dst.with_tag(tag), known).await?;
        }
        carried.referrers.push(d.to_string());
        index_entries.push(e.clone());
    }
    // A signature cosign (or skopeo) made: only its tag names it.
    let sig = sig_tag(subject);
    let listed = index_entries
        .iter()
        .any(|e| e["annotations"][TAG_NOTE].as_str() == Some(sig.as_str()));
    if !listed {
        match copy(client, &src.with_tag(&sig), &dst.with_tag(&sig), known).await {
            Ok(d) => carried.referrers.push(d),
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if !index_entries.is_empty() && !has_api(client, dst, subject).await? {
        add_to_index(client, dst, subject, index_entries).await?;
    }
    Ok(carried)
}
