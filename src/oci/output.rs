//! Writing images out: an OCI image layout directory, or a docker-archive
//! tarball that `docker load` reads (also an OCI layout inside, as Docker
//! 25's `docker save` writes).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageIndex, ImageIndexBuilder, MediaType,
};

use super::image::{ImageRecord, canonical_json, hex_of};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: existing index.json is not an OCI index ({reason}); choose another directory or remove it", path.display())]
    BadIndex { path: PathBuf, reason: String },
    #[error("`{0}` is not an output; write oci:DIR or docker-archive:FILE")]
    BadSpec(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where blobs are read from.
pub trait Blobs {
    fn blob_path(&self, hex: &str) -> PathBuf;
}

impl Blobs for crate::store::Store {
    fn blob_path(&self, hex: &str) -> PathBuf {
        crate::store::Store::blob_path(self, hex)
    }
}

/// An image to write, under its graph name and tags (`repo:tag`).
pub struct Named<'a> {
    pub name: &'a str,
    pub record: &'a ImageRecord,
    pub repo_tags: Vec<String>,
}

/// `--output` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    OciDir(PathBuf),
    DockerArchive(PathBuf),
}

impl FromStr for Output {
    type Err = OutputError;
    fn from_str(s: &str) -> Result<Output, OutputError> {
        match s.split_once(':') {
            Some(("oci", p)) if !p.is_empty() => Ok(Output::OciDir(p.into())),
            Some(("docker-archive", p)) if !p.is_empty() => Ok(Output::DockerArchive(p.into())),
            _ => Err(OutputError::BadSpec(s.to_string())),
        }
    }
}

impl Output {
    pub fn write(
        &self,
        blobs: &dyn Blobs,
        images: &[Named<'_>],
        epoch: i64,
    ) -> Result<(), OutputError> {
        match self {
            Output::OciDir(dir) => write_layout(blobs, images, dir),
            Output::DockerArchive(file) => write_docker_archive(blobs, images, file, epoch),
        }
    }
}

impl Output {
    /// Adds the images' referrers (by image name) to an OCI layout: their
    /// blobs and manifests, and an entry in index.json each (no ref name:
    /// found by their `subject`, as OCI image-layout 1.1 has it). A
    /// docker-archive has no place for them.
    pub fn write_referrers(
        &self,
        referrers: &BTreeMap<String, Vec<crate::attach::referrers::Referrer>>,
    ) -> Result<(), OutputError> {
        let Output::OciDir(dir) = self else {
            return Ok(());
        };
        let all: Vec<&crate::attach::referrers::Referrer> = referrers.values().flatten().collect();
        if all.is_empty() {
            return Ok(());
        }
        let blob_dir = dir.join("blobs/sha256");
        for r in &all {
            for b in r.blobs.iter().chain(std::iter::once(&r.manifest)) {
                let dest = blob_dir.join(crate::digest::sha256_hex(b));
                if !dest.exists() {
                    atomic_write(&dest, b)?;
                }
            }
        }
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(io_at(&index_path))?;
        let mut index: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| OutputError::BadIndex {
                path: index_path.clone(),
                reason: e.to_string(),
            })?;
        let ours: BTreeSet<String> = all.iter().map(|r| r.digest()).collect();
        let mut manifests: Vec<serde_json::Value> = index["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d["digest"].as_str().is_none_or(|x| !ours.contains(x)))
            .collect();
        for r in &all {
            let mut d = serde_json::json!({
                "mediaType": crate::attach::referrers::MANIFEST,
                "digest": r.digest(),
                "size": r.manifest.len(),
                "artifactType": r.artifact_type,
            });
            if !r.annotations.is_empty() {
                d["annotations"] = serde_json::json!(r.annotations);
            }
            manifests.push(d);
        }
        index["manifests"] = serde_json::Value::Array(manifests);
        atomic_write(&index_path, &canonical_json(&index))
    }
}

fn manifest_descriptor(name: &str, record: &ImageRecord) -> Descriptor {
    let mut d = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(Digest::from_str(&record.manifest).expect("record digests are valid"))
        .size(record.manifest_size)
        .build()
        .expect("a descriptor with all required fields builds");
    d.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        name.to_string(),
    )])));
    d
}

fn all_blobs(images: &[Named<'_>]) -> BTreeSet<String> {
    images.iter().flat_map(|i| i.record.blobs()).collect()
}

/// Writes (or adds to) an OCI image layout at `dir`. Blobs first, then
/// index.json by rename, so a reader never sees a name without its blobs.
/// Entries of `index.json` with other names are kept; same names are replaced.
pub fn write_layout(
    blobs: &dyn Blobs,
    images: &[Named<'_>],
    dir: &Path,
) -> Result<(), OutputError> {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(io_at(&blob_dir))?;
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let mode = new_file_mode(&blob_dir)?;
    for hex in all_blobs(images) {
        let dest = blob_dir.join(&hex);
        let src = blobs.blob_path(&hex);
        let same_size = match (fs::metadata(&dest), fs::metadata(&src)) {
            (Ok(d), Ok(s)) => d.len() == s.len(),
            _ => false,
        };
        if !same_size {
            link_or_copy(&src, &dest, mode)?;
        }
    }
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Descriptor> = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|e| OutputError::BadIndex {
                path: index_path.clone(),
                reason: e.to_string(),
            })?
            .manifests()
            .clone(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_at(&index_path)(e)),
    };
    let ours: BTreeSet<&str> = images.iter().map(|i| i.name).collect();
    manifests.retain(|d| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .is_none_or(|n| !ours.contains(n.as_str()))
    });
    manifests.extend(images.iter().map(|i| manifest_descriptor(i.name, i.record)));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index with all required fields builds");
    atomic_write(&index_path, &canonical_json(&index))
}

/// A temporary file in `dir`, mode 0666 less the umask as any file a
/// program creates (a plain temporary file would be 0600 whatever the
/// umask), to be renamed into place when whole.
fn new_file(dir: &Path) -> Result<tempfile::NamedTempFile, OutputError> {
    tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io_at(dir))
}

/// The mode a new file gets in `dir`: 0666 less the umask.
fn new_file_mode(dir: &Path) -> Result<u32, OutputError> {
    use std::os::unix::fs::PermissionsExt;
    let probe = new_file(dir)?;
    let meta = probe.as_file().metadata().map_err(io_at(probe.path()))?;
    Ok(meta.permissions().mode() & 0o7777)
}

/// Hard-links a blob out of the store (blobs are immutable) when it has
/// the mode a new file gets here, else copies it with that mode.
fn link_or_copy(src: &Path, dest: &Path, mode: u32) -> Result<(), OutputError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    let mut linked = fs::hard_link(src, &tmp).is_ok();
    if linked && fs::metadata(&tmp).map_or(0, |m| m.permissions().mode() & 0o7777) != mode {
        // A link shares the store's mode, which another umask made; the
        // copy must not write through it.
        fs::remove_file(&tmp).map_err(io_at(&tmp))?;
        linked = false;
    }
    if !linked {
        fs::copy(src, &tmp).map_err(io_at(src))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_at(&tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, dest).map_err(io_at(dest))
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    use std::io::Write;
    let mut tmp = new_file(crate::fsutil::parent_dir(path))?;
    tmp.write_all(bytes).map_err(io_at(path))?;
    tmp.persist(path).map_err(|e| io_at(path)(e.error))?;
    Ok(())
}

/// Writes a docker-archive tarball: `manifest.json` for `docker load`, and
/// `oci-layout` with `index.json` so OCI tools read the same file. zstd
/// layers are there a second time as plain tars, for `docker load`.
pub fn write_docker_archive(
    blobs: &dyn Blobs,
    images: &[Named<'_>],
    file: &Path,
    epoch: i64,
) -> Result<(), OutputError> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = new_file(dir)?;
    let mut b = tar::Builder::new(io::BufWriter::new(tmp));
    let mtime = u64::try_from(epoch).unwrap_or(0);
    let add = |b: &mut tar::Builder<io::BufWriter<tempfile::NamedTempFile>>,
               path: &str,
               size: u64,
               data: &mut dyn io::Read|
     -> Result<(), OutputError> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_size(size);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).map_err(io_at(file))
    };
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_mode(0o755);
    dir_header.set_uid(0);
    dir_header.set_gid(0);
    dir_header.set_size(0);
    dir_header.set_mtime(mtime);
    dir_header.set_entry_type(tar::EntryType::Directory);
    for d in ["blobs/", "blobs/sha256/"] {
        b.append_data(&mut dir_header.clone(), d, io::empty())
            .map_err(io_at(file))?;
    }
    let mut written = all_blobs(images);
    for hex in &written {
        let src = blobs.blob_path(hex);
        let mut f = File::open(&src).map_err(io_at(&src))?;
        let size = f.metadata().map_err(io_at(&src))?.len();
        add(&mut b, &format!("blobs/sha256/{hex}"), size, &mut f)?;
    }
    // `docker load` before Docker 23 cannot decompress zstd: such layers go
    // in as their plain tar too, named by their diff_id (as Docker 25's
    // `docker save` names layers), and manifest.json points there. The
    // OCI layout keeps the zstd blobs, so pushes and digests are unchanged.
    let mut plain: HashMap<String, String> = HashMap::new();
    for l in images.iter().flat_map(|i| i.record.layers.iter()) {
        let zstd = crate::layer::compress::layer_compression(&l.media_type)
            .is_ok_and(|c| c == Some(crate::layer::Compression::Zstd));
        if !zstd {
            continue;
        }
        let diff_hex = hex_of(&l.diff_id);
        plain.insert(l.digest.clone(), format!("blobs/sha256/{diff_hex}"));
        if !written.insert(diff_hex.clone()) {
            continue;
        }
        let src = blobs.blob_path(&hex_of(&l.digest));
        let f = io::BufReader::new(File::open(&src).map_err(io_at(&src))?);
        let mut tar = crate::layer::compress::decompress(Some(crate::layer::Compression::Zstd), f)
            .map_err(io_at(&src))?;
        let mut spool = tempfile::tempfile_in(dir).map_err(io_at(dir))?;
        let size = io::copy(&mut tar, &mut spool).map_err(io_at(&src))?;
        io::Seek::rewind(&mut spool).map_err(io_at(dir))?;
        add(
            &mut b,
            &format!("blobs/sha256/{diff_hex}"),
            size,
            &mut spool,
        )?;
    }
    let manifest: Vec<BTreeMap<&str, serde_json::Value>> = images
        .iter()
        .map(|i| {
            BTreeMap::from([
                (
                    "Config",
                    format!("blobs/sha256/{}", hex_of(&i.record.config)).into(),
                ),
                ("RepoTags", i.repo_tags.clone().into()),
                (
                    "Layers",
                    i.record
                        .layers
                        .iter()
                        .map(|l| {
                            plain
                                .get(&l.digest)
                                .cloned()
                                .unwrap_or_else(|| format!("blobs/sha256/{}", hex_of(&l.digest)))
                        })
                        .collect::<Vec<_>>()
                        .into(),
                ),
            ])
        })
        .collect();
    let manifest_json = serde_json::to_vec(&manifest).expect("JSON serialises");
    add(
        &mut b,
        "manifest.json",
        manifest_json.len() as u64,
        &mut &manifest_json[..],
    )?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(&mut b, "oci-layout", layout.len() as u64, &mut &layout[..])?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(
            images
                .iter()
                .map(|i| manifest_descriptor(i.name, i.record))
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("an index with all required fields builds");
    let index_json = canonical_json(&index);
    add(
        &mut b,
        "index.json",
        index_json.len() as u64,
        &mut &index_json[..],
    )?;
    let tmp = b
        .into_inner()
        .map_err(io_at(file))?
        .into_inner()
        .map_err(|e| io_at(file)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io_at(file))?;
    tmp.persist(file).map_err(|e| OutputError::Io {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse() {
        assert_eq!(
            "oci:out".parse::<Output>().unwrap(),
            Output::OciDir("out".into())
        );
        assert_eq!(
            "docker-archive:/tmp/x.tar".parse::<Output>().unwrap(),
            Output::DockerArchive("/tmp/x.tar".into())
        );
        assert!("dir:x".parse::<Output>().is_err());
        assert!("oci:".parse::<Output>().is_err());
    }
}
