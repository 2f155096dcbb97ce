//! A real registry for the tests: CNCF distribution 2.8 (Debian's
//! `docker-registry`) on 127.0.0.1, its config, storage and log in a
//! temporary directory, in one of three modes:
//!
//! - [`Registry::anonymous`]: no auth;
//! - [`Registry::htpasswd`]: Basic auth against a bcrypt htpasswd file;
//! - [`Registry::token`]: `auth: token`, with a token server ([`TokenServer`])
//!   the test runs itself on another loopback port: it checks Basic
//!   credentials, grants what the `scope`s ask (unless a policy says no) and
//!   signs RS256 JWTs with a key and self-signed certificate made at start
//!   with the `openssl` CLI (the certificate is the registry's
//!   `rootcertbundle`; the token names it in an `x5c` header, or, with
//!   [`TokenOptions::with_kid`], by its libtrust key id).
//!
//! The registry is killed on drop. Its access log (Apache combined format,
//! one line per request) is parsed to count uploads and mounts.
//!
//! Also here: a minimal HTTP/1.1 client ([`http`]) and the message parsing
//! that the fault proxy (`proxy.rs`) shares.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The `service` the token registry names and its tokens are for.
pub const TOKEN_SERVICE: &str = "imgbuild-test-registry";
/// The `iss` of the test tokens.
pub const TOKEN_ISSUER: &str = "imgbuild-test-issuer";
/// distribution adds this much to `exp` (and takes it from `nbf`) when it
/// checks a token (registry/auth/token/token.go, `Leeway`).
pub const REGISTRY_LEEWAY_SECS: u64 = 60;

// ---------------------------------------------------------------------------
// HTTP/1.1 messages

/// The head of an HTTP/1.1 message: its start line, its headers, and the
/// bytes exactly as read.
#[derive(Debug, Clone)]
pub struct Head {
    /// The request line or status line, without its line end.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
}

impl Head {
    /// The first header of that name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (of any of its lines) holds `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Method and target of a request line.
    pub fn request(&self) -> (&str, &str) {
        let mut parts = self.start.split(' ');
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        (method, target)
    }

    /// The status of a status line (0 when it has none).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

fn eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("connection closed {what}"),
    )
}

/// Reads a message head; `None` when the peer closed before sending a byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(eof("inside a message head"));
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if text.is_empty() && lines.is_empty() {
            // An empty line before a request line is to be ignored.
            continue;
        }
        raw.extend_from_slice(&line);
        if raw.len() > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head over 1 MiB",
            ));
        }
        if text.is_empty() {
            break;
        }
        lines.push(text);
    }
    let start = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        start,
        headers,
        raw,
    }))
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The framing of a request's body.
pub fn request_framing(h: &Head) -> Framing {
    if h.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else {
        match h.header("content-length").and_then(|v| v.parse().ok()) {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    }
}

/// The framing of the body of a response to `method`.
pub fn response_framing(method: &str, h: &Head) -> Framing {
    let s = h.status();
    if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&s) || s == 204 || s == 304 {
        Framing::Empty
    } else if h.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else {
        match h.header("content-length").and_then(|v| v.parse().ok()) {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    }
}

/// Moves a body from `r` to `w`: as it is on the wire (`raw`, chunk framing
/// and trailers included) or decoded. Returns the bytes written.
pub fn transfer_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    raw: bool,
) -> io::Result<u64> {
    match framing {
        Framing::Empty => Ok(0),
        Framing::Length(n) => {
            let copied = io::copy(&mut r.by_ref().take(n), w)?;
            if copied < n {
                return Err(eof("inside a body"));
            }
            Ok(copied)
        }
        Framing::UntilClose => io::copy(r, w),
        Framing::Chunked => {
            let mut total = 0u64;
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Err(eof("inside a chunked body"));
                }
                let text = String::from_utf8_lossy(&line);
                let size_text = text.trim().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_text, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {size_text:?}"),
                    )
                })?;
                if raw {
                    w.write_all(&line)?;
                    total += line.len() as u64;
                }
                if size == 0 {
                    loop {
                        let mut t = Vec::new();
                        if r.read_until(b'\n', &mut t)? == 0 {
                            return Err(eof("inside chunked trailers"));
                        }
                        if raw {
                            w.write_all(&t)?;
                            total += t.len() as u64;
                        }
                        if t == b"\r\n" || t == b"\n" {
                            return Ok(total);
                        }
                    }
                }
                let copied = io::copy(&mut r.by_ref().take(size), w)?;
                if copied < size {
                    return Err(eof("inside a chunk"));
                }
                total += copied;
                let mut crlf = Vec::new();
                r.read_until(b'\n', &mut crlf)?;
                if raw {
                    w.write_all(&crlf)?;
                    total += crlf.len() as u64;
                }
            }
        }
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// One HTTP/1.1 request to `host` ("127.0.0.1:PORT") on a new connection;
/// `target` is a path with its query, or an absolute `http://` URL (whose
/// host then wins).
pub fn http(
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let (host, target) = match target.strip_prefix("http://") {
        Some(rest) => match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        },
        None => (host, target),
    };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let head = loop {
        let h = read_head(&mut r)?.ok_or_else(|| eof("before a response"))?;
        if !(100..200).contains(&h.status()) {
            break h;
        }
    };
    let mut body = Vec::new();
    transfer_body(&mut r, &mut body, response_framing(method, &head), false)?;
    Ok(Response {
        status: head.status(),
        headers: head.headers,
        body,
    })
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `user:password` as an `Authorization: Basic` value.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Writes `DIR/config.json` as Docker's: `auths` with `auth` (base64 of
/// `user:password`) for each host.
pub fn write_docker_config(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    let mut auths = serde_json::Map::new();
    for (host, user, password) in entries {
        auths.insert(
            host.to_string(),
            json!({ "auth": STANDARD.encode(format!("{user}:{password}")) }),
        );
    }
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let path = dir.join("config.json");
    fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({ "auths": auths })).unwrap(),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A program on PATH (or at an absolute path).
fn find_program(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// The registry

/// One request in the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// Path and query, as logged.
    pub target: String,
    pub status: u16,
}

impl Access {
    /// Parses a line of the access log (Apache combined format:
    /// `127.0.0.1 - - [21/Nov/2026:10:04:48 +0000] "PUT /v2/… HTTP/1.1" 201 0 "" "ua"`).
    /// Other lines (logrus' `time=… level=… msg=…`) give `None`.
    pub fn parse(line: &str) -> Option<Access> {
        let rest = &line[line.find("] \"")? + 3..];
        let end = rest.find("\" ")?;
        let mut request = rest[..end].split(' ');
        let method = request.next()?.to_string();
        let target = request.next()?.to_string();
        let status = rest[end + 2..].split(' ').next()?.parse().ok()?;
        Some(Access {
            method,
            target,
            status,
        })
    }

    /// The repository a `/v2/NAME/…` target names.
    pub fn repository(&self) -> Option<&str> {
        repository_of(&self.target)
    }
}

/// The repository of a `/v2/NAME/(manifests|blobs|tags)/…` path.
pub fn repository_of(target: &str) -> Option<&str> {
    let rest = target.strip_prefix("/v2/")?;
    let path = rest.split('?').next().unwrap_or(rest);
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| path.find(m))
        .min()
        .map(|i| &rest[..i])
}

enum Mode {
    Anonymous,
    Htpasswd,
    Token(TokenServer),
}

/// A running `docker-registry`, killed on drop (and by a watchdog when the
/// test process dies without dropping it).
pub struct Registry {
    child: Child,
    watchdog: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
    creds: Option<(String, String)>,
    mode: Mode,
}

impl Registry {
    /// No auth.
    pub fn anonymous() -> Registry {
        Registry::start(String::new(), None, Mode::Anonymous, |_| {})
    }

    /// Basic auth: one user, its password hashed with bcrypt in an htpasswd
    /// file.
    pub fn htpasswd(user: &str, password: &str) -> Registry {
        Registry::htpasswd_users(&[(user, password)])
    }

    /// Basic auth for several users; [`Registry::credentials`] gives the first.
    pub fn htpasswd_users(users: &[(&str, &str)]) -> Registry {
        assert!(!users.is_empty(), "htpasswd needs a user");
        let mut file = String::new();
        for (u, p) in users {
            // Cost 4, the least bcrypt allows: the registry checks the
            // password on every request.
            let hash = bcrypt::hash(p, 4).expect("bcrypt");
            file.push_str(&format!("{u}:{hash}\n"));
        }
        let auth = "auth:\n  htpasswd:\n    realm: imgbuild-test\n    path: {dir}/htpasswd\n";
        Registry::start(
            auth.to_string(),
            Some((users[0].0.to_string(), users[0].1.to_string())),
            Mode::Htpasswd,
            |dir| fs::write(dir.join("htpasswd"), &file).expect("write htpasswd"),
        )
    }

    /// `auth: token`, with a token server of these options.
    pub fn token(options: TokenOptions) -> Registry {
        let server = TokenServer::start(options);
        let creds = server.state.users.first().cloned();
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            server.url(),
            server.cert.display()
        );
        Registry::start(auth, creds, Mode::Token(server), |_| {})
    }

    fn start(
        auth: String,
        creds: Option<(String, String)>,
        mode: Mode,
        prepare: impl Fn(&Path),
    ) -> Registry {
        let bin = std::env::var_os("IMGBUILD_TEST_REGISTRY")
            .map(PathBuf::from)
            .or_else(|| find_program("docker-registry"))
            .unwrap_or_else(|| {
                panic!(
                    "`docker-registry` (CNCF distribution) is not installed, and this test needs it: \
                     apt-get install docker-registry (ci/setup installs it for CI)"
                )
            });
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-registry-")
            .tempdir()
            .expect("a temporary directory");
        prepare(dir.path());
        let auth = auth.replace("{dir}", &dir.path().display().to_string());
        let log = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        let mut last_log = String::new();
        // A port found free may be taken before the registry binds it: try
        // again with another.
        for _ in 0..5 {
            let port = free_port();
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
                     maintenance:\n    uploadpurging:\n      enabled: false\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: imgbuild-test-secret-{port}\n\
                     {auth}",
                    storage = dir.path().join("storage").display(),
                ),
            )
            .expect("write the registry config");
            let out = fs::File::create(&log).expect("create the registry log");
            let err = out.try_clone().expect("dup the log");
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_log = fs::read_to_string(&log).unwrap_or_default();
                    if last_log.contains("address already in use") {
                        break;
                    }
                    panic!("docker-registry exited ({status}) at start:\n{last_log}");
                }
                if let Ok(r) = http(&format!("127.0.0.1:{port}"), "GET", "/v2/", &[], &[])
                    && (r.status == 200 || r.status == 401)
                {
                    let watchdog = watchdog(child.id());
                    return Registry {
                        child,
                        watchdog,
                        port,
                        dir,
                        log,
                        creds,
                        mode,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not answer GET /v2/ within 20 s:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("docker-registry found no free port:\n{last_log}");
    }

    /// "127.0.0.1:PORT".
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's stdout and stderr: its access log and its own log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The filesystem storage (`rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// `(user, password)` of the first user; `None` when anonymous.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.creds.clone()
    }

    /// "user:password", as skopeo's `--creds` wants it.
    pub fn creds_arg(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    pub fn password(&self) -> Option<&str> {
        self.creds.as_ref().map(|(_, p)| p.as_str())
    }

    /// The token server, in token mode.
    pub fn token_server(&self) -> Option<&TokenServer> {
        match &self.mode {
            Mode::Token(t) => Some(t),
            _ => None,
        }
    }

    /// Writes `DIR/config.json` with this registry's credentials for `host`
    /// (its own, or a proxy's in front of it).
    pub fn write_docker_config(&self, dir: &Path, host: &str) -> PathBuf {
        let (u, p) = self.creds.clone().expect("a registry with credentials");
        write_docker_config(dir, &[(host, &u, &p)])
    }

    /// The log as it is now, once it has stopped growing (the registry
    /// writes an access line just after the response).
    pub fn log_text(&self) -> String {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let len = fs::metadata(&self.log).map(|m| m.len()).ok();
            if len == last || Instant::now() > deadline {
                break;
            }
            last = len;
            thread::sleep(Duration::from_millis(100));
        }
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every request of the access log, in order.
    pub fn access_log(&self) -> Vec<Access> {
        self.log_text().lines().filter_map(Access::parse).collect()
    }

    /// Requests of `method` ("*" for any) whose target contains `part`,
    /// answered `status` (any when `None`).
    pub fn count(&self, method: &str, part: &str, status: Option<u16>) -> usize {
        self.access_log()
            .iter()
            .filter(|a| method == "*" || a.method == method)
            .filter(|a| a.target.contains(part))
            .filter(|a| status.is_none_or(|s| a.status == s))
            .count()
    }

    /// Completed blob uploads: `PUT /v2/…/blobs/uploads/…?digest=…` that
    /// the registry answered 201. (distribution 2.8 has no one-request
    /// upload: a `POST ?digest=` gets 202 and the client goes on.)
    pub fn uploads(&self) -> usize {
        self.uploads_in(None)
    }

    /// Completed uploads into one repository.
    pub fn uploads_to(&self, repo: &str) -> usize {
        self.uploads_in(Some(repo))
    }

    fn uploads_in(&self, repo: Option<&str>) -> usize {
        self.access_log()
            .iter()
            .filter(|a| a.method == "PUT" && a.status == 201)
            .filter(|a| a.target.contains("/blobs/uploads/"))
            .filter(|a| repo.is_none_or(|r| a.repository() == Some(r)))
            .count()
    }

    /// Cross-repository mounts that worked: `POST …/blobs/uploads/?mount=…&from=…` → 201.
    pub fn mounts(&self) -> usize {
        self.access_log()
            .iter()
            .filter(|a| a.method == "POST" && a.status == 201)
            .filter(|a| a.target.contains("/blobs/uploads/") && a.target.contains("mount="))
            .count()
    }

    /// Manifests stored: `PUT …/manifests/…` → 201.
    pub fn manifest_puts(&self) -> usize {
        self.count("PUT", "/manifests/", Some(201))
    }

    /// The hex digests of the blobs in storage.
    pub fn stored_blobs(&self) -> BTreeSet<String> {
        let root = self.storage().join("docker/registry/v2/blobs/sha256");
        let mut out = BTreeSet::new();
        for prefix in fs::read_dir(&root).into_iter().flatten().flatten() {
            for blob in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                if blob.path().join("data").is_file() {
                    out.insert(blob.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// The size of a stored blob (`sha256:…` or hex).
    pub fn stored_blob_size(&self, digest: &str) -> Option<u64> {
        let hex = digest.trim_start_matches("sha256:");
        let p = self
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2)?)
            .join(hex)
            .join("data");
        fs::metadata(p).ok().map(|m| m.len())
    }

    /// Where the bytes of a stored blob (`sha256:…` or hex) are, or would
    /// be: a test may corrupt them there, as a failing disk would.
    pub fn stored_blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }

    /// The `Authorization` value for a request to `target`: Basic, or a
    /// bearer token for the repository it names (pull, push and delete),
    /// or none.
    pub fn authorization(&self, target: &str) -> Option<String> {
        let (user, password) = self.creds.as_ref()?;
        match &self.mode {
            Mode::Anonymous => None,
            Mode::Htpasswd => Some(basic_auth(user, password)),
            Mode::Token(server) => {
                let scope = match repository_of(target) {
                    Some(repo) => format!("repository:{repo}:pull,push,delete"),
                    None if target.starts_with("/v2/_catalog") => "registry:catalog:*".into(),
                    None => String::new(),
                };
                let scopes: Vec<&str> = if scope.is_empty() {
                    vec![]
                } else {
                    vec![scope.as_str()]
                };
                let token = server.fetch(user, password, &scopes).expect("a token");
                Some(format!("Bearer {token}"))
            }
        }
    }

    /// A request to the registry with this harness' credentials.
    pub fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
        let auth = self.authorization(target);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("Authorization", a.as_str()));
        }
        http(&self.host(), method, target, &all, &[])
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    /// `GET` with this harness' credentials.
    pub fn get(&self, target: &str) -> Response {
        self.request(
            "GET",
            target,
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )],
        )
    }

    /// The tags of a repository (empty when it does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list"));
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "tags of {repo}: {}", r.text());
        let mut tags: Vec<String> = r.json()["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// The digest a tag points at (`Docker-Content-Digest` of a HEAD).
    pub fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let r = self.request(
            "HEAD",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json",
            )],
        );
        (r.status == 200)
            .then(|| r.header("Docker-Content-Digest").map(String::from))
            .flatten()
    }
}

/// A shell that kills `pid` once this process is gone: a test killed
/// outright (a timeout, ^C) runs no destructor.
pub fn watchdog(pid: u32) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null",
            me = std::process::id()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(w) = &mut self.watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
        if thread::panicking() {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- the last {} lines of the registry log ({}) ---\n{}",
                tail.len(),
                self.host(),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The token server

/// Which actions a user may have: `(user, repository, action) -> bool`.
pub type Policy = Arc<dyn Fn(&str, &str, &str) -> bool + Send + Sync>;

/// How the token server behaves.
#[derive(Clone)]
pub struct TokenOptions {
    pub users: Vec<(String, String)>,
    /// How long a token is good for: `expires_in`, and what the registry
    /// enforces (see [`TokenServer`]).
    pub lifetime: Duration,
    /// Name the signing key by its libtrust key id (`kid`) rather than
    /// sending the certificate (`x5c`).
    pub kid: bool,
    pub policy: Option<Policy>,
}

impl TokenOptions {
    /// One user; tokens good for 5 minutes; every action allowed.
    pub fn new(user: &str, password: &str) -> TokenOptions {
        TokenOptions {
            users: vec![(user.to_string(), password.to_string())],
            lifetime: Duration::from_secs(300),
            kid: false,
            policy: None,
        }
    }

    /// Another user.
    pub fn user(mut self, user: &str, password: &str) -> TokenOptions {
        self.users.push((user.to_string(), password.to_string()));
        self
    }

    /// Whole seconds, at least 1.
    pub fn lifetime(mut self, lifetime: Duration) -> TokenOptions {
        assert!(
            lifetime >= Duration::from_secs(1),
            "a token lives 1 s at least"
        );
        self.lifetime = lifetime;
        self
    }

    pub fn with_kid(mut self) -> TokenOptions {
        self.kid = true;
        self
    }

    /// Grants only the actions `allow(user, repository, action)` accepts.
    pub fn allow(
        mut self,
        allow: impl Fn(&str, &str, &str) -> bool + Send + Sync + 'static,
    ) -> TokenOptions {
        self.policy = Some(Arc::new(allow));
        self
    }
}

/// A token the server issued.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: String,
    /// The `scope`s asked for.
    pub scopes: Vec<String>,
    /// The `access` claim given.
    pub access: Value,
    /// When it was issued.
    pub at: std::time::Instant,
}

struct TokenState {
    users: Vec<(String, String)>,
    lifetime_secs: u64,
    policy: Option<Policy>,
    /// `x5c`, or `kid`, of the JWT header.
    header: Value,
    key: PathBuf,
    issued: AtomicUsize,
    refused: AtomicUsize,
    grants: Mutex<Vec<Grant>>,
}

/// A token endpoint on 127.0.0.1 (`GET /token?service=…&scope=…` with
/// Basic credentials, or the OAuth2 `POST /token` password grant), served
/// by a thread until dropped.
///
/// distribution accepts a token until `exp` + 60 s (its leeway), so the
/// server writes `exp` = issue time + lifetime − 60 s: the registry refuses
/// the token once `lifetime` has passed, as `expires_in` says (times are
/// whole seconds: a token may live up to 1 s longer, never shorter).
pub struct TokenServer {
    port: u16,
    state: Arc<TokenState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The self-signed certificate: the registry's `rootcertbundle`.
    pub cert: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let program = find_program("openssl").unwrap_or_else(|| {
        panic!("`openssl` is not installed, and the token server needs it: apt-get install openssl")
    });
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write to openssl");
    }
    let out = child.wait_with_output().expect("openssl output");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(b64.trim()).expect("PEM base64")
}

/// libtrust's key id: the SHA-256 of the DER public key (PKIX), its first
/// 240 bits in base32, in groups of four joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(spki_der);
    let bits = &hash[..30];
    let mut out = String::new();
    let mut acc = 0u32;
    let mut n = 0;
    for b in bits {
        acc = (acc << 8) | u32::from(*b);
        n += 8;
        while n >= 5 {
            out.push(ALPHABET[((acc >> (n - 5)) & 31) as usize] as char);
            n -= 5;
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time after 1970")
        .as_secs()
}

/// Decodes `application/x-www-form-urlencoded` (a query or a form body).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl TokenServer {
    pub fn start(options: TokenOptions) -> TokenServer {
        assert!(!options.users.is_empty(), "the token server needs a user");
        let dir = tempfile::Builder::new()
            .prefix("imgbuild-token-")
            .tempdir()
            .expect("a temporary directory");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let (key_s, cert_s) = (key.display().to_string(), cert.display().to_string());
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key_s,
                "-out",
                &cert_s,
                "-days",
                "2",
                "-subj",
                "/CN=imgbuild-test-token-issuer",
            ],
            None,
        );
        let cert_pem = fs::read_to_string(&cert).expect("read the certificate");
        let header = if options.kid {
            let pubkey = openssl(&["x509", "-in", &cert_s, "-pubkey", "-noout"], None);
            let kid = libtrust_key_id(&pem_der(&String::from_utf8_lossy(&pubkey)));
            json!({ "typ": "JWT", "alg": "RS256", "kid": kid })
        } else {
            json!({ "typ": "JWT", "alg": "RS256", "x5c": [STANDARD.encode(pem_der(&cert_pem))] })
        };
        let state = Arc::new(TokenState {
            users: options.users,
            lifetime_secs: options.lifetime.as_secs().max(1),
            policy: options.policy,
            header,
            key,
            issued: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            grants: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let port = listener.local_addr().expect("its address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    thread::spawn(move || {
                        let _ = serve_token(conn, &state);
                    });
                }
            })
        };
        TokenServer {
            port,
            state,
            stop,
            thread: Some(thread),
            cert,
            _dir: dir,
        }
    }

    /// The realm: "http://127.0.0.1:PORT/token".
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Requests refused (no or wrong credentials).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every token issued, in order.
    pub fn grants(&self) -> Vec<Grant> {
        self.state.grants.lock().unwrap().clone()
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.state.lifetime_secs)
    }

    /// Asks for a token as a client would (GET, Basic credentials); the
    /// whole response.
    pub fn request(&self, user: &str, password: &str, scopes: &[&str]) -> Response {
        let mut target = format!("/token?service={}", percent_encode(TOKEN_SERVICE));
        for s in scopes {
            target.push_str(&format!("&scope={}", percent_encode(s)));
        }
        http(
            &self.host(),
            "GET",
            &target,
            &[("Authorization", &basic_auth(user, password))],
            &[],
        )
        .expect("the token server answers")
    }

    /// A token, or the refusal's status.
    pub fn fetch(&self, user: &str, password: &str, scopes: &[&str]) -> Result<String, u16> {
        let r = self.request(user, password, scopes);
        if r.status != 200 {
            return Err(r.status);
        }
        Ok(r.json()["token"].as_str().expect("a token").to_string())
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(conn: &mut TcpStream, status: u16, reason: &str, extra: &[(&str, &str)], body: &Value) {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
}

fn serve_token(mut conn: TcpStream, state: &TokenState) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let Some(head) = read_head(&mut r)? else {
        return Ok(());
    };
    let (method, target) = head.request();
    let (method, target) = (method.to_string(), target.to_string());
    let mut body = Vec::new();
    transfer_body(&mut r, &mut body, request_framing(&head), false)?;
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    if path != "/token" {
        respond(
            &mut conn,
            404,
            "Not Found",
            &[],
            &json!({"error": "not found"}),
        );
        return Ok(());
    }
    let mut params = parse_form(query);
    let form = method == "POST";
    if form {
        params.extend(parse_form(&String::from_utf8_lossy(&body)));
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let creds = if form && param("grant_type").as_deref() == Some("password") {
        param("username").zip(param("password"))
    } else {
        head.header("authorization")
            .and_then(|a| {
                a.strip_prefix("Basic ")
                    .or_else(|| a.strip_prefix("basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
    };
    let user = match creds {
        Some((u, p)) if state.users.iter().any(|(uu, pp)| *uu == u && *pp == p) => u,
        _ => {
            state.refused.fetch_add(1, Ordering::SeqCst);
            respond(
                &mut conn,
                401,
                "Unauthorized",
                &[("WWW-Authenticate", "Basic realm=\"imgbuild-test-token\"")],
                &json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
            );
            return Ok(());
        }
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(String::from).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let mut access = Vec::new();
    for scope in &scopes {
        let Some((kind, rest)) = scope.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .filter(|&a| {
                state
                    .policy
                    .as_ref()
                    .is_none_or(|p| p(user.as_str(), name, a))
            })
            .collect();
        if !allowed.is_empty() {
            access.push(json!({ "type": kind, "name": name, "actions": allowed }));
        }
    }
    let now = now_secs();
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": user,
        "aud": param("service").unwrap_or_else(|| TOKEN_SERVICE.to_string()),
        // `now` is rounded down: one second more, so the token lives at
        // least `expires_in` (up to 1 s longer), and a client that renews
        // on time never meets a refusal.
        "exp": (now + 1 + state.lifetime_secs) as i64 - REGISTRY_LEEWAY_SECS as i64,
        "nbf": now,
        "iat": now,
        "jti": format!("imgbuild-test-{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(state.header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = state.key.display().to_string();
    let signature = openssl(
        &["dgst", "-sha256", "-sign", &key],
        Some(signing_input.as_bytes()),
    );
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    state.grants.lock().unwrap().push(Grant {
        user,
        scopes,
        access: Value::Array(access),
        at: std::time::Instant::now(),
    });
    respond(
        &mut conn,
        200,
        "OK",
        &[],
        &json!({
            "token": token,
            "access_token": token,
            "expires_in": state.lifetime_secs,
            "issued_at": imgbuild::oci::image::rfc3339(now as i64),
        }),
    );
    Ok(())
}
