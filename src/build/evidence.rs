//! The evidence a pushed (or written) image carries as referrers: its SBOM
//! (SPDX, CycloneDX or both), its provenance, and with a signing key the
//! attestations in signed DSSE envelopes and a cosign signature.
use std::collections::BTreeMap;

use p256::ecdsa::SigningKey;

use super::{ImageOutcome, Session};
use crate::attach::dsse;
use crate::attach::provenance::{self, Inputs};
use crate::attach::referrers::{Referrer, artifact};
use crate::sbom::{Formats, SbomError, inventory};

/// What to attach to each image.
#[derive(Default)]
pub struct Evidence {
    /// None: no SBOM.
    pub sbom: Option<Formats>,
    /// None: no provenance.
    pub provenance: Option<Inputs>,
    /// Signs the image (cosign) and the attestations (DSSE).
    pub key: Option<SigningKey>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.sbom.is_none() && self.provenance.is_none() && self.key.is_none()
    }
}

fn created(at: &str) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if !at.is_empty() {
        a.insert(
            "org.opencontainers.image.created".to_string(),
            at.to_string(),
        );
    }
    a
}

impl Session<'_> {
    /// The referrers of one built image (the cosign signature is made at
    /// push time: it names the repository).
    pub fn referrers(
        &self,
        image: &ImageOutcome,
        evidence: &Evidence,
    ) -> Result<Vec<Referrer>, SbomError> {
        let mut out = Vec::new();
        if evidence.sbom.is_none() && evidence.provenance.is_none() {
            return Ok(out);
        }
        let inv = inventory(self.store, self.spec, &image.name, &image.record)?;
        let subject = (image.record.manifest.as_str(), image.record.manifest_size);
        let at = created(&inv.created);
        if let Some(formats) = evidence.sbom {
            for (media_type, bytes) in formats.render(&inv) {
                if let Some(key) = &evidence.key {
                    // The SBOM as a signed in-toto attestation too.
                    let predicate = if media_type == crate::sbom::spdx::MEDIA_TYPE {
                        "https://spdx.dev/Document"
                    } else {
                        "https://cyclonedx.org/bom"
                    };
                    let statement = serde_json::json!({
                        "_type": provenance::STATEMENT,
                        "subject": [{ "name": image.name, "digest": { "sha256": crate::oci::image::hex_of(&image.record.manifest) } }],
                        "predicateType": predicate,
                        "predicate": serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
                    });
                    let body = crate::oci::image::canonical_json(&statement);
                    let mut notes = at.clone();
                    notes.insert("in-toto.io/predicate-type".into(), predicate.into());
                    out.push(artifact(
                        dsse::IN_TOTO,
                        dsse::MEDIA_TYPE,
                        dsse::envelope(dsse::IN_TOTO, &body, key),
                        subject,
                        notes,
                    ));
                }
                out.push(artifact(media_type, media_type, bytes, subject, at.clone()));
            }
        }
        if let Some(inputs) = &evidence.provenance {
            let parent = inv.parent.as_ref().map(|(n, d)| (n.as_str(), d.as_str()));
            // The isolation its steps ran with (detected once per build), or
            // that none ran.
            let mut inputs = inputs.clone();
            let spec_image = &self.spec.images[&image.name];
            inputs.isolation = if spec_image.run.is_empty()
                && spec_image.test.is_empty()
                && spec_image.debian.is_none()
            {
                "none (no steps)".to_string()
            } else {
                match self.isolation(&image.name) {
                    Ok(i) => format!("{i:?}").to_lowercase(),
                    Err(_) => inputs.isolation,
                }
            };
            let body = provenance::statement(&image.name, &image.record.manifest, parent, &inputs);
            let mut notes = at.clone();
            notes.insert("in-toto.io/predicate-type".into(), provenance::SLSA.into());
            out.push(match &evidence.key {
                Some(key) => artifact(
                    provenance::ARTIFACT_TYPE,
                    dsse::MEDIA_TYPE,
                    dsse::envelope(dsse::IN_TOTO, &body, key),
                    subject,
                    notes,
                ),
                None => artifact(
                    provenance::ARTIFACT_TYPE,
                    provenance::ARTIFACT_TYPE,
                    body,
                    subject,
                    notes,
                ),
            });
        }
        Ok(out)
    }
}
