//! Deterministic layers: walk a tree into sorted entries, then tar, compress
//! and hash them in one streaming pass.
pub mod compress;
pub mod diff;
pub mod import;
pub mod scan;
pub mod statcache;
pub mod tar;
pub mod unpack;

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use compress::{Compression, LayerCompression};
use statcache::StatCache;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {kind} files cannot go into a layer", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{}: changed while the layer was written (expected {expected} bytes, found {actual}); build again", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("writing the layer: {0}{hint}", hint = full_disk_hint(.0))]
    Write(std::io::Error),
    #[error("path pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// What to do when the store's disk is full.
pub fn full_disk_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "; the store's disk is full: free space there, run `imgbuild gc`, or set IMGBUILD_HOME to a larger disk"
    } else {
        ""
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an entry is, with what the tar needs to write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum EntryKind {
    Dir,
    File {
        #[serde(skip)]
        src: PathBuf,
        size: u64,
        sha256: String,
    },
    Symlink {
        target: String,
    },
    /// A second name for a file earlier in the same layer.
    Hardlink {
        target: String,
    },
    /// The path is deleted: an empty `.wh.<name>` file beside where it was.
    Whiteout,
    /// The directory at the path hides everything lower layers put in it:
    /// an empty `.wh..wh..opq` file inside it.
    Opaque,
    /// A named pipe.
    Fifo,
    #[serde(rename = "chardev")]
    CharDevice {
        major: u32,
        minor: u32,
    },
    #[serde(rename = "blockdev")]
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

/// One tar entry, with the metadata it will have in the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path inside the image, no leading `/`, no trailing `/`.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Numeric owner for a layer's entries (names already resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// What a file layer is made from: a source file or tree put at `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayer {
    /// The source file or tree.
    pub src: PathBuf,
    /// Absolute, normalised destination inside the image ("/" for the root).
    pub dest: String,
    /// Owner of everything from `dest` down; the parents of `dest` that the
    /// layer creates are root's, 0755.
    pub ids: Ids,
    /// Permission bits for files; directories get the same with `x` wherever
    /// `r` is set (as `chmod X`). `None`: as git sees it.
    pub mode: Option<u32>,
    /// Patterns left out: without a slash a name at any depth, with one a
    /// path from the source's root.
    pub exclude: Vec<String>,
}

impl FileLayer {
    /// `src` at `dest`, root's, modes from the source, nothing excluded.
    pub fn new(src: impl Into<PathBuf>, dest: impl Into<String>) -> FileLayer {
        FileLayer {
            src: src.into(),
            dest: dest.into(),
            ids: Ids::default(),
            mode: None,
            exclude: Vec::new(),
        }
    }
}

/// The planned content of a file layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entries(pub Vec<Entry>);

impl Entries {
    /// The sum of file sizes, for progress.
    pub fn content_bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// The cache key: a hash of exactly what goes into the tar, plus how it is
    /// compressed and stamped. Where the source lives does not enter it.
    pub fn key(&self, compression: impl Into<LayerCompression>, epoch: i64) -> String {
        let compression = compression.into();
        let mut h = Sha256::new();
        h.update(format!("imgbuild-layer-v1\n{compression}\n{epoch}\n"));
        for e in &self.0 {
            let kind = match &e.kind {
                EntryKind::Dir => "d".to_string(),
                EntryKind::File { size, sha256, .. } => format!("f {size} {sha256}"),
                EntryKind::Symlink { target } => format!("l {target}"),
                EntryKind::Hardlink { target } => format!("h {target}"),
                EntryKind::Whiteout => "w".to_string(),
                EntryKind::Opaque => "o".to_string(),
                EntryKind::Fifo => "p".to_string(),
                EntryKind::CharDevice { major, minor } => format!("c {major} {minor}"),
                EntryKind::BlockDevice { major, minor } => format!("b {major} {minor}"),
            };
            // Paths may hold any byte but NUL; the length prefix keeps
            // records unambiguous even with newlines in names.
            h.update(format!(
                "{} {} {:o} {} {} {}\n",
                e.path.len(),
                e.path,
                e.mode,
                e.uid,
                e.gid,
                kind
            ));
        }
        hex::encode(h.finalize())
    }
}

/// Walks a layer's source into sorted entries, hashing file contents
/// through `cache`, on `threads` threads: the source's top-level entries are
/// walked side by side (a stat per file is most of a no-change build), and
/// files the cache does not know are hashed side by side.
pub fn walk(
    layer: &FileLayer,
    cache: &mut StatCache,
    threads: usize,
) -> Result<Entries, LayerError> {
    let excludes = build_excludes(&layer.exclude);
    let dest = layer.dest.trim_start_matches('/');
    let meta = std::fs::symlink_metadata(&layer.src).map_err(io_err(&layer.src))?;
    let src_is_dir = meta.is_dir();
    let mut w = Walker::new(layer, cache, &excludes);
    // Parent directories of dest (and dest itself when src is a file).
    let mut parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
    let last = if src_is_dir { None } else { parts.pop() };
    let mut prefix = String::new();
    for part in &parts {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if !(src_is_dir && prefix == dest) {
            w.out.push(Entry {
                path: prefix.clone(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
    }
    if src_is_dir {
        if !dest.is_empty() {
            w.push(dest.to_string(), &layer.src, &meta)?;
        }
        let children = sorted_children(&layer.src)?;
        let parts = parallel_map(&children, threads, |child| {
            let mut part = Walker::new(layer, cache, &excludes);
            part.child(child, dest, Path::new(""))?;
            Ok(part)
        });
        for part in parts {
            w.append(part?);
        }
    } else {
        let name = last.unwrap_or_default();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        w.push(path, &layer.src, &meta)?;
    }
    let Walker {
        mut out,
        misses,
        linked,
        ..
    } = w;
    // Second and later names of one inode become hard links to the first.
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for (i, inode) in linked {
        match first.get(&inode) {
            Some(target) => {
                out[i].kind = EntryKind::Hardlink {
                    target: target.clone(),
                }
            }
            None => {
                first.insert(inode, out[i].path.clone());
            }
        }
    }
    // Hash what the cache did not know, all cores at once.
    let misses: Vec<_> = misses
        .into_iter()
        .filter(|(i, _, _)| matches!(out[*i].kind, EntryKind::File { .. }))
        .collect();
    let paths: Vec<&Path> = misses.iter().map(|(_, p, _)| p.as_path()).collect();
    let hashes = statcache::hash_files(&paths, threads);
    for ((i, path, meta), hash) in misses.iter().zip(hashes) {
        let hash = hash.map_err(io_err(path))?;
        cache.record(path, meta, &hash);
        if let EntryKind::File { sha256, .. } = &mut out[*i].kind {
            *sha256 = hash;
        }
    }
    Ok(Entries(out))
}

/// A directory's entries in byte order, independent of locale and of the
/// filesystem's order.
fn sorted_children(dir: &Path) -> Result<Vec<std::fs::DirEntry>, LayerError> {
    let mut children: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    children.sort_by_key(std::fs::DirEntry::file_name);
    Ok(children)
}

/// `f` over `items` on up to `threads` threads, results in item order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn build_excludes(patterns: &[String]) -> (GlobSet, GlobSet) {
    // Patterns without a slash match a name at any depth (as in .gitignore);
    // patterns with one match the path from the source's root.
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for p in patterns {
        let trimmed = p.trim_start_matches('/').trim_end_matches('/');
        let glob = globset::GlobBuilder::new(trimmed)
            .literal_separator(true)
            .build()
            .or_else(|_| Glob::new(trimmed));
        if let Ok(g) = glob {
            if p.trim_end_matches('/').contains('/') {
                paths.add(g);
            } else {
                names.add(g);
            }
        }
    }
    (
        names.build().unwrap_or_else(|_| GlobSet::empty()),
        paths.build().unwrap_or_else(|_| GlobSet::empty()),
    )
}

struct Walker<'a> {
    layer: &'a FileLayer,
    cache: &'a StatCache,
    excludes: &'a (GlobSet, GlobSet),
    out: Vec<Entry>,
    /// Files to hash after the walk: (index in `out`, path, metadata).
    misses: Vec<(usize, PathBuf, std::fs::Metadata)>,
    /// Files with more than one name: (index in `out`, (dev, inode)).
    linked: Vec<(usize, (u64, u64))>,
}

impl<'a> Walker<'a> {
    fn new(
        layer: &'a FileLayer,
        cache: &'a StatCache,
        excludes: &'a (GlobSet, GlobSet),
    ) -> Walker<'a> {
        Walker {
            layer,
            cache,
            excludes,
            out: Vec::new(),
            misses: Vec::new(),
            linked: Vec::new(),
        }
    }

    /// Appends a walk of later entries, keeping its indices right.
    fn append(&mut self, other: Walker<'_>) {
        let base = self.out.len();
        self.out.extend(other.out);
        self.misses
            .extend(other.misses.into_iter().map(|(i, p, m)| (i + base, p, m)));
        self.linked
            .extend(other.linked.into_iter().map(|(i, k)| (i + base, k)));
    }

    fn dir(&mut self, abs: &Path, prefix: &str, rel: &Path) -> Result<(), LayerError> {
        for entry in sorted_children(abs)? {
            self.child(&entry, prefix, rel)?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        entry: &std::fs::DirEntry,
        prefix: &str,
        rel: &Path,
    ) -> Result<(), LayerError> {
        let name = entry.file_name();
        let rel = rel.join(&name);
        if self.excludes.0.is_match(Path::new(&name)) || self.excludes.1.is_match(&rel) {
            return Ok(());
        }
        let child = entry.path();
        // lstat relative to the directory (fstatat), not by full path.
        let meta = entry.metadata().map_err(io_err(&child))?;
        let name = name.to_string_lossy();
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        self.push(path.clone(), &child, &meta)?;
        if meta.is_dir() {
            self.dir(&child, &path, &rel)?;
        }
        Ok(())
    }

    fn push(
        &mut self,
        path: String,
        abs: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), LayerError> {
        let ft = meta.file_type();
        let Ids { uid, gid } = self.layer.ids;
        let (kind, mode) = if ft.is_dir() {
            let mode = match self.layer.mode {
                Some(m) => dir_mode(m),
                None => 0o755,
            };
            (EntryKind::Dir, mode)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(abs).map_err(io_err(abs))?;
            (
                EntryKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                },
                0o777,
            )
        } else if ft.is_file() {
            let mode = match self.layer.mode {
                Some(m) => m,
                // As git sees it: the owner's execute bit decides.
                None if meta.mode() & 0o100 != 0 => 0o755,
                None => 0o644,
            };
            if meta.nlink() > 1 {
                self.linked.push((self.out.len(), (meta.dev(), meta.ino())));
            }
            let sha256 = match self.cache.lookup(abs, meta) {
                Some(h) => h,
                None => {
                    self.misses
                        .push((self.out.len(), abs.to_path_buf(), meta.clone()));
                    String::new()
                }
            };
            (
                EntryKind::File {
                    src: abs.to_path_buf(),
                    size: meta.len(),
                    sha256,
                },
                mode,
            )
        } else {
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "fifo (named pipe)"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_block_device() {
                "block device"
            } else {
                "unknown type of"
            };
            return Err(LayerError::Unsupported {
                path: abs.to_path_buf(),
                kind,
            });
        };
        self.out.push(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
        });
        Ok(())
    }
}

/// A file mode made fit for directories: `x` wherever `r` is set.
fn dir_mode(m: u32) -> u32 {
    let perms = m & 0o777;
    perms | ((perms & 0o444) >> 2) | (m & 0o7000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("b/sub")).unwrap();
        std::fs::write(r.join("b/sub/x.php"), "<?php").unwrap();
        std::fs::write(r.join("a.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(r.join("a.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(r.join("c.txt"), "c").unwrap();
        std::fs::set_permissions(r.join("c.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::hard_link(r.join("c.txt"), r.join("d.txt")).unwrap();
        std::os::unix::fs::symlink("c.txt", r.join("e")).unwrap();
        std::fs::create_dir(r.join("node_modules")).unwrap();
        std::fs::write(r.join("node_modules/x"), "x").unwrap();
        d
    }

    #[test]
    fn walk_sorts_normalises_and_links() {
        let d = sample();
        let mut s = FileLayer::new(d.path(), "/var/www");
        s.exclude = vec!["node_modules".into()];
        s.ids = Ids { uid: 33, gid: 33 };
        let e = walk(&s, &mut StatCache::default(), 1).unwrap();
        let summary: Vec<String> =
            e.0.iter()
                .map(|e| format!("{} {:o} {}", e.path, e.mode, e.uid))
                .collect();
        assert_eq!(
            summary,
            [
                "var 755 0",
                "var/www 755 33",
                "var/www/a.sh 755 33",
                "var/www/b 755 33",
                "var/www/b/sub 755 33",
                "var/www/b/sub/x.php 644 33",
                "var/www/c.txt 644 33",
                "var/www/d.txt 644 33",
                "var/www/e 777 33",
            ]
        );
        assert_eq!(
            e.0[7].kind,
            EntryKind::Hardlink {
                target: "var/www/c.txt".into()
            }
        );
    }

    #[test]
    fn key_ignores_location_and_times_but_not_content_or_mode() {
        let d1 = sample();
        let d2 = sample();
        let k = |d: &Path, mode: Option<u32>| {
            let mut s = FileLayer::new(d, "/");
            s.mode = mode;
            walk(&s, &mut StatCache::default(), 1)
                .unwrap()
                .key(Compression::Gzip, 0)
        };
        assert_eq!(k(d1.path(), None), k(d2.path(), None));
        assert_ne!(k(d1.path(), None), k(d1.path(), Some(0o640)));
        std::fs::write(d2.path().join("c.txt"), "C").unwrap();
        assert_ne!(k(d1.path(), None), k(d2.path(), None));
    }

    #[test]
    fn single_file_and_modes() {
        let d = sample();
        let mut s = FileLayer::new(d.path().join("c.txt"), "/etc/app/c.conf");
        s.mode = Some(0o640);
        let e = walk(&s, &mut StatCache::default(), 1).unwrap();
        let paths: Vec<_> = e.0.iter().map(|e| (e.path.as_str(), e.mode)).collect();
        assert_eq!(
            paths,
            [
                ("etc", 0o755),
                ("etc/app", 0o755),
                ("etc/app/c.conf", 0o640)
            ]
        );
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o604), 0o705);
    }

    #[test]
    fn sockets_are_refused_with_their_path() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = walk(&FileLayer::new(d.path(), "/"), &mut StatCache::default(), 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("s.sock: socket files cannot go into a layer"),
            "{err}"
        );
    }
}

/// A written layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:…` of the compressed bytes.
    pub digest: String,
    /// `sha256:…` of the tar.
    pub diff_id: String,
    pub size: u64,
}

/// Writes to `inner`, and the same bytes to `copy` while it takes them.
struct Tee<W> {
    inner: W,
    copy: Option<Box<dyn std::io::Write + Send>>,
}

impl<W: std::io::Write> std::io::Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(c) = &mut self.copy
            && c.write_all(&buf[..n]).is_err()
        {
            self.copy = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How [`write_blob`] writes a layer.
pub struct BlobOptions {
    /// The time stamped on every entry.
    pub epoch: i64,
    pub compression: LayerCompression,
    /// Compression worker threads.
    pub threads: usize,
    /// Also given the uncompressed tar stream as it is written (to unpack
    /// it elsewhere at the same time). A failing `copy` is dropped without
    /// failing the blob; its reader sees the stream end.
    pub copy: Option<Box<dyn std::io::Write + Send>>,
}

/// Writes `entries` as a compressed layer into `sink` in one streaming pass:
/// tar → sha256 (diff_id) → parallel compression → sha256 (digest) → sink.
/// Memory is bounded by the compressor's blocks in flight, not layer size.
pub fn write_blob<W: std::io::Write + Send + 'static>(
    entries: &Entries,
    opts: BlobOptions,
    sink: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Blob), LayerError> {
    let BlobOptions {
        epoch,
        compression,
        threads,
        copy,
    } = opts;
    use crate::digest::HashingWriter;
    let compressed = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, sink));
    let compressor = compress::Compressor::with_level(
        compressed,
        compression.algorithm,
        threads,
        compression.level,
    );
    let tee = Tee {
        inner: compressor,
        copy,
    };
    // Larger writes into the hasher and compressor than tar's 8 KiB copies.
    let tar_hash = HashingWriter::new(tee);
    let buffered = std::io::BufWriter::with_capacity(256 * 1024, tar_hash);
    let buffered = tar::write(entries, epoch, buffered, progress)?;
    let tar_hash = buffered
        .into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    let (tee, diff_hex, _) = tar_hash.finish();
    let compressed = tee.inner.finish().map_err(LayerError::Write)?;
    let (sink, digest_hex, size) = compressed.finish();
    let sink = sink
        .into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    Ok((
        sink,
        Blob {
            digest: format!("sha256:{digest_hex}"),
            diff_id: format!("sha256:{diff_hex}"),
            size,
        },
    ))
}
