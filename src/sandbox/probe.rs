//! What the place imgbuild runs in allows, probed once a process: which
//! isolation steps get, and whether a Debian or `run:` layer made here would
//! be the same bytes as elsewhere (device nodes where the store is, mknod,
//! chown, set-id bits). A runner that would silently make a different layer
//! is refused with the missing capability or mount named, and the fix.
//!
//! Cheap: the isolation's two process starts ([`super::detect`]) and a few
//! system calls in a temporary directory of the store.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Abilities, Isolation, Request};

/// The capabilities a build as root uses, by bit (linux/capability.h).
const CAPABILITIES: [(u32, &str); 8] = [
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (6, "SETGID"),
    (7, "SETUID"),
    (18, "SYS_CHROOT"),
    (27, "MKNOD"),
];

/// The filesystem the store (and every tree steps run in) is on.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFs {
    /// The store's directory (step trees are made in its `tmp`).
    pub path: PathBuf,
    /// Its mount point and filesystem type, from /proc/self/mountinfo.
    pub mount: PathBuf,
    pub fstype: String,
    /// Mounted `nodev`: device nodes there cannot be opened.
    pub nodev: bool,
}

/// What [`probe`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The isolation steps run with; None when none is possible here.
    pub isolation: Option<Isolation>,
    /// Why no isolation is possible, with the fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation_error: Option<String>,
    #[serde(flatten)]
    pub abilities: Abilities,
    pub store: StoreFs,
    /// A character device can be made (`mknod`, CAP_MKNOD as root).
    pub mknod: bool,
    /// A device node made in the store can be opened (the store is not on a
    /// `nodev` mount).
    pub dev: bool,
    /// Files can be given to another user and group (`chown`).
    pub chown: bool,
    /// `chmod g+s` of a file of a group this process is not in keeps the
    /// bit (CAP_FSETID), as dpkg needs for setgid programs; None when that
    /// cannot be tried (no chown).
    pub setid: Option<bool>,
    /// Capabilities a root build uses that this process lacks.
    pub missing_capabilities: Vec<String>,
}

/// Something missing here that would make a Debian or `run:` layer differ
/// silently from the same layer built elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lack {
    #[error(
        "device nodes cannot be made here ({why}), so /dev/null in the step's tree would be a plain file that ends up in the layer; give the container CAP_MKNOD (Docker's default set has it: drop `--cap-drop MKNOD`, or `--cap-add MKNOD`; a GitLab runner: `cap_add = [\"MKNOD\"]` in config.toml)"
    )]
    Mknod { why: String },
    #[error(
        "the store is on {} ({fstype}), which is mounted `nodev`: device nodes made there cannot be opened (dpkg: `cannot create /dev/null: Permission denied`); put the store on a filesystem without `nodev`, such as the mounted build directory: IMGBUILD_HOME=$PWD/.imgbuild (GitLab CI: `IMGBUILD_HOME: $CI_PROJECT_DIR/.imgbuild`)",
        mount.display()
    )]
    Nodev { mount: PathBuf, fstype: String },
    #[error(
        "set-id bits are dropped here (chmod g+s of a file of another group loses the bit: no CAP_FSETID), so setgid programs (chage, crontab, unix_chkpwd) would lose theirs; give the container CAP_FSETID (Docker's default set has it: drop `--cap-drop FSETID`, or `--cap-add FSETID`)"
    )]
    Setid,
}

impl Probe {
    /// What would make a Debian or `run:` layer made with `isolation`
    /// differ from the same layer made elsewhere; empty when nothing.
    pub fn lacks(&self, isolation: Isolation) -> Vec<Lack> {
        let mut lacks = Vec::new();
        // Namespaces mount their own /dev (a tmpfs with the host's nodes
        // bound in); only chroot makes device nodes in the tree.
        if isolation == Isolation::Chroot {
            if !self.mknod {
                lacks.push(Lack::Mknod {
                    why: if self.missing_capabilities.iter().any(|c| c == "MKNOD") {
                        "no CAP_MKNOD".into()
                    } else {
                        "mknod is not permitted".into()
                    },
                });
            }
            if !self.dev {
                lacks.push(Lack::Nodev {
                    mount: self.store.mount.clone(),
                    fstype: self.store.fstype.clone(),
                });
            }
        }
        if self.setid == Some(false) {
            lacks.push(Lack::Setid);
        }
        lacks
    }

    /// The one line a person reads: `isolation: chroot (root, no
    /// namespaces); store on /builds (ext4, dev ok); mknod ok; chown ok;
    /// setid ok`.
    pub fn summary(&self) -> String {
        let a = &self.abilities;
        let who = if super::in_userns() {
            "root in a user namespace"
        } else if a.root {
            "root"
        } else {
            "not root"
        };
        let mut why = vec![who.to_string()];
        if a.root && !super::in_userns() && !a.namespaces {
            why.push("no namespaces".into());
        }
        if a.root && !a.chroot {
            why.push("no chroot".into());
        }
        if !self.missing_capabilities.is_empty() {
            why.push(format!(
                "no CAP_{}",
                self.missing_capabilities.join(", CAP_")
            ));
        }
        let isolation = self
            .isolation
            .map_or_else(|| "none".to_string(), |i| i.to_string());
        let ok = |b: bool, no: &str| if b { "ok".to_string() } else { no.to_string() };
        // Namespaces mount their own /dev: devices in the store go unused.
        let unused = match self.isolation {
            Some(i) if i != Isolation::Chroot => format!(" (unused by {i})"),
            _ => String::new(),
        };
        format!(
            "isolation: {isolation} ({}); store on {} ({}, {}{unused}); mknod {}{}; chown {}; setid {}",
            why.join(", "),
            self.store.mount.display(),
            self.store.fstype,
            if self.dev {
                "dev ok"
            } else if self.store.nodev {
                "nodev"
            } else {
                "devices cannot be opened"
            },
            ok(self.mknod, "not permitted"),
            if self.mknod { "" } else { unused.as_str() },
            ok(self.chown, "not permitted"),
            match self.setid {
                Some(true) => "ok".to_string(),
                Some(false) => "bits dropped".to_string(),
                None => "untried (no chown)".to_string(),
            },
        )
    }
}

/// Probes this process for steps requested as `request`, where the store
/// at `store` keeps temporary trees (`tmp`, made if missing).
pub fn probe(request: Request, store: &Path, tmp: &Path) -> Probe {
    let abilities = super::detect();
    let (isolation, isolation_error) = match abilities.choose(request) {
        Ok(i) => (Some(i), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let _ = std::fs::create_dir_all(tmp);
    let store = StoreFs {
        path: store.to_path_buf(),
        ..store_fs(tmp)
    };
    let scratch = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(tmp)
        .ok();
    let (mknod, dev) = match &scratch {
        Some(d) => devices(d.path()),
        None => (false, false),
    };
    // Without a node to open, the mount's flag answers.
    let dev = dev || (!mknod && !store.nodev);
    let (chown, setid) = match &scratch {
        Some(d) => set_id(d.path()),
        None => (false, None),
    };
    let missing_capabilities = if abilities.root && !super::in_userns() {
        missing_capabilities()
    } else {
        Vec::new()
    };
    Probe {
        isolation,
        isolation_error,
        abilities,
        store,
        mknod,
        dev,
        chown,
        setid,
        missing_capabilities,
    }
}

/// Whether a null device can be made in `dir`, and opened there.
fn devices(dir: &Path) -> (bool, bool) {
    use rustix::fs::{FileType, Mode, makedev, mknodat};
    let node = dir.join("null");
    let made = mknodat(
        rustix::fs::CWD,
        &node,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .is_ok();
    let opened = made && std::fs::OpenOptions::new().write(true).open(&node).is_ok();
    (made, opened)
}

/// Whether a file can be given to another group, and whether `chmod g+s`
/// then keeps the bit (None when the chown fails).
fn set_id(dir: &Path) -> (bool, Option<bool>) {
    let file = dir.join("setgid");
    if std::fs::write(&file, b"").is_err() {
        return (false, None);
    }
    let mine = own_groups();
    // A group this process is not in, as `shadow` (42) is for root.
    let Some(gid) = [42u32, 43, 60, 100, 65534]
        .into_iter()
        .find(|g| !mine.contains(g))
    else {
        return (false, None);
    };
    let group = rustix::fs::Gid::from_raw(gid);
    if rustix::fs::chown(&file, None, Some(group)).is_err() {
        return (false, None);
    }
    let kept = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o2755)).is_ok()
        && std::fs::metadata(&file).is_ok_and(|m| m.mode() & 0o2000 != 0 && m.gid() == gid);
    (true, Some(kept))
}

/// The effective and supplementary group ids of this process.
fn own_groups() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut ids: Vec<u32> = Vec::new();
    for l in status.lines() {
        if let Some(rest) = l.strip_prefix("Gid:") {
            ids.extend(
                rest.split_whitespace()
                    .filter_map(|w| w.parse::<u32>().ok()),
            );
        } else if let Some(rest) = l.strip_prefix("Groups:") {
            ids.extend(
                rest.split_whitespace()
                    .filter_map(|w| w.parse::<u32>().ok()),
            );
        }
    }
    ids
}

/// A field of /proc/self/status.
pub(super) fn status_field(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
}

/// The capabilities of [`CAPABILITIES`] missing from this process's
/// effective set.
pub(super) fn missing_capabilities() -> Vec<String> {
    let Some(eff) = status_field("CapEff").and_then(|v| u64::from_str_radix(&v, 16).ok()) else {
        return Vec::new();
    };
    missing_in(eff)
}

fn missing_in(eff: u64) -> Vec<String> {
    CAPABILITIES
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The mount `path` is on: the longest mount point of /proc/self/mountinfo
/// that holds it; whether it is `nodev` comes from statvfs.
fn store_fs(path: &Path) -> StoreFs {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let nodev = rustix::fs::statvfs(&canonical)
        .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::NODEV));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (mount, fstype) =
        mount_of(&info, &canonical).unwrap_or_else(|| (PathBuf::from("/"), "unknown".to_string()));
    StoreFs {
        path: path.to_path_buf(),
        mount,
        fstype,
        nodev,
    }
}

/// The mount point and type in `mountinfo` text that holds `path`.
fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            // Mount points escape spaces and the like as \ooo.
            let point = unescape(left.split(' ').nth(4)?);
            let fstype = right.split(' ').next()?.to_string();
            path.starts_with(&point).then_some((point, fstype))
        })
        // The last of the longest: a later mount over the same point wins.
        .fold(None, |best: Option<(PathBuf, String)>, m| match &best {
            Some(b) if b.0.as_os_str().len() > m.0.as_os_str().len() => best,
            _ => Some(m),
        })
}

fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(isolation: Isolation, mknod: bool, dev: bool, setid: Option<bool>) -> Probe {
        Probe {
            isolation: Some(isolation),
            isolation_error: None,
            abilities: Abilities {
                root: true,
                chroot: true,
                namespaces: false,
                userns: false,
                notes: Vec::new(),
                hint: String::new(),
            },
            store: StoreFs {
                path: "/root/.cache/imgbuild/tmp".into(),
                mount: "/".into(),
                fstype: "fuse.fuse-overlayfs".into(),
                nodev: !dev,
            },
            mknod,
            dev,
            chown: true,
            setid,
            missing_capabilities: if mknod { vec![] } else { vec!["MKNOD".into()] },
        }
    }

    #[test]
    fn what_a_layer_would_lack_depends_on_the_isolation() {
        let all = probe_with(Isolation::Chroot, true, true, Some(true));
        assert!(all.lacks(Isolation::Chroot).is_empty());
        let nodev = probe_with(Isolation::Chroot, true, false, Some(true));
        let lacks = nodev.lacks(Isolation::Chroot);
        assert_eq!(lacks.len(), 1);
        let text = lacks[0].to_string();
        assert!(
            text.contains("/ (fuse.fuse-overlayfs)")
                && text.contains("nodev")
                && text.contains("IMGBUILD_HOME"),
            "{text}"
        );
        // A namespace mounts its own /dev: the store's mount does not matter.
        assert!(nodev.lacks(Isolation::Namespace).is_empty());
        let bare = probe_with(Isolation::Chroot, false, false, Some(false));
        let text: Vec<String> = bare
            .lacks(Isolation::Chroot)
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert!(text[0].contains("no CAP_MKNOD") && text[0].contains("--cap-add MKNOD"));
        assert!(text[2].contains("CAP_FSETID") && text[2].contains("--cap-add FSETID"));
        assert_eq!(bare.lacks(Isolation::Namespace), vec![Lack::Setid]);
        let userns = Probe {
            isolation: Some(Isolation::Userns),
            ..bare.clone()
        };
        assert_eq!(
            userns.summary(),
            "isolation: userns (root, no namespaces, no CAP_MKNOD); store on / (fuse.fuse-overlayfs, nodev (unused by userns)); mknod not permitted (unused by userns); chown ok; setid bits dropped"
        );
        assert_eq!(
            bare.summary(),
            "isolation: chroot (root, no namespaces, no CAP_MKNOD); store on / (fuse.fuse-overlayfs, nodev); mknod not permitted; chown ok; setid bits dropped"
        );
    }

    #[test]
    fn capabilities_are_named_from_the_effective_set() {
        // Docker's default set (`CapEff: a80425fb`) has all a build uses.
        assert!(missing_in(0xa80425fb).is_empty());
        assert_eq!(missing_in(0), CAPABILITIES.map(|c| c.1.to_string()));
        let no_mknod = 0xa80425fb & !(1 << 27);
        assert_eq!(missing_in(no_mknod), ["MKNOD"]);
    }

    #[test]
    fn the_store_mount_is_the_longest_that_holds_it() {
        let info = "\
22 1 0:21 / / rw,relatime - fuse.fuse-overlayfs fuse-overlayfs rw
30 22 8:1 /b /builds rw,relatime - ext4 /dev/sda1 rw
31 22 8:1 /c /build\\040dir rw - xfs /dev/sdb rw
";
        let m = |p: &str| mount_of(info, Path::new(p)).unwrap();
        assert_eq!(m("/root/.cache/imgbuild/tmp").1, "fuse.fuse-overlayfs");
        assert_eq!(m("/builds/x/.imgbuild"), ("/builds".into(), "ext4".into()));
        // Not a path component match: /buildsx is on /.
        assert_eq!(m("/buildsx").0, PathBuf::from("/"));
        assert_eq!(m("/build dir/s"), ("/build dir".into(), "xfs".into()));
    }

    #[test]
    fn this_process_is_probed_in_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = probe(Request::Auto, d.path(), &d.path().join("tmp"));
        // Whatever this machine allows, the summary says it in one line,
        // and a root process with every capability passes every probe.
        assert!(!p.summary().contains('\n'));
        if p.abilities.root && p.missing_capabilities.is_empty() && !p.store.nodev {
            assert!(
                p.mknod && p.dev && p.chown && p.setid == Some(true),
                "{p:?}"
            );
        }
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
