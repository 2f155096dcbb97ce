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
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

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

/// What differs between a commit and the work tree.
#[derive(Debug, Default)]
pub struct Changes {
    /// Relative to the directory of images.yaml, sorted.
    pub files: Vec<PathBuf>,
    /// A file was added (or is new, untracked), removed or changed kind:
    /// the commit's paths are not the work tree's.
    pub reshaped: bool,
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
    /// One `git cat-file --batch` for every file read from the commit,
    /// started at the first.
    batch: Mutex<Option<Batch>>,
}

/// A running `git cat-file --batch`: object names in, contents out.
struct Batch {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Its input closed, git ends.
        self.input.take();
        let _ = self.child.wait();
    }
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
    /// to do when it is not there (a shallow clone, a typo). One `git
    /// rev-parse` when it is there.
    pub fn open(dir: &Path, rev: &str) -> Result<Revision, RevisionError> {
        let git = crate::source::git_program()
            .ok_or(RevisionError::NoGit)?
            .to_path_buf();
        let mut r = Revision {
            git,
            dir: dir.to_path_buf(),
            given: rev.to_string(),
            commit: String::new(),
            batch: Mutex::new(None),
        };
        let spec = format!("{rev}^{{commit}}");
        if let Ok(out) = r.output(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ]) {
            r.commit = String::from_utf8_lossy(&out).trim().to_string();
            return Ok(r);
        }
        // Not there: outside a repository, or not in this clone's history.
        let Ok(shallow) = r.output(&["rev-parse", "--is-shallow-repository"]) else {
            return Err(RevisionError::NotARepo {
                dir: dir.to_path_buf(),
            });
        };
        let shallow = shallow.starts_with(b"true");
        let hint = if shallow {
            format!(
                "this clone is shallow (GitLab fetches the last GIT_DEPTH commits, 20 by default) and `{rev}` is older: set `GIT_DEPTH: 0` in the job's variables, or `git fetch --deepen=100` (or `git fetch origin {rev}`) before this command"
            )
        } else {
            format!(
                "check the name; a commit of another branch is fetched with `git fetch origin {rev}`"
            )
        };
        Err(RevisionError::NotInHistory {
            rev: rev.to_string(),
            shallow,
            hint,
        })
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.git);
        c.current_dir(&self.dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            // A look, not a change: git leaves the index as it is (no lock
            // to wait for, no write) even where it could refresh it.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str]) -> Result<Vec<u8>, RevisionError> {
        let child = self.spawn(args)?;
        self.finish(args, child)
    }

    /// `git ARGS` started, its output to be taken by [`Revision::finish`]:
    /// several run side by side.
    fn spawn(&self, args: &[&str]) -> Result<Child, RevisionError> {
        self.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RevisionError::Io {
                path: self.git.clone(),
                source,
            })
    }

    fn finish(&self, args: &[&str], child: Child) -> Result<Vec<u8>, RevisionError> {
        let out = child
            .wait_with_output()
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
    /// to the directory of images.yaml, sorted; and whether any was added,
    /// removed or changed kind (the commit's paths are not the work
    /// tree's). git's two looks (the tracked files against the commit, the
    /// directories for new files) run side by side.
    pub fn changed_files(&self) -> Result<Changes, RevisionError> {
        let diff_args = [
            "-c",
            "core.quotepath=off",
            "diff",
            "--name-status",
            "--no-renames",
            "--relative",
            "-z",
            &self.commit,
            "--",
        ];
        // A directory git does not track at all is one entry (`dir/`), not
        // a walk through it (a store kept in the project, say).
        let new_args = [
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--directory",
            "--no-empty-directory",
        ];
        let diff = self.spawn(&diff_args)?;
        let new = self.spawn(&new_args)?;
        let diff = self.finish(&diff_args, diff)?;
        let new = self.finish(&new_args, new)?;
        let path = |p: &[u8]| PathBuf::from(String::from_utf8_lossy(p).into_owned());
        let mut changes = Changes::default();
        // `STATUS NUL PATH NUL`, one path each (no renames).
        let mut fields = diff.split(|b| *b == 0).filter(|f| !f.is_empty());
        while let (Some(status), Some(p)) = (fields.next(), fields.next()) {
            if status != b"M" {
                changes.reshaped = true;
            }
            changes.files.push(path(p));
        }
        for p in new.split(|b| *b == 0).filter(|p| !p.is_empty()) {
            changes.reshaped = true;
            changes.files.push(path(p));
        }
        changes.files.sort();
        changes.files.dedup();
        Ok(changes)
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
    /// one exchange with `git cat-file --batch`.
    pub fn read_files(&self, tree: &mut Tree, wanted: &[PathBuf]) -> Result<(), RevisionError> {
        let (rels, blobs): (Vec<PathBuf>, Vec<String>) = wanted
            .iter()
            .filter_map(|p| tree.blob(p).map(|b| (p.clone(), b.to_string())))
            .unzip();
        for (rel, body) in rels.into_iter().zip(self.blobs(&blobs)?) {
            if let Some(body) = body {
                tree.texts
                    .insert(rel, String::from_utf8_lossy(&body).into_owned());
            }
        }
        Ok(())
    }

    /// The contents of these blobs (None for one the repository lacks),
    /// from the one `git cat-file --batch` of this revision.
    fn blobs(&self, names: &[String]) -> Result<Vec<Option<Vec<u8>>>, RevisionError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let io = |source| RevisionError::Io {
            path: self.git.clone(),
            source,
        };
        let mut slot = self
            .batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            let mut child = self
                .command()
                .args(["cat-file", "--batch"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io)?;
            *slot = Some(Batch {
                input: child.stdin.take(),
                output: BufReader::new(child.stdout.take().expect("piped")),
                child,
            });
        }
        let batch = slot.as_mut().expect("started above");
        let Batch { input, output, .. } = batch;
        let input = input.as_mut().expect("open until dropped");
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        std::thread::scope(|scope| {
            // Fed from another thread: git answers while it reads, and
            // both pipes fill with many names.
            let feeder = scope.spawn(move || input.write_all(text.as_bytes()).and(input.flush()));
            let mut out = Vec::with_capacity(names.len());
            for _ in names {
                let mut header = String::new();
                output.read_line(&mut header).map_err(io)?;
                // `<object> blob <size>`, or `<object> missing`.
                let mut f = header.split_whitespace();
                let (size, kind) = (f.nth(2), f.next());
                let size: Option<usize> = match (header.trim_end().ends_with(" missing"), size) {
                    (true, _) => None,
                    (false, Some(s)) if kind.is_none() => {
                        Some(s.parse().map_err(|_| RevisionError::Git {
                            command: "cat-file --batch".into(),
                            status: "bad answer".into(),
                            output: header.trim().to_string(),
                        })?)
                    }
                    _ => {
                        return Err(RevisionError::Git {
                            command: "cat-file --batch".into(),
                            status: "bad answer".into(),
                            output: header.trim().to_string(),
                        });
                    }
                };
                out.push(match size {
                    None => None,
                    Some(size) => {
                        let mut body = vec![0; size + 1];
                        output.read_exact(&mut body).map_err(io)?;
                        body.pop();
                        Some(body)
                    }
                });
            }
            feeder
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                .map_err(io)?;
            Ok(out)
        })
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
        let blob = tree.blob(rel)?.to_string();
        let body = self.blobs(&[blob]).ok()?.pop()??;
        String::from_utf8(body).ok()
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
