//! What each layer blob holds that an SBOM names: the dpkg status file,
//! packages' `copyright` files, Moodle's `version.php` files, os-release.
//! Read once per layer (a layer is content-addressed) and kept in the
//! store's meta records, so a client's SBOM reads only its own thin layers;
//! the image's view is the layers merged in order, whiteouts applied.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::oci::image::{LayerDesc, hex_of};
use crate::store::{Kind, Store};

/// Files bigger than this are not what we look for (a `version.php` is a
/// few hundred bytes; dpkg's status a few MB at most).
const MAX_FILE: u64 = 32 << 20;
const MAX_PHP: u64 = 64 << 10;

/// A file an SBOM reads, as found in one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// `var/lib/dpkg/status`.
    DpkgStatus(String),
    /// `usr/share/doc/PKG/copyright`: its SPDX expression and the
    /// `LicenseRef-`s it made, or None when it is not DEP-5.
    Copyright(Option<(String, BTreeSet<String>)>),
    /// A `version.php` that names a plugin or a Moodle release.
    VersionPhp(VersionPhp),
    /// `etc/os-release` or `usr/lib/os-release`: ID and VERSION_CODENAME.
    OsRelease { id: String, codename: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionPhp {
    /// `$plugin->component`.
    pub component: Option<String>,
    /// `$plugin->version` or Moodle's `$version`.
    pub version: Option<String>,
    /// `$plugin->release` or Moodle's `$release`.
    pub release: Option<String>,
    /// Moodle core's own version.php (`$release` and `$branch`).
    pub core: bool,
}

/// What one layer adds and removes, among the files an SBOM reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFacts {
    /// The blob (named `digest` so gc drops this with the blob).
    pub digest: String,
    /// Paths whited out: a file, or a directory and all below it. An
    /// opaque directory is its path with a trailing `/`.
    pub removed: Vec<String>,
    pub files: BTreeMap<String, Fact>,
}

fn norm(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// Whether `path` is a file an SBOM reads, and the most bytes it may have.
fn wanted(path: &str) -> Option<u64> {
    if path == "var/lib/dpkg/status" {
        return Some(MAX_FILE);
    }
    if path == "etc/os-release" || path == "usr/lib/os-release" {
        return Some(MAX_PHP);
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/")
        && let Some((pkg, "copyright")) = rest.split_once('/')
        && !pkg.contains('/')
    {
        return Some(MAX_FILE);
    }
    (path == "version.php" || path.ends_with("/version.php")).then_some(MAX_PHP)
}

pub(crate) fn fact(path: &str, text: &str) -> Option<Fact> {
    if path == "var/lib/dpkg/status" {
        return Some(Fact::DpkgStatus(text.to_string()));
    }
    if path.ends_with("os-release") {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        return Some(Fact::OsRelease {
            id: get("ID"),
            codename: get("VERSION_CODENAME"),
        });
    }
    if path.starts_with("usr/share/doc/") {
        return Some(Fact::Copyright(super::dpkg::licences(text)));
    }
    super::moodle::version_php(text).map(Fact::VersionPhp)
}

/// Reads the facts of a (gzip, zstd or plain) layer blob.
pub fn read(blob: &Path, desc: &LayerDesc) -> io::Result<LayerFacts> {
    let compression = crate::layer::compress::layer_compression(&desc.media_type)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let reader = crate::layer::compress::decompress(
        compression,
        BufReader::with_capacity(256 << 10, File::open(blob)?),
    )?;
    let mut out = LayerFacts {
        digest: desc.digest.clone(),
        ..LayerFacts::default()
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = norm(&entry.path()?.to_string_lossy());
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (format!("{d}/"), b),
            None => (String::new(), path.as_str()),
        };
        if base == ".wh..wh..opq" {
            out.removed.push(dir);
            continue;
        }
        if let Some(gone) = base.strip_prefix(".wh.") {
            out.removed.push(format!("{dir}{gone}"));
            continue;
        }
        let Some(limit) = wanted(&path) else { continue };
        if !entry.header().entry_type().is_file() || entry.size() > limit {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(f) = fact(&path, &text) {
            out.files.insert(path, f);
        }
    }
    Ok(out)
}

/// The facts of the layer `entries` make, as [`read`] would find them in
/// the blob written from them, without reading that blob back: the wanted
/// files are read from where the tar takes them.
pub fn from_entries(digest: &str, entries: &crate::layer::Entries) -> io::Result<LayerFacts> {
    use crate::layer::EntryKind;
    let mut out = LayerFacts {
        digest: digest.to_string(),
        ..LayerFacts::default()
    };
    for e in &entries.0 {
        let path = norm(&e.path);
        match &e.kind {
            EntryKind::Whiteout => out.removed.push(path),
            // `D/.wh..wh..opq` reads back as `D/`; at the root, as ``.
            EntryKind::Opaque if path.is_empty() => out.removed.push(path),
            EntryKind::Opaque => out.removed.push(format!("{path}/")),
            EntryKind::File { src, size, .. } => {
                let Some(limit) = wanted(&path) else { continue };
                if *size > limit {
                    continue;
                }
                let mut bytes = Vec::with_capacity(*size as usize);
                File::open(src)?.take(*size).read_to_end(&mut bytes)?;
                let text = String::from_utf8_lossy(&bytes);
                if let Some(f) = fact(&path, &text) {
                    out.files.insert(path, f);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Records the facts of a layer just written from `entries` as `digest`,
/// so an SBOM of it never reads the blob back (a cold build's evidence
/// would otherwise decompress every new layer once more).
pub fn remember(store: &Store, digest: &str, entries: &crate::layer::Entries) -> io::Result<()> {
    let f = from_entries(digest, entries)?;
    store
        .put(Kind::Meta, &format!("sbom-{}", hex_of(digest)), &f)
        .map_err(io::Error::other)
}

/// A layer's facts from the store's record, else read from its blob and
/// recorded.
pub fn facts(store: &Store, desc: &LayerDesc) -> io::Result<LayerFacts> {
    let key = format!("sbom-{}", hex_of(&desc.digest));
    if let Ok(Some(f)) = store.get::<LayerFacts>(Kind::Meta, &key) {
        return Ok(f);
    }
    let f = read(&store.blob_path(&hex_of(&desc.digest)), desc)?;
    // A record that cannot be written costs a re-read next time, no more.
    let _ = store.put(Kind::Meta, &key, &f);
    Ok(f)
}

/// The files of an image made of `layers`, in order, whiteouts applied.
pub fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerFacts>) -> BTreeMap<String, Fact> {
    let mut all: BTreeMap<String, Fact> = BTreeMap::new();
    for l in layers {
        for r in &l.removed {
            match r.strip_suffix('/') {
                // Opaque: what earlier layers had below it is hidden.
                Some(_) => all.retain(|p, _| !p.starts_with(r.as_str())),
                None => {
                    let below = format!("{r}/");
                    all.retain(|p, _| p != r && !p.starts_with(&below));
                }
            }
        }
        all.extend(l.files.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)], removed: &[&str]) -> LayerFacts {
        LayerFacts {
            digest: String::new(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
            files: files
                .iter()
                .map(|(p, t)| (p.to_string(), fact(p, t).unwrap()))
                .collect(),
        }
    }

    /// The facts recorded while a layer is written are the facts read
    /// back from the blob: the SBOM of a fresh build is the same bytes.
    #[test]
    fn facts_from_entries_equal_facts_read_from_the_blob() {
        use crate::layer::{BlobOptions, Compression, Entry, EntryKind, FileLayer, walk};
        let src = tempfile::tempdir().unwrap();
        let r = src.path();
        let put = |p: &str, text: &str| {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            "var/lib/dpkg/status",
            "Package: a\nStatus: install ok installed\nVersion: 1\n",
        );
        put("etc/os-release", "ID=debian\nVERSION_CODENAME=trixie\n");
        put(
            "usr/share/doc/a/copyright",
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: MIT\n",
        );
        put("usr/share/doc/a/x/copyright", "not one");
        put(
            "var/www/m/mod/a/version.php",
            "<?php\n$plugin->component = 'mod_a';\n$plugin->version = 2024;\n",
        );
        put(
            "var/www/m/version.php",
            "<?php\n$version = 1;\n$release = '5.1.3 (Build: 1)';\n$branch = '501';\n",
        );
        put(
            "var/www/m/big/version.php",
            &"x".repeat((MAX_PHP + 1) as usize),
        );
        put(
            "var/www/m/other.php",
            "<?php\n$plugin->component = 'mod_b';\n",
        );
        let mut entries = walk(
            &FileLayer::new(r, "/"),
            &mut crate::layer::statcache::StatCache::default(),
            1,
        )
        .unwrap();
        let e = |path: &str, kind: EntryKind| Entry {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
        };
        entries.0.push(e("var/www/m/mod/gone", EntryKind::Whiteout));
        entries.0.push(e("var/www/m/theme", EntryKind::Dir));
        entries.0.push(e("var/www/m/theme", EntryKind::Opaque));
        let out = tempfile::tempdir().unwrap();
        let blob = out.path().join("blob");
        let opts = BlobOptions {
            epoch: 0,
            compression: Compression::Gzip.into(),
            threads: 1,
            copy: None,
        };
        let (_, written) = crate::layer::write_blob(
            &entries,
            opts,
            std::fs::File::create(&blob).unwrap(),
            &mut |_| {},
        )
        .unwrap();
        let desc = LayerDesc {
            digest: written.digest.clone(),
            diff_id: written.diff_id,
            size: written.size,
            media_type: Compression::Gzip.media_type().to_string(),
        };
        let read_back = read(&blob, &desc).unwrap();
        let made = from_entries(&written.digest, &entries).unwrap();
        assert_eq!(made, read_back);
        // What the comparison covers: each kind of fact and both removals.
        assert_eq!(made.files.len(), 5, "{:?}", made.files.keys());
        assert_eq!(made.removed, ["var/www/m/mod/gone", "var/www/m/theme/"]);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_earlier_files() {
        let php = "<?php\n$plugin->component = 'mod_a';\n$plugin->version = 1;\n";
        let a = layer(
            &[
                ("m/mod/a/version.php", php),
                ("m/mod/b/version.php", &php.replace("mod_a", "mod_b")),
                ("o/x/version.php", &php.replace("mod_a", "mod_x")),
            ],
            &[],
        );
        let b = layer(&[], &["m/mod/a", "o/"]);
        let merged = merge([&a, &b]);
        assert_eq!(
            merged.keys().collect::<Vec<_>>(),
            ["m/mod/b/version.php"],
            "a deleted directory and an opaque one hide what was below them"
        );
        assert_eq!(wanted("usr/share/doc/libc6/copyright"), Some(MAX_FILE));
        assert_eq!(wanted("usr/share/doc/libc6/x/copyright"), None);
        assert_eq!(wanted("var/www/moodle/version.php"), Some(MAX_PHP));
        assert_eq!(wanted("var/www/moodle/version.phps"), None);
    }
}
