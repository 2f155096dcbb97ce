//! Applying OCI layers to a directory: the groundwork for materialising a
//! parent image as a root filesystem.
//!
//! Each layer is read in one streaming pass (gzip, zstd or plain tar) and
//! applied as the OCI image spec's "Applying Changesets" says: entries are
//! created or replaced (unlinked first, never written through), `.wh.NAME`
//! removes `NAME` from the layers below, and `.wh..wh..opq` empties its
//! directory of what the layers below put there.
//!
//! Nothing is ever written outside the root:
//! - names are cleaned lexically; a `..` that climbs out of the root is an
//!   error naming the entry, and absolute names are read from the root;
//! - the parent directories of an entry are resolved one component at a
//!   time with `lstat`; a symlink among them is resolved *inside the root*
//!   (an absolute target starts again from the root, `..` stops at the
//!   root), the way OCI runtimes' "securejoin" and containerd do, so images
//!   whose `lib` is a link to `usr/lib` unpack as they run;
//! - the last component is never followed: whatever is there is unlinked
//!   (a directory is kept only when a directory replaces it);
//! - hard-link targets are resolved the same way and must exist in the root.
//!
//! The kernel is only ever handed paths whose parents were just checked to
//! be real directories, so a hostile layer cannot make it follow a link.
//! (A process racing with the unpacker on the same tree is out of scope.)

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use tar::EntryType;

/// Whiteout prefix: `dir/.wh.name` removes `dir/name`.
const WHITEOUT: &[u8] = super::tar::WHITEOUT_PREFIX.as_bytes();
/// Names with this prefix are the whiteout format's own metadata.
const WHITEOUT_META: &[u8] = b".wh..wh.";
/// `dir/.wh..wh..opq` hides everything the lower layers have in `dir`.
const OPAQUE: &[u8] = super::tar::OPAQUE_MARKER.as_bytes();
/// As Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: u32 = 40;
const COPY_BUFFER: usize = 128 * 1024;

/// How layers are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpackOptions {
    /// Set owners from the headers (needs root). Without it, everything
    /// belongs to the current user, set-uid and set-gid bits of files are
    /// dropped, and device files and FIFOs are skipped (counted).
    pub chown: bool,
    /// Apply extended attributes. Not supported yet: std cannot set them, so
    /// entries that carry some are counted in [`ApplyStats::xattrs_skipped`]
    /// whatever this says.
    pub xattrs: bool,
}

impl UnpackOptions {
    /// Owners and attributes when running as root, neither otherwise.
    pub fn for_current_user() -> UnpackOptions {
        let root = running_as_root();
        UnpackOptions {
            chown: root,
            xattrs: root,
        }
    }
}

/// A chown to an id a user namespace does not map fails with EINVAL: the
/// file keeps the (mapped) root owner, as rootless podman does without
/// subordinate ids.
fn unmapped_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Whether the effective user id is 0 (read from `/proc/self/status`;
/// false when that cannot be read).
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// What applying a layer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device files and FIFOs made.
    pub specials: u64,
    /// Device files and FIFOs not made: not root, or `mknod` failed.
    pub specials_skipped: u64,
    /// `.wh.` entries (whatever they found to remove).
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaques: u64,
    /// Entries whose extended attributes were not applied.
    pub xattrs_skipped: u64,
    /// Entries of other types (and whiteout metadata) left out.
    pub ignored: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries a path filter left out ([`apply_tar_except`]).
    pub filtered: u64,
}

impl std::ops::AddAssign for ApplyStats {
    fn add_assign(&mut self, o: ApplyStats) {
        self.files += o.files;
        self.filtered += o.filtered;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hardlinks += o.hardlinks;
        self.specials += o.specials;
        self.specials_skipped += o.specials_skipped;
        self.whiteouts += o.whiteouts;
        self.opaques += o.opaques;
        self.xattrs_skipped += o.xattrs_skipped;
        self.ignored += o.ignored;
        self.bytes += o.bytes;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{}: cannot unpack a layer of media type {media_type:?}", blob.display())]
    MediaType { blob: PathBuf, media_type: String },
    #[error("{}: reading the layer: {source}", blob.display())]
    Read { blob: PathBuf, source: io::Error },
    #[error("{}: entry {entry:?} {why}", blob.display())]
    Escapes {
        blob: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("{}: entry {entry:?}: {problem}", blob.display())]
    Invalid {
        blob: PathBuf,
        entry: String,
        problem: String,
    },
    #[error("{}: entry {entry:?}: {}: {source}", blob.display(), path.display())]
    Write {
        blob: PathBuf,
        entry: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: setting the metadata of directory {}: {source}", blob.display(), path.display())]
    Finish {
        blob: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {source}", root.display())]
    Root { root: PathBuf, source: io::Error },
    #[error("{}: not an empty directory; images are unpacked into an empty one", root.display())]
    NotEmpty { root: PathBuf },
}

/// Applies layers in order into `root`, which must be empty or missing.
pub fn unpack_image(
    layers: &[(PathBuf, String)],
    root: &Path,
    opts: &UnpackOptions,
) -> Result<ApplyStats, UnpackError> {
    let root_err = |source| UnpackError::Root {
        root: root.to_path_buf(),
        source,
    };
    match fs::read_dir(root) {
        Ok(mut children) => {
            if children.next().is_some() {
                return Err(UnpackError::NotEmpty {
                    root: root.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(root_err)?;
        }
        Err(e) => return Err(root_err(e)),
    }
    let mut total = ApplyStats::default();
    for (blob, media_type) in layers {
        total += apply_layer(blob, media_type, root, opts)?;
    }
    Ok(total)
}

/// Applies one layer blob (gzip, zstd or plain tar, by media type) on top of
/// `root`, an existing directory.
pub fn apply_layer(
    blob: &Path,
    media_type: &str,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<ApplyStats, UnpackError> {
    let reader = open_layer(blob, media_type)?;
    apply_tar(reader, blob, root, opts)
}

/// Applies a tar stream on top of `root`, an existing directory, with the
/// same checks as a layer; `source` names it in errors (a `.deb`'s
/// data.tar, say).
pub fn apply_tar(
    reader: impl io::Read,
    source: &Path,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<ApplyStats, UnpackError> {
    apply_tar_except(reader, source, root, opts, &|_, _| false)
}

/// [`apply_tar`], leaving out the entries `skip` names: it is given each
/// entry's path as dpkg sees it (absolute, `/usr/share/doc/x`) and whether
/// the entry is a directory or a symlink (dpkg's path filters).
pub fn apply_tar_except(
    reader: impl io::Read,
    source: &Path,
    root: &Path,
    opts: &UnpackOptions,
    skip: &dyn Fn(&str, bool) -> bool,
) -> Result<ApplyStats, UnpackError> {
    let blob = source;
    let root_err = |source| UnpackError::Root {
        root: root.to_path_buf(),
        source,
    };
    let canonical = fs::canonicalize(root).map_err(root_err)?;
    if !fs::metadata(&canonical).map_err(root_err)?.is_dir() {
        return Err(root_err(io::Error::from(io::ErrorKind::NotADirectory)));
    }
    let read_err = |source| UnpackError::Read {
        blob: blob.to_path_buf(),
        source,
    };
    let mut applier = Applier::new(canonical, *opts);
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let text = String::from_utf8_lossy(&raw);
        let bare = text.trim_start_matches("./").trim_start_matches('/');
        if skip(&format!("/{bare}"), kind.is_dir() || kind.is_symlink()) {
            applier.stats.filtered += 1;
            continue;
        }
        applier
            .entry(&mut entry, &raw)
            .map_err(|fail| fail.into_error(blob, String::from_utf8_lossy(&raw).into_owned()))?;
    }
    applier.finish(blob)?;
    Ok(applier.stats)
}

/// The decompressed tar stream of a layer blob.
pub(crate) fn open_layer(blob: &Path, media_type: &str) -> Result<Box<dyn Read>, UnpackError> {
    let compression =
        super::compress::layer_compression(media_type).map_err(|e| UnpackError::MediaType {
            blob: blob.to_path_buf(),
            media_type: e.media_type,
        })?;
    let read_err = |source| UnpackError::Read {
        blob: blob.to_path_buf(),
        source,
    };
    let f = BufReader::with_capacity(256 * 1024, File::open(blob).map_err(read_err)?);
    super::compress::decompress(compression, f).map_err(read_err)
}

/// Why one entry could not be applied; the caller adds the blob and entry.
enum Fail {
    /// The layer itself could not be read.
    Read(io::Error),
    Io(PathBuf, io::Error),
    Escapes(&'static str),
    Invalid(String),
}

impl Fail {
    fn into_error(self, blob: &Path, entry: String) -> UnpackError {
        let blob = blob.to_path_buf();
        match self {
            Fail::Read(source) => UnpackError::Read { blob, source },
            Fail::Io(path, source) => UnpackError::Write {
                blob,
                entry,
                path,
                source,
            },
            Fail::Escapes(why) => UnpackError::Escapes { blob, entry, why },
            Fail::Invalid(problem) => UnpackError::Invalid {
                blob,
                entry,
                problem,
            },
        }
    }
}

fn io_fail(path: &Path) -> impl FnOnce(io::Error) -> Fail + '_ {
    move |e| Fail::Io(path.to_path_buf(), e)
}

/// A name's components, cleaned lexically: no empty, `.` or `..` parts.
fn clean(raw: &[u8], why: &'static str) -> Result<Vec<OsString>, Fail> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Fail::Escapes(why));
                }
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

/// For messages: a path inside the root as the image sees it.
fn shown(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Attributes from an entry's header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    xattrs: bool,
}

fn meta<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Meta, Fail> {
    let bad = |what: &str, err: io::Error| Fail::Invalid(format!("bad {what} in header: {err}"));
    let h = e.header();
    let mode = h.mode().map_err(|err| bad("mode", err))? & 0o7777;
    let uid = h.uid().map_err(|err| bad("uid", err))?;
    let gid = h.gid().map_err(|err| bad("gid", err))?;
    let mtime = h.mtime().map_err(|err| bad("mtime", err))?;
    let mut m = Meta {
        mode,
        uid: u32::try_from(uid).map_err(|_| Fail::Invalid(format!("uid {uid} is too large")))?,
        gid: u32::try_from(gid).map_err(|_| Fail::Invalid(format!("gid {gid} is too large")))?,
        mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(mtime),
        xattrs: false,
    };
    if let Some(pax) = e.pax_extensions().map_err(Fail::Read)? {
        for ext in pax {
            let ext = ext.map_err(Fail::Read)?;
            let (Ok(key), Ok(value)) = (ext.key(), ext.value()) else {
                continue;
            };
            match key {
                "uid" | "gid" => {
                    let id: u32 = value
                        .parse()
                        .map_err(|_| Fail::Invalid(format!("bad PAX {key} {value:?}")))?;
                    if key == "uid" {
                        m.uid = id;
                    } else {
                        m.gid = id;
                    }
                }
                "mtime" => {
                    m.mtime = pax_time(value)
                        .ok_or_else(|| Fail::Invalid(format!("bad PAX mtime {value:?}")))?;
                }
                k if k.starts_with("SCHILY.xattr.") || k.starts_with("LIBARCHIVE.xattr.") => {
                    m.xattrs = true;
                }
                _ => {}
            }
        }
    }
    Ok(m)
}

/// A PAX time: `[-]SECONDS[.FRACTION]`.
fn pax_time(s: &str) -> Option<SystemTime> {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    let d = Duration::new(secs, nanos);
    if negative {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_add(d)
    }
}

/// A directory's attributes, set once its contents are written.
struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

struct Applier {
    /// Canonical, absolute.
    root: PathBuf,
    opts: UnpackOptions,
    stats: ApplyStats,
    /// What this layer wrote (resolved paths relative to the root): `true`
    /// for entries, `false` for their ancestors. Whiteouts and opaque
    /// markers spare these, whatever the order of the entries.
    mine: HashMap<PathBuf, bool>,
    /// Directory entries, in order, and where each path is in `dirs`.
    dirs: Vec<DirMeta>,
    dir_index: HashMap<PathBuf, usize>,
    /// The last parent resolved: its cleaned components and real path.
    /// Dropped whenever anything is removed.
    cache: Option<(Vec<OsString>, PathBuf)>,
    buf: Vec<u8>,
}

impl Applier {
    fn new(root: PathBuf, opts: UnpackOptions) -> Applier {
        Applier {
            root,
            opts,
            stats: ApplyStats::default(),
            mine: HashMap::new(),
            dirs: Vec::new(),
            dir_index: HashMap::new(),
            cache: None,
            buf: vec![0; COPY_BUFFER],
        }
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<(), Fail> {
        let mut kind = e.header().entry_type();
        match kind {
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(()),
            _ => {}
        }
        let comps = clean(raw, "climbs out of the root with `..`")?;
        if let Some((name, dir)) = comps.split_last() {
            let name = name.as_bytes();
            if name == OPAQUE {
                return self.opaque(dir);
            } else if name.starts_with(WHITEOUT_META) {
                self.stats.ignored += 1;
                return Ok(());
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                return self.whiteout(dir, hidden);
            }
        }
        // Old (v7) archives mark directories with a trailing slash only.
        if kind == EntryType::Regular && raw.ends_with(b"/") && e.header().as_ustar().is_none() {
            kind = EntryType::Directory;
        }
        let meta = meta(e)?;
        if meta.xattrs {
            self.stats.xattrs_skipped += 1;
        }
        match kind {
            EntryType::Directory => self.dir(&comps, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&comps, e, meta)
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Fail::Invalid("symbolic link without a target".into()))?
                    .into_owned();
                self.symlink(&comps, &target, meta)
            }
            EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Fail::Invalid("hard link without a target".into()))?
                    .into_owned();
                self.hardlink(&comps, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = e.header();
                let dev = (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                self.special(&comps, kind, dev, meta)
            }
            _ => {
                self.stats.ignored += 1;
                Ok(())
            }
        }
    }

    // --- resolving paths inside the root ---

    /// Resolves `comps` to a real directory inside the root, following
    /// symlinks inside the root; returns its path relative to the root.
    /// Missing directories are made (0755) when `create`; otherwise a
    /// missing or non-directory component gives `None`.
    fn resolve_dir(&mut self, comps: &[OsString], create: bool) -> Result<Option<PathBuf>, Fail> {
        if let Some((key, rel)) = &self.cache
            && key.as_slice() == comps
        {
            return Ok(Some(rel.clone()));
        }
        let mut rel = PathBuf::new();
        let mut todo: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    // At the root, `..` is the root.
                    rel.pop();
                    continue;
                }
                _ => {}
            }
            let next = rel.join(&c);
            let abs = self.root.join(&next);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => rel = next,
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Fail::Invalid(format!(
                            "too many levels of symbolic links at {}",
                            shown(&next)
                        )));
                    }
                    let target = fs::read_link(&abs).map_err(io_fail(&abs))?;
                    let target = target.as_os_str().as_bytes();
                    if target.starts_with(b"/") {
                        rel = PathBuf::new();
                    }
                    for part in target.rsplit(|b| *b == b'/') {
                        todo.push_front(OsStr::from_bytes(part).to_os_string());
                    }
                }
                Ok(_) if create => {
                    return Err(Fail::Invalid(format!(
                        "{} is not a directory",
                        shown(&next)
                    )));
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    let parent = self.root.join(&rel);
                    self.in_dir(&parent, || fs::DirBuilder::new().mode(0o755).create(&abs))
                        .map_err(io_fail(&abs))?;
                    // Whatever the umask.
                    fs::set_permissions(&abs, Permissions::from_mode(0o755))
                        .map_err(io_fail(&abs))?;
                    rel = next;
                }
                Err(e) => return Err(Fail::Io(abs, e)),
            }
        }
        self.cache = Some((comps.to_vec(), rel.clone()));
        Ok(Some(rel))
    }

    /// The real parent directory of an entry (made if missing) and the
    /// entry's path relative to the root. `comps` is not empty.
    fn place(&mut self, comps: &[OsString]) -> Result<(PathBuf, PathBuf), Fail> {
        let (name, dir) = comps.split_last().expect("not the root");
        let parent = self.resolve_dir(dir, true)?.expect("made when missing");
        let rel = parent.join(name);
        Ok((parent, rel))
    }

    /// Makes room for a new entry at `rel` (never following what is there):
    /// removes it, unless it is a directory and `keep_dir`. Returns whether a
    /// directory is kept.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<bool, Fail> {
        let abs = self.root.join(rel);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() && keep_dir => Ok(true),
            Ok(m) => {
                self.remove(rel, m.is_dir())?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Fail::Io(abs, e)),
        }
    }

    /// Removes `rel` (a whole tree when `is_dir`). Symlinks are removed, not
    /// followed (std's `remove_dir_all` does not follow them either).
    fn remove(&mut self, rel: &Path, is_dir: bool) -> Result<(), Fail> {
        self.cache = None;
        let abs = self.root.join(rel);
        let parent = self.root.join(rel.parent().unwrap_or(Path::new("")));
        let result = if is_dir {
            self.in_dir(&parent, || fs::remove_dir_all(&abs))
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::PermissionDenied && !self.opts.chown {
                        // Unprivileged: read-only directories of our own.
                        make_tree_writable(&abs)?;
                        self.in_dir(&parent, || fs::remove_dir_all(&abs))
                    } else {
                        Err(e)
                    }
                })
        } else {
            self.in_dir(&parent, || fs::remove_file(&abs))
        };
        result.map_err(io_fail(&abs))
    }

    /// Runs `op`, which changes entries of `dir`. Without privileges, a
    /// directory of ours made read-only by its header is made writable for
    /// the one operation (root needs no such help).
    fn in_dir<T>(&self, dir: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !self.opts.chown => {
                let m = fs::symlink_metadata(dir)?;
                let mode = m.mode() & 0o7777;
                if !m.is_dir() || mode & 0o700 == 0o700 {
                    return Err(e);
                }
                fs::set_permissions(dir, Permissions::from_mode(mode | 0o700))?;
                let result = op();
                fs::set_permissions(dir, Permissions::from_mode(mode))?;
                result
            }
            other => other,
        }
    }

    /// Records that this layer wrote `rel`.
    fn mark_mine(&mut self, rel: &Path) {
        self.mine.insert(rel.to_path_buf(), true);
        self.mark_mine_ancestors(rel);
    }

    fn mark_mine_ancestors(&mut self, rel: &Path) {
        for ancestor in rel.ancestors().skip(1) {
            if self.mine.contains_key(ancestor) {
                break;
            }
            self.mine.insert(ancestor.to_path_buf(), false);
        }
    }

    /// The mode to set: without privileges, files do not keep set-uid or
    /// set-gid bits (they would be ours), directories keep set-gid.
    fn mode(&self, mode: u32, dir: bool) -> u32 {
        match (self.opts.chown, dir) {
            (true, _) => mode,
            (false, true) => mode & !0o4000,
            (false, false) => mode & !0o6000,
        }
    }

    // --- entries ---

    fn dir(&mut self, comps: &[OsString], m: Meta) -> Result<(), Fail> {
        let rel = if comps.is_empty() {
            PathBuf::new()
        } else {
            let (parent, rel) = self.place(comps)?;
            if !self.clear(&rel, true)? {
                let abs = self.root.join(&rel);
                // Owner-only until the final pass sets the header's mode.
                self.in_dir(&self.root.join(&parent), || {
                    fs::DirBuilder::new().mode(0o700).create(&abs)
                })
                .map_err(io_fail(&abs))?;
            }
            self.mark_mine(&rel);
            rel
        };
        let d = DirMeta {
            rel: rel.clone(),
            mode: self.mode(m.mode, true),
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
        };
        match self.dir_index.get(&rel) {
            Some(&i) => self.dirs[i] = d,
            None => {
                self.dir_index.insert(rel, self.dirs.len());
                self.dirs.push(d);
            }
        }
        self.stats.dirs += 1;
        Ok(())
    }

    fn file<R: Read>(&mut self, comps: &[OsString], data: &mut R, m: Meta) -> Result<(), Fail> {
        if comps.is_empty() {
            return Err(Fail::Invalid("the root can only be a directory".into()));
        }
        let (parent, rel) = self.place(comps)?;
        self.clear(&rel, false)?;
        let abs = self.root.join(&rel);
        // create_new: O_EXCL, which never follows a link.
        let mut f = self
            .in_dir(&self.root.join(&parent), || {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&abs)
            })
            .map_err(io_fail(&abs))?;
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::Read(e)),
            };
            f.write_all(&self.buf[..n]).map_err(io_fail(&abs))?;
            written += n as u64;
        }
        // Owner first: chown clears set-uid bits.
        if self.opts.chown {
            unmapped_ok(std::os::unix::fs::fchown(&f, Some(m.uid), Some(m.gid)))
                .map_err(io_fail(&abs))?;
        }
        f.set_permissions(Permissions::from_mode(self.mode(m.mode, false)))
            .map_err(io_fail(&abs))?;
        f.set_times(FileTimes::new().set_accessed(m.mtime).set_modified(m.mtime))
            .map_err(io_fail(&abs))?;
        self.mark_mine(&rel);
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn symlink(&mut self, comps: &[OsString], target: &[u8], m: Meta) -> Result<(), Fail> {
        if comps.is_empty() {
            return Err(Fail::Invalid("the root can only be a directory".into()));
        }
        let (parent, rel) = self.place(comps)?;
        self.clear(&rel, false)?;
        let abs = self.root.join(&rel);
        // The target is the image's business: it is never followed here.
        self.in_dir(&self.root.join(&parent), || {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), &abs)
        })
        .map_err(io_fail(&abs))?;
        if self.opts.chown {
            unmapped_ok(std::os::unix::fs::lchown(&abs, Some(m.uid), Some(m.gid)))
                .map_err(io_fail(&abs))?;
        }
        self.mark_mine(&rel);
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, comps: &[OsString], target: &[u8]) -> Result<(), Fail> {
        let tcomps = clean(target, "is a hard link to a path outside the root")?;
        let missing = || {
            Fail::Invalid(format!(
                "hard link target {:?} is not in the root",
                String::from_utf8_lossy(target)
            ))
        };
        let Some((tname, tdir)) = tcomps.split_last() else {
            return Err(Fail::Invalid("hard link to the root".into()));
        };
        if comps.is_empty() {
            return Err(Fail::Invalid("the root can only be a directory".into()));
        }
        let tparent = self.resolve_dir(tdir, false)?.ok_or_else(missing)?;
        let trel = tparent.join(tname);
        let tabs = self.root.join(&trel);
        match fs::symlink_metadata(&tabs) {
            Ok(m) if m.is_dir() => {
                return Err(Fail::Invalid(format!(
                    "hard link to a directory ({})",
                    shown(&trel)
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(Fail::Io(tabs, e)),
        }
        let (parent, rel) = self.place(comps)?;
        if rel == trel {
            return Ok(());
        }
        if trel.starts_with(&rel) {
            return Err(Fail::Invalid(format!(
                "hard link would replace the directory holding its target {}",
                shown(&trel)
            )));
        }
        self.clear(&rel, false)?;
        let abs = self.root.join(&rel);
        // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked
        // itself, not followed.
        self.in_dir(&self.root.join(&parent), || fs::hard_link(&tabs, &abs))
            .map_err(io_fail(&abs))?;
        self.mark_mine(&rel);
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Device files and FIFOs, through `mknod(1)` (std has no `mknod`): only
    /// as root, and skipped (counted), never fatal, when that fails.
    fn special(
        &mut self,
        comps: &[OsString],
        kind: EntryType,
        (major, minor): (u32, u32),
        m: Meta,
    ) -> Result<(), Fail> {
        if !self.opts.chown || comps.is_empty() {
            self.stats.specials_skipped += 1;
            return Ok(());
        }
        let (_, rel) = self.place(comps)?;
        self.clear(&rel, false)?;
        let abs = self.root.join(&rel);
        // By absolute path: a missing mknod counts as a skipped special.
        let Ok(mknod) = crate::sandbox::tools::host_tool(crate::sandbox::tools::Tool::Mknod) else {
            self.stats.specials_skipped += 1;
            return Ok(());
        };
        let mut cmd = Command::new(mknod);
        cmd.arg(&abs);
        match kind {
            EntryType::Char => cmd.args(["c", &major.to_string(), &minor.to_string()]),
            EntryType::Block => cmd.args(["b", &major.to_string(), &minor.to_string()]),
            _ => cmd.arg("p"),
        };
        let made = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // What mknod made, and nothing else (it does not follow links).
        let is_special = fs::symlink_metadata(&abs).is_ok_and(|meta| {
            let t = meta.file_type();
            !t.is_symlink() && !t.is_dir() && !t.is_file()
        });
        if !made || !is_special {
            self.stats.specials_skipped += 1;
            return Ok(());
        }
        unmapped_ok(std::os::unix::fs::lchown(&abs, Some(m.uid), Some(m.gid)))
            .map_err(io_fail(&abs))?;
        fs::set_permissions(&abs, Permissions::from_mode(m.mode)).map_err(io_fail(&abs))?;
        self.mark_mine(&rel);
        self.stats.specials += 1;
        Ok(())
    }

    /// `dir/.wh.hidden`: removes `dir/hidden` as the lower layers left it.
    fn whiteout(&mut self, dir: &[OsString], hidden: &[u8]) -> Result<(), Fail> {
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(Fail::Invalid("whiteout of no name".into()));
        }
        self.stats.whiteouts += 1;
        let Some(parent) = self.resolve_dir(dir, false)? else {
            return Ok(());
        };
        let rel = parent.join(OsStr::from_bytes(hidden));
        match self.mine.get(&rel) {
            // This layer's own entry: whiteouts only hide lower layers.
            Some(true) => Ok(()),
            // A directory holding entries of this layer: only the rest goes.
            Some(false) => self.prune(&rel),
            None => {
                self.clear(&rel, false)?;
                Ok(())
            }
        }
    }

    /// `dir/.wh..wh..opq`: removes what the lower layers have in `dir`.
    fn opaque(&mut self, dir: &[OsString]) -> Result<(), Fail> {
        let rel = self.resolve_dir(dir, true)?.expect("made when missing");
        self.prune(&rel)?;
        if !rel.as_os_str().is_empty() && !self.mine.contains_key(&rel) {
            self.mine.insert(rel.clone(), false);
            self.mark_mine_ancestors(&rel);
        }
        self.stats.opaques += 1;
        Ok(())
    }

    /// Removes everything under the real directory `rel` that this layer did
    /// not write, keeping (and pruning) directories that hold its entries.
    fn prune(&mut self, rel: &Path) -> Result<(), Fail> {
        self.cache = None;
        let abs = self.root.join(rel);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Fail::Io(abs, e)),
        }
        let mut names = Vec::new();
        for child in fs::read_dir(&abs).map_err(io_fail(&abs))? {
            names.push(child.map_err(io_fail(&abs))?.file_name());
        }
        for name in names {
            let child = rel.join(&name);
            if self.mine.contains_key(&child) {
                self.prune(&child)?;
            } else {
                self.clear(&child, false)?;
            }
        }
        Ok(())
    }

    /// Whether `rel` is a real directory reached through real directories
    /// only (a later entry may have replaced one with a link).
    fn is_real_dir(&self, rel: &Path) -> bool {
        let mut abs = self.root.clone();
        rel.components().all(|c| {
            abs.push(c);
            fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir())
        })
    }

    /// Directories' owners, modes and times, now that their contents are
    /// written.
    fn finish(&mut self, blob: &Path) -> Result<(), UnpackError> {
        for d in &self.dirs {
            if !self.is_real_dir(&d.rel) {
                continue;
            }
            let abs = self.root.join(&d.rel);
            let fail = |source| UnpackError::Finish {
                blob: blob.to_path_buf(),
                path: abs.clone(),
                source,
            };
            if self.opts.chown {
                unmapped_ok(std::os::unix::fs::lchown(&abs, Some(d.uid), Some(d.gid)))
                    .map_err(fail)?;
            }
            let f = File::open(&abs).map_err(fail)?;
            f.set_times(FileTimes::new().set_accessed(d.mtime).set_modified(d.mtime))
                .map_err(fail)?;
            f.set_permissions(Permissions::from_mode(d.mode))
                .map_err(fail)?;
        }
        Ok(())
    }
}

/// Gives the owner `rwx` on every real directory under `abs` (links are not
/// followed), so that an unprivileged user can remove the tree.
fn make_tree_writable(abs: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(abs)?;
    if !m.is_dir() {
        return Ok(());
    }
    if m.mode() & 0o700 != 0o700 {
        fs::set_permissions(abs, Permissions::from_mode((m.mode() & 0o7777) | 0o700))?;
    }
    for child in fs::read_dir(abs)? {
        make_tree_writable(&child?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::FileTypeExt;

    use crate::layer::statcache::StatCache;
    use crate::layer::{BlobOptions, Compression, EntryKind, FileLayer, Ids, walk, write_blob};

    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const T: u64 = 1_600_000_000;

    /// A layer written header by header. Names and link names go in as
    /// raw bytes: tar's own setters refuse `..`, which hostile layers need.
    struct Layer(tar::Builder<Vec<u8>>);

    /// One header for [`Layer::raw`]; [`raw`] gives the usual fields.
    struct Raw<'a> {
        kind: EntryType,
        name: &'a str,
        link: &'a str,
        data: &'a [u8],
        mode: u32,
        ids: (u64, u64),
        mtime: u64,
    }

    /// An entry with no link or data, mode 0644, root's and time `T`.
    fn raw(kind: EntryType, name: &str) -> Raw<'_> {
        Raw {
            kind,
            name,
            link: "",
            data: b"",
            mode: 0o644,
            ids: (0, 0),
            mtime: T,
        }
    }

    impl Layer {
        fn new() -> Layer {
            Layer(tar::Builder::new(Vec::new()))
        }

        fn raw(&mut self, r: Raw<'_>) -> &mut Layer {
            let mut h = tar::Header::new_gnu();
            let g = h.as_gnu_mut().unwrap();
            g.name[..r.name.len()].copy_from_slice(r.name.as_bytes());
            g.linkname[..r.link.len()].copy_from_slice(r.link.as_bytes());
            h.set_entry_type(r.kind);
            h.set_size(r.data.len() as u64);
            h.set_mode(r.mode);
            h.set_uid(r.ids.0);
            h.set_gid(r.ids.1);
            h.set_mtime(r.mtime);
            h.set_cksum();
            self.0.append(&h, r.data).unwrap();
            self
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Layer {
            self.raw(Raw {
                mode,
                ..raw(EntryType::Directory, &format!("{name}/"))
            })
        }

        fn file(&mut self, name: &str, data: &str) -> &mut Layer {
            self.raw(Raw {
                data: data.as_bytes(),
                ..raw(EntryType::Regular, name)
            })
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
            self.raw(Raw {
                link: target,
                mode: 0o777,
                ..raw(EntryType::Symlink, name)
            })
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
            self.raw(Raw {
                link: target,
                ..raw(EntryType::Link, name)
            })
        }

        fn device(&mut self, kind: EntryType, name: &str, dev: (u32, u32)) -> &mut Layer {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o620);
            h.set_uid(0);
            h.set_gid(5);
            h.set_mtime(T);
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
            h.set_cksum();
            self.0.append(&h, &b""[..]).unwrap();
            self
        }

        /// Writes the layer gzipped into `dir`.
        fn finish(&mut self, dir: impl AsRef<Path>, name: &str) -> PathBuf {
            let builder = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
            let tar = builder.into_inner().unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            let path = dir.as_ref().join(name);
            fs::write(&path, gz.finish().unwrap()).unwrap();
            path
        }
    }

    /// What a tree holds, as `ls -l` would say: for each path, its type
    /// (with content or target), mode, owner, mtime, inode and link count.
    #[derive(Debug, Clone, PartialEq)]
    struct Node {
        kind: String,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
        ino: u64,
        nlink: u64,
    }

    fn snapshot(root: &Path) -> BTreeMap<String, Node> {
        fn walk_into(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
            let mut children: Vec<_> = fs::read_dir(dir).unwrap().map(|c| c.unwrap()).collect();
            children.sort_by_key(|c| c.file_name());
            for c in children {
                let path = c.path();
                let m = fs::symlink_metadata(&path).unwrap();
                let t = m.file_type();
                let kind = if t.is_dir() {
                    "dir".to_string()
                } else if t.is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else if t.is_file() {
                    format!(
                        "file {}",
                        String::from_utf8_lossy(&fs::read(&path).unwrap())
                    )
                } else if t.is_fifo() {
                    "fifo".to_string()
                } else if t.is_char_device() {
                    format!("char {},{}", m.rdev() >> 8, m.rdev() & 0xff)
                } else {
                    "other".to_string()
                };
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(
                    rel,
                    Node {
                        kind,
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                        mtime: m.mtime(),
                        ino: m.ino(),
                        nlink: m.nlink(),
                    },
                );
                if t.is_dir() {
                    walk_into(root, &path, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk_into(root, root, &mut out);
        out
    }

    /// Paths and types only.
    fn kinds(root: &Path) -> Vec<String> {
        snapshot(root)
            .into_iter()
            .map(|(p, n)| format!("{p}: {}", n.kind))
            .collect()
    }

    fn root_opts() -> UnpackOptions {
        UnpackOptions {
            chown: running_as_root(),
            xattrs: false,
        }
    }

    /// A scratch directory holding `root/` (where layers go), `outside/`
    /// (which must never change) and `blobs/`.
    struct Scratch {
        dir: tempfile::TempDir,
    }

    impl Scratch {
        fn new() -> Scratch {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("root")).unwrap();
            fs::create_dir(dir.path().join("blobs")).unwrap();
            let outside = dir.path().join("outside");
            fs::create_dir_all(outside.join("sub")).unwrap();
            fs::create_dir(outside.join("w")).unwrap();
            fs::set_permissions(outside.join("w"), Permissions::from_mode(0o700)).unwrap();
            fs::write(outside.join("keep"), "precious").unwrap();
            fs::write(outside.join("sub/inner"), "inner").unwrap();
            Scratch { dir }
        }
        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }
        fn outside(&self) -> PathBuf {
            self.dir.path().join("outside")
        }
        fn blobs(&self) -> PathBuf {
            self.dir.path().join("blobs")
        }
        /// Everything in the scratch directory but the root and the blobs:
        /// nothing there may change.
        fn around(&self) -> BTreeMap<String, Node> {
            let mut all = snapshot(self.dir.path());
            all.retain(|p, _| {
                !["root", "blobs"]
                    .iter()
                    .any(|d| p == d || p.starts_with(&format!("{d}/")))
            });
            all
        }
    }

    /// Hostile layers name these; they must never appear on the host.
    const EVIL: [&str; 3] = [
        "/imgbuild-unpack-evil",
        "/tmp/imgbuild-unpack-evil",
        "/etc/imgbuild-unpack-evil",
    ];

    fn assert_no_evil() {
        for p in EVIL {
            assert!(fs::symlink_metadata(p).is_err(), "{p} was written");
        }
    }

    #[test]
    fn every_type_with_its_metadata() {
        let s = Scratch::new();
        let root = s.root();
        let blob = Layer::new()
            .dir("etc", 0o755)
            // No entry for srv itself: it is made 0755.
            .raw(Raw {
                mode: 0o750,
                ids: (1000, 1001),
                mtime: T + 1,
                ..raw(EntryType::Directory, "/srv/data/")
            })
            .raw(Raw {
                data: b"alpha",
                mode: 0o640,
                ids: (1000, 1001),
                mtime: T + 2,
                ..raw(EntryType::Regular, "srv/data/a.txt")
            })
            .raw(Raw {
                data: b"su",
                mode: 0o4755,
                ..raw(EntryType::Regular, "./usr/bin/su")
            })
            .symlink("usr/bin/sh", "dash")
            .hardlink("srv/data/b.txt", "/srv/data/a.txt")
            .device(EntryType::Fifo, "run/initctl", (0, 0))
            .device(EntryType::Char, "dev/null", (1, 3))
            .finish(s.blobs(), "l.tar.gz");
        let stats = apply_layer(&blob, GZIP, &root, &root_opts()).unwrap();
        let t = snapshot(&root);
        let as_root = running_as_root();

        let data = &t["srv/data"];
        assert_eq!((data.kind.as_str(), data.mode), ("dir", 0o750));
        assert_eq!(
            data.mtime,
            (T + 1) as i64,
            "set after its files were written"
        );
        assert_eq!((t["srv"].kind.as_str(), t["srv"].mode), ("dir", 0o755));
        let a = &t["srv/data/a.txt"];
        assert_eq!(
            (a.kind.as_str(), a.mode, a.mtime),
            ("file alpha", 0o640, (T + 2) as i64)
        );
        let b = &t["srv/data/b.txt"];
        assert_eq!(
            (b.ino, b.nlink, a.nlink),
            (a.ino, 2, 2),
            "one inode, two names"
        );
        assert_eq!(t["usr/bin/sh"].kind, "-> dash");
        assert_eq!(t["etc"].mtime, T as i64);
        if as_root {
            assert_eq!((a.uid, a.gid), (1000, 1001));
            assert_eq!((data.uid, data.gid), (1000, 1001));
            assert_eq!(t["usr/bin/su"].mode, 0o4755);
            assert_eq!(t["run/initctl"].kind, "fifo");
            assert_eq!(t["dev/null"].kind, "char 1,3");
            assert_eq!((t["dev/null"].mode, t["dev/null"].gid), (0o620, 5));
            assert_eq!((stats.specials, stats.specials_skipped), (2, 0));
        }
        assert_eq!(
            (
                stats.files,
                stats.dirs,
                stats.symlinks,
                stats.hardlinks,
                stats.bytes
            ),
            (2, 2, 1, 1, 7)
        );
    }

    #[test]
    fn without_chown_files_are_ours_without_setuid_and_devices_are_skipped() {
        let s = Scratch::new();
        let root = s.root();
        let blob = Layer::new()
            .raw(Raw {
                data: b"su",
                mode: 0o6755,
                ids: (1000, 1001),
                ..raw(EntryType::Regular, "bin/su")
            })
            .raw(Raw {
                mode: 0o2775,
                ids: (0, 8),
                ..raw(EntryType::Directory, "var/mail/")
            })
            .device(EntryType::Fifo, "run/fifo", (0, 0))
            .device(EntryType::Char, "dev/null", (1, 3))
            .finish(s.blobs(), "l.tar.gz");
        let opts = UnpackOptions {
            chown: false,
            xattrs: false,
        };
        let stats = apply_layer(&blob, GZIP, &root, &opts).unwrap();
        let t = snapshot(&root);
        let me = fs::metadata(s.dir.path()).unwrap().uid();
        assert_eq!((t["bin/su"].mode, t["bin/su"].uid), (0o755, me));
        assert_eq!(t["var/mail"].mode, 0o2775, "set-gid directories stay");
        assert!(!t.contains_key("run/fifo") && !t.contains_key("dev/null"));
        assert_eq!((stats.specials, stats.specials_skipped), (0, 2));
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers_only() {
        let s = Scratch::new();
        let root = s.dir.path().join("image");
        let lower = Layer::new()
            .dir("a", 0o755)
            .file("a/x", "x")
            .file("a/y", "y")
            .dir("b", 0o755)
            .dir("b/sub", 0o755)
            .file("b/sub/z", "z")
            .file("c", "c")
            .dir("d", 0o755)
            .file("d/k", "k")
            .dir("d/sub", 0o755)
            .file("d/sub/old", "old")
            .dir("e", 0o755)
            .file("e/old", "old")
            .dir("f", 0o755)
            .file("f/old", "old")
            .file("g", "g")
            .finish(s.blobs(), "lower.tar.gz");
        let upper = Layer::new()
            .file("a/.wh.x", "")
            .file(".wh.b", "")
            .file("./.wh.c", "")
            // Entries of this layer, then the opaque marker: they stay.
            .file("d/new", "new")
            .dir("d/sub", 0o700)
            .file("d/sub/new2", "new2")
            .file("d/.wh..wh..opq", "")
            // The marker first, then the layer's entries.
            .file("e/.wh..wh..opq", "")
            .file("e/new", "new")
            // A file written without its directory's entry, then a whiteout
            // of that directory: only what the lower layer had goes.
            .file("f/mine", "mine")
            .file(".wh.f", "")
            // A whiteout of this layer's own file does not remove it.
            .file("h", "h")
            .file(".wh.h", "")
            .file(".wh.never-there", "")
            .file(".wh..wh.plnk", "")
            .finish(s.blobs(), "upper.tar.gz");
        let stats = unpack_image(
            &[(lower, GZIP.to_string()), (upper, GZIP.to_string())],
            &root,
            &root_opts(),
        )
        .unwrap();
        assert_eq!(
            kinds(&root),
            [
                "a: dir",
                "a/y: file y",
                "d: dir",
                "d/new: file new",
                "d/sub: dir",
                "d/sub/new2: file new2",
                "e: dir",
                "e/new: file new",
                "f: dir",
                "f/mine: file mine",
                "g: file g",
                "h: file h",
            ]
        );
        assert_eq!(snapshot(&root)["d/sub"].mode, 0o700);
        assert_eq!((stats.whiteouts, stats.opaques, stats.ignored), (6, 2, 1));
    }

    #[test]
    fn types_replace_each_other_without_writing_through() {
        let s = Scratch::new();
        let root = s.dir.path().join("image");
        let lower = Layer::new()
            .dir("p", 0o755)
            .file("p/inner", "inner")
            .file("q", "q")
            .file("r1", "shared")
            .hardlink("r2", "r1")
            .symlink("s", "p")
            .dir("t", 0o755)
            .file("t/inner", "inner")
            .file("u", "u")
            .finish(s.blobs(), "lower.tar.gz");
        let upper = Layer::new()
            .file("p", "now a file")
            .dir("q", 0o711)
            .file("q/child", "child")
            .file("r1", "new")
            .dir("s", 0o755)
            .symlink("t", "q")
            .symlink("u", "q/child")
            .finish(s.blobs(), "upper.tar.gz");
        unpack_image(
            &[(lower, GZIP.to_string()), (upper, GZIP.to_string())],
            &root,
            &root_opts(),
        )
        .unwrap();
        let t = snapshot(&root);
        assert_eq!(
            kinds(&root),
            [
                "p: file now a file",
                "q: dir",
                "q/child: file child",
                "r1: file new",
                "r2: file shared",
                "s: dir",
                "t: -> q",
                "u: -> q/child",
            ]
        );
        assert_eq!(t["q"].mode, 0o711);
        assert_eq!(
            (t["r1"].nlink, t["r2"].nlink),
            (1, 1),
            "unlinked, not written through"
        );
    }

    #[test]
    fn symlinked_parents_resolve_inside_the_root() {
        let s = Scratch::new();
        let root = s.root();
        let outside = s.outside();
        let before = s.around();
        let blob = Layer::new()
            .symlink("x", outside.to_str().unwrap())
            .file("x/evil", "evil")
            .dir("x/newdir", 0o777)
            .file("x/.wh.keep", "")
            .file("x/sub/.wh..wh..opq", "")
            .symlink("y", "../../..")
            .file("y/imgbuild-unpack-evil", "evil2")
            .symlink("slash", "/")
            .file("slash/etc/imgbuild-unpack-evil", "evil3")
            .file("slash/tmp/imgbuild-unpack-evil", "evil4")
            .finish(s.blobs(), "l.tar.gz");
        apply_layer(&blob, GZIP, &root, &root_opts()).unwrap();
        assert_eq!(s.around(), before, "nothing outside the root changed");
        // What went through `x` landed where `x` points *inside* the root.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        assert_eq!(fs::read_to_string(inside.join("evil")).unwrap(), "evil");
        assert!(inside.join("newdir").is_dir() && inside.join("sub").is_dir());
        assert_no_evil();
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(read("imgbuild-unpack-evil"), "evil2");
        assert_eq!(read("etc/imgbuild-unpack-evil"), "evil3");
        assert_eq!(read("tmp/imgbuild-unpack-evil"), "evil4");
        assert!(
            fs::symlink_metadata(root.join("x"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        let looped = Layer::new()
            .symlink("l1", "l2")
            .symlink("l2", "l1")
            .file("l1/f", "f")
            .finish(s.blobs(), "loop.tar.gz");
        match apply_layer(&looped, GZIP, &root, &root_opts()) {
            Err(UnpackError::Invalid { entry, problem, .. }) => {
                assert_eq!(entry, "l1/f");
                assert!(problem.contains("too many levels"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.around(), before);
    }

    #[test]
    fn climbing_out_is_refused_naming_the_entry() {
        for name in [
            "../z",
            "a/../../z",
            "./../outside/keep",
            "/../z",
            "../../imgbuild-unpack-evil",
        ] {
            let s = Scratch::new();
            let before = s.around();
            let blob = Layer::new()
                .file("ok", "fine")
                .file(name, "evil")
                .finish(s.blobs(), "l.tar.gz");
            let err = apply_layer(&blob, GZIP, &s.root(), &root_opts()).unwrap_err();
            match &err {
                UnpackError::Escapes { entry, .. } => assert_eq!(entry, name),
                other => panic!("{name}: {other:?}"),
            }
            assert!(err.to_string().contains("climbs out of the root"), "{err}");
            assert_eq!(s.around(), before, "{name}");
            assert_no_evil();
        }
    }

    #[test]
    fn hard_links_must_stay_inside() {
        let s = Scratch::new();
        let root = s.root();
        let before = s.around();
        let blob = Layer::new()
            .hardlink("pw", "../../etc/passwd")
            .finish(s.blobs(), "climb.tar.gz");
        match apply_layer(&blob, GZIP, &root, &root_opts()).unwrap_err() {
            UnpackError::Escapes { entry, why, .. } => {
                assert_eq!(entry, "pw");
                assert!(why.contains("hard link"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Through a symlink to the outside: resolved inside the root,
        // where there is no such file.
        let blob = Layer::new()
            .symlink("x", s.outside().to_str().unwrap())
            .hardlink("hl", "x/keep")
            .finish(s.blobs(), "via-symlink.tar.gz");
        match apply_layer(&blob, GZIP, &root, &root_opts()).unwrap_err() {
            UnpackError::Invalid { entry, problem, .. } => {
                assert_eq!(entry, "hl");
                assert!(problem.contains("is not in the root"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        let blob = Layer::new()
            .dir("d", 0o755)
            .hardlink("hd", "d")
            .finish(s.blobs(), "dir.tar.gz");
        let err = apply_layer(&blob, GZIP, &root, &root_opts()).unwrap_err();
        assert!(
            err.to_string().contains("hard link to a directory"),
            "{err}"
        );
        assert_eq!(s.around(), before, "no new name for an outside inode");
    }

    #[test]
    fn the_last_component_is_never_followed() {
        let s = Scratch::new();
        let root = s.root();
        let outside = s.outside();
        let before = s.around();
        let lower = Layer::new()
            .symlink("s", outside.join("keep").to_str().unwrap())
            .symlink("t", outside.join("w").to_str().unwrap())
            .finish(s.blobs(), "lower.tar.gz");
        let upper = Layer::new()
            .file("s", "replaced")
            .raw(Raw {
                mode: 0o777,
                ids: (1, 1),
                ..raw(EntryType::Directory, "t/")
            })
            // Directories replaced by links later in the same layer: their
            // metadata must not be set through the link.
            .raw(Raw {
                mode: 0o777,
                ids: (1, 1),
                ..raw(EntryType::Directory, "u/")
            })
            .symlink("u", outside.join("w").to_str().unwrap())
            .dir("v", 0o755)
            .raw(Raw {
                mode: 0o777,
                ids: (1, 1),
                ..raw(EntryType::Directory, "v/w/")
            })
            .symlink("v", outside.to_str().unwrap())
            .finish(s.blobs(), "upper.tar.gz");
        apply_layer(&lower, GZIP, &root, &root_opts()).unwrap();
        apply_layer(&upper, GZIP, &root, &root_opts()).unwrap();
        assert_eq!(s.around(), before, "nothing outside the root changed");
        let t = snapshot(&root);
        assert_eq!(t["s"].kind, "file replaced");
        assert_eq!((t["t"].kind.as_str(), t["t"].mode), ("dir", 0o777));
        assert!(t["u"].kind.starts_with("-> "));
        assert!(t["v"].kind.starts_with("-> "));
    }

    #[test]
    fn round_trip_through_walk_and_write_blob() {
        let src = tempfile::tempdir().unwrap();
        let r = src.path();
        fs::create_dir_all(r.join("lib/deep/er")).unwrap();
        fs::write(r.join("lib/deep/er/x.php"), "<?php echo 1;").unwrap();
        fs::write(r.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(r.join("run.sh"), Permissions::from_mode(0o700)).unwrap();
        fs::write(r.join("big.bin"), vec![7u8; 3 * COPY_BUFFER + 11]).unwrap();
        fs::hard_link(r.join("big.bin"), r.join("big2.bin")).unwrap();
        std::os::unix::fs::symlink("lib/deep", r.join("link")).unwrap();
        std::os::unix::fs::symlink("/nowhere/at/all", r.join("dangling")).unwrap();
        let layer = FileLayer {
            ids: Ids { uid: 33, gid: 34 },
            ..FileLayer::new(r, "/var/www/app")
        };
        let entries = walk(&layer, &mut StatCache::default(), 1).unwrap();
        let epoch = 1_700_000_000;
        for compression in [Compression::Gzip, Compression::Zstd] {
            let out = tempfile::tempdir().unwrap();
            let blob = out.path().join("layer");
            let file = File::create(&blob).unwrap();
            let opts = BlobOptions {
                epoch,
                compression: compression.into(),
                threads: 2,
                copy: None,
            };
            write_blob(&entries, opts, file, &mut |_| {}).unwrap();
            let root = out.path().join("root");
            let stats = unpack_image(
                &[(blob, compression.media_type().to_string())],
                &root,
                &root_opts(),
            )
            .unwrap();
            assert_eq!(
                stats.files + stats.dirs + stats.symlinks + stats.hardlinks,
                entries.0.len() as u64
            );
            let t = snapshot(&root);
            assert_eq!(t.len(), entries.0.len(), "{compression:?}: {t:#?}");
            for e in &entries.0 {
                let n = &t[&e.path];
                assert_eq!(n.mode, e.mode & 0o7777, "{}", e.path);
                if running_as_root() {
                    assert_eq!((n.uid, n.gid), (e.uid, e.gid), "{}", e.path);
                }
                #[allow(unreachable_patterns)]
                match &e.kind {
                    EntryKind::Dir => {
                        assert_eq!((n.kind.as_str(), n.mtime), ("dir", epoch), "{}", e.path)
                    }
                    EntryKind::File { src, .. } => {
                        let on_disk = fs::read(root.join(&e.path)).unwrap();
                        assert_eq!(on_disk, fs::read(src).unwrap(), "{}", e.path);
                        assert_eq!(n.mtime, epoch, "{}", e.path);
                    }
                    EntryKind::Symlink { target } => {
                        assert_eq!(n.kind, format!("-> {target}"), "{}", e.path)
                    }
                    EntryKind::Hardlink { target } => {
                        assert_eq!((n.ino, n.nlink), (t[target].ino, 2), "{}", e.path)
                    }
                    other => panic!("{}: {other:?} not checked yet", e.path),
                }
            }
        }
    }

    /// What the diff writes (whiteouts, opaque markers, devices) through
    /// the real tar writer, applied over a walked lower layer.
    #[test]
    fn round_trip_of_whiteouts_opaque_markers_and_devices() {
        let src = tempfile::tempdir().unwrap();
        let r = src.path();
        fs::create_dir_all(r.join("etc/old.d")).unwrap();
        fs::write(r.join("etc/old.d/a.conf"), "a").unwrap();
        fs::write(r.join("etc/passwd"), "root:x:0:0").unwrap();
        fs::create_dir(r.join("cache")).unwrap();
        fs::write(r.join("cache/stale"), "stale").unwrap();
        let lower = walk(&FileLayer::new(r, "/"), &mut StatCache::default(), 1).unwrap();
        let e = |path: &str, kind: EntryKind, mode: u32| crate::layer::Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        };
        let upper = crate::layer::Entries(vec![
            e("cache", EntryKind::Dir, 0o755),
            e("cache", EntryKind::Opaque, 0),
            e("dev", EntryKind::Dir, 0o755),
            e(
                "dev/null",
                EntryKind::CharDevice { major: 1, minor: 3 },
                0o666,
            ),
            e("etc", EntryKind::Dir, 0o755),
            e("etc/old.d", EntryKind::Whiteout, 0),
            e("run", EntryKind::Dir, 0o755),
            e("run/initctl", EntryKind::Fifo, 0o600),
        ]);
        let out = tempfile::tempdir().unwrap();
        let mut layers = Vec::new();
        for (name, entries) in [("lower", &lower), ("upper", &upper)] {
            let blob = out.path().join(name);
            let file = File::create(&blob).unwrap();
            let opts = BlobOptions {
                epoch: 0,
                compression: Compression::Gzip.into(),
                threads: 1,
                copy: None,
            };
            write_blob(entries, opts, file, &mut |_| {}).unwrap();
            layers.push((blob, GZIP.to_string()));
        }
        let root = out.path().join("root");
        let stats = unpack_image(&layers, &root, &root_opts()).unwrap();
        assert_eq!((stats.whiteouts, stats.opaques), (1, 1));
        let mut want = vec![
            "cache: dir",
            "dev: dir",
            "etc: dir",
            "etc/passwd: file root:x:0:0",
            "run: dir",
        ];
        if running_as_root() {
            want.insert(2, "dev/null: char 1,3");
            want.push("run/initctl: fifo");
            let t = snapshot(&root);
            assert_eq!((t["dev/null"].mode, t["run/initctl"].mode), (0o666, 0o600));
        }
        assert_eq!(kinds(&root), want);
    }

    /// Read-only directories of lower layers: root writes into them anyway;
    /// an unprivileged user (who owns them) gets the same result.
    #[test]
    fn read_only_directories_of_lower_layers() {
        let s = Scratch::new();
        let root = s.dir.path().join("image");
        let l1 = Layer::new()
            .dir("ro", 0o555)
            .dir("ro/deep", 0o500)
            .file("ro/deep/f", "f")
            .file("ro/old", "old")
            .dir("ro2", 0o555)
            .dir("ro2/deep", 0o555)
            .file("ro2/deep/f", "f")
            .finish(s.blobs(), "1.tar.gz");
        let l2 = Layer::new()
            .file("ro/new", "new")
            .file("ro/.wh.old", "")
            .file("ro2", "now a file")
            .finish(s.blobs(), "2.tar.gz");
        let layers = [(l1, GZIP.to_string()), (l2, GZIP.to_string())];
        unpack_image(&layers, &root, &root_opts()).unwrap();
        assert_eq!(
            kinds(&root),
            [
                "ro: dir",
                "ro/deep: dir",
                "ro/deep/f: file f",
                "ro/new: file new",
                "ro2: file now a file",
            ]
        );
        let t = snapshot(&root);
        assert_eq!((t["ro"].mode, t["ro/deep"].mode), (0o555, 0o500));
        // Let the temporary directory be removed.
        fs::set_permissions(root.join("ro"), Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join("ro/deep"), Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn unpack_image_wants_an_empty_root() {
        let s = Scratch::new();
        fs::write(s.root().join("something"), "x").unwrap();
        let blob = Layer::new().file("f", "f").finish(s.blobs(), "l.tar.gz");
        let layers = [(blob, GZIP.to_string())];
        assert!(matches!(
            unpack_image(&layers, &s.root(), &root_opts()),
            Err(UnpackError::NotEmpty { .. })
        ));
        let fresh = s.dir.path().join("new/root");
        unpack_image(&layers, &fresh, &root_opts()).unwrap();
        assert_eq!(kinds(&fresh), ["f: file f"]);
    }

    #[test]
    fn media_types() {
        let s = Scratch::new();
        let mut l = Layer::new();
        l.file("plain", "p");
        let tar = std::mem::replace(&mut l.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap();
        let plain = s.dir.path().join("plain.tar");
        fs::write(&plain, tar).unwrap();
        apply_layer(&plain, TAR, &s.root(), &root_opts()).unwrap();
        let gz = Layer::new()
            .file("docker", "d")
            .finish(s.blobs(), "d.tar.gz");
        let docker = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        apply_layer(&gz, docker, &s.root(), &root_opts()).unwrap();
        assert_eq!(kinds(&s.root()), ["docker: file d", "plain: file p"]);
        let err = apply_layer(&gz, "application/json", &s.root(), &root_opts()).unwrap_err();
        assert!(matches!(err, UnpackError::MediaType { .. }), "{err}");
        // A truncated blob is a read error, not a panic.
        let bytes = fs::read(&gz).unwrap();
        let cut = s.dir.path().join("cut.tar.gz");
        fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = apply_layer(&cut, GZIP, &s.root(), &root_opts()).unwrap_err();
        assert!(matches!(err, UnpackError::Read { .. }), "{err}");
    }

    #[test]
    fn pax_times() {
        let at = |s, n| SystemTime::UNIX_EPOCH + Duration::new(s, n);
        assert_eq!(pax_time("1700000000"), Some(at(1_700_000_000, 0)));
        assert_eq!(pax_time("1.5"), Some(at(1, 500_000_000)));
        assert_eq!(pax_time("2.1234567891"), Some(at(2, 123_456_789)));
        assert_eq!(
            pax_time("-1.5"),
            SystemTime::UNIX_EPOCH.checked_sub(Duration::new(1, 500_000_000))
        );
        assert_eq!(pax_time("x"), None);
        assert_eq!(pax_time("1.x"), None);
    }
}
