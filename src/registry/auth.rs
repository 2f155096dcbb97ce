//! Credentials and the `WWW-Authenticate` challenge.
//!
//! Where credentials come from, first match wins:
//! 1. GitLab CI: `CI_REGISTRY` names the host; `CI_REGISTRY_USER` with
//!    `CI_REGISTRY_PASSWORD`, else `gitlab-ci-token` with `CI_JOB_TOKEN`.
//! 2. `DOCKER_AUTH_CONFIG`, as GitLab's runner reads it: a `config.json`'s
//!    JSON in the variable, or (a CI/CD variable of type File) its path.
//! 3. `REGISTRY_AUTH_FILE`, then podman's `$XDG_RUNTIME_DIR/containers/auth.json`.
//! 4. Docker's `config.json` (`$DOCKER_CONFIG`, else `~/.docker`): a
//!    `credHelpers` entry for the host, else `auths`, else `credsStore`,
//!    through the `docker-credential-NAME get` protocol.
//!
//! A `Secret` never prints: `Debug` and `Display` show `***`.
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::env;
use serde::Deserialize;

/// A password or token. Deliberately not `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token from `docker login` to some registries.
    IdentityToken(Secret),
}

/// Where a credential came from, for messages (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    #[error("credential helper docker-credential-{helper} failed for {host}: {reason}")]
    Helper {
        helper: String,
        host: String,
        reason: String,
    },
}

/// The environment and files credentials are read from; a value so tests
/// need not touch the process environment.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub env: BTreeMap<String, String>,
    pub home: Option<PathBuf>,
}

impl Sources {
    pub fn from_process() -> Sources {
        Sources {
            env: std::env::vars().collect(),
            home: std::env::var_os(env::HOME).map(PathBuf::from),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.env
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The auth files to read, in order.
    pub fn auth_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(f) = self.var(env::REGISTRY_AUTH_FILE) {
            files.push(PathBuf::from(f));
        }
        if let Some(r) = self.var(env::XDG_RUNTIME_DIR) {
            files.push(Path::new(r).join("containers/auth.json"));
        }
        files.push(self.docker_config());
        files
    }

    /// Docker's config.json, where `imgbuild login` writes.
    pub fn docker_config(&self) -> PathBuf {
        match self.var(env::DOCKER_CONFIG) {
            Some(d) => Path::new(d).join("config.json"),
            None => self
                .home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker/config.json"),
        }
    }

    /// The credential for `host`, if any source has one.
    pub fn lookup(&self, host: &str) -> Result<Option<Found>, AuthError> {
        if let Some(ci) = self.var(env::CI_REGISTRY)
            && same_host(ci, host)
        {
            if let (Some(u), Some(p)) = (
                self.var(env::CI_REGISTRY_USER),
                self.var(env::CI_REGISTRY_PASSWORD),
            ) {
                return Ok(Some(Found {
                    credential: Credential::Basic {
                        username: u.to_string(),
                        password: Secret::new(p),
                    },
                    source: "CI_REGISTRY_USER/CI_REGISTRY_PASSWORD".into(),
                }));
            }
            if let Some(t) = self.var(env::CI_JOB_TOKEN) {
                return Ok(Some(Found {
                    credential: Credential::Basic {
                        username: "gitlab-ci-token".into(),
                        password: Secret::new(t),
                    },
                    source: "CI_JOB_TOKEN".into(),
                }));
            }
        }
        if let Some(value) = self.var(env::DOCKER_AUTH_CONFIG) {
            // GitLab passes a variable's JSON as it is; a File variable is
            // a path. The value itself is never put in an error.
            let (text, name) = if value.trim_start().starts_with('{') {
                (value.to_string(), PathBuf::from(env::DOCKER_AUTH_CONFIG))
            } else {
                let path = PathBuf::from(value);
                let text = std::fs::read_to_string(&path).map_err(|e| AuthError::BadFile {
                    path: PathBuf::from(format!("{} ({})", path.display(), env::DOCKER_AUTH_CONFIG)),
                    reason: format!(
                        "{e}: DOCKER_AUTH_CONFIG holds neither a docker config's JSON nor the path of one"
                    ),
                })?;
                (text, path)
            };
            if let Some(found) =
                parse_auth_file(&text, &name)?.lookup(host, &name, self.var(env::PATH))?
            {
                return Ok(Some(found));
            }
        }
        for file in self.auth_files() {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if let Some(found) =
                parse_auth_file(&text, &file)?.lookup(host, &file, self.var(env::PATH))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// A docker `config.json` (or containers' `auth.json`); errors name `file`
/// and serde's position, never the text.
fn parse_auth_file(text: &str, file: &Path) -> Result<AuthFile, AuthError> {
    serde_json::from_str(text).map_err(|e| AuthError::BadFile {
        path: file.to_path_buf(),
        reason: format!(
            "not a docker config.json ({} at line {}, column {})",
            match e.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "a JSON syntax error",
                serde_json::error::Category::Data => "an unexpected value",
                serde_json::error::Category::Eof => "it ends early",
            },
            e.line(),
            e.column()
        ),
    })
}

/// `registry.example.com`, `https://registry.example.com/v1/` and Docker
/// Hub's many names are the same registry.
pub fn same_host(key: &str, host: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let s = s.split('/').next().unwrap_or(s);
        match s {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io",
            other => other,
        }
    }
    norm(key) == norm(host)
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl AuthFile {
    fn lookup(
        &self,
        host: &str,
        file: &Path,
        path: Option<&str>,
    ) -> Result<Option<Found>, AuthError> {
        if let Some((_, helper)) = self.cred_helpers.iter().find(|(k, _)| same_host(k, host)) {
            return helper_get(helper, host, path);
        }
        if let Some((_, entry)) = self.auths.iter().find(|(k, _)| same_host(k, host)) {
            let source = file.display().to_string();
            if let Some(t) = &entry.identity_token
                && !t.is_empty()
            {
                return Ok(Some(Found {
                    credential: Credential::IdentityToken(Secret::new(t.clone())),
                    source,
                }));
            }
            if let Some(auth) = &entry.auth
                && !auth.is_empty()
            {
                let decoded = base64_decode(auth)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| AuthError::BadFile {
                        path: file.to_path_buf(),
                        reason: format!("the `auth` of {host} is not base64 of user:password"),
                    })?;
                let (u, p) = decoded.split_once(':').ok_or_else(|| AuthError::BadFile {
                    path: file.to_path_buf(),
                    reason: format!("the `auth` of {host} has no `:` between user and password"),
                })?;
                return Ok(Some(Found {
                    credential: Credential::Basic {
                        username: u.to_string(),
                        password: Secret::new(p),
                    },
                    source,
                }));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Found {
                    credential: Credential::Basic {
                        username: u.clone(),
                        password: Secret::new(p.clone()),
                    },
                    source,
                }));
            }
        }
        match &self.creds_store {
            Some(store) if !store.is_empty() => helper_get(store, host, path),
            _ => Ok(None),
        }
    }
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `docker-credential-NAME`'s absolute path: found on the caller's `PATH`
/// as Docker finds it (helpers live wherever the user installed them), and
/// run by that path, so the name alone never decides what runs.
fn helper_path(program: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // A helper name is a name, not a path to some other program.
    if program.contains('/') {
        return None;
    }
    std::env::split_paths(path?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `docker-credential-NAME get`, the host on stdin, JSON on stdout.
fn helper_get(helper: &str, host: &str, path: Option<&str>) -> Result<Option<Found>, AuthError> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| AuthError::Helper {
        helper: helper.to_string(),
        host: host.to_string(),
        reason,
    };
    let exe = helper_path(&program, path).ok_or_else(|| {
        fail(format!(
            "{program} is not an executable on PATH; install it, or remove `{helper}` from credHelpers/credsStore"
        ))
    })?;
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The protocol's way of saying "none stored".
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("exit status {}", out.status)));
    }
    let reply: HelperReply =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("unreadable reply: {e}")))?;
    let credential = if reply.username == "<token>" {
        Credential::IdentityToken(Secret::new(reply.secret))
    } else {
        Credential::Basic {
            username: reply.username,
            password: Secret::new(reply.secret),
        }
    };
    Ok(Some(Found {
        credential,
        source: program,
    }))
}

/// Standard base64 with padding, as config.json's `auth` uses.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in s.trim().bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

pub fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer`, lowercase.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        let mut rest = rest.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let key = key.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, tail) = if let Some(q) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[end? + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            params.insert(key, value);
            rest = tail.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:p@ss:word"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Secret::new("x").to_string(), "***");
    }

    #[test]
    fn challenges_parse() {
        let c = Challenge::parse(r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = Challenge::parse(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
    }

    #[test]
    fn docker_auth_config_as_json_or_as_a_file_variable() {
        let d = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"auths": {{"prod.example": {{"auth": "{}"}}}}}}"#,
            base64_encode(b"deployer:s3cret")
        );
        let mut s = Sources {
            env: BTreeMap::from([
                ("DOCKER_AUTH_CONFIG".to_string(), json.clone()),
                ("CI_REGISTRY".to_string(), "gitlab.example".to_string()),
                ("CI_JOB_TOKEN".to_string(), "jobtoken".to_string()),
            ]),
            home: Some(d.path().to_path_buf()),
        };
        let found = s.lookup("prod.example").unwrap().unwrap();
        assert_eq!(found.source, "DOCKER_AUTH_CONFIG");
        assert_eq!(
            found.credential,
            Credential::Basic {
                username: "deployer".into(),
                password: Secret::new("s3cret")
            }
        );
        // GitLab's own registry still takes the job's credentials.
        assert_eq!(
            s.lookup("gitlab.example").unwrap().unwrap().source,
            "CI_JOB_TOKEN"
        );
        assert!(s.lookup("other.example").unwrap().is_none());
        // A CI/CD variable of type File: the variable is the file's path.
        let file = d.path().join("docker-auth");
        std::fs::write(&file, &json).unwrap();
        s.env
            .insert("DOCKER_AUTH_CONFIG".into(), file.display().to_string());
        let found = s.lookup("prod.example").unwrap().unwrap();
        assert_eq!(found.source, file.display().to_string());
        // Broken JSON: named, and nothing of the value in the error.
        s.env.insert(
            "DOCKER_AUTH_CONFIG".into(),
            r#"{"auths": {"prod.example": {"auth": s3cret}}}"#.into(),
        );
        let e = s.lookup("prod.example").unwrap_err().to_string();
        assert!(
            e.starts_with("DOCKER_AUTH_CONFIG: not a docker config.json"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        s.env
            .insert("DOCKER_AUTH_CONFIG".into(), "/no/such/file".into());
        let e = s.lookup("prod.example").unwrap_err().to_string();
        assert!(e.contains("/no/such/file (DOCKER_AUTH_CONFIG)"), "{e}");
    }

    #[test]
    fn ci_variables_then_files() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "reg.example": {{"auth": "{}"}}}}}}"#,
                base64_encode(b"hub:hubpw"),
                base64_encode(b"me:pw")
            ),
        )
        .unwrap();
        let mut s = Sources {
            env: BTreeMap::from([("DOCKER_CONFIG".to_string(), d.path().display().to_string())]),
            home: None,
        };
        let hub = s.lookup("registry-1.docker.io").unwrap().unwrap();
        assert!(
            matches!(hub.credential, Credential::Basic { ref username, .. } if username == "hub")
        );
        assert!(s.lookup("other.example").unwrap().is_none());
        s.env.insert("CI_REGISTRY".into(), "reg.example".into());
        s.env.insert("CI_JOB_TOKEN".into(), "jobtoken".into());
        let ci = s.lookup("reg.example").unwrap().unwrap();
        assert_eq!(ci.source, "CI_JOB_TOKEN");
        assert_eq!(
            ci.credential,
            Credential::Basic {
                username: "gitlab-ci-token".into(),
                password: Secret::new("jobtoken")
            }
        );
    }
}
