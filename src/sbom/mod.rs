//! SBOMs from what imgbuild knows about an image (never from a scan of
//! binaries): the layers it assembled, the dpkg database those layers
//! leave, the `.deb` hashes images.lock pins, the sources images.yaml pins,
//! and Moodle's own `version.php` files. SPDX 2.3 and CycloneDX 1.6, both
//! deterministic: the same image gives the same bytes.
pub mod cyclonedx;
pub mod dpkg;
pub mod inventory;
pub mod layers;
pub mod moodle;
pub mod spdx;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use crate::oci::image::{ImageRecord, hex_of, parse_config, parse_manifest};
use crate::spec::{SourceLocation, Spec};
use crate::store::Store;
pub use inventory::{Inventory, SourceInfo, SourceKind, Subject};

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Oci(#[from] crate::oci::image::OciError),
    #[error(transparent)]
    Lock(#[from] crate::debian::lock::LockError),
    #[error("reading layer {digest} for the SBOM ({}): {source}", path.display())]
    Layer {
        digest: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is not an SBOM format: use spdx, cyclonedx or both")]
    Format(String),
}

/// Which SBOM documents to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Formats {
    #[default]
    Spdx,
    CycloneDx,
    Both,
}

impl FromStr for Formats {
    type Err = SbomError;
    fn from_str(s: &str) -> Result<Formats, SbomError> {
        match s {
            "spdx" => Ok(Formats::Spdx),
            "cyclonedx" => Ok(Formats::CycloneDx),
            "both" => Ok(Formats::Both),
            other => Err(SbomError::Format(other.to_string())),
        }
    }
}

impl Formats {
    /// The documents: (media type, bytes).
    pub fn render(self, inv: &Inventory) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        if matches!(self, Formats::Spdx | Formats::Both) {
            out.push((spdx::MEDIA_TYPE, spdx::render(inv)));
        }
        if matches!(self, Formats::CycloneDx | Formats::Both) {
            out.push((cyclonedx::MEDIA_TYPE, cyclonedx::render(inv)));
        }
        out
    }
}

/// `.deb` SHA256 by (name, version, architecture) from images.lock.
fn locked_debs(spec: &Spec) -> Result<BTreeMap<(String, String, String), String>, SbomError> {
    let lock = crate::debian::lock::Lock::read(&crate::debian::lock::path_for(spec))?;
    let mut out = BTreeMap::new();
    for image in lock.iter().flat_map(|l| l.images.values()) {
        for p in &image.packages {
            out.insert(
                (p.name.clone(), p.version.clone(), p.architecture.clone()),
                p.sha256.clone(),
            );
        }
    }
    Ok(out)
}

/// The sources image `name` and its ancestors take layers from, and where
/// each of those layers goes.
fn sources_of(spec: &Spec, name: &str) -> (Vec<SourceInfo>, Vec<(String, String)>) {
    let mut infos = Vec::new();
    let mut dests = Vec::new();
    let mut cur = Some(name);
    while let Some(n) = cur {
        let Some(image) = spec.images.get(n) else {
            break;
        };
        for l in &image.layers {
            let Some(s) = l.source.as_ref().and_then(|s| spec.sources.get(s)) else {
                continue;
            };
            dests.push((l.dest.clone(), s.spec.name.clone()));
            let kind = match &s.spec.location {
                SourceLocation::Git { url, .. } => SourceKind::Git {
                    url: url.clone(),
                    commit: s.resolved.vars.get("commit").cloned().unwrap_or_default(),
                },
                SourceLocation::Archive { url, sha256 } => SourceKind::Archive {
                    url: url.clone(),
                    sha256: sha256.clone(),
                },
                SourceLocation::Dir { .. } => SourceKind::Dir,
            };
            infos.push(SourceInfo {
                name: s.spec.name.clone(),
                kind,
            });
        }
        cur = spec.parent_of(n);
    }
    (infos, dests)
}

/// The inventory of image `name` of `spec`, built as `record`.
pub fn inventory(
    store: &Store,
    spec: &Spec,
    name: &str,
    record: &ImageRecord,
) -> Result<Inventory, SbomError> {
    let config = parse_config(&store.read_blob(&hex_of(&record.config))?, "config")?;
    let manifest = parse_manifest(&store.read_blob(&hex_of(&record.manifest))?, "manifest")?;
    let notes = manifest.annotations().clone().unwrap_or_default();
    let parent = match (
        notes.get("org.opencontainers.image.base.name"),
        notes.get("org.opencontainers.image.base.digest"),
    ) {
        (Some(n), Some(d)) => {
            // The parent's layers are this image's first ones.
            let count = store
                .read_blob(&hex_of(d))
                .ok()
                .and_then(|b| parse_manifest(&b, "parent manifest").ok())
                .map_or(0, |m| m.layers().len());
            Some((n.clone(), d.clone(), count))
        }
        _ => None,
    };
    let debs = locked_debs(spec)?;
    let (sources, source_dests) = sources_of(spec, name);
    let facts = record
        .layers
        .iter()
        .map(|l| {
            layers::facts(store, l).map_err(|source| SbomError::Layer {
                digest: l.digest.clone(),
                path: store.blob_path(&hex_of(&l.digest)),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subject = Subject {
        name,
        record,
        created: config.created().clone().unwrap_or_default(),
        os: config.os().to_string(),
        architecture: config.architecture().to_string(),
        parent,
        debs: &debs,
        sources,
        source_dests,
    };
    Ok(inventory::collect(&subject, &facts))
}
