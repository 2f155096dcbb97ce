//! Content hashes of source files, reused while a file's stat is unchanged.
//!
//! A no-change rebuild must not re-read a 290 MiB tree. As git's index does,
//! a file whose size, mtime, ctime, inode and device match the recorded ones
//! keeps its recorded hash. A file modified within `RACY` of the hash being
//! taken is not recorded, since a later write in the same tick would keep its
//! stat but change its content.
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const RACY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: HashMap<PathBuf, (Stamp, String)>,
    #[serde(skip)]
    dirty: bool,
    #[serde(skip)]
    hits: u64,
    #[serde(skip)]
    misses: u64,
}

impl StatCache {
    /// Loads a cache file; a missing or unreadable one is an empty cache.
    pub fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the cache if it changed, atomically (temporary name, rename).
    pub fn save(&mut self, path: &Path) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, self)?;
        tmp.persist(path).map_err(|e| e.error)?;
        self.dirty = false;
        Ok(())
    }

    /// The hex sha256 of the file at `path`, whose metadata is `meta`.
    pub fn hash(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<String> {
        let stamp = Stamp::of(meta);
        if let Some((s, h)) = self.entries.get(path)
            && *s == stamp
        {
            self.hits += 1;
            return Ok(h.clone());
        }
        self.misses += 1;
        let hash = hash_file(path)?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let settled = SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|age| age > RACY);
        if settled {
            self.entries
                .insert(path.to_path_buf(), (stamp, hash.clone()));
            self.dirty = true;
        } else if self.entries.remove(path).is_some() {
            self.dirty = true;
        }
        Ok(hash)
    }

    /// (hits, misses) since load.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Drops entries under `root` that were not asked about, so the cache
    /// does not grow with files long deleted.
    pub fn retain_under(&mut self, root: &Path, seen: &std::collections::HashSet<PathBuf>) {
        let before = self.entries.len();
        self.entries
            .retain(|p, _| !p.starts_with(root) || seen.contains(p));
        self.dirty |= self.entries.len() != before;
    }
}

pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_only_when_stat_is_unchanged_and_settled() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
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
        // A fresh write is hashed again and not cached while racy.
        std::fs::write(&f, "two").unwrap();
        let h3 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_ne!(h1, h3);
        let h4 = c.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
        assert_eq!(h3, h4);
        assert_eq!(c.counts(), (1, 3));
        let p = d.path().join("cache.json");
        c.save(&p).unwrap();
        let mut c2 = StatCache::load(&p);
        assert!(c2.entries.is_empty(), "racy entry was not persisted");
        c2.hash(&f, &std::fs::metadata(&f).unwrap()).unwrap();
    }
}
