//! What an image is made of, from what imgbuild knows: its layers (by
//! digest), the dpkg database its layers leave (the packages, their source
//! packages; the `.deb`'s SHA256 from images.lock), the licences of DEP-5
//! copyright files, the sources images.yaml pinned (commit, SHA256), and
//! the Moodle release and plugins that name themselves in `version.php`.
//! The parent's share is marked, so a client's SBOM says what it inherits,
//! or (a thin SBOM, [`Inventory::thin`]) leaves it to the parent's own
//! SBOM, referenced by checksum.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::dpkg::{Installed, installed};
use super::layers::{Fact, LayerFacts, merge};
use crate::oci::image::{ImageRecord, LayerDesc};

/// The image an SBOM describes, and what it is built on.
pub struct Subject<'a> {
    pub name: &'a str,
    pub record: &'a ImageRecord,
    /// The config's `created` (SOURCE_DATE_EPOCH at build time).
    pub created: String,
    pub os: String,
    pub architecture: String,
    /// The parent image: its name and manifest digest, and how many of
    /// this image's layers are its.
    pub parent: Option<(String, String, usize)>,
    /// `.deb` SHA256 by (name, version, architecture), from images.lock.
    pub debs: &'a BTreeMap<(String, String, String), String>,
    /// The sources the image's layers (and its ancestors') come from.
    pub sources: Vec<SourceInfo>,
    /// Absolute destinations of layers taken from a source, and its name.
    pub source_dests: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Git { url: String, commit: String },
    Archive { url: String, sha256: String },
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub kind: SourceKind,
    /// Only an ancestor's layers use it.
    pub inherited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebPackage {
    #[serde(flatten)]
    pub installed: Installed,
    pub sha256: Option<String>,
    /// SPDX expression from a DEP-5 copyright file.
    pub licence: Option<String>,
    pub inherited: bool,
    /// The parent's version of this package, when this image's layers
    /// changed it.
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plugin {
    pub component: String,
    pub version: Option<String>,
    pub release: Option<String>,
    /// Its directory in the image, absolute.
    pub path: String,
    pub source: Option<String>,
    pub inherited: bool,
    /// The parent's version of the plugin at this path, when this image's
    /// layers changed it.
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moodle {
    pub release: String,
    pub version: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub name: String,
    pub manifest: String,
    pub created: String,
    pub os: String,
    pub architecture: String,
    pub parent: Option<(String, String)>,
    /// os-release's ID and VERSION_CODENAME (purl's `distro`).
    pub distro: Option<(String, String)>,
    /// Layers, and whether each is the parent's.
    pub layers: Vec<(LayerDesc, bool)>,
    pub packages: Vec<DebPackage>,
    /// `LicenseRef-`s the licences use.
    pub licence_refs: BTreeSet<String>,
    pub sources: Vec<SourceInfo>,
    pub plugins: Vec<Plugin>,
    pub moodle: Option<Moodle>,
    /// What the parent has that this image's layers took away (packages,
    /// plugins), named: a thin SBOM cannot say so.
    pub removed: Vec<String>,
    /// Set on a thin inventory: the parent's SBOM, which holds what is
    /// inherited (left out here).
    pub parent_doc: Option<ParentDoc>,
    /// Appended to the document's identity (SPDX namespace, CycloneDX
    /// serial) when this full document differs from the image's attached
    /// thin one.
    pub variant: Option<&'static str>,
}

/// The parent's own SBOM document, as a thin SBOM references it.
#[derive(Debug, Clone, Serialize)]
pub struct ParentDoc {
    /// The parent image's name and manifest digest.
    pub name: String,
    pub manifest: String,
    /// SPDX's `documentNamespace` or CycloneDX's `serialNumber`.
    pub id: String,
    /// Of the document's bytes: SHA1 (what SPDX's external document
    /// references take) and SHA256 (the referrer's blob digest).
    pub sha1: String,
    pub sha256: String,
}

/// The inventory of `subject` from its layers' facts (in order).
pub fn collect(subject: &Subject<'_>, facts: &[LayerFacts]) -> Inventory {
    let parent_layers = subject.parent.as_ref().map_or(0, |p| p.2);
    let all = merge(facts);
    let inherited_files = merge(&facts[..parent_layers.min(facts.len())]);
    let status_of = |files: &BTreeMap<String, Fact>| match files.get("var/lib/dpkg/status") {
        Some(Fact::DpkgStatus(s)) => installed(s),
        _ => Vec::new(),
    };
    let parent_pkgs: BTreeSet<Installed> = status_of(&inherited_files).into_iter().collect();
    let mut removed = Vec::new();
    let mut licence_refs = BTreeSet::new();
    let packages: Vec<DebPackage> = status_of(&all)
        .into_iter()
        .map(|p| {
            let licence = match all.get(&format!("usr/share/doc/{}/copyright", p.name)) {
                Some(Fact::Copyright(Some((expr, _)))) => {
                    // From the expression, not the record: a layer's
                    // record made before a `LicenseRef-` fix must not
                    // list one no expression names.
                    licence_refs.extend(licence_refs_of(expr).map(str::to_string));
                    Some(expr.clone())
                }
                _ => None,
            };
            let key = (p.name.clone(), p.version.clone(), p.architecture.clone());
            let inherited = parent_pkgs.contains(&p);
            let replaces = parent_pkgs
                .iter()
                .find(|q| !inherited && q.name == p.name && q.architecture == p.architecture)
                .map(|q| q.version.clone());
            DebPackage {
                sha256: subject.debs.get(&key).cloned(),
                licence,
                inherited,
                replaces,
                installed: p,
            }
        })
        .collect();
    for q in &parent_pkgs {
        if !packages
            .iter()
            .any(|p| p.installed.name == q.name && p.installed.architecture == q.architecture)
        {
            removed.push(format!(
                "Debian package {}:{} {}",
                q.name, q.architecture, q.version
            ));
        }
    }
    let mut plugins = Vec::new();
    let mut moodle = None;
    for (path, fact) in &all {
        let Fact::VersionPhp(v) = fact else { continue };
        let dir = format!(
            "/{}",
            path.trim_end_matches("version.php").trim_end_matches('/')
        );
        if v.core {
            // The shallowest core version.php is Moodle's own (a copy in a
            // test fixture sits deeper).
            let release = v.release.clone().unwrap_or_default();
            if moodle
                .as_ref()
                .is_none_or(|m: &Moodle| m.path.len() > dir.len())
            {
                moodle = Some(Moodle {
                    release,
                    version: v.version.clone(),
                    path: dir,
                });
            }
            continue;
        }
        let Some(component) = v.component.clone() else {
            continue;
        };
        let source = subject
            .source_dests
            .iter()
            .filter(|(dest, _)| {
                let d = dest.trim_end_matches('/');
                dir == d || dir.starts_with(&format!("{d}/"))
            })
            .max_by_key(|(dest, _)| dest.len())
            .map(|(_, s)| s.clone());
        let replaces = match inherited_files.get(path) {
            Some(Fact::VersionPhp(old)) if old != v => {
                Some(old.version.clone().unwrap_or_default())
            }
            _ => None,
        };
        plugins.push(Plugin {
            inherited: inherited_files.get(path) == Some(fact),
            replaces,
            component,
            version: v.version.clone(),
            release: v.release.clone(),
            path: dir,
            source,
        });
    }
    plugins.sort_by(|a, b| (&a.component, &a.path).cmp(&(&b.component, &b.path)));
    for (path, fact) in &inherited_files {
        if let Fact::VersionPhp(v) = fact
            && let Some(c) = &v.component
            && !matches!(all.get(path), Some(Fact::VersionPhp(now)) if now.component.is_some())
        {
            removed.push(format!("Moodle plugin {c} (/{path})"));
        }
    }
    let distro = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| match all.get(*p) {
            Some(Fact::OsRelease { id, codename }) => Some((id.clone(), codename.clone())),
            _ => None,
        });
    // A source used by the image itself and by an ancestor is its own
    // (sorted first: `false < true`).
    let mut sources = subject.sources.clone();
    sources.sort();
    sources.dedup_by(|b, a| a.name == b.name && a.kind == b.kind);
    Inventory {
        name: subject.name.to_string(),
        manifest: subject.record.manifest.clone(),
        created: subject.created.clone(),
        os: subject.os.clone(),
        architecture: subject.architecture.clone(),
        parent: subject.parent.as_ref().map(|p| (p.0.clone(), p.1.clone())),
        distro,
        layers: subject
            .record
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i < parent_layers))
            .collect(),
        packages,
        licence_refs,
        sources,
        plugins,
        moodle,
        removed,
        parent_doc: None,
        variant: None,
    }
}

/// The `LicenseRef-`s an SPDX licence expression names.
pub fn licence_refs_of(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| t.starts_with("LicenseRef-"))
}

/// `%`-encodes what a purl's version or qualifier value cannot hold.
pub fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Inventory {
    /// What this image adds to its parent, the rest left to the parent's
    /// SBOM `doc`: its own layers, the packages and plugins its layers add
    /// or change, its own sources, and the Moodle release. None when its
    /// layers removed something the parent has: a reference cannot take
    /// back what the referenced document lists, so the full SBOM is the
    /// true one.
    pub fn thin(&self, doc: ParentDoc) -> Option<Inventory> {
        if !self.removed.is_empty() {
            return None;
        }
        let mut thin = self.clone();
        // Layers keep their place (renderers skip the parent's), so a
        // layer is named by its index in the image.
        thin.packages.retain(|p| !p.inherited);
        thin.plugins.retain(|p| !p.inherited);
        thin.sources.retain(|s| !s.inherited);
        // Only the licences the remaining packages name.
        thin.licence_refs.retain(|r| {
            thin.packages.iter().any(|p| {
                p.licence
                    .as_deref()
                    .is_some_and(|l| licence_refs_of(l).any(|t| t == r))
            })
        });
        thin.parent_doc = Some(doc);
        Some(thin)
    }

    /// `debian-13` style, or the codename, for purls' `distro=`.
    pub fn distro_name(&self) -> Option<String> {
        self.distro.as_ref().map(|(id, codename)| {
            if codename.is_empty() {
                id.clone()
            } else {
                codename.clone()
            }
        })
    }

    pub fn deb_purl(&self, name: &str, version: &str, arch: &str) -> String {
        let mut p = format!(
            "pkg:deb/debian/{}@{}?arch={}",
            purl_escape(name),
            purl_escape(version),
            purl_escape(arch)
        );
        if let Some(d) = self.distro_name() {
            p.push_str(&format!("&distro={}", purl_escape(&d)));
        }
        p
    }

    pub fn image_purl(&self) -> String {
        format!(
            "pkg:oci/{}@{}",
            purl_escape(&self.name),
            purl_escape(&self.manifest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::layers::{Fact, LayerFacts};

    fn status(pkgs: &[(&str, &str)]) -> LayerFacts {
        let text: String = pkgs
            .iter()
            .map(|(n, v)| {
                format!(
                    "Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n\n"
                )
            })
            .collect();
        LayerFacts {
            digest: String::new(),
            removed: vec![],
            files: [("var/lib/dpkg/status".to_string(), Fact::DpkgStatus(text))].into(),
        }
    }

    fn image(layers: usize) -> ImageRecord {
        ImageRecord {
            manifest: "sha256:aa".into(),
            manifest_size: 1,
            config: "sha256:bb".into(),
            config_size: 1,
            layers: (0..layers)
                .map(|i| LayerDesc {
                    digest: format!("sha256:{i}"),
                    diff_id: format!("sha256:{i}"),
                    size: 1,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn doc() -> ParentDoc {
        ParentDoc {
            name: "base".into(),
            manifest: "sha256:cc".into(),
            id: "https://imgbuild.invalid/spdx/base/cc".into(),
            sha1: "0".repeat(40),
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn a_thin_inventory_keeps_what_the_image_adds_or_changes_and_refuses_removals() {
        let record = image(2);
        let debs = BTreeMap::new();
        let subject = |parent_layers| Subject {
            name: "client",
            record: &record,
            created: String::new(),
            os: "linux".into(),
            architecture: "amd64".into(),
            parent: Some(("base".into(), "sha256:cc".into(), parent_layers)),
            debs: &debs,
            sources: vec![],
            source_dests: vec![],
        };
        let base = status(&[("a", "1"), ("b", "1")]);
        let changed = status(&[("a", "1"), ("b", "2"), ("c", "1")]);
        let inv = collect(&subject(1), &[base.clone(), changed]);
        let thin = inv.thin(doc()).expect("nothing removed");
        let listed: Vec<(&str, Option<&str>)> = thin
            .packages
            .iter()
            .map(|p| (p.installed.name.as_str(), p.replaces.as_deref()))
            .collect();
        assert_eq!(listed, [("b", Some("1")), ("c", None)]);
        assert_eq!(thin.layers.iter().filter(|(_, inh)| !inh).count(), 1);

        let without_b = status(&[("a", "1")]);
        let inv = collect(&subject(1), &[base, without_b]);
        assert_eq!(inv.removed, ["Debian package b:amd64 1"]);
        assert!(inv.thin(doc()).is_none(), "a removal needs the full SBOM");
    }

    #[test]
    fn purls_escape_epochs_and_plus() {
        let inv = Inventory {
            name: "app".into(),
            manifest: "sha256:ab".into(),
            created: String::new(),
            os: "linux".into(),
            architecture: "amd64".into(),
            parent: None,
            distro: Some(("debian".into(), "trixie".into())),
            layers: vec![],
            packages: vec![],
            licence_refs: BTreeSet::new(),
            sources: vec![],
            plugins: vec![],
            moodle: None,
            removed: vec![],
            parent_doc: None,
            variant: None,
        };
        assert_eq!(
            inv.deb_purl("libcap2", "1:2.75-10+b1", "amd64"),
            "pkg:deb/debian/libcap2@1%3A2.75-10%2Bb1?arch=amd64&distro=trixie"
        );
        assert_eq!(inv.image_purl(), "pkg:oci/app@sha256%3Aab");
    }
}
