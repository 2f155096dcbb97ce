//! The registry HTTP API (distribution spec v2): auth, retries, blobs,
//! manifests, tags. Every operation is safe to repeat.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::Deserialize;

use super::RegistryError;
use super::auth::{Challenge, Credential, Secret, Sources};
use super::reference::Reference;
use crate::retry;
pub use crate::retry::Retry;

/// Manifest types a pull accepts, best first.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Upload chunk size: a broken connection costs at most one chunk.
pub const CHUNK: u64 = 32 << 20;

/// The most bytes a manifest, an index or a config may have: distribution
/// refuses manifests over 4 MiB itself. `Client::manifest_limit` changes it.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// How long one request, or one blob's transfer, may go on retrying since
/// its last progress. `Client::budget` changes it.
pub const BUDGET: Duration = Duration::from_secs(600);

/// Connections refused in a row before a registry counts as down: a
/// registry that is not there is not worth the whole retry policy.
const CONNECT_TRIES: u32 = 4;

/// What access a request needs: `repository:NAME:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub repository: String,
    pub actions: &'static str,
}

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            actions: "pull",
        }
    }

    pub fn push(repo: &str) -> Scope {
        Scope {
            repository: repo.to_string(),
            actions: "pull,push",
        }
    }

    fn as_param(&self) -> String {
        format!("repository:{}:{}", self.repository, self.actions)
    }
}

#[derive(Clone)]
struct Token {
    value: Secret,
    /// Renewed this long before it runs out (GitLab's last five minutes
    /// are spent by long pushes otherwise).
    good_until: Instant,
}

/// One client for all registries of a run.
pub struct Client {
    /// Made on first use: building a client loads the system's TLS roots,
    /// which a build that never reaches a registry must not need.
    http: std::sync::OnceLock<reqwest::Client>,
    sources: Sources,
    /// Hosts spoken to over plain HTTP (loopback always is).
    insecure: Vec<String>,
    pub retry: Retry,
    /// The most bytes read of a manifest, an index or a config.
    pub manifest_limit: u64,
    /// How long one request or blob transfer may retry since its last
    /// progress, within `retry`'s attempts.
    pub budget: Duration,
    /// Bearer tokens by (host, scopes).
    tokens: Mutex<HashMap<(String, Vec<Scope>), Token>>,
    /// Hosts that asked for Basic auth.
    basic: Mutex<HashMap<String, bool>>,
    /// Hosts that answered a monolithic upload (`POST ?digest=` with the
    /// bytes) by opening a session instead: their blobs' bytes go in the
    /// `PUT` alone, not twice.
    no_monolithic: Mutex<std::collections::HashSet<String>>,
}

#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    pub fn new(sources: Sources, insecure: Vec<String>) -> Result<Client, RegistryError> {
        Ok(Client {
            http: std::sync::OnceLock::new(),
            sources,
            insecure,
            retry: Retry::default(),
            manifest_limit: MANIFEST_LIMIT,
            budget: BUDGET,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashMap::new()),
            no_monolithic: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        if let Some(h) = self.http.get() {
            return Ok(h);
        }
        let built = reqwest::Client::builder()
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            // Redirects to blob storage must not carry our Authorization.
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| {
                RegistryError::Setup(format!(
                    "{}; is the ca-certificates package installed?",
                    describe(&e)
                ))
            })?;
        Ok(self.http.get_or_init(|| built))
    }

    /// The waits of one operation, within the time budget.
    pub(super) fn backoff(&self) -> retry::Backoff {
        self.retry.backoff_until(Instant::now() + self.budget)
    }

    fn base(&self, r: &Reference) -> String {
        let host = r.api_host();
        let plain = r.is_loopback() || self.insecure.iter().any(|h| h == host);
        format!("{}://{host}/v2", if plain { "http" } else { "https" })
    }

    pub fn url(&self, r: &Reference, path: &str) -> String {
        format!("{}/{}/{path}", self.base(r), r.repository)
    }

    /// Sends a request built by `build` (called again for each attempt),
    /// answering auth challenges and retrying what is worth retrying.
    pub async fn send(
        &self,
        r: &Reference,
        scopes: &[Scope],
        what: &str,
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let host = r.api_host().to_string();
        let mut scopes = scopes.to_vec();
        scopes.sort();
        let mut backoff = self.backoff();
        let mut challenged = false;
        let mut refused = 0;
        loop {
            let mut req = build(self.http()?);
            if let Some(t) = self.cached_token(&host, &scopes) {
                req = req.bearer_auth(t.expose());
            } else if self.wants_basic(&host)
                && let Some(Credential::Basic { username, password }) = self.credential(&host)?
            {
                req = req.basic_auth(username, Some(password.expose()));
            }
            let wait = match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    // Not an attempt: the credentials were not sent yet.
                    challenged = true;
                    self.answer_challenge(&host, &scopes, &resp).await?;
                    continue;
                }
                Ok(resp) if retry::transient_status(resp.status()) => {
                    match backoff.next(retry::retry_after(&resp)) {
                        Some(wait) => wait,
                        None => return Ok(resp),
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) => match backoff.next(None).filter(|_| {
                    refused = if e.is_connect() { refused + 1 } else { 0 };
                    retry::transient_error(&e) && refused < CONNECT_TRIES
                }) {
                    Some(wait) => wait,
                    None => {
                        return Err(RegistryError::Http {
                            what: what.to_string(),
                            reference: r.to_string(),
                            reason: describe(&e),
                        });
                    }
                },
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn cached_token(&self, host: &str, scopes: &[Scope]) -> Option<Secret> {
        let tokens = self.tokens.lock().ok()?;
        tokens
            .get(&(host.to_string(), scopes.to_vec()))
            .filter(|t| t.good_until > Instant::now())
            .map(|t| t.value.clone())
    }

    fn wants_basic(&self, host: &str) -> bool {
        self.basic
            .lock()
            .map(|b| b.get(host).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    fn credential(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        Ok(self.sources.lookup(host)?.map(|f| f.credential))
    }

    async fn answer_challenge(
        &self,
        host: &str,
        scopes: &[Scope],
        resp: &Response,
    ) -> Result<(), RegistryError> {
        let header = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let Some(challenge) = Challenge::parse(header) else {
            return Err(RegistryError::Denied {
                host: host.to_string(),
                reason: "401 without a usable WWW-Authenticate challenge".into(),
            });
        };
        match challenge.scheme.as_str() {
            "basic" => {
                if self.credential(host)?.is_none() {
                    return Err(no_credentials(host));
                }
                if let Ok(mut b) = self.basic.lock() {
                    b.insert(host.to_string(), true);
                }
                Ok(())
            }
            "bearer" => {
                let token = self.fetch_token(host, scopes, &challenge).await?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert((host.to_string(), scopes.to_vec()), token);
                }
                Ok(())
            }
            other => Err(RegistryError::Denied {
                host: host.to_string(),
                reason: format!("unsupported auth scheme `{other}`"),
            }),
        }
    }

    async fn fetch_token(
        &self,
        host: &str,
        scopes: &[Scope],
        challenge: &Challenge,
    ) -> Result<Token, RegistryError> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| RegistryError::Denied {
                host: host.to_string(),
                reason: "Bearer challenge without a realm".into(),
            })?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = challenge.params.get("service") {
            query.push(("service", s.clone()));
        }
        for s in scopes {
            query.push(("scope", s.as_param()));
        }
        let cred = self.credential(host)?;
        let mut backoff = self.backoff();
        loop {
            let failed = match self.token_once(host, realm, &query, &cred, scopes).await {
                Ok(token) => return Ok(token),
                Err(failed) => failed,
            };
            match failed {
                retry::Failure::Transient { error, wait } => match backoff.next(wait) {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => return Err(error),
                },
                retry::Failure::Fatal(e) => return Err(e),
            }
        }
    }

    /// One token request: the token, or a failure worth another try (the
    /// connection broke, the service was busy) or not (refused).
    async fn token_once(
        &self,
        host: &str,
        realm: &str,
        query: &[(&str, String)],
        cred: &Option<Credential>,
        scopes: &[Scope],
    ) -> Result<Token, retry::Failure<RegistryError>> {
        let started = Instant::now();
        let http = self.http()?;
        let mut req = http.get(realm).query(query);
        match cred {
            Some(Credential::Basic { username, password }) => {
                req = req.basic_auth(username, Some(password.expose()));
            }
            Some(Credential::IdentityToken(t)) => {
                // OAuth2 refresh token flow.
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", t.expose().to_string()),
                    ("client_id", "imgbuild".into()),
                ];
                form.extend(query.iter().cloned());
                req = http.post(realm).form(&form);
            }
            None => {}
        }
        let failed = |e: &reqwest::Error| {
            let error = RegistryError::Denied {
                host: host.to_string(),
                reason: format!("token request failed: {}", describe(e)),
            };
            if retry::transient_error(e) {
                retry::Failure::again(error)
            } else {
                retry::Failure::Fatal(error)
            }
        };
        let resp = req.send().await.map_err(|e| failed(&e))?;
        if retry::transient_status(resp.status()) {
            return Err(retry::Failure::Transient {
                wait: retry::retry_after(&resp),
                error: RegistryError::Denied {
                    host: host.to_string(),
                    reason: format!("the token service answered {}", resp.status()),
                },
            });
        }
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(retry::Failure::Fatal(match cred {
                None => no_credentials(host),
                Some(_) => RegistryError::Denied {
                    host: host.to_string(),
                    reason: format!(
                        "the token service refused the credentials for {}",
                        scopes
                            .iter()
                            .map(Scope::as_param)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                },
            }));
        }
        let body = super::fetch::read_capped(resp, MANIFEST_LIMIT)
            .await
            .map_err(|e| failed(&e))?
            .ok_or_else(|| RegistryError::Denied {
                host: host.to_string(),
                reason: format!("token reply over {MANIFEST_LIMIT} bytes"),
            })?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Denied {
                host: host.to_string(),
                reason: format!("unreadable token reply: {e}"),
            })?;
        let value = reply
            .token
            .or(reply.access_token)
            .ok_or_else(|| RegistryError::Denied {
                host: host.to_string(),
                reason: "token reply without a token".into(),
            })?;
        // The spec's default lifetime is 60 s; renew with a margin, before
        // the registry would refuse it (the 401 path is the fallback).
        let life = Duration::from_secs(reply.expires_in.unwrap_or(60).max(1));
        let margin = (life / 5).min(Duration::from_secs(300));
        Ok(Token {
            value: Secret::new(value),
            good_until: started + life - margin,
        })
    }

    /// Forgets a token the registry no longer accepts.
    pub fn drop_token(&self, host: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.retain(|(h, _), _| h != host);
        }
    }

    /// The size of a blob if the repository has it.
    pub async fn blob_size(
        &self,
        r: &Reference,
        digest: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let resp = self
            .send(r, &[Scope::pull(&r.repository)], "checking a blob", &|h| {
                h.head(&url)
            })
            .await?;
        match resp.status() {
            // The header, not content_length(): a HEAD response's body is empty.
            s if s.is_success() => Ok(resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(status_error(r, "checking a blob", s, resp).await),
        }
    }

    /// Mounts a blob from another repository of the same registry; false
    /// when the registry started an upload instead (the blob is not there).
    pub async fn mount(
        &self,
        r: &Reference,
        digest: &str,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let url = self.url(r, "blobs/uploads/");
        let scopes = [Scope::push(&r.repository), Scope::pull(from)];
        let sent = self
            .send(r, &scopes, "mounting a blob", &|h| {
                h.post(&url)
                    .query(&[("mount", digest), ("from", from)])
                    .header(header::CONTENT_LENGTH, 0)
            })
            .await;
        // No right to read the source is no reason to fail: upload instead.
        let resp = match sent {
            Err(RegistryError::Denied { .. }) => return Ok(false),
            other => other?,
        };
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            // An upload session was opened instead (leave it to expire), or
            // the source cannot be read with these credentials.
            StatusCode::ACCEPTED | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(false),
            s => Err(status_error(r, "mounting a blob", s, resp).await),
        }
    }

    /// Uploads the file at `path` as blob `digest` of `size` bytes, in
    /// chunks. No one failure fails the blob: a cut chunk or a busy
    /// registry goes on from the offset the registry reports; a session
    /// the registry refuses (forgotten, invalid, or a digest that does not
    /// come out at the PUT) starts over at byte 0 in a new one. Only
    /// failures without new progress count against the retry policy; the
    /// error of the last one names the blob. Memory holds one read buffer,
    /// not the blob.
    pub async fn upload(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
        path: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let mut backoff = self.backoff();
        // The most bytes a session has taken: going past it is progress.
        let mut best = 0u64;
        let mut at = UploadAt::New;
        loop {
            let step = match at {
                UploadAt::New => match self.start_upload(r).await {
                    Ok(loc) => Ok(UploadAt::Send(loc, 0)),
                    Err(e) => Err((e.into(), None)),
                },
                UploadAt::Ask(loc) => match self.upload_status(r, &loc).await {
                    Ok((loc, have)) if have <= size => Ok(UploadAt::Send(loc, have)),
                    // A session that cannot say where it is: start over.
                    _ => Ok(UploadAt::New),
                },
                UploadAt::Send(loc, offset) if offset < size => {
                    let end = (offset + CHUNK).min(size);
                    match self.patch_chunk(r, &loc, path, offset, end).await {
                        Ok(next) => {
                            progress(end);
                            if end > best {
                                best = end;
                                backoff = self.backoff();
                            }
                            Ok(UploadAt::Send(next, end))
                        }
                        Err(e) => Err((e, Some(loc))),
                    }
                }
                UploadAt::Send(loc, _) => match self.finish_upload(r, &loc, digest).await {
                    Ok(()) => return Ok(()),
                    // The session is gone: a PUT whose answer was lost may
                    // have completed it. The blob named by its digest is ours.
                    Err(e)
                        if matches!(e.error, RegistryError::NotFound { .. })
                            && matches!(self.blob_size(r, digest).await, Ok(Some(n)) if n == size) =>
                    {
                        return Ok(());
                    }
                    Err(e) => Err((e, Some(loc))),
                },
            };
            at = match step {
                Ok(next) => next,
                Err((StepError { error, wait }, loc)) => {
                    let next = match (resumable(&error), loc) {
                        (None, _) => return Err(of_blob(error, digest)),
                        (Some(true), Some(loc)) => UploadAt::Ask(loc),
                        _ => UploadAt::New,
                    };
                    match backoff.next(wait) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(of_blob(error, digest)),
                    }
                    next
                }
            };
        }
    }

    /// Uploads a small blob held in memory in one request (the spec's
    /// monolithic `POST …/blobs/uploads/?digest=`), or two where the
    /// registry opens a session instead (`202`: the bytes then go in one
    /// `PUT`, and to that host from then on without the `POST` carrying
    /// them). An SBOM or a signature is a few KB: three round trips of a
    /// chunked upload would cost more than its bytes. Retried as a whole.
    pub async fn upload_bytes(
        &self,
        r: &Reference,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(r, "blobs/uploads/");
        let scopes = [Scope::push(&r.repository)];
        let what = "uploading a blob";
        let body = bytes.to_vec();
        let host = r.api_host().to_string();
        let monolithic = self.no_monolithic.lock().is_ok_and(|m| !m.contains(&host));
        let resp = self
            .send(r, &scopes, what, &|h| {
                if monolithic {
                    h.post(&url)
                        .query(&[("digest", digest)])
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .body(body.clone())
                } else {
                    h.post(&url).header(header::CONTENT_LENGTH, 0)
                }
            })
            .await?;
        let resp = match resp.status() {
            StatusCode::CREATED if monolithic => resp,
            StatusCode::ACCEPTED => {
                if monolithic && let Ok(mut m) = self.no_monolithic.lock() {
                    m.insert(host);
                }
                let location = self.location(r, &resp)?;
                let resp = self
                    .send(r, &scopes, what, &|h| {
                        h.put(&location)
                            .query(&[("digest", digest)])
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .body(body.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::CREATED {
                    let e = status_error(r, what, resp.status(), resp).await;
                    return Err(of_blob(e, digest));
                }
                resp
            }
            s => return Err(of_blob(status_error(r, what, s, resp).await, digest)),
        };
        stored_as(r, &resp, digest)
    }

    /// Puts the finished upload under its digest.
    async fn finish_upload(
        &self,
        r: &Reference,
        location: &str,
        digest: &str,
    ) -> Result<(), StepError> {
        let resp = self
            .send(
                r,
                &[Scope::push(&r.repository)],
                "finishing an upload",
                &|h| {
                    h.put(location)
                        .query(&[("digest", digest)])
                        .header(header::CONTENT_LENGTH, 0)
                },
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            let wait = retry::retry_after(&resp);
            let error = status_error(r, "finishing an upload", resp.status(), resp).await;
            return Err(StepError { error, wait });
        }
        Ok(stored_as(r, &resp, digest)?)
    }

    /// Opens an upload session; its location.
    async fn start_upload(&self, r: &Reference) -> Result<String, RegistryError> {
        let start_url = self.url(r, "blobs/uploads/");
        let resp = self
            .send(
                r,
                &[Scope::push(&r.repository)],
                "starting an upload",
                &|h| h.post(&start_url).header(header::CONTENT_LENGTH, 0),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(r, "starting an upload", resp.status(), resp).await);
        }
        self.location(r, &resp)
    }

    async fn patch_chunk(
        &self,
        r: &Reference,
        location: &str,
        path: &Path,
        start: u64,
        end: u64,
    ) -> Result<String, StepError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| RegistryError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| RegistryError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(end - start),
            256 * 1024,
        ));
        // Not through `send`: a streamed body cannot be replayed; the caller
        // resumes from the registry's upload status instead.
        let mut req = self
            .http()?
            .patch(location)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, end - start)
            .header("Content-Range", format!("{start}-{}", end - 1))
            .body(body);
        let host = r.api_host().to_string();
        if let Some(t) = self.cached_token(&host, &[Scope::push(&r.repository)]) {
            req = req.bearer_auth(t.expose());
        } else if self.wants_basic(&host)
            && let Some(Credential::Basic { username, password }) = self.credential(&host)?
        {
            req = req.basic_auth(username, Some(password.expose()));
        }
        let resp = req.send().await.map_err(|e| RegistryError::Http {
            what: "uploading a chunk".into(),
            reference: r.to_string(),
            reason: describe(&e),
        })?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(self.location(r, &resp)?),
            StatusCode::UNAUTHORIZED => {
                // The token ran out mid-push: renew on the status request.
                self.drop_token(&host);
                let _ = self
                    .send(r, &[Scope::push(&r.repository)], "renewing a token", &|h| {
                        h.get(location)
                    })
                    .await;
                Err(RegistryError::Http {
                    what: "uploading a chunk".into(),
                    reference: r.to_string(),
                    reason: "token expired".into(),
                }
                .into())
            }
            s => {
                let wait = retry::retry_after(&resp);
                let error = status_error(r, "uploading a chunk", s, resp).await;
                Err(StepError { error, wait })
            }
        }
    }

    /// Where an upload stands: its location and the bytes received.
    async fn upload_status(
        &self,
        r: &Reference,
        location: &str,
    ) -> Result<(String, u64), RegistryError> {
        let resp = self
            .send(
                r,
                &[Scope::push(&r.repository)],
                "asking for upload status",
                &|h| h.get(location),
            )
            .await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(status_error(r, "asking for upload status", resp.status(), resp).await);
        }
        let have = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map_or(0, received);
        Ok((self.location(r, &resp)?, have))
    }

    fn location(&self, r: &Reference, resp: &Response) -> Result<String, RegistryError> {
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol {
                reference: r.to_string(),
                reason: "upload response without a Location".into(),
            })?;
        Ok(
            if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else {
                let base = self.base(r);
                let origin = base.trim_end_matches("/v2");
                format!("{origin}{loc}")
            },
        )
    }

    /// The digest a tag points at, by HEAD.
    pub async fn head_manifest(&self, r: &Reference) -> Result<Option<String>, RegistryError> {
        let url = self.url(r, &format!("manifests/{}", r.object()));
        let resp = self
            .send(
                r,
                &[Scope::pull(&r.repository)],
                "checking a manifest",
                &|h| h.head(&url).header(header::ACCEPT, ACCEPT_MANIFESTS),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(resp
                .headers()
                .get("Docker-Content-Digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(status_error(r, "checking a manifest", s, resp).await),
        }
    }

    pub async fn put_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let url = self.url(r, &format!("manifests/{}", r.object()));
        let body = bytes.to_vec();
        let resp = self
            .send(
                r,
                &[Scope::push(&r.repository)],
                "putting a manifest",
                &|h| {
                    h.put(&url)
                        .header(header::CONTENT_TYPE, media_type)
                        .body(body.clone())
                },
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(status_error(r, "putting a manifest", resp.status(), resp).await);
        }
        Ok(())
    }

    pub async fn tags(&self, r: &Reference) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut all = Vec::new();
        let mut url = self.url(r, "tags/list?n=1000");
        loop {
            let this = url.clone();
            let resp = self
                .send(r, &[Scope::pull(&r.repository)], "listing tags", &|h| {
                    h.get(&this)
                })
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(r, "listing tags", resp.status(), resp).await);
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(';').next())
                .map(|l| {
                    l.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                });
            let page: Tags = resp.json().await.map_err(|e| RegistryError::Protocol {
                reference: r.to_string(),
                reason: format!("unreadable tag list: {e}"),
            })?;
            all.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) if n.starts_with('/') => {
                    url = format!("{}{n}", self.base(r).trim_end_matches("/v2"));
                }
                Some(n) if !n.is_empty() => url = n,
                _ => break,
            }
        }
        all.sort();
        Ok(all)
    }

    pub async fn delete_manifest(&self, r: &Reference, digest: &str) -> Result<(), RegistryError> {
        let url = self.url(r, &format!("manifests/{digest}"));
        let resp = self
            .send(
                r,
                &[Scope {
                    repository: r.repository.clone(),
                    actions: "delete",
                }],
                "deleting a manifest",
                &|h| h.request(Method::DELETE, &url),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(r, "deleting a manifest", resp.status(), resp).await);
        }
        Ok(())
    }
}

/// The bytes an upload session holds, from its status's `Range: 0-END`.
/// `0-0` is what distribution answers for an empty session (it cannot say
/// "none" in this form): read as 0, since going on from too early is caught
/// at the PUT and starts over, while going on from too late loses a byte.
fn received(range: &str) -> u64 {
    match range
        .rsplit_once('-')
        .map(|(_, end)| end.trim().parse::<u64>())
    {
        Some(Ok(0)) | None | Some(Err(_)) => 0,
        Some(Ok(end)) => end + 1,
    }
}

/// The next step of a blob upload.
enum UploadAt {
    /// Open a new session, at byte 0.
    New,
    /// Ask this session where it stands, and go on from there.
    Ask(String),
    /// Send the bytes from this offset to this session, then PUT.
    Send(String, u64),
}

/// A failed upload step, with the wait the registry asked for.
struct StepError {
    error: RegistryError,
    wait: Option<Duration>,
}

impl From<RegistryError> for StepError {
    fn from(error: RegistryError) -> StepError {
        StepError { error, wait: None }
    }
}

/// After a failed upload step: go on in the same session (`true`: the
/// connection broke or the registry was busy, it may hold what arrived),
/// start a new session (`false`: the registry refused this one: 400
/// DIGEST_INVALID or BLOB_UPLOAD_INVALID, 404 BLOB_UPLOAD_UNKNOWN, 416),
/// or give up (`None`: denied, or our own file or data is at fault).
fn resumable(e: &RegistryError) -> Option<bool> {
    match e {
        RegistryError::Http { .. } => Some(true),
        RegistryError::Status { status, .. } => {
            Some(StatusCode::from_u16(*status).is_ok_and(retry::transient_status))
        }
        RegistryError::NotFound { .. } | RegistryError::Protocol { .. } => Some(false),
        _ => None,
    }
}

/// The error that ends a blob's upload, naming the blob.
fn of_blob(e: RegistryError, digest: &str) -> RegistryError {
    match e {
        RegistryError::Http {
            what,
            reference,
            reason,
        } => RegistryError::Http {
            what: format!("{what} of blob {digest}"),
            reference,
            reason,
        },
        RegistryError::Status {
            what,
            reference,
            status,
            detail,
        } => RegistryError::Status {
            what: format!("{what} of blob {digest}"),
            reference,
            status,
            detail,
        },
        RegistryError::NotFound { reference, what } => RegistryError::NotFound {
            reference,
            what: format!("{what} of blob {digest}"),
        },
        RegistryError::Protocol { reference, reason } => RegistryError::Protocol {
            reference,
            reason: format!("blob {digest}: {reason}"),
        },
        other => other,
    }
}

fn no_credentials(host: &str) -> RegistryError {
    RegistryError::Denied {
        host: host.to_string(),
        reason: "the registry wants credentials and none are configured; run `imgbuild login`, set CI_REGISTRY_USER and CI_REGISTRY_PASSWORD, or add the host to config.json".into(),
    }
}

/// A reqwest error with its causes ("connection refused" hides below
/// "error sending request"), without credentials. The Debian archive's
/// client says its errors the same way.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = c.source();
    }
    redact(&text)
}

/// Drops anything that looks like userinfo from URLs in a message.
fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_inclusive(' ') {
        match (word.find("://"), word.find('@')) {
            (Some(i), Some(j)) if j > i => {
                out.push_str(&word[..i + 3]);
                out.push_str(&word[j + 1..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

pub(super) async fn status_error(
    r: &Reference,
    what: &str,
    status: StatusCode,
    resp: Response,
) -> RegistryError {
    let body = resp.text().await.unwrap_or_default();
    let detail: String = body.chars().take(300).collect();
    match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            reference: r.to_string(),
            what: what.to_string(),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied {
            host: r.api_host().to_string(),
            reason: format!("{what} for {r}: {status} {}", redact(detail.trim())),
        },
        _ => RegistryError::Status {
            what: what.to_string(),
            reference: r.to_string(),
            status: status.as_u16(),
            detail: redact(detail.trim()),
        },
    }
}

/// The registry names the digest it stored an upload under: anything but
/// `digest` is not our blob.
fn stored_as(r: &Reference, resp: &reqwest::Response, digest: &str) -> Result<(), RegistryError> {
    match resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(stored) if stored != digest => Err(RegistryError::Mismatch {
            reference: r.to_string(),
            digest: digest.to_string(),
            expected: digest.to_string(),
            actual: stored.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_session_has_received_nothing() {
        assert_eq!(received("0-0"), 0, "distribution's answer for no bytes");
        assert_eq!(received("0-559"), 560);
        assert_eq!(received("bytes=0-99"), 100);
        assert_eq!(received("junk"), 0);
    }

    #[test]
    fn urls_never_keep_userinfo() {
        assert_eq!(
            redact("error sending request for url (https://u:pw@host/v2/)"),
            "error sending request for url (https://host/v2/)"
        );
    }
}
