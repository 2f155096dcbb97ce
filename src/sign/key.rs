//! ECDSA P-256 keys in cosign's files: the private key encrypted as
//! go-securesystemslib does (scrypt N=32768 r=8 p=1, NaCl secretbox) in an
//! `ENCRYPTED SIGSTORE PRIVATE KEY` PEM, the public key as a PKIX
//! `PUBLIC KEY` PEM. cosign, skopeo (`--sign-by-sigstore-private-key`) and
//! imgbuild read each other's keys. The passphrase and the key are never
//! written anywhere else, nor put in an error.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

pub const PRIVATE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// cosign before 2.0 wrote this label; the contents are the same.
pub const PRIVATE_PEM_OLD: &str = "ENCRYPTED COSIGN PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: not a PEM file ({reason})")]
    Pem { what: String, reason: String },
    #[error("{what}: a `{label}` PEM; expected `{expected}`")]
    Label {
        what: String,
        label: String,
        expected: &'static str,
    },
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error(
        "{what}: the passphrase does not open this key (wrong passphrase, or the file was changed)"
    )]
    Passphrase { what: String },
    #[error("{what}: unsupported key: {reason}; imgbuild signs with ECDSA P-256 keys")]
    Unsupported { what: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct KdfParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The label and contents of the first PEM block of `text`.
fn unpem(text: &str, what: &str) -> Result<(String, Vec<u8>), KeyError> {
    let bad = |reason: &str| KeyError::Pem {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| bad("no BEGIN line"))?;
    let rest = &text[start + 11..];
    let (label, rest) = rest.split_once("-----").ok_or_else(|| bad("no label"))?;
    let end = rest
        .find(&format!("-----END {label}-----"))
        .ok_or_else(|| bad("no END line"))?;
    let body: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(body).map_err(|e| bad(&e.to_string()))?;
    Ok((label.to_string(), der))
}

fn scrypt_key(pass: &[u8], salt: &[u8], p: &KdfParams, what: &str) -> Result<[u8; 32], KeyError> {
    let log_n = u8::try_from(p.N.trailing_zeros()).unwrap_or(0);
    if !p.N.is_power_of_two() || log_n == 0 || log_n > 20 {
        return Err(KeyError::Format {
            what: what.to_string(),
            reason: format!("scrypt N={} is not a power of two up to 2^20", p.N),
        });
    }
    let params = scrypt::Params::new(log_n, p.r, p.p, 32).map_err(|e| KeyError::Format {
        what: what.to_string(),
        reason: format!("scrypt parameters: {e}"),
    })?;
    let mut key = [0u8; 32];
    scrypt::scrypt(pass, salt, &params, &mut key).map_err(|e| KeyError::Format {
        what: what.to_string(),
        reason: format!("scrypt: {e}"),
    })?;
    Ok(key)
}

/// A new key pair: the encrypted private key PEM and the public key PEM.
pub fn generate(passphrase: &[u8]) -> (String, String) {
    let key = SigningKey::random(&mut OsRng);
    (encrypt(&key, passphrase), public_pem(key.verifying_key()))
}

/// `key` in cosign's encrypted format.
pub fn encrypt(key: &SigningKey, passphrase: &[u8]) -> String {
    let der = key.to_pkcs8_der().expect("a P-256 key encodes as PKCS#8");
    let mut salt = [0u8; 32];
    OsRng.fill_bytes(&mut salt);
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    let params = KdfParams {
        N: 32768,
        r: 8,
        p: 1,
    };
    let k = scrypt_key(passphrase, &salt, &params, "new key").expect("fixed parameters are valid");
    let sealed = XSalsa20Poly1305::new(&k.into())
        .encrypt(Nonce::from_slice(&nonce), der.as_bytes())
        .expect("secretbox seals any length");
    let env = Envelope {
        kdf: Kdf {
            name: "scrypt".into(),
            params,
            salt: STANDARD.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: STANDARD.encode(nonce),
        },
        ciphertext: STANDARD.encode(sealed),
    };
    pem(
        PRIVATE_PEM,
        &serde_json::to_vec(&env).expect("the envelope serialises"),
    )
}

/// Opens an encrypted private key PEM (`what` names it in errors).
pub fn decrypt(text: &str, passphrase: &[u8], what: &str) -> Result<SigningKey, KeyError> {
    let (label, body) = unpem(text, what)?;
    if label != PRIVATE_PEM && label != PRIVATE_PEM_OLD {
        return Err(KeyError::Label {
            what: what.to_string(),
            label,
            expected: PRIVATE_PEM,
        });
    }
    let format = |reason: String| KeyError::Format {
        what: what.to_string(),
        reason,
    };
    let env: Envelope =
        serde_json::from_slice(&body).map_err(|e| format(format!("unreadable envelope: {e}")))?;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        return Err(format(format!(
            "kdf `{}` and cipher `{}`; expected scrypt and nacl/secretbox",
            env.kdf.name, env.cipher.name
        )));
    }
    let b64 = |s: &str, field: &str| {
        STANDARD
            .decode(s)
            .map_err(|e| format(format!("{field}: {e}")))
    };
    let salt = b64(&env.kdf.salt, "salt")?;
    let nonce = b64(&env.cipher.nonce, "nonce")?;
    let sealed = b64(&env.ciphertext, "ciphertext")?;
    if nonce.len() != 24 {
        return Err(format(format!("a {}-byte nonce; expected 24", nonce.len())));
    }
    let k = scrypt_key(passphrase, &salt, &env.kdf.params, what)?;
    let der = XSalsa20Poly1305::new(&k.into())
        .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
        .map_err(|_| KeyError::Passphrase {
            what: what.to_string(),
        })?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Unsupported {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("a P-256 key encodes as PKIX")
}

/// Reads a `PUBLIC KEY` PEM.
pub fn read_public(text: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    let (label, der) = unpem(text, what)?;
    if label != "PUBLIC KEY" {
        return Err(KeyError::Label {
            what: what.to_string(),
            label,
            expected: "PUBLIC KEY",
        });
    }
    VerifyingKey::from_public_key_der(&der).map_err(|e| KeyError::Unsupported {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_opens_with_its_passphrase_only() {
        let (private, public) = generate(b"correct horse");
        assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(!private.contains("correct horse"));
        let key = decrypt(&private, b"correct horse", "k").unwrap();
        assert_eq!(read_public(&public, "p").unwrap(), *key.verifying_key());
        let wrong = decrypt(&private, b"hunter2", "k").unwrap_err();
        assert!(matches!(wrong, KeyError::Passphrase { .. }), "{wrong}");
        assert!(!wrong.to_string().contains("hunter2"));
        let label = read_public(&private, "p").unwrap_err();
        assert!(matches!(label, KeyError::Label { .. }), "{label}");
    }
}
