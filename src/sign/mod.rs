//! Signing images the way cosign does, and verifying such signatures:
//! keys in cosign's files ([`key`]), signatures in its registry layout
//! ([`cosign`]).
pub mod cosign;
pub mod key;

use std::path::PathBuf;

use p256::ecdsa::{SigningKey, VerifyingKey};

use crate::attach::referrers;
use crate::env;
use crate::registry::transfer::Known;
use crate::registry::{Client, Reference, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Key(#[from] key::KeyError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the signing key needs its passphrase: set {} (an empty passphrase is set as an empty variable)",
        env::IMGBUILD_SIGN_PASSWORD
    )]
    NoPassphrase,
    #[error("`env://{0}`: the environment variable {0} is not set")]
    NoKeyVariable(String),
    #[error("{reference} is not signed: there is no {tag} in its repository")]
    Unsigned { reference: String, tag: String },
    #[error("{reference}: no signature verifies with {key}:{}", reasons.iter().map(|r| format!("\n  - {r}")).collect::<String>())]
    Rejected {
        reference: String,
        key: String,
        reasons: Vec<cosign::Rejected>,
    },
    #[error("{reference}: the image is not in the registry")]
    NoImage { reference: String },
}

/// Where a key is: a file, or `env://VAR` (its PEM text in a variable).
fn read_key_text(spec: &str) -> Result<(String, String), SignError> {
    if let Some(var) = spec.strip_prefix("env://") {
        let text = env::var(var).ok_or_else(|| SignError::NoKeyVariable(var.to_string()))?;
        return Ok((text, format!("${var}")));
    }
    let path = PathBuf::from(spec);
    let text = std::fs::read_to_string(&path).map_err(|source| SignError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((text, spec.to_string()))
}

/// The passphrase of a private key: $IMGBUILD_SIGN_PASSWORD, else
/// $COSIGN_PASSWORD (the name cosign reads).
pub fn passphrase() -> Result<String, SignError> {
    env::var_set(env::IMGBUILD_SIGN_PASSWORD)
        .or_else(|| env::var_set(env::COSIGN_PASSWORD))
        .ok_or(SignError::NoPassphrase)
}

/// Opens the private key at `spec` (a file or `env://VAR`).
pub fn load_private(spec: &str) -> Result<SigningKey, SignError> {
    let (text, what) = read_key_text(spec)?;
    Ok(key::decrypt(&text, passphrase()?.as_bytes(), &what)?)
}

/// Reads the public key at `spec` (a file or `env://VAR`), and its name.
pub fn load_public(spec: &str) -> Result<(VerifyingKey, String), SignError> {
    let (text, what) = read_key_text(spec)?;
    Ok((key::read_public(&text, &what)?, what))
}

/// The image's manifest digest and size: what `r` pins, else what its tag
/// names now.
async fn subject(client: &Client, r: &Reference) -> Result<(String, u64), SignError> {
    let (bytes, _) = client.get_manifest(r).await.map_err(|e| match e {
        RegistryError::NotFound { .. } => SignError::NoImage {
            reference: r.to_string(),
        },
        e => e.into(),
    })?;
    Ok((
        crate::digest::digest_of(&bytes).to_string(),
        bytes.len() as u64,
    ))
}

/// `HOST/PATH` of a reference, as a signature's identity names it.
pub fn repository(r: &Reference) -> String {
    format!("{}/{}", r.registry, r.repository)
}

/// Signs the image `r` names for each of `identities` (`HOST/PATH[:TAG]`;
/// none: `r` as written), keeping the signatures already there. Returns
/// the image's digest.
pub async fn sign_image(
    client: &Client,
    r: &Reference,
    identities: &[String],
    key: &SigningKey,
    known: &Known,
) -> Result<String, SignError> {
    let (digest, size) = subject(client, r).await?;
    let default = vec![match &r.tag {
        Some(t) => format!("{}:{t}", repository(r)),
        None => repository(r),
    }];
    let ids = if identities.is_empty() {
        &default
    } else {
        identities
    };
    let api = referrers::Api::default();
    attach_signed(
        client,
        r,
        (&digest, size),
        &[],
        Some((key, ids)),
        known,
        &api,
        None,
    )
    .await?;
    api.settle(client).await?;
    Ok(digest)
}

/// What a repository holds of an image's referrers before an attach: the
/// listing and, when signing, the signatures under its `.sig` tag.
pub struct Prior {
    listing: referrers::Listing,
    signed: Vec<cosign::Signed>,
    tagged: Option<(String, u64)>,
}

/// Reads what `r`'s repository holds of the referrers of `digest` (and
/// its signatures, when `signing`), side by side.
pub async fn read_prior(
    client: &Client,
    r: &Reference,
    digest: &str,
    signing: bool,
    api: &referrers::Api,
) -> Result<Prior, SignError> {
    let read_sigs = async {
        match signing {
            true => cosign::read_tagged(client, r, digest).await,
            false => Ok((Vec::new(), None)),
        }
    };
    let (listing, sigs) =
        futures_util::future::join(referrers::listing(client, r, digest, api), read_sigs).await;
    let (signed, tagged) = sigs?;
    Ok(Prior {
        listing: listing?,
        signed,
        tagged,
    })
}

/// Attaches an image's `referrers` (its SBOMs, provenance) in `r`'s
/// repository and, with `signing`, its cosign signature for each identity
/// (kept beside the signatures already there), all in one update of the
/// referrers index: what is there (the listing, the `.sig` tag) is read
/// side by side first, unless `prior` holds it already (read while the
/// image's blobs went up), then only what is missing is put. `subject` is
/// the image's manifest digest and size, as pushed. Returns what is
/// attached.
#[allow(clippy::too_many_arguments)]
pub async fn attach_signed(
    client: &Client,
    r: &Reference,
    subject: (&str, u64),
    attach: &[referrers::Referrer],
    signing: Option<(&SigningKey, &[String])>,
    known: &Known,
    api: &referrers::Api,
    prior: Option<Prior>,
) -> Result<Vec<referrers::Attached>, SignError> {
    let prior = match prior {
        Some(p) => p,
        None => read_prior(client, r, subject.0, signing.is_some(), api).await?,
    };
    let digest = subject.0;
    let Prior {
        mut listing,
        signed,
        tagged,
    } = prior;
    let mut sig = None;
    let mut mine = Vec::new();
    let mut kept = None;
    if let Some((key, ids)) = signing {
        mine = ids
            .iter()
            .map(|id| cosign::sign(key, &cosign::payload(id, digest)))
            .collect();
        if let Some((t, _)) = &tagged {
            listing.tags.insert(cosign::sig_tag(digest), t.clone());
        }
        match (cosign::merged(&signed, &mine), tagged) {
            (Some(all), _) => sig = Some(cosign::manifest(&all, subject)),
            // Every signature is there already, in a `.sig` left as it is.
            (None, Some((t, _))) => {
                kept = Some(referrers::Attached {
                    artifact_type: cosign::SIG_ARTIFACT.to_string(),
                    digest: t,
                    tag: Some(cosign::sig_tag(digest)),
                })
            }
            (None, None) => sig = Some(cosign::manifest(&signed, subject)),
        }
    }
    let via_api = listing.api;
    // The signature's manifest goes with the rest, after them in the
    // report.
    let all: Vec<&referrers::Referrer> = attach.iter().chain(sig.as_ref()).collect();
    let mut out = referrers::attach_listed(client, r, digest, &all, listing, known, api).await?;
    if let Some(sig) = &sig {
        // Another writer may put the `.sig` tag over ours before the
        // settle: what it must keep there (never the key).
        api.signed(
            r,
            digest,
            referrers::SigWrite {
                signed: mine,
                subject_size: subject.1,
                put: sig.digest(),
            },
            via_api,
        );
    }
    out.extend(kept);
    Ok(out)
}

/// Verifies that a signature by `key` vouches for the image `r` names.
/// Returns the image's digest.
pub async fn verify_image(
    client: &Client,
    r: &Reference,
    key: &VerifyingKey,
    key_name: &str,
) -> Result<String, SignError> {
    let (digest, _) = subject(client, r).await?;
    let signed = cosign::read(client, r, &digest).await?;
    if signed.is_empty() {
        return Err(SignError::Unsigned {
            reference: r.to_string(),
            tag: cosign::sig_tag(&digest),
        });
    }
    let repo = repository(r);
    let mut reasons = Vec::new();
    for s in &signed {
        match cosign::check(s, key, &digest, &repo) {
            Ok(()) => return Ok(digest),
            Err(why) => reasons.push(why),
        }
    }
    Err(SignError::Rejected {
        reference: r.to_string(),
        key: key_name.to_string(),
        reasons,
    })
}
