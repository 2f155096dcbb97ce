//! The tree of a layer's chain, made while the layer is written.
//!
//! A Debian or run layer is usually the lower of the next sandbox work (the
//! image's run steps, a child's packages, `imgbuild test`). Unpacking it
//! again from its blob afterwards means inflating and writing every byte
//! once more. Instead the layer's tar stream, as it is written, is also fed
//! to the unpacker, on another thread, over a hard-linked clone of the tree
//! below (the unpacker unlinks before it writes, so the clone never writes
//! through into the tree it shares files with). The result is byte for byte
//! what unpacking the chain would give, because it is the same unpacker fed
//! the same tar; it is kept only if both the layer and the tree were written
//! whole.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::layer::unpack::UnpackOptions;

/// Why a tree could not be made while its layer was written. Only a
/// cache is lost: the caller warns and goes on.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("starting a thread: {0}")]
    Thread(io::Error),
    #[error("cannot run cp: {0}")]
    Cp(io::Error),
    #[error("cloning {}: {stderr}", from.display())]
    Clone { from: PathBuf, stderr: String },
    #[error(transparent)]
    Unpack(#[from] crate::layer::unpack::UnpackError),
    #[error("already finished")]
    Finished,
    #[error("the unpacker panicked")]
    Panicked,
    #[error(transparent)]
    Keep(Box<crate::build::BuildError>),
}

/// Tar chunks in flight to the unpacker: bounded, so memory does not grow
/// with the layer when the unpacker falls behind (the writer waits).
const IN_FLIGHT: usize = 16;

/// The name of the tree of `hexes` (blob digests, bottom first) in the
/// store's `rootfs/`: trees unpacked with and without owners differ.
pub fn chain_id(opts: &UnpackOptions, hexes: &[String]) -> String {
    crate::oci::digest::sha256_hex(
        format!("v2 chown={}\n{}", opts.chown, hexes.join("\n")).as_bytes(),
    )
}

/// A tree being made from a layer's tar stream.
pub struct Follow {
    work: tempfile::TempDir,
    tx: Option<SyncSender<Vec<u8>>>,
    applier: Option<JoinHandle<Result<(), FollowError>>>,
}

impl Follow {
    /// Starts cloning `lower` (the chain's tree below the layer) under
    /// `tmp`; the clone runs while the layer's steps do.
    pub fn start(tmp: &Path, lower: &Path) -> Result<Follow, FollowError> {
        let work = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(tmp)
            .map_err(|source| FollowError::Io {
                path: tmp.to_path_buf(),
                source,
            })?;
        let root = work.path().join("rootfs");
        let lower = lower.to_path_buf();
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let applier = std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || {
                link_tree(&lower, &root)?;
                let stream = Chunks {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                };
                let opts = UnpackOptions::for_current_user();
                crate::layer::unpack::apply_tar(stream, Path::new("layer"), &root, &opts)?;
                Ok(())
            })
            .map_err(FollowError::Thread)?;
        Ok(Follow {
            work,
            tx: Some(tx),
            applier: Some(applier),
        })
    }

    /// Where the layer's tar stream goes as it is written. A failed
    /// unpacker makes writes fail; the tee that calls this stops then.
    pub fn writer(&mut self) -> Box<dyn Write + Send> {
        Box::new(Sender(self.tx.take()))
    }

    /// Waits for the unpacker and moves the tree to `rootfs/<chain>` of
    /// `hexes` (the chain including the layer just written).
    pub fn finish(mut self, rootfs: &Path, hexes: &[String]) -> Result<PathBuf, FollowError> {
        self.tx = None;
        let applier = self.applier.take().ok_or(FollowError::Finished)?;
        applier.join().map_err(|_| FollowError::Panicked)??;
        keep(
            rootfs,
            self.work.path(),
            &self.work.path().join("rootfs"),
            &UnpackOptions::for_current_user(),
            hexes,
        )
        .map_err(|e| FollowError::Keep(Box::new(e)))
    }
}

/// Moves `tree`, the whole tree of the chain of blobs `hexes`, to
/// `rootfs/<chain>` beside a list of those blobs (so gc can drop it with
/// them); `tmp` is for writing that list. An existing tree of the chain
/// wins: another build got there first.
pub fn keep(
    rootfs: &Path,
    tmp: &Path,
    tree: &Path,
    opts: &UnpackOptions,
    hexes: &[String],
) -> Result<PathBuf, crate::build::BuildError> {
    use crate::build::BuildError;
    let chain = chain_id(opts, hexes);
    let done = rootfs.join(&chain);
    if done.is_dir() {
        return Ok(done);
    }
    std::fs::create_dir_all(rootfs).map_err(|source| BuildError::Io {
        path: rootfs.to_path_buf(),
        source,
    })?;
    let list = rootfs.join(format!("{chain}.layers"));
    crate::fsutil::write_atomic(tmp, &list, hexes.join("\n").as_bytes())
        .map_err(|source| BuildError::Io { path: list, source })?;
    match std::fs::rename(tree, &done) {
        Ok(()) => Ok(done),
        Err(_) if done.is_dir() => Ok(done),
        Err(source) => Err(BuildError::Io { path: done, source }),
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        // Closing the stream ends the unpacker (on a short tar, or an
        // error); the work directory goes once it has stopped writing.
        self.tx = None;
        if let Some(a) = self.applier.take() {
            let _ = a.join();
        }
    }
}

/// A clone of `from` at `to` whose files are hard links: directories are
/// new (owners, modes and mtimes kept), files are shared.
pub(crate) fn link_tree(from: &Path, to: &Path) -> Result<(), FollowError> {
    let cp = crate::sandbox::host_tool(crate::sandbox::Tool::Cp)
        .map_err(|e| FollowError::Cp(io::Error::new(io::ErrorKind::NotFound, e.to_string())))?;
    let out = std::process::Command::new(cp)
        .arg("-al")
        .arg(from)
        .arg(to)
        .output()
        .map_err(FollowError::Cp)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FollowError::Clone {
            from: from.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

struct Sender(Option<SyncSender<Vec<u8>>>);

impl Write for Sender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.0.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        tx.send(buf.to_vec())
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The unpacker's end: the chunks in order, then end of file when the
/// writer is done (or gone).
struct Chunks {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Entries, Entry, EntryKind};

    fn file(path: &str, src: &Path, body: &[u8]) -> Entry {
        std::fs::write(src, body).unwrap();
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                src: src.to_path_buf(),
                size: body.len() as u64,
                sha256: crate::oci::digest::sha256_hex(body),
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn the_followed_tree_equals_the_unpacked_chain_and_leaves_the_lower_alone() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        // The tree below: etc/a and etc/b.
        let lower = d.path().join("lower");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/a"), "old a").unwrap();
        std::fs::write(lower.join("etc/b"), "b").unwrap();
        // The layer: a replaced, b deleted, c added.
        let entries = Entries(vec![
            Entry {
                path: "etc".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            file("etc/a", &d.path().join("a"), b"new a"),
            Entry {
                path: "etc/b".into(),
                kind: EntryKind::Whiteout,
                mode: 0,
                uid: 0,
                gid: 0,
            },
            file("etc/c", &d.path().join("c"), b"c"),
        ]);
        let mut follow = Follow::start(&tmp, &lower).unwrap();
        let copy = follow.writer();
        let opts = crate::layer::BlobOptions {
            epoch: 0,
            compression: crate::layer::LayerCompression::GZIP,
            threads: 2,
            copy: Some(copy),
        };
        let (_, blob) = crate::layer::write_blob(&entries, opts, Vec::new(), &mut |_| {}).unwrap();
        let rootfs = d.path().join("rootfs");
        let hexes = vec![blob.digest.clone()];
        let tree = follow.finish(&rootfs, &hexes).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("etc/a")).unwrap(),
            "new a"
        );
        assert!(!tree.join("etc/b").exists());
        assert_eq!(std::fs::read_to_string(tree.join("etc/c")).unwrap(), "c");
        assert!(
            rootfs
                .join(format!(
                    "{}.layers",
                    tree.file_name().unwrap().to_str().unwrap()
                ))
                .is_file()
        );
        // The tree below is as it was.
        assert_eq!(
            std::fs::read_to_string(lower.join("etc/a")).unwrap(),
            "old a"
        );
        assert_eq!(std::fs::read_to_string(lower.join("etc/b")).unwrap(), "b");
        assert!(!lower.join("etc/c").exists());
        // Nothing left in tmp.
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn a_stream_cut_short_leaves_no_tree() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let lower = d.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        let mut follow = Follow::start(&tmp, &lower).unwrap();
        let mut w = follow.writer();
        w.write_all(b"not a tar header, and too short").unwrap();
        drop(w);
        assert!(follow.finish(&d.path().join("rootfs"), &[]).is_err());
        assert!(!d.path().join("rootfs").exists());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
