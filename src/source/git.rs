//! `git:` sources through the `git` command: a bare repository per URL in
//! the store, fetched shallowly by ref or by pinned commit, and a commit's
//! tree exported with `git archive` into `sources/tree/<commit>`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{SourceError, Token, commit_tree};
use crate::store::Store;

/// The host's `git`, by absolute path (see sandbox::tools).
pub(super) fn git_path() -> Result<&'static Path, SourceError> {
    crate::sandbox::tools::host_tool(crate::sandbox::tools::Tool::Git)
        .map_err(|_| SourceError::NoGit)
}

/// `sources/tree/<commit>`.
fn tree(store: &Store, commit: &str) -> PathBuf {
    store.sources_dir().join("tree").join(commit)
}

/// Whether the commit's tree is in the store (then git is not needed).
pub(super) fn exported(store: &Store, commit: &str) -> bool {
    tree(store, commit).is_dir()
}

/// The commit's tree: in the store, or exported from `url`'s cache.
pub(super) fn export(store: &Store, url: &str, commit: &str) -> Result<PathBuf, SourceError> {
    if exported(store, commit) {
        return Ok(tree(store, commit));
    }
    Repo::open(store, url)?.export(store, commit)
}

pub(super) struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// The bare cache of `url` (created when missing).
    pub(super) fn open(store: &Store, url: &str) -> Result<Repo, SourceError> {
        let clean = crate::build::strip_credentials(url);
        let hash = crate::digest::sha256_hex(clean.as_bytes());
        let dir = store.sources_dir().join("git").join(&hash[..16]);
        if !dir.join("HEAD").is_file() {
            let tmp = store.temp_dir("git-")?;
            run(
                Command::new(git_path()?)
                    .args(["init", "--quiet", "--bare"])
                    .arg(tmp.path()),
                None,
                "init --bare",
            )?;
            super::commit_tree(tmp, &dir)?;
        }
        Ok(Repo { dir })
    }

    fn git(&self) -> Result<Command, SourceError> {
        let mut c = Command::new(git_path()?);
        c.arg("-C").arg(&self.dir);
        Ok(c)
    }

    /// Keeps a fetched commit from git's pruning of unreferenced objects.
    fn keep(&self, commit: &str) -> Result<(), SourceError> {
        run(
            self.git()?
                .args(["update-ref", &format!("refs/imgbuild/{commit}"), commit]),
            None,
            "update-ref",
        )
        .map(|_| ())
    }

    fn has_commit(&self, commit: &str) -> bool {
        let Ok(mut c) = self.git() else { return false };
        c.args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The commit `reference` (a tag or a branch) names at `url` now,
    /// fetched into the cache.
    pub(super) fn resolve(
        &self,
        url: &str,
        reference: &str,
        token: Option<Token<'_>>,
    ) -> Result<String, SourceError> {
        let out = run(
            self.git()?.args(["ls-remote", "--", url]).arg(reference),
            token,
            "ls-remote",
        )?;
        // A tag's own line, peeled (`^{}`) when annotated, before a branch.
        let want = [
            format!("refs/tags/{reference}^{{}}"),
            format!("refs/tags/{reference}"),
            format!("refs/heads/{reference}"),
            reference.to_string(),
        ];
        let lines: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
        let found = want
            .iter()
            .find_map(|w| lines.iter().find(|(_, r)| r == w))
            .map(|(sha, _)| sha.to_string());
        let commit = match found {
            Some(c) => c,
            None if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) => {
                reference.to_string()
            }
            None => {
                return Err(SourceError::NoRef {
                    url: crate::build::strip_credentials(url),
                    reference: reference.to_string(),
                });
            }
        };
        self.ensure_commit(url, reference, &commit, token)?;
        // An annotated tag's own object, peeled to its commit.
        let peeled = run(
            self.git()?
                .args(["rev-parse", "--verify", "--quiet"])
                .arg(format!("{commit}^{{commit}}")),
            None,
            "rev-parse",
        )?;
        let peeled = peeled.trim().to_string();
        if peeled != commit {
            self.keep(&peeled)?;
        }
        Ok(peeled)
    }

    /// Makes sure `commit` is in the cache: there already, fetched alone
    /// (servers allow any commit with protocol v2), or with the history
    /// of `reference`.
    pub(super) fn ensure_commit(
        &self,
        url: &str,
        reference: &str,
        commit: &str,
        token: Option<Token<'_>>,
    ) -> Result<(), SourceError> {
        if self.has_commit(commit) {
            return Ok(());
        }
        let by_commit = run(
            self.git()?
                .args(["fetch", "--quiet", "--no-tags", "--depth=1", "--", url])
                .arg(commit),
            token,
            "fetch",
        );
        if by_commit.is_ok() && self.has_commit(commit) {
            return self.keep(commit);
        }
        // Without the depth: the commit may be behind the ref's tip.
        let by_ref = run(
            self.git()?
                .args(["fetch", "--quiet", "--no-tags", "--", url])
                .arg(reference),
            token,
            "fetch",
        );
        if self.has_commit(commit) {
            return self.keep(commit);
        }
        match (by_commit, by_ref) {
            (Err(e), Err(_)) => Err(e),
            _ => Err(SourceError::PinGone {
                url: crate::build::strip_credentials(url),
                reference: reference.to_string(),
                commit: commit.to_string(),
            }),
        }
    }

    /// `sources/tree/<commit>`: the commit's tree, exported once.
    pub(super) fn export(&self, store: &Store, commit: &str) -> Result<PathBuf, SourceError> {
        let dest = tree(store, commit);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = store.temp_dir("tree-")?;
        // 0644/0755 whatever the host's umask or git config says.
        let mut child = self
            .git()?
            .args(["-c", "tar.umask=022", "archive", "--format=tar"])
            .arg(commit)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SourceError::Io {
                path: self.dir.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let unpacked = {
            let mut ar = tar::Archive::new(stdout);
            ar.set_preserve_permissions(true);
            ar.set_preserve_mtime(false);
            ar.set_overwrite(true);
            ar.unpack(tmp.path())
        };
        let out = child.wait_with_output().map_err(|source| SourceError::Io {
            path: self.dir.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(git_error("archive", &out.status, &out.stderr));
        }
        unpacked.map_err(|source| SourceError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        commit_tree(tmp, &dest)?;
        Ok(dest)
    }
}

/// Runs a git command; its stdout, or its failure with its stderr. The
/// token goes into the child's environment (`http.extraHeader` by
/// `GIT_CONFIG_*`), never onto its command line.
fn run(cmd: &mut Command, token: Option<Token<'_>>, what: &str) -> Result<String, SourceError> {
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env_remove("GIT_DIR")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: {}", t.header()),
            );
        // Traces would print the header into the output we pass on.
        for v in [
            "GIT_TRACE",
            "GIT_TRACE_CURL",
            "GIT_CURL_VERBOSE",
            "GIT_TRACE_PACKET",
        ] {
            cmd.env_remove(v);
        }
    }
    let out = cmd.output().map_err(|source| SourceError::Io {
        path: PathBuf::from("git"),
        source,
    })?;
    if !out.status.success() {
        let mut e = git_error(what, &out.status, &out.stderr);
        if let (Some(t), SourceError::Git { output, .. }) = (token, &mut e) {
            *output = t.mask(output);
        }
        return Err(e);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git_error(what: &str, status: &std::process::ExitStatus, stderr: &[u8]) -> SourceError {
    let text = String::from_utf8_lossy(stderr);
    // URLs in git's messages lose any user:password they carried.
    let output = text
        .split_whitespace()
        .map(|w| {
            if w.contains("://") {
                crate::build::strip_credentials(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    SourceError::Git {
        command: what.to_string(),
        status: status.to_string(),
        output,
    }
}
