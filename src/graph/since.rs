//! An earlier commit of the project, read from git's objects without a
//! checkout (`plan --changed-since REV`): which files differ from the work
//! tree, what paths the commit held, and its images.yaml, client files and
//! images.lock, written alone into a scratch directory so the ordinary
//! loader reads them.
//!
//! Sources are not fetched on either side: a git or archive source is
//! known by its pin (images.lock) or checksum, a `dir:` source by its
//! files and its version.php. Both sides are loaded the same way, so they
//! compare.
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use crate::debian::lock::LockedSource;
use crate::spec::{
    PathKind, PathKinds, ResolvedSource, SourceFailure, SourceFetcher, SourceLocation, SourceSpec,
};

/// Where a source that is not fetched seems to be: the same on both
/// sides, and never on disk.
pub const UNFETCHED: &str = "/imgbuild-unfetched-source";

/// Where a commit's graph seems to be: nowhere on disk, every path under it
/// answered from the commit's tree ([`CommitKinds`]).
pub const AT_COMMIT: &str = "/imgbuild-at-commit";

#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(
        "the `git` command is not installed (looked for it on PATH)\n  hint: install git (apt-get install git)"
    )]
    NoGit,
    #[error(
        "{} is not in a git repository: --changed-since compares the work tree with a commit\n  hint: run it in a clone of the project",
        dir.display()
    )]
    NotARepo { dir: PathBuf },
    #[error("`{rev}` is not a commit in this clone's history{}\n  hint: {hint}", if *shallow { " (a shallow clone)" } else { "" })]
    NotInHistory {
        rev: String,
        shallow: bool,
        hint: String,
    },
    #[error("`git {command}` failed ({status}): {output}")]
    Git {
        command: String,
        status: String,
        output: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A commit, and the directory of images.yaml in the work tree.
pub struct Revision {
    git: PathBuf,
    /// The directory of images.yaml (absolute): every path here is
    /// relative to it.
    dir: PathBuf,
    /// The revision as the user wrote it.
    pub given: String,
    /// Its commit id.
    pub commit: String,
}

/// What a commit holds under the directory of images.yaml.
#[derive(Default)]
pub struct Tree {
    /// Relative path → what it is and its blob (None for a directory).
    entries: HashMap<PathBuf, (PathKind, Option<String>)>,
    /// The files read into memory ([`Revision::read_files`]).
    texts: HashMap<PathBuf, String>,
}

impl Tree {
    pub fn kind(&self, rel: &Path) -> Option<PathKind> {
        if rel.as_os_str().is_empty() {
            return Some(PathKind::Dir);
        }
        self.entries.get(rel).map(|(k, _)| *k)
    }

    fn blob(&self, rel: &Path) -> Option<&str> {
        self.entries.get(rel).and_then(|(_, b)| b.as_deref())
    }

    /// Its `.yaml` and `.yml` files, sorted: the client files are among
    /// them.
    pub fn yaml_files(&self) -> Vec<&PathBuf> {
        let mut out: Vec<&PathBuf> = self
            .entries
            .iter()
            .filter(|(p, (k, _))| {
                *k == PathKind::File
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .map(|(p, _)| p)
            .collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Revision {
    /// `rev` in the repository that holds `dir`: an error that says what
    /// to do when it is not there (a shallow clone, a typo).
    pub fn open(dir: &Path, rev: &str) -> Result<Revision, RevisionError> {
        let git = crate::source::git_program()
            .ok_or(RevisionError::NoGit)?
            .to_path_buf();
        let mut r = Revision {
            git,
            dir: dir.to_path_buf(),
            given: rev.to_string(),
            commit: String::new(),
        };
        if r.output(&["rev-parse", "--show-toplevel"]).is_err() {
            return Err(RevisionError::NotARepo {
                dir: dir.to_path_buf(),
            });
        }
        let spec = format!("{rev}^{{commit}}");
        match r.output(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]) {
            Ok(out) => r.commit = String::from_utf8_lossy(&out).trim().to_string(),
            Err(_) => {
                let shallow = r
                    .output(&["rev-parse", "--is-shallow-repository"])
                    .is_ok_and(|o| o.starts_with(b"true"));
                let hint = if shallow {
                    format!(
                        "this clone is shallow (GitLab fetches the last GIT_DEPTH commits, 20 by default) and `{rev}` is older: set `GIT_DEPTH: 0` in the job's variables, or `git fetch --deepen=100` (or `git fetch origin {rev}`) before this command"
                    )
                } else {
                    format!(
                        "check the name; a commit of another branch is fetched with `git fetch origin {rev}`"
                    )
                };
                return Err(RevisionError::NotInHistory {
                    rev: rev.to_string(),
                    shallow,
                    hint,
                });
            }
        }
        Ok(r)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.git);
        c.current_dir(&self.dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str]) -> Result<Vec<u8>, RevisionError> {
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|source| RevisionError::Io {
                path: self.git.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RevisionError::Git {
                command: args.join(" "),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }

    /// The files that differ between the commit and the work tree (tracked
    /// or new, not ignored; a wholly new directory as one entry), relative
    /// to the directory of images.yaml, sorted.
    pub fn changed_files(&self) -> Result<Vec<PathBuf>, RevisionError> {
        let mut out = Vec::new();
        let diff = self.output(&[
            "-c",
            "core.quotepath=off",
            "diff",
            "--name-only",
            "--no-renames",
            "--relative",
            "-z",
            &self.commit,
            "--",
        ])?;
        // A directory git does not track at all is one entry (`dir/`), not
        // a walk through it (a store kept in the project, say).
        let new = self.output(&[
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--directory",
            "--no-empty-directory",
        ])?;
        for list in [diff, new] {
            out.extend(
                list.split(|b| *b == 0)
                    .filter(|p| !p.is_empty())
                    .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned())),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every path of the commit under the directory of images.yaml.
    pub fn tree(&self) -> Result<Tree, RevisionError> {
        let list = self.output(&["ls-tree", "-r", "-t", "-z", &self.commit])?;
        let mut tree = Tree::default();
        for entry in list.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            // `<mode> SP <type> SP <object> TAB <path>`
            let entry = String::from_utf8_lossy(entry);
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let mut f = meta.split(' ');
            let (mode, kind, object) = (f.next(), f.next(), f.next());
            let path = PathBuf::from(path);
            let value = match (mode, kind) {
                (_, Some("tree")) => (PathKind::Dir, None),
                // A link: what it leads to in the work tree, else a file
                // (a link given as a layer source is followed).
                (Some("120000"), _) => match std::fs::metadata(self.dir.join(&path)) {
                    Ok(m) if m.is_dir() => (PathKind::Dir, None),
                    _ => (PathKind::File, None),
                },
                (_, Some("blob")) => (PathKind::File, object.map(str::to_string)),
                // A submodule: a tree this commit does not hold.
                _ => (PathKind::Dir, None),
            };
            tree.entries.insert(path, value);
        }
        Ok(tree)
    }

    /// Reads the commit's `wanted` files (relative paths) into `tree`, in
    /// one `git cat-file --batch`.
    pub fn read_files(&self, tree: &mut Tree, wanted: &[PathBuf]) -> Result<(), RevisionError> {
        let blobs: Vec<(PathBuf, String)> = wanted
            .iter()
            .filter_map(|p| tree.blob(p).map(|b| (p.clone(), b.to_string())))
            .collect();
        if blobs.is_empty() {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RevisionError::Io { path, source }
        };
        let mut child = self
            .command()
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(&self.git))?;
        let mut stdin = child.stdin.take().expect("piped");
        let names: String = blobs.iter().map(|(_, b)| format!("{b}\n")).collect();
        // Fed from another thread: git answers while it reads.
        let feeder = std::thread::spawn(move || stdin.write_all(names.as_bytes()));
        let mut reader = BufReader::new(child.stdout.take().expect("piped"));
        for (rel, _) in blobs {
            let mut header = String::new();
            reader.read_line(&mut header).map_err(io(&self.git))?;
            let size: usize = header
                .split(' ')
                .nth(2)
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| RevisionError::Git {
                    command: "cat-file --batch".into(),
                    status: "bad answer".into(),
                    output: header.trim().to_string(),
                })?;
            let mut body = vec![0; size + 1];
            reader.read_exact(&mut body).map_err(io(&self.git))?;
            body.pop();
            tree.texts
                .insert(rel, String::from_utf8_lossy(&body).into_owned());
        }
        let _ = feeder.join();
        let _ = child.wait();
        Ok(())
    }

    /// A file read by [`Revision::read_files`].
    pub fn text(tree: &Tree, rel: &Path) -> Option<String> {
        tree.texts.get(rel).cloned()
    }

    /// One file of the commit, when it holds it.
    pub fn read(&self, tree: &Tree, rel: &Path) -> Option<String> {
        if let Some(t) = tree.texts.get(rel) {
            return Some(t.clone());
        }
        let blob = tree.blob(rel)?;
        let out = self.output(&["cat-file", "blob", blob]).ok()?;
        String::from_utf8(out).ok()
    }
}

/// `path` with `.` and `..` folded lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn fs_kind(path: &Path) -> Option<PathKind> {
    std::fs::symlink_metadata(path).ok().map(|m| {
        if m.is_dir() {
            PathKind::Dir
        } else if m.is_file() {
            PathKind::File
        } else {
            PathKind::Other
        }
    })
}

/// The work tree's paths, with sources that are not fetched taken as
/// trees.
pub struct WorkKinds;

impl PathKinds for WorkKinds {
    fn kind(&self, path: &Path) -> Option<PathKind> {
        if path.starts_with(UNFETCHED) {
            return Some(PathKind::Dir);
        }
        // Links followed, as `clients:` patterns and `dir:` sources do.
        std::fs::metadata(path).ok().map(|m| {
            if m.is_dir() {
                PathKind::Dir
            } else if m.is_file() {
                PathKind::File
            } else {
                PathKind::Other
            }
        })
    }
}

/// A commit's paths, for a spec loaded from `root` (the scratch directory
/// standing for `here`, the directory of images.yaml); what lies outside
/// it is not in git, so it is looked at where it is.
pub struct CommitKinds<'t> {
    pub tree: &'t Tree,
    pub root: &'t Path,
    pub here: &'t Path,
}

impl PathKinds for CommitKinds<'_> {
    fn kind(&self, path: &Path) -> Option<PathKind> {
        if path.starts_with(UNFETCHED) {
            return Some(PathKind::Dir);
        }
        let Ok(rel) = path.strip_prefix(self.root) else {
            return fs_kind(path);
        };
        let rel = normalise(rel);
        if rel.starts_with("..") {
            return fs_kind(&normalise(&self.here.join(rel)));
        }
        self.tree.kind(&rel)
    }

    fn read_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        let rel = path
            .strip_prefix(self.root)
            .map(normalise)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(self
            .tree
            .entries
            .keys()
            .filter(|p| p.parent() == Some(rel.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> std::io::Result<String> {
        path.strip_prefix(self.root)
            .ok()
            .and_then(|rel| self.tree.texts.get(&normalise(rel)).cloned())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
}

/// Sources without the network: a git source by its pin in images.lock,
/// an archive by its checksum, a directory where it is, with the release
/// its version.php names (read through `read`, from the work tree or the
/// commit).
pub struct Unfetched<'r> {
    pub pins: BTreeMap<String, LockedSource>,
    pub read: &'r dyn Fn(&Path) -> Option<String>,
}

impl SourceFetcher for Unfetched<'_> {
    fn fetch(&self, source: &SourceSpec) -> Result<ResolvedSource, SourceFailure> {
        let unfetched = Path::new(UNFETCHED).join(&source.name);
        // What version.php would say, for `${source.NAME.release}` in a
        // tag: the same stand-in on both sides for the same pin.
        let stand_in = |id: &str| -> BTreeMap<String, String> {
            ["release", "release_full", "branch", "build"]
                .iter()
                .map(|k| (k.to_string(), format!("{k}-of-{id}")))
                .collect()
        };
        Ok(match &source.location {
            SourceLocation::Git { url, reference } => {
                let clean = crate::build::strip_credentials(url);
                let commit = self
                    .pins
                    .get(&source.name)
                    .filter(|p| p.git == clean && p.reference == *reference)
                    .map_or_else(|| format!("unpinned-{reference}"), |p| p.commit.clone());
                let short: String = commit.chars().take(8).collect();
                let mut vars = stand_in(&short);
                vars.insert("short".into(), short);
                vars.insert("commit".into(), commit.clone());
                ResolvedSource {
                    root: unfetched,
                    vars,
                    identity: format!("commit {commit}"),
                }
            }
            SourceLocation::Archive { sha256, .. } => {
                let mut vars = stand_in(&sha256[..8.min(sha256.len())]);
                vars.insert("sha256".into(), sha256.clone());
                ResolvedSource {
                    root: unfetched,
                    vars,
                    identity: format!("sha256 {sha256}"),
                }
            }
            SourceLocation::Dir { path } => ResolvedSource {
                root: path.clone(),
                vars: ["version.php", "public/version.php"]
                    .iter()
                    .filter_map(|f| (self.read)(&path.join(f)))
                    .map(|t| crate::source::moodle::parse(&t))
                    .find(|v| v.contains_key("release"))
                    .unwrap_or_default(),
                identity: "directory".into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_folds_dots_but_keeps_leading_parents() {
        assert_eq!(normalise(Path::new("a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(normalise(Path::new("../x/../y")), PathBuf::from("../y"));
    }

    #[test]
    fn an_unpinned_git_source_is_known_by_its_ref() {
        let read = |_: &Path| None;
        let f = Unfetched {
            pins: BTreeMap::new(),
            read: &read,
        };
        let spec = SourceSpec {
            name: "m".into(),
            location: SourceLocation::Git {
                url: "https://git.example/m.git".into(),
                reference: "v1".into(),
            },
            token_env: None,
            pos: Default::default(),
        };
        let r = f.fetch(&spec).unwrap();
        assert_eq!(r.identity, "commit unpinned-v1");
        assert_eq!(r.root, Path::new(UNFETCHED).join("m"));
        assert!(r.vars.contains_key("release"));
    }
}
