//! The EK's one canonical encoding, and the whole TCG default EK template pinned.
//!
//! `Public::parse` reads a bare TPMT_PUBLIC and a size-prefixed TPM2B_PUBLIC alike, and a
//! TPMT_PUBLIC itself leaves room for the same key to be written more than one way (an RSA
//! exponent of 0 or 65537, a wider modulus buffer). Every identity the verifier derives from an EK
//! (the device id, the trust list's `ek_public_sha256`, the stored record) must come from one
//! encoding, or one TPM could enroll as two devices and walk away from its own decommissioning.
//!
//! The canonical form is the bare TPMT_PUBLIC of the TCG default low-range template (TCG EK
//! Credential Profile 2.x, templates L-1 and L-2) re-serialised from the parsed key: every field
//! but the key itself is a constant here, and the received structure must equal it byte for
//! byte. An honest agent sends exactly these bytes (tss-esapi's `create_ek_object_2` uses these
//! templates and `ReadPublic` returns them), so its device id does not change.

use crate::device::EkKind;
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::tpm::{EccCurve, Public, PublicKey};

/// TPMA_OBJECT of both templates: fixedTPM | fixedParent | sensitiveDataOrigin |
/// adminWithPolicy | restricted | decrypt (userWithAuth clear, so use needs the policy).
pub const EK_ATTRIBUTES: u32 = 0x0003_00b2;

/// The templates' authPolicy: PolicySecret(TPM_RH_ENDORSEMENT) under SHA-256 ("policy A").
pub const EK_AUTH_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_SHA256: u16 = 0x000b;
const TPM_ALG_NULL: u16 = 0x0010;
/// AES, 128 bits, CFB: the templates' symmetric definition.
const AES_128_CFB: [u16; 3] = [0x0006, 128, 0x0043];
const TPM_ECC_NIST_P256: u16 = 0x0003;
const RSA_2048_BYTES: usize = 256;
const P256_COORDINATE_BYTES: usize = 32;

/// An EK in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEk {
    pub kind: EkKind,
    /// The bare TPMT_PUBLIC of the default template holding this key: what the device id, the
    /// trust list's `ek_public_sha256` and the stored record are made of.
    pub bytes: Vec<u8>,
    pub public: Public,
}

/// Why an EK is not a TCG default EK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("not a valid TPMT_PUBLIC: {0}")]
    Malformed(String),
    #[error("not an RSA-2048 or ECC P-256 key")]
    Unsupported,
    #[error("not the TCG default EK template (field {0} differs)")]
    NotDefault(&'static str),
}

fn push_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn push_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by the parser's limits (256 bytes at most here).
    push_u16(out, u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(bytes);
}

/// The default template with `key` as its unique field: the canonical TPMT_PUBLIC.
pub fn template_with(key: &PublicKey) -> Result<(EkKind, Vec<u8>), TemplateError> {
    let mut out = Vec::with_capacity(350);
    let kind = match key {
        PublicKey::Rsa { modulus, .. } if modulus.len() == RSA_2048_BYTES => EkKind::Rsa2048,
        PublicKey::Ecc {
            curve: EccCurve::NistP256,
            x,
            y,
        } if x.len() == P256_COORDINATE_BYTES && y.len() == P256_COORDINATE_BYTES => {
            EkKind::EccP256
        }
        _ => return Err(TemplateError::Unsupported),
    };
    push_u16(
        &mut out,
        match kind {
            EkKind::Rsa2048 => TPM_ALG_RSA,
            EkKind::EccP256 => TPM_ALG_ECC,
        },
    );
    push_u16(&mut out, TPM_ALG_SHA256);
    out.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
    push_tpm2b(&mut out, &EK_AUTH_POLICY);
    for word in AES_128_CFB {
        push_u16(&mut out, word);
    }
    push_u16(&mut out, TPM_ALG_NULL); // scheme
    match key {
        PublicKey::Rsa { modulus, .. } => {
            push_u16(&mut out, 2048); // keyBits
            out.extend_from_slice(&0u32.to_be_bytes()); // exponent: 0 means 65537
            push_tpm2b(&mut out, modulus);
        }
        PublicKey::Ecc { x, y, .. } => {
            push_u16(&mut out, TPM_ECC_NIST_P256);
            push_u16(&mut out, TPM_ALG_NULL); // kdf
            push_tpm2b(&mut out, x);
            push_tpm2b(&mut out, y);
        }
    }
    Ok((kind, out))
}

/// The field of `public` that first departs from the default template, by its TPM name.
fn first_difference(public: &Public, template: &Public) -> &'static str {
    if public.name_alg != HashAlgorithm::Sha256 {
        "nameAlg"
    } else if public.attributes != template.attributes {
        "objectAttributes"
    } else if public.auth_policy != template.auth_policy {
        "authPolicy"
    } else if public.parameters != template.parameters {
        "parameters (symmetric, scheme, keyBits, exponent, curve or kdf)"
    } else {
        "unique"
    }
}

/// Parses an EK as received (bare or size-prefixed), checks that it is exactly the TCG default
/// template L-1 (RSA-2048) or L-2 (P-256) (type, nameAlg, every attribute, authPolicy,
/// symmetric, scheme, keyBits/curve, exponent/kdf and the unique field's size), and returns
/// its canonical encoding.
pub fn canonical_ek(received: &[u8]) -> Result<CanonicalEk, TemplateError> {
    let public = Public::parse(received).map_err(|e| TemplateError::Malformed(e.to_string()))?;
    let (kind, bytes) = template_with(&public.key)?;
    if public.raw != bytes {
        let template =
            Public::parse(&bytes).map_err(|e| TemplateError::Malformed(e.to_string()))?;
        return Err(TemplateError::NotDefault(first_difference(
            &public, &template,
        )));
    }
    Ok(CanonicalEk {
        kind,
        bytes,
        public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::tpm::ObjectAttributes;

    fn ecc_ek() -> Vec<u8> {
        let key = PublicKey::Ecc {
            curve: EccCurve::NistP256,
            x: vec![0x11; 32],
            y: vec![0x22; 32],
        };
        template_with(&key).unwrap().1
    }

    fn rsa_ek() -> Vec<u8> {
        let key = PublicKey::Rsa {
            modulus: vec![0xc5; 256],
            exponent: 65537,
        };
        template_with(&key).unwrap().1
    }

    #[test]
    fn both_encodings_of_one_ek_have_one_canonical_form() {
        for bare in [ecc_ek(), rsa_ek()] {
            let canonical = canonical_ek(&bare).unwrap();
            assert_eq!(
                canonical.bytes, bare,
                "the bare default template is canonical"
            );
            let mut prefixed = (bare.len() as u16).to_be_bytes().to_vec();
            prefixed.extend_from_slice(&bare);
            assert_eq!(canonical_ek(&prefixed).unwrap().bytes, bare);
        }
    }

    #[test]
    fn every_template_field_is_pinned() {
        let rsa = rsa_ek();
        // The exponent written out as 65537 is the same key, but not the template.
        let mut exponent = rsa.clone();
        let at = 2 + 2 + 4 + 2 + 32 + 6 + 2 + 2;
        exponent[at..at + 4].copy_from_slice(&65537u32.to_be_bytes());
        assert!(matches!(
            canonical_ek(&exponent),
            Err(TemplateError::NotDefault(_))
        ));
        // userWithAuth set: usable without the endorsement policy.
        let mut attributes = rsa.clone();
        attributes[4..8]
            .copy_from_slice(&(EK_ATTRIBUTES | ObjectAttributes::USER_WITH_AUTH).to_be_bytes());
        assert_eq!(
            canonical_ek(&attributes),
            Err(TemplateError::NotDefault("objectAttributes"))
        );
        // Another authPolicy.
        let mut policy = ecc_ek();
        policy[10] ^= 1;
        assert_eq!(
            canonical_ek(&policy),
            Err(TemplateError::NotDefault("authPolicy"))
        );
        // An empty authPolicy (what a hand-made key might carry).
        let mut empty = ecc_ek()[..8].to_vec();
        empty.extend_from_slice(&[0, 0]);
        empty.extend_from_slice(&ecc_ek()[42..]);
        assert_eq!(
            canonical_ek(&empty),
            Err(TemplateError::NotDefault("authPolicy"))
        );
        // A scheme (ECDH/SHA-256) where the template has none.
        let mut scheme = ecc_ek()[..48].to_vec();
        scheme.extend_from_slice(&[0x00, 0x19, 0x00, 0x0b]);
        scheme.extend_from_slice(&ecc_ek()[50..]);
        assert!(matches!(
            canonical_ek(&scheme),
            Err(TemplateError::NotDefault(_))
        ));
        // A short ECC coordinate (same point without its leading byte) is not the template.
        let mut short = ecc_ek()[..54].to_vec();
        short.extend_from_slice(&31u16.to_be_bytes());
        short.extend_from_slice(&[0x11; 31]);
        short.extend_from_slice(&ecc_ek()[88..]);
        assert_eq!(canonical_ek(&short), Err(TemplateError::Unsupported));
        // Garbage never panics.
        for len in 0..rsa.len() {
            assert!(canonical_ek(&rsa[..len]).is_err());
        }
    }
}
