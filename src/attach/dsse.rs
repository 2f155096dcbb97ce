//! DSSE envelopes (in-toto's signature wrapper): the payload in base64 and
//! an ECDSA P-256 signature over its pre-authentication encoding, as
//! `cosign attest` and `cosign verify-attestation` use.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};

pub const MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// `DSSEv1 LEN(type) type LEN(body) body`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn envelope(payload_type: &str, body: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig: Signature = key.sign(&pae(payload_type, body));
    let der: DerSignature = sig.to_der();
    let v = json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(body),
        "signatures": [{ "keyid": "", "sig": STANDARD.encode(der.as_bytes()) }],
    });
    crate::oci::image::canonical_json(&v)
}

/// The payload of an envelope one of whose signatures verifies with `key`.
pub fn open(envelope: &[u8], key: &VerifyingKey) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(envelope).ok()?;
    let t = v["payloadType"].as_str()?;
    let body = STANDARD.decode(v["payload"].as_str()?).ok()?;
    let msg = pae(t, &body);
    v["signatures"].as_array()?.iter().find_map(|s| {
        let der = STANDARD.decode(s["sig"].as_str()?).ok()?;
        let sig = Signature::from_der(&der).ok()?;
        key.verify(&msg, &sig).ok().map(|()| body.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_with_its_key_only() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let other = SigningKey::from_slice(&[4u8; 32]).unwrap();
        let e = envelope(IN_TOTO, b"{}", &key);
        assert_eq!(open(&e, key.verifying_key()).as_deref(), Some(&b"{}"[..]));
        assert_eq!(open(&e, other.verifying_key()), None);
    }
}
