//! `sources:`: named inputs fetched into the store (`git:`, `archive:`) or
//! read where they are (`dir:`), usable as a layer's `source:`; and
//! `--set NAME=VALUE`, which overrides a top-level var for one run.
//!
//! The spec only reads and checks the section; fetching is the caller's
//! (a [`SourceFetcher`], see `crate::source`), so parsing stays free of
//! network and store. What a fetched source says about itself (Moodle's
//! release, the commit) becomes the vars `source.NAME.KEY`, in force for
//! every image, so tags and labels can name them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ctx::{Ctx, S, expand};
use super::yaml::{Node, Pos};
use crate::suggest;

const SOURCE_KEYS: &[&str] = &["git", "archive", "dir", "token_env"];
const GIT_KEYS: &[&str] = &["url", "ref"];
const ARCHIVE_KEYS: &[&str] = &["url", "sha256"];

/// One `sources:` entry, vars expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceSpec {
    pub name: String,
    pub location: SourceLocation,
    /// The environment variable that holds a token for a private source:
    /// its name, never its value.
    pub token_env: Option<String>,
    #[serde(skip)]
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceLocation {
    /// A repository and a tag or branch; the commit is pinned in images.lock.
    Git { url: String, reference: String },
    /// A .tar.gz, .tar.xz or .zip and its SHA256 (lowercase hex).
    Archive { url: String, sha256: String },
    /// A directory, absolute (written relative to images.yaml's directory).
    Dir { path: PathBuf },
}

/// A source made available: its tree and what it says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedSource {
    /// The directory holding the source's tree.
    pub root: PathBuf,
    /// `commit`, `short`, `sha256`, `release`, `branch`: the vars
    /// `${source.NAME.KEY}`.
    pub vars: BTreeMap<String, String>,
    /// What its content is, for `plan`: `commit 0123abc…`, `sha256 …`, `dir`.
    pub identity: String,
}

/// Why a source could not be made available, as the spec reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailure {
    pub message: String,
    pub hint: Option<String>,
    /// The fetch failed (network, server, disk), not what images.yaml
    /// says: loading fails with [`super::SpecError::Fetch`] (exit 1).
    pub fetch: bool,
}

/// Makes sources available (fetches, verifies, extracts).
pub trait SourceFetcher {
    fn fetch(&self, source: &SourceSpec) -> Result<ResolvedSource, SourceFailure>;
}

/// How to load images.yaml beyond the file itself.
#[derive(Default, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// `--set NAME=VALUE`, in the order given (a later one wins).
    pub set: &'a [(String, String)],
    /// None: a file with `sources:` is an error (nothing can fetch them).
    pub fetcher: Option<&'a dyn SourceFetcher>,
    /// `--context DIR`: the build context, when wider than the directory
    /// of images.yaml; every path the file names must be inside it.
    pub context: Option<&'a Path>,
    /// None: paths are looked at in the filesystem. Some: what is at a
    /// path is asked of this (`plan --changed-since` reads an earlier
    /// commit's spec from git without checking it out).
    pub kinds: Option<&'a dyn super::PathKinds>,
    /// The project's own commit, for `${git.commit}` and `${git.short}`
    /// (None: unknown, and a string that uses them is an error).
    pub revision: Option<&'a str>,
}

/// A source of the loaded spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub spec: SourceSpec,
    pub resolved: ResolvedSource,
}

#[derive(Debug)]
pub(super) struct RawSource {
    name: S,
    git: Option<(Option<S>, Option<S>, Pos)>,
    archive: Option<(Option<S>, Option<S>, Pos)>,
    dir: Option<S>,
    token_env: Option<S>,
}

/// The `sources:` mapping, read.
pub(super) fn read_sources(cx: &mut Ctx, node: &Node) -> Vec<RawSource> {
    let mut out: Vec<RawSource> = Vec::new();
    for (k, v) in cx.map(node, "`sources`") {
        let Some(name) = cx.scalar(k, "a source's name") else {
            continue;
        };
        if !valid_source_name(&name.v) {
            cx.err(
                name.pos,
                format!("`{}` is not a valid source name", name.v),
                Some(
                    "use letters, digits, _ and - (it becomes part of `${source.NAME.release}`)"
                        .into(),
                ),
            );
        }
        if out.iter().any(|s| s.name.v == name.v) {
            cx.err(name.pos, "this source is defined twice", None);
            continue;
        }
        let mut s = RawSource {
            name,
            git: None,
            archive: None,
            dir: None,
            token_env: None,
        };
        for (key, value) in cx.keyed(v, "a source", SOURCE_KEYS) {
            match key {
                "git" | "archive" => {
                    let (keys, second) = if key == "git" {
                        (GIT_KEYS, "ref")
                    } else {
                        (ARCHIVE_KEYS, "sha256")
                    };
                    let what = format!("`{key}`");
                    let (mut url, mut other) = (None, None);
                    for (k2, v2) in cx.keyed(value, &what, keys) {
                        let got = cx.scalar(v2, &format!("`{k2}`"));
                        if k2 == "url" {
                            url = got;
                        } else {
                            other = got;
                        }
                    }
                    for (missing, label) in [(url.is_none(), "url"), (other.is_none(), second)] {
                        if missing {
                            cx.err(
                                value.pos,
                                format!("{what} needs `{label}`"),
                                Some(if key == "git" {
                                    "write git: {url: https://…/moodle.git, ref: v5.1.3}".into()
                                } else {
                                    "write archive: {url: https://…/moodle.tgz, sha256: <64 hex digits>}".into()
                                }),
                            );
                        }
                    }
                    let entry = Some((url, other, value.pos));
                    if key == "git" {
                        s.git = entry;
                    } else {
                        s.archive = entry;
                    }
                }
                "dir" => s.dir = cx.scalar(value, "`dir`"),
                _ => s.token_env = cx.scalar(value, "`token_env`"),
            }
        }
        let kinds = usize::from(s.git.is_some())
            + usize::from(s.archive.is_some())
            + usize::from(s.dir.is_some());
        if kinds != 1 {
            cx.err(
                v.pos,
                format!(
                    "source `{}` needs exactly one of `git`, `archive` or `dir`",
                    s.name.v
                ),
                Some("e.g. git: {url: …, ref: v5.1.3}, archive: {url: …, sha256: …} or dir: ../moodle".into()),
            );
        }
        out.push(s);
    }
    out
}

fn valid_source_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Applies `--set` to the top-level var definitions: the value replaces
/// the definition (literally: a `$` in it is not a var), so vars defined
/// from it see it too. A name the file does not define is an error.
pub(super) fn apply_set(cx: &mut Ctx, defs: &mut [(S, S)], set: &[(String, String)], at: Pos) {
    for (name, value) in set {
        match defs.iter_mut().find(|(k, _)| &k.v == name) {
            Some((_, v)) => v.v = value.replace('$', "$$"),
            None => {
                let hint = match suggest::closest(name, defs.iter().map(|(k, _)| k.v.as_str())) {
                    Some(c) => format!("did you mean `--set {c}=…`?"),
                    None => {
                        "`--set` overrides a var of the top-level `vars:`; define it there first"
                            .into()
                    }
                };
                cx.err(
                    at,
                    format!("`--set {name}=…`: images.yaml has no top-level var `{name}`"),
                    Some(hint),
                );
            }
        }
    }
}

/// Expands, checks and fetches every source; adds `source.NAME.KEY` to
/// `vars`. The bool: whether a fetch failed (see [`SourceFailure::fetch`]).
pub(super) fn finish_sources(
    cx: &mut Ctx,
    raw: &[RawSource],
    vars: &mut BTreeMap<String, String>,
    dir: &Path,
    fetcher: Option<&dyn SourceFetcher>,
) -> (BTreeMap<String, Source>, bool) {
    let mut out = BTreeMap::new();
    let mut fetch_failed = false;
    let mut facts: Vec<(String, String)> = Vec::new();
    for s in raw {
        let Some(spec) = finish_source(cx, s, vars, dir) else {
            continue;
        };
        let Some(fetcher) = fetcher else {
            cx.err(
                s.name.pos,
                format!("source `{}` cannot be fetched by this command", spec.name),
                Some("run imgbuild check, plan or build, which fetch sources".into()),
            );
            continue;
        };
        match fetcher.fetch(&spec) {
            Ok(resolved) => {
                for (k, v) in &resolved.vars {
                    facts.push((format!("source.{}.{k}", spec.name), v.clone()));
                }
                out.insert(spec.name.clone(), Source { spec, resolved });
            }
            Err(f) => {
                fetch_failed |= f.fetch;
                cx.err(
                    s.name.pos,
                    format!("source `{}`: {}", spec.name, f.message),
                    f.hint,
                )
            }
        }
    }
    vars.extend(facts);
    (out, fetch_failed)
}

fn finish_source(
    cx: &mut Ctx,
    s: &RawSource,
    vars: &BTreeMap<String, String>,
    dir: &Path,
) -> Option<SourceSpec> {
    fn x(cx: &mut Ctx, v: &Option<S>, vars: &BTreeMap<String, String>) -> Option<(String, Pos)> {
        v.as_ref()
            .and_then(|v| expand(cx, v, vars).map(|t| (t, v.pos)))
    }
    let location = if let Some((url, reference, _)) = &s.git {
        let (url, upos) = x(cx, url, vars)?;
        let (reference, rpos) = x(cx, reference, vars)?;
        check_url(cx, &url, upos, &["https", "http", "ssh", "git", "file"])?;
        if reference.is_empty() || reference.starts_with('-') || reference.contains("..") {
            cx.err(
                rpos,
                format!("`ref: {reference}` is not a tag or branch name"),
                Some("write a tag (v5.1.3) or a branch (MOODLE_501_STABLE)".into()),
            );
            return None;
        }
        SourceLocation::Git { url, reference }
    } else if let Some((url, sha, _)) = &s.archive {
        let (url, upos) = x(cx, url, vars)?;
        let (sha, spos) = x(cx, sha, vars)?;
        check_url(cx, &url, upos, &["https", "http"])?;
        let sha = sha
            .strip_prefix("sha256:")
            .unwrap_or(&sha)
            .to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            cx.err(
                spos,
                format!("`sha256: {sha}` is not a SHA256 (64 hex digits)"),
                Some("write the output of `sha256sum ARCHIVE`".into()),
            );
            return None;
        }
        SourceLocation::Archive { url, sha256: sha }
    } else {
        let (text, pos) = x(cx, &s.dir, vars)?;
        let path = dir.join(&text);
        if !cx.inside(pos, "source directory", &text, &path) {
            return None;
        }
        if super::ctx::kind_of(cx.kinds, &path) != Some(super::PathKind::Dir) {
            cx.err(
                pos,
                format!("source directory `{text}` is not a directory"),
                Some(format!(
                    "paths are relative to {}; `--set VAR=PATH` sets a var used here",
                    dir.display()
                )),
            );
            return None;
        }
        SourceLocation::Dir {
            path: std::path::absolute(&path).unwrap_or(path),
        }
    };
    let token_env = match &s.token_env {
        Some(t) => {
            let (name, pos) = x(cx, &Some(t.clone()), vars)?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                cx.err(
                    pos,
                    format!("`token_env: {name}` is not an environment variable name"),
                    Some("name the variable that holds the token, like GITLAB_TOKEN".into()),
                );
                return None;
            }
            Some(name)
        }
        None => None,
    };
    Some(SourceSpec {
        name: s.name.v.clone(),
        location,
        token_env,
        pos: s.name.pos,
    })
}

fn check_url(cx: &mut Ctx, url: &str, pos: Pos, schemes: &[&str]) -> Option<()> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if scheme.is_some_and(|s| schemes.contains(&s)) {
        return Some(());
    }
    cx.err(
        pos,
        format!("`url: {url}` is not a URL this source takes"),
        Some(format!(
            "write a URL that starts with {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    None
}

/// The sources layers may name: those fetched, and all declared (a
/// declared one that failed is reported once, where it is declared).
pub(super) struct Known<'a> {
    pub(super) fetched: &'a BTreeMap<String, Source>,
    pub(super) declared: &'a [String],
}

/// The source a layer's `source: NAME` names, or a reported problem.
pub(super) fn lookup<'s>(cx: &mut Ctx, known: &Known<'s>, name: &S) -> Option<&'s Source> {
    let declared = known.declared;
    if let Some(s) = known.fetched.get(&name.v) {
        return Some(s);
    }
    if declared.contains(&name.v) {
        // Declared but not fetched: its own problem is reported.
        return None;
    }
    let hint = match suggest::closest(&name.v, declared.iter().map(String::as_str)) {
        Some(c) => format!("did you mean `{c}`?"),
        None if declared.is_empty() => {
            "declare it under a top-level `sources:` (git, archive or dir)".into()
        }
        None => format!("`sources:` declares {}", declared.join(", ")),
    };
    cx.err(name.pos, format!("unknown source `{}`", name.v), Some(hint));
    None
}

impl RawSource {
    pub(super) fn name(&self) -> &str {
        &self.name.v
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_problems, tree};
    use super::super::{Spec, SpecError};
    use super::*;

    /// Resolves every source to `root`, with Moodle's vars.
    struct Fake(PathBuf);

    impl SourceFetcher for Fake {
        fn fetch(&self, source: &SourceSpec) -> Result<ResolvedSource, SourceFailure> {
            if let SourceLocation::Git { reference, .. } = &source.location
                && reference == "nope"
            {
                return Err(SourceFailure {
                    message: "no such ref".into(),
                    hint: Some("check `ref:`".into()),
                    fetch: false,
                });
            }
            Ok(ResolvedSource {
                root: self.0.clone(),
                vars: [("release", "5.1.3"), ("short", "0123abcd")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                identity: "commit 0123abcd".into(),
            })
        }
    }

    fn load(dir: &Path, text: &str, set: &[(String, String)]) -> Result<Spec, Vec<Problem>> {
        let fake = Fake(dir.join("layers"));
        let opts = LoadOptions {
            set,
            fetcher: Some(&fake),
            context: None,
            kinds: None,
            revision: None,
        };
        Spec::parse_with(text, Path::new("images.yaml"), dir, &opts).map_err(|e| match e {
            SpecError::Invalid { problems, .. } | SpecError::Fetch { problems, .. } => problems,
            other => panic!("{other}"),
        })
    }

    use super::super::Problem;

    #[test]
    fn a_layer_takes_a_source_and_its_vars() {
        let d = tree();
        let spec = load(
            d.path(),
            "vars:\n  where: base\nsources:\n  m:\n    git: {url: \"https://git.example/m.git\", ref: v1}\nimages:\n  a:\n    from: scratch\n    layers:\n      - {source: m, dest: /srv}\n      - {source: m, src: \"${where}/etc\", dest: /etc}\n    tags: [\"a:${source.m.release}-${source.m.short}\"]\n",
            &[],
        )
        .unwrap();
        let a = &spec.images["a"];
        assert_eq!(a.tags, vec!["a:5.1.3-0123abcd"]);
        assert_eq!(a.layers[0].src, d.path().join("layers"));
        assert_eq!(a.layers[0].src_text, "m");
        assert_eq!(a.layers[1].src, d.path().join("layers/base/etc"));
        assert_eq!(a.layers[1].src_text, "m:base/etc");
        assert_eq!(a.layers[1].source.as_deref(), Some("m"));
        assert_eq!(spec.sources["m"].resolved.identity, "commit 0123abcd");

        // A link in the tree does not lead `src` out of it.
        std::os::unix::fs::symlink(d.path(), d.path().join("layers/out")).unwrap();
        let p = load(
            d.path(),
            "sources:\n  m:\n    dir: .\nimages:\n  a:\n    from: scratch\n    layers:\n      - {source: m, src: out/config.php, dest: /c}\n",
            &[],
        )
        .unwrap_err();
        assert_problems(
            &p,
            &["8: `src: out/config.php` leads out of source `m` through a link"],
        );
    }

    #[test]
    fn bad_sources_and_names_are_reported_where_written() {
        let d = tree();
        let p = load(
            d.path(),
            "sources:\n  m:\n    git: {url: \"https://x/m.git\", ref: nope}\n  both:\n    git: {url: \"https://x\", ref: v1}\n    dir: layers\n  arch:\n    archive: {url: \"ftp://x/a.tgz\", sha256: abc}\n  half:\n    git: {url: \"https://x\"}\nimages:\n  a:\n    from: scratch\n    layers:\n      - {source: mm, dest: /srv}\n      - {source: half, src: ../../etc, dest: /etc}\n",
            &[],
        )
        .unwrap_err();
        assert_problems(
            &p,
            &[
                "2: source `m`: no such ref",
                "5: source `both` needs exactly one of `git`, `archive` or `dir`",
                "8: `url: ftp://x/a.tgz` is not a URL this source takes",
                "10: `git` needs `ref`",
                "15: unknown source `mm`",
            ],
        );
        assert!(
            p.iter()
                .any(|x| x.hint.as_deref() == Some("did you mean `m`?"))
        );
    }

    #[test]
    fn set_overrides_a_top_level_var_and_names_typos() {
        let d = tree();
        let text = "vars:\n  src: nowhere\n  twice: \"${src}\"\nsources:\n  local:\n    dir: \"${src}\"\nimages:\n  a:\n    from: scratch\n    tags: [\"a:${twice}\"]\n    layers:\n      - {source: local, src: base, dest: /}\n";
        let p = load(d.path(), text, &[]).unwrap_err();
        assert_problems(&p, &["6: source directory `nowhere` is not a directory"]);
        let set = [("src".to_string(), "layers".to_string())];
        let spec = load(d.path(), text, &set).unwrap();
        assert_eq!(spec.images["a"].tags, vec!["a:layers"]);
        let p = load(d.path(), text, &[("sr".into(), "x".into())]).unwrap_err();
        assert!(
            p.iter().any(|x| x.message.contains("no top-level var `sr`")
                && x.hint.as_deref() == Some("did you mean `--set src=…`?")),
            "{p:?}"
        );
        // Without a fetcher, sources cannot be loaded.
        let p = super::super::testutil::parse_in(d.path(), &text.replace("nowhere", "layers"))
            .unwrap_err();
        assert!(p[0].message.contains("cannot be fetched"), "{p:?}");
    }
}
