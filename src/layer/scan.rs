//! Reading /etc/passwd and /etc/group back out of a layer blob (looked up
//! by `crate::passwd`), and checking that a blob's paths stay inside the root.
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What one layer says about a file: nothing, new content, or deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Found {
    #[default]
    Absent,
    Content(String),
    Deleted,
}

/// What a layer says about /etc/passwd and /etc/group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFiles {
    pub passwd: Found,
    pub group: Found,
}

fn norm(path: &str) -> &str {
    path.trim_start_matches("./").trim_start_matches('/')
}

/// The tar stream of a layer blob; an unknown media type is invalid data.
fn open(blob: &Path, media_type: &str) -> io::Result<Box<dyn Read>> {
    let compression = super::compress::layer_compression(media_type)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    super::compress::decompress(compression, BufReader::new(File::open(blob)?))
}

/// Scans a (gzip, zstd or plain) layer blob.
pub fn scan_etc(blob: &Path, media_type: &str) -> io::Result<EtcFiles> {
    let reader = open(blob, media_type)?;
    let mut out = EtcFiles::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let slot = match norm(&path) {
            "etc/passwd" | "etc/.wh.passwd" => &mut out.passwd,
            "etc/group" | "etc/.wh.group" => &mut out.group,
            "etc/.wh..wh..opq" => {
                // An opaque /etc hides the parent's files unless this layer
                // adds them back, which a later entry would do.
                if out.passwd == Found::Absent {
                    out.passwd = Found::Deleted;
                }
                if out.group == Found::Absent {
                    out.group = Found::Deleted;
                }
                continue;
            }
            _ => continue,
        };
        if norm(&path).contains(".wh.") {
            *slot = Found::Deleted;
        } else if entry.header().entry_type().is_file() {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            *slot = Found::Content(s);
        }
    }
    Ok(out)
}

/// Why a layer may not be unpacked.
#[derive(Debug)]
pub enum PathProblem {
    Io(io::Error),
    Escapes { entry: String, why: &'static str },
}

/// Whether a path stays inside the root once `..` is resolved.
fn escapes(path: &str) -> bool {
    let mut depth = 0i32;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Refuses a layer with entries that would land outside the root when
/// unpacked: `..` climbing out, or hard links whose target does. Absolute
/// names are read relative to the root by every unpacker and allowed;
/// symlink targets are allowed (they are resolved inside the image at run
/// time, and unpacking never follows them).
pub fn check_paths(blob: &Path, media_type: &str) -> Result<(), PathProblem> {
    let reader = open(blob, media_type).map_err(PathProblem::Io)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(PathProblem::Io)? {
        let entry = entry.map_err(PathProblem::Io)?;
        let raw = entry.path_bytes();
        let path = String::from_utf8_lossy(&raw).into_owned();
        if escapes(&path) {
            return Err(PathProblem::Escapes {
                entry: path,
                why: "climbs out of the root with `..`",
            });
        }
        if entry.header().entry_type() == tar::EntryType::Link
            && let Some(target) = entry.link_name_bytes()
        {
            let target = String::from_utf8_lossy(&target).into_owned();
            if escapes(&target) {
                return Err(PathProblem::Escapes {
                    entry: path,
                    why: "is a hard link to a path outside the root",
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbing_out_is_found() {
        assert!(escapes("../etc/passwd"));
        assert!(escapes("a/../../b"));
        assert!(!escapes("a/../b"));
        assert!(!escapes("/etc/passwd"));
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Link);
        b.append_link(&mut h, "etc/shadow-copy", "../../etc/shadow")
            .unwrap();
        let p = d.path().join("evil.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        match check_paths(&p, "application/vnd.oci.image.layer.v1.tar") {
            Err(PathProblem::Escapes { entry, .. }) => assert_eq!(entry, "etc/shadow-copy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scans_content_and_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h.clone(), "etc/passwd", &b"a:x:1"[..])
            .unwrap();
        h.set_size(0);
        b.append_data(&mut h, "./etc/.wh.group", &b""[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let p = d.path().join("l.tar");
        std::fs::write(&p, &tar).unwrap();
        let e = scan_etc(&p, "application/vnd.oci.image.layer.v1.tar").unwrap();
        assert_eq!(e.passwd, Found::Content("a:x:1".into()));
        assert_eq!(e.group, Found::Deleted);
    }
}
