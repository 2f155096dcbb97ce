//! A hermetic, signed apt repository for the tests, made by
//! `tests/fixtures/apt-repo/make.sh` (real `.deb`s from `dpkg-deb`, an
//! `InRelease` clear-signed by a key made afresh in a throw-away GNUPGHOME)
//! and served over HTTP on 127.0.0.1 by `python3 -m http.server`, killed on
//! drop (and by a watchdog when the test process dies without dropping it).
//!
//! [`AptRepo::start`] takes a [`Variant`]: the good repository, or one with
//! a fault (an `InRelease` and `Release` whose signatures no longer verify,
//! or a pool `.deb` whose SHA256 no longer matches `Packages`). The good
//! repository is built once per version of the script and kept under
//! `CARGO_TARGET_TMPDIR`, so every test (and test binary) shares it; a
//! faulty one is built afresh for its server.
//!
//! The packages (all `Architecture: all`), as make.sh builds them:
//!
//! - `libfoo` 1.0-1 and 2.0-1, `libbar` 1.0-1;
//! - `app-alt`: `Depends: libfoo (>= 2) | libbar`;
//! - `mta-a`: `Provides: mail-transport-agent`; `needs-mta`:
//!   `Depends: mail-transport-agent`;
//! - `provider-v`: `Provides: virt-v (= 3)`; `wants-v`: `Depends: virt-v (>= 2)`;
//! - `tilde-dep`: `Depends: libfoo (>= 2.0~rc1)`;
//! - `epoch-pkg` 1:0.5-1; `needs-epoch`: `Depends: epoch-pkg (>> 0.9)`;
//! - `pre-base`; `pre-user`: `Pre-Depends: pre-base`;
//! - `conflicts-bar`: `Conflicts: libbar`;
//! - `adds-user`: ships `/var/lib/adds-user/`; its postinst adds group
//!   `appgroup` (gid 990) and user `appuser` (uid 990) (with
//!   groupadd/useradd, else by appending to /etc/group and /etc/passwd, once),
//!   chowns the directory to them and writes `/var/lib/adds-user/configured`;
//! - `alt-link`: ships `/usr/lib/alt-link/tool`; its postinst makes the
//!   symlink `/usr/bin/alt-tool` to it (`ln -sf`), its prerm removes it;
//! - `fails-postinst`: its postinst says so on stderr and exits 1.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::registry::{free_port, watchdog};

/// The script that builds the repository.
pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/apt-repo/make.sh"
);
/// The suite (and codename) of the repository; its one component is `main`,
/// its one architecture `amd64`.
pub const SUITE: &str = "imgbuild-test";
/// The `SOURCE_DATE_EPOCH` the repository is built with: its `Release` has
/// this `Date`, and every file in every `.deb` this mtime.
pub const EPOCH: u64 = 1_700_000_000;
/// The uid and gid `adds-user`'s postinst gives `appuser` and `appgroup`.
pub const APP_UID: u32 = 990;
pub const APP_GID: u32 = 990;

/// Which repository to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant<'a> {
    /// Everything signed and hashed as it should be.
    Good,
    /// `InRelease` and `Release` changed (their `Date`) after signing: the
    /// signatures (`InRelease`'s and `Release.gpg`) no longer verify.
    BadSignature,
    /// Every pool `.deb` of this package has a byte flipped after `Packages`
    /// was written: its size is right, its SHA256 and MD5 are not.
    CorruptDeb(&'a str),
}

impl Variant<'_> {
    fn args(&self) -> Vec<String> {
        match self {
            Variant::Good => Vec::new(),
            Variant::BadSignature => vec!["--bad-signature".into()],
            Variant::CorruptDeb(name) => vec!["--corrupt-deb".into(), name.to_string()],
        }
    }
}

/// Runs make.sh into `out` (which must be empty or absent) with these extra
/// arguments; panics with its output when it fails.
pub fn build(out: &Path, args: &[&str]) {
    let start = Instant::now();
    let output = Command::new("sh")
        .arg(SCRIPT)
        .args(["--suite", SUITE])
        .args(args)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    assert!(
        output.status.success(),
        "{SCRIPT} {args:?} {} failed ({}); it needs dpkg, gnupg, gzip and coreutils \
         (apt-get install dpkg gnupg gzip coreutils):\n{}{}",
        out.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if start.elapsed() > Duration::from_secs(10) {
        eprintln!(
            "aptrepo: building the repository took {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

/// The good repository, built once per version of make.sh (and of this
/// module's settings) under `CARGO_TARGET_TMPDIR` and shared read-only.
pub fn good_repo() -> &'static Path {
    static GOOD: OnceLock<PathBuf> = OnceLock::new();
    GOOD.get_or_init(|| {
        let script = fs::read(SCRIPT).unwrap_or_else(|e| panic!("read {SCRIPT}: {e}"));
        let mut h = Sha256::new();
        h.update(&script);
        h.update(format!("\0{SUITE}\0{EPOCH}").as_bytes());
        let key = hex::encode(&h.finalize()[..8]);
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let done = base.join(format!("apt-repo-{key}"));
        if done.join("dists").join(SUITE).join("InRelease").is_file() {
            return done;
        }
        fs::create_dir_all(base).unwrap_or_else(|e| panic!("mkdir {}: {e}", base.display()));
        let tmp = tempfile::Builder::new()
            .prefix(".apt-repo-building-")
            .tempdir_in(base)
            .expect("a temporary directory");
        build(&tmp.path().join("repo"), &[]);
        // Another test process may have finished first: then its copy stays.
        if fs::rename(tmp.path().join("repo"), &done).is_err()
            && !done.join("dists").join(SUITE).join("InRelease").is_file()
        {
            panic!("cannot move the built repository to {}", done.display());
        }
        done
    })
}

/// One request in the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path (and query) as requested.
    pub path: String,
    pub status: u16,
}

impl Request {
    /// Parses a line of http.server's log:
    /// `127.0.0.1 - - [21/Nov/2026 11:22:02] "GET /x HTTP/1.1" 200 -`.
    pub fn parse(line: &str) -> Option<Request> {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once("\" ")?;
        let mut parts = request.split(' ');
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        parts.next()?.strip_prefix("HTTP/")?;
        let status = rest.split(' ').next()?.parse().ok()?;
        Some(Request {
            method,
            path,
            status,
        })
    }
}

/// A served apt repository. `url` is the repository's root, what a sources
/// line names: `deb [signed-by=KEYRING] URL SUITE main` (see
/// [`AptRepo::sources_line`]).
pub struct AptRepo {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// The signing key, binary (`gpg --export`).
    pub keyring: PathBuf,
    /// The signing key, armored.
    pub keyring_asc: PathBuf,
    /// An unrelated key (binary): nothing verifies with it.
    pub other_keyring: PathBuf,
    /// The signing key's fingerprint (40 hex digits, upper case).
    pub fingerprint: String,
    pub suite: String,
    /// The directory served.
    pub root: PathBuf,
    port: u16,
    log: PathBuf,
    dir: tempfile::TempDir,
    server: Child,
    watchdog: Option<Child>,
}

impl AptRepo {
    /// Builds (or reuses) the repository and serves it.
    pub fn start(variant: Variant) -> AptRepo {
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-aptrepo-")
            .tempdir()
            .expect("a temporary directory");
        let root = match variant {
            Variant::Good => good_repo().to_path_buf(),
            _ => {
                let root = dir.path().join("repo");
                let args = variant.args();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                build(&root, &args);
                root
            }
        };
        AptRepo::serve(root, dir)
    }

    /// Builds a repository with make.sh's arguments of choice (e.g.
    /// `["--key-type", "ed25519", "--compression", "gzip"]`) and serves it.
    pub fn start_with(args: &[&str]) -> AptRepo {
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-aptrepo-")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path().join("repo");
        build(&root, args);
        AptRepo::serve(root, dir)
    }

    fn serve(root: PathBuf, dir: tempfile::TempDir) -> AptRepo {
        let python = std::env::var_os("IMGBUILD_TEST_PYTHON").unwrap_or_else(|| "python3".into());
        let log = dir.path().join("http.log");
        let probe = format!("/dists/{SUITE}/InRelease");
        let mut last_log = String::new();
        // A port found free may be taken before the server binds it: try
        // again with another.
        for _ in 0..5 {
            let port = free_port();
            let out = fs::File::create(&log).expect("create the server log");
            let err = out.try_clone().expect("dup the log");
            let mut server = Command::new(&python)
                .args([
                    "-u",
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(&root)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} (python3 serves the apt repository): {e}",
                        python.to_string_lossy()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = server.try_wait() {
                    last_log = fs::read_to_string(&log).unwrap_or_default();
                    if last_log.contains("Address already in use") {
                        break;
                    }
                    panic!("python3 -m http.server exited ({status}) at start:\n{last_log}");
                }
                if let Ok((200, _)) = get(port, &probe) {
                    let watchdog = watchdog(server.id());
                    let fingerprint = fs::read_to_string(root.join("fingerprint"))
                        .expect("the repository's fingerprint file")
                        .trim()
                        .to_string();
                    return AptRepo {
                        url: format!("http://127.0.0.1:{port}"),
                        keyring: root.join("keyring.gpg"),
                        keyring_asc: root.join("keyring.asc"),
                        other_keyring: root.join("other-keyring.gpg"),
                        fingerprint,
                        suite: SUITE.to_string(),
                        root,
                        port,
                        log,
                        dir,
                        server,
                        watchdog,
                    };
                }
                if Instant::now() > deadline {
                    let _ = server.kill();
                    let _ = server.wait();
                    panic!(
                        "python3 -m http.server did not serve {probe} within 20 s:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(25));
            }
        }
        panic!("python3 -m http.server found no free port:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `deb [signed-by=KEYRING] URL SUITE main`, with this repository's key.
    pub fn sources_line(&self) -> String {
        self.sources_line_with(&self.keyring)
    }

    /// A sources line that trusts `keyring` instead.
    pub fn sources_line_with(&self, keyring: &Path) -> String {
        format!(
            "deb [signed-by={}] {} {} main",
            keyring.display(),
            self.url,
            self.suite
        )
    }

    /// The suite's directory on disk (`dists/SUITE`).
    pub fn dist(&self) -> PathBuf {
        self.root.join("dists").join(&self.suite)
    }

    /// The `Packages` index, as served.
    pub fn packages(&self) -> String {
        let path = self.dist().join("main/binary-amd64/Packages");
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// The `Filename` (relative to [`AptRepo::url`]) and `SHA256` that
    /// `Packages` gives for this package and version.
    pub fn index_entry(&self, name: &str, version: &str) -> Option<(String, String)> {
        self.packages().split("\n\n").find_map(|stanza| {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(f)?.strip_prefix(": "))
                    .map(str::to_string)
            };
            (field("Package")? == name && field("Version")? == version)
                .then(|| Some((field("Filename")?, field("SHA256")?)))
                .flatten()
        })
    }

    /// The pool `.deb` of this package and version, on disk.
    pub fn deb_path(&self, name: &str, version: &str) -> PathBuf {
        let (filename, _) = self
            .index_entry(name, version)
            .unwrap_or_else(|| panic!("{name} {version} is not in Packages"));
        self.root.join(filename)
    }

    /// GET `path` from the server: status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        get(self.port, path).unwrap_or_else(|e| panic!("GET {path} from {}: {e}", self.url))
    }

    /// Every request the server has logged so far.
    pub fn requests(&self) -> Vec<Request> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(Request::parse)
            .collect()
    }

    /// How many logged requests had a path containing `part`.
    pub fn count(&self, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.contains(part))
            .count()
    }

    /// How many `.deb`s were fetched (any status).
    pub fn deb_fetches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with(".deb"))
            .count()
    }

    /// The server's log (requests and errors).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Scratch space that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for AptRepo {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(w) = &mut self.watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- the last {} lines of the apt repository's log ({}, {}) ---\n{}",
                tail.len(),
                self.url,
                self.root.display(),
                tail.join("\n")
            );
        }
    }
}

/// An HTTP/1.0 GET of `path` on 127.0.0.1:`port` (http.server closes the
/// connection after the body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: imgbuild-tests\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of the response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A project with `debian-root` from the minbase tarball and `app`
/// installing `packages` from `repo`; `more` is appended to `app` (e.g. its
/// `run:` steps).
pub fn debian_project(repo: &AptRepo, packages: &str, more: &str) -> super::Ctx {
    let cx = super::Ctx::new();
    fs::copy(super::debian_tarball(), cx.path("debian.tar")).unwrap();
    fs::copy(&repo.keyring, cx.path("test-keyring.gpg")).unwrap();
    cx.yaml(&format!(
        concat!(
            "images:\n",
            "  debian-root:\n",
            "    from: {{rootfs: debian.tar}}\n",
            "  app:\n",
            "    from: debian-root\n",
            "    debian:\n",
            "      suite: {suite}\n",
            "      mirror: \"{url}\"\n",
            "      keyring: test-keyring.gpg\n",
            "      packages: [{packages}]\n",
            "{more}",
        ),
        suite = SUITE,
        url = repo.url,
        packages = packages,
        more = more,
    ));
    cx
}
