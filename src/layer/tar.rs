//! The layer tar stream: fixed headers, so the same entries give the same bytes.
use std::fs::File;
use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use super::{Entries, EntryKind, LayerError};

/// Calls `progress` with the file bytes written so far, every so often.
const PROGRESS_STEP: u64 = 8 << 20;

/// The name prefix of a whiteout file (OCI image spec, "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The tar name of the whiteout that deletes `path`: `.wh.<name>` in its
/// parent directory.
pub fn whiteout_name(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{WHITEOUT_PREFIX}{name}"),
        None => format!("{WHITEOUT_PREFIX}{path}"),
    }
}

/// The tar name of the marker that makes the directory `path` opaque.
pub fn opaque_name(path: &str) -> String {
    if path.is_empty() {
        OPAQUE_MARKER.to_string()
    } else {
        format!("{path}/{OPAQUE_MARKER}")
    }
}

/// Writes `entries` as a tar stream into `out`; every mtime is `epoch`,
/// user and group names are empty, ids and modes are the entries' own.
pub fn write<W: Write>(
    entries: &Entries,
    epoch: i64,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<W, LayerError> {
    let mut b = tar::Builder::new(out);
    let mtime = u64::try_from(epoch).unwrap_or(0);
    let mut done = 0u64;
    let mut reported = 0u64;
    for e in &entries.0 {
        let mut h = Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mtime(mtime);
        h.set_size(0);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(EntryType::Directory);
                b.append_data(&mut h, format!("{}/", e.path), io::empty())
                    .map_err(LayerError::Write)?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(EntryType::Symlink);
                b.append_link(&mut h, &e.path, target)
                    .map_err(LayerError::Write)?;
            }
            EntryKind::Hardlink { target } => {
                h.set_entry_type(EntryType::Link);
                b.append_link(&mut h, &e.path, target)
                    .map_err(LayerError::Write)?;
            }
            // Whiteouts and opaque markers are empty regular files whose
            // metadata the spec says to ignore; the entry's own (0, 0:0, as
            // containerd writes them) goes in.
            EntryKind::Whiteout => {
                h.set_entry_type(EntryType::Regular);
                b.append_data(&mut h, whiteout_name(&e.path), io::empty())
                    .map_err(LayerError::Write)?;
            }
            EntryKind::Opaque => {
                h.set_entry_type(EntryType::Regular);
                b.append_data(&mut h, opaque_name(&e.path), io::empty())
                    .map_err(LayerError::Write)?;
            }
            EntryKind::Fifo => {
                h.set_entry_type(EntryType::Fifo);
                b.append_data(&mut h, &e.path, io::empty())
                    .map_err(LayerError::Write)?;
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                h.set_entry_type(if matches!(e.kind, EntryKind::CharDevice { .. }) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                h.set_device_major(*major).map_err(LayerError::Write)?;
                h.set_device_minor(*minor).map_err(LayerError::Write)?;
                b.append_data(&mut h, &e.path, io::empty())
                    .map_err(LayerError::Write)?;
            }
            EntryKind::File { src, size, .. } => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(*size);
                let f = File::open(src).map_err(|source| LayerError::Io {
                    path: src.clone(),
                    source,
                })?;
                let mut exact = Exact {
                    inner: f,
                    left: *size,
                    shrank: false,
                };
                b.append_data(&mut h, &e.path, &mut exact)
                    .map_err(|err| match exact.check() {
                        Some(actual) => LayerError::Changed {
                            path: src.clone(),
                            expected: *size,
                            actual,
                        },
                        None => LayerError::Write(err),
                    })?;
                if let Some(actual) = exact.check() {
                    return Err(LayerError::Changed {
                        path: src.clone(),
                        expected: *size,
                        actual,
                    });
                }
                done += size;
                if done - reported >= PROGRESS_STEP {
                    reported = done;
                    progress(done);
                }
            }
        }
    }
    progress(done);
    b.into_inner().map_err(LayerError::Write)
}

/// Reads exactly `left` bytes; a file that shrank or grew since it was
/// walked would otherwise yield a corrupt entry or a silently different one.
struct Exact {
    inner: File,
    left: u64,
    /// The file ended before its size.
    shrank: bool,
}

impl Exact {
    /// The actual size if the file did not have the expected one.
    fn check(&mut self) -> Option<u64> {
        let meta_len = self.inner.metadata().map(|m| m.len()).ok()?;
        let expected_total = meta_len;
        if self.shrank {
            return Some(meta_len);
        }
        // Stopped before its end without the file ending: the write side
        // failed (a full disk), not the file.
        if self.left > 0 {
            return None;
        }
        let mut one = [0u8; 1];
        match self.inner.read(&mut one) {
            Ok(1) => Some(expected_total),
            _ => None,
        }
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            self.shrank = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, FileLayer, statcache::StatCache, walk};
    use super::*;

    fn entries(dir: &std::path::Path) -> Entries {
        walk(&FileLayer::new(dir, "/srv"), &mut StatCache::default(), 1).unwrap()
    }

    #[test]
    fn same_entries_same_bytes_and_readable() {
        let d = tempfile::tempdir().unwrap();
        let long = "x".repeat(150);
        std::fs::create_dir_all(d.path().join(&long)).unwrap();
        std::fs::write(d.path().join(&long).join("f"), "data").unwrap();
        std::os::unix::fs::symlink(format!("/{}", "t".repeat(120)), d.path().join("l")).unwrap();
        let e = entries(d.path());
        let a = write(&e, 1_700_000_000, Vec::new(), &mut |_| {}).unwrap();
        let b = write(&e, 1_700_000_000, Vec::new(), &mut |_| {}).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(&a[..]);
        let mut names = Vec::new();
        for entry in ar.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 1_700_000_000);
            names.push(entry.path().unwrap().display().to_string());
        }
        assert_eq!(names[0], "srv/");
        assert!(names.contains(&format!("srv/{long}/f")));
        assert!(names.contains(&"srv/l".to_string()));
    }

    #[test]
    fn whiteouts_opaque_markers_and_devices() {
        let e = |path: &str, kind: EntryKind, mode: u32| Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        };
        let entries = Entries(vec![
            e("gone", EntryKind::Whiteout, 0),
            e("d", EntryKind::Dir, 0o755),
            e("d", EntryKind::Opaque, 0),
            e("d/x", EntryKind::Whiteout, 0),
            e("d/p", EntryKind::Fifo, 0o600),
            e("d/c", EntryKind::CharDevice { major: 1, minor: 3 }, 0o666),
            e(
                "d/b",
                EntryKind::BlockDevice {
                    major: 259,
                    minor: 300,
                },
                0o660,
            ),
        ]);
        let t = write(&entries, 0, Vec::new(), &mut |_| {}).unwrap();
        let mut ar = tar::Archive::new(&t[..]);
        let got: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let h = entry.header();
                let dev =
                    if h.entry_type().is_character_special() || h.entry_type().is_block_special() {
                        format!(
                            " {}:{}",
                            h.device_major().unwrap().unwrap(),
                            h.device_minor().unwrap().unwrap()
                        )
                    } else {
                        String::new()
                    };
                format!(
                    "{} {:?} {:o} {}{dev}",
                    entry.path().unwrap().display(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ".wh.gone Regular 0 0",
                "d/ Directory 755 0",
                "d/.wh..wh..opq Regular 0 0",
                "d/.wh.x Regular 0 0",
                "d/p Fifo 600 0",
                "d/c Char 666 0 1:3",
                "d/b Block 660 0 259:300",
            ]
        );
    }

    /// A writer whose disk is full after `room` bytes.
    #[derive(Debug)]
    struct Full {
        room: usize,
    }

    impl io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_named_not_taken_for_a_changed_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![7u8; 200_000]).unwrap();
        let e = entries(d.path());
        let err = write(&e, 0, Full { room: 50_000 }, &mut |_| {}).unwrap_err();
        assert!(matches!(err, LayerError::Write(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("disk is full") && text.contains("IMGBUILD_HOME"),
            "{text}"
        );
    }

    #[test]
    fn a_file_that_changed_size_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "data").unwrap();
        let e = entries(d.path());
        for (now, size) in [("longer data", 11), ("da", 2)] {
            std::fs::write(d.path().join("f"), now).unwrap();
            let err = write(&e, 0, Vec::new(), &mut |_| {}).unwrap_err();
            assert!(
                matches!(
                    err,
                    LayerError::Changed {
                        expected: 4,
                        actual,
                        ..
                    } if actual == size
                ),
                "{err}"
            );
        }
        let _ = Entry::clone;
    }
}
