//! Content hashes of source files, reused while a file's stat is unchanged.
//!
//! A no-change rebuild must not re-read a 290 MiB tree. As git's index does,
//! a file whose size, mtime, ctime, inode and device match the recorded ones
//! keeps its recorded hash. A file modified within `RACY` of being hashed is
//! not recorded, since a later write in the same tick would keep its stat
//! but change its content.
//!
//! The file is one line per source file (`hash size mtime ctime ino dev
//! path`), read and written in one go: a fleet's Moodle tree has ~30,000
//! files, and JSON of that size alone costs more than the walk.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

const RACY: Duration = Duration::from_secs(2);
const HEADER: &str = "imgbuild-statcache-v1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<String, (Stamp, String)>,
    dirty: bool,
    // Counted from several walking threads at once.
    hits: AtomicU64,
    misses: AtomicU64,
}

impl StatCache {
    /// Loads a cache file; a missing or damaged one is an empty cache.
    pub fn load(path: &Path) -> StatCache {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut cache = StatCache::default();
        let Some(body) = text.strip_prefix(HEADER) else {
            return cache;
        };
        for line in body.lines() {
            if let Some((p, entry)) = parse_line(line) {
                cache.entries.insert(p, entry);
            }
        }
        cache
    }

    /// Writes the cache if it changed, atomically (temporary name, rename).
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut out = String::with_capacity(self.entries.len() * 160 + HEADER.len());
        out.push_str(HEADER);
        for (p, (s, h)) in &self.entries {
            out.push_str(&format!(
                "{h} {} {} {} {} {} {p}\n",
                s.size, s.mtime_ns, s.ctime_ns, s.ino, s.dev
            ));
        }
        crate::fsutil::write_atomic(dir, path, out.as_bytes())?;
        self.dirty = false;
        Ok(())
    }

    /// The recorded hash, if `meta` still matches.
    pub fn lookup(&self, path: &Path, meta: &std::fs::Metadata) -> Option<String> {
        let hit = path
            .to_str()
            .and_then(|p| self.entries.get(p))
            .filter(|(s, _)| *s == Stamp::of(meta))
            .map(|(_, h)| h.clone());
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Records a hash just taken, unless the file is too fresh to trust.
    pub fn record(&mut self, path: &Path, meta: &std::fs::Metadata, hash: &str) {
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > RACY);
        // Paths that cannot be written on one line are simply hashed each time.
        let Some(key) = path.to_str().filter(|p| !p.contains('\n')) else {
            return;
        };
        if settled {
            self.entries
                .insert(key.to_string(), (Stamp::of(meta), hash.to_string()));
            self.dirty = true;
        } else if self.entries.remove(key).is_some() {
            self.dirty = true;
        }
    }

    /// The hex sha256 of the file at `path`, whose metadata is `meta`.
    pub fn hash(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<String> {
        if let Some(h) = self.lookup(path, meta) {
            return Ok(h);
        }
        let hash = hash_file(path, &mut vec![0u8; BUF])?;
        self.record(path, meta, &hash);
        Ok(hash)
    }

    /// (hits, misses) since load.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// True when the cache may hold files that this walk did not see: more
    /// entries than lookups that hit plus hashes recorded since.
    pub fn may_be_stale(&self) -> bool {
        let (hits, misses) = self.counts();
        self.entries.len() as u64 > hits + misses
    }

    /// Drops entries under `root` that were not asked about, so the cache
    /// does not grow with files long deleted.
    pub fn retain_under(&mut self, root: &Path, seen: &HashSet<&str>) {
        let before = self.entries.len();
        let root = root.to_string_lossy();
        let root = root.trim_end_matches('/');
        let under = |p: &str| {
            p.strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        self.entries
            .retain(|p, _| !under(p) || seen.contains(p.as_str()));
        self.dirty |= self.entries.len() != before;
    }
}

fn parse_line(line: &str) -> Option<(String, (Stamp, String))> {
    let mut f = line.splitn(7, ' ');
    let hash = f.next()?;
    let stamp = Stamp {
        size: f.next()?.parse().ok()?,
        mtime_ns: f.next()?.parse().ok()?,
        ctime_ns: f.next()?.parse().ok()?,
        ino: f.next()?.parse().ok()?,
        dev: f.next()?.parse().ok()?,
    };
    let path = f.next()?;
    (hash.len() == 64).then(|| (path.to_string(), (stamp, hash.to_string())))
}

/// Read size for hashing; one buffer per thread, reused across files.
pub const BUF: usize = 256 * 1024;

pub fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes `paths` on `threads` threads; results in the same order.
pub fn hash_files(paths: &[&Path], threads: usize) -> Vec<io::Result<String>> {
    let threads = threads.clamp(1, paths.len().max(1));
    if threads == 1 {
        let mut buf = vec![0u8; BUF];
        return paths.iter().map(|p| hash_file(p, &mut buf)).collect();
    }
    // Interleaved shares, so big and small files spread over the threads.
    let mut results: Vec<Option<io::Result<String>>> = (0..paths.len()).map(|_| None).collect();
    let shares: Vec<Vec<(usize, io::Result<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut buf = vec![0u8; BUF];
                    (t..paths.len())
                        .step_by(threads)
                        .map(|i| (i, hash_file(paths[i], &mut buf)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for share in shares {
        for (i, r) in share {
            results[i] = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("hashing thread failed"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn hit_only_when_stat_is_unchanged_and_settled() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a b");
        std::fs::write(&f, "one").unwrap();
        // Settle the file: an mtime in the past.
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut c = StatCache::default();
        let h1 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        let h2 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(h1, h2);
        assert_eq!(c.counts(), (1, 1));
        let p = d.path().join("cache");
        c.save(&p).unwrap();
        let loaded = StatCache::load(&p);
        assert_eq!(
            loaded.lookup(&f, &std::fs::metadata(&f).unwrap()),
            Some(h1.clone())
        );
        // A fresh write is hashed again and not cached while racy.
        std::fs::write(&f, "two").unwrap();
        let h3 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_ne!(h1, h3);
        let h4 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(h3, h4);
        assert_eq!(c.counts(), (1, 3));
        c.save(&p).unwrap();
        let c2 = StatCache::load(&p);
        assert!(c2.entries.is_empty(), "racy entry was not persisted");
    }

    #[test]
    fn parallel_hashing_keeps_order() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..7)
            .map(|i| {
                let p = d.path().join(format!("f{i}"));
                std::fs::write(&p, format!("{i}")).unwrap();
                p
            })
            .collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let one: Vec<String> = hash_files(&refs, 1)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let three: Vec<String> = hash_files(&refs, 3)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(one, three);
        assert_eq!(one[0], crate::digest::sha256_hex(b"0"));
    }
}
