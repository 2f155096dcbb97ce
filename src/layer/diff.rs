//! The difference between two trees, as layer entries (see the sandbox issue).
//!
//! A `run:` step works in `upper`, a copy of its parent's root filesystem
//! (`lower`); the step's layer is what turns `lower` into `upper`. The rules:
//!
//! - **Compared**: type, mode (with set-id and sticky bits), uid, gid, and by
//!   type: a file's size and content, a symlink's target, a device's numbers.
//!   A file's content is read only when metadata cannot decide: same size
//!   and same mtime and same inode (a hard-linked copy) is unchanged without
//!   reading; otherwise the bytes of both are compared (a touched but equal
//!   file is unchanged, a same-size edit with its mtime put back is not).
//!   `DiffOptions::trust_mtime` makes same size and mtime enough, as rsync's
//!   quick check does. mtimes never enter the layer: the writer stamps every
//!   entry with the layer epoch, so the layer is reproducible.
//! - **Recorded as upper has it**: new and changed entries keep upper's real
//!   mode, uid and gid (unlike `walk`, which normalises: the snapshot is
//!   what the step left). The parent directories of every entry (whiteouts
//!   included) are in the layer with upper's metadata; the root itself is
//!   never an entry (as in `walk`).
//! - **Deleted** paths are whiteouts (`.wh.<name>`, an empty regular file,
//!   mode 0, owner 0:0, as containerd and docker write them).
//! - **Opaque**: a directory present in both trees whose every lower child
//!   is gone (deleted or moved away; `rm -rf d/*` then new content) is
//!   marked opaque (`.wh..wh..opq`, written right after the directory, as
//!   buildah does) instead of one whiteout per old child; its new content
//!   follows in full. A directory keeping any old name keeps the whiteouts
//!   (an opaque one would have to repeat every unchanged file under it).
//!   The root is never opaque.
//! - **Type changes** (file → directory, directory → file or symlink, …) are
//!   the new entry alone, no whiteout: every unpacker (docker, containerd,
//!   umoci) and overlayfs replace a path by an entry of another type, and a
//!   new directory over a non-directory has nothing of the old to merge
//!   with, so its content is all new. A whiteout next to a same-named entry
//!   is also where unpackers disagree (docker removes whatever the whiteout
//!   names, even an entry of the same layer), so none is ever written.
//! - **Hard links**: files of upper sharing an inode form a group; when one
//!   name of a group is in the layer, all are, the first (in layer order) as
//!   the file and the others as hard links to it. A file whose group changed
//!   (a new name linked to it, or unlinked from its old partners) is in the
//!   layer even when its content did not change.
//! - **Residue** (`DiffOptions::residue`, default `DEFAULT_RESIDUE`): changes
//!   at paths matching these globs (relative to the root; `*` stays within a
//!   name, `**` spans directories), and under them, are left out, whether
//!   additions, edits or deletions: the image keeps what lower had. The
//!   paths that differed are listed in `DiffReport::dropped`.
//!   `etc/machine-id` is residue: a step that creates or rewrites it leaves
//!   the parent's (systemd makes one at boot when it is missing or empty).
//! - **Sockets** cannot be in a tar; they are left out (a socket over a
//!   lower path deletes it) and listed in `DiffReport::sockets`.
//! - Names that are not UTF-8, and names starting with `.wh.` (they would
//!   read as whiteouts), are refused with their path.
//!
//! Not recorded: extended attributes (file capabilities, ACLs, SELinux
//! labels), the root's own metadata, and which lower names shared an inode
//! when none of them is in the layer. `upper` must not share inodes with
//! `lower` for files changed in place (a hard-linked copy sees only files
//! that were replaced).
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{DirEntry, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::{Entries, Entry, EntryKind, LayerError, io_err, parallel_map, sorted_children};

/// Non-reproducible residue whose changes a snapshot leaves out.
pub const DEFAULT_RESIDUE: &[&str] = &[
    "etc/machine-id",
    "run/*",
    "tmp/*",
    "var/cache/apt/*.bin",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists/*",
    "**/__pycache__",
];

/// How `diff` compares and what it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Globs of paths (relative to the root) whose changes are dropped.
    pub residue: Vec<String>,
    /// Same size and same mtime (to the nanosecond) is unchanged without
    /// reading the files.
    pub trust_mtime: bool,
    /// Threads for comparing and hashing files.
    pub threads: usize,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions {
            residue: DEFAULT_RESIDUE.iter().map(|s| (*s).to_string()).collect(),
            trust_mtime: false,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// What a snapshot left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Residue paths that differed between the trees, sorted; their changes
    /// are not in the layer. A directory stands for everything under it.
    pub dropped: Vec<String>,
    /// Sockets in upper, sorted.
    pub sockets: Vec<String>,
}

/// Entries that turn `lower` into `upper`: new and changed files, dirs,
/// links and devices; deletions as whiteouts; a directory replaced wholesale
/// as opaque (see the module's documentation for the rules).
pub fn diff(
    lower: &Path,
    upper: &Path,
    opts: &DiffOptions,
) -> Result<(Entries, DiffReport), LayerError> {
    let residue = residue_set(&opts.residue)?;
    for root in [lower, upper] {
        let meta = std::fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(LayerError::Io {
                path: root.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
    }
    let mut d = Differ::new(opts, Some(&residue));
    d.dir("", Some(lower), upper, None)?;
    d.finish(opts.threads)
}

/// Like [`diff`], where `upper` is the upper directory of an overlayfs
/// mounted over `lower`: it holds only what the steps touched (new and
/// copied-up entries, whiteouts as 0/0 character devices, replaced
/// directories marked by the `opaque_xattr` extended attribute), so only
/// those are visited. The layer is the one [`diff`] gives for the merged
/// tree: overlay's own markers are not copied but decided by the same
/// rules, so a step leaves the same layer whichever way it ran.
pub fn diff_overlay(
    lower: &Path,
    upper: &Path,
    opaque_xattr: &str,
    opts: &DiffOptions,
) -> Result<(Entries, DiffReport), LayerError> {
    let residue = residue_set(&opts.residue)?;
    let mut d = Differ::new(opts, Some(&residue));
    d.overlay = Some(opaque_xattr);
    d.dir("", Some(lower), upper, None)?;
    d.finish(opts.threads)
}

impl Differ<'_> {
    fn finish(mut self, threads: usize) -> Result<(Entries, DiffReport), LayerError> {
        let d = &mut self;
        d.resolve_compares(threads)?;
        d.link_groups();
        d.parents();
        d.hash(threads)?;
        let Differ {
            nodes, mut report, ..
        } = self;
        report.dropped.sort();
        report.sockets.sort();
        let entries = nodes
            .into_iter()
            .filter(|n| n.state == State::Emit)
            .map(|n| n.entry)
            .collect();
        Ok((Entries(entries), report))
    }
}

/// An overlayfs whiteout: a character device numbered 0/0.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether overlayfs marked the directory `dir` opaque.
fn is_opaque(dir: &Path, xattr: &str) -> Result<bool, LayerError> {
    let mut buf = [0u8; 8];
    match rustix::fs::lgetxattr(dir, xattr, &mut buf[..]) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) => Ok(false),
        Err(e) => Err(LayerError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        }),
    }
}

fn residue_set(patterns: &[String]) -> Result<GlobSet, LayerError> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p.trim_start_matches('/').trim_end_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| LayerError::Pattern {
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| LayerError::Pattern {
        pattern: patterns.join(" "),
        reason: e.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// In the layer.
    Emit,
    /// A file whose bytes decide: the lower file to compare with.
    Compare(PathBuf),
    /// Unchanged: in the layer only if something under it is, or a hard
    /// link partner.
    Idle,
}

/// A path of upper (or a whiteout or opaque marker), in layer order.
struct Node {
    entry: Entry,
    /// The node of the directory it is in; `None` at the root.
    parent: Option<usize>,
    state: State,
}

struct Differ<'a> {
    opts: &'a DiffOptions,
    /// `None` inside a residue path, where nothing is residue.
    residue: Option<&'a GlobSet>,
    nodes: Vec<Node>,
    /// Files of upper with more than one link: (node, (dev, inode)).
    upper_links: Vec<(usize, (u64, u64))>,
    /// Files in both trees whose lower has more than one link:
    /// (node, (lower dev, lower inode)).
    lower_links: Vec<(usize, (u64, u64))>,
    report: DiffReport,
    /// Upper is an overlayfs upper directory; its opaque attribute's name.
    overlay: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

fn type_of(meta: &Metadata) -> Type {
    let ft = meta.file_type();
    if ft.is_dir() {
        Type::Dir
    } else if ft.is_file() {
        Type::File
    } else if ft.is_symlink() {
        Type::Symlink
    } else if ft.is_char_device() {
        Type::Char
    } else if ft.is_block_device() {
        Type::Block
    } else if ft.is_fifo() {
        Type::Fifo
    } else {
        Type::Socket
    }
}

/// Linux's `major()` and `minor()` of a device number.
fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff)) as u32
}

fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff)) as u32
}

/// Mode bits a layer keeps: permissions, set-id and sticky.
fn perm(meta: &Metadata) -> u32 {
    meta.mode() & 0o7777
}

fn same_owner_and_mode(a: &Metadata, b: &Metadata) -> bool {
    (perm(a), a.uid(), a.gid()) == (perm(b), b.uid(), b.gid())
}

/// A name's directory entries in lower and in upper.
type Sides<'e> = (Option<&'e DirEntry>, Option<&'e DirEntry>);

/// One side of a name: its path and lstat.
type Side = (PathBuf, Metadata);

fn side(entry: Option<&DirEntry>) -> Result<Option<Side>, LayerError> {
    entry
        .map(|e| {
            let path = e.path();
            // fstatat without following symlinks.
            let meta = e.metadata().map_err(io_err(&path))?;
            Ok((path, meta))
        })
        .transpose()
}

impl<'a> Differ<'a> {
    fn new(opts: &'a DiffOptions, residue: Option<&'a GlobSet>) -> Differ<'a> {
        Differ {
            opts,
            residue,
            nodes: Vec::new(),
            upper_links: Vec::new(),
            lower_links: Vec::new(),
            report: DiffReport::default(),
            overlay: None,
        }
    }

    fn is_residue(&self, path: &str) -> bool {
        self.residue.is_some_and(|r| r.is_match(path))
    }

    fn push(&mut self, entry: Entry, parent: Option<usize>, state: State) -> usize {
        self.nodes.push(Node {
            entry,
            parent,
            state,
        });
        self.nodes.len() - 1
    }

    fn whiteout(&mut self, path: String, parent: Option<usize>) {
        let entry = Entry {
            path,
            kind: EntryKind::Whiteout,
            mode: 0,
            uid: 0,
            gid: 0,
        };
        self.push(entry, parent, State::Emit);
    }

    /// The children of the directory `rel` (`node`), in upper and (when it
    /// is a directory there too) in lower.
    fn dir(
        &mut self,
        rel: &str,
        lower: Option<&Path>,
        upper: &Path,
        node: Option<usize>,
    ) -> Result<(), LayerError> {
        let mut uppers = sorted_children(upper)?;
        let mut lowers = match lower {
            Some(l) => sorted_children(l)?,
            None => Vec::new(),
        };
        // An overlay upper holds what changed; the rest of the merged
        // directory is lower's, untouched. Such names are left out of the
        // comparison, but still count as old names left (no opaque).
        let mut untouched = false;
        if let Some(xattr) = self.overlay {
            let mut deleted = std::collections::HashSet::new();
            let mut kept = Vec::with_capacity(uppers.len());
            for u in uppers {
                let meta = u.metadata().map_err(io_err(&u.path()))?;
                if is_whiteout(&meta) {
                    deleted.insert(u.file_name());
                } else {
                    kept.push(u);
                }
            }
            uppers = kept;
            if node.is_none() || !is_opaque(upper, xattr)? {
                let present: std::collections::HashSet<OsString> =
                    uppers.iter().map(DirEntry::file_name).collect();
                lowers.retain(|l| {
                    let name = l.file_name();
                    let keep = present.contains(&name) || deleted.contains(&name);
                    untouched |= !keep;
                    keep
                });
            }
        }
        let join = |name: &std::ffi::OsStr, abs: &Path| -> Result<String, LayerError> {
            let name = name.to_str().ok_or_else(|| LayerError::Unsupported {
                path: abs.to_path_buf(),
                kind: "non-UTF-8-named",
            })?;
            Ok(if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            })
        };
        let mut names: BTreeMap<OsString, Sides> = BTreeMap::new();
        for u in &uppers {
            names.entry(u.file_name()).or_default().1 = Some(u);
        }
        // Opaque when no lower name is left (residue stays, so counts).
        let mut opaque = node.is_some() && !lowers.is_empty() && !untouched;
        for l in &lowers {
            let name = l.file_name();
            if opaque && (names.contains_key(&name) || self.is_residue(&join(&name, &l.path())?)) {
                opaque = false;
            }
        }
        if opaque {
            let entry = Entry {
                path: rel.to_string(),
                kind: EntryKind::Opaque,
                mode: 0,
                uid: 0,
                gid: 0,
            };
            self.push(entry, node, State::Emit);
            lowers.clear();
        }
        for l in &lowers {
            names.entry(l.file_name()).or_default().0 = Some(l);
        }
        // Layer order: by the name in the tar, whiteouts as `.wh.<name>`.
        let mut items: Vec<(Vec<u8>, &OsString, Sides)> = names
            .iter()
            .map(|(name, &(l, u))| {
                let key = if u.is_some() {
                    name.as_bytes().to_vec()
                } else {
                    [super::tar::WHITEOUT_PREFIX.as_bytes(), name.as_bytes()].concat()
                };
                (key, name, (l, u))
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, name, (l, u)) in items {
            let abs = u.or(l).map(DirEntry::path).unwrap_or_default();
            if name
                .as_bytes()
                .starts_with(super::tar::WHITEOUT_PREFIX.as_bytes())
            {
                return Err(LayerError::Unsupported {
                    path: abs,
                    kind: "`.wh.`-named",
                });
            }
            let path = join(name, &abs)?;
            self.item(path, side(l)?, side(u)?, node)?;
        }
        Ok(())
    }

    /// One name: deleted, new, or in both trees.
    fn item(
        &mut self,
        path: String,
        lower: Option<Side>,
        upper: Option<Side>,
        parent: Option<usize>,
    ) -> Result<(), LayerError> {
        if self.is_residue(&path) {
            if self.differs(&path, lower, upper)? {
                self.report.dropped.push(path);
            }
            return Ok(());
        }
        let Some((upath, umeta)) = upper else {
            if lower.is_some() {
                self.whiteout(path, parent);
            }
            return Ok(());
        };
        let utype = type_of(&umeta);
        let kind = match utype {
            Type::Socket => {
                self.report.sockets.push(path.clone());
                if lower.is_some() {
                    self.whiteout(path, parent);
                }
                return Ok(());
            }
            Type::Dir => EntryKind::Dir,
            Type::File => EntryKind::File {
                src: upath.clone(),
                size: umeta.len(),
                sha256: String::new(),
            },
            Type::Symlink => EntryKind::Symlink {
                target: std::fs::read_link(&upath)
                    .map_err(io_err(&upath))?
                    .to_string_lossy()
                    .into_owned(),
            },
            Type::Char => EntryKind::CharDevice {
                major: major(umeta.rdev()),
                minor: minor(umeta.rdev()),
            },
            Type::Block => EntryKind::BlockDevice {
                major: major(umeta.rdev()),
                minor: minor(umeta.rdev()),
            },
            Type::Fifo => EntryKind::Fifo,
        };
        // Only a lower entry of the same type can leave this one unchanged.
        let lower = lower.filter(|(_, m)| type_of(m) == utype);
        let state = match &lower {
            None => State::Emit,
            Some((lpath, lmeta)) => self.compare(lpath, lmeta, &umeta, &kind)?,
        };
        let entry = Entry {
            path: path.clone(),
            kind,
            mode: perm(&umeta),
            uid: umeta.uid(),
            gid: umeta.gid(),
        };
        let node = self.push(entry, parent, state);
        if utype == Type::File {
            if umeta.nlink() > 1 {
                self.upper_links.push((node, (umeta.dev(), umeta.ino())));
            }
            if let Some((_, lmeta)) = &lower
                && lmeta.nlink() > 1
            {
                self.lower_links.push((node, (lmeta.dev(), lmeta.ino())));
            }
        }
        if utype == Type::Dir {
            let lower_dir = lower.as_ref().map(|(p, _)| p.as_path());
            self.dir(&path, lower_dir, &upath, Some(node))?;
        }
        Ok(())
    }

    /// Whether an entry of upper differs from lower's of the same type;
    /// `Compare` when only the bytes can tell.
    fn compare(
        &self,
        lpath: &Path,
        lmeta: &Metadata,
        umeta: &Metadata,
        kind: &EntryKind,
    ) -> Result<State, LayerError> {
        let changed = |yes: bool| if yes { State::Emit } else { State::Idle };
        if !same_owner_and_mode(lmeta, umeta) {
            return Ok(State::Emit);
        }
        Ok(match kind {
            EntryKind::Dir | EntryKind::Fifo => State::Idle,
            EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
                changed(lmeta.rdev() != umeta.rdev())
            }
            EntryKind::Symlink { target } => {
                let old = std::fs::read_link(lpath).map_err(io_err(lpath))?;
                changed(old.as_os_str().as_bytes() != target.as_bytes())
            }
            EntryKind::File { .. } => {
                let same_mtime =
                    (lmeta.mtime(), lmeta.mtime_nsec()) == (umeta.mtime(), umeta.mtime_nsec());
                let same_inode = (lmeta.dev(), lmeta.ino()) == (umeta.dev(), umeta.ino());
                if lmeta.len() != umeta.len() {
                    State::Emit
                } else if same_mtime && (same_inode || self.opts.trust_mtime) {
                    State::Idle
                } else {
                    State::Compare(lpath.to_path_buf())
                }
            }
            _ => State::Emit,
        })
    }

    /// Whether a residue path differs between the trees: its own diff,
    /// thrown away, has anything in it.
    fn differs(
        &self,
        path: &str,
        lower: Option<Side>,
        upper: Option<Side>,
    ) -> Result<bool, LayerError> {
        let mut sub = Differ::new(self.opts, None);
        sub.overlay = self.overlay;
        sub.item(path.to_string(), lower, upper, None)?;
        sub.resolve_compares(1)?;
        Ok(sub.nodes.iter().any(|n| n.state == State::Emit))
    }

    /// Compares the bytes of the files that metadata could not decide.
    fn resolve_compares(&mut self, threads: usize) -> Result<(), LayerError> {
        let pending: Vec<(usize, &Path, &Path)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match (&n.state, &n.entry.kind) {
                (State::Compare(lower), EntryKind::File { src, .. }) => {
                    Some((i, lower.as_path(), src.as_path()))
                }
                _ => None,
            })
            .collect();
        let results = parallel_map(&pending, threads, |(_, l, u)| same_bytes(l, u));
        let decided: Vec<(usize, bool)> = pending
            .iter()
            .zip(results)
            .map(|((i, _, _), same)| same.map(|s| (*i, s)))
            .collect::<Result<_, _>>()?;
        for (i, same) in decided {
            self.nodes[i].state = if same { State::Idle } else { State::Emit };
        }
        Ok(())
    }

    /// Hard link groups: a file whose set of names changed is in the layer;
    /// a group with one name in the layer has all its names there, the
    /// first as the file and the others as links to it.
    fn link_groups(&mut self) {
        let mut upper: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        for (node, inode) in &self.upper_links {
            upper.entry(*inode).or_default().push(*node);
        }
        let mut lower: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        for (node, inode) in &self.lower_links {
            lower.entry(*inode).or_default().push(*node);
        }
        // The names sharing each file's inode, in each tree (nodes are
        // pushed in layer order, so each group is sorted).
        let mut upper_of: HashMap<usize, &[usize]> = HashMap::new();
        for group in upper.values() {
            for n in group {
                upper_of.insert(*n, group);
            }
        }
        let mut lower_of: HashMap<usize, &[usize]> = HashMap::new();
        for group in lower.values() {
            for n in group {
                lower_of.insert(*n, group);
            }
        }
        let mut regrouped: Vec<usize> = Vec::new();
        for &n in lower_of.keys().chain(upper_of.keys()) {
            if self.nodes[n].state == State::Emit {
                continue;
            }
            // Only files in both trees are Idle; lower's group is limited to
            // names that are still files in upper.
            let alone = [n];
            let u = upper_of.get(&n).copied().unwrap_or(&alone);
            let l = lower_of.get(&n).copied().unwrap_or(&alone);
            if u != l {
                regrouped.push(n);
            }
        }
        for n in regrouped {
            self.nodes[n].state = State::Emit;
        }
        let mut groups: Vec<&Vec<usize>> = upper.values().filter(|g| g.len() > 1).collect();
        groups.sort();
        for group in groups {
            if !group.iter().any(|&n| self.nodes[n].state == State::Emit) {
                continue;
            }
            let first = group[0];
            self.nodes[first].state = State::Emit;
            let target = self.nodes[first].entry.path.clone();
            for &n in &group[1..] {
                self.nodes[n].state = State::Emit;
                self.nodes[n].entry.kind = EntryKind::Hardlink {
                    target: target.clone(),
                };
            }
        }
    }

    /// The directories holding anything in the layer are in it too.
    fn parents(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            if self.nodes[i].state == State::Emit
                && let Some(p) = self.nodes[i].parent
            {
                self.nodes[p].state = State::Emit;
            }
        }
    }

    /// Content hashes of the files in the layer.
    fn hash(&mut self, threads: usize) -> Result<(), LayerError> {
        let files: Vec<(usize, PathBuf)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match (&n.state, &n.entry.kind) {
                (State::Emit, EntryKind::File { src, .. }) => Some((i, src.clone())),
                _ => None,
            })
            .collect();
        let paths: Vec<&Path> = files.iter().map(|(_, p)| p.as_path()).collect();
        let hashes = super::statcache::hash_files(&paths, threads);
        for ((i, path), hash) in files.iter().zip(hashes) {
            let hash = hash.map_err(io_err(path))?;
            if let EntryKind::File { sha256, .. } = &mut self.nodes[*i].entry.kind {
                *sha256 = hash;
            }
        }
        Ok(())
    }
}

/// Whether two files hold the same bytes (stops at the first difference).
fn same_bytes(a: &Path, b: &Path) -> Result<bool, LayerError> {
    const CHUNK: usize = 128 * 1024;
    let mut fa = File::open(a).map_err(io_err(a))?;
    let mut fb = File::open(b).map_err(io_err(b))?;
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(io_err(a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(io_err(b))?;
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < CHUNK {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{OPAQUE_MARKER, WHITEOUT_PREFIX};
    use crate::layer::{Blob, BlobOptions, Compression, write_blob};
    use std::collections::BTreeSet;
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    use std::process::Command;
    use std::time::Duration;

    const EPOCH: i64 = 1_700_000_000;

    fn is_root() -> bool {
        let d = tempfile::tempdir().unwrap();
        fs::metadata(d.path()).unwrap().uid() == 0
    }

    fn opts() -> DiffOptions {
        DiffOptions {
            threads: 2,
            ..DiffOptions::default()
        }
    }

    fn run(cmd: &str, args: &[&OsStr]) {
        let status = Command::new(cmd).args(args).status().unwrap();
        assert!(status.success(), "{cmd} {args:?}: {status}");
    }

    fn mkdir(root: &Path, rel: &str, mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn file(root: &Path, rel: &str, content: &str, mode: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(root: &Path, rel: &str, uid: u32, gid: u32) {
        lchown(root.join(rel), Some(uid), Some(gid)).unwrap();
    }

    fn set_mtime(path: &Path, t: std::time::SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn node(path: &Path, kind: &str, major: u32, minor: u32) {
        run(
            "mknod",
            &[
                OsStr::new("-m"),
                OsStr::new("0644"),
                path.as_os_str(),
                OsStr::new(kind),
                OsStr::new(&major.to_string()),
                OsStr::new(&minor.to_string()),
            ],
        );
    }

    /// `cp -a`: modes, owners, mtimes, hard links, devices kept.
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        run(
            "cp",
            &[OsStr::new("-a"), from.join(".").as_os_str(), to.as_os_str()],
        );
    }

    /// A temporary directory with `lower` and `upper` (a `cp -a` of lower
    /// after `make_lower`, then changed by `change`).
    fn trees(
        make_lower: impl Fn(&Path),
        change: impl Fn(&Path),
    ) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let lower = d.path().join("lower");
        let upper = d.path().join("upper");
        mkdir(&lower, "", 0o755);
        make_lower(&lower);
        copy(&lower, &upper);
        change(&upper);
        (d, lower, upper)
    }

    /// The layer of `entries`, written as the build writes it, and its tar.
    fn layer(entries: &Entries) -> (Vec<u8>, Blob) {
        let opts = BlobOptions {
            epoch: EPOCH,
            compression: Compression::Gzip.into(),
            threads: 2,
            copy: None,
        };
        let (gz, blob) = write_blob(entries, opts, Vec::new(), &mut |_| {}).unwrap();
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        (tar, blob)
    }

    /// One line per tar entry: `name type[ detail] mode uid:gid`.
    fn listing(tar: &[u8]) -> Vec<String> {
        use ::tar::EntryType as T;
        let mut ar = ::tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!(h.mtime().unwrap(), EPOCH as u64);
                assert_eq!(h.username_bytes(), Some(&b""[..]));
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let link = || String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap();
                let dev = || {
                    format!(
                        "{}:{}",
                        h.device_major().unwrap().unwrap(),
                        h.device_minor().unwrap().unwrap()
                    )
                };
                let what = match h.entry_type() {
                    T::Regular => format!("f{}", h.size().unwrap()),
                    T::Directory => "d".to_string(),
                    T::Symlink => format!("l>{}", link()),
                    T::Link => format!("h>{}", link()),
                    T::Char => format!("c{}", dev()),
                    T::Block => format!("b{}", dev()),
                    T::Fifo => "p".to_string(),
                    other => panic!("{name}: {other:?}"),
                };
                format!(
                    "{name} {what} {:o} {}:{}",
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap()
                )
            })
            .collect()
    }

    fn remove(path: &Path) {
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }

    /// Applies a layer tar onto `root` as the OCI image spec says, strictly:
    /// parents must exist, whiteouts must name something of lower.
    fn apply(tar: &[u8], root: &Path) {
        use ::tar::EntryType as T;
        let mut ar = ::tar::Archive::new(tar);
        let mut unpacked: BTreeSet<PathBuf> = BTreeSet::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let rel = name.trim_end_matches('/');
            let (dir, base) = rel.rsplit_once('/').unwrap_or(("", rel));
            let dir = root.join(dir);
            assert!(
                fs::symlink_metadata(&dir).unwrap().is_dir(),
                "{name}: no parent"
            );
            if base == OPAQUE_MARKER {
                for child in fs::read_dir(&dir).unwrap() {
                    let child = child.unwrap().path();
                    if !unpacked.contains(&child) {
                        remove(&child);
                    }
                }
                continue;
            }
            if let Some(gone) = base.strip_prefix(WHITEOUT_PREFIX) {
                let gone = dir.join(gone);
                assert!(!unpacked.contains(&gone), "{name}: whiteout of this layer");
                remove(&gone);
                continue;
            }
            let path = root.join(rel);
            let h = e.header().clone();
            let et = h.entry_type();
            if let Ok(m) = fs::symlink_metadata(&path)
                && !(m.is_dir() && et == T::Directory)
            {
                remove(&path);
            }
            let link = || PathBuf::from(OsStr::from_bytes(&h.link_name_bytes().unwrap()));
            let dev = |kind: &str| {
                let (major, minor) = (h.device_major().unwrap(), h.device_minor().unwrap());
                node(&path, kind, major.unwrap(), minor.unwrap());
            };
            match et {
                T::Directory if fs::symlink_metadata(&path).is_ok() => {}
                T::Directory => fs::create_dir(&path).unwrap(),
                T::Regular => {
                    io::copy(&mut e, &mut File::create(&path).unwrap()).unwrap();
                }
                T::Symlink => symlink(link(), &path).unwrap(),
                T::Link => fs::hard_link(root.join(link()), &path).unwrap(),
                T::Fifo => run("mkfifo", &[path.as_os_str()]),
                T::Char => dev("c"),
                T::Block => dev("b"),
                other => panic!("{name}: {other:?}"),
            }
            if et != T::Link {
                let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
                lchown(&path, Some(uid as u32), Some(gid as u32)).unwrap();
                if et != T::Symlink {
                    let mode = fs::Permissions::from_mode(h.mode().unwrap());
                    fs::set_permissions(&path, mode).unwrap();
                }
            }
            unpacked.insert(path);
        }
    }

    /// Everything about a tree that a layer can carry, by path; files that
    /// share an inode list each other.
    fn state(root: &Path) -> BTreeMap<String, String> {
        fn visit(
            root: &Path,
            dir: &Path,
            out: &mut BTreeMap<String, String>,
            inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
        ) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                let m = fs::symlink_metadata(&p).unwrap();
                let what = match type_of(&m) {
                    Type::Dir => "d".to_string(),
                    Type::File => {
                        inodes
                            .entry((m.dev(), m.ino()))
                            .or_default()
                            .push(rel.clone());
                        format!("f {:?}", fs::read_to_string(&p).unwrap())
                    }
                    Type::Symlink => format!("l {:?}", fs::read_link(&p).unwrap()),
                    Type::Char => format!("c {}:{}", major(m.rdev()), minor(m.rdev())),
                    Type::Block => format!("b {}:{}", major(m.rdev()), minor(m.rdev())),
                    Type::Fifo => "p".to_string(),
                    Type::Socket => "s".to_string(),
                };
                let mode = if m.file_type().is_symlink() {
                    0
                } else {
                    perm(&m)
                };
                out.insert(rel, format!("{what} {mode:o} {}:{}", m.uid(), m.gid()));
                if m.is_dir() {
                    visit(root, &p, out, inodes);
                }
            }
        }
        let mut out = BTreeMap::new();
        let mut inodes = BTreeMap::new();
        visit(root, root, &mut out, &mut inodes);
        for mut names in inodes.into_values().filter(|n| n.len() > 1) {
            names.sort();
            for n in &names {
                let line = out.get_mut(n).unwrap();
                line.push_str(&format!(" links={}", names.join(",")));
            }
        }
        out
    }

    /// Applies the layer onto copies of lower, with the strict helper above
    /// and with `unpack::apply_layer`: each result must be upper.
    fn assert_round_trip(tar: &[u8], lower: &Path, upper: &Path) {
        let d = tempfile::tempdir().unwrap();
        let want = state(upper);
        let check = |applied: &Path, how: &str| {
            let got = state(applied);
            for (path, line) in &want {
                assert_eq!(got.get(path), Some(line), "{how}: {path}");
            }
            for path in got.keys() {
                assert!(want.contains_key(path), "{how}: {path} should be gone");
            }
        };
        let applied = d.path().join("applied");
        copy(lower, &applied);
        apply(tar, &applied);
        check(&applied, "test helper");
        let blob = d.path().join("layer.tar");
        fs::write(&blob, tar).unwrap();
        let unpacked = d.path().join("unpacked");
        copy(lower, &unpacked);
        let opts = crate::layer::unpack::UnpackOptions::for_current_user();
        let media_type = "application/vnd.oci.image.layer.v1.tar";
        crate::layer::unpack::apply_layer(&blob, media_type, &unpacked, &opts).unwrap();
        check(&unpacked, "apply_layer");
    }

    fn paths(entries: &Entries) -> Vec<&str> {
        entries.0.iter().map(|e| e.path.as_str()).collect()
    }

    fn lower_tree(l: &Path) {
        file(l, "etc/keep.conf", "keep\n", 0o644);
        file(l, "etc/app.conf", "old\n", 0o644);
        file(l, "etc/same-size", "aaaa", 0o644);
        file(l, "etc/touched", "t", 0o644);
        file(l, "etc/mode.conf", "m", 0o644);
        file(l, "etc/owned", "o", 0o644);
        file(l, "gone.txt", "bye", 0o644);
        file(l, "olddir/a", "a", 0o644);
        file(l, "olddir/sub/b", "b", 0o644);
        file(l, "d2f/x", "x", 0o644);
        file(l, "f2d", "file", 0o644);
        file(l, "opq/a", "a", 0o644);
        file(l, "opq/c/d", "d", 0o644);
        mkdir(l, "var/spool/cron", 0o1730);
        chown(l, "var/spool/cron", 0, 101);
        file(l, "var/spool/cron/root", "* * * * * x\n", 0o600);
        file(l, "links/one", "same", 0o644);
        fs::hard_link(l.join("links/one"), l.join("links/two")).unwrap();
        file(l, "usr/bin/tool", "#!/bin/sh\n", 0o755);
        mkdir(l, "dev", 0o755);
        node(&l.join("dev/tty9"), "c", 4, 9);
        symlink("keep.conf", l.join("etc/alias")).unwrap();
    }

    fn change_tree(u: &Path) {
        file(u, "etc/app.conf", "new content\n", 0o644);
        let same = u.join("etc/same-size");
        let was = fs::metadata(&same).unwrap().modified().unwrap();
        fs::write(&same, "bbbb").unwrap();
        set_mtime(&same, was);
        let touched = u.join("etc/touched");
        set_mtime(&touched, was + Duration::from_secs(10));
        fs::set_permissions(u.join("etc/mode.conf"), fs::Permissions::from_mode(0o600)).unwrap();
        chown(u, "etc/owned", 33, 33);
        fs::remove_file(u.join("gone.txt")).unwrap();
        fs::remove_dir_all(u.join("olddir")).unwrap();
        fs::remove_dir_all(u.join("d2f")).unwrap();
        file(u, "d2f", "now a file", 0o644);
        fs::remove_file(u.join("f2d")).unwrap();
        mkdir(u, "f2d", 0o750);
        file(u, "f2d/inner", "in", 0o644);
        fs::remove_file(u.join("opq/a")).unwrap();
        fs::remove_dir_all(u.join("opq/c")).unwrap();
        file(u, "opq/z", "z", 0o644);
        file(u, "var/spool/cron/root", "0 * * * * x\n", 0o600);
        mkdir(u, "bin", 0o755);
        symlink("../usr/bin/tool", u.join("bin/tool")).unwrap();
        file(u, "hl/a", "pair", 0o644);
        fs::hard_link(u.join("hl/a"), u.join("hl/b")).unwrap();
        fs::set_permissions(u.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        mkdir(u, "srv", 0o755);
        run(
            "mkfifo",
            &[
                OsStr::new("-m"),
                OsStr::new("0620"),
                u.join("srv/pipe").as_os_str(),
            ],
        );
        fs::remove_file(u.join("dev/tty9")).unwrap();
        node(&u.join("dev/tty9"), "c", 4, 10);
        node(&u.join("dev/big"), "b", 259, 300);
        mkdir(u, "home/user", 0o700);
        file(u, "home/user/.profile", "PATH=x\n", 0o600);
        chown(u, "home/user", 1000, 1000);
        chown(u, "home/user/.profile", 1000, 1000);
        fs::remove_file(u.join("etc/alias")).unwrap();
        symlink("app.conf", u.join("etc/alias")).unwrap();
    }

    #[test]
    fn records_changes_whiteouts_owners_and_devices() {
        if !is_root() {
            eprintln!("skipped: needs root (chown, mknod)");
            return;
        }
        let (_d, lower, upper) = trees(lower_tree, change_tree);
        let (entries, report) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(report, DiffReport::default());
        let (tar, _) = layer(&entries);
        assert_eq!(
            listing(&tar),
            [
                ".wh.gone.txt f0 0 0:0",
                ".wh.olddir f0 0 0:0",
                "bin/ d 755 0:0",
                "bin/tool l>../usr/bin/tool 777 0:0",
                "d2f f10 644 0:0",
                "dev/ d 755 0:0",
                "dev/big b259:300 644 0:0",
                "dev/tty9 c4:10 644 0:0",
                "etc/ d 755 0:0",
                "etc/alias l>app.conf 777 0:0",
                "etc/app.conf f12 644 0:0",
                "etc/mode.conf f1 600 0:0",
                "etc/owned f1 644 33:33",
                "etc/same-size f4 644 0:0",
                "f2d/ d 750 0:0",
                "f2d/inner f2 644 0:0",
                "hl/ d 755 0:0",
                "hl/a f4 644 0:0",
                "hl/b h>hl/a 644 0:0",
                "home/ d 755 0:0",
                "home/user/ d 700 1000:1000",
                "home/user/.profile f7 600 1000:1000",
                "opq/ d 755 0:0",
                "opq/.wh..wh..opq f0 0 0:0",
                "opq/z f1 644 0:0",
                "srv/ d 755 0:0",
                "srv/pipe p 620 0:0",
                "usr/ d 755 0:0",
                "usr/bin/ d 755 0:0",
                "usr/bin/tool f10 4755 0:0",
                "var/ d 755 0:0",
                "var/spool/ d 755 0:0",
                "var/spool/cron/ d 1730 0:101",
                "var/spool/cron/root f12 600 0:0",
            ]
        );
        let kinds: Vec<_> = entries.0.iter().map(|e| &e.kind).collect();
        assert_eq!(kinds[0], &EntryKind::Whiteout);
        assert_eq!(paths(&entries)[0], "gone.txt");
        assert!(kinds.contains(&&EntryKind::Opaque));
        assert_round_trip(&tar, &lower, &upper);
    }

    #[test]
    fn same_trees_give_the_same_bytes() {
        if !is_root() {
            eprintln!("skipped: needs root (chown, mknod)");
            return;
        }
        let (_d1, lower, upper) = trees(lower_tree, change_tree);
        let (e1, _) = diff(&lower, &upper, &opts()).unwrap();
        let (e2, _) = diff(
            &lower,
            &upper,
            &DiffOptions {
                threads: 1,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(e1, e2);
        let (tar1, b1) = layer(&e1);
        let (_, b2) = layer(&e2);
        assert_eq!(b1, b2);
        // Built again elsewhere, later: other paths, inodes and mtimes.
        std::thread::sleep(Duration::from_millis(20));
        let (_d2, lower2, upper2) = trees(lower_tree, change_tree);
        let (e3, _) = diff(&lower2, &upper2, &opts()).unwrap();
        let (tar3, b3) = layer(&e3);
        assert_eq!(tar1, tar3);
        assert_eq!(b1, b3);
        assert_eq!(
            e1.key(Compression::Gzip, EPOCH),
            e3.key(Compression::Gzip, EPOCH)
        );
    }

    #[test]
    fn an_unchanged_copy_is_an_empty_layer() {
        let (_d, lower, upper) = trees(
            |l| {
                file(l, "a/b/c", "c", 0o640);
                file(l, "a/x", "x", 0o755);
                fs::hard_link(l.join("a/x"), l.join("y")).unwrap();
                symlink("a/x", l.join("z")).unwrap();
                run("mkfifo", &[l.join("p").as_os_str()]);
            },
            |u| {
                // Touched and rewritten with the same bytes: no change.
                set_mtime(&u.join("a/b/c"), std::time::SystemTime::now());
                fs::write(u.join("a/x"), "x").unwrap();
            },
        );
        let (entries, report) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(entries, Entries::default());
        assert_eq!(report, DiffReport::default());
    }

    #[test]
    fn bytes_decide_unless_mtime_is_trusted() {
        let (_d, lower, upper) = trees(
            |l| file(l, "f", "aaaa", 0o644),
            |u| {
                let f = u.join("f");
                let was = fs::metadata(&f).unwrap().modified().unwrap();
                fs::write(&f, "bbbb").unwrap();
                set_mtime(&f, was);
            },
        );
        let (entries, _) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(paths(&entries), ["f"]);
        let quick = DiffOptions {
            trust_mtime: true,
            ..opts()
        };
        let (entries, _) = diff(&lower, &upper, &quick).unwrap();
        assert_eq!(entries, Entries::default());
    }

    #[test]
    fn a_hard_linked_copy_sees_replaced_files() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("lower"), d.path().join("upper"));
        file(&lower, "etc/a", "a", 0o644);
        file(&lower, "etc/b", "b", 0o644);
        file(&lower, "usr/c", "c", 0o644);
        run(
            "cp",
            &[OsStr::new("-al"), lower.as_os_str(), upper.as_os_str()],
        );
        // Replaced (a new inode), as package managers and editors do.
        file(&upper, "etc/b.new", "B", 0o644);
        fs::rename(upper.join("etc/b.new"), upper.join("etc/b")).unwrap();
        let (entries, _) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(paths(&entries), ["etc", "etc/b"]);
        let (tar, _) = layer(&entries);
        assert_round_trip(&tar, &lower, &upper);
    }

    #[test]
    fn hard_link_groups_follow_upper() {
        let (_d, lower, upper) = trees(
            |l| {
                file(l, "a", "ab", 0o644);
                fs::hard_link(l.join("a"), l.join("b")).unwrap();
                file(l, "c", "c", 0o644);
                file(l, "e", "e", 0o644);
                fs::hard_link(l.join("e"), l.join("f")).unwrap();
                file(l, "k/g", "g", 0o644);
            },
            |u| {
                // b unlinked from a, same bytes; d a new name of c; f gone.
                fs::remove_file(u.join("b")).unwrap();
                file(u, "b", "ab", 0o644);
                fs::hard_link(u.join("c"), u.join("d")).unwrap();
                fs::remove_file(u.join("f")).unwrap();
                fs::hard_link(u.join("k/g"), u.join("k/h")).unwrap();
            },
        );
        let (entries, _) = diff(&lower, &upper, &opts()).unwrap();
        let (tar, _) = layer(&entries);
        assert_eq!(
            listing(&tar),
            [
                ".wh.f f0 0 0:0",
                "a f2 644 0:0",
                "b f2 644 0:0",
                "c f1 644 0:0",
                "d h>c 644 0:0",
                "k/ d 755 0:0",
                "k/g f1 644 0:0",
                "k/h h>k/g 644 0:0",
            ]
        );
        assert_round_trip(&tar, &lower, &upper);
    }

    #[test]
    fn opaque_only_when_no_old_name_is_left() {
        let (_d, lower, upper) = trees(
            |l| {
                file(l, "d/a", "a", 0o644);
                file(l, "d/b/c", "c", 0o644);
                file(l, "e/a", "a", 0o644);
                file(l, "e/b", "b", 0o644);
                file(l, "f/a", "a", 0o644);
                file(l, "r", "r", 0o644);
                file(l, "t/-x", "x", 0o644);
            },
            |u| {
                fs::remove_dir_all(u.join("d")).unwrap();
                file(u, "d/x/y", "new", 0o644);
                fs::remove_file(u.join("e/b")).unwrap();
                fs::remove_file(u.join("f/a")).unwrap();
                fs::remove_file(u.join("r")).unwrap();
                // A replaced name sorting before `.wh.`: no whiteout at all.
                fs::remove_file(u.join("t/-x")).unwrap();
                mkdir(u, "t/-x", 0o755);
            },
        );
        let (entries, _) = diff(&lower, &upper, &opts()).unwrap();
        let (tar, _) = layer(&entries);
        assert_eq!(
            listing(&tar),
            [
                ".wh.r f0 0 0:0",
                "d/ d 755 0:0",
                "d/.wh..wh..opq f0 0 0:0",
                "d/x/ d 755 0:0",
                "d/x/y f3 644 0:0",
                "e/ d 755 0:0",
                "e/.wh.b f0 0 0:0",
                "f/ d 755 0:0",
                "f/.wh..wh..opq f0 0 0:0",
                "t/ d 755 0:0",
                "t/-x/ d 755 0:0",
            ]
        );
        assert_round_trip(&tar, &lower, &upper);
    }

    #[test]
    fn residue_is_left_out_and_reported() {
        let (_d, lower, upper) = trees(
            |l| {
                file(l, "tmp/old", "o", 0o644);
                file(l, "tmp/same", "s", 0o644);
                file(l, "run/lock/x", "x", 0o644);
                file(l, "etc/machine-id", "", 0o444);
                file(l, "var/lib/apt/lists/a_Packages", "p", 0o644);
            },
            |u| {
                fs::remove_file(u.join("tmp/old")).unwrap();
                file(u, "tmp/new", "n", 0o644);
                file(u, "etc/machine-id", "0123456789abcdef\n", 0o444);
                file(u, "var/lib/apt/lists/b_Packages", "p", 0o644);
                file(u, "var/cache/apt/pkgcache.bin", "bin", 0o644);
                file(u, "var/cache/apt/archives/lock", "", 0o640);
                file(u, "usr/lib/py/m.py", "pass\n", 0o644);
                file(u, "usr/lib/py/__pycache__/m.cpython-313.pyc", "pyc", 0o644);
            },
        );
        let (entries, report) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(
            report.dropped,
            [
                "etc/machine-id",
                "tmp/new",
                "tmp/old",
                "usr/lib/py/__pycache__",
                "var/cache/apt/pkgcache.bin",
                "var/lib/apt/lists/b_Packages",
            ]
        );
        assert_eq!(
            paths(&entries),
            [
                "usr",
                "usr/lib",
                "usr/lib/py",
                "usr/lib/py/m.py",
                "var",
                "var/cache",
                "var/cache/apt",
                "var/cache/apt/archives",
                "var/cache/apt/archives/lock",
            ]
        );
        // Without residue every change is there.
        let all = DiffOptions {
            residue: Vec::new(),
            ..opts()
        };
        let (entries, report) = diff(&lower, &upper, &all).unwrap();
        assert!(report.dropped.is_empty());
        let (tar, _) = layer(&entries);
        assert!(listing(&tar).contains(&"tmp/.wh.old f0 0 0:0".to_string()));
        assert_round_trip(&tar, &lower, &upper);
    }

    #[test]
    fn bad_residue_patterns_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let o = DiffOptions {
            residue: vec!["var/[log".into()],
            ..opts()
        };
        let err = diff(d.path(), d.path(), &o).unwrap_err();
        assert!(matches!(err, LayerError::Pattern { .. }), "{err}");
        assert!(err.to_string().contains("var/[log"), "{err}");
    }

    #[test]
    fn sockets_are_left_out_and_reported() {
        let (_d, lower, upper) = trees(|l| file(l, "srv/s", "was a file", 0o644), |_| {});
        fs::remove_file(upper.join("srv/s")).unwrap();
        let _l1 = std::os::unix::net::UnixListener::bind(upper.join("srv/s")).unwrap();
        let _l2 = std::os::unix::net::UnixListener::bind(upper.join("srv/t")).unwrap();
        let (entries, report) = diff(&lower, &upper, &opts()).unwrap();
        assert_eq!(report.sockets, ["srv/s", "srv/t"]);
        let (tar, _) = layer(&entries);
        assert_eq!(listing(&tar), ["srv/ d 755 0:0", "srv/.wh.s f0 0 0:0"]);
    }

    #[test]
    fn whiteout_names_are_refused() {
        let (_d, lower, upper) = trees(|_| {}, |u| file(u, "a/.wh.b", "", 0o644));
        let err = diff(&lower, &upper, &opts()).unwrap_err();
        assert!(err.to_string().contains("a/.wh.b"), "{err}");
    }

    #[test]
    fn device_numbers_split_as_linux_does() {
        // makedev(259, 300) and makedev(4096 + 4095, 256).
        assert_eq!((major(0x0011_032c), minor(0x0011_032c)), (259, 300));
        let dev = (0x1000u64 << 32) | (0xfff << 8) | (0x100 << 12);
        assert_eq!((major(dev), minor(dev)), (4096 + 4095, 0x100));
    }

    #[test]
    fn new_kinds_have_their_own_keys() {
        let e = |kind: EntryKind| {
            Entries(vec![Entry {
                path: "a".into(),
                kind,
                mode: 0,
                uid: 0,
                gid: 0,
            }])
            .key(Compression::Gzip, 0)
        };
        let keys: BTreeSet<String> = [
            EntryKind::Whiteout,
            EntryKind::Opaque,
            EntryKind::Fifo,
            EntryKind::CharDevice { major: 1, minor: 3 },
            EntryKind::CharDevice { major: 1, minor: 5 },
            EntryKind::BlockDevice { major: 1, minor: 3 },
            EntryKind::Dir,
        ]
        .into_iter()
        .map(|kind| {
            // And they survive the store's JSON.
            let entries = Entries(vec![Entry {
                path: "a".into(),
                kind: kind.clone(),
                mode: 0,
                uid: 0,
                gid: 0,
            }]);
            let json = serde_json::to_string(&entries).unwrap();
            assert_eq!(serde_json::from_str::<Entries>(&json).unwrap(), entries);
            e(kind)
        })
        .collect();
        assert_eq!(keys.len(), 7);
    }
}
