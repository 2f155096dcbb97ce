//! `archive:` sources: downloaded (the crate's one retry policy), checked
//! against their SHA256, and extracted into `sources/archive/<sha256>`.
//!
//! The format is told by the first bytes, not the name: gzip or xz around
//! a tar, or zip. Extraction refuses, naming the entry, anything that would
//! write outside the tree: absolute paths, `..`, links whose target leaves
//! the tree, devices. Modes keep the owner's bits and the read and execute
//! bits of group and others (never write, setuid or sticky), so a tree is
//! the same on every machine.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{SourceError, Token, commit_tree};
use crate::retry::{self, Retry};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    TarXz,
    Zip,
}

impl ArchiveKind {
    /// The format of a file that starts with `magic`.
    pub fn sniff(magic: &[u8]) -> Option<ArchiveKind> {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Some(ArchiveKind::TarGz)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(ArchiveKind::TarXz)
        } else if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
            Some(ArchiveKind::Zip)
        } else {
            None
        }
    }
}

/// `sources/archive/<sha256>`, when it is there already.
pub(super) fn cached(store: &Store, sha256: &str) -> Option<PathBuf> {
    let dest = store.sources_dir().join("archive").join(sha256);
    dest.is_dir().then_some(dest)
}

/// `sources/archive/<sha256>`: downloaded, verified and extracted once.
pub(super) fn fetch(
    store: &Store,
    url: &str,
    sha256: &str,
    token: Option<Token<'_>>,
) -> Result<PathBuf, SourceError> {
    let dest = store.sources_dir().join("archive").join(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    let shown = crate::build::strip_credentials(url);
    let mut file = store.temp_file()?;
    let actual = download(url, &shown, file.as_file_mut(), token)?;
    if actual != sha256 {
        return Err(SourceError::Sha256 {
            url: shown,
            expected: sha256.to_string(),
            actual,
        });
    }
    let tmp = store.temp_dir("archive-")?;
    extract(file.as_file_mut(), &shown, tmp.path())?;
    commit_tree(tmp, &dest)?;
    Ok(dest)
}

/// Downloads `url` into `out` and returns the sha256 of what it wrote.
fn download(
    url: &str,
    shown: &str,
    out: &mut std::fs::File,
    token: Option<Token<'_>>,
) -> Result<String, SourceError> {
    let http_err = |e: &reqwest::Error| SourceError::Http {
        url: shown.to_string(),
        reason: crate::registry::client::describe(e),
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| http_err(&e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SourceError::Io {
            path: PathBuf::from(shown),
            source,
        })?;
    let header = token.map(|t| t.header());
    let io = |source| SourceError::Io {
        path: PathBuf::from(shown),
        source,
    };
    rt.block_on(Retry::default().run(|| {
        let http = &http;
        let header = header.clone();
        let mut out = &*out;
        async move {
            out.set_len(0).map_err(io)?;
            out.seek(SeekFrom::Start(0)).map_err(io)?;
            let mut req = http.get(url);
            if let Some(h) = header {
                let mut v = reqwest::header::HeaderValue::from_str(&h).map_err(|_| {
                    SourceError::NoToken {
                        name: "token".into(),
                    }
                })?;
                v.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, v);
            }
            let again = |e: reqwest::Error| {
                if retry::transient_error(&e) {
                    retry::Failure::again(http_err(&e))
                } else {
                    retry::Failure::Fatal(http_err(&e))
                }
            };
            let mut resp = req.send().await.map_err(again)?;
            let status = resp.status();
            if !status.is_success() {
                let error = SourceError::Status {
                    url: shown.to_string(),
                    status: status.as_u16(),
                };
                return Err(if retry::transient_status(status) {
                    retry::Failure::Transient {
                        error,
                        wait: retry::retry_after(&resp),
                    }
                } else {
                    retry::Failure::Fatal(error)
                });
            }
            let mut hasher = Sha256::new();
            while let Some(chunk) = resp.chunk().await.map_err(again)? {
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(io)?;
            }
            out.flush().map_err(io)?;
            Ok(hex::encode(hasher.finalize()))
        }
    }))
}

/// Extracts the archive in `file` into `root`, refusing hostile entries.
pub(super) fn extract(file: &mut std::fs::File, url: &str, root: &Path) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: PathBuf::from(url),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut magic = [0u8; 6];
    let n = file.read(&mut magic).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let corrupt = |e: &dyn std::fmt::Display| SourceError::Corrupt {
        url: url.to_string(),
        reason: e.to_string(),
    };
    match ArchiveKind::sniff(&magic[..n]) {
        Some(ArchiveKind::TarGz) => {
            extract_tar(flate2::read::GzDecoder::new(&*file), url, root, &corrupt)
        }
        Some(ArchiveKind::TarXz) => {
            extract_tar(liblzma::read::XzDecoder::new(&*file), url, root, &corrupt)
        }
        Some(ArchiveKind::Zip) => extract_zip(file, url, root, &corrupt),
        None => Err(SourceError::Format {
            url: url.to_string(),
            magic: hex::encode(&magic[..n]),
        }),
    }
}

type Corrupt<'c> = dyn Fn(&dyn std::fmt::Display) -> SourceError + 'c;

/// `name` as a relative path inside the tree, or why not.
fn inside(name: &str) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a link at `at` (relative) pointing to `target` stays inside.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = at.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Refuses an entry whose parent directories include a link made by an
/// earlier entry: writing through it could land outside the tree.
fn through_link(root: &Path, rel: &Path) -> bool {
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

fn file_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o600
}

fn dir_mode(mode: u32) -> u32 {
    (mode & 0o755) | 0o700
}

fn extract_tar(
    reader: impl Read,
    url: &str,
    root: &Path,
    corrupt: &Corrupt<'_>,
) -> Result<(), SourceError> {
    let mut ar = tar::Archive::new(reader);
    let hostile = |entry: &str, why| SourceError::Hostile {
        url: url.to_string(),
        entry: entry.to_string(),
        why,
    };
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in ar.entries().map_err(|e| corrupt(&e))? {
        let mut entry = entry.map_err(|e| corrupt(&e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = inside(&name).map_err(|why| hostile(&name, why))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if through_link(root, &rel) {
            return Err(hostile(&name, "is written through a link"));
        }
        let path = root.join(&rel);
        let mode = entry.header().mode().unwrap_or(0o644);
        let kind = entry.header().entry_type();
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&path).map_err(io)?;
                dirs.push((path.clone(), dir_mode(mode)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let _ = std::fs::remove_file(&path);
                let mut out = std::fs::File::create(&path).map_err(io)?;
                std::io::copy(&mut entry, &mut out).map_err(|e| corrupt(&e))?;
                set_mode(&path, file_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(&e))?
                    .ok_or_else(|| corrupt(&format!("symlink {name} has no target")))?
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    return Err(hostile(&name, "is a link that leaves the tree"));
                }
                let _ = std::fs::remove_file(&path);
                std::os::unix::fs::symlink(&target, &path).map_err(io)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(&e))?
                    .ok_or_else(|| corrupt(&format!("hard link {name} has no target")))?
                    .into_owned();
                let target = inside(&target.to_string_lossy())
                    .map_err(|_| hostile(&name, "is a hard link to outside the tree"))?;
                let _ = std::fs::remove_file(&path);
                std::fs::hard_link(root.join(target), &path).map_err(io)?;
            }
            // Metadata the tar reader has already applied.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {}
            _ => return Err(hostile(&name, "is not a file, directory or link")),
        }
    }
    // Modes of directories last: a read-only one would stop its entries.
    for (path, mode) in dirs.into_iter().rev() {
        set_mode(&path, mode)?;
    }
    Ok(())
}

fn extract_zip(
    file: &mut std::fs::File,
    url: &str,
    root: &Path,
    corrupt: &Corrupt<'_>,
) -> Result<(), SourceError> {
    let mut zip = zip::ZipArchive::new(&mut *file).map_err(|e| corrupt(&e))?;
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| corrupt(&e))?;
        let name = entry.name().map_err(|e| corrupt(&e))?.into_owned();
        let hostile = |why| SourceError::Hostile {
            url: url.to_string(),
            entry: name.clone(),
            why,
        };
        let rel = inside(&name).map_err(hostile)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if through_link(root, &rel) {
            return Err(hostile("is written through a link"));
        }
        let path = root.join(&rel);
        let io = |source| SourceError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(io)?;
            dirs.push((path.clone(), dir_mode(mode)));
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry.read_to_string(&mut target).map_err(|e| corrupt(&e))?;
            if !link_stays_inside(&rel, Path::new(&target)) {
                return Err(hostile("is a link that leaves the tree"));
            }
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(&target, &path).map_err(io)?;
        } else {
            let _ = std::fs::remove_file(&path);
            let mut out = std::fs::File::create(&path).map_err(io)?;
            std::io::copy(&mut entry, &mut out).map_err(|e| corrupt(&e))?;
            set_mode(&path, file_mode(mode))?;
        }
    }
    for (path, mode) in dirs.into_iter().rev() {
        set_mode(&path, mode)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SourceError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        SourceError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links_must_stay_inside() {
        assert_eq!(inside("./a/b").unwrap(), PathBuf::from("a/b"));
        assert!(inside("a/../../b").is_err());
        assert!(inside("/etc/passwd").is_err());
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/etc")));
    }

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(
            ArchiveKind::sniff(&[0x1f, 0x8b, 8]),
            Some(ArchiveKind::TarGz)
        );
        assert_eq!(
            ArchiveKind::sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Some(ArchiveKind::TarXz)
        );
        assert_eq!(ArchiveKind::sniff(b"PK\x03\x04"), Some(ArchiveKind::Zip));
        assert_eq!(ArchiveKind::sniff(b"<html>"), None);
    }
}
