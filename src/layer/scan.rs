//! Reading a few files back out of a layer blob, for resolving owner names
//! against a parent image's /etc/passwd and /etc/group.
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

/// Scans a (gzip, zstd or plain) layer blob.
pub fn scan_etc(blob: &Path, media_type: &str) -> io::Result<EtcFiles> {
    let f = BufReader::new(File::open(blob)?);
    let reader: Box<dyn Read> = if media_type.ends_with("+gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if media_type.ends_with("+zstd") {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else {
        Box::new(f)
    };
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

/// Looks up `name` in passwd text: (uid, primary gid).
pub fn passwd_lookup(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Looks up `name` in group text.
pub fn group_lookup(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let p =
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        assert_eq!(passwd_lookup(p, "www-data"), Some((33, 33)));
        assert_eq!(passwd_lookup(p, "nobody"), None);
        assert_eq!(group_lookup("www-data:x:33:\n", "www-data"), Some(33));
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
