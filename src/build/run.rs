//! `run:` steps: what they run with, and their cache key.
use oci_spec::image::ImageConfiguration;
use sha2::{Digest as _, Sha256};

use crate::layer::Compression;
use crate::oci::image::LayerDesc;
use std::path::{Path, PathBuf};

use crate::spec::ConfigSpec;

/// What steps run with: the image's env, workdir and user (the parent's
/// config with this image's over it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl Context {
    pub fn new(parent: Option<&ImageConfiguration>, spec: &ConfigSpec) -> Context {
        let run = parent.and_then(|p| p.config().as_ref());
        let mut env: Vec<(String, String)> = run
            .and_then(|c| c.env().clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        for (k, v) in &spec.env {
            match env.iter_mut().find(|(ek, _)| ek == k) {
                Some(e) => e.1 = v.clone(),
                None => env.push((k.clone(), v.clone())),
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        Context {
            env,
            workdir: spec
                .workdir
                .clone()
                .or_else(|| run.and_then(|c| c.working_dir().clone())),
            user: spec
                .user
                .clone()
                .or_else(|| run.and_then(|c| c.user().clone())),
        }
    }
}

/// The key of a run layer: the layers below (by diff_id: what the steps see),
/// the commands, what they run with, and how the layer is written.
pub fn key(
    below: &[LayerDesc],
    commands: &[String],
    cx: &Context,
    compression: Compression,
    epoch: i64,
) -> String {
    let input = serde_json::json!({
        "v": 1,
        "below": below.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        "run": commands,
        "env": cx.env,
        "workdir": cx.workdir,
        "user": cx.user,
        "compression": compression.to_string(),
        "epoch": epoch,
    });
    hex::encode(Sha256::digest(crate::oci::image::canonical_json(&input)))
}

/// The last lines a step printed, for its error message.
#[derive(Default)]
pub struct Tail(std::sync::Mutex<std::collections::VecDeque<String>>);

impl Tail {
    const LINES: usize = 20;

    pub fn push(&self, line: &str) {
        if let Ok(mut t) = self.0.lock() {
            t.push_back(line.to_string());
            if t.len() > Self::LINES {
                t.pop_front();
            }
        }
    }

    pub fn text(self) -> String {
        let lines: Vec<String> = self.0.into_inner().unwrap_or_default().into();
        lines.join("\n")
    }
}

/// Makes the directories the sandbox mounts over, where the image has
/// nothing of that name.
pub fn mount_points(root: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("run", 0o755),
    ] {
        let path = root.join(dir);
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::create_dir(&path)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Copies a root filesystem for steps to change (reflinks where the
/// filesystem has them); the copy keeps owners, modes, links and times.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    // GNU cp shares extents where the filesystem can; busybox's cp (in
    // minimal CI images) has no --reflink, so plain -a is the fallback.
    let mut last = String::new();
    for args in [&["-a", "--reflink=auto"][..], &["-a"][..]] {
        let out = std::process::Command::new("cp")
            .args(args)
            .arg(from)
            .arg(to)
            .output()
            .map_err(|e| format!("cannot run cp: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let _ = std::fs::remove_dir_all(to);
    }
    Err(format!("copying the root filesystem: {last}"))
}

/// A writable view of a cached root filesystem, removed on drop: an
/// overlay (the cached tree is its read-only lower) or a copy of it.
pub struct Scratch {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    /// Where steps see the tree.
    root: PathBuf,
    overlay: Option<crate::sandbox::Overlay>,
}

impl Scratch {
    pub fn new(tmp: &Path, prefix: &str, lower: PathBuf, overlay: bool) -> Result<Scratch, String> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mk = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p)
                .map(|()| p.clone())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        if overlay {
            let ovl = crate::sandbox::Overlay {
                lower: lower.clone(),
                upper: mk("upper")?,
                work: mk("work")?,
            };
            Ok(Scratch {
                root: mk("merged")?,
                _dir: dir,
                lower,
                overlay: Some(ovl),
            })
        } else {
            let root = dir.path().join("rootfs");
            copy_tree(&lower, &root)?;
            Ok(Scratch {
                _dir: dir,
                lower,
                root,
                overlay: None,
            })
        }
    }

    pub fn is_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// `command` as a step in this tree, with `cx`.
    pub fn step(&self, command: &str, cx: &Context) -> crate::sandbox::Step {
        crate::sandbox::Step {
            root: self.root.clone(),
            command: command.to_string(),
            env: cx.env.clone(),
            workdir: cx.workdir.clone(),
            user: cx.user.clone(),
            network: true,
            overlay: self.overlay.clone(),
        }
    }

    /// What the steps changed, as layer entries.
    pub fn snapshot(
        &self,
        isolation: crate::sandbox::Isolation,
        threads: usize,
    ) -> Result<(crate::layer::Entries, crate::layer::diff::DiffReport), crate::layer::LayerError>
    {
        let opts = crate::layer::diff::DiffOptions {
            // The copy keeps mtimes, and overlay's copy-up too: size and
            // mtime decide without reading both trees whole (a step that
            // restores an mtime after a same-size edit is not seen, as with
            // buildah and kaniko).
            trust_mtime: true,
            threads,
            ..crate::layer::diff::DiffOptions::default()
        };
        match &self.overlay {
            Some(o) => crate::layer::diff::diff_overlay(
                &self.lower,
                &o.upper,
                crate::sandbox::Overlay::opaque_xattr(isolation),
                &opts,
            ),
            None => crate::layer::diff::diff(&self.lower, &self.root, &opts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_merges_env_and_keys_change_with_inputs() {
        let mut spec = ConfigSpec::default();
        spec.env.insert("A".into(), "1".into());
        let cx = Context::new(None, &spec);
        assert!(cx.env.iter().any(|(k, _)| k == "PATH"));
        let below = vec![];
        let k1 = key(&below, &["true".into()], &cx, Compression::Gzip, 0);
        assert_eq!(k1, key(&below, &["true".into()], &cx, Compression::Gzip, 0));
        assert_ne!(
            k1,
            key(&below, &["false".into()], &cx, Compression::Gzip, 0)
        );
        let mut cx2 = cx.clone();
        cx2.env[0].1 = "2".into();
        assert_ne!(
            k1,
            key(&below, &["true".into()], &cx2, Compression::Gzip, 0)
        );
    }
}
