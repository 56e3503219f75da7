//! Signed documents: trust lists, reference manifests and policies travel as JWS compact serialisation
//! (RFC 7515), ES256 over a JSON payload, with `typ` naming the document kind and `kid` the
//! signing key's id.
//!
//! Assembled here with aws-lc-rs, like the EAR results (`crate::results`): the format is three
//! base64url parts and one ECDSA signature, and a JWT library would add claim semantics (expiry,
//! audience) that these documents do not have. An independent library checks the format in tests.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use base64::Engine as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::audit::SigningKey;

/// Largest signed document accepted (a trust list with hundreds of maker CAs is ~1 MiB).
pub const MAX_DOCUMENT_SIZE: usize = 4 * 1024 * 1024;

/// The JWS `typ` of a trust list.
pub const TRUST_LIST_TYPE: &str = "trustchain-trust-list+jws";
/// The JWS `typ` of a reference manifest.
pub const MANIFEST_TYPE: &str = "trustchain-manifest+jws";
/// The JWS `typ` of a policy (see `super::signed_policy`).
pub const POLICY_TYPE: &str = "trustchain-policy+jws";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignedError {
    #[error("document larger than {MAX_DOCUMENT_SIZE} bytes")]
    TooLarge,
    #[error("not a JWS compact document (three base64url parts)")]
    Malformed,
    #[error("header: {0}")]
    Header(String),
    #[error("document type is {found:?}, expected {expected:?}")]
    WrongType { found: String, expected: String },
    #[error("algorithm {0:?} is not ES256")]
    Algorithm(String),
    #[error("signature does not verify with key {kid}")]
    BadSignature { kid: String },
    #[error("payload: {0}")]
    Payload(String),
    #[error("signing: {0}")]
    Signing(String),
    #[error("public key is not an uncompressed P-256 point in hex")]
    PublicKey,
}

/// The protected header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    pub typ: String,
    /// Id of the signing key: [`key_id`] of its public key.
    pub kid: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, SignedError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SignedError::Malformed)
}

/// A P-256 public key (uncompressed SEC1 point) parsed from hex.
pub fn public_key_from_hex(hex_text: &str) -> Result<Vec<u8>, SignedError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|_| SignedError::PublicKey)?;
    if bytes.len() != 65 || bytes.first() != Some(&4) {
        return Err(SignedError::PublicKey);
    }
    Ok(bytes)
}

/// A key's id: the first 16 bytes of SHA-256 over the uncompressed point, hex.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(digest.get(..16).unwrap_or_default())
}

/// Signs `payload` as a JWS of type `typ`.
pub fn sign<T: Serialize>(payload: &T, typ: &str, key: &SigningKey) -> Result<String, SignedError> {
    let public = hex::decode(key.public_hex()).map_err(|e| SignedError::Signing(e.to_string()))?;
    let header = Header {
        alg: "ES256".into(),
        typ: typ.into(),
        kid: key_id(&public),
    };
    let header = serde_json::to_vec(&header).map_err(|e| SignedError::Signing(e.to_string()))?;
    let body = serde_json::to_vec(payload).map_err(|e| SignedError::Signing(e.to_string()))?;
    let input = format!("{}.{}", b64(&header), b64(&body));
    let signature = key
        .sign_fixed(input.as_bytes())
        .map_err(|e| SignedError::Signing(e.to_string()))?;
    Ok(format!("{input}.{}", b64(&signature)))
}

/// A document split into its parts, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Header,
    pub payload: Vec<u8>,
    signing_input: String,
    signature: Vec<u8>,
}

/// Splits a JWS and decodes its header; checks nothing cryptographic (for `inspect`, and to pick
/// the key by `kid`).
pub fn open(document: &str) -> Result<Unverified, SignedError> {
    let document = document.trim();
    if document.len() > MAX_DOCUMENT_SIZE {
        return Err(SignedError::TooLarge);
    }
    let mut parts = document.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignedError::Malformed);
    };
    let header: Header = serde_json::from_slice(&unb64(header_b64)?)
        .map_err(|e| SignedError::Header(e.to_string()))?;
    if header.alg != "ES256" {
        return Err(SignedError::Algorithm(header.alg));
    }
    Ok(Unverified {
        header,
        payload: unb64(payload_b64)?,
        signing_input: format!("{header_b64}.{payload_b64}"),
        signature: unb64(signature_b64)?,
    })
}

impl Unverified {
    /// The payload, decoded without any signature check: only for showing a document.
    pub fn payload_unchecked<T: DeserializeOwned>(&self) -> Result<T, SignedError> {
        serde_json::from_slice(&self.payload).map_err(|e| SignedError::Payload(e.to_string()))
    }

    /// Checks type and signature against `public_key` (uncompressed P-256 point), then decodes.
    pub fn verify<T: DeserializeOwned>(
        &self,
        typ: &str,
        public_key: &[u8],
    ) -> Result<T, SignedError> {
        if self.header.typ != typ {
            return Err(SignedError::WrongType {
                found: self.header.typ.clone(),
                expected: typ.into(),
            });
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| SignedError::BadSignature {
                kid: key_id(public_key),
            })?;
        self.payload_unchecked()
    }
}

/// Opens and verifies in one step.
pub fn verify<T: DeserializeOwned>(
    document: &str,
    typ: &str,
    public_key: &[u8],
) -> Result<T, SignedError> {
    open(document)?.verify(typ, public_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let key = SigningKey::generate().unwrap();
        let public = hex::decode(key.public_hex()).unwrap();
        let doc = sign(&serde_json::json!({"a": 1}), MANIFEST_TYPE, &key).unwrap();
        let value: serde_json::Value = verify(&doc, MANIFEST_TYPE, &public).unwrap();
        assert_eq!(value["a"], 1);
        assert!(matches!(
            verify::<serde_json::Value>(&doc, TRUST_LIST_TYPE, &public),
            Err(SignedError::WrongType { .. })
        ));
        // Change the payload, keep the signature.
        let mut parts: Vec<&str> = doc.split('.').collect();
        let other = b64(br#"{"a":2}"#);
        parts[1] = &other;
        let forged = parts.join(".");
        assert!(matches!(
            verify::<serde_json::Value>(&forged, MANIFEST_TYPE, &public),
            Err(SignedError::BadSignature { .. })
        ));
        let stranger = SigningKey::generate().unwrap();
        let stranger = hex::decode(stranger.public_hex()).unwrap();
        assert!(verify::<serde_json::Value>(&doc, MANIFEST_TYPE, &stranger).is_err());
        assert_eq!(open("a.b").unwrap_err(), SignedError::Malformed);
    }
}
