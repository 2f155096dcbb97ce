//! `run:` steps: what they run with, and their cache key.
use oci_spec::image::ImageConfiguration;
use sha2::{Digest as _, Sha256};

use crate::layer::LayerCompression;
use crate::oci::image::LayerDesc;
use std::path::{Path, PathBuf};

use crate::spec::{ConfigSpec, SecretSource, SecretSpec};

/// Why steps could not be got ready: their secrets, or their tree.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "secret `{name}`: the environment variable {var} is not set; set it for the build (in GitLab CI: a masked variable)"
    )]
    SecretUnset { name: String, var: String },
    #[error("secret `{name}`: cannot read {}: {source}", path.display())]
    SecretUnreadable {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret `{name}`: {}: {source}", path.display())]
    SecretFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run cp: {0}")]
    Cp(std::io::Error),
    #[error("copying the root filesystem: {stderr}")]
    Copy { stderr: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

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
/// the commands, what they run with, and how the layer is written. Secrets
/// enter by name, and by a hash of their value only when they ask to
/// (`rebuild: true`); `secrets` holds those hashes.
pub fn key(
    below: &[LayerDesc],
    commands: &[String],
    cx: &Context,
    compression: LayerCompression,
    epoch: i64,
    extra: &KeyExtra,
) -> String {
    let mut input = serde_json::json!({
        "v": 1,
        "below": below.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        "run": commands,
        "env": cx.env,
        "workdir": cx.workdir,
        "user": cx.user,
        "compression": compression.to_string(),
        "epoch": epoch,
    });
    // Only when set, so keys of images without them stay as they were.
    if extra.no_network {
        input["network"] = "none".into();
    }
    if extra.chroot {
        input["isolation"] = "chroot".into();
    }
    if !extra.secrets.is_empty() {
        input["secrets"] = serde_json::json!(extra.secrets);
    }
    hex::encode(Sha256::digest(crate::oci::image::canonical_json(&input)))
}

/// What else a run layer's key holds.
#[derive(Debug, Clone, Default)]
pub struct KeyExtra {
    pub no_network: bool,
    /// Made under chroot isolation, where steps see no /proc, /dev or
    /// tmpfs of their own and may write different bytes (see
    /// `Session::keyed_isolation`).
    pub chroot: bool,
    /// Each secret's name, and its value's hash when it asks for rebuilds.
    pub secrets: Vec<(String, Option<String>)>,
}

impl KeyExtra {
    pub fn of(image: &crate::spec::Image) -> Result<KeyExtra, RunError> {
        let mut secrets = Vec::new();
        for s in &image.secrets {
            let hash = match s.rebuild {
                true => {
                    let value = secret_value(s)?;
                    // Domain-separated, so the key is not a bare hash of it.
                    let mut h = Sha256::new();
                    h.update(b"imgbuild secret\0");
                    h.update(s.name.as_bytes());
                    h.update(b"\0");
                    h.update(&value);
                    Some(hex::encode(h.finalize()))
                }
                false => None,
            };
            secrets.push((s.name.clone(), hash));
        }
        Ok(KeyExtra {
            no_network: image.network == crate::spec::Network::None,
            chroot: false,
            secrets,
        })
    }
}

/// A secret's value, read now; the error names the secret and its source,
/// never a value.
pub fn secret_value(s: &SecretSpec) -> Result<Vec<u8>, RunError> {
    match &s.source {
        SecretSource::Env(var) => std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| RunError::SecretUnset {
                name: s.name.clone(),
                var: var.clone(),
            }),
        SecretSource::File(path) => {
            std::fs::read(path).map_err(|source| RunError::SecretUnreadable {
                name: s.name.clone(),
                path: path.clone(),
                source,
            })
        }
    }
}

/// The secrets of one build of steps: files in a private directory for the
/// sandbox to show at /run/secrets, and the values to hide in output.
pub struct Secrets {
    dir: Option<tempfile::TempDir>,
    hidden: Vec<String>,
}

impl Secrets {
    pub fn none() -> Secrets {
        Secrets {
            dir: None,
            hidden: Vec::new(),
        }
    }

    /// Reads `specs` into files under `tmp` readable only by `owner`.
    pub fn prepare(
        specs: &[SecretSpec],
        tmp: &Path,
        owner: (u32, u32),
    ) -> Result<Secrets, RunError> {
        use std::os::unix::fs::PermissionsExt;
        if specs.is_empty() {
            return Ok(Secrets::none());
        }
        let dir = tempfile::Builder::new()
            .prefix("secrets-")
            .tempdir_in(tmp)
            .map_err(io_at(tmp))?;
        let mut hidden = Vec::new();
        for s in specs {
            let value = secret_value(s)?;
            let path = dir.path().join(&s.name);
            let fail = |source| RunError::SecretFile {
                name: s.name.clone(),
                path: path.clone(),
                source,
            };
            std::fs::write(&path, &value).map_err(fail)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
                .map_err(fail)?;
            if crate::layer::unpack::running_as_root() {
                std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1)).map_err(fail)?;
            }
            let text = String::from_utf8_lossy(&value);
            // The whole value and each line of it; short ones would hide
            // ordinary words.
            for part in std::iter::once(text.trim()).chain(text.lines().map(str::trim)) {
                if part.len() >= 4 && !hidden.iter().any(|h| h == part) {
                    hidden.push(part.to_string());
                }
            }
        }
        // Longest first, so a line is not half-hidden by a shorter part.
        hidden.sort_by_key(|h| std::cmp::Reverse(h.len()));
        Ok(Secrets {
            dir: Some(dir),
            hidden,
        })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// `line` with every secret value replaced by `***`.
    pub fn redact<'l>(&self, line: &'l str) -> std::borrow::Cow<'l, str> {
        let mut out = std::borrow::Cow::Borrowed(line);
        for h in &self.hidden {
            if out.contains(h.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(h.as_str(), "***"));
            }
        }
        out
    }
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

/// The directories the sandbox mounts over, with the modes they get when
/// an image has none.
const MOUNT_POINTS: [(&str, u32); 4] = [
    ("proc", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
];

/// Makes the mount points that neither `root` nor `lower` has, in `root`;
/// the names made.
fn mount_points(root: &Path, lower: Option<&Path>) -> Result<Vec<String>, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let mut made = Vec::new();
    for (dir, mode) in MOUNT_POINTS {
        let path = root.join(dir);
        let exists = |r: &Path| std::fs::symlink_metadata(r.join(dir)).is_ok();
        if !exists(root) && !lower.is_some_and(exists) {
            std::fs::create_dir(&path)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(io_at(&path))?;
            made.push(dir.to_string());
        }
    }
    Ok(made)
}

/// Copies a root filesystem for steps to change (reflinks where the
/// filesystem has them); the copy keeps owners, modes, links and times.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<(), RunError> {
    // GNU cp shares extents where the filesystem can; busybox's cp (in
    // minimal CI images) has no --reflink, so plain -a is the fallback.
    let cp = crate::sandbox::host_tool(crate::sandbox::Tool::Cp).map_err(|e| {
        RunError::Cp(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            e.to_string(),
        ))
    })?;
    let mut last = String::new();
    for args in [&["-a", "--reflink=auto"][..], &["-a"][..]] {
        let out = std::process::Command::new(cp)
            .args(args)
            .arg(from)
            .arg(to)
            .output()
            .map_err(RunError::Cp)?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let _ = std::fs::remove_dir_all(to);
    }
    Err(RunError::Copy { stderr: last })
}

/// A writable view of a cached root filesystem, removed on drop: an
/// overlay (the cached tree is its read-only lower) or a copy of it.
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// Mount points made for the sandbox that the image does not have:
    /// left out of the snapshot (what is mounted there, the steps' writes
    /// included, never reaches the tree).
    synthetic: std::sync::Mutex<Vec<String>>,
    lower: PathBuf,
    /// Where steps see the tree.
    root: PathBuf,
    overlay: Option<crate::sandbox::Overlay>,
}

impl Scratch {
    pub fn new(
        tmp: &Path,
        prefix: &str,
        lower: PathBuf,
        overlay: bool,
    ) -> Result<Scratch, RunError> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(tmp)
            .map_err(io_at(tmp))?;
        let mk = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).map_err(io_at(&p))?;
            Ok::<_, RunError>(p)
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
                synthetic: Default::default(),
                lower,
                overlay: Some(ovl),
            })
        } else {
            let root = dir.path().join("rootfs");
            copy_tree(&lower, &root)?;
            Ok(Scratch {
                _dir: dir,
                synthetic: Default::default(),
                lower,
                root,
                overlay: None,
            })
        }
    }

    /// Makes what the sandbox mounts over, where the tree lacks it: call
    /// after writing into [`Self::writable`] and before the steps.
    pub fn ready(&self) -> Result<(), RunError> {
        let made = match &self.overlay {
            Some(o) => mount_points(&o.upper, Some(&self.lower))?,
            None => mount_points(&self.root, None)?,
        };
        self.synthetic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(made);
        Ok(())
    }

    pub fn is_overlay(&self) -> bool {
        self.overlay.is_some()
    }

    /// The tree the steps' /etc comes from (before they change it).
    pub fn lower(&self) -> &Path {
        &self.lower
    }

    /// `command` as a step in this tree, with `cx`.
    pub fn step(
        &self,
        command: &str,
        cx: &Context,
        network: bool,
        secrets: &Secrets,
    ) -> crate::sandbox::Step {
        crate::sandbox::Step {
            root: self.root.clone(),
            command: command.to_string(),
            env: cx.env.clone(),
            workdir: cx.workdir.clone(),
            user: cx.user.clone(),
            network,
            overlay: self.overlay.clone(),
            binds: secrets
                .dir()
                .map(|d| crate::sandbox::Bind {
                    host: d.to_path_buf(),
                    name: "secrets".into(),
                })
                .into_iter()
                .collect(),
        }
    }

    /// Where files can be put before the steps run: overlay's upper
    /// directory, or the copy.
    pub fn writable(&self) -> &Path {
        self.overlay.as_ref().map_or(&self.root, |o| &o.upper)
    }

    /// What the steps changed, as layer entries.
    pub fn snapshot(
        &self,
        isolation: crate::sandbox::Isolation,
        threads: usize,
    ) -> Result<(crate::layer::Entries, crate::layer::diff::DiffReport), crate::layer::LayerError>
    {
        let residue = crate::layer::diff::DEFAULT_RESIDUE;
        self.snapshot_with(isolation, threads, residue)
    }

    /// [`Self::snapshot`] leaving out changes under `residue`.
    pub fn snapshot_with(
        &self,
        isolation: crate::sandbox::Isolation,
        threads: usize,
        residue: &[&str],
    ) -> Result<(crate::layer::Entries, crate::layer::diff::DiffReport), crate::layer::LayerError>
    {
        let opts = crate::layer::diff::DiffOptions {
            residue: residue.iter().map(|s| (*s).to_string()).collect(),
            // The copy keeps mtimes, and overlay's copy-up too: size and
            // mtime decide without reading both trees whole (a step that
            // restores an mtime after a same-size edit is not seen, as with
            // buildah and kaniko).
            trust_mtime: true,
            threads,
        };
        let (mut entries, report) = match &self.overlay {
            Some(o) => crate::layer::diff::diff_overlay(
                &self.lower,
                &o.upper,
                crate::sandbox::Overlay::opaque_xattr(isolation),
                &opts,
            )?,
            None => crate::layer::diff::diff(&self.lower, &self.root, &opts)?,
        };
        let synthetic = self.synthetic.lock().unwrap_or_else(|e| e.into_inner());
        entries.0.retain(|e| {
            let made = synthetic.contains(&e.path);
            let under = |s: &String| {
                e.path
                    .strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            };
            !(made || synthetic.iter().any(under))
        });
        Ok((entries, report))
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
        let none = KeyExtra::default();
        // The key of `cmd` in `cx` with `extra`, all else as k1's.
        let k = |cmd: &str, cx: &Context, extra: &KeyExtra| {
            key(&below, &[cmd.into()], cx, LayerCompression::GZIP, 0, extra)
        };
        let k1 = k("true", &cx, &none);
        assert_eq!(k1, k("true", &cx, &none));
        assert_ne!(k1, k("false", &cx, &none));
        let mut cx2 = cx.clone();
        cx2.env[0].1 = "2".into();
        assert_ne!(k1, k("true", &cx2, &none));
        // Made under chroot (no /proc): another key, namespace's unchanged.
        let chroot = KeyExtra {
            chroot: true,
            ..KeyExtra::default()
        };
        assert_ne!(k1, k("true", &cx, &chroot));
        let offline = KeyExtra {
            no_network: true,
            ..KeyExtra::default()
        };
        assert_ne!(k1, k("true", &cx, &offline));
    }

    #[test]
    fn secrets_are_hidden_in_output_and_hashed_only_when_asked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("token"), "s3cr3t-value\nsecond-line\n").unwrap();
        let spec = SecretSpec {
            name: "token".into(),
            source: SecretSource::File(d.path().join("token")),
            rebuild: false,
        };
        let secrets = Secrets::prepare(std::slice::from_ref(&spec), d.path(), (0, 0)).unwrap();
        let file = secrets.dir().unwrap().join("token");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"s3cr3t-value\nsecond-line\n"
        );
        assert_eq!(
            secrets.redact("got s3cr3t-value and second-line here"),
            "got *** and *** here"
        );
        let mut image = crate::spec::Image {
            name: "x".into(),
            pos: Default::default(),
            parent: crate::spec::Parent::Scratch,
            layers: vec![],
            run: vec![],
            test: vec![],
            config: ConfigSpec::default(),
            tags: vec![],
            vars: Default::default(),
            secrets: vec![spec],
            network: crate::spec::Network::Host,
            debian: None,
            compression: None,
        };
        let plain = KeyExtra::of(&image).unwrap();
        assert_eq!(plain.secrets, [("token".to_string(), None)]);
        image.secrets[0].rebuild = true;
        let hashed = KeyExtra::of(&image).unwrap();
        let h = hashed.secrets[0].1.clone().unwrap();
        assert!(!h.contains("s3cr3t"));
        std::fs::write(d.path().join("token"), "other").unwrap();
        assert_ne!(
            KeyExtra::of(&image).unwrap().secrets[0].1.clone().unwrap(),
            h
        );
        // A missing source names the secret and where it looked.
        image.secrets[0].source = SecretSource::Env("IMGBUILD_TEST_UNSET_VAR".into());
        let e = KeyExtra::of(&image).unwrap_err().to_string();
        assert!(
            e.contains("secret `token`") && e.contains("IMGBUILD_TEST_UNSET_VAR"),
            "{e}"
        );
    }
}
