//! OCI 1.1 referrers: artifacts (SBOMs, provenance, signatures) whose
//! manifest names the image in `subject`. A registry with the referrers
//! API indexes them itself; for one without (Debian's distribution 2.8),
//! the distribution spec's fallback is kept: an image index tagged
//! `sha256-<hex>` (the subject's digest) listing every referrer.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::oci::image::{canonical_json, hex_of};
use crate::registry::client::Scope;
use crate::registry::transfer::{Known, bounded, put_bytes};
use crate::registry::{Client, Reference, RegistryError};
use crate::sign::cosign;

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

/// What a run knows of registries' referrers: whether each registry has
/// the referrers API, asked once per registry (it is the registry's
/// feature, not a repository's), however many images are attached side by
/// side; and what it wrote (fallback indexes, `.sig` tags), to read back at
/// the end.
#[derive(Default)]
pub struct Api {
    by_registry: Mutex<HashMap<String, Arc<OnceCell<bool>>>>,
    written: Mutex<Vec<Written>>,
}

/// Signatures this run put under an image's `.sig` tag: ours (payload and
/// signature; the key never goes here), the image's size (a merged `.sig`
/// names it as subject), and the `.sig` manifest put.
#[derive(Debug, Clone)]
pub struct SigWrite {
    pub signed: Vec<cosign::Signed>,
    pub subject_size: u64,
    pub put: String,
}

/// What was written for one image's referrers in one repository.
struct Written {
    r: Reference,
    subject: String,
    /// Entries added to the fallback index (none when not ours to write).
    added: Vec<Value>,
    sig: Option<SigWrite>,
    /// The registry keeps the referrers itself: no fallback index.
    api: bool,
}

impl Api {
    pub async fn supported(
        &self,
        client: &Client,
        r: &Reference,
        subject: &str,
    ) -> Result<bool, RegistryError> {
        let cell = match self.by_registry.lock() {
            Ok(mut m) => m.entry(r.registry.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| has_api(client, r, subject))
            .await
            .copied()
    }

    /// The record of `subject` in `r`'s repository, made on first use.
    fn record(&self, r: &Reference, subject: &str, api: bool, f: impl FnOnce(&mut Written)) {
        let Ok(mut w) = self.written.lock() else {
            return;
        };
        let i = match w.iter().position(|x| &x.r == r && x.subject == subject) {
            Some(i) => i,
            None => {
                w.push(Written {
                    r: r.clone(),
                    subject: subject.to_string(),
                    added: Vec::new(),
                    sig: None,
                    api,
                });
                w.len() - 1
            }
        };
        f(&mut w[i]);
    }

    fn wrote(&self, r: &Reference, subject: &str, added: Vec<Value>) {
        self.record(r, subject, false, |w| w.added.extend(added));
    }

    /// Records that `sig` was put under `subject`'s `.sig` tag in `r`'s
    /// repository (`api`: a registry with the referrers API), for
    /// [`Api::settle`] to keep there.
    pub fn signed(&self, r: &Reference, subject: &str, sig: SigWrite, api: bool) {
        self.record(r, subject, api, |w| w.sig = Some(sig));
    }

    /// Reads back every fallback index and `.sig` tag this run wrote, and
    /// merges and writes again any that lost what was added. The registry
    /// offers no conditional write of a tag, so two jobs adding to one
    /// index or signing one image at once could each write over the
    /// other's; the other writer lands a moment later, so each read back
    /// comes after a short, random pause (once for the whole run: they are
    /// read side by side).
    ///
    /// The `.sig` tag costs no read of its own where there is a fallback
    /// index: the index's `.sig` entry names the manifest its writer put,
    /// so one naming another than ours means the tag was written over, and
    /// only then is it read. A registry with the referrers API keeps no
    /// such index: there the `.sig` tag itself is read back.
    pub async fn settle(&self, client: &Client) -> Result<(), RegistryError> {
        const ROUNDS: u32 = 5;
        let mut pending = match self.written.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => return Ok(()),
        };
        for _ in 0..ROUNDS {
            if pending.is_empty() {
                break;
            }
            let checks = pending.into_iter().map(|w| async move {
                tokio::time::sleep(std::time::Duration::from_millis(jitter_ms())).await;
                settle_one(client, w).await
            });
            let results = futures_util::future::join_all(checks).await;
            pending = Vec::new();
            for res in results {
                pending.extend(res?);
            }
        }
        Ok(())
    }
}

/// One read back of what was written for an image; what is still to
/// check (None: all is in place).
async fn settle_one(client: &Client, mut w: Written) -> Result<Option<Written>, RegistryError> {
    let tag = cosign::sig_tag(&w.subject);
    if w.api {
        let Some(sig) = &mut w.sig else {
            return Ok(None);
        };
        let read = cosign::read_tagged(client, &w.r, &w.subject).await?;
        if read.1.as_ref().is_some_and(|(d, _)| *d == sig.put) {
            return Ok(None);
        }
        let (_, put) = keep_signed(client, &w.r, &w.subject, sig, read).await?;
        return Ok(put.then_some(w));
    }
    let current = fallback_index(client, &w.r, &w.subject).await?;
    let mut put = false;
    if let Some(sig) = &mut w.sig
        && sig_moved(&current, &tag, &sig.put)
    {
        let read = cosign::read_tagged(client, &w.r, &w.subject).await?;
        let (entry, again) = keep_signed(client, &w.r, &w.subject, sig, read).await?;
        replace_tagged(&mut w.added, entry);
        put = again;
    }
    let wrote = write_index(client, &w.r, &w.subject, &current, &w.added).await?;
    Ok((wrote || put).then_some(w))
}

/// Whether `entries` (a fallback index as read back) name another
/// manifest under the `.sig` tag `tag` than `put`, ours: someone else wrote
/// the tag after us.
fn sig_moved(entries: &[Value], tag: &str, put: &str) -> bool {
    entries.iter().any(|e| {
        e["annotations"][TAG_NOTE].as_str() == Some(tag) && e["digest"].as_str() != Some(put)
    })
}

/// `added` with its entry of `entry`'s tag (if any) replaced by `entry`.
fn replace_tagged(added: &mut Vec<Value>, entry: Value) {
    let tag = entry["annotations"][TAG_NOTE].clone();
    added.retain(|e| e["annotations"][TAG_NOTE] != tag);
    added.push(entry);
}

/// Keeps `sig`'s signatures under the `.sig` tag of `subject`, `read` as
/// it holds now: when it lacks some, puts a `.sig` of what it holds and
/// ours (their payloads first: no manifest names a missing blob). Returns
/// the fallback index's entry for what the tag then names, and whether it
/// put one. `sig.put` follows the tag.
async fn keep_signed(
    client: &Client,
    r: &Reference,
    subject: &str,
    sig: &mut SigWrite,
    read: (Vec<cosign::Signed>, Option<(String, u64)>),
) -> Result<(Value, bool), RegistryError> {
    let (theirs, tagged) = read;
    let tag = cosign::sig_tag(subject);
    match (cosign::merged(&theirs, &sig.signed), tagged) {
        (None, Some((digest, size))) => {
            sig.put = digest.clone();
            let notes = BTreeMap::from([(TAG_NOTE.to_string(), tag)]);
            Ok((
                entry(cosign::SIG_ARTIFACT, &digest, size as usize, &notes),
                false,
            ))
        }
        (merged, _) => {
            let all = merged.unwrap_or(theirs);
            let m = cosign::manifest(&all, (subject, sig.subject_size));
            let known = Known::default();
            let uploads = m.blobs.iter().map(|b| {
                let d = crate::digest::digest_of(b).to_string();
                let known = &known;
                async move { put_bytes(client, r, &d, b, known).await }
            });
            bounded(uploads.collect()).await?;
            client
                .put_manifest(&r.with_tag(&tag), &m.manifest, MANIFEST)
                .await?;
            sig.put = m.digest();
            Ok((index_entry(&m), true))
        }
    }
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

/// What a repository holds of an image's referrers before an attach.
pub struct Listing {
    /// The registry keeps the referrers itself: no fallback index.
    pub api: bool,
    /// The entries listed (by the API, or the fallback index).
    pub entries: Vec<Value>,
    /// Tags known to name a manifest (tag → digest): a tagged referrer
    /// is in place only when its tag names it already.
    pub tags: BTreeMap<String, String>,
}

/// The referrers `subject` has in `r`'s repository: one request (the API's
/// list, or the fallback tag), once `api` knows the registry.
pub async fn listing(
    client: &Client,
    r: &Reference,
    subject: &str,
    api: &Api,
) -> Result<Listing, RegistryError> {
    if api.supported(client, r, subject).await? {
        return Ok(Listing {
            api: true,
            entries: list(client, r, subject).await?,
            tags: BTreeMap::new(),
        });
    }
    Ok(Listing {
        api: false,
        entries: fallback_index(client, r, subject).await?,
        tags: BTreeMap::new(),
    })
}

/// A referrer as attached: what `--json` reports of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attached {
    pub artifact_type: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Referrer {
    pub fn attached(&self) -> Attached {
        Attached {
            artifact_type: self.artifact_type.clone(),
            digest: self.digest(),
            tag: self.tag.clone(),
        }
    }
}

/// Pushes `referrers` of `subject` into `r`'s repository, as `listing`
/// found it: the blobs and manifests it lacks (a referrer it lists is
/// there, with its blobs; a tagged one also needs its tag to name it
/// already, per the listing's `tags`), small blobs each in one request, then the
/// fallback index (one PUT, only if it changed) when the registry has no
/// referrers API. Blobs go side by side, then manifests side by side, so
/// an image costs a few round trips, not one per request. An entry of the
/// index is replaced by one of the same artifact type and tag (a `.sig`
/// that gained a signature); the rest are kept. Repeating a push changes
/// nothing: entries are keyed by digest and sorted.
pub async fn attach_listed(
    client: &Client,
    r: &Reference,
    subject: &str,
    referrers: &[&Referrer],
    listing: Listing,
    known: &Known,
    api: &Api,
) -> Result<Vec<Attached>, RegistryError> {
    let listed: BTreeSet<&str> = listing
        .entries
        .iter()
        .filter_map(|e| e["digest"].as_str())
        .collect();
    let missing: Vec<&Referrer> = referrers
        .iter()
        .copied()
        .filter(|m| {
            let d = m.digest();
            !listed.contains(d.as_str())
                || m.tag
                    .as_ref()
                    .is_some_and(|t| listing.tags.get(t) != Some(&d))
        })
        .collect();
    // Each distinct blob once (the empty config is every artifact's), and
    // none this run already put in this repository.
    let mut blobs: BTreeMap<String, &[u8]> = BTreeMap::new();
    for m in &missing {
        for b in &m.blobs {
            blobs.insert(crate::digest::digest_of(b).to_string(), b);
        }
    }
    let uploads = blobs.iter().map(|(d, b)| put_bytes(client, r, d, b, known));
    bounded(uploads.collect()).await?;
    // Manifests only once every blob is there; a tagged one is put under
    // its tag alone (that makes it known by digest too).
    let puts = missing.iter().map(|m| async move {
        let target = match &m.tag {
            Some(t) => r.with_tag(t),
            None => r.with_digest(&m.digest()),
        };
        client.put_manifest(&target, &m.manifest, MANIFEST).await
    });
    bounded(puts.collect()).await?;
    let attached = referrers.iter().map(|m| m.attached()).collect();
    if listing.api {
        return Ok(attached);
    }
    let added: Vec<Value> = referrers.iter().map(|m| index_entry(m)).collect();
    if write_index(client, r, subject, &listing.entries, &added).await? {
        api.wrote(r, subject, added);
    }
    Ok(attached)
}

/// The fallback index's entry for `referrer`.
fn index_entry(referrer: &Referrer) -> Value {
    let mut annotations = referrer.annotations.clone();
    if let Some(t) = &referrer.tag {
        annotations.insert(TAG_NOTE.into(), t.clone());
    }
    entry(
        &referrer.artifact_type,
        &referrer.digest(),
        referrer.manifest.len(),
        &annotations,
    )
}

/// A fallback index entry: an artifact manifest of `artifact_type`.
fn entry(
    artifact_type: &str,
    digest: &str,
    size: usize,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut e = json!({
        "mediaType": MANIFEST,
        "digest": digest,
        "size": size,
        "artifactType": artifact_type,
    });
    if !annotations.is_empty() {
        e["annotations"] = json!(annotations);
    }
    e
}

/// Writes `subject`'s fallback index in `r`'s repository: `current` (as
/// read) with `added` merged in. Nothing is written when that changes
/// nothing; returns whether it wrote.
async fn write_index(
    client: &Client,
    r: &Reference,
    subject: &str,
    current: &[Value],
    added: &[Value],
) -> Result<bool, RegistryError> {
    let merged = merge_entries(current.to_vec(), added);
    if merged == current {
        return Ok(false);
    }
    let index = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": merged,
    }));
    client
        .put_manifest(&r.with_tag(&tag_of(subject)), &index, INDEX)
        .await?;
    Ok(true)
}

/// Adds `added` (index entries) to `subject`'s fallback index in `r`'s
/// repository, then makes sure they stay there (see [`Api::settle`]).
pub async fn add_to_index(
    client: &Client,
    r: &Reference,
    subject: &str,
    added: Vec<Value>,
) -> Result<(), RegistryError> {
    let current = fallback_index(client, r, subject).await?;
    let api = Api::default();
    if write_index(client, r, subject, &current, &added).await? {
        api.wrote(r, subject, added);
    }
    api.settle(client).await
}

/// 40 to 160 ms, from the OS's randomness.
fn jitter_ms() -> u64 {
    use rand_core::RngCore;
    40 + u64::from(rand_core::OsRng.next_u32() % 120)
}

/// `entries` with `added` merged in, sorted by artifact type and digest.
/// An entry of the same digest, or of the same tag, is replaced; the rest
/// are kept. Sorted, so merging what is there already changes nothing.
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
        if let Some(bytes) = first_blob(client, r, d).await? {
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// Every referrer of `subject` in `r`'s repository of `artifact_type`,
/// in the index's order: its manifest digest and its first blob. (Two
/// documents of one type are usual enough: a thin SBOM and, pushed later
/// with `--sbom-parents full`, the whole.)
pub async fn fetch_artifacts(
    client: &Client,
    r: &Reference,
    subject: &str,
    artifact_type: &str,
) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
    let mut out = Vec::new();
    for e in list(client, r, subject).await? {
        if e["artifactType"].as_str() != Some(artifact_type) {
            continue;
        }
        let Some(d) = e["digest"].as_str() else {
            continue;
        };
        if let Some(bytes) = first_blob(client, r, d).await? {
            out.push((d.to_string(), bytes));
        }
    }
    Ok(out)
}

/// The first blob (the document) of the artifact manifest `digest`.
async fn first_blob(
    client: &Client,
    r: &Reference,
    digest: &str,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let (bytes, _) = client.get_manifest(&r.with_digest(digest)).await?;
    let m: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        reference: r.with_digest(digest).to_string(),
        reason: format!("unreadable artifact manifest: {e}"),
    })?;
    let layer = &m["layers"][0];
    match (layer["digest"].as_str(), layer["size"].as_u64()) {
        (Some(ld), Some(size)) => Ok(Some(client.get_config(r, ld, size).await?)),
        _ => Ok(None),
    }
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

    #[test]
    fn a_sig_entry_naming_another_manifest_than_ours_means_the_tag_was_written_over() {
        let tag = "sha256-x.sig";
        let index = vec![
            entry("sig", "sha256:theirs", Some(tag)),
            entry("spdx", "sha256:2", None),
        ];
        assert!(sig_moved(&index, tag, "sha256:ours"));
        assert!(!sig_moved(&index, tag, "sha256:theirs"));
        // Another image's `.sig`, or none: nothing to read.
        assert!(!sig_moved(&index, "sha256-y.sig", "sha256:ours"));
        assert!(!sig_moved(&[], tag, "sha256:ours"));
    }

    #[test]
    fn the_merged_sig_replaces_ours_in_what_is_added_and_then_in_the_index() {
        let tag = "sha256-x.sig";
        let mut added = vec![
            entry("sig", "sha256:ours", Some(tag)),
            entry("prov", "sha256:4", None),
        ];
        replace_tagged(&mut added, entry("sig", "sha256:both", Some(tag)));
        let digests: Vec<&str> = added
            .iter()
            .map(|e| e["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, ["sha256:4", "sha256:both"]);
        // The index as the other writer left it: its `.sig` gives way.
        let current = vec![entry("sig", "sha256:theirs", Some(tag))];
        let merged = merge_entries(current, &added);
        assert!(!sig_moved(&merged, tag, "sha256:both"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn an_entry_for_a_sig_read_back_is_the_one_its_referrer_would_give() {
        let r = crate::sign::cosign::manifest(&[], ("sha256:aa", 10));
        let notes = BTreeMap::from([(TAG_NOTE.to_string(), r.tag.clone().unwrap())]);
        assert_eq!(
            super::entry(
                crate::sign::cosign::SIG_ARTIFACT,
                &r.digest(),
                r.manifest.len(),
                &notes
            ),
            index_entry(&r)
        );
    }
}
