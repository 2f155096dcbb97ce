//! Checks the signed attestations attached to an image (the DSSE envelopes
//! of its SBOMs and provenance): each must open with the key and be an
//! in-toto statement whose subject is the image. Every envelope is checked,
//! not one of them: an attestation that does not verify next to the image
//! is what a forged or stale one looks like, and the user is told.
use p256::ecdsa::VerifyingKey;
use serde::Serialize;
use serde_json::Value;

use super::{dsse, referrers};
use crate::oci::image::hex_of;
use crate::registry::{Client, Reference, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "{reference}: the {what} attestation ({artifact}) is not signed by {key}: it was signed by another key, or changed after signing"
    )]
    Unsigned {
        reference: String,
        what: String,
        artifact: String,
        key: String,
    },
    #[error(
        "{reference}: the {what} attestation ({artifact}) is about {found}, not this image ({digest}): it was copied from another image"
    )]
    Subject {
        reference: String,
        what: String,
        artifact: String,
        found: String,
        digest: String,
    },
    #[error("{reference}: the {what} attestation ({artifact}) is unreadable: {reason}")]
    Malformed {
        reference: String,
        what: String,
        artifact: String,
        reason: String,
    },
}

/// An attestation that verified.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The artifact manifest's digest.
    pub artifact: String,
    pub predicate_type: String,
}

/// Verifies every DSSE envelope among the referrers of `digest` (the image
/// `r` names) with `key` (`key_name` in messages).
pub async fn attestations(
    client: &Client,
    r: &Reference,
    digest: &str,
    key: &VerifyingKey,
    key_name: &str,
) -> Result<Vec<Verified>, AttestationError> {
    let mut out = Vec::new();
    for entry in referrers::list(client, r, digest).await? {
        let Some(artifact) = entry["digest"].as_str() else {
            continue;
        };
        let (bytes, _) = client.get_manifest(&r.with_digest(artifact)).await?;
        let manifest: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let layer = &manifest["layers"][0];
        if layer["mediaType"] != dsse::MEDIA_TYPE {
            continue;
        }
        let mut what = entry["annotations"]["in-toto.io/predicate-type"]
            .as_str()
            .unwrap_or("in-toto")
            .to_string();
        let malformed = |what: &str, reason: &str| AttestationError::Malformed {
            reference: r.to_string(),
            what: what.to_string(),
            artifact: artifact.to_string(),
            reason: reason.to_string(),
        };
        let (Some(ld), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) else {
            return Err(malformed(&what, "its manifest names no envelope blob"));
        };
        let envelope = client.get_config(r, ld, size).await?;
        let Some(body) = dsse::open(&envelope, key) else {
            return Err(AttestationError::Unsigned {
                reference: r.to_string(),
                what,
                artifact: artifact.to_string(),
                key: key_name.to_string(),
            });
        };
        let statement: Value = serde_json::from_slice(&body)
            .map_err(|e| malformed(&what, &format!("the payload is not JSON: {e}")))?;
        if let Some(t) = statement["predicateType"].as_str() {
            what = t.to_string();
        }
        let hex = hex_of(digest);
        let subjects: Vec<&str> = statement["subject"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s["digest"]["sha256"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if !subjects.contains(&hex.as_str()) {
            return Err(AttestationError::Subject {
                reference: r.to_string(),
                what,
                artifact: artifact.to_string(),
                found: match subjects.first() {
                    Some(s) => format!("sha256:{s}"),
                    None => "no image".to_string(),
                },
                digest: digest.to_string(),
            });
        }
        out.push(Verified {
            artifact: artifact.to_string(),
            predicate_type: what,
        });
    }
    out.sort_by(|a, b| a.predicate_type.cmp(&b.predicate_type));
    Ok(out)
}
