//! Signatures as cosign stores them, which containers/image (skopeo,
//! podman: `use-sigstore-attachments: true`) and cosign verify: a
//! simple-signing payload naming the image's manifest digest, signed with
//! ECDSA P-256 (SHA-256, ASN.1 DER, base64 in the layer annotation
//! `dev.cosignproject.cosign/signature`), one layer per signature of a
//! manifest tagged `sha256-<hex>.sig` in the image's repository. The
//! manifest also names the image as its OCI 1.1 `subject`, so it is listed
//! among the image's referrers.
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};

use crate::attach::referrers::{MANIFEST, Referrer};
use crate::digest::digest_of;
use crate::oci::image::{canonical_json, hex_of};
use crate::registry::{Client, Reference, RegistryError};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const PAYLOAD_TYPE: &str = "cosign container image signature";

/// One signature: the payload and its signature (base64 DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub payload: Vec<u8>,
    pub signature: String,
}

/// The `.sig` tag of an image.
pub fn sig_tag(manifest: &str) -> String {
    format!("sha256-{}.sig", hex_of(manifest))
}

/// The simple-signing payload for `docker_reference` (the repository, or
/// the repository and tag, as the image is pulled) at `manifest`.
pub fn payload(docker_reference: &str, manifest: &str) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": manifest },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    canonical_json(&v)
}

pub fn sign(key: &SigningKey, payload: &[u8]) -> Signed {
    // RFC 6979: the same key and payload give the same signature, so
    // signing again adds nothing.
    let sig: Signature = key.sign(payload);
    let der: DerSignature = sig.to_der();
    Signed {
        payload: payload.to_vec(),
        signature: STANDARD.encode(der.as_bytes()),
    }
}

/// The `.sig` manifest holding `signed`, for the image `subject` (digest,
/// size).
pub fn manifest(signed: &[Signed], subject: (&str, u64)) -> Referrer {
    let diff_ids: Vec<String> = signed
        .iter()
        .map(|s| digest_of(&s.payload).to_string())
        .collect();
    // cosign's config for a signature image.
    let config = canonical_json(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {},
    }));
    let layers: Vec<Value> = signed
        .iter()
        .map(|s| {
            json!({
                "mediaType": SIMPLE_SIGNING,
                "digest": digest_of(&s.payload).to_string(),
                "size": s.payload.len(),
                "annotations": { ANNOTATION: s.signature },
            })
        })
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": layers,
        "subject": { "mediaType": MANIFEST, "digest": subject.0, "size": subject.1 },
    });
    let mut blobs = vec![config];
    blobs.extend(signed.iter().map(|s| s.payload.clone()));
    Referrer {
        artifact_type: SIG_ARTIFACT.to_string(),
        manifest: canonical_json(&m),
        blobs,
        tag: Some(sig_tag(subject.0)),
        annotations: BTreeMap::new(),
    }
}

/// The signatures stored for `manifest` in `r`'s repository (none when
/// there is no `.sig` tag).
pub async fn read(
    client: &Client,
    r: &Reference,
    manifest: &str,
) -> Result<Vec<Signed>, RegistryError> {
    Ok(read_tagged(client, r, manifest).await?.0)
}

/// The signatures stored for `manifest` in `r`'s repository, and the
/// manifest the `.sig` tag names: its digest and size (None: no tag).
pub async fn read_tagged(
    client: &Client,
    r: &Reference,
    manifest: &str,
) -> Result<(Vec<Signed>, Option<(String, u64)>), RegistryError> {
    let sig_ref = r.with_tag(&sig_tag(manifest));
    let bytes = match client.get_manifest(&sig_ref).await {
        Ok((b, _)) => b,
        Err(RegistryError::NotFound { .. }) => return Ok((Vec::new(), None)),
        Err(e) => return Err(e),
    };
    let tagged = (digest_of(&bytes).to_string(), bytes.len() as u64);
    let m: Value = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
        reference: sig_ref.to_string(),
        reason: format!("unreadable signature manifest: {e}"),
    })?;
    let mut out = Vec::new();
    for l in m["layers"].as_array().into_iter().flatten() {
        let (Some(d), Some(size), Some(sig)) = (
            l["digest"].as_str(),
            l["size"].as_u64(),
            l["annotations"][ANNOTATION].as_str(),
        ) else {
            continue;
        };
        if l["mediaType"].as_str() != Some(SIMPLE_SIGNING) {
            continue;
        }
        // get_config checks the digest and caps the size.
        let payload = client.get_config(r, d, size).await?;
        out.push(Signed {
            payload,
            signature: sig.to_string(),
        });
    }
    Ok((out, Some(tagged)))
}

/// `theirs` (what a `.sig` tag holds) with each of `ours` it lacks added
/// after them, in order, each once; None when it lacks none (a signature
/// made again is the same bytes: RFC 6979).
pub fn merged(theirs: &[Signed], ours: &[Signed]) -> Option<Vec<Signed>> {
    let mut all = theirs.to_vec();
    for s in ours {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    (all.len() > theirs.len()).then_some(all)
}

/// Why a signature does not vouch for an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the signature does not verify with this key (signed by another key, or altered)")]
    OtherKey,
    #[error("the signature is not base64 DER ECDSA: {0}")]
    Malformed(String),
    #[error("the payload is not a cosign simple-signing payload: {0}")]
    Payload(String),
    #[error(
        "the signature is for manifest {signed}, not {actual}: the image was changed after signing"
    )]
    OtherManifest { signed: String, actual: String },
    #[error("the signature is for {signed}, not for repository {repository}")]
    OtherRepository { signed: String, repository: String },
}

/// Checks one signature of the image `manifest` of `repository` (`HOST/PATH`).
pub fn check(
    s: &Signed,
    key: &VerifyingKey,
    manifest: &str,
    repository: &str,
) -> Result<(), Rejected> {
    let der = STANDARD
        .decode(s.signature.trim())
        .map_err(|e| Rejected::Malformed(e.to_string()))?;
    let sig = Signature::from_der(&der).map_err(|e| Rejected::Malformed(e.to_string()))?;
    key.verify(&s.payload, &sig)
        .map_err(|_| Rejected::OtherKey)?;
    let v: Value =
        serde_json::from_slice(&s.payload).map_err(|e| Rejected::Payload(e.to_string()))?;
    let critical = &v["critical"];
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(Rejected::Payload(format!(
            "type {}, expected `{PAYLOAD_TYPE}`",
            critical["type"]
        )));
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != manifest {
        return Err(Rejected::OtherManifest {
            signed: signed.to_string(),
            actual: manifest.to_string(),
        });
    }
    let identity = critical["identity"]["docker-reference"]
        .as_str()
        .unwrap_or_default();
    // The repository, or it with a tag or digest.
    let repo_of = identity
        .rsplit_once('@')
        .map(|(r, _)| r)
        .unwrap_or(identity);
    let repo_of = match repo_of.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo_of,
    };
    if repo_of != repository {
        return Err(Rejected::OtherRepository {
            signed: identity.to_string(),
            repository: repository.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_vouch_for_one_manifest_of_one_repository_by_one_key() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let m = "sha256:aa";
        let s = sign(&key, &payload("reg:5000/app:v1", m));
        assert_eq!(
            s,
            sign(&key, &payload("reg:5000/app:v1", m)),
            "deterministic"
        );
        check(&s, key.verifying_key(), m, "reg:5000/app").unwrap();
        assert_eq!(
            check(&s, other.verifying_key(), m, "reg:5000/app"),
            Err(Rejected::OtherKey)
        );
        assert!(matches!(
            check(&s, key.verifying_key(), "sha256:bb", "reg:5000/app"),
            Err(Rejected::OtherManifest { .. })
        ));
        assert!(matches!(
            check(&s, key.verifying_key(), m, "reg:5000/other"),
            Err(Rejected::OtherRepository { .. })
        ));
        let mut tampered = s.clone();
        tampered.payload = payload("reg:5000/app:v1", "sha256:bb");
        assert_eq!(
            check(&tampered, key.verifying_key(), "sha256:bb", "reg:5000/app"),
            Err(Rejected::OtherKey)
        );
    }

    #[test]
    fn merging_keeps_theirs_first_adds_each_of_ours_once_and_says_when_nothing_is_new() {
        let a = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let b = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let m = "sha256:aa";
        let a1 = sign(&a, &payload("reg:5000/app:v1", m));
        let a2 = sign(&a, &payload("reg:5000/app:v2", m));
        let b1 = sign(&b, &payload("reg:5000/app:v1", m));
        // Another writer's `.sig` lacks ours: theirs kept, ours after.
        let all = merged(std::slice::from_ref(&a1), &[b1.clone(), b1.clone()]).unwrap();
        assert_eq!(all, [a1.clone(), b1.clone()]);
        // It holds ours already (it merged them itself): nothing to put.
        assert_eq!(merged(&all, std::slice::from_ref(&b1)), None);
        assert_eq!(merged(&all, &[]), None);
        // Only what is missing is added.
        assert_eq!(
            merged(&all, &[b1.clone(), a2.clone()]).unwrap(),
            [a1.clone(), b1.clone(), a2]
        );
        // No tag at all: ours.
        assert_eq!(merged(&[], std::slice::from_ref(&a1)).unwrap(), [a1]);
    }
}
