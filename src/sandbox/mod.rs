//! Running a command inside a root filesystem, without a daemon.
//!
//! Three ways, by what the environment allows:
//! - `namespace`: root with full rights (a VM, a laptop): new mount, PID,
//!   IPC and UTS namespaces, a private /proc, a minimal /dev, tmpfs /tmp and
//!   /run, then chroot. Nothing mounted is visible outside.
//! - `chroot`: root inside an ordinary unprivileged container (a GitLab
//!   runner's default Docker executor), where chroot is allowed but mount and
//!   unshare are not. No /proc inside.
//! - `userns`: a normal user where unprivileged user namespaces are allowed;
//!   the user is root inside.
//!
//! The work is done by Debian's own `unshare` (util-linux) and `chroot`
//! (coreutils), which keeps raw system calls out of this crate. They are
//! found once on a fixed PATH and run by absolute path (see [`tools`]).
mod probe;
pub mod tools;

pub use probe::{Lack, Probe, StoreFs, probe};
pub use tools::{HOST_PATH, Tool, host_tool};

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Namespace,
    Chroot,
    Userns,
}

/// `--isolation`: a mode, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Auto,
    Exactly(Isolation),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Auto => f.write_str("auto"),
            Request::Exactly(i) => f.write_str(&format!("{i:?}").to_lowercase()),
        }
    }
}

impl FromStr for Request {
    type Err = String;
    fn from_str(s: &str) -> Result<Request, String> {
        Ok(match s {
            "auto" => Request::Auto,
            "namespace" => Request::Exactly(Isolation::Namespace),
            "chroot" => Request::Exactly(Isolation::Chroot),
            "userns" => Request::Exactly(Isolation::Userns),
            other => {
                return Err(format!(
                    "unknown isolation `{other}`; use auto, namespace, chroot or userns"
                ));
            }
        })
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Namespace => "namespace",
            Isolation::Chroot => "chroot",
            Isolation::Userns => "userns",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no way to run commands here: {0}")]
    Impossible(String),
    #[error("isolation `{wanted}` is not possible here: {why}")]
    NotPossible { wanted: Isolation, why: String },
    #[error(
        "`{tool}` is not on {}, where imgbuild looks for the host's tools whatever the image's PATH; install it (Debian package {package})",
        HOST_PATH
    )]
    NoTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("user `{user}`: {why}")]
    User { user: String, why: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What this process may do.
#[derive(Debug, Clone, Serialize)]
pub struct Abilities {
    pub root: bool,
    pub chroot: bool,
    pub namespaces: bool,
    pub userns: bool,
    /// Why each missing ability is missing, for the error message.
    pub notes: Vec<String>,
    /// What to do when no isolation is possible, for this process as it is
    /// (root or not, its capabilities, the kernel's settings).
    #[serde(skip)]
    pub hint: String,
}

fn succeeds(tool: Tool, args: &[&str]) -> Result<(), String> {
    let program = host_tool(tool).map_err(|e| e.to_string())?;
    match Command::new(program)
        .args(args)
        .env("PATH", HOST_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("{}: {e}", program.display())),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Probes the environment: cheap (a few process starts), done once a build.
pub fn detect() -> Abilities {
    // Inside its own user namespace imgbuild is root there: the namespace
    // machinery works, and is what `userns` isolation means.
    let inside = in_userns();
    let root = is_root();
    let mut notes = Vec::new();
    let chroot = root
        && match succeeds(Tool::Chroot, &["/", "true"]) {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!("chroot: {e}"));
                false
            }
        };
    if !root {
        notes.push("chroot and namespace isolation need root".into());
        // unshare's own words: a seccomp filter and a kernel setting both
        // say "Operation not permitted", the hint tells them apart.
        if let Err(e) = succeeds(Tool::Unshare, &["--user", "--map-root-user", "true"]) {
            notes.push(format!("userns: `unshare --user` failed: {e}"));
        }
    }
    let unshare = root
        && match succeeds(
            Tool::Unshare,
            &["--mount", "--pid", "--ipc", "--uts", "--fork", "true"],
        ) {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!("unshare (mount, pid namespaces): {e}"));
                false
            }
        };
    if root && !inside {
        notes.push("userns is for normal users; root has namespace".into());
    }
    if inside {
        notes.push("in a user namespace, namespace isolation is called userns".into());
    }
    let hint = if root && !inside {
        root_hint(&probe::missing_capabilities())
    } else {
        userns_hint(&kernel_settings(), seccomp_filtered())
    };
    Abilities {
        root,
        chroot,
        namespaces: unshare && !inside,
        userns: unshare && inside,
        notes,
        hint,
    }
}

/// What root lacking every isolation should do: the capabilities it lacks
/// are the container's doing, never "run as root".
fn root_hint(missing: &[String]) -> String {
    if missing.is_empty() {
        return "root here can neither chroot nor unshare; run imgbuild in an ordinary container (Docker's defaults allow chroot) or on a machine where unshare works".into();
    }
    format!(
        "root here lacks CAP_{}: the container was started with capabilities dropped (`--cap-drop`); give it Docker's default capabilities (chroot isolation needs at least `--cap-add SYS_CHROOT`, and Debian or run: layers also CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETUID, SETGID and MKNOD)",
        missing.join(", CAP_")
    )
}

/// The kernel settings that refuse unprivileged user namespaces, those that
/// exist on this kernel, with their values.
fn kernel_settings() -> Vec<(&'static str, String)> {
    [
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
        ),
        (
            "user.max_user_namespaces",
            "/proc/sys/user/max_user_namespaces",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
    ]
    .into_iter()
    .filter_map(|(name, path)| Some((name, std::fs::read_to_string(path).ok()?.trim().to_string())))
    .collect()
}

/// Whether a seccomp filter confines this process (as Docker's default
/// profile does).
fn seccomp_filtered() -> bool {
    probe::status_field("Seccomp").as_deref() == Some("2")
}

/// What a normal user lacking user namespaces should do: only the kernel
/// settings this kernel has and that refuse them are named.
fn userns_hint(settings: &[(&str, String)], seccomp: bool) -> String {
    let mut fixes = Vec::new();
    for (name, value) in settings {
        match (*name, value.as_str()) {
            ("kernel.unprivileged_userns_clone", "0") => {
                fixes.push(format!("sysctl {name}=1"));
            }
            ("user.max_user_namespaces", "0") => {
                fixes.push(format!("sysctl {name}=15000"));
            }
            ("kernel.apparmor_restrict_unprivileged_userns", "1") => fixes.push(format!(
                "sysctl {name}=0 (or an AppArmor profile that allows imgbuild user namespaces)"
            )),
            _ => {}
        }
    }
    let alternative = "or run imgbuild as root in the container (chroot isolation)";
    if !fixes.is_empty() {
        return format!(
            "this kernel refuses unprivileged user namespaces: {}; {alternative}",
            fixes.join(", ")
        );
    }
    if seccomp {
        return format!(
            "this kernel allows unprivileged user namespaces, but a seccomp filter refuses them to this process (Docker's default profile does so for a non-root user): run the container's process as root, {}",
            "where imgbuild uses chroot isolation"
        );
    }
    format!(
        "this kernel allows unprivileged user namespaces, so something else refused them; {alternative}"
    )
}

impl Abilities {
    /// The isolation to use for `request`.
    pub fn choose(&self, request: Request) -> Result<Isolation, SandboxError> {
        let possible = |i: Isolation| match i {
            Isolation::Namespace => self.namespaces,
            Isolation::Chroot => self.chroot,
            Isolation::Userns => self.userns,
        };
        match request {
            Request::Exactly(i) if possible(i) => Ok(i),
            Request::Exactly(wanted) => Err(SandboxError::NotPossible {
                wanted,
                why: self.notes.join("; "),
            }),
            Request::Auto => [Isolation::Namespace, Isolation::Userns, Isolation::Chroot]
                .into_iter()
                .find(|i| possible(*i))
                .ok_or_else(|| {
                    SandboxError::Impossible(format!("{}. {}", self.notes.join("; "), self.hint))
                }),
        }
    }
}

/// Set in the environment of an imgbuild that runs inside the user
/// namespace its parent made for it.
pub const USERNS_ENV: &str = crate::env::IMGBUILD_USERNS;

/// Whether this process is imgbuild re-run inside its user namespace.
pub fn in_userns() -> bool {
    std::env::var_os(USERNS_ENV).is_some()
}

/// The `unshare` options that make a user namespace where the user is root
/// and, with subordinate ids (/etc/subuid and newuidmap), ids 1… map to
/// them, so steps and packages can chown to other users. None when user
/// namespaces are not allowed. Probed once.
fn userns_args() -> Option<&'static [&'static str]> {
    static ARGS: std::sync::OnceLock<Option<&'static [&'static str]>> = std::sync::OnceLock::new();
    *ARGS.get_or_init(|| {
        let with_subids: &'static [&'static str] = &["--user", "--map-auto", "--map-root-user"];
        let alone: &'static [&'static str] = &["--user", "--map-root-user"];
        let unshare = host_tool(Tool::Unshare).ok()?;
        [with_subids, alone].into_iter().find(|args| {
            Command::new(unshare)
                .args(*args)
                .arg("true")
                .env("PATH", HOST_PATH)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    })
}

/// For a normal user where user namespaces are allowed: runs this same
/// command again inside a new user namespace (as rootless buildah and
/// podman do), so that unpacking, steps and snapshots all see the ids the
/// image has, and returns its exit status. None when this process should
/// go on itself: it is root, already inside, or cannot make one.
pub fn reenter_in_userns() -> Option<i32> {
    if is_root() || in_userns() {
        return None;
    }
    let args = userns_args()?;
    let exe = std::env::current_exe().ok()?;
    let status = Command::new(host_tool(Tool::Unshare).ok()?)
        .args(args)
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(USERNS_ENV, "1")
        .status()
        .ok()?;
    Some(status.code().unwrap_or(128 + 9))
}

/// One command to run in a root filesystem.
#[derive(Debug, Clone)]
pub struct Step {
    pub root: PathBuf,
    /// Run by `/bin/sh -c` inside the root.
    pub command: String,
    /// The whole environment inside (nothing leaks from the host).
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// USER[:GROUP], names or ids, as the image's config says.
    pub user: Option<String>,
    pub network: bool,
    /// Mount an overlay at `root` first (namespace and userns only): the
    /// step sees `lower` and writes to `upper`.
    pub overlay: Option<Overlay>,
    /// Host directories (of plain files) the step sees read-only at
    /// `/run/NAME`: mounted over the step's tmpfs /run, or (chroot) copied
    /// in for the step and removed after it, so never part of the tree.
    pub binds: Vec<Bind>,
}

/// A host directory shown to a step at `/run/{name}`.
#[derive(Debug, Clone)]
pub struct Bind {
    pub host: PathBuf,
    /// One plain name: `secrets`, `imgbuild`.
    pub name: String,
}

/// An overlayfs over a read-only lower tree.
#[derive(Debug, Clone)]
pub struct Overlay {
    pub lower: PathBuf,
    pub upper: PathBuf,
    /// overlayfs's own scratch directory, on upper's filesystem.
    pub work: PathBuf,
}

impl Overlay {
    /// The mount options; None when a path cannot be written in them.
    fn options(&self, isolation: Isolation) -> Option<String> {
        let mut paths = Vec::new();
        for p in [&self.lower, &self.upper, &self.work] {
            let s = p.to_str()?;
            // The option string is split at commas; colons separate lowers.
            if s.contains([',', ':', '\\']) {
                return None;
            }
            paths.push(s);
        }
        // No redirects or metacopy: the upper directory must hold whole
        // files and plain directories for the snapshot to read.
        let mut o = format!(
            "lowerdir={},upperdir={},workdir={},metacopy=off,index=off",
            paths[0], paths[1], paths[2]
        );
        // In a user namespace the kernel refuses `redirect_dir=off`, but
        // `userxattr` already rules redirects out.
        o.push_str(match isolation {
            Isolation::Userns => ",userxattr",
            _ => ",redirect_dir=off",
        });
        Some(o)
    }

    /// The extended attribute overlayfs marks opaque directories with.
    pub fn opaque_xattr(isolation: Isolation) -> &'static str {
        match isolation {
            Isolation::Userns => "user.overlay.opaque",
            _ => "trusted.overlay.opaque",
        }
    }
}

/// Whether an overlay can be mounted with `isolation`, its upper directory
/// in `scratch` (on the filesystem the snapshots will use). Chroot cannot
/// mount anything.
pub fn overlay_works(isolation: Isolation, scratch: &Path) -> bool {
    if isolation == Isolation::Chroot {
        return false;
    }
    let Ok(dir) = tempfile::Builder::new()
        .prefix("overlay-probe-")
        .tempdir_in(scratch)
    else {
        return false;
    };
    let d = dir.path();
    let ovl = Overlay {
        lower: d.join("l"),
        upper: d.join("u"),
        work: d.join("w"),
    };
    for p in [&ovl.lower, &ovl.upper, &ovl.work, &d.join("m")] {
        if std::fs::create_dir(p).is_err() {
            return false;
        }
    }
    let _ = std::fs::write(ovl.lower.join("gone"), b"");
    let Some(options) = ovl.options(isolation) else {
        return false;
    };
    let (Ok(unshare), Ok(sh)) = (host_tool(Tool::Unshare), host_tool(Tool::Sh)) else {
        return false;
    };
    let mut c = Command::new(unshare);
    let ok = c
        .args(["--mount", "--"])
        .arg(sh)
        .arg("-c")
        .arg("mount -t overlay overlay -o \"$1\" \"$2\" && touch \"$2/made\" && rm \"$2/gone\"")
        .arg("probe")
        .arg(&options)
        .arg(d.join("m"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // The whiteout proves the upper directory works as the snapshot expects.
    ok && ovl.upper.join("made").exists()
        && std::fs::symlink_metadata(ovl.upper.join("gone")).is_ok()
}

/// Where a line of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Single quotes for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell script that prepares mounts in the new mount namespace, then
/// enters the root. `$1` is the root, `$2` overlay's options or empty, `$3`
/// the number of binds, then each bind's host directory and name under /run,
/// then the command that enters the root (`env -i -- K=V… chroot …`). It
/// runs with PATH=[`HOST_PATH`] and nothing else of the step's env.
const NAMESPACE_SETUP: &str = r#"set -e
root=$1 overlay=$2 binds=$3; shift 3
[ -z "$overlay" ] || mount -t overlay overlay -o "$overlay" "$root"
# The build machine's name stays out of what steps write (exim's mailname,
# debconf): sethostname(2) works in a user namespace, where
# /proc/sys/kernel/hostname cannot be written.
hostname localhost 2>/dev/null || printf localhost > /proc/sys/kernel/hostname 2>/dev/null || {
  echo "imgbuild: cannot name the sandbox localhost: install hostname (Debian package hostname)" >&2
  exit 125
}
mount -t proc proc "$root/proc" 2>/dev/null || { mkdir -p "$root/proc" && mount -t proc proc "$root/proc"; }
mkdir -p "$root/dev" "$root/tmp" "$root/run"
mount -t tmpfs -o mode=755,nosuid tmpfs "$root/dev"
for d in null zero full random urandom tty; do
  : > "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"
done
ln -s /proc/self/fd "$root/dev/fd"
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
# What a booted system has there (systemd-tmpfiles): /var/lock points here.
mkdir -m 1777 "$root/run/lock"
while [ "$binds" -gt 0 ]; do
  mkdir -m 755 "$root/run/$2"
  mount --bind -o ro "$1" "$root/run/$2"
  shift 2; binds=$((binds - 1))
done
exec "$@"
"#;

/// Runs `step`, passing each output line to `line`; the command's exit code.
pub fn run(
    step: &Step,
    isolation: Isolation,
    line: &(dyn Fn(Stream, &str) + Sync),
) -> Result<i32, SandboxError> {
    let root = step
        .root
        .canonicalize()
        .map_err(|source| SandboxError::Io {
            path: step.root.clone(),
            source,
        })?;
    let script = match &step.workdir {
        // Created if missing, as a Dockerfile's WORKDIR is; from inside the
        // root, where the image's own symlinks cannot lead out of it.
        Some(w) => format!(
            "{{ [ -d {w} ] || mkdir -p {w}; }} && cd {w} && {}",
            step.command,
            w = quote(w)
        ),
        None => step.command.clone(),
    };
    let overlay = match &step.overlay {
        None => None,
        Some(_) if isolation == Isolation::Chroot => {
            return Err(SandboxError::NotPossible {
                wanted: isolation,
                why: "chroot cannot mount an overlay".into(),
            });
        }
        Some(o) => Some(o.options(isolation).ok_or_else(|| SandboxError::Io {
            path: o.upper.clone(),
            source: std::io::Error::other("a path with `,` or `:` cannot be an overlay's"),
        })?),
    };
    // Users are looked up where the step will see its /etc: an earlier
    // step's changes are in the overlay's upper directory.
    let etc_roots: Vec<&Path> = match &step.overlay {
        Some(o) => vec![&o.upper, &o.lower],
        None => vec![&root],
    };
    let chroot = host_tool(Tool::Chroot)?;
    let mut chroot_args: Vec<String> = Vec::new();
    if let Some(u) = &step.user {
        let (uid, gid) = resolve_user_in(&etc_roots, u)?;
        chroot_args.push(format!("--userspec={uid}:{gid}"));
    }
    chroot_args.push(root.display().to_string());
    let script = match isolation {
        // No UTS namespace here: a `hostname` first on PATH answers as the
        // namespace's would, so the build machine's name stays out of what
        // steps write (exim's mailname, from `hostname --fqdn`).
        Isolation::Chroot => format!("PATH={HOSTNAME_DIR}:$PATH; export PATH; {script}"),
        Isolation::Namespace | Isolation::Userns => script,
    };
    chroot_args.extend(["/bin/sh".to_string(), "-c".to_string(), script]);
    // The step's env: the image's, with the host's PATH where it has none.
    let mut env: Vec<(&str, &str)> = Vec::new();
    if !step.env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH", HOST_PATH));
    }
    env.extend(step.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // Host programs run by absolute path, with the host's PATH and nothing
    // else of the environment; the step's env goes in as the root is
    // entered (chroot itself finds /bin/sh without a PATH).
    let mut cmd = match isolation {
        Isolation::Chroot => {
            let mut c = Command::new(chroot);
            c.args(&chroot_args);
            c.env_clear();
            c.envs(env);
            c
        }
        Isolation::Namespace | Isolation::Userns => {
            let mut c = Command::new(host_tool(Tool::Unshare)?);
            c.args([
                "--mount",
                "--pid",
                "--ipc",
                "--uts",
                "--fork",
                "--kill-child",
            ]);
            if !step.network {
                c.arg("--net");
            }
            c.arg("--").arg(host_tool(Tool::Sh)?);
            c.args(["-c", NAMESPACE_SETUP, "setup"]);
            c.arg(&root);
            c.arg(overlay.unwrap_or_default());
            c.arg(step.binds.len().to_string());
            for b in &step.binds {
                c.arg(&b.host).arg(&b.name);
            }
            // `env -i` takes NAME=VALUE words up to the first without `=`:
            // chroot's absolute path, whose name has none.
            c.arg(host_tool(Tool::Env)?).args(["-i", "--"]);
            c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
            c.arg(chroot).args(&chroot_args);
            c.env_clear();
            c.env("PATH", HOST_PATH);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Without mounts, binds are copies in the tree for the step's time
    // (and /run/* is residue, never in a layer).
    let mut _placed = Vec::new();
    if isolation == Isolation::Chroot {
        for b in &step.binds {
            _placed.push(Placed::place(b, &root)?);
        }
        _placed.push(Placed::hostname(&root)?);
    }
    let _devices = (isolation == Isolation::Chroot).then(|| Devices::make(&root));
    let program = format!("{isolation} sandbox");
    let mut child = cmd
        .spawn()
        .map_err(|source| SandboxError::Spawn { program, source })?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    std::thread::scope(|s| {
        if let Some(o) = out {
            s.spawn(move || {
                for l in BufReader::new(o).lines().map_while(Result::ok) {
                    line(Stream::Stdout, &l);
                }
            });
        }
        if let Some(e) = err {
            s.spawn(move || {
                for l in BufReader::new(e).lines().map_while(Result::ok) {
                    line(Stream::Stderr, &l);
                }
            });
        }
    });
    let status = child.wait().map_err(|source| SandboxError::Io {
        path: root.clone(),
        source,
    })?;
    Ok(status.code().unwrap_or(128 + 9))
}

/// A bind's files copied into a chroot's /run/NAME, removed on drop.
struct Placed(PathBuf);

/// Where a chroot step finds the `hostname` that answers `localhost`.
const HOSTNAME_DIR: &str = "/run/imgbuild-hostname";

/// That `hostname`: queries get the namespace's answers, setting fails as
/// it does for a user without the right to.
const HOSTNAME_SHIM: &str = r#"#!/bin/sh
# imgbuild: steps under chroot isolation see this instead of the build
# machine's name, as under namespace isolation (hostname `localhost`).
case "$1" in
  -i|--ip-address|-I|--all-ip-addresses) echo 127.0.0.1 ;;
  -d|--domain|-y|--yp|--nis) ;;
  ''|-*) echo localhost ;;
  *) echo "hostname: you must be root to change the host name" >&2; exit 1 ;;
esac
"#;

impl Placed {
    /// An empty `/run/NAME` of the tree, removed on drop.
    fn dir(root: &Path, name: &str) -> Result<Placed, SandboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        // /run must be the tree's own directory: through a symlink, the
        // files could land outside the root.
        let run = root.join("run");
        let meta = std::fs::symlink_metadata(&run).map_err(io(&run))?;
        if !meta.is_dir() {
            return Err(SandboxError::Io {
                path: run,
                source: std::io::Error::other("not a directory, so nothing can be put there"),
            });
        }
        let dir = run.join(name);
        let _ = crate::fsutil::remove_tree(&dir);
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Placed(dir))
    }

    fn hostname(root: &Path) -> Result<Placed, SandboxError> {
        let name = HOSTNAME_DIR.trim_start_matches("/run/");
        let placed = Placed::dir(root, name)?;
        let shim = placed.0.join("hostname");
        std::fs::write(&shim, HOSTNAME_SHIM)
            .and_then(|()| {
                std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            })
            .map_err(|source| SandboxError::Io { path: shim, source })?;
        Ok(placed)
    }

    fn place(bind: &Bind, root: &Path) -> Result<Placed, SandboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        let placed = Placed::dir(root, &bind.name)?;
        let dir = placed.0.clone();
        for e in std::fs::read_dir(&bind.host).map_err(io(&bind.host))? {
            let e = e.map_err(io(&bind.host))?;
            let to = dir.join(e.file_name());
            // The step's user must be able to read it: same mode and owner.
            let meta = e.metadata().map_err(io(&e.path()))?;
            std::fs::copy(e.path(), &to).map_err(io(&to))?;
            std::os::unix::fs::chown(&to, Some(meta.uid()), Some(meta.gid())).map_err(io(&to))?;
        }
        Ok(placed)
    }
}

/// The device nodes every step expects in /dev, made where a chroot's tree
/// lacks them (a namespace mounts its own /dev instead) and removed after:
/// without them `> /dev/null` makes a file that would reach the layer.
/// Where the container forbids mknod, steps go without, as before.
struct Devices(Vec<PathBuf>);

impl Devices {
    fn make(root: &Path) -> Devices {
        use rustix::fs::{FileType, Mode, makedev, mknodat};
        let dev = root.join("dev");
        let mut made = Vec::new();
        if !std::fs::symlink_metadata(&dev).is_ok_and(|m| m.is_dir()) {
            return Devices(made);
        }
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            let p = dev.join(name);
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            let made_it = mknodat(
                rustix::fs::CWD,
                &p,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                makedev(major, minor),
            )
            .is_ok();
            if made_it {
                // The umask must not narrow who may write to them.
                let _ = std::fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                );
                made.push(p);
            }
        }
        Devices(made)
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.0);
    }
}

/// A file of the image's /etc, from the first of `roots` that has it,
/// never through a symlink (which could name a file of the host).
fn read_etc(roots: &[&Path], name: &str) -> Option<String> {
    let plain = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
    roots.iter().find_map(|root| {
        let etc = root.join("etc");
        let file = etc.join(name);
        (plain(&etc) && plain(&file))
            .then(|| std::fs::read_to_string(file).ok())
            .flatten()
    })
}

/// `USER[:GROUP]` (names or ids) to numeric ids, by the image's own
/// /etc/passwd and /etc/group: the host's `chroot` would look names up in
/// the host's.
pub fn resolve_user(root: &Path, spec: &str) -> Result<(u32, u32), SandboxError> {
    resolve_user_in(&[root], spec)
}

fn resolve_user_in(roots: &[&Path], spec: &str) -> Result<(u32, u32), SandboxError> {
    let err = |why: String| SandboxError::User {
        user: spec.to_string(),
        why,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_etc(roots, "passwd");
    let by_passwd = |name: &str| {
        passwd
            .as_deref()
            .and_then(|p| crate::passwd::lookup_user(p, name))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => {
            // A numeric user's group is its passwd entry's, else 0 (as runc).
            let primary = passwd
                .as_deref()
                .and_then(|p| crate::passwd::primary_gid(p, uid))
                .unwrap_or(0);
            (uid, primary)
        }
        Err(_) => by_passwd(user).ok_or_else(|| {
            err(format!(
                "not in the image's /etc/passwd; use numeric ids or add `{user}` in an earlier step"
            ))
        })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_etc(roots, "group")
                .as_deref()
                .and_then(|t| crate::passwd::lookup_group(t, g))
                .ok_or_else(|| err(format!("group `{g}` is not in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

/// True when `root` looks like it can run `/bin/sh`.
pub fn has_shell(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join("bin/sh")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A root filesystem of Debian's static busybox.
    fn busybox_root() -> Option<tempfile::TempDir> {
        let bb = Path::new("/bin/busybox");
        if !bb.exists() {
            return None;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::copy(bb, d.path().join("bin/busybox")).unwrap();
        for app in [
            "sh", "id", "cat", "ls", "touch", "mount", "env", "pwd", "hostname",
        ] {
            std::os::unix::fs::symlink("busybox", d.path().join("bin").join(app)).unwrap();
        }
        for dir in ["proc", "tmp", "etc", "srv"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nwww-data:x:33:\n").unwrap();
        Some(d)
    }

    fn run_collect(step: &Step, iso: Isolation) -> (i32, Vec<String>) {
        let lines = Mutex::new(Vec::new());
        let code = run(step, iso, &|_, l| lines.lock().unwrap().push(l.to_string())).unwrap();
        (code, lines.into_inner().unwrap())
    }

    #[test]
    fn users_resolve_in_the_image_not_the_host() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "app:x:1234:1235::/srv:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "web:x:33:\n").unwrap();
        assert_eq!(resolve_user(d.path(), "app").unwrap(), (1234, 1235));
        assert_eq!(resolve_user(d.path(), "app:web").unwrap(), (1234, 33));
        assert_eq!(resolve_user(d.path(), "1234").unwrap(), (1234, 1235));
        assert_eq!(resolve_user(d.path(), "77:78").unwrap(), (77, 78));
        assert_eq!(resolve_user(d.path(), "77").unwrap(), (77, 0));
        let e = resolve_user(d.path(), "root").unwrap_err().to_string();
        assert!(e.contains("not in the image's /etc/passwd"), "{e}");
        // A symlinked /etc/passwd is not followed to the host's.
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(d.path(), "root").is_err());
    }

    #[test]
    fn requests_parse_and_choices_explain() {
        assert_eq!("auto".parse::<Request>(), Ok(Request::Auto));
        assert!("docker".parse::<Request>().is_err());
        let none = Abilities {
            root: false,
            chroot: false,
            namespaces: false,
            userns: false,
            notes: vec!["unshare --user: Operation not permitted".into()],
            hint: userns_hint(&[], true),
        };
        let e = none.choose(Request::Auto).unwrap_err().to_string();
        assert!(
            e.contains("Operation not permitted") && e.contains("seccomp"),
            "{e}"
        );
        let chroot_only = Abilities {
            chroot: true,
            root: true,
            ..none
        };
        assert_eq!(
            chroot_only.choose(Request::Auto).unwrap(),
            Isolation::Chroot
        );
        assert!(
            chroot_only
                .choose(Request::Exactly(Isolation::Namespace))
                .is_err()
        );
    }

    #[test]
    fn hints_name_only_what_this_machine_has() {
        // A kernel without Debian's sysctl, under Docker's seccomp profile:
        // no sysctl is named, the seccomp filter is.
        let h = userns_hint(&[("user.max_user_namespaces", "63000".into())], true);
        assert!(h.contains("seccomp") && !h.contains("sysctl"), "{h}");
        let h = userns_hint(
            &[
                ("kernel.unprivileged_userns_clone", "0".into()),
                ("user.max_user_namespaces", "63000".into()),
            ],
            false,
        );
        assert!(
            h.contains("sysctl kernel.unprivileged_userns_clone=1")
                && !h.contains("max_user_namespaces"),
            "{h}"
        );
        let h = userns_hint(&[("kernel.unprivileged_userns_clone", "1".into())], false);
        assert!(!h.contains("sysctl"), "{h}");
        // Root is never told to run as root: it is told what it lacks.
        let h = root_hint(&["SYS_CHROOT".into(), "MKNOD".into()]);
        assert!(
            h.contains("CAP_SYS_CHROOT, CAP_MKNOD") && h.contains("--cap-add SYS_CHROOT"),
            "{h}"
        );
        assert!(!h.to_lowercase().contains("run as root"), "{h}");
        assert!(!root_hint(&[]).to_lowercase().contains("run as root"));
    }

    #[test]
    fn runs_in_every_mode_this_machine_allows() {
        let Some(root) = busybox_root() else {
            panic!("/bin/busybox is missing: apt-get install busybox-static");
        };
        let abilities = detect();
        let mut tried = 0;
        for iso in [Isolation::Namespace, Isolation::Chroot, Isolation::Userns] {
            if let Err(e) = abilities.choose(Request::Exactly(iso)) {
                // On CI, as root, root's isolations must all work.
                if std::env::var_os("CI").is_some() && is_root() && iso != Isolation::Userns {
                    panic!("{iso} must run on CI as root, but: {e}");
                }
                eprintln!("{iso} not tried: {e}");
                continue;
            }
            tried += 1;
            let step = Step {
                root: root.path().to_path_buf(),
                command: "echo \"$GREETING from $(pwd)\"; id -u; touch /srv/made-by-$MODE; exit 3"
                    .into(),
                // No sbin: the host's chroot is found all the same.
                env: vec![
                    ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                    ("GREETING".into(), "hello".into()),
                    ("MODE".into(), iso.to_string()),
                ],
                workdir: Some("/etc".into()),
                user: None,
                network: false,
                overlay: None,
                binds: Vec::new(),
            };
            let (code, lines) = run_collect(&step, iso);
            assert_eq!(code, 3, "{iso}: {lines:?}");
            assert_eq!(lines[0], "hello from /etc", "{iso}: {lines:?}");
            assert_eq!(lines[1], "0", "{iso}: {lines:?}");
            assert!(
                root.path().join(format!("srv/made-by-{iso}")).exists(),
                "{iso}"
            );
            // The host environment does not leak in.
            let (_, env) = run_collect(
                &Step {
                    command: "env".into(),
                    env: vec![],
                    workdir: None,
                    ..step.clone()
                },
                iso,
            );
            assert!(
                !env.iter()
                    .any(|l| l.starts_with("HOME=") || l.starts_with("CARGO")),
                "{iso}: {env:?}"
            );
            if iso != Isolation::Chroot {
                // The namespace's own name, not the build machine's.
                let (_, name) = run_collect(
                    &Step {
                        command: "hostname; cat /proc/sys/kernel/hostname".into(),
                        ..step.clone()
                    },
                    iso,
                );
                assert_eq!(name, ["localhost", "localhost"], "{iso}");
            }
            if iso == Isolation::Namespace {
                // A private /proc: the step is PID 1's child in its own namespace.
                let (_, ps) = run_collect(
                    &Step {
                        command: "ls /proc | grep -c '^[0-9]'".into(),
                        ..step.clone()
                    },
                    iso,
                );
                let n: usize = ps[0].trim().parse().unwrap();
                assert!(n < 10, "few processes visible: {ps:?}");
                // Nothing stays mounted in the root afterwards.
                assert!(
                    std::fs::read_dir(root.path().join("proc"))
                        .unwrap()
                        .next()
                        .is_none()
                );
            }
        }
        assert!(tried > 0, "no isolation possible here: {abilities:?}");
        // As another user, by name from the root's /etc/passwd.
        if abilities.chroot {
            let (code, lines) = run_collect(
                &Step {
                    root: root.path().to_path_buf(),
                    command: "id -u".into(),
                    env: vec![],
                    workdir: None,
                    user: Some("33:33".into()),
                    network: false,
                    overlay: None,
                    binds: Vec::new(),
                },
                Isolation::Chroot,
            );
            assert_eq!((code, lines[0].as_str()), (0, "33"));
        }
    }
}
