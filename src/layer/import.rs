//! `from: {rootfs: PATH}`: a root filesystem tarball as an image's first
//! layer, as `docker import` takes one.
//!
//! The tarball is unpacked (the same checked unpacker as image layers),
//! then read back as a tree, so the layer is written by the same
//! deterministic writer as every other: sorted, stamped with the layer
//! epoch, whatever order and times the tarball had. Owners and modes come
//! from the tarball's headers, so a user who cannot chown still imports
//! root-owned and set-uid files as they are.
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::diff::{DiffOptions, diff};
use super::unpack::{UnpackOptions, unpack_image};
use super::{Entries, LayerError};

/// The media type to read `path` as, by its first bytes.
pub fn media_type_of(path: &Path) -> Result<&'static str, LayerError> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(super::io_err(path))?;
    let n = f.read(&mut magic).map_err(super::io_err(path))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        [0xfd, b'7', b'z', b'X'] => {
            return Err(LayerError::Unsupported {
                path: path.to_path_buf(),
                kind: "xz-compressed (use .tar, .tar.gz or .tar.zst)",
            });
        }
        _ => "application/vnd.oci.image.layer.v1.tar",
    })
}

/// Owner, mode and (for device files and FIFOs) kind of each path in the
/// tarball's headers (the last header of a path wins, as when unpacking).
type Header = (u32, u32, u32, Option<super::EntryKind>);

fn header_modes(path: &Path, media_type: &str) -> Result<HashMap<String, Header>, LayerError> {
    let bad = |e: std::io::Error| LayerError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let stream = super::unpack::open_layer(path, media_type).map_err(|e| LayerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut archive = tar::Archive::new(stream);
    let mut out = HashMap::new();
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let h = entry.header();
        let name = entry.path().map_err(bad)?;
        let name = name.to_string_lossy();
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/');
        if name.is_empty() || name == "." {
            continue;
        }
        let uid = h.uid().map_err(bad)? as u32;
        let gid = h.gid().map_err(bad)? as u32;
        let mode = h.mode().map_err(bad)? & 0o7777;
        let device = || -> Result<(u32, u32), LayerError> {
            let major = h.device_major().map_err(bad)?.unwrap_or(0);
            let minor = h.device_minor().map_err(bad)?.unwrap_or(0);
            Ok((major, minor))
        };
        let special = match h.entry_type() {
            tar::EntryType::Char => {
                let (major, minor) = device()?;
                Some(super::EntryKind::CharDevice { major, minor })
            }
            tar::EntryType::Block => {
                let (major, minor) = device()?;
                Some(super::EntryKind::BlockDevice { major, minor })
            }
            tar::EntryType::Fifo => Some(super::EntryKind::Fifo),
            _ => None,
        };
        out.insert(name.to_string(), (uid, gid, mode, special));
    }
    Ok(out)
}

/// The tarball at `path` as layer entries, unpacked under `work` (which
/// must live until the layer is written: the entries read files there).
pub fn entries(path: &Path, work: &Path, threads: usize) -> Result<Entries, LayerError> {
    let media_type = media_type_of(path)?;
    let root = work.join("rootfs");
    let empty = work.join("empty");
    std::fs::create_dir_all(&empty).map_err(super::io_err(&empty))?;
    unpack_image(
        &[(path.to_path_buf(), media_type.to_string())],
        &root,
        &UnpackOptions::for_current_user(),
    )
    .map_err(|e| LayerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let opts = DiffOptions {
        // Taken as it is: the tarball is the input, residue and all.
        residue: Vec::new(),
        trust_mtime: false,
        threads,
    };
    let (mut entries, _) = diff(&empty, &root, &opts)?;
    let headers = header_modes(path, media_type)?;
    for e in &mut entries.0 {
        if let Some(&(uid, gid, mode, _)) = headers.get(e.path.as_str()) {
            e.uid = uid;
            e.gid = gid;
            e.mode = mode;
        }
    }
    // Device files and FIFOs the unpacker could not make (a user, or a user
    // namespace, may not mknod) come from their headers, so the layer is
    // the same whoever imports the tarball.
    let present: std::collections::HashSet<&str> =
        entries.0.iter().map(|e| e.path.as_str()).collect();
    let mut missing: Vec<super::Entry> = headers
        .iter()
        .filter(|(name, _)| !present.contains(name.as_str()))
        .filter_map(|(name, (uid, gid, mode, special))| {
            let parent = name.rsplit_once('/').map(|(p, _)| p);
            // Only where the tree has its directory (a later entry may have
            // replaced it).
            let placed = parent.is_none_or(|p| present.contains(p));
            special.clone().filter(|_| placed).map(|kind| super::Entry {
                path: name.clone(),
                kind,
                mode: *mode,
                uid: *uid,
                gid: *gid,
            })
        })
        .collect();
    if !missing.is_empty() {
        entries.0.append(&mut missing);
        // The walk's order: depth first, names sorted, component by component.
        entries
            .0
            .sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    }
    Ok(entries)
}
