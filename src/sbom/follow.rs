//! The whole SBOM of a pushed image from the thin ones attached to it and
//! its parents: `imgbuild sbom REF --full`.
//!
//! A thin SBOM references its parent's by identity (SPDX
//! `documentNamespace`, CycloneDX `serialNumber`) and checksum, and both
//! name the parent image and its manifest digest. So from the image's own
//! SBOM referrer the chain is followed through the registry: the parent's
//! SBOM is the referrer of the same format attached to the parent's
//! manifest in the sibling repository (`PREFIX/PARENT`, where pushes put
//! it), taken only when its checksum is the one the child gives; then its
//! parent's, down to a whole one. Each document is read back into an
//! [`Inventory`], checked by rendering it again (an SBOM that does not
//! come out byte for byte is not one this imgbuild wrote, and reading it
//! could lose what it says), and the chain is merged the way
//! [`super::inventory::collect`] marks an image's inherited parts, so the
//! result is the document `imgbuild sbom NAME --full` makes from the
//! local store.
use std::collections::BTreeSet;
use std::future::Future;

use serde_json::Value;

use super::dpkg::Installed;
use super::inventory::{
    DebPackage, Inventory, Moodle, ParentDoc, Plugin, SourceInfo, SourceKind, licence_refs_of,
};
use super::{cyclonedx, spdx};
use crate::oci::image::LayerDesc;
use crate::registry::{Client, Reference, RegistryError};

/// More parents than any graph has: a longer chain is a loop.
const MAX_DEPTH: usize = 64;

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(
        "{reference} has no {media_type} SBOM attached; push it with `imgbuild build --push --sbom`"
    )]
    NoSbom {
        reference: String,
        media_type: String,
    },
    #[error("{tried}: {source}")]
    Registry {
        tried: String,
        source: RegistryError,
    },
    #[error(
        "{document} is not an SBOM as imgbuild {VERSION} writes it, so it cannot be flattened faithfully: {reason}"
    )]
    Unreadable { document: String, reason: String },
    #[error(
        "{child} references {id}, the SBOM of {parent}, but {tried} has no such SBOM attached; push {name} with its SBOM (`imgbuild build {name} --push --sbom`), or push the image with `--sbom-parents full` so that its SBOM references none"
    )]
    Missing {
        child: String,
        id: String,
        parent: String,
        name: String,
        tried: String,
    },
    #[error(
        "{found}, which {child} references with {algorithm} {expected}, has {algorithm} {actual}: refusing it (its bytes are not the ones the reference pins)"
    )]
    Mismatch {
        child: String,
        /// Where, and which document it claims to be.
        found: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{document}, the parent SBOM of {child}, does not fit it: {reason}")]
    Inconsistent {
        child: String,
        document: String,
        reason: String,
    },
    #[error("{child}: more than {MAX_DEPTH} parent SBOMs in a row; a reference loop?")]
    TooDeep { child: String },
}

/// An SBOM document as found, and where (for messages).
#[derive(Debug, Clone)]
pub struct Found {
    pub location: String,
    pub bytes: Vec<u8>,
}

/// The SBOMs attached to a parent image, and where they were looked for.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    pub tried: String,
    pub found: Vec<Found>,
}

/// Where the parents' SBOMs come from: the registry, or (tests) memory.
pub trait Documents {
    /// The documents of `media_type` attached to the image `parent` names
    /// (`parent.name`, `parent.manifest`).
    fn attached(
        &self,
        parent: &ParentDoc,
        media_type: &'static str,
    ) -> impl Future<Output = Result<Attached, FollowError>>;
}

/// A document read back: its inventory (thin ones carry `parent_doc`).
struct Read {
    location: String,
    id: String,
    inventory: Inventory,
}

impl Read {
    fn name(&self) -> String {
        format!("the SBOM at {} ({})", self.location, self.id)
    }
}

/// The whole SBOM of the image whose own SBOM (`media_type`) is `top`:
/// the parents' documents followed through `docs`, checked against the
/// checksums the references give, and merged into one.
pub async fn flatten(
    top: Found,
    media_type: &'static str,
    docs: &impl Documents,
) -> Result<Vec<u8>, FollowError> {
    let mut chain = vec![read(&top, media_type)?];
    loop {
        let child = chain.last().expect("the chain starts with the image's");
        let Some(link) = child.inventory.parent_doc.clone() else {
            break;
        };
        if chain.len() > MAX_DEPTH {
            return Err(FollowError::TooDeep {
                child: chain[0].name(),
            });
        }
        let attached = docs.attached(&link, media_type).await?;
        let parent = pick(child, &link, attached, media_type)?;
        chain.push(parent);
    }
    let mut full = chain.pop().expect("one document at least").inventory;
    while let Some(child) = chain.pop() {
        full = merge(&child, full)?;
    }
    // As `sbom NAME --full`: an image on another image of the graph gets
    // the full document's own identity (a registry parent's name is a
    // reference, with a `/`; a graph name has none).
    full.parent_doc = None;
    if full.parent.as_ref().is_some_and(|(n, _)| !n.contains('/')) {
        full.variant = Some("full");
    }
    Ok(render(&full, media_type))
}

/// `r`'s whole SBOM (`media_type`), its parents' followed in the sibling
/// repositories of `r`'s (`PREFIX/PARENT` for `PREFIX/NAME`), where pushes
/// attach them.
pub async fn from_registry(
    client: &Client,
    r: &Reference,
    media_type: &'static str,
) -> Result<Vec<u8>, FollowError> {
    let registry = |source| FollowError::Registry {
        tried: r.to_string(),
        source,
    };
    let subject = match &r.digest {
        Some(d) => d.clone(),
        None => client
            .head_manifest(r)
            .await
            .map_err(registry)?
            .ok_or_else(|| {
                registry(RegistryError::NotFound {
                    reference: r.to_string(),
                    what: "the image".into(),
                })
            })?,
    };
    let found = crate::attach::referrers::fetch_artifacts(client, r, &subject, media_type)
        .await
        .map_err(registry)?;
    let repository = format!("{}/{}", r.registry, r.repository);
    let siblings = Siblings { client, of: r };
    // Usually one; with two (a thin one and, pushed later with
    // `--sbom-parents full`, the whole) either gives the same document, so
    // the first that can be followed is taken.
    let mut first_error = None;
    for (digest, bytes) in found {
        let top = Found {
            location: format!("{repository}@{digest}"),
            bytes,
        };
        match flatten(top, media_type, &siblings).await {
            Ok(doc) => return Ok(doc),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| FollowError::NoSbom {
        reference: r.to_string(),
        media_type: media_type.to_string(),
    }))
}

/// The repositories beside `of`'s.
struct Siblings<'a> {
    client: &'a Client,
    of: &'a Reference,
}

impl Documents for Siblings<'_> {
    async fn attached(
        &self,
        parent: &ParentDoc,
        media_type: &'static str,
    ) -> Result<Attached, FollowError> {
        let repository = match self.of.repository.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/{}", parent.name),
            None => parent.name.clone(),
        };
        let at = Reference {
            registry: self.of.registry.clone(),
            repository,
            tag: None,
            digest: Some(parent.manifest.clone()),
        };
        let found = crate::attach::referrers::fetch_artifacts(
            self.client,
            &at,
            &parent.manifest,
            media_type,
        )
        .await
        .map_err(|source| FollowError::Registry {
            tried: at.to_string(),
            source,
        })?;
        let repository = format!("{}/{}", at.registry, at.repository);
        Ok(Attached {
            tried: at.to_string(),
            found: found
                .into_iter()
                .map(|(digest, bytes)| Found {
                    location: format!("{repository}@{digest}"),
                    bytes,
                })
                .collect(),
        })
    }
}

fn render(inv: &Inventory, media_type: &str) -> Vec<u8> {
    if media_type == spdx::MEDIA_TYPE {
        spdx::render(inv)
    } else {
        cyclonedx::render(inv)
    }
}

/// The document's identity: SPDX `documentNamespace`, CycloneDX
/// `serialNumber`.
fn identity(doc: &Value, media_type: &str) -> Option<String> {
    let key = if media_type == spdx::MEDIA_TYPE {
        "documentNamespace"
    } else {
        "serialNumber"
    };
    doc[key].as_str().map(str::to_string)
}

/// Of the documents attached to the parent, the one `link` names and
/// pins: its identity, its checksums, its image.
fn pick(
    child: &Read,
    link: &ParentDoc,
    attached: Attached,
    media_type: &'static str,
) -> Result<Read, FollowError> {
    let mut wrong = None;
    for f in attached.found {
        let Ok(doc) = serde_json::from_slice::<Value>(&f.bytes) else {
            continue;
        };
        if identity(&doc, media_type).as_deref() != Some(link.id.as_str()) {
            continue;
        }
        // SPDX pins the parent by SHA1 and names its SHA-256 too;
        // CycloneDX by SHA-256.
        let sums = [
            ("SHA1", &link.sha1, spdx::sha1_hex(&f.bytes)),
            ("SHA-256", &link.sha256, crate::digest::sha256_hex(&f.bytes)),
        ];
        let bad = sums.into_iter().find_map(|(algorithm, expected, actual)| {
            (!expected.is_empty() && actual != *expected).then(|| FollowError::Mismatch {
                child: child.name(),
                found: format!("the SBOM at {} ({})", f.location, link.id),
                algorithm,
                expected: expected.to_string(),
                actual,
            })
        });
        if let Some(e) = bad {
            wrong = Some(e);
            continue;
        }
        let parent = read(&f, media_type)?;
        if (&parent.inventory.name, &parent.inventory.manifest) != (&link.name, &link.manifest) {
            return Err(FollowError::Inconsistent {
                child: child.name(),
                document: parent.name(),
                reason: format!(
                    "it describes {}@{}, not {}@{}",
                    parent.inventory.name, parent.inventory.manifest, link.name, link.manifest
                ),
            });
        }
        return Ok(parent);
    }
    Err(wrong.unwrap_or_else(|| FollowError::Missing {
        child: child.name(),
        id: link.id.clone(),
        parent: format!("{}@{}", link.name, link.manifest),
        name: link.name.clone(),
        tried: attached.tried,
    }))
}

/// `child` (a thin inventory) over its parent's whole one: what
/// [`super::inventory::collect`] gives for the child image, the parent's
/// parts marked inherited.
fn merge(child: &Read, parent: Inventory) -> Result<Inventory, FollowError> {
    let t = &child.inventory;
    let unfit = |reason: String| FollowError::Inconsistent {
        child: child.name(),
        document: format!("the SBOM of {}@{}", parent.name, parent.manifest),
        reason,
    };
    if t.parent.as_ref() != Some(&(parent.name.clone(), parent.manifest.clone())) {
        return Err(unfit(format!("{} names another parent", child.id)));
    }
    // The child's own layers follow the parent's.
    let own_layers: Vec<(LayerDesc, bool)> =
        t.layers.iter().filter(|(_, inh)| !inh).cloned().collect();
    let first_own = t.layers.len() - own_layers.len();
    if !own_layers.is_empty() && first_own != parent.layers.len() {
        return Err(unfit(format!(
            "the image's own layers start at layer {first_own}, but the parent has {} layers",
            parent.layers.len()
        )));
    }
    let mut layers: Vec<(LayerDesc, bool)> =
        parent.layers.into_iter().map(|(l, _)| (l, true)).collect();
    layers.extend(own_layers);

    // A thin SBOM lists the packages its layers add or change; every
    // other package of the parent is inherited as it is (a removal would
    // have made the child's SBOM whole).
    let own: BTreeSet<(&str, &str)> = t
        .packages
        .iter()
        .map(|p| (p.installed.name.as_str(), p.installed.architecture.as_str()))
        .collect();
    let mut packages = t.packages.clone();
    packages.extend(
        parent
            .packages
            .into_iter()
            .filter(|p| {
                !own.contains(&(p.installed.name.as_str(), p.installed.architecture.as_str()))
            })
            .map(|p| DebPackage {
                inherited: true,
                replaces: None,
                ..p
            }),
    );
    packages.sort_by(|a, b| a.installed.cmp(&b.installed));
    let licence_refs = packages
        .iter()
        .filter_map(|p| p.licence.as_deref())
        .flat_map(licence_refs_of)
        .map(str::to_string)
        .collect();

    // Sources as `collect` orders them: the image's own first among
    // equals, so a source both use stays the image's.
    let mut sources = t.sources.clone();
    sources.extend(parent.sources.into_iter().map(|s| SourceInfo {
        inherited: true,
        ..s
    }));
    sources.sort();
    sources.dedup_by(|b, a| a.name == b.name && a.kind == b.kind);

    let own_paths: BTreeSet<&str> = t.plugins.iter().map(|p| p.path.as_str()).collect();
    let mut plugins = t.plugins.clone();
    plugins.extend(
        parent
            .plugins
            .into_iter()
            .filter(|p| !own_paths.contains(p.path.as_str()))
            .map(|p| Plugin {
                inherited: true,
                replaces: None,
                ..p
            }),
    );
    plugins.sort_by(|a, b| (&a.component, &a.path).cmp(&(&b.component, &b.path)));

    Ok(Inventory {
        name: t.name.clone(),
        manifest: t.manifest.clone(),
        created: t.created.clone(),
        os: t.os.clone(),
        architecture: t.architecture.clone(),
        parent: Some((parent.name, parent.manifest)),
        // The purls' distro is the image's os-release; a thin SBOM without
        // packages does not say it, and then it is the parent's.
        distro: if t.packages.is_empty() {
            parent.distro
        } else {
            t.distro.clone()
        },
        layers,
        packages,
        licence_refs,
        sources,
        plugins,
        moodle: t.moodle.clone(),
        removed: Vec::new(),
        parent_doc: None,
        variant: None,
    })
}

/// Reads `found` back into an inventory, and checks that rendering it
/// gives its bytes again.
fn read(found: &Found, media_type: &'static str) -> Result<Read, FollowError> {
    let unreadable = |reason: String| FollowError::Unreadable {
        document: format!("the SBOM at {}", found.location),
        reason,
    };
    let doc: Value =
        serde_json::from_slice(&found.bytes).map_err(|e| unreadable(format!("not JSON: {e}")))?;
    let inventory = if media_type == spdx::MEDIA_TYPE {
        from_spdx(&doc)
    } else {
        from_cyclonedx(&doc)
    }
    .map_err(unreadable)?;
    let again = render(&inventory, media_type);
    if again != found.bytes {
        return Err(unreadable(first_difference(&found.bytes, &again)));
    }
    Ok(Read {
        location: found.location.clone(),
        id: identity(&doc, media_type).unwrap_or_default(),
        inventory,
    })
}

/// Where `a` (as found) and `b` (as this imgbuild writes it) part.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let around = |s: &[u8]| {
        let from = at.saturating_sub(40);
        String::from_utf8_lossy(&s[from..(at + 40).min(s.len())]).into_owned()
    };
    format!(
        "written again it differs from byte {at}: `{}` where this imgbuild writes `{}`",
        around(a),
        around(b)
    )
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `%XX` decoded (purl values, SPDX namespaces).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (b[i], hex) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A purl's qualifier (`arch`, `distro`), decoded.
fn qualifier(purl: &str, key: &str) -> Option<String> {
    let (_, q) = purl.split_once('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| unescape(v))
}

/// Layers known only by their count (a thin document skips the parent's),
/// to be replaced by the parent's own when merged.
fn placeholders(n: usize) -> Vec<(LayerDesc, bool)> {
    (0..n)
        .map(|_| {
            (
                LayerDesc {
                    digest: String::new(),
                    diff_id: String::new(),
                    size: 0,
                    media_type: String::new(),
                },
                true,
            )
        })
        .collect()
}

/// Own layers by index after `placeholders` for the ones before the first.
fn place_layers(mut by_index: Vec<(usize, LayerDesc, bool)>) -> Vec<(LayerDesc, bool)> {
    by_index.sort_by_key(|(i, _, _)| *i);
    let first = by_index.first().map_or(0, |(i, _, _)| *i);
    let mut out = placeholders(first);
    out.extend(by_index.into_iter().map(|(_, l, inh)| (l, inh)));
    out
}

fn empty(name: String, manifest: String, created: String) -> Inventory {
    Inventory {
        name,
        manifest,
        created,
        os: String::new(),
        architecture: String::new(),
        parent: None,
        distro: None,
        layers: Vec::new(),
        packages: Vec::new(),
        licence_refs: BTreeSet::new(),
        sources: Vec::new(),
        plugins: Vec::new(),
        moodle: None,
        removed: Vec::new(),
        parent_doc: None,
        variant: None,
    }
}

/// The variant (`full`) that `id` names beside the plain identity.
fn variant_of(id: &str, plain: impl Fn(Option<&str>) -> String) -> Option<&'static str> {
    (id == plain(Some("full"))).then_some("full")
}

/// An imgbuild SPDX document read back (see [`spdx::render`]).
fn from_spdx(doc: &Value) -> Result<Inventory, String> {
    let packages = doc["packages"].as_array().cloned().unwrap_or_default();
    let rels = doc["relationships"].as_array().cloned().unwrap_or_default();
    let id_of = |p: &Value| text(&p["SPDXID"]);
    let image = packages
        .iter()
        .find(|p| id_of(p).starts_with("SPDXRef-image-"))
        .ok_or("no image package")?;
    let mut inv = empty(
        text(&image["name"]),
        text(&image["versionInfo"]),
        text(&doc["creationInfo"]["created"]),
    );
    let platform = text(&image["comment"]);
    let (os, arch) = platform.split_once('/').unwrap_or((&platform, ""));
    (inv.os, inv.architecture) = (os.to_string(), arch.to_string());
    inv.variant = variant_of(&text(&doc["documentNamespace"]), |v| {
        spdx::namespace(&inv.name, &inv.manifest, v)
    });
    // What the (whole) document's parent contains: the inherited parts.
    let parent_id = packages
        .iter()
        .map(id_of)
        .find(|i| i.starts_with("SPDXRef-parent-"));
    let inherited: BTreeSet<String> = rels
        .iter()
        .filter(|r| {
            Some(text(&r["spdxElementId"])) == parent_id && r["relationshipType"] == "CONTAINS"
        })
        .map(|r| text(&r["relatedSpdxElement"]))
        .collect();
    let generated_from = |id: &str| {
        rels.iter()
            .find(|r| r["spdxElementId"] == id && r["relationshipType"] == "GENERATED_FROM")
            .map(|r| text(&r["relatedSpdxElement"]))
    };
    let sha256 = |p: &Value| {
        p["checksums"][0]["checksumValue"]
            .as_str()
            .map(str::to_string)
    };
    let mut layers = Vec::new();
    for p in &packages {
        let id = id_of(p);
        let comment = text(&p["comment"]);
        if id.starts_with("SPDXRef-parent-") {
            inv.parent = Some((text(&p["name"]), text(&p["versionInfo"])));
        } else if let Some(i) = id.strip_prefix("SPDXRef-layer-") {
            let index: usize = i.parse().map_err(|_| format!("layer id {id}"))?;
            let (media_type, rest) = comment.split_once(", ").unwrap_or_default();
            let (size, diff_id) = rest.split_once(" bytes, diff_id ").unwrap_or_default();
            layers.push((
                index,
                LayerDesc {
                    digest: text(&p["versionInfo"]),
                    diff_id: diff_id.to_string(),
                    size: size.parse().map_err(|_| format!("layer size in {id}"))?,
                    media_type: media_type.to_string(),
                },
                inherited.contains(&id),
            ));
        } else if id.starts_with("SPDXRef-deb-") {
            let purl = text(&p["externalRefs"][0]["referenceLocator"]);
            let from = text(&p["sourceInfo"]);
            let (source, source_version) = from
                .strip_prefix("built from source package ")
                .and_then(|s| s.split_once(' '))
                .unwrap_or_default();
            if let Some(d) = qualifier(&purl, "distro") {
                inv.distro = Some((d.clone(), d));
            }
            inv.packages.push(DebPackage {
                installed: Installed {
                    name: text(&p["name"]),
                    version: text(&p["versionInfo"]),
                    architecture: qualifier(&purl, "arch").unwrap_or_default(),
                    source: source.to_string(),
                    source_version: source_version.to_string(),
                },
                sha256: sha256(p),
                licence: p["licenseDeclared"]
                    .as_str()
                    .filter(|l| *l != "NOASSERTION")
                    .map(str::to_string),
                inherited: inherited.contains(&id),
                replaces: comment
                    .strip_prefix("replaces the parent's version ")
                    .map(str::to_string),
            });
        } else if id.starts_with("SPDXRef-source-") {
            let info = text(&p["sourceInfo"]);
            let kind = if let Some(rest) = info.strip_prefix("git ") {
                SourceKind::Git {
                    url: rest
                        .rsplit_once(" at commit ")
                        .map_or(rest, |(u, _)| u)
                        .to_string(),
                    commit: text(&p["versionInfo"]),
                }
            } else if let Some(url) = info.strip_prefix("archive ") {
                SourceKind::Archive {
                    url: url.to_string(),
                    sha256: sha256(p).unwrap_or_default(),
                }
            } else {
                SourceKind::Dir
            };
            inv.sources.push(SourceInfo {
                name: text(&p["name"]),
                kind,
                inherited: false,
            });
        } else if id == "SPDXRef-moodle" {
            let (path, version) = comment
                .rsplit_once("/version.php, $version ")
                .unwrap_or_default();
            inv.moodle = Some(Moodle {
                release: text(&p["versionInfo"]),
                version: (version != "?").then(|| version.to_string()),
                path: path.to_string(),
            });
        } else if id.starts_with("SPDXRef-plugin-") {
            let (path, rest) = comment
                .split_once("/version.php, release ")
                .unwrap_or_default();
            let (release, replaces) = match rest.split_once(", replaces the parent's version ") {
                Some((r, old)) => (r, Some(old.to_string())),
                None => (rest, None),
            };
            inv.plugins.push(Plugin {
                component: text(&p["name"]),
                version: Some(text(&p["versionInfo"])),
                release: (release != "?").then(|| release.to_string()),
                path: path.to_string(),
                // The render names a source by its SPDX id only: the id's
                // tail gives that id again.
                source: generated_from(&id)
                    .and_then(|s| s.strip_prefix("SPDXRef-source-").map(str::to_string)),
                inherited: inherited.contains(&id),
                replaces,
            });
        }
    }
    inv.layers = place_layers(layers);
    inv.licence_refs = doc["hasExtractedLicensingInfos"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| text(&l["licenseId"]))
        .collect();
    if let Some(ext) = doc["externalDocumentRefs"]
        .as_array()
        .and_then(|a| a.first())
    {
        let id = text(&ext["spdxDocument"]);
        // https://imgbuild.invalid/spdx/NAME/HEX names the parent image.
        let (name, hex) = id
            .strip_prefix("https://imgbuild.invalid/spdx/")
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(|| format!("the parent's SBOM {id} names no image"))?;
        let comment = text(&doc["creationInfo"]["comment"]);
        let sha256 = comment
            .split_once("blob sha256:")
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_hexdigit).collect())
            .unwrap_or_default();
        let (name, manifest) = (unescape(name), format!("sha256:{hex}"));
        inv.parent = Some((name.clone(), manifest.clone()));
        inv.parent_doc = Some(ParentDoc {
            name,
            manifest,
            id,
            sha1: text(&ext["checksum"]["checksumValue"]),
            sha256,
        });
    }
    Ok(inv)
}

/// An imgbuild CycloneDX BOM read back (see [`cyclonedx::render`]).
fn from_cyclonedx(doc: &Value) -> Result<Inventory, String> {
    let image = &doc["metadata"]["component"];
    let mut inv = empty(
        text(&image["name"]),
        text(&image["version"]),
        text(&doc["metadata"]["timestamp"]),
    );
    if inv.name.is_empty() {
        return Err("no image component".into());
    }
    inv.variant = variant_of(&text(&doc["serialNumber"]), |v| {
        cyclonedx::serial(&inv.manifest, v)
    });
    let components = doc["components"].as_array().cloned().unwrap_or_default();
    let deps = doc["dependencies"].as_array().cloned().unwrap_or_default();
    let inherited: BTreeSet<String> = deps
        .iter()
        .filter(|d| text(&d["ref"]).starts_with("parent:"))
        .flat_map(|d| d["dependsOn"].as_array().cloned().unwrap_or_default())
        .map(|r| text(&r))
        .collect();
    let property = |c: &Value, name: &str| {
        c["properties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .map(|p| text(&p["value"]))
    };
    let hash = |c: &Value| c["hashes"][0]["content"].as_str().map(str::to_string);
    let mut layers = Vec::new();
    for c in &components {
        let r = text(&c["bom-ref"]);
        if r.starts_with("layer:") {
            let name = text(&c["name"]);
            let index: usize = name
                .strip_prefix("layer ")
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| format!("layer component {name}"))?;
            layers.push((
                index,
                LayerDesc {
                    digest: text(&c["version"]),
                    diff_id: property(c, "oci:diffID").unwrap_or_default(),
                    size: property(c, "oci:size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_default(),
                    media_type: property(c, "oci:mediaType").unwrap_or_default(),
                },
                inherited.contains(&r),
            ));
        } else if r.starts_with("pkg:deb/") {
            let ancestor = &c["pedigree"]["ancestors"][0];
            if let Some(d) = qualifier(&r, "distro") {
                inv.distro = Some((d.clone(), d));
            }
            inv.packages.push(DebPackage {
                installed: Installed {
                    name: text(&c["name"]),
                    version: text(&c["version"]),
                    architecture: qualifier(&r, "arch").unwrap_or_default(),
                    source: text(&ancestor["name"]),
                    source_version: text(&ancestor["version"]),
                },
                sha256: hash(c),
                licence: c["licenses"][0]["expression"].as_str().map(str::to_string),
                inherited: inherited.contains(&r),
                replaces: property(c, "imgbuild:replaces"),
            });
        } else if let Some(name) = r.strip_prefix("source:") {
            let link = &c["externalReferences"][0];
            let kind = match link["type"].as_str() {
                Some("vcs") => SourceKind::Git {
                    url: text(&link["url"]),
                    commit: text(&c["version"]),
                },
                Some("distribution") => SourceKind::Archive {
                    url: text(&link["url"]),
                    sha256: hash(c).unwrap_or_default(),
                },
                _ => SourceKind::Dir,
            };
            inv.sources.push(SourceInfo {
                name: name.to_string(),
                kind,
                inherited: false,
            });
        } else if r == "moodle" {
            // The BOM does not carry `$version`; nothing renders it.
            inv.moodle = Some(Moodle {
                release: text(&c["version"]),
                version: None,
                path: property(c, "moodle:path").unwrap_or_default(),
            });
        } else if r.starts_with("moodle-plugin:") {
            let source = deps
                .iter()
                .find(|d| d["ref"] == r.as_str())
                .and_then(|d| d["dependsOn"][0].as_str())
                .and_then(|s| s.strip_prefix("source:"))
                .map(str::to_string);
            inv.plugins.push(Plugin {
                component: text(&c["name"]),
                version: Some(text(&c["version"])),
                release: property(c, "moodle:release"),
                path: property(c, "moodle:path").unwrap_or_default(),
                source,
                inherited: inherited.contains(&r),
                replaces: property(c, "imgbuild:replaces"),
            });
        } else if r.starts_with("parent:") {
            let (name, manifest) = (text(&c["name"]), text(&c["version"]));
            inv.parent = Some((name.clone(), manifest.clone()));
            let link = &c["externalReferences"][0];
            if link["type"] == "bom" {
                let url = text(&link["url"]);
                let serial = url
                    .strip_prefix("urn:cdx:")
                    .and_then(|s| s.strip_suffix("/1"))
                    .ok_or_else(|| format!("the parent's BOM-Link {url}"))?;
                inv.parent_doc = Some(ParentDoc {
                    name,
                    manifest,
                    id: format!("urn:uuid:{serial}"),
                    sha1: String::new(),
                    sha256: hash(link).unwrap_or_default(),
                });
            }
        }
    }
    inv.layers = place_layers(layers);
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::oci::image::ImageRecord;
    use crate::sbom::inventory::{Subject, collect};
    use crate::sbom::layers::{LayerFacts, fact};

    /// A layer holding these files (path, text), as the SBOM reads them.
    fn layer(files: &[(&str, &str)]) -> LayerFacts {
        LayerFacts {
            digest: String::new(),
            removed: vec![],
            files: files
                .iter()
                .map(|(p, t)| (p.to_string(), fact(p, t).expect("a file the SBOM reads")))
                .collect(),
        }
    }

    fn status(pkgs: &[(&str, &str, &str)]) -> String {
        pkgs.iter()
            .map(|(n, v, src)| {
                format!(
                    "Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nSource: {src}\nVersion: {v}\n\n"
                )
            })
            .collect()
    }

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ with OpenSSL exception\n";

    fn record(name: &str, layers: usize) -> ImageRecord {
        ImageRecord {
            manifest: format!("sha256:{}", crate::digest::sha256_hex(name.as_bytes())),
            manifest_size: 1,
            config: "sha256:cc".into(),
            config_size: 1,
            layers: (0..layers)
                .map(|i| LayerDesc {
                    digest: format!("sha256:{i:064}"),
                    diff_id: format!("sha256:{:064}", i + 100),
                    size: 10 + i as u64,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    /// base (scratch) → mid → client, each with its layers' facts, and
    /// what `sbom::document` makes of them: (name, manifest, thin, full)
    /// per image and format.
    struct Chain {
        docs: BTreeMap<(String, &'static str), Vec<u8>>,
        full: BTreeMap<(String, &'static str), Vec<u8>>,
        manifests: BTreeMap<String, String>,
    }

    /// `mid_removes`: mid's layer takes away base's `tzdata`, so mid's
    /// attached SBOM is whole (and client's references it).
    fn chain(mid_removes: bool) -> Chain {
        let l0 = layer(&[
            (
                "var/lib/dpkg/status",
                &status(&[
                    ("libc6", "2.41-12", "glibc"),
                    ("tzdata", "2025b-4", "tzdata"),
                ]),
            ),
            ("usr/share/doc/libc6/copyright", DEP5),
            ("etc/os-release", "ID=debian\nVERSION_CODENAME=trixie\n"),
        ]);
        let l1 = layer(&[
            (
                "var/lib/dpkg/status",
                &status(if mid_removes {
                    &[
                        ("libc6", "2.41-12", "glibc"),
                        ("php8.4", "8.4.11-1", "php8.4"),
                    ][..]
                } else {
                    &[
                        ("libc6", "2.41-12", "glibc"),
                        ("php8.4", "8.4.11-1", "php8.4"),
                        ("tzdata", "2025c-1", "tzdata"),
                    ][..]
                }),
            ),
            (
                "usr/share/doc/php8.4/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: PHP-3.01 and Zend-2.0\n\nFiles: build/*\nLicense: GPL-2+ with Autoconf exception\n",
            ),
            (
                "var/www/moodle/version.php",
                "<?php\n$version = 2025100600.03;\n$release = '5.1.3 (Build: 20251006)';\n$branch = '501';\n",
            ),
            (
                "var/www/moodle/mod/forum/version.php",
                "<?php\n$plugin->version = 2025100600;\n$plugin->component = 'mod_forum';\n",
            ),
        ]);
        let l2 = layer(&[(
            "var/www/moodle/theme/acme/version.php",
            "<?php\n$plugin->version = 2024100700;\n$plugin->component = 'theme_acme';\n$plugin->release = '1.4.2';\n",
        )]);
        let l3 = layer(&[(
            "var/www/moodle/mod/forum/version.php",
            "<?php\n$plugin->version = 2025100601;\n$plugin->component = 'mod_forum';\n",
        )]);
        let facts = [l0, l1, l2, l3];
        let debs = BTreeMap::from([(
            (
                "php8.4".to_string(),
                "8.4.11-1".to_string(),
                "amd64".to_string(),
            ),
            "ab".repeat(32),
        )]);
        let src = |name: &str, inherited| SourceInfo {
            name: name.into(),
            kind: SourceKind::Git {
                url: format!("https://git.example/{name}.git"),
                commit: "c0ffee".into(),
            },
            inherited,
        };
        // (name, parent, layers, own sources, inherited sources)
        let images = [
            ("base", None, 1, vec![], vec![]),
            ("mid", Some("base"), 2, vec![src("core", false)], vec![]),
            (
                "client",
                Some("mid"),
                4,
                vec![src("theme", false)],
                vec![src("core", true)],
            ),
        ];
        let mut out = Chain {
            docs: BTreeMap::new(),
            full: BTreeMap::new(),
            manifests: BTreeMap::new(),
        };
        let mut invs: BTreeMap<String, (Inventory, ImageRecord)> = BTreeMap::new();
        for (name, parent, n, own, inh) in images {
            let rec = record(name, n);
            let parent_info = parent.map(|p: &str| {
                let (_, prec) = &invs[p];
                (p.to_string(), prec.manifest.clone(), prec.layers.len())
            });
            let mut sources = own.clone();
            sources.extend(inh);
            let subject = Subject {
                name,
                record: &rec,
                created: "2025-01-01T00:00:00Z".into(),
                os: "linux".into(),
                architecture: "amd64".into(),
                parent: parent_info,
                debs: &debs,
                sources,
                source_dests: vec![
                    ("/var/www/moodle".into(), "core".into()),
                    ("/var/www/moodle/theme/acme".into(), "theme".into()),
                ],
            };
            let inv = collect(&subject, &facts[..n]);
            out.manifests.insert(name.into(), rec.manifest.clone());
            for mt in [spdx::MEDIA_TYPE, cyclonedx::MEDIA_TYPE] {
                let thin = match parent {
                    Some(p) => {
                        let pbytes = &out.docs[&(p.to_string(), mt)];
                        let pm = &invs[p].1.manifest;
                        let id = if mt == spdx::MEDIA_TYPE {
                            spdx::namespace(p, pm, None)
                        } else {
                            cyclonedx::serial(pm, None)
                        };
                        // As `sbom::document`: a removal makes it whole.
                        inv.clone()
                            .thin(ParentDoc {
                                name: p.into(),
                                manifest: pm.clone(),
                                id,
                                sha1: spdx::sha1_hex(pbytes),
                                sha256: crate::digest::sha256_hex(pbytes),
                            })
                            .unwrap_or_else(|| inv.clone())
                    }
                    None => inv.clone(),
                };
                let full = Inventory {
                    variant: parent.map(|_| "full"),
                    ..inv.clone()
                };
                out.docs.insert((name.into(), mt), render(&thin, mt));
                out.full.insert((name.into(), mt), render(&full, mt));
            }
            invs.insert(name.into(), (inv, rec));
        }
        out
    }

    /// Documents in memory, by image name: what a registry would list.
    struct Memory(BTreeMap<String, Vec<Found>>);

    impl Documents for Memory {
        async fn attached(
            &self,
            parent: &ParentDoc,
            _media_type: &'static str,
        ) -> Result<Attached, FollowError> {
            Ok(Attached {
                tried: format!("mem/{}@{}", parent.name, parent.manifest),
                found: self.0.get(&parent.name).cloned().unwrap_or_default(),
            })
        }
    }

    fn memory(c: &Chain, mt: &'static str) -> Memory {
        Memory(
            ["base", "mid"]
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        vec![Found {
                            location: format!("mem/{n}"),
                            bytes: c.docs[&(n.to_string(), mt)].clone(),
                        }],
                    )
                })
                .collect(),
        )
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    fn top(c: &Chain, name: &str, mt: &'static str) -> Found {
        Found {
            location: format!("mem/{name}"),
            bytes: c.docs[&(name.to_string(), mt)].clone(),
        }
    }

    #[test]
    fn following_thin_sboms_gives_the_full_one_byte_for_byte() {
        for removes in [false, true] {
            following(removes);
        }
    }

    fn following(mid_removes: bool) {
        let c = chain(mid_removes);
        let mid =
            String::from_utf8_lossy(&c.docs[&("mid".to_string(), spdx::MEDIA_TYPE)]).into_owned();
        assert_eq!(mid.contains("externalDocumentRefs"), !mid_removes);
        for mt in [spdx::MEDIA_TYPE, cyclonedx::MEDIA_TYPE] {
            for name in ["client", "mid", "base"] {
                let got = run(flatten(top(&c, name, mt), mt, &memory(&c, mt)))
                    .unwrap_or_else(|e| panic!("{name} {mt} {mid_removes}: {e}"));
                let want = &c.full[&(name.to_string(), mt)];
                assert!(
                    &got == want,
                    "{name} {mt} {mid_removes}:\n{}\n{}",
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want)
                );
            }
            // The case is not trivial: the thin one lacks what the full has.
            let thin = &c.docs[&("client".to_string(), mt)];
            assert!(!String::from_utf8_lossy(thin).contains("libc6"));
            assert!(
                String::from_utf8_lossy(&c.full[&("client".to_string(), mt)]).contains("libc6")
            );
        }
    }

    #[test]
    fn a_parent_sbom_with_other_bytes_is_refused_and_a_missing_one_named() {
        let c = chain(false);
        let mt = spdx::MEDIA_TYPE;
        let mut docs = memory(&c, mt);
        let good = docs.0["mid"][0].bytes.clone();
        let tampered = String::from_utf8(good)
            .unwrap()
            .replace("8.4.11-1", "8.4.12-1")
            .into_bytes();
        docs.0.get_mut("mid").unwrap()[0].bytes = tampered;
        let err = run(flatten(top(&c, "client", mt), mt, &docs)).unwrap_err();
        assert!(
            matches!(
                err,
                FollowError::Mismatch {
                    algorithm: "SHA1",
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("mem/mid") && msg.contains("mem/client"),
            "{msg}"
        );

        // The CycloneDX link pins SHA-256.
        let mt = cyclonedx::MEDIA_TYPE;
        let mut docs = memory(&c, mt);
        docs.0.get_mut("base").unwrap()[0].bytes.push(b' ');
        let err = run(flatten(top(&c, "client", mt), mt, &docs)).unwrap_err();
        assert!(
            matches!(
                err,
                FollowError::Mismatch {
                    algorithm: "SHA-256",
                    ..
                }
            ),
            "{err}"
        );

        let mut docs = memory(&c, mt);
        docs.0.remove("base");
        let err = run(flatten(top(&c, "client", mt), mt, &docs)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FollowError::Missing { .. }), "{msg}");
        assert!(
            msg.contains("mem/base@sha256:") && msg.contains("--sbom-parents full"),
            "{msg}"
        );
    }

    #[test]
    fn a_document_this_imgbuild_would_not_write_is_not_flattened() {
        let c = chain(false);
        let mt = spdx::MEDIA_TYPE;
        let mut t = top(&c, "client", mt);
        let mut doc: Value = serde_json::from_slice(&t.bytes).unwrap();
        doc["packages"][0]["annotation"] = "x".into();
        t.bytes = serde_json::to_vec(&doc).unwrap();
        t.bytes.push(b'\n');
        let err = run(flatten(t, mt, &memory(&c, mt))).unwrap_err();
        assert!(matches!(err, FollowError::Unreadable { .. }), "{err}");
    }

    #[test]
    fn purl_values_are_decoded() {
        assert_eq!(unescape("1%3A2.75-10%2Bb1"), "1:2.75-10+b1");
        assert_eq!(
            qualifier("pkg:deb/debian/a@1?arch=amd64&distro=trixie", "distro").as_deref(),
            Some("trixie")
        );
    }
}
