//! SBOMs from what imgbuild knows about an image (never from a scan of
//! binaries): the layers it assembled, the dpkg database those layers
//! leave, the `.deb` hashes images.lock pins, the sources images.yaml pins,
//! and Moodle's own `version.php` files. SPDX 2.3 and CycloneDX 1.6, both
//! deterministic: the same image gives the same bytes.
//!
//! An image whose parent is an image of the same graph gets, by default, a
//! thin SBOM ([`Parents::Reference`]): what it adds, and a reference to its
//! parent's SBOM pinned by checksum (SPDX `externalDocumentRefs`, a
//! CycloneDX BOM-Link), because that SBOM is deterministic and attached to
//! the parent. A client layer of a few KB then carries a few KB of evidence
//! instead of every inherited package again. [`Parents::Full`] gives the
//! whole, for scanners that do not follow references.
pub mod cyclonedx;
pub mod dpkg;
pub mod follow;
pub mod inventory;
pub mod layers;
pub mod moodle;
pub mod spdx;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::oci::image::{ImageRecord, LayerDesc, hex_of, parse_config, parse_manifest};
use crate::spec::{SourceLocation, Spec};
use crate::store::Store;
pub use inventory::{Inventory, ParentDoc, SourceInfo, SourceKind, Subject};

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
    #[error("`{0}` is not a way to cover the parents in an SBOM: use reference or full")]
    Parents(String),
}

/// How the SBOM of an image built on another image of the graph covers
/// what that parent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Parents {
    /// What the image adds; the parent's own SBOM referenced by checksum.
    #[default]
    Reference,
    /// Everything in the image, the inherited parts marked as the
    /// parent's.
    Full,
}

impl FromStr for Parents {
    type Err = SbomError;
    fn from_str(s: &str) -> Result<Parents, SbomError> {
        match s {
            "reference" => Ok(Parents::Reference),
            "full" => Ok(Parents::Full),
            other => Err(SbomError::Parents(other.to_string())),
        }
    }
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
    /// The media types of the documents, in the order they are made.
    pub fn media_types(self) -> Vec<&'static str> {
        match self {
            Formats::Spdx => vec![spdx::MEDIA_TYPE],
            Formats::CycloneDx => vec![cyclonedx::MEDIA_TYPE],
            Formats::Both => vec![spdx::MEDIA_TYPE, cyclonedx::MEDIA_TYPE],
        }
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
        let inherited = n != name;
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
                inherited,
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

/// The image record of manifest `digest`, from the store's blobs alone, so
/// an image's SBOM and the one its child references are made from the same
/// facts whichever way the image was reached.
pub fn record_of(store: &Store, digest: &str) -> Result<ImageRecord, SbomError> {
    let bytes = store.read_blob(&hex_of(digest))?;
    let manifest = parse_manifest(&bytes, "manifest")?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = store.read_blob(&hex_of(&config_digest))?;
    let config = parse_config(&config_bytes, "config")?;
    let layers: Vec<LayerDesc> = manifest
        .layers()
        .iter()
        .zip(config.rootfs().diff_ids())
        .map(|(l, diff_id)| LayerDesc {
            digest: l.digest().to_string(),
            diff_id: diff_id.clone(),
            size: l.size(),
            media_type: l.media_type().to_string(),
        })
        .collect();
    Ok(ImageRecord {
        manifest: digest.to_string(),
        manifest_size: bytes.len() as u64,
        config: config_digest,
        config_size: config_bytes.len() as u64,
        layers: layers.into(),
    })
}

/// A document: its image's manifest, its media type, how it covers parents.
type DocumentKey = (String, &'static str, Parents);

/// Documents already made in this run, by (manifest, media type, parents),
/// and inventories by manifest: fifty clients on one parent reference one
/// parent document, made once, and both formats share one inventory.
#[derive(Default)]
pub struct Cache {
    documents: Mutex<BTreeMap<DocumentKey, Arc<Vec<u8>>>>,
    inventories: Mutex<BTreeMap<String, Arc<Inventory>>>,
}

/// The parent of `name` (an image of the graph) as its manifest names it:
/// (name, manifest digest). None for `scratch`, a registry parent, or a
/// manifest without the base annotations.
pub fn graph_parent(
    store: &Store,
    spec: &Spec,
    name: &str,
    manifest: &str,
) -> Result<Option<(String, String)>, SbomError> {
    let Some(parent) = spec.parent_of(name) else {
        return Ok(None);
    };
    Ok(base_of(store, manifest)?.filter(|(n, _)| n == parent))
}

/// The image manifest `manifest` says it is built on (its
/// `org.opencontainers.image.base.*` annotations): (name, digest).
pub fn base_of(store: &Store, manifest: &str) -> Result<Option<(String, String)>, SbomError> {
    let m = parse_manifest(&store.read_blob(&hex_of(manifest))?, "manifest")?;
    let notes = m.annotations().clone().unwrap_or_default();
    Ok(
        match (
            notes.get("org.opencontainers.image.base.name"),
            notes.get("org.opencontainers.image.base.digest"),
        ) {
            (Some(n), Some(d)) => Some((n.clone(), d.clone())),
            _ => None,
        },
    )
}

/// The images whose SBOMs image `name`'s (thin) SBOM references, nearest
/// first: its parent, the parent's parent, … while they are images of the
/// graph. (name, manifest digest).
pub fn referenced(
    store: &Store,
    spec: &Spec,
    name: &str,
    manifest: &str,
) -> Result<Vec<(String, String)>, SbomError> {
    let mut out = Vec::new();
    let (mut n, mut m) = (name.to_string(), manifest.to_string());
    while let Some((pn, pm)) = graph_parent(store, spec, &n, &m)? {
        out.push((pn.clone(), pm.clone()));
        (n, m) = (pn, pm);
    }
    Ok(out)
}

/// The SBOM document (`media_type`: SPDX or CycloneDX) of image `name`,
/// manifest `manifest`, covering its parents as `parents` says.
pub fn document(
    store: &Store,
    spec: &Spec,
    name: &str,
    manifest: &str,
    media_type: &'static str,
    parents: Parents,
    cache: &Cache,
) -> Result<Arc<Vec<u8>>, SbomError> {
    let key = (manifest.to_string(), media_type, parents);
    if let Some(d) = cache.documents.lock().expect("SBOM cache").get(&key) {
        return Ok(d.clone());
    }
    let cached = cache
        .inventories
        .lock()
        .expect("SBOM cache")
        .get(manifest)
        .cloned();
    let full = match cached {
        Some(inv) => inv,
        None => {
            let record = record_of(store, manifest)?;
            let inv = Arc::new(inventory(store, spec, name, &record)?);
            cache
                .inventories
                .lock()
                .expect("SBOM cache")
                .insert(manifest.to_string(), inv.clone());
            inv
        }
    };
    let full = Arc::unwrap_or_clone(full);
    let inv = match (parents, graph_parent(store, spec, name, manifest)?) {
        (Parents::Reference, Some((pname, pmanifest))) => {
            let parent = document(
                store,
                spec,
                &pname,
                &pmanifest,
                media_type,
                Parents::Reference,
                cache,
            )?;
            let id = if media_type == spdx::MEDIA_TYPE {
                spdx::namespace(&pname, &pmanifest, None)
            } else {
                cyclonedx::serial(&pmanifest, None)
            };
            let doc = ParentDoc {
                name: pname,
                manifest: pmanifest,
                id,
                sha1: spdx::sha1_hex(&parent),
                sha256: crate::digest::sha256_hex(&parent),
            };
            // Something the parent has was removed: the full document.
            full.thin(doc).unwrap_or(full)
        }
        (Parents::Full, Some(_)) => Inventory {
            variant: Some("full"),
            ..full
        },
        (_, None) => full,
    };
    let bytes = Arc::new(if media_type == spdx::MEDIA_TYPE {
        spdx::render(&inv)
    } else {
        cyclonedx::render(&inv)
    });
    cache
        .documents
        .lock()
        .expect("SBOM cache")
        .insert(key, bytes.clone());
    Ok(bytes)
}
