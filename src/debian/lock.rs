//! `images.lock`: the Debian packages each image installs, pinned.
//!
//! For every image with `debian:` the lock lists each package it adds to
//! its parent (name, version, architecture, archive path, repository,
//! SHA256, size) and the Release it was chosen from. A build with a lock
//! and the `.deb`s in the cache reads no index at all. `inputs` is a hash
//! of every image's `debian:` section (and parent): `build --locked` fails
//! when images.yaml changed since the lock was written.
//!
//! `sources` pins each `git:` source of images.yaml to the commit its ref
//! named when `imgbuild lock` ran (see `crate::source`); builds use that
//! commit until `imgbuild lock --update`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{DebianSpec, Parent, Spec};

pub const FILE_NAME: &str = "images.lock";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub lock_version: u32,
    /// sha256 of what the lock was resolved from (see [`inputs`]).
    pub inputs: String,
    pub images: BTreeMap<String, LockedImage>,
    /// Git sources by name, pinned to a commit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, LockedSource>,
}

/// A `git:` source pinned: its URL (without credentials) and ref as
/// images.yaml gave them, and the commit the ref named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedSource {
    pub git: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedImage {
    /// sha256 of this image's `debian:`, its parent and what the parent
    /// has installed: `imgbuild lock` keeps an entry while it holds.
    pub inputs: String,
    /// As images.yaml says it (`stable`).
    pub suite: String,
    /// What the Release called it then (`trixie`).
    pub codename: String,
    pub architecture: String,
    /// The newest Release `Date` of the suites read, as written there and
    /// as unix seconds (the layer's default SOURCE_DATE_EPOCH).
    pub release_date: String,
    pub epoch: i64,
    /// What this image installs over its parent, sorted by name.
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Filename` below `base`: `pool/main/a/apt/apt_3.0.3_amd64.deb`.
    pub path: String,
    /// The repository root: `http://deb.debian.org/debian`.
    pub base: String,
    pub sha256: String,
    pub size: u64,
}

impl LockedPackage {
    pub fn url(&self) -> String {
        format!("{}/{}", self.base.trim_end_matches('/'), self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an imgbuild lock file: {reason}; run `imgbuild lock` to write it anew", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{}: lock_version {found}, and this imgbuild reads {VERSION}; run `imgbuild lock` to write it anew", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("{}: images.yaml's `debian:` sections changed since the lock was written; run `imgbuild lock` and commit {FILE_NAME}", path.display())]
    Stale { path: PathBuf },
    #[error("{}: no entry for image `{image}`; run `imgbuild lock`", path.display())]
    Missing { path: PathBuf, image: String },
}

/// Where the lock of `spec` lives: beside images.yaml.
pub fn path_for(spec: &Spec) -> PathBuf {
    spec.dir.join(FILE_NAME)
}

/// The hash of what a lock depends on: every image's `debian:` (as
/// resolved, with inherited settings) and the parent it builds on.
pub fn inputs(spec: &Spec) -> String {
    let mut parts: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for (name, image) in &spec.images {
        let Some(d) = &image.debian else { continue };
        let parent = match &image.parent {
            Parent::Scratch => serde_json::Value::Null,
            Parent::Image(p) => p.as_str().into(),
            Parent::Registry(r) => r.to_string().into(),
        };
        parts.insert(
            name,
            serde_json::json!({ "debian": debian_value(d), "from": parent }),
        );
    }
    let text =
        crate::oci::image::canonical_json(&serde_json::json!({ "v": VERSION, "images": parts }));
    crate::oci::digest::sha256_hex(&text)
}

pub fn debian_value(d: &DebianSpec) -> serde_json::Value {
    // Paths enter by what they name, not where the checkout is.
    let mut v = serde_json::to_value(d).unwrap_or_default();
    // Path filters change which files dpkg writes, not which packages
    // are chosen: the lock holds over them.
    if let Some(o) = v.as_object_mut() {
        o.remove("path_rules");
    }
    if let Some(k) = &d.keyring {
        v["keyring"] = k
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .into();
    }
    v
}

impl Lock {
    pub fn new(inputs: String) -> Lock {
        Lock {
            lock_version: VERSION,
            inputs,
            images: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Reads `path`; None when there is no lock.
    pub fn read(path: &Path) -> Result<Option<Lock>, LockError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| LockError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let found = value["lock_version"].as_u64().unwrap_or(0) as u32;
        if found != VERSION {
            return Err(LockError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| LockError::Parse {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Writes the lock whole or not at all (a temporary file renamed), one
    /// package a line so that a review shows what moved.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        crate::fsutil::write_atomic(crate::fsutil::parent_dir(path), path, text.as_bytes()).map_err(
            |source| LockError::Io {
                path: path.to_path_buf(),
                source,
            },
        )
    }

    /// The entry of `image`, when the lock is current for `spec`.
    pub fn image(&self, path: &Path, spec: &Spec, image: &str) -> Result<&LockedImage, LockError> {
        if self.inputs != inputs(spec) {
            return Err(LockError::Stale {
                path: path.to_path_buf(),
            });
        }
        self.images.get(image).ok_or_else(|| LockError::Missing {
            path: path.to_path_buf(),
            image: image.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> (tempfile::TempDir, Spec) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("images.yaml"), yaml).unwrap();
        let s = Spec::load(&d.path().join("images.yaml")).unwrap();
        (d, s)
    }

    #[test]
    fn round_trips_and_goes_stale_with_debian_changes() {
        let yaml = "images:\n  base:\n    from: scratch\n    debian: {suite: trixie, variant: minbase}\n  app:\n    from: base\n    debian: {packages: [curl]}\n";
        let (d, s) = spec(yaml);
        let mut lock = Lock::new(inputs(&s));
        lock.images.insert(
            "app".into(),
            LockedImage {
                inputs: String::new(),
                suite: "trixie".into(),
                codename: "trixie".into(),
                architecture: "amd64".into(),
                release_date: "Sat, 08 Nov 2025 09:12:34 UTC".into(),
                epoch: 1_762_593_154,
                packages: vec![LockedPackage {
                    name: "curl".into(),
                    version: "8.14.1-2".into(),
                    architecture: "amd64".into(),
                    path: "pool/main/c/curl/curl_8.14.1-2_amd64.deb".into(),
                    base: "http://deb.debian.org/debian/".into(),
                    sha256: "ab".repeat(32),
                    size: 269_000,
                }],
            },
        );
        let p = d.path().join(FILE_NAME);
        lock.write(&p).unwrap();
        let back = Lock::read(&p).unwrap().unwrap();
        assert_eq!(back, lock);
        assert_eq!(
            back.image(&p, &s, "app").unwrap().packages[0].url(),
            "http://deb.debian.org/debian/pool/main/c/curl/curl_8.14.1-2_amd64.deb"
        );
        assert!(matches!(
            back.image(&p, &s, "base"),
            Err(LockError::Missing { .. })
        ));
        // A layer or a tag changes nothing; a package does.
        let (_d2, same) = spec(&format!("{yaml}    tags: [x]\n"));
        assert_eq!(inputs(&same), lock.inputs);
        let (_d3, other) = spec(&yaml.replace("[curl]", "[curl, git]"));
        let e = back.image(&p, &other, "app").unwrap_err().to_string();
        assert!(
            e.contains("changed since the lock was written") && e.contains("imgbuild lock"),
            "{e}"
        );
        // Garbage is explained, a missing lock is None.
        std::fs::write(&p, "{}").unwrap();
        assert!(
            Lock::read(&p)
                .unwrap_err()
                .to_string()
                .contains("lock_version 0")
        );
        assert!(Lock::read(&d.path().join("none.lock")).unwrap().is_none());
    }
}
