//! images.yaml: types, parsing with positions, vars, validation.
//!
//! Loading is two passes: the node tree is read into `RawImage`s (shape and
//! types), then the graph is resolved (parents, cycles) and each image's vars
//! are expanded along its `from` chain, so a client may use a var that its
//! Moodle parent defines.
//!
//! `raw` is the first pass, `resolve` the second; each section's checks live
//! in their own module (`layers`, `config`, `tags`, `steps` for secrets and
//! network, `debian`), and `ctx` holds what they share: positioned scalars,
//! the problem list, and var expansion that reports where it failed.
mod clients;
mod config;
mod ctx;
mod debian;
mod layers;
#[cfg(test)]
mod props;
mod raw;
mod resolve;
mod revision;
mod sources;
mod steps;
mod tags;
#[cfg(test)]
mod testutil;
pub mod vars;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use sources::{
    LoadOptions, ResolvedSource, Source, SourceFailure, SourceFetcher, SourceLocation, SourceSpec,
};
pub use yaml::Pos;

use crate::reference::Reference;

/// What is at a path, for [`PathKinds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    /// A link, socket, device…: not a layer source.
    Other,
}

/// Answers what is at an absolute path in place of the filesystem: loading
/// a spec as an earlier commit had it, read from git's objects
/// ([`LoadOptions::kinds`]). None: nothing there.
pub trait PathKinds {
    fn kind(&self, path: &Path) -> Option<PathKind>;

    /// The names in a directory, for `clients:` patterns.
    fn read_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    /// A file's text, for client files.
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Where an image starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Parent {
    Scratch,
    /// Another image of this graph.
    Image(String),
    /// An image in a registry, `host/repo:tag` or `…@sha256:…`, parsed once
    /// here.
    Registry(Reference),
}

/// A numeric id or a name to look up in the parent's /etc/passwd or /etc/group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IdSpec {
    Id(u32),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub user: IdSpec,
    pub group: Option<IdSpec>,
}

impl Owner {
    /// True when a name must be looked up in the parent's accounts.
    pub fn has_names(&self) -> bool {
        matches!(self.user, IdSpec::Name(_)) || matches!(self.group, Some(IdSpec::Name(_)))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |p: &IdSpec| match p {
            IdSpec::Id(n) => n.to_string(),
            IdSpec::Name(s) => s.clone(),
        };
        match &self.group {
            Some(g) => write!(f, "{}:{}", part(&self.user), part(g)),
            None => write!(f, "{}", part(&self.user)),
        }
    }
}

/// One `layers:` entry, paths resolved against the directory of images.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSpec {
    /// Absolute path of the source file or tree.
    pub src: PathBuf,
    /// The source as written, for messages.
    pub src_text: String,
    /// Absolute, normalised destination inside the image ("/" for the root).
    pub dest: String,
    pub owner: Option<Owner>,
    /// Permission bits for files; directories get the same with `x` wherever
    /// `r` is set (as `chmod X`).
    pub mode: Option<u32>,
    pub exclude: Vec<String>,
    /// `src` is a root filesystem tarball taken as it is (`from: {rootfs:
    /// …}`): owners, modes and links from its headers, nothing excluded.
    pub import: bool,
    /// `source: NAME`: `src` is inside that source's tree.
    pub source: Option<String>,
    #[serde(skip)]
    pub pos: Pos,
}

/// The `config:` section, after vars (ports normalised to `PORT/PROTO`):
/// exactly what the image changes in its parent's run config, so oci's own
/// type. Its JSON is part of an image's cache key.
pub type ConfigSpec = crate::oci::image::ConfigChange;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub pos: Pos,
    pub parent: Parent,
    pub layers: Vec<LayerSpec>,
    /// Shell commands run in the image after its file layers; what they
    /// change becomes one layer.
    pub run: Vec<String>,
    /// Smoke tests: shell commands run in a throw-away copy of the built
    /// image; a failing one fails the build.
    pub test: Vec<String>,
    pub config: ConfigSpec,
    /// `repo:tag` or `tag` (repository = the image's name), vars expanded.
    pub tags: Vec<String>,
    /// The vars in force for this image (file, ancestors, own).
    pub vars: std::sync::Arc<vars::Vars>,
    /// Build secrets its `run:` steps see under /run/secrets.
    pub secrets: Vec<SecretSpec>,
    /// `network: none`: steps run without a network.
    pub network: Network,
    /// Debian packages installed from the archive, before the file layers.
    pub debian: Option<DebianSpec>,
    /// `compression:`: how this image's own layers are compressed; None:
    /// as the build says (`--compression`, gzip by default).
    pub compression: Option<crate::layer::LayerCompression>,
}

/// `debian:`, with what the image inherits from its Debian ancestors
/// (suite, components, architecture, mirror, keyring) filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebianSpec {
    /// As written (`stable`, `trixie`, …); the lock records the codename.
    pub suite: String,
    pub components: Vec<String>,
    /// None: the build platform's.
    pub architecture: Option<String>,
    /// `minbase`: Essential and Priority required (only without a Debian
    /// parent).
    pub minbase: bool,
    /// Names, optionally `name=version`.
    pub packages: Vec<String>,
    pub recommends: bool,
    /// Preseeded debconf answers, `package question type value` lines.
    pub debconf: Vec<String>,
    /// None: the host's apt sources, else IMGBUILD_DEBIAN_MIRROR.
    pub mirror: Option<String>,
    /// None: the host's debian-archive-keyring.
    pub keyring: Option<PathBuf>,
    /// Whether an ancestor installs Debian packages too.
    pub has_debian_parent: bool,
    /// dpkg's path filters in force: the Debian ancestors' rules, then
    /// this image's `path_exclude`, then its `path_include`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path_rules: Vec<crate::debian::paths::Rule>,
    /// Whether this image adds rules of its own (and so writes dpkg's
    /// configuration file).
    #[serde(skip)]
    pub own_path_rules: bool,
    #[serde(skip)]
    pub pos: Pos,
}

impl DebianSpec {
    /// The path filter this image's Debian layer installs with.
    pub fn path_filter(&self) -> crate::debian::paths::PathFilter {
        crate::debian::paths::PathFilter::new(self.path_rules.clone())
    }
}

/// Whether `run:` steps reach the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network, as kaniko's and docker build's steps have.
    #[default]
    Host,
    None,
}

/// One `secrets:` entry: a value read when steps run, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretSpec {
    /// The file name under /run/secrets.
    pub name: String,
    pub source: SecretSource,
    /// The value's hash enters the run layer's key, so a new value rebuilds
    /// it (off by default: a rotated token should not rebuild images).
    pub rebuild: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// An environment variable of the build.
    Env(String),
    /// A file, resolved against the directory of images.yaml.
    File(PathBuf),
}

/// A loaded, validated images.yaml.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file as the user named it, for messages.
    pub file: PathBuf,
    /// The directory that relative paths are resolved against.
    pub dir: PathBuf,
    pub images: BTreeMap<String, Image>,
    /// The client files `clients:` read, as the user would name them;
    /// `Pos::file` n is `files[n - 1]` (see [`Spec::file_at`]).
    pub files: Vec<PathBuf>,
    /// `registry:`: where `push` puts images (`HOST/PATH`), vars expanded.
    pub registry: Option<String>,
    /// `sources:`, fetched.
    pub sources: BTreeMap<String, Source>,
}

/// One thing wrong with images.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file the problem is in, when it is not images.yaml (a client
    /// file), as the user would name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
    pub image: Option<String>,
    pub message: String,
    /// What would fix it.
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {source}{}", file.display(), if source.kind() == std::io::ErrorKind::NotFound { "\n  hint: run imgbuild where images.yaml is, or name it with -f FILE" } else { "" })]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
    /// A source could not be fetched (network, server, disk); `problems`
    /// says which, with everything else wrong.
    #[error("{}", render_problems(file, problems))]
    Fetch {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let file = p.file.as_deref().unwrap_or(file);
        out.push_str(&format!("{}:{}:{}: ", file.display(), p.line, p.column));
        if let Some(image) = &p.image {
            out.push_str(&format!("image {image}: "));
        }
        out.push_str(&p.message);
        if let Some(hint) = &p.hint {
            out.push_str(&format!("\n  hint: {hint}"));
        }
    }
    out
}

impl Spec {
    /// Reads and validates `file`, including that every layer source exists;
    /// `sources:` cannot be fetched (see [`Spec::load_with`]).
    pub fn load(file: &Path) -> Result<Spec, SpecError> {
        Spec::load_with(file, &LoadOptions::default())
    }

    /// [`Spec::load`] with `--set` vars and a fetcher for `sources:`.
    pub fn load_with(file: &Path, opts: &LoadOptions<'_>) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(file).map_err(|source| SpecError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let abs = std::path::absolute(file).map_err(|source| SpecError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let dir = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
        Spec::parse_with(&text, file, &dir, opts)
    }

    /// Parses `text` as if read from `file`, resolving paths against `dir`.
    pub fn parse(text: &str, file: &Path, dir: &Path) -> Result<Spec, SpecError> {
        Spec::parse_with(text, file, dir, &LoadOptions::default())
    }

    /// [`Spec::parse`] with `--set` vars and a fetcher for `sources:`.
    pub fn parse_with(
        text: &str,
        file: &Path,
        dir: &Path,
        opts: &LoadOptions<'_>,
    ) -> Result<Spec, SpecError> {
        // An included file is named as images.yaml is: `clients/a/client.yaml`
        // beside `images.yaml`, `/p/clients/a/client.yaml` beside `/p/images.yaml`.
        let beside = |rel: &Path| file.parent().unwrap_or(Path::new("")).join(rel);
        resolve::parse(text, dir, opts)
            .map(|(images, top)| Spec {
                file: file.to_path_buf(),
                dir: dir.to_path_buf(),
                images,
                files: top.files.iter().map(|f| beside(f)).collect(),
                registry: top.registry,
                sources: top.sources,
            })
            .map_err(|failed| {
                let mut problems = failed.problems;
                for p in &mut problems {
                    p.file = p.file.as_deref().map(beside);
                }
                problems
                    .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
                let file = file.to_path_buf();
                match failed.fetch {
                    true => SpecError::Fetch { file, problems },
                    false => SpecError::Invalid { file, problems },
                }
            })
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }

    /// The image of this file that `name` is built from, if any: the parent
    /// lookup the `graph` functions take (`|n| spec.parent_of(n)`).
    pub fn parent_of(&self, name: &str) -> Option<&str> {
        match &self.images.get(name)?.parent {
            Parent::Image(p) => Some(p),
            Parent::Scratch | Parent::Registry(_) => None,
        }
    }

    /// The file a position of this spec is in: images.yaml or a client file.
    pub fn file_at(&self, pos: Pos) -> &Path {
        usize::try_from(pos.file)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| self.files.get(n))
            .unwrap_or(&self.file)
    }

    /// The absolute path of images.yaml.
    pub fn file_abs(&self) -> PathBuf {
        match self.file.file_name() {
            Some(n) => self.dir.join(n),
            None => self.file.clone(),
        }
    }
}
