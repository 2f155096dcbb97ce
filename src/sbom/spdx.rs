//! An inventory as an SPDX 2.3 JSON document.
use serde_json::{Value, json};

use super::inventory::{Inventory, SourceKind, purl_escape};
use crate::oci::image::hex_of;

pub const MEDIA_TYPE: &str = "application/spdx+json";

/// How a thin SBOM names its parent's document.
pub const PARENT_REF: &str = "DocumentRef-parent";

/// The document's namespace: the image's name and manifest digest (and the
/// variant, for a full document that differs from the attached thin one).
pub fn namespace(name: &str, manifest: &str, variant: Option<&str>) -> String {
    let mut ns = format!(
        "https://imgbuild.invalid/spdx/{}/{}",
        purl_escape(name),
        hex_of(manifest)
    );
    if let Some(v) = variant {
        ns.push('/');
        ns.push_str(v);
    }
    ns
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    hex::encode(sha1::Sha1::digest(bytes))
}

/// An SPDX id from parts: letters, digits, `.` and `-` only.
fn id(parts: &[&str]) -> String {
    let mut s = String::from("SPDXRef");
    for p in parts {
        s.push('-');
        s.extend(p.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        }));
    }
    s
}

fn purl(locator: String) -> Value {
    json!([{
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    }])
}

fn sha256(hex: &str) -> Value {
    json!([{ "algorithm": "SHA256", "checksumValue": hex }])
}

fn rel(a: &str, kind: &str, b: &str) -> Value {
    json!({ "spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b })
}

/// SPDX's download locations are network addresses: a `file://` or a
/// local path is NOASSERTION (the address stays in `sourceInfo`).
fn download_location(url: &str, location: &str) -> String {
    let networked = ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|p| url.starts_with(p));
    if networked {
        location.to_string()
    } else {
        "NOASSERTION".to_string()
    }
}

pub fn render(inv: &Inventory) -> Vec<u8> {
    let tool = concat!("imgbuild-", env!("CARGO_PKG_VERSION"));
    let image_id = id(&["image", &inv.name]);
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": inv.name,
        "versionInfo": inv.manifest,
        "primaryPackagePurpose": "CONTAINER",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "checksums": sha256(&hex_of(&inv.manifest)),
        "externalRefs": purl(inv.image_purl()),
        "comment": format!("{}/{}", inv.os, inv.architecture),
    })];
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id)];
    // Thin: the parent is its own document's image, by reference, and what
    // it holds is left to that document.
    let thin = inv.parent_doc.as_ref();
    if let Some(p) = thin {
        rels.push(rel(
            &image_id,
            "DESCENDANT_OF",
            &format!("{PARENT_REF}:{}", id(&["image", &p.name])),
        ));
    }
    let parent_id = inv
        .parent
        .as_ref()
        .filter(|_| thin.is_none())
        .map(|(name, digest)| {
            let pid = id(&["parent", name]);
            packages.push(json!({
            "SPDXID": pid,
            "name": name,
            "versionInfo": digest,
            "primaryPackagePurpose": "CONTAINER",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "checksums": sha256(&hex_of(digest)),
            "externalRefs": purl(format!("pkg:oci/{}@{}", purl_escape(name), purl_escape(digest))),
        }));
            rels.push(rel(&image_id, "DESCENDANT_OF", &pid));
            pid
        });
    // What the parent holds too: the client's SBOM says what it inherits.
    let contains = |rels: &mut Vec<Value>, child: &str, inherited: bool| {
        rels.push(rel(&image_id, "CONTAINS", child));
        if inherited && let Some(p) = &parent_id {
            rels.push(rel(p, "CONTAINS", child));
        }
    };
    for (i, (layer, inherited)) in inv.layers.iter().enumerate() {
        if *inherited && thin.is_some() {
            continue;
        }
        let lid = id(&["layer", &i.to_string()]);
        packages.push(json!({
            "SPDXID": lid,
            "name": format!("layer {i}"),
            "versionInfo": layer.digest,
            "primaryPackagePurpose": "ARCHIVE",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "checksums": sha256(&hex_of(&layer.digest)),
            "comment": format!("{}, {} bytes, diff_id {}", layer.media_type, layer.size, layer.diff_id),
        }));
        contains(&mut rels, &lid, *inherited);
    }
    let mut source_packages = std::collections::BTreeSet::new();
    for p in &inv.packages {
        let i = &p.installed;
        let pid = id(&["deb", &i.name, &i.architecture]);
        let mut pkg = json!({
            "SPDXID": pid,
            "name": i.name,
            "versionInfo": i.version,
            "primaryPackagePurpose": "LIBRARY",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": p.licence.as_deref().unwrap_or("NOASSERTION"),
            "copyrightText": "NOASSERTION",
            "supplier": "Organization: Debian",
            "sourceInfo": format!("built from source package {} {}", i.source, i.source_version),
            "externalRefs": purl(inv.deb_purl(&i.name, &i.version, &i.architecture)),
        });
        if let Some(h) = &p.sha256 {
            pkg["checksums"] = sha256(h);
        }
        if let Some(old) = &p.replaces {
            pkg["comment"] = json!(format!("replaces the parent's version {old}"));
        }
        packages.push(pkg);
        contains(&mut rels, &pid, p.inherited);
        let sid = id(&["debsrc", &i.source, &i.source_version]);
        if source_packages.insert(sid.clone()) {
            packages.push(json!({
                "SPDXID": sid,
                "name": i.source,
                "versionInfo": i.source_version,
                "primaryPackagePurpose": "SOURCE",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "supplier": "Organization: Debian",
                "externalRefs": purl(inv.deb_purl(&i.source, &i.source_version, "source")),
            }));
        }
        rels.push(rel(&pid, "GENERATED_FROM", &sid));
    }
    for s in &inv.sources {
        let sid = id(&["source", &s.name]);
        let mut pkg = json!({
            "SPDXID": sid,
            "name": s.name,
            "primaryPackagePurpose": "SOURCE",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        match &s.kind {
            SourceKind::Git { url, commit } => {
                pkg["versionInfo"] = json!(commit);
                pkg["downloadLocation"] =
                    json!(download_location(url, &format!("git+{url}@{commit}")));
                pkg["sourceInfo"] = json!(format!("git {url} at commit {commit}"));
            }
            SourceKind::Archive { url, sha256: h } => {
                pkg["versionInfo"] = json!(format!("sha256:{h}"));
                pkg["downloadLocation"] = json!(download_location(url, url));
                pkg["sourceInfo"] = json!(format!("archive {url}"));
                pkg["checksums"] = sha256(h);
            }
            SourceKind::Dir => {
                pkg["downloadLocation"] = json!("NOASSERTION");
                pkg["comment"] = json!("a directory of the build context");
            }
        }
        packages.push(pkg);
        rels.push(rel(&image_id, "GENERATED_FROM", &sid));
    }
    if let Some(m) = &inv.moodle {
        let mid = id(&["moodle"]);
        packages.push(json!({
            "SPDXID": mid,
            "name": "moodle",
            "versionInfo": m.release,
            "primaryPackagePurpose": "APPLICATION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": purl(format!("pkg:generic/moodle@{}", purl_escape(&m.release))),
            "comment": format!("{}/version.php, $version {}", m.path, m.version.as_deref().unwrap_or("?")),
        }));
        contains(&mut rels, &mid, false);
    }
    for p in &inv.plugins {
        let pid = id(&["plugin", &p.component, &p.path]);
        let version = p.version.clone().unwrap_or_default();
        packages.push(json!({
            "SPDXID": pid,
            "name": p.component,
            "versionInfo": version,
            "primaryPackagePurpose": "LIBRARY",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": purl(format!("pkg:generic/moodle-plugin/{}@{}", purl_escape(&p.component), purl_escape(&version))),
            "comment": format!("{}/version.php, release {}{}", p.path, p.release.as_deref().unwrap_or("?"),
                p.replaces.as_ref().map(|v| format!(", replaces the parent's version {v}")).unwrap_or_default()),
        }));
        contains(&mut rels, &pid, p.inherited);
        if let Some(s) = &p.source {
            rels.push(rel(&pid, "GENERATED_FROM", &id(&["source", s])));
        }
    }
    let licences: Vec<Value> = inv
        .licence_refs
        .iter()
        .map(|r| {
            json!({
                "licenseId": r,
                "name": r.trim_start_matches("LicenseRef-"),
                "extractedText": "A licence named in a Debian package's machine-readable copyright file (/usr/share/doc/PACKAGE/copyright) that SPDX does not list.",
            })
        })
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {}", inv.name, inv.manifest),
        "documentNamespace": namespace(&inv.name, &inv.manifest, inv.variant),
        "creationInfo": { "created": inv.created, "creators": [format!("Tool: {tool}")] },
        "packages": packages,
        "relationships": rels,
    });
    if let Some(p) = thin {
        doc["externalDocumentRefs"] = json!([{
            "externalDocumentId": PARENT_REF,
            "spdxDocument": p.id,
            "checksum": { "algorithm": "SHA1", "checksumValue": p.sha1 },
        }]);
        doc["creationInfo"]["comment"] = json!(format!(
            "What {} adds to its parent {}@{}. The parent's contents are in {PARENT_REF}: the SPDX document attached to the parent image as an OCI referrer (artifactType {MEDIA_TYPE}), blob sha256:{}. `imgbuild sbom {} --full` gives the whole image in one document.",
            inv.name, p.name, p.manifest, p.sha256, inv.name
        ));
    }
    if !licences.is_empty() {
        doc["hasExtractedLicensingInfos"] = json!(licences);
    }
    // Compact: the document is a registry blob per image (pipe it through
    // `jq` to read it).
    let mut out = serde_json::to_vec(&doc).expect("JSON values serialise");
    out.push(b'\n');
    out
}
