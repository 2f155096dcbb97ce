//! Change impact (`plan --changed-since REV`): the images whose inputs
//! differ between a commit and the work tree, and everything below them,
//! each with why.
//!
//! Both graphs are resolved the same way (vars, clients, sources unfetched,
//! see `since`) and compared image by image: what an image is made of
//! (parent, layers, steps, tests, config, tags, Debian packages), its
//! entry in images.lock, the sources its layers take, and the files under
//! its layers' paths. A change that leaves every resolved image the same
//! (a comment, a var nobody uses) selects nothing.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::since::{Changes, CommitKinds, Revision, RevisionError, Tree, Unfetched, WorkKinds};
use crate::debian::lock::{FILE_NAME as LOCK_FILE, Lock, LockedImage};
use crate::spec::{Image, LoadOptions, Spec, SpecError};

/// Revisions that name no commit: GitLab's `CI_COMMIT_BEFORE_SHA` on a
/// branch's first pipeline.
const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Revision(#[from] RevisionError),
    /// The work tree's images.yaml does not load.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `plan --changed-since` found.
#[derive(Debug, Serialize)]
pub struct Impact {
    /// The revision as given.
    pub since: String,
    /// Its commit (empty when it names none).
    pub commit: String,
    /// How many files differ under the directory of images.yaml.
    pub changed_files: usize,
    /// The images to build, parents first.
    pub images: Vec<Affected>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Affected {
    pub name: String,
    /// Its parent in the graph, if any (affected or not).
    pub parent: Option<String>,
    /// Why, one line each.
    pub reasons: Vec<String>,
}

/// How to load images.yaml on both sides.
pub struct Loading<'a> {
    /// images.yaml in the work tree.
    pub file: &'a Path,
    pub set: &'a [(String, String)],
    pub context: Option<&'a Path>,
    /// The project's commit for `${git.commit}`/`${git.short}`, the same on
    /// both sides: a new commit is not in itself a change of every image
    /// whose tags name it.
    pub revision: Option<&'a str>,
}

/// The graph at `rev` against the work tree's.
pub fn changed_since(load: &Loading<'_>, rev: &str) -> Result<(Spec, Impact), ChangeError> {
    let abs = std::path::absolute(load.file).map_err(|source| ChangeError::Io {
        path: load.file.to_path_buf(),
        source,
    })?;
    let here = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    let file_name = PathBuf::from(abs.file_name().unwrap_or_default());
    let read_now = |p: &Path| std::fs::read_to_string(p).ok();
    let now_pins = read_lock(&here.join(LOCK_FILE));
    let now_fetch = Unfetched {
        pins: now_pins
            .as_ref()
            .map(|l| l.sources.clone())
            .unwrap_or_default(),
        read: &read_now,
    };
    let load_now = || {
        Spec::load_with(
            load.file,
            &LoadOptions {
                set: load.set,
                fetcher: Some(&now_fetch),
                context: load.context,
                kinds: Some(&WorkKinds),
                revision: load.revision,
            },
        )
    };
    if rev.trim_start_matches('0').is_empty() && rev.len() == NO_COMMIT.len() {
        let now = load_now()?;
        let why = "no earlier commit to compare with (a new branch)".to_string();
        let images = select_all(&now, &why);
        return Ok((
            now,
            Impact {
                since: rev.to_string(),
                commit: String::new(),
                changed_files: 0,
                images,
            },
        ));
    }
    let revision = Revision::open(&here, rev)?;
    // git's looks (which files changed; then, only if the graph's own
    // files may differ, the commit's paths and files) run while the work
    // tree's graph loads: each waits more than it computes.
    let (now, git) = std::thread::scope(|scope| {
        let git = scope.spawn(|| -> Result<(Changes, Option<Tree>), RevisionError> {
            let changes = revision.changed_files()?;
            if !graph_may_differ(&changes, &file_name) {
                return Ok((changes, None));
            }
            let mut tree = revision.tree()?;
            // The commit's images.yaml, client files and lock, read into
            // memory; its graph is loaded as if from a directory that is
            // nowhere on disk, each path answered from the commit's tree.
            let wanted: Vec<PathBuf> = [file_name.clone(), PathBuf::from(LOCK_FILE)]
                .into_iter()
                .chain(
                    tree.yaml_files()
                        .into_iter()
                        .filter(|p| **p != file_name)
                        .cloned(),
                )
                .collect();
            revision.read_files(&mut tree, &wanted)?;
            Ok((changes, Some(tree)))
        });
        (load_now(), join(git))
    });
    let now = now?;
    let (changes, tree) = git?;
    let mut impact = match &tree {
        // Nothing the graph is read from changed (images.yaml, client
        // files, the lock, a core's version.php) and no path came or went:
        // the commit's graph is the work tree's, and only the files under
        // layers tell images apart.
        None => compare(
            &now,
            now_pins.as_ref(),
            Ok(&now),
            now_pins.as_ref(),
            &changes.files,
        ),
        Some(tree) => {
            let root = PathBuf::from(super::since::AT_COMMIT);
            let before_lock = Revision::text(tree, Path::new(LOCK_FILE))
                .and_then(|t| serde_json::from_str::<Lock>(&t).ok());
            let before = match Revision::text(tree, &file_name) {
                None => Err(format!("{} is not in {rev}", load.file.display())),
                Some(text) => load_before(
                    load,
                    &revision,
                    tree,
                    &text,
                    &root,
                    &here,
                    &file_name,
                    &before_lock,
                ),
            };
            compare(
                &now,
                now_pins.as_ref(),
                before.as_ref().map_err(String::as_str),
                before_lock.as_ref(),
                &changes.files,
            )
        }
    };
    impact.since = rev.to_string();
    impact.commit = revision.commit.clone();
    Ok((now, impact))
}

/// Whether the commit's graph may differ from the work tree's: a path
/// came, went or changed kind, or a file changed that loading the graph
/// reads (images.yaml, any YAML file (client files), images.lock, a
/// `dir:` source's version.php).
fn graph_may_differ(changes: &Changes, file_name: &Path) -> bool {
    changes.reshaped
        || changes.files.iter().any(|f| {
            f == file_name
                || f == Path::new(LOCK_FILE)
                || f.file_name().is_some_and(|n| n == "version.php")
                || matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
}

#[allow(clippy::too_many_arguments)]
fn load_before(
    load: &Loading<'_>,
    revision: &Revision,
    tree: &Tree,
    text: &str,
    root: &Path,
    here: &Path,
    file_name: &Path,
    lock: &Option<Lock>,
) -> Result<Spec, String> {
    let read = |p: &Path| {
        let rel = p.strip_prefix(root).ok()?;
        revision.read(tree, rel)
    };
    let fetch = Unfetched {
        pins: lock.as_ref().map(|l| l.sources.clone()).unwrap_or_default(),
        read: &read,
    };
    let kinds = CommitKinds { tree, root, here };
    // `--context` as far from the scratch directory as it is from here.
    let context = load.context.map(|c| {
        let c = std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf());
        let up = here
            .strip_prefix(&c)
            .map_or(0, |rest| rest.components().count());
        let mut at = root.to_path_buf();
        for _ in 0..up {
            at.push("..");
        }
        at
    });
    Spec::parse_with(
        text,
        &root.join(file_name),
        root,
        &LoadOptions {
            set: load.set,
            fetcher: Some(&fetch),
            context: context.as_deref(),
            kinds: Some(&kinds),
            revision: load.revision,
        },
    )
    .map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.replace(&root.display().to_string(), &format!("{}:", revision.given))
    })
}

fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, RevisionError>>,
) -> Result<T, RevisionError> {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn read_lock(path: &Path) -> Option<Lock> {
    Lock::read(path).ok().flatten()
}

/// Every image of `spec`, parents first, for one reason.
pub fn select_all(spec: &Spec, why: &str) -> Vec<Affected> {
    super::order(spec.images.keys().map(String::as_str), |n| {
        spec.parent_of(n)
    })
    .into_iter()
    .map(|n| Affected {
        name: n.to_string(),
        parent: spec.parent_of(n).map(str::to_string),
        reasons: vec![why.to_string()],
    })
    .collect()
}

/// The images of `now` that differ from `before` (or cannot be compared
/// with it: its load failed, with this message), and everything below
/// them. `files` are the changed paths relative to the directory of
/// images.yaml.
pub fn compare(
    now: &Spec,
    now_lock: Option<&Lock>,
    before: Result<&Spec, &str>,
    before_lock: Option<&Lock>,
    files: &[PathBuf],
) -> Impact {
    let changed_files = files.len();
    let files: BTreeSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    let before = match before {
        Ok(b) => b,
        Err(why) => {
            return Impact {
                since: String::new(),
                commit: String::new(),
                changed_files,
                images: select_all(
                    now,
                    &format!(
                        "the graph of that commit does not load, so nothing can be compared: {why}"
                    ),
                ),
            };
        }
    };
    let here_real = now.dir.canonicalize().unwrap_or_else(|_| now.dir.clone());
    // A layer source given as a link is followed to its real path.
    let roots = Roots::new(&[&now.dir, &here_real, &before.dir]);
    // The same graph (nothing it is read from changed): only files tell.
    let same = std::ptr::eq(now, before);
    let mut direct: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, image) in &now.images {
        let mut why = Vec::new();
        match before.images.get(name) {
            _ if same => {}
            None => why.push("new image".to_string()),
            // Part by part only when the whole differs: most images of a
            // fleet do not.
            Some(old) if whole(image, &roots) != whole(old, &roots) => {
                for ((what, a), (_, b)) in parts(image, &roots).iter().zip(parts(old, &roots)) {
                    if *a != b {
                        why.push(format!("{what} changed"));
                    }
                }
            }
            Some(_) => {}
        }
        if !same {
            why.extend(source_reasons(now, before, image));
            why.extend(lock_reasons(
                now_lock.and_then(|l| l.images.get(name)),
                before_lock.and_then(|l| l.images.get(name)),
                image.debian.is_some(),
            ));
        }
        why.extend(file_reasons(image, &now.dir, &here_real, &files));
        why.extend(outside_reasons(now, image, &here_real));
        if !why.is_empty() {
            direct.insert(name, why);
        }
    }
    let parent = |n: &str| now.parent_of(n);
    let mut selected: HashSet<&str> = HashSet::new();
    let mut images = Vec::new();
    for name in super::order(now.images.keys().map(String::as_str), parent) {
        let mut reasons = direct.remove(name).unwrap_or_default();
        if let Some(p) = parent(name)
            && selected.contains(p)
        {
            reasons.push(format!("parent `{p}` changed"));
        }
        if reasons.is_empty() {
            continue;
        }
        selected.insert(name);
        images.push(Affected {
            name: name.to_string(),
            parent: parent(name).map(str::to_string),
            reasons,
        });
    }
    Impact {
        since: String::new(),
        commit: String::new(),
        changed_files,
        images,
    }
}

/// The directories of images.yaml (the work tree's, its real path, the
/// commit's stand-in), as JSON string contents, longest first.
struct Roots(Vec<String>);

impl Roots {
    fn new(dirs: &[&Path]) -> Roots {
        let mut roots: Vec<String> = dirs
            .iter()
            .map(|d| {
                let quoted = serde_json::Value::String(d.display().to_string()).to_string();
                quoted[1..quoted.len() - 1].to_string()
            })
            .collect();
        roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
        roots.dedup();
        Roots(roots)
    }

    /// `json` with every string that starts with a root cut to the rest
    /// (`"ROOT/a"` → `"a"`, `"ROOT"` → `"."`), in one pass.
    fn strip(&self, json: &str) -> String {
        let mut out = String::with_capacity(json.len());
        let mut rest = json;
        while let Some(i) = rest.find('"') {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            for root in &self.0 {
                let Some(after) = rest.strip_prefix(root.as_str()) else {
                    continue;
                };
                if let Some(a) = after.strip_prefix('/') {
                    rest = a;
                    break;
                }
                if after.starts_with('"') {
                    out.push('.');
                    rest = after;
                    break;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Everything [`parts`] compares, in one text (a field added to the one
/// belongs in the other).
fn whole(image: &Image, roots: &Roots) -> String {
    let all = (
        &image.parent,
        &image.layers,
        &image.run,
        &image.test,
        &image.config,
        &image.tags,
        &image.secrets,
        image.network,
        &image.debian,
        image.compression.map(|c| c.to_string()),
    );
    roots.strip(&serde_json::to_string(&all).unwrap_or_default())
}

/// What an image is made of, part by part, with the directory of
/// images.yaml cut off its paths so that both sides compare.
fn parts(image: &Image, roots: &Roots) -> Vec<(&'static str, String)> {
    let json = |v: serde_json::Value| roots.strip(&v.to_string());
    use serde_json::to_value as v;
    let or_null = |r: Result<serde_json::Value, _>| r.unwrap_or(serde_json::Value::Null);
    vec![
        ("`from`", json(or_null(v(&image.parent)))),
        ("`layers`", json(or_null(v(&image.layers)))),
        ("`run`", json(or_null(v(&image.run)))),
        ("`test`", json(or_null(v(&image.test)))),
        ("`config`", json(or_null(v(&image.config)))),
        ("`tags`", json(or_null(v(&image.tags)))),
        ("`secrets`", json(or_null(v(&image.secrets)))),
        ("`network`", json(or_null(v(image.network)))),
        ("`debian`", json(or_null(v(&image.debian)))),
        (
            "`compression`",
            json(image.compression.map(|c| c.to_string()).into()),
        ),
    ]
}

/// The sources its layers take that are not what they were.
fn source_reasons(now: &Spec, before: &Spec, image: &Image) -> Vec<String> {
    let used: BTreeSet<&str> = image
        .layers
        .iter()
        .filter_map(|l| l.source.as_deref())
        .collect();
    used.into_iter()
        .filter_map(|name| {
            let a = now.sources.get(name)?;
            match before.sources.get(name) {
                None => Some(format!("source `{name}` is new")),
                Some(b) if b.resolved.identity != a.resolved.identity => Some(format!(
                    "source `{name}`: {} → {}",
                    b.resolved.identity, a.resolved.identity
                )),
                Some(b) if b.resolved.vars != a.resolved.vars => {
                    Some(format!("source `{name}`: its version.php changed"))
                }
                _ => None,
            }
        })
        .collect()
}

/// How the image's entry in images.lock moved: packages by name.
fn lock_reasons(
    now: Option<&LockedImage>,
    before: Option<&LockedImage>,
    debian: bool,
) -> Vec<String> {
    let (a, b) = match (now, before) {
        (None, None) => return Vec::new(),
        (Some(_), None) if debian => return vec!["newly pinned in images.lock".into()],
        (None, Some(_)) if debian => return vec!["no longer pinned in images.lock".into()],
        (Some(a), Some(b)) => (a, b),
        _ => return Vec::new(),
    };
    let old: BTreeMap<&str, &str> = b
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = a
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut moved = Vec::new();
    for (name, version) in &new {
        match old.get(name) {
            None => moved.push(format!("{name} {version} (new)")),
            Some(o) if o != version => moved.push(format!("{name} {o} → {version}")),
            _ => {}
        }
    }
    moved.extend(
        old.keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| format!("{n} (removed)")),
    );
    let same_rest = serde_json::to_value(a).ok().map(strip_packages)
        == serde_json::to_value(b).ok().map(strip_packages);
    let whole_same = serde_json::to_value(a).ok() == serde_json::to_value(b).ok();
    match (moved.len(), whole_same) {
        (_, true) => Vec::new(),
        (0, _) if !same_rest => {
            vec!["its images.lock entry changed (suite, date or archive)".into()]
        }
        (0, _) => vec!["its images.lock entry changed".into()],
        (n, _) => {
            let shown: Vec<&str> = moved.iter().take(3).map(String::as_str).collect();
            let more = if n > 3 {
                format!(" and {} more", n - 3)
            } else {
                String::new()
            };
            vec![format!(
                "images.lock: {n} Debian package{} changed: {}{more}",
                if n == 1 { "" } else { "s" },
                shown.join(", ")
            )]
        }
    }
}

fn strip_packages(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("packages");
    }
    v
}

/// Files changed under the paths its layers (and its Debian keyring)
/// read; paths outside the directory of images.yaml are not in git's view.
/// Layers whose files lie outside the repository (a `dir:` source or a
/// path given with `--set`): git cannot say whether they changed, so the
/// image is taken as changed rather than silently skipped.
fn outside_reasons(now: &Spec, image: &Image, here_real: &Path) -> Vec<String> {
    let inside = |p: &Path| {
        p.starts_with(&now.dir)
            || p.starts_with(here_real)
            || p.canonicalize().is_ok_and(|r| r.starts_with(here_real))
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for l in &image.layers {
        let outside = match &l.source {
            Some(name) => match now.sources.get(name).map(|s| &s.spec.location) {
                Some(crate::spec::SourceLocation::Dir { path }) => {
                    (!inside(path)).then(|| path.display().to_string())
                }
                // git: and archive: sources are pinned: source_reasons.
                _ => None,
            },
            None => (!inside(&l.src)).then(|| l.src.display().to_string()),
        };
        if let Some(path) = outside
            && seen.insert(path.clone())
        {
            out.push(format!(
                "{path} is outside the repository: git cannot tell whether it changed"
            ));
        }
    }
    out
}

fn file_reasons(
    image: &Image,
    here: &Path,
    here_real: &Path,
    files: &BTreeSet<&Path>,
) -> Vec<String> {
    let rel = |p: &Path| -> Option<PathBuf> {
        p.strip_prefix(here)
            .or_else(|_| p.strip_prefix(here_real))
            .ok()
            .map(Path::to_path_buf)
    };
    let mut paths: Vec<PathBuf> = image.layers.iter().filter_map(|l| rel(&l.src)).collect();
    if let Some(k) = image.debian.as_ref().and_then(|d| d.keyring.as_deref()) {
        paths.extend(rel(k));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        if !seen.insert(p.clone()) {
            continue;
        }
        let under: Vec<&Path> = files
            .range::<Path, _>((
                std::ops::Bound::Included(p.as_path()),
                std::ops::Bound::Unbounded,
            ))
            // Paths order by component: those under `p` follow it.
            .take_while(|f| f.starts_with(&p))
            .copied()
            .collect();
        if under.is_empty() {
            continue;
        }
        let shown: Vec<String> = under
            .iter()
            .take(3)
            .map(|f| f.display().to_string())
            .collect();
        let more = match under.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        let place = if p.as_os_str().is_empty() {
            ".".into()
        } else {
            p.display().to_string()
        };
        out.push(format!(
            "files changed under {place}: {}{more}",
            shown.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_cut_from_strings_that_start_with_them_only() {
        let roots = Roots::new(&[
            Path::new("/work/fleet"),
            Path::new("/real/fleet"),
            Path::new("/imgbuild-at-commit"),
        ]);
        let json = r#"{"src":"/work/fleet/layers/base","dir":"/work/fleet","other":"/work/fleetx/a","inside":"x /work/fleet/y","at":"/imgbuild-at-commit/clients/a"}"#;
        assert_eq!(
            roots.strip(json),
            r#"{"src":"layers/base","dir":".","other":"/work/fleetx/a","inside":"x /work/fleet/y","at":"clients/a"}"#
        );
    }

    #[test]
    fn the_commits_graph_is_loaded_only_when_its_inputs_may_differ() {
        let yaml = Path::new("images.yaml");
        let changes = |files: &[&str], reshaped| Changes {
            files: files.iter().map(PathBuf::from).collect(),
            reshaped,
        };
        // Files under layers, modified in place: the same graph.
        assert!(!graph_may_differ(
            &changes(&["clients/a/theme/x.css", "upstream/core/lib.php"], false),
            yaml
        ));
        assert!(!graph_may_differ(&changes(&[], false), yaml));
        // What the graph is read from, or a path that came or went.
        for f in [
            "images.yaml",
            "images.lock",
            "clients/a/client.yaml",
            "x/y.yml",
            "upstream/core/version.php",
        ] {
            assert!(graph_may_differ(&changes(&[f], false), yaml), "{f}");
        }
        assert!(graph_may_differ(
            &changes(&["clients/a/theme/x.css"], true),
            yaml
        ));
        // `-f fleet.conf`: that file too.
        assert!(graph_may_differ(
            &changes(&["fleet.conf"], false),
            Path::new("fleet.conf")
        ));
    }
}
