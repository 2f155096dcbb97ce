//! The evidence a pushed (or written) image carries as referrers: its SBOM
//! (SPDX, CycloneDX or both), its provenance, and with a signing key the
//! attestations in signed DSSE envelopes and a cosign signature.
//!
//! A thin SBOM references its parent's SBOM by checksum, so the parent's is
//! delivered too: attached to the parent image even when only the child is
//! pushed ([`Session::referenced_sboms`]).
use std::collections::{BTreeMap, BTreeSet};

use p256::ecdsa::SigningKey;

use super::{ImageOutcome, Session};
use crate::attach::dsse;
use crate::attach::provenance::{self, Inputs};
use crate::attach::referrers::{Referrer, artifact};
use crate::sbom::{Formats, Parents, SbomError};

/// What to attach to each image.
#[derive(Default)]
pub struct Evidence {
    /// None: no SBOM.
    pub sbom: Option<Formats>,
    /// How an SBOM covers a parent of the graph: by reference (thin) or in
    /// full.
    pub sbom_parents: Parents,
    /// SBOMs made this run (a parent's is referenced by all its children).
    pub cache: crate::sbom::Cache,
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
        // The SBOM documents make their own inventory (cached per image);
        // provenance needs only the parent and the creation time.
        let config = crate::oci::image::parse_config(
            &self
                .store
                .read_blob(&crate::oci::image::hex_of(&image.record.config))?,
            "config",
        )?;
        let created_at = config.created().clone().unwrap_or_default();
        let subject = (image.record.manifest.as_str(), image.record.manifest_size);
        let at = created(&created_at);
        if let Some(formats) = evidence.sbom {
            for media_type in formats.media_types() {
                let bytes = crate::sbom::document(
                    self.store,
                    self.spec,
                    &image.name,
                    &image.record.manifest,
                    media_type,
                    evidence.sbom_parents,
                    &evidence.cache,
                )?
                .to_vec();
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
            let base = crate::sbom::base_of(self.store, &image.record.manifest)?;
            let parent = base.as_ref().map(|(n, d)| (n.as_str(), d.as_str()));
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

    /// The SBOM referrers of the images that `images`' thin SBOMs reference
    /// (parents, grandparents, … of the graph) and that are not among
    /// `images`: (name, manifest digest, referrers), so that a reference
    /// resolves wherever the child goes. Plain documents only: the
    /// reference pins their bytes.
    pub fn referenced_sboms(
        &self,
        images: &[&ImageOutcome],
        evidence: &Evidence,
    ) -> Result<Vec<(String, String, Vec<Referrer>)>, SbomError> {
        let Some(formats) = evidence.sbom else {
            return Ok(Vec::new());
        };
        if evidence.sbom_parents == Parents::Full {
            return Ok(Vec::new());
        }
        let delivered: BTreeSet<&str> = images.iter().map(|i| i.name.as_str()).collect();
        let mut wanted = BTreeMap::new();
        for image in images {
            for (name, manifest) in
                crate::sbom::referenced(self.store, self.spec, &image.name, &image.record.manifest)?
            {
                if !delivered.contains(name.as_str()) {
                    wanted.insert(name, manifest);
                }
            }
        }
        let mut out = Vec::new();
        for (name, manifest) in wanted {
            let record = crate::sbom::record_of(self.store, &manifest)?;
            let subject = (manifest.as_str(), record.manifest_size);
            let config = crate::oci::image::parse_config(
                &self
                    .store
                    .read_blob(&crate::oci::image::hex_of(&record.config))?,
                "config",
            )?;
            let at = created(config.created().as_deref().unwrap_or_default());
            let mut list = Vec::new();
            for media_type in formats.media_types() {
                let bytes = crate::sbom::document(
                    self.store,
                    self.spec,
                    &name,
                    &manifest,
                    media_type,
                    Parents::Reference,
                    &evidence.cache,
                )?;
                list.push(artifact(
                    media_type,
                    media_type,
                    bytes.to_vec(),
                    subject,
                    at.clone(),
                ));
            }
            out.push((name, manifest, list));
        }
        Ok(out)
    }
}
