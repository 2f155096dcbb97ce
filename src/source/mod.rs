//! `sources:`: fetching, verifying and extracting the inputs images.yaml
//! names, into the store, and reading what they say about themselves.
//!
//! - `git:` is fetched with the `git` command into a bare repository per
//!   URL (`sources/git/<hash>`); the commit's tree is exported into
//!   `sources/tree/<commit>`. `imgbuild lock` pins the commit a ref names in
//!   images.lock; builds use the pinned commit ([`git`]).
//! - `archive:` is downloaded, checked against its SHA256 and extracted
//!   (entries that would leave the tree refused) into
//!   `sources/archive/<sha256>` ([`archive`]).
//! - `dir:` is used where it is.
//!
//! Every tree is made under a temporary name in the store's `tmp/` and
//! renamed into place whole. A source's token (`token_env`) is read from the
//! environment when fetching and goes only into the request's header (for
//! git: the child's environment), never into an argument, a file, an
//! error or a record.
mod archive;
mod git;
pub mod moodle;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::debian::lock::LockedSource;
use crate::spec::{ResolvedSource, SourceFailure, SourceFetcher, SourceLocation, SourceSpec};
use crate::store::Store;

pub use archive::ArchiveKind;

/// The `git` program (found on PATH once), for others that read a
/// repository (`plan --changed-since`).
pub fn git_program() -> Option<&'static std::path::Path> {
    git::git_path().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the `git` command is not installed (looked for it in {}); apt-get install git",
        crate::sandbox::tools::HOST_PATH
    )]
    NoGit,
    #[error("`git {command}` failed ({status}): {output}")]
    Git {
        command: String,
        status: String,
        output: String,
    },
    #[error("{url} has no branch or tag `{reference}`")]
    NoRef { url: String, reference: String },
    #[error(
        "commit {commit}, pinned in images.lock, cannot be fetched from {url} (ref `{reference}`)"
    )]
    PinGone {
        url: String,
        reference: String,
        commit: String,
    },
    #[error("{what} is not pinned in images.lock")]
    NotPinned { what: String },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: sha256 mismatch: images.yaml expects {expected}, the download is {actual}")]
    Sha256 {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: not a .tar.gz, .tar.xz or .zip archive (it starts with {magic})")]
    Format { url: String, magic: String },
    #[error("{url}: entry `{entry}` {why}; the archive is refused")]
    Hostile {
        url: String,
        entry: String,
        why: &'static str,
    },
    #[error("{url}: {reason}")]
    Corrupt { url: String, reason: String },
    #[error("`token_env: {name}`: the environment variable {name} is not set")]
    NoToken { name: String },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

impl SourceError {
    /// A failure of the fetch itself (network, server, git, disk), not of
    /// what images.yaml says.
    pub fn is_fetch(&self) -> bool {
        matches!(
            self,
            SourceError::Io { .. }
                | SourceError::NoGit
                | SourceError::Git { .. }
                | SourceError::Http { .. }
                | SourceError::Status { .. }
                | SourceError::Store(_)
        )
    }

    /// What would fix it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            SourceError::NoGit => "install git (apt-get install git)".into(),
            SourceError::NoRef { .. } => "check `ref:`: a tag (v5.1.3) or a branch of that repository".into(),
            SourceError::PinGone { .. } => "the ref was rewritten; run `imgbuild lock --update NAME` to pin what it names now".into(),
            SourceError::NotPinned { .. } => "run `imgbuild lock` and commit images.lock (a build with --locked uses only pinned commits)".into(),
            SourceError::Sha256 { .. } => "if the new archive is the one you want, put its sha256 in images.yaml".into(),
            SourceError::NoToken { .. } => "export the variable with the source's access token".into(),
            SourceError::Format { .. } => "name an archive in one of those formats".into(),
            _ => return None,
        })
    }
}

/// How git sources meet images.lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Use pinned commits; resolve what is not pinned (or whose url or ref
    /// changed) from the remote now.
    Use,
    /// `--locked`: only pinned commits; anything else is an error.
    Locked,
    /// `imgbuild lock --update [NAME…]`: resolve these (all when empty)
    /// anew; use the pins of the others.
    Update(Vec<String>),
}

/// The pin in `pins` that git source `name` (`url` at `reference`) may
/// use: one of the same url (credentials stripped) and ref. Else what is
/// not pinned, and why, as `--locked` says it (`plan` says it too).
pub fn git_pin<'p>(
    pins: &'p BTreeMap<String, LockedSource>,
    name: &str,
    url: &str,
    reference: &str,
) -> Result<&'p LockedSource, String> {
    let clean = crate::build::strip_credentials(url);
    let why = match pins.get(name) {
        Some(p) if p.git == clean && p.reference == reference => return Ok(p),
        Some(_) => "its url or ref changed since it was pinned",
        None => "it has no entry",
    };
    Err(format!("git source `{name}` ({why})"))
}

/// Fetches sources into the store (opened when first needed); records the
/// commits it used, which `imgbuild lock` writes into images.lock.
pub struct Fetcher {
    root: PathBuf,
    store: std::sync::OnceLock<Store>,
    pins: BTreeMap<String, LockedSource>,
    pinning: Pinning,
    used: Mutex<BTreeMap<String, LockedSource>>,
    /// Git sources resolved from their ref because no pin held.
    unpinned: Mutex<Vec<String>>,
}

impl Fetcher {
    /// `root`: the store's directory; `pins`: images.lock's `sources`
    /// (empty without a lock).
    pub fn new(root: PathBuf, pins: BTreeMap<String, LockedSource>, pinning: Pinning) -> Fetcher {
        Fetcher {
            root,
            store: std::sync::OnceLock::new(),
            pins,
            pinning,
            used: Mutex::new(BTreeMap::new()),
            unpinned: Mutex::new(Vec::new()),
        }
    }

    /// The git commits used, by source name: images.lock's `sources`.
    pub fn pins(&self) -> BTreeMap<String, LockedSource> {
        self.used.lock().map(|u| u.clone()).unwrap_or_default()
    }

    /// Git sources whose commit was resolved from the ref, not the lock.
    pub fn unpinned(&self) -> Vec<String> {
        self.unpinned.lock().map(|u| u.clone()).unwrap_or_default()
    }

    fn store(&self) -> Result<&Store, SourceError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let opened = Store::open(&self.root)?;
        Ok(self.store.get_or_init(|| opened))
    }

    fn fetch_source(&self, s: &SourceSpec) -> Result<ResolvedSource, SourceError> {
        // The token is needed only when the network is: a pinned commit
        // or an archive already in the store is used without it.
        let token_text = s.token_env.as_deref().and_then(crate::env::var);
        let token = || match (&s.token_env, &token_text) {
            (Some(_), Some(t)) => Ok(Some(Token(t))),
            (Some(name), None) => Err(SourceError::NoToken { name: name.clone() }),
            (None, _) => Ok(None),
        };
        match &s.location {
            SourceLocation::Git { url, reference } => {
                let clean = crate::build::strip_credentials(url);
                let pin = git_pin(&self.pins, &s.name, url, reference);
                let fresh = match &self.pinning {
                    Pinning::Update(names) => names.is_empty() || names.contains(&s.name),
                    _ => false,
                };
                let store = self.store()?;
                let commit = match pin {
                    Ok(p) if !fresh => {
                        if !git::exported(store, &p.commit) {
                            git::Repo::open(store, url)?.ensure_commit(
                                url,
                                reference,
                                &p.commit,
                                token()?,
                            )?;
                        }
                        p.commit.clone()
                    }
                    Err(what) if self.pinning == Pinning::Locked => {
                        return Err(SourceError::NotPinned { what });
                    }
                    _ => {
                        if !fresh && let Ok(mut u) = self.unpinned.lock() {
                            u.push(s.name.clone());
                        }
                        git::Repo::open(store, url)?.resolve(url, reference, token()?)?
                    }
                };
                let root = git::export(store, url, &commit)?;
                if let Ok(mut used) = self.used.lock() {
                    used.insert(
                        s.name.clone(),
                        LockedSource {
                            git: clean,
                            reference: reference.clone(),
                            commit: commit.clone(),
                        },
                    );
                }
                let mut vars = moodle::vars(&root);
                vars.insert("short".into(), commit[..8.min(commit.len())].to_string());
                vars.insert("commit".into(), commit.clone());
                Ok(ResolvedSource {
                    root,
                    vars,
                    identity: format!("commit {commit}"),
                })
            }
            SourceLocation::Archive { url, sha256 } => {
                let store = self.store()?;
                let root = match archive::cached(store, sha256) {
                    Some(root) => root,
                    None => archive::fetch(store, url, sha256, token()?)?,
                };
                let mut vars = moodle::vars(&root);
                vars.insert("sha256".into(), sha256.clone());
                Ok(ResolvedSource {
                    root,
                    vars,
                    identity: format!("sha256 {sha256}"),
                })
            }
            SourceLocation::Dir { path } => Ok(ResolvedSource {
                root: path.clone(),
                vars: moodle::vars(path),
                identity: "directory".into(),
            }),
        }
    }
}

impl SourceFetcher for Fetcher {
    fn fetch(&self, source: &SourceSpec) -> Result<ResolvedSource, SourceFailure> {
        self.fetch_source(source).map_err(|e| SourceFailure {
            message: e.to_string(),
            hint: e.hint(),
            fetch: e.is_fetch(),
        })
    }
}

/// A source's access token: never printed (its `Debug` hides it).
#[derive(Clone, Copy)]
pub(crate) struct Token<'t>(&'t str);

impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token<'_> {
    /// The `Authorization` header: `USER:PASSWORD` as Basic (GitLab:
    /// `oauth2:TOKEN`, `gitlab-ci-token:$CI_JOB_TOKEN`), anything else as
    /// Bearer.
    /// `text` with the token and its header value replaced by `***`.
    pub(crate) fn mask(&self, text: &str) -> String {
        let header = self.header();
        let value = header.split_once(' ').map_or("", |(_, v)| v);
        let mut out = text.to_string();
        for secret in [self.0, value] {
            if !secret.is_empty() {
                out = out.replace(secret, "***");
            }
        }
        out
    }

    pub(crate) fn header(&self) -> String {
        use base64::Engine as _;
        match self.0.contains(':') {
            true => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(self.0)
            ),
            false => format!("Bearer {}", self.0),
        }
    }
}

/// Renames a finished temporary tree into place; another process that
/// made the same tree first wins, and ours is dropped.
fn commit_tree(tmp: tempfile::TempDir, dest: &std::path::Path) -> Result<(), SourceError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SourceError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let path = tmp.keep();
    match std::fs::rename(&path, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => {
            let _ = crate::fsutil::remove_tree(&path);
            Ok(())
        }
        Err(source) => {
            let _ = crate::fsutil::remove_tree(&path);
            Err(SourceError::Io {
                path: dest.to_path_buf(),
                source,
            })
        }
    }
}
