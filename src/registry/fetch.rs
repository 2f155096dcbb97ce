//! Reading from a registry: manifests (capped, checked against their
//! digests) and blobs (read to their declared size, resumed with `Range`
//! when a connection breaks, checked).
use reqwest::{Response, StatusCode, header};

use super::RegistryError;
use super::client::{ACCEPT_MANIFESTS, Client, Scope, describe, status_error};
use super::reference::Reference;
use crate::retry;

impl Client {
    /// GETs a manifest: its bytes and media type. At most
    /// `manifest_limit` bytes are read; the bytes must hash to the digest
    /// the reference pins, and to the registry's `Docker-Content-Digest`
    /// when it sends one. A body cut short is asked for again.
    pub async fn get_manifest(&self, r: &Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url(r, &format!("manifests/{}", r.object()));
        let what = "reading a manifest";
        let mut backoff = self.backoff();
        loop {
            let resp = self
                .send(r, &[Scope::pull(&r.repository)], what, &|h| {
                    h.get(&url).header(header::ACCEPT, ACCEPT_MANIFESTS)
                })
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(r, what, resp.status(), resp).await);
            }
            let text = |name: header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let media_type = text(header::CONTENT_TYPE).unwrap_or_default();
            let claimed = text(header::HeaderName::from_static("docker-content-digest"));
            let error = match read_capped(resp, self.manifest_limit).await {
                Ok(Some(bytes)) => {
                    verify_manifest(r, &bytes, claimed.as_deref())?;
                    return Ok((bytes, media_type));
                }
                Ok(None) => {
                    return Err(RegistryError::TooLarge {
                        reference: r.to_string(),
                        what: "the manifest".into(),
                        limit: self.manifest_limit,
                    });
                }
                Err(e) => e,
            };
            match backoff
                .next(None)
                .filter(|_| retry::transient_error(&error))
            {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    return Err(RegistryError::Http {
                        what: what.into(),
                        reference: r.to_string(),
                        reason: describe(&error),
                    });
                }
            }
        }
    }

    /// Fetches blob `digest` of `size` bytes into `out`, and checks it. A
    /// connection cut mid-body goes on from the bytes received (`Range`),
    /// or from the start when the registry cannot; each try that brings no
    /// new byte counts against the retry policy and the time budget. Never
    /// more than `size` bytes are read: a longer body is refused at once.
    pub async fn get_blob(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
        out: &mut dyn Sink,
    ) -> Result<(), RegistryError> {
        use sha2::Digest as _;
        let url = self.url(r, &format!("blobs/{digest}"));
        // Every error of this blob names it.
        let what = format!("reading blob {digest}");
        let what = what.as_str();
        let repository = format!("{}/{}", r.registry, r.repository);
        let io = |e: std::io::Error| RegistryError::Io {
            path: out_path(digest),
            source: e,
        };
        let mut hasher = sha2::Sha256::new();
        let mut have = 0u64;
        let mut backoff = self.backoff();
        loop {
            let from = have;
            let mut resp = self
                .send(r, &[Scope::pull(&r.repository)], what, &|h| {
                    let req = h.get(&url);
                    if from > 0 {
                        req.header(header::RANGE, format!("bytes={from}-"))
                    } else {
                        req
                    }
                })
                .await?;
            let status = resp.status();
            let resumed = status == StatusCode::PARTIAL_CONTENT
                && from > 0
                && content_range_start(&resp) == Some(from);
            if status == StatusCode::RANGE_NOT_SATISFIABLE {
                // Nothing after byte `from`: the registry's blob is short.
                return Err(RegistryError::ShortBlob {
                    repository,
                    digest: digest.into(),
                    got: have,
                    size,
                    reason: "the registry has no more".into(),
                });
            }
            if !status.is_success() {
                return Err(status_error(r, what, status, resp).await);
            }
            if !resumed && have > 0 {
                // The whole blob again (or an answer we cannot place).
                out.restart().map_err(io)?;
                hasher = sha2::Sha256::new();
                have = 0;
            }
            if resp.content_length().is_some_and(|n| have + n > size) {
                return Err(RegistryError::BlobTooLong {
                    repository,
                    digest: digest.into(),
                    size,
                });
            }
            let cut = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if have + chunk.len() as u64 > size {
                            return Err(RegistryError::BlobTooLong {
                                repository,
                                digest: digest.into(),
                                size,
                            });
                        }
                        out.append(&chunk).map_err(io)?;
                        hasher.update(&chunk);
                        have += chunk.len() as u64;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(describe(&e)),
                }
            };
            if have == size {
                let actual = format!("sha256:{:x}", hasher.finalize());
                if actual != digest {
                    return Err(RegistryError::Mismatch {
                        reference: r.to_string(),
                        digest: digest.into(),
                        expected: format!("{digest}, {size} bytes"),
                        actual: format!("{actual}, {have} bytes"),
                    });
                }
                return Ok(());
            }
            let short = |reason: String| RegistryError::ShortBlob {
                repository: repository.clone(),
                digest: digest.into(),
                got: have,
                size,
                reason,
            };
            // A body that ended where the registry said it would is what
            // the registry holds: asking again gives the same.
            let Some(reason) = cut else {
                return Err(short(String::new()));
            };
            if have > from {
                backoff = self.backoff();
            }
            match backoff.next(None) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(short(reason)),
            }
        }
    }

    /// A small blob (a config) in memory: at most `manifest_limit` bytes,
    /// checked against its digest.
    pub async fn get_config(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if size > self.manifest_limit {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                what: format!("config {digest} ({size} bytes declared)"),
                limit: self.manifest_limit,
            });
        }
        let mut buf = Vec::new();
        self.get_blob(r, digest, size, &mut buf).await?;
        Ok(buf)
    }
}

/// Where a blob's bytes go as they come: appended, or started over when
/// the registry sends the whole blob again.
pub trait Sink: Send {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn restart(&mut self) -> std::io::Result<()>;
}

impl Sink for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.clear();
        Ok(())
    }
}

impl Sink for std::fs::File {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, bytes)
    }

    fn restart(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        self.set_len(0)?;
        self.rewind().map(|_| ())
    }
}

/// A stand-in path for errors writing a blob that has no file of its own.
fn out_path(digest: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("<blob {digest}>"))
}

/// The first byte a 206 answer holds, from `Content-Range: bytes A-B/N`.
fn content_range_start(resp: &Response) -> Option<u64> {
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    v.trim()
        .strip_prefix("bytes ")?
        .split_once('-')?
        .0
        .trim()
        .parse()
        .ok()
}

/// A response's body, unless it is over `limit` bytes (`None`): reading
/// stops at `limit + 1`, so memory never holds more.
pub(super) async fn read_capped(
    mut resp: Response,
    limit: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// A manifest's bytes against the digest its reference pins and the one
/// the registry claims (`Docker-Content-Digest`): either differing is
/// refused, naming both.
fn verify_manifest(
    r: &Reference,
    bytes: &[u8],
    claimed: Option<&str>,
) -> Result<(), RegistryError> {
    let actual = format!("sha256:{}", crate::digest::sha256_hex(bytes));
    let checks = [
        (r.digest.as_deref(), "the digest in its reference"),
        (claimed, "the registry's Docker-Content-Digest"),
    ];
    for (expected, against) in checks {
        let Some(expected) = expected else { continue };
        if !expected.starts_with("sha256:") {
            if claimed == Some(expected) {
                // Another algorithm's header: nothing to compare it with.
                continue;
            }
            return Err(RegistryError::Protocol {
                reference: r.to_string(),
                reason: format!("`{expected}`: only sha256 digests can be checked"),
            });
        }
        if expected != actual {
            return Err(RegistryError::ManifestMismatch {
                reference: r.to_string(),
                against,
                expected: expected.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_must_be_the_digests_they_are_said_to_be() {
        let bytes = b"{}";
        let good = format!("sha256:{}", crate::digest::sha256_hex(bytes));
        let zeros = format!("sha256:{}", "0".repeat(64));
        let tag: Reference = "127.0.0.1:5000/app:v1".parse().unwrap();
        assert!(verify_manifest(&tag, bytes, None).is_ok());
        assert!(verify_manifest(&tag, bytes, Some(&good)).is_ok());
        let lie = verify_manifest(&tag, bytes, Some(&zeros)).unwrap_err();
        let text = lie.to_string();
        assert!(text.contains(&zeros) && text.contains(&good), "{text}");
        // Another algorithm's header cannot be compared: not a lie.
        assert!(verify_manifest(&tag, bytes, Some("sha512:abc")).is_ok());
        let pinned = tag.with_digest(&zeros);
        let text = verify_manifest(&pinned, bytes, None)
            .unwrap_err()
            .to_string();
        assert!(text.contains(&zeros) && text.contains(&good), "{text}");
        assert!(verify_manifest(&tag.with_digest(&good), bytes, Some(&good)).is_ok());
    }
}
