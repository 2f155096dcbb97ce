//! Registries: push, pull, tag, copy; auth, retries; like crane.
pub mod auth;
pub mod cache;
pub mod client;
pub mod fetch;
pub mod pull;
pub mod transfer;

use std::path::PathBuf;

pub use client::Client;
// The reference is a leaf type (spec parses it too); kept reachable here.
pub use crate::reference::{self, Reference, ReferenceError};

impl RegistryError {
    /// True when the registry could not be reached or did not work (as
    /// opposed to answering: not found, denied, or wrong content).
    pub fn is_unreachable(&self) -> bool {
        match self {
            RegistryError::Http { .. } | RegistryError::ShortBlob { .. } => true,
            RegistryError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    #[error("{what} for {reference}: {reason}")]
    Http {
        what: String,
        reference: String,
        reason: String,
    },
    #[error("{reference}: {what}: not found")]
    NotFound { reference: String, what: String },
    #[error("{host}: access denied: {reason}")]
    Denied { host: String, reason: String },
    #[error("{what} for {reference}: the registry answered {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Status {
        what: String,
        reference: String,
        status: u16,
        detail: String,
    },
    #[error("{reference}: {reason}")]
    Protocol { reference: String, reason: String },
    #[error("blob {digest} from {reference} does not match: expected {expected}, got {actual}")]
    Mismatch {
        reference: String,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{what} of {reference} is over {limit} bytes, the most imgbuild reads (distribution's own limit for manifests is 4 MiB); it stopped reading there"
    )]
    TooLarge {
        reference: String,
        what: String,
        limit: u64,
    },
    #[error(
        "blob {digest} of {repository} sends more than its declared {size} bytes; reading stopped there"
    )]
    BlobTooLong {
        repository: String,
        digest: String,
        size: u64,
    },
    #[error("blob {digest} of {repository} ended after {got} of its {size} bytes{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    ShortBlob {
        repository: String,
        digest: String,
        got: u64,
        size: u64,
        reason: String,
    },
    #[error(
        "the manifest of {reference} does not match {against}: expected {expected}, got {actual} (the digest of the bytes received)"
    )]
    ManifestMismatch {
        reference: String,
        against: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
