//! An inventory as a CycloneDX 1.6 JSON BOM.
use serde_json::{Value, json};

use super::inventory::{Inventory, SourceKind, purl_escape};
use crate::digest::sha256_hex;
use crate::oci::image::hex_of;

pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

fn hashes(hex: &str) -> Value {
    json!([{ "alg": "SHA-256", "content": hex }])
}

/// A version-5-style UUID from the manifest digest (and the variant, for a
/// full BOM that differs from the attached thin one): the same image always
/// gets the same serial number.
pub fn serial(manifest: &str, variant: Option<&str>) -> String {
    let seed = match variant {
        Some(v) => format!("imgbuild-cyclonedx:{manifest}:{v}"),
        None => format!("imgbuild-cyclonedx:{manifest}"),
    };
    let h = sha256_hex(seed.as_bytes());
    let mut b: Vec<char> = h[..32].chars().collect();
    b[12] = '5';
    b[16] = ['8', '9', 'a', 'b'][usize::from(b[16].to_digit(16).unwrap_or(0) as u8 & 3)];
    let s: String = b.into_iter().collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

/// A BOM-Link to version 1 of the BOM `serial` (`urn:uuid:…`).
pub fn bom_link(serial: &str) -> String {
    format!("urn:cdx:{}/1", serial.trim_start_matches("urn:uuid:"))
}

pub fn render(inv: &Inventory) -> Vec<u8> {
    let image_ref = format!("image:{}", inv.name);
    // Thin: what the parent holds is left to its own BOM, linked.
    let thin = inv.parent_doc.as_ref();
    let mut components = Vec::new();
    let mut own = Vec::new();
    let mut inherited = Vec::new();
    let mut deps: Vec<Value> = Vec::new();
    let mut place = |r: String, is_inherited: bool| {
        own.push(r.clone());
        if is_inherited {
            inherited.push(r);
        }
    };
    for (i, (l, inh)) in inv.layers.iter().enumerate() {
        if *inh && thin.is_some() {
            continue;
        }
        let r = format!("layer:{}", l.digest);
        components.push(json!({
            "type": "file",
            "bom-ref": r,
            "name": format!("layer {i}"),
            "version": l.digest,
            "hashes": hashes(&hex_of(&l.digest)),
            "properties": [
                { "name": "oci:mediaType", "value": l.media_type },
                { "name": "oci:diffID", "value": l.diff_id },
                { "name": "oci:size", "value": l.size.to_string() },
            ],
        }));
        place(r, *inh);
    }
    for p in &inv.packages {
        let i = &p.installed;
        let purl = inv.deb_purl(&i.name, &i.version, &i.architecture);
        let mut c = json!({
            "type": "library",
            "bom-ref": purl,
            "publisher": "Debian",
            "name": i.name,
            "version": i.version,
            "purl": purl,
            "pedigree": { "ancestors": [{
                "type": "library",
                "name": i.source,
                "version": i.source_version,
                "purl": inv.deb_purl(&i.source, &i.source_version, "source"),
            }]},
        });
        if let Some(h) = &p.sha256 {
            c["hashes"] = hashes(h);
        }
        if let Some(l) = &p.licence {
            c["licenses"] = json!([{ "expression": l }]);
        }
        if let Some(old) = &p.replaces {
            c["properties"] = json!([{ "name": "imgbuild:replaces", "value": old }]);
        }
        components.push(c);
        place(purl, p.inherited);
    }
    for s in &inv.sources {
        let r = format!("source:{}", s.name);
        let mut c = json!({ "type": "application", "bom-ref": r, "name": s.name });
        match &s.kind {
            SourceKind::Git { url, commit } => {
                c["version"] = json!(commit);
                c["externalReferences"] =
                    json!([{ "type": "vcs", "url": url, "comment": format!("commit {commit}") }]);
            }
            SourceKind::Archive { url, sha256 } => {
                c["version"] = json!(format!("sha256:{sha256}"));
                c["hashes"] = hashes(sha256);
                c["externalReferences"] = json!([{ "type": "distribution", "url": url }]);
            }
            SourceKind::Dir => {
                c["description"] = json!("a directory of the build context");
            }
        }
        components.push(c);
    }
    if let Some(m) = &inv.moodle {
        components.push(json!({
            "type": "application",
            "bom-ref": "moodle",
            "name": "moodle",
            "version": m.release,
            "purl": format!("pkg:generic/moodle@{}", purl_escape(&m.release)),
            "properties": [{ "name": "moodle:path", "value": m.path }],
        }));
        place("moodle".into(), false);
    }
    for p in &inv.plugins {
        let r = format!("moodle-plugin:{}:{}", p.component, p.path);
        let version = p.version.clone().unwrap_or_default();
        let mut props = vec![json!({ "name": "moodle:path", "value": p.path })];
        if let Some(rel) = &p.release {
            props.push(json!({ "name": "moodle:release", "value": rel }));
        }
        if let Some(old) = &p.replaces {
            props.push(json!({ "name": "imgbuild:replaces", "value": old }));
        }
        components.push(json!({
            "type": "library",
            "bom-ref": r,
            "name": p.component,
            "version": version,
            "purl": format!("pkg:generic/moodle-plugin/{}@{}", purl_escape(&p.component), purl_escape(&version)),
            "properties": props,
        }));
        if let Some(s) = &p.source {
            deps.push(json!({ "ref": r, "dependsOn": [format!("source:{s}")] }));
        }
        place(r, p.inherited);
    }
    let mut image = json!({
        "type": "container",
        "bom-ref": image_ref,
        "name": inv.name,
        "version": inv.manifest,
        "purl": inv.image_purl(),
        "hashes": hashes(&hex_of(&inv.manifest)),
    });
    let mut image_deps = own;
    image_deps.extend(inv.sources.iter().map(|s| format!("source:{}", s.name)));
    if let Some((name, digest)) = &inv.parent {
        let r = format!("parent:{name}");
        let mut parent = json!({
            "type": "container",
            "bom-ref": r,
            "name": name,
            "version": digest,
            "purl": format!("pkg:oci/{}@{}", purl_escape(name), purl_escape(digest)),
            "hashes": hashes(&hex_of(digest)),
        });
        match thin {
            Some(p) => {
                parent["externalReferences"] = json!([{
                    "type": "bom",
                    "url": bom_link(&p.id),
                    "hashes": hashes(&p.sha256),
                    "comment": format!(
                        "the parent's BOM, holding what {} inherits: attached to {}@{} as an OCI referrer (artifactType {MEDIA_TYPE}), blob sha256:{}; `imgbuild sbom {} --full --format cyclonedx` gives the whole image",
                        inv.name, p.name, p.manifest, p.sha256, inv.name
                    ),
                }]);
            }
            None => deps.push(json!({ "ref": r, "dependsOn": inherited })),
        }
        components.push(parent);
        image_deps.push(r);
        image["properties"] = json!([{ "name": "oci:base.name", "value": name }]);
    }
    deps.insert(0, json!({ "ref": image_ref, "dependsOn": image_deps }));
    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(&inv.manifest, inv.variant),
        "version": 1,
        "metadata": {
            "timestamp": inv.created,
            "tools": { "components": [{
                "type": "application",
                "name": "imgbuild",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": image,
        },
        "components": components,
        "dependencies": deps,
    });
    let mut out = serde_json::to_vec(&bom).expect("JSON values serialise");
    out.push(b'\n');
    out
}
