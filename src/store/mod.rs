//! The local content-addressed store under `$IMGBUILD_HOME`.
//!
//! ```text
//! blobs/sha256/<hex>        layer, config and manifest blobs (OCI layout style)
//! layers/<key>.json         a built layer: its digests and size, by cache key
//! entries/<key>.json        what went into that layer, for `plan`'s "what changed"
//! images/<key>.json         an assembled image, by image key
//! meta/<hex>.json           facts read out of a layer blob (its /etc/passwd)
//! pulled/<hash>.json        images pulled from registries, by reference
//! tested/<key>.json         images that passed their `test:`, by manifest and tests
//! refs/<graph>/<name>.json  the last build of each image of each images.yaml
//! refs/<graph>/images.yaml.path  that images.yaml, so gc can tell it is gone
//! statcache/<hash>.json     source file hashes by stat (see layer::statcache)
//! rootfs/<chain>            an unpacked chain of layers, for steps and tests
//! rootfs/<chain>.layers     the blobs of that chain, so gc drops it with them
//! debian/indexes/<sha256>   verified Debian archive indexes (see debian::fetch)
//! debian/debs/sha256/       verified .deb packages, by their sha256
//! sources/git/<hash>        a bare git repository per `git:` URL (sha256 of the URL, 16 hex)
//! sources/tree/<commit>     one commit's tree, exported (see crate::source)
//! sources/archive/<sha256>  an `archive:` source, verified and extracted
//! tmp/<pid>-<start>-<n>/    one process's temporary names, renamed into
//!                           place when complete; its `lock` is held while
//!                           the process lives
//! lock                      shared by builds, exclusive for gc
//! ```
//! Every file is written under a temporary name and renamed, blobs after an
//! fsync, and records only after the blobs they name, so a kill at any point
//! leaves either the old state or the new one. What a killed process leaves
//! in `tmp/` is removed by the next process that opens the store: a
//! directory whose `lock` nobody holds belongs to no living process.
use std::collections::BTreeSet;
use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("blob sha256:{digest} is not in the store at {}; build again, or run `imgbuild gc` if the store was edited by hand", root.display())]
    MissingBlob { root: PathBuf, digest: String },
    #[error("store record {} is damaged ({reason}); delete it and build again", path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("no home for the store: set IMGBUILD_HOME, XDG_CACHE_HOME or HOME")]
    NoHome,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which record directory.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Layers,
    Entries,
    Images,
    /// Facts read out of a layer blob (its /etc/passwd, …), by digest.
    Meta,
    /// Images pulled from registries, by reference.
    Pulled,
    /// Images that passed their smoke tests, by manifest and tests.
    Tested,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Layers => "layers",
            Kind::Entries => "entries",
            Kind::Images => "images",
            Kind::Meta => "meta",
            Kind::Pulled => "pulled",
            Kind::Tested => "tested",
        }
    }
}

pub struct Store {
    root: PathBuf,
    // Dropped (removed) before the store's lock is released.
    tmp: OwnTmp,
    // Held for the store's lifetime: shared by builds, exclusive for gc.
    _lock: File,
    swept: Swept,
}

/// This process's directory under `tmp/`, with its `lock` held for as long
/// as the store is open; removed on drop.
struct OwnTmp {
    dir: PathBuf,
    _lock: File,
}

impl Drop for OwnTmp {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.dir);
    }
}

/// Temporary files of dead processes, removed when the store was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Directories (one per dead process) or stray files.
    pub temps_removed: u64,
    pub temp_bytes_removed: u64,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcStats {
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub records_removed: u64,
    /// Unpacked root filesystems whose layers are gone.
    pub rootfs_removed: u64,
    /// Left in `tmp/` by processes that were killed.
    pub temps_removed: u64,
    pub temp_bytes_removed: u64,
    pub blobs_kept: u64,
    pub bytes_kept: u64,
}

impl Store {
    /// `$IMGBUILD_HOME`, else `$XDG_CACHE_HOME/imgbuild`, else `~/.cache/imgbuild`.
    pub fn default_root() -> Result<PathBuf, StoreError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(h) = env(crate::env::IMGBUILD_HOME) {
            return Ok(h);
        }
        if let Some(x) = env(crate::env::XDG_CACHE_HOME) {
            return Ok(x.join("imgbuild"));
        }
        env(crate::env::HOME)
            .map(|h| h.join(".cache/imgbuild"))
            .ok_or(StoreError::NoHome)
    }

    /// Opens (creating) the store for building: a shared lock.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, false)
    }

    /// Opens the store alone, waiting for running builds to finish.
    pub fn open_exclusive(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, true)
    }

    fn open_with(root: &Path, exclusive: bool) -> Result<Store, StoreError> {
        for d in [
            "blobs/sha256",
            "layers",
            "entries",
            "images",
            "meta",
            "pulled",
            "refs",
            "tested",
            "statcache",
            "tmp",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        if exclusive {
            lock.lock().map_err(io_at(&lock_path))?;
        } else {
            lock.lock_shared().map_err(io_at(&lock_path))?;
        }
        let tmp = root.join("tmp");
        let swept = sweep_dead(&tmp)?;
        let own = own_tmp(&tmp)?;
        Ok(Store {
            root: root.to_path_buf(),
            tmp: own,
            _lock: lock,
            swept,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What opening the store removed from `tmp/`: the leftovers of killed
    /// processes.
    pub fn swept(&self) -> Swept {
        self.swept
    }

    /// This process's own directory under `tmp/` for temporary files and
    /// directories, on the same filesystem as what they are renamed to;
    /// removed when the store is dropped, and by the next process to open
    /// the store if this one is killed.
    pub fn tmp_dir(&self) -> PathBuf {
        self.tmp.dir.clone()
    }

    /// `rootfs/`: unpacked chains of layers, each beside its `.layers` list.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// `rootfs/<chain>`: the tree of one chain of layers.
    pub fn rootfs_tree(&self, chain: &str) -> PathBuf {
        self.rootfs_dir().join(chain)
    }

    /// `debian/`: the Debian archive's indexes and packages, verified.
    pub fn debian_cache_dir(&self) -> PathBuf {
        self.root.join("debian")
    }

    /// `sources/`: fetched `sources:` (git caches, exported trees,
    /// extracted archives). Kept by `gc`; delete it to reclaim the space.
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    pub fn has_blob(&self, hex: &str) -> bool {
        self.blob_path(hex).is_file()
    }

    pub fn blob_size(&self, hex: &str) -> Option<u64> {
        fs::metadata(self.blob_path(hex)).ok().map(|m| m.len())
    }

    pub fn read_blob(&self, hex: &str) -> Result<Vec<u8>, StoreError> {
        fs::read(self.blob_path(hex)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob {
                root: self.root.clone(),
                digest: hex.to_string(),
            },
            _ => StoreError::Io {
                path: self.blob_path(hex),
                source: e,
            },
        })
    }

    /// Stores `bytes` under their sha256 and returns the hex digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let hex = crate::digest::sha256_hex(bytes);
        if !self.has_blob(&hex) {
            let mut w = self.temp_file()?;
            w.write_all(bytes).map_err(io_at(w.path()))?;
            self.commit_blob(w, &hex)?;
        }
        Ok(hex)
    }

    /// A temporary file on the store's filesystem, removed unless committed;
    /// 0666 less the umask, so that outputs can hard-link the blob it becomes.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(io_at(&dir))
    }

    /// A directory under the store's `tmp/` (same filesystem as what it
    /// will be renamed to), removed on drop.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, StoreError> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&dir)
            .map_err(io_at(&dir))
    }

    /// Moves a completely written temporary file into place as blob `hex`.
    /// The caller computed `hex` over exactly the bytes it wrote.
    pub fn commit_blob(&self, tmp: tempfile::NamedTempFile, hex: &str) -> Result<(), StoreError> {
        let dest = self.blob_path(hex);
        tmp.as_file().sync_all().map_err(io_at(tmp.path()))?;
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            path: dest,
            source: e.error,
        })?;
        Ok(())
    }

    fn record_path(&self, kind: Kind, key: &str) -> PathBuf {
        self.root.join(kind.dir()).join(format!("{key}.json"))
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>, StoreError> {
        read_json(&self.record_path(kind, key))
    }

    pub fn put<T: Serialize>(&self, kind: Kind, key: &str, value: &T) -> Result<(), StoreError> {
        write_json(&self.tmp_dir(), &self.record_path(kind, key), value)
    }

    fn ref_dir(&self, graph: &str) -> PathBuf {
        self.root.join("refs").join(graph)
    }

    /// The last build of `name` in the graph with id `graph`.
    pub fn get_ref<T: DeserializeOwned>(
        &self,
        graph: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        read_json(&self.ref_dir(graph).join(format!("{name}.json")))
    }

    /// Records the last build of `name`; `file` is the graph's images.yaml,
    /// so gc can drop refs of graphs that no longer exist.
    pub fn put_ref<T: Serialize>(
        &self,
        graph: &str,
        file: &Path,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let dir = self.ref_dir(graph);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let origin = dir.join("images.yaml.path");
        if !origin.exists() {
            write_atomic(
                &self.tmp_dir(),
                &origin,
                file.as_os_str().as_encoded_bytes(),
            )?;
        }
        write_json(&self.tmp_dir(), &dir.join(format!("{name}.json")), value)
    }

    pub fn statcache_path(&self, src: &Path) -> PathBuf {
        let id = crate::digest::sha256_hex(src.as_os_str().as_encoded_bytes());
        self.root
            .join("statcache")
            .join(format!("{}.json", &id[..32]))
    }

    /// Removes every blob not reachable from a ref, the records that name
    /// removed blobs, refs of graphs whose images.yaml is gone or no longer
    /// names the image, and temporary files. `reachable` lists the blobs a
    /// ref value names; `names` lists the images an images.yaml defines
    /// (None when it cannot be read: then all its refs are kept).
    pub fn gc<T: DeserializeOwned>(
        &self,
        reachable: impl Fn(&T) -> Vec<String>,
        names: impl Fn(&Path) -> Option<BTreeSet<String>>,
    ) -> Result<GcStats, StoreError> {
        let mut keep: BTreeSet<String> = BTreeSet::new();
        // What opening the store swept counts as gc's work.
        let mut stats = GcStats {
            temps_removed: self.swept.temps_removed,
            temp_bytes_removed: self.swept.temp_bytes_removed,
            ..GcStats::default()
        };
        let refs = self.root.join("refs");
        for graph in read_dir_names(&refs)? {
            let dir = refs.join(&graph);
            let origin = fs::read(dir.join("images.yaml.path"))
                .ok()
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o).into_owned()));
            let Some(origin) = origin.filter(|o| o.exists()) else {
                fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
                continue;
            };
            let defined = names(&origin);
            for file in read_dir_names(&dir)? {
                let Some(image) = file.strip_suffix(".json") else {
                    continue;
                };
                let path = dir.join(&file);
                if defined.as_ref().is_some_and(|d| !d.contains(image)) {
                    fs::remove_file(&path).map_err(io_at(&path))?;
                    continue;
                }
                if let Some(value) = read_json::<T>(&path).ok().flatten() {
                    keep.extend(reachable(&value));
                }
            }
        }
        // Pulled images stay, so builds on them go on offline.
        let pulled = self.root.join(Kind::Pulled.dir());
        for name in read_dir_names(&pulled)? {
            if let Some(v) = read_json::<serde_json::Value>(&pulled.join(name))
                .ok()
                .flatten()
            {
                let mut blobs = Vec::new();
                blob_fields(&v, &mut blobs);
                keep.extend(blobs);
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for hex in read_dir_names(&blobs)? {
            let p = blobs.join(&hex);
            let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if keep.contains(&hex) {
                stats.blobs_kept += 1;
                stats.bytes_kept += size;
            } else {
                fs::remove_file(&p).map_err(io_at(&p))?;
                stats.blobs_removed += 1;
                stats.bytes_removed += size;
            }
        }
        // Records are kept only while every blob they name is.
        for kind in [
            Kind::Layers,
            Kind::Images,
            Kind::Meta,
            Kind::Pulled,
            Kind::Tested,
        ] {
            let dir = self.root.join(kind.dir());
            for name in read_dir_names(&dir)? {
                let p = dir.join(&name);
                let value: Option<serde_json::Value> = read_json(&p).ok().flatten();
                let names_missing = value.as_ref().is_none_or(|v| {
                    let mut blobs = Vec::new();
                    blob_fields(v, &mut blobs);
                    blobs.iter().any(|h| !self.has_blob(h))
                });
                if names_missing {
                    fs::remove_file(&p).map_err(io_at(&p))?;
                    stats.records_removed += 1;
                    if let Kind::Layers = kind {
                        let _ = fs::remove_file(
                            self.record_path(Kind::Entries, name.trim_end_matches(".json")),
                        );
                    }
                }
            }
        }
        // Unpacked root filesystems stay while all their layers do.
        let rootfs = self.rootfs_dir();
        for name in read_dir_names(&rootfs)? {
            let p = rootfs.join(&name);
            let list = match name.strip_suffix(".layers") {
                Some(_) => continue,
                None => rootfs.join(format!("{name}.layers")),
            };
            let whole =
                fs::read_to_string(&list).is_ok_and(|l| l.lines().all(|hex| self.has_blob(hex)));
            if !whole {
                crate::fsutil::remove_tree(&p).map_err(io_at(&p))?;
                let _ = fs::remove_file(&list);
                stats.rootfs_removed += 1;
            }
        }
        // Left by processes that were killed, or by imgbuild versions that
        // wrote straight into tmp/ (gc holds the store alone: only its own
        // directory is in use).
        let tmp = self.root.join("tmp");
        for name in read_dir_names(&tmp)? {
            let p = tmp.join(&name);
            if p == self.tmp.dir {
                continue;
            }
            let size = tree_size(&p);
            if remove_any(&p).is_ok() {
                stats.temps_removed += 1;
                stats.temp_bytes_removed += size;
            }
        }
        Ok(stats)
    }
}

/// Whether `name` is a process's directory under `tmp/`: `<pid>-<start>-<n>`.
fn is_process_dir(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the directories under `tmp/` of processes that are gone: their
/// `lock` can be taken. Others' entries (an older imgbuild's, or one being
/// made, still named `.new-…`) are left to `gc`.
fn sweep_dead(tmp: &Path) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    for name in read_dir_names(tmp)? {
        if !is_process_dir(&name) {
            continue;
        }
        let dir = tmp.join(&name);
        let lock_path = dir.join("lock");
        // Held while its directory is removed, so no one else sweeps it too.
        let _held = match File::open(&lock_path) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Some(f),
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
            },
            // Only a directory being removed has a final name and no lock:
            // its owner got the lock before giving it that name.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&lock_path)(e)),
        };
        let size = tree_size(&dir);
        match crate::fsutil::remove_tree(&dir) {
            Ok(()) => {
                swept.temps_removed += 1;
                swept.temp_bytes_removed += size;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Ok(swept)
}

/// Makes this process's directory under `tmp/`, locked before it gets its
/// final name, so that a sweep never sees it unlocked while it lives.
fn own_tmp(tmp: &Path) -> Result<OwnTmp, StoreError> {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{}-{}-{n}", std::process::id(), process_start());
    let making = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(tmp)
        .map_err(io_at(tmp))?;
    let lock_path = making.path().join("lock");
    let lock = File::options()
        .create_new(true)
        .write(true)
        .open(&lock_path)
        .map_err(io_at(&lock_path))?;
    lock.lock().map_err(io_at(&lock_path))?;
    let dir = tmp.join(name);
    // A dead namesake (a pid and start time seen again after a reboot) was
    // swept just before; whatever is left of it goes now.
    if fs::symlink_metadata(&dir).is_ok() {
        remove_any(&dir).map_err(io_at(&dir))?;
    }
    fs::rename(making.path(), &dir).map_err(io_at(&dir))?;
    // Renamed away: nothing left for the TempDir to remove.
    let _ = making.keep();
    Ok(OwnTmp { dir, _lock: lock })
}

/// When this process started, in clock ticks since boot (Linux's
/// /proc/self/stat field 22); with the pid, it names the process uniquely.
fn process_start() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces: count after it.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The bytes of the files under `path` (or of the file), as far as it can
/// be read.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| tree_size(&e.path()))
            .sum()
    })
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => crate::fsutil::remove_tree(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// The blobs a record names: by convention, the `sha256:` strings under
/// keys `digest`, `manifest` and `config` (a `diff_id` is not a blob).
fn blob_fields(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("digest" | "manifest" | "config", Some(s)) => {
                        if let Some(h) = s.strip_prefix("sha256:") {
                            out.push(h.to_string());
                        }
                    }
                    _ => blob_fields(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| blob_fields(i, out)),
        _ => {}
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(io_at(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_at(dir))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::BadRecord {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn write_json<T: Serialize>(tmp_dir: &Path, path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::BadRecord {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(tmp_dir, path, &bytes)
}

fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::fsutil::write_atomic(tmp_dir, path, bytes).map_err(io_at(path))
}

/// A stable id for a graph file: the hash of its absolute path.
pub fn graph_id(file: &Path) -> String {
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    crate::digest::sha256_hex(abs.as_os_str().as_encoded_bytes())[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_content_addressed_and_gc_keeps_reachable() {
        let d = tempfile::tempdir().unwrap();
        let graph = d.path().join("images.yaml");
        fs::write(&graph, "").unwrap();
        let s = Store::open(d.path()).unwrap();
        let a = s.put_blob(b"a").unwrap();
        let b = s.put_blob(b"b").unwrap();
        assert_eq!(s.read_blob(&a).unwrap(), b"a");
        s.put(
            Kind::Layers,
            "k1",
            &serde_json::json!({"digest": format!("sha256:{b}"), "diff_id": "sha256:00"}),
        )
        .unwrap();
        s.put(
            Kind::Layers,
            "k2",
            &serde_json::json!({"digest": format!("sha256:{a}"), "diff_id": "sha256:00"}),
        )
        .unwrap();
        s.put_ref("g", &graph, "img", &vec![a.clone()]).unwrap();
        drop(s);
        let s = Store::open_exclusive(d.path()).unwrap();
        let all = |_: &Path| None;
        let stats = s.gc(|v: &Vec<String>| v.clone(), all).unwrap();
        assert_eq!((stats.blobs_removed, stats.blobs_kept), (1, 1));
        assert_eq!(
            stats.records_removed, 1,
            "the record naming the removed blob goes too"
        );
        assert!(s.has_blob(&a) && !s.has_blob(&b));
        assert!(
            s.get::<serde_json::Value>(Kind::Layers, "k1")
                .unwrap()
                .is_none()
        );
        assert!(
            s.get::<serde_json::Value>(Kind::Layers, "k2")
                .unwrap()
                .is_some()
        );
        // An image no longer in its images.yaml stops protecting its blobs.
        let c = s.put_blob(b"c").unwrap();
        s.put_ref("g", &graph, "gone", &vec![c.clone()]).unwrap();
        let only_img = |_: &Path| Some(BTreeSet::from(["img".to_string()]));
        s.gc(|v: &Vec<String>| v.clone(), only_img).unwrap();
        assert!(!s.has_blob(&c) && s.has_blob(&a));
        // A graph that no longer exists stops protecting its blobs.
        fs::remove_file(&graph).unwrap();
        let stats = s.gc(|v: &Vec<String>| v.clone(), all).unwrap();
        assert_eq!(stats.blobs_removed, 1);
    }

    #[test]
    fn temporary_files_of_dead_processes_are_swept_and_the_living_kept() {
        let d = tempfile::tempdir().unwrap();
        let first = Store::open(d.path()).unwrap();
        let living = first.tmp_dir();
        fs::write(living.join("partial"), vec![0u8; 1000]).unwrap();
        // What a killed process leaves: its directory, its unheld lock and a
        // partial file; and what an older imgbuild left straight in tmp/.
        let tmp = d.path().join("tmp");
        let dead = tmp.join("4000001-77-0");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("lock"), b"").unwrap();
        fs::write(dead.join(".tmpAbc123"), vec![0u8; 5000]).unwrap();
        fs::write(tmp.join(".tmpOld999"), vec![0u8; 300]).unwrap();
        let second = Store::open(d.path()).unwrap();
        assert_eq!(
            second.swept(),
            Swept {
                temps_removed: 1,
                temp_bytes_removed: 5000
            }
        );
        assert!(!dead.exists(), "the dead process's directory is gone");
        assert!(
            living.join("partial").exists(),
            "the living store's directory is kept"
        );
        assert_ne!(second.tmp_dir(), living);
        assert!(tmp.join(".tmpOld999").exists(), "left for gc");
        let mut names = read_dir_names(&tmp).unwrap();
        names.retain(|n| is_process_dir(n));
        assert_eq!(names.len(), 2, "{names:?}");
        // A store's directory goes with it.
        let own = second.tmp_dir();
        drop(second);
        assert!(!own.exists());
        drop(first);
        assert!(!living.exists());
        // gc removes and reports whatever is left that is not its own.
        let s = Store::open_exclusive(d.path()).unwrap();
        let dead = tmp.join("4000002-78-0");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("lock"), b"").unwrap();
        fs::write(dead.join("x"), vec![0u8; 10]).unwrap();
        let stats = s.gc(|v: &Vec<String>| v.clone(), |_| None).unwrap();
        assert_eq!((stats.temps_removed, stats.temp_bytes_removed), (2, 310));
        // What opening it swept is gc's work too.
        drop(s);
        let dead = tmp.join("4000003-79-0");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("lock"), b"").unwrap();
        fs::write(dead.join("y"), vec![0u8; 20]).unwrap();
        let s = Store::open_exclusive(d.path()).unwrap();
        let stats = s.gc(|v: &Vec<String>| v.clone(), |_| None).unwrap();
        assert_eq!((stats.temps_removed, stats.temp_bytes_removed), (1, 20));
        assert_eq!(read_dir_names(&tmp).unwrap().len(), 1, "gc's own");
        assert!(s.tmp_dir().is_dir());
    }

    #[test]
    fn missing_blob_error_names_digest() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let err = s.read_blob("ab").unwrap_err();
        assert!(err.to_string().contains("sha256:ab"), "{err}");
    }
}
