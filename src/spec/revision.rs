//! `${git.commit}` and `${git.short}`: the project's own commit (the
//! agency's repository, not a source's), so tags can say which revision of
//! images.yaml, layers and clients an image was built from. The caller finds
//! the commit (`IMGBUILD_REVISION`, `CI_COMMIT_SHA` or git, as the revision
//! label does); the spec only adds it to the file's vars.
use std::collections::BTreeMap;

/// The vars' names, for the message when the commit is unknown.
const KEYS: &[&str] = &["commit", "short"];

/// Adds `git.commit` and `git.short` (its first 8 characters, as GitLab's
/// `CI_COMMIT_SHORT_SHA` and `${source.NAME.short}`) for `revision`.
pub(super) fn add_vars(vars: &mut BTreeMap<String, String>, revision: Option<&str>) {
    let Some(rev) = revision.map(str::trim).filter(|r| !r.is_empty()) else {
        return;
    };
    let short: String = rev.chars().take(8).collect();
    vars.insert("git.commit".into(), rev.to_string());
    vars.insert("git.short".into(), short);
}

/// The message and hint for an unknown `${git.KEY}`, or None for other names.
pub(super) fn unknown(name: &str) -> Option<(String, String)> {
    let key = name.strip_prefix("git.")?;
    if !KEYS.contains(&key) {
        return Some((
            format!("unknown var `${{{name}}}`"),
            "the project's commit is `${git.commit}` or `${git.short}`".to_string(),
        ));
    }
    // A known key, yet an unknown var: no commit was found.
    Some((
        format!(
            "`${{{name}}}`: the project's commit is unknown: images.yaml's directory is not in a git checkout with a commit, and neither IMGBUILD_REVISION nor CI_COMMIT_SHA is set"
        ),
        "build from the project's git checkout, or set IMGBUILD_REVISION to the commit (set but empty, it leaves the commit unknown)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_problems, tree};
    use super::super::{LoadOptions, Spec, SpecError};
    use std::path::Path;

    const TEXT: &str = "clients:\n  files: clients/*/client.yaml\n  template:\n    from: scratch\n    tags: [\"${client}:1.0-${git.short}\"]\n    config:\n      labels: {rev: \"${git.commit}\"}\n";

    fn load(dir: &Path, text: &str, revision: Option<&str>) -> Result<Spec, SpecError> {
        let opts = LoadOptions {
            revision,
            ..LoadOptions::default()
        };
        Spec::parse_with(text, Path::new("images.yaml"), dir, &opts)
    }

    fn problems(r: Result<Spec, SpecError>) -> Vec<super::super::Problem> {
        match r {
            Err(SpecError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("loaded"),
        }
    }

    #[test]
    fn the_commit_reaches_tags_and_labels_of_clients() {
        let d = tree();
        std::fs::create_dir_all(d.path().join("clients/acme")).unwrap();
        std::fs::write(d.path().join("clients/acme/client.yaml"), "vars: {}\n").unwrap();
        let rev = "0123456789abcdef0123456789abcdef01234567";
        let spec = load(d.path(), TEXT, Some(rev)).unwrap();
        let acme = &spec.images["acme"];
        assert_eq!(acme.tags, vec!["acme:1.0-01234567"]);
        assert_eq!(acme.config.labels["rev"], rev);
        // Whitespace around it (a file's newline) is not part of it.
        let spec = load(d.path(), TEXT, Some("  abcdef0123456789\n")).unwrap();
        assert_eq!(spec.images["acme"].tags, vec!["acme:1.0-abcdef01"]);
    }

    #[test]
    fn an_unknown_commit_is_named_with_the_fix() {
        let d = tree();
        std::fs::create_dir_all(d.path().join("clients/acme")).unwrap();
        std::fs::write(d.path().join("clients/acme/client.yaml"), "vars: {}\n").unwrap();
        for rev in [None, Some(""), Some(" \n")] {
            let p = problems(load(d.path(), TEXT, rev));
            assert_problems(
                &p,
                &[
                    "5: `${git.short}`: the project's commit is unknown: images.yaml's directory is not in a git checkout with a commit, and neither IMGBUILD_REVISION nor CI_COMMIT_SHA is set",
                    "7: `${git.commit}`: the project's commit is unknown: images.yaml's directory is not in a git checkout with a commit, and neither IMGBUILD_REVISION nor CI_COMMIT_SHA is set",
                ],
            );
            assert!(
                p.iter().all(|x| x
                    .hint
                    .as_deref()
                    .is_some_and(|h| h.contains("IMGBUILD_REVISION"))),
                "{p:?}"
            );
        }
        // A typo is a typo, commit or not.
        let p = problems(load(
            d.path(),
            "images:\n  a:\n    from: scratch\n    tags: [\"a:${git.sha}\"]\n",
            Some("0123456789abcdef"),
        ));
        assert_problems(&p, &["4: unknown var `${git.sha}`"]);
        assert_eq!(
            p[0].hint.as_deref(),
            Some("the project's commit is `${git.commit}` or `${git.short}`")
        );
    }
}
