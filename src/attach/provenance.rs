//! Provenance: an in-toto statement (v1) with a SLSA v1 provenance
//! predicate: who built the image (imgbuild and its version), from what
//! (images.yaml's and images.lock's digests, the git revision, `--set`
//! values that do not look like secrets, the parent's digest), how
//! (isolation), and in GitLab CI the pipeline and job. Nothing in it is a
//! time of the build: the same inputs give the same bytes.
use std::collections::BTreeMap;

use serde_json::json;

use crate::oci::image::{canonical_json, hex_of};

pub const ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
pub const SLSA: &str = "https://slsa.dev/provenance/v1";
pub const BUILD_TYPE: &str = "https://gitlab.com/imgbuild/build/v1";

/// What a build was made from, beyond the image itself.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// images.yaml as the project names it (relative) and its sha256.
    pub file: (String, String),
    /// images.lock's sha256, when there is one.
    pub lock: Option<String>,
    /// The git revision and repository (without credentials).
    pub revision: Option<String>,
    pub repository: Option<String>,
    /// `--set NAME=VALUE`, as given.
    pub set: Vec<(String, String)>,
    pub isolation: String,
    /// $CI_PIPELINE_URL and $CI_JOB_URL.
    pub pipeline: Option<String>,
    pub job: Option<String>,
}

/// Whether a `--set` name looks like it holds a secret: such values are
/// left out (named, with `[redacted]`).
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "token",
        "key",
        "credential",
        "auth",
        "private",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The statement for image `name` at `manifest`, built on `parent`
/// (name, digest) if any.
pub fn statement(
    name: &str,
    manifest: &str,
    parent: Option<(&str, &str)>,
    inputs: &Inputs,
) -> Vec<u8> {
    let set: BTreeMap<&str, &str> = inputs
        .set
        .iter()
        .map(|(k, v)| {
            let v = if secret_name(k) {
                "[redacted]"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    let mut deps = vec![json!({
        "uri": inputs.file.0,
        "digest": { "sha256": inputs.file.1 },
    })];
    if let Some(l) = &inputs.lock {
        deps.push(json!({ "uri": "images.lock", "digest": { "sha256": l } }));
    }
    if let Some(rev) = &inputs.revision {
        let uri = match &inputs.repository {
            Some(r) => format!("git+{r}@{rev}"),
            None => format!("git@{rev}"),
        };
        deps.push(json!({ "uri": uri, "digest": { "gitCommit": rev } }));
    }
    if let Some((pname, pdigest)) = parent {
        deps.push(json!({
            "uri": format!("oci:{pname}"),
            "name": "parent",
            "digest": { "sha256": hex_of(pdigest) },
        }));
    }
    let mut metadata = json!({});
    if let Some(j) = &inputs.job {
        metadata["invocationId"] = json!(j);
    }
    let mut byproducts = Vec::new();
    if let Some(p) = &inputs.pipeline {
        byproducts.push(json!({ "name": "pipeline", "uri": p }));
    }
    let v = json!({
        "_type": STATEMENT,
        "subject": [{ "name": name, "digest": { "sha256": hex_of(manifest) } }],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": { "image": name, "file": inputs.file.0, "set": set },
                "internalParameters": { "isolation": inputs.isolation },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": concat!("https://gitlab.com/imgbuild/imgbuild@", env!("CARGO_PKG_VERSION")),
                    "version": { "imgbuild": env!("CARGO_PKG_VERSION") },
                },
                "metadata": metadata,
                "byproducts": byproducts,
            },
        },
    });
    canonical_json(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_left_out_and_the_statement_is_stable() {
        let inputs = Inputs {
            file: ("images.yaml".into(), "ab".into()),
            set: vec![
                ("moodle_release".into(), "5.1".into()),
                ("smtp_password".into(), "hunter2".into()),
            ],
            isolation: "chroot".into(),
            job: Some("https://gitlab.example/p/-/jobs/7".into()),
            ..Inputs::default()
        };
        let a = statement("app", "sha256:cd", Some(("base", "sha256:ef")), &inputs);
        assert_eq!(
            a,
            statement("app", "sha256:cd", Some(("base", "sha256:ef")), &inputs)
        );
        let text = String::from_utf8(a).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"smtp_password\":\"[redacted]\""), "{text}");
        assert!(text.contains("\"moodle_release\":\"5.1\""), "{text}");
        assert!(text.contains("jobs/7"), "{text}");
    }
}
