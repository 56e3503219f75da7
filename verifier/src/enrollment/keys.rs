//! EK and AK checks on the TPM's own TPMT_PUBLIC structures.

use super::ek_template::{TemplateError, canonical_ek};
use crate::device::EkKind;
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::tpm::{
    ENDORSEMENT_HIERARCHY, EccCurve, KeyParameters, ObjectAttributes, Public, PublicKey,
    hierarchy_qualified_name,
};

/// The EK's public key material, for comparison with its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkMaterial {
    pub kind: EkKind,
    /// RSA modulus (no leading zeros) or uncompressed EC point.
    pub material: Vec<u8>,
    /// The EK's one canonical encoding (bare TPMT_PUBLIC of the default template): every
    /// identity derived from the EK is derived from these bytes.
    pub canonical: Vec<u8>,
}

/// A checked attestation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkInfo {
    /// nameAlg || H(TPMT_PUBLIC): what MakeCredential binds the credential to.
    pub name: Vec<u8>,
    /// SubjectPublicKeyInfo DER, for the AK certificate.
    pub spki_der: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a valid TPMT_PUBLIC: {0}")]
    Malformed(String),
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("attribute {0} must be set")]
    MissingAttribute(&'static str),
    #[error("attribute {0} must not be set")]
    ForbiddenAttribute(&'static str),
}

/// Checks that the EK is exactly one of the TCG default low-range templates (RSA-2048 L-1 or
/// ECC P-256 L-2; see [`super::ek_template`]), which is what software MakeCredential supports,
/// and returns its key material and canonical encoding.
pub fn ek_key_material(ek_public: &[u8]) -> Result<EkMaterial, KeyError> {
    let ek = canonical_ek(ek_public).map_err(|e| match e {
        TemplateError::Malformed(detail) => KeyError::Malformed(detail),
        other => KeyError::Unsupported(other.to_string()),
    })?;
    Ok(EkMaterial {
        kind: ek.kind,
        material: ek.public.key_material(),
        canonical: ek.bytes,
    })
}

/// Checks the AK is a restricted signing key that cannot leave its TPM, with RSA >= 2048 or a
/// NIST P-256/P-384 curve. Returns its Name and SPKI.
pub fn attestation_key(ak_public: &[u8]) -> Result<AkInfo, KeyError> {
    let ak = Public::parse(ak_public).map_err(|e| KeyError::Malformed(e.to_string()))?;
    for flag in [
        ObjectAttributes::FIXED_TPM,
        ObjectAttributes::FIXED_PARENT,
        ObjectAttributes::SENSITIVE_DATA_ORIGIN,
        ObjectAttributes::RESTRICTED,
        ObjectAttributes::SIGN_ENCRYPT,
    ] {
        if !ak.attributes.has(flag) {
            return Err(KeyError::MissingAttribute(ObjectAttributes::flag_name(
                flag,
            )));
        }
    }
    if ak.attributes.has(ObjectAttributes::DECRYPT) {
        return Err(KeyError::ForbiddenAttribute("decrypt"));
    }
    if ak.name_alg == HashAlgorithm::Sha1 {
        return Err(KeyError::Unsupported("AK nameAlg sha1".into()));
    }
    check_ak_scheme(&ak)?;
    match &ak.key {
        PublicKey::Rsa { modulus, .. } if modulus.len() >= 256 => {}
        PublicKey::Ecc {
            curve: EccCurve::NistP256 | EccCurve::NistP384,
            ..
        } => {}
        _ => {
            return Err(KeyError::Unsupported(
                "AK must be RSA >= 2048 or ECC P-256/P-384".into(),
            ));
        }
    }
    let spki_der = ak
        .spki_der()
        .ok_or_else(|| KeyError::Unsupported("AK curve".into()))?;
    Ok(AkInfo {
        name: ak.name(),
        spki_der,
    })
}

/// TPM_ALG_SHA1.
const ALG_SHA1: u16 = 0x0004;

/// The AK's own signing scheme, when it fixes one, must be RSASSA, RSAPSS or ECDSA with a hash
/// other than SHA-1 (a restricted key signs only with its own scheme, so a SHA-1 scheme would
/// pin every quote to SHA-1). A key with no scheme (TPM_ALG_NULL) is signed with SHA-256,
/// which the verifier pins (`attestation::session::verifying_key`).
fn check_ak_scheme(ak: &Public) -> Result<(), KeyError> {
    let scheme = match &ak.parameters {
        KeyParameters::Rsa { scheme, .. } | KeyParameters::Ecc { scheme, .. } => *scheme,
    };
    match scheme {
        None => Ok(()),
        Some((_, Some(ALG_SHA1))) => Err(KeyError::Unsupported(
            "AK signing scheme with SHA-1 (quotes would be signed over SHA-1)".into(),
        )),
        Some((0x0014 | 0x0016, Some(_))) if matches!(ak.key, PublicKey::Rsa { .. }) => Ok(()),
        Some((0x0018, Some(_))) if matches!(ak.key, PublicKey::Ecc { .. }) => Ok(()),
        Some((other, _)) => Err(KeyError::Unsupported(format!(
            "AK signing scheme 0x{other:04x} (RSASSA, RSAPSS or ECDSA only)"
        ))),
    }
}

/// The Qualified Name an AK created under the EK carries in its quotes' qualifiedSigner:
/// QN(AK) = H(QN(EK) || Name(AK)), QN(EK) = H(TPM_RH_ENDORSEMENT || Name(EK)).
pub fn ak_qualified_name(ek_public: &[u8], ak_public: &[u8]) -> Result<Vec<u8>, KeyError> {
    let ek = Public::parse(ek_public).map_err(|e| KeyError::Malformed(e.to_string()))?;
    let ak = Public::parse(ak_public).map_err(|e| KeyError::Malformed(e.to_string()))?;
    let ek_qn = ek.qualified_name(&hierarchy_qualified_name(ENDORSEMENT_HIERARCHY));
    Ok(ak.qualified_name(&ek_qn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gce_ak() -> Vec<u8> {
        let path = format!(
            "{}/../../shared/testdata/quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("testdata {path} missing: {e}"))
    }

    fn with_attributes(bytes: &[u8], attributes: u32) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[4..8].copy_from_slice(&attributes.to_be_bytes());
        out
    }

    #[test]
    fn real_ak_is_accepted_and_bad_attributes_refused() {
        let ak = gce_ak();
        let info = attestation_key(&ak).unwrap();
        assert_eq!(info.name.len(), 34);
        let attributes = u32::from_be_bytes(ak[4..8].try_into().unwrap());
        let decrypt = with_attributes(&ak, attributes | ObjectAttributes::DECRYPT);
        assert_eq!(
            attestation_key(&decrypt),
            Err(KeyError::ForbiddenAttribute("decrypt"))
        );
        let unrestricted = with_attributes(&ak, attributes & !ObjectAttributes::RESTRICTED);
        assert_eq!(
            attestation_key(&unrestricted),
            Err(KeyError::MissingAttribute("restricted"))
        );
        let movable = with_attributes(&ak, attributes & !ObjectAttributes::FIXED_TPM);
        assert_eq!(
            attestation_key(&movable),
            Err(KeyError::MissingAttribute("fixedTPM"))
        );
        // A signing key is no EK.
        assert!(ek_key_material(&ak).is_err());
    }

    /// The GCE AK with its scheme field (bytes 16..20 of an RSA TPMT_PUBLIC with an empty
    /// authPolicy: type, nameAlg, attributes, policy size, symmetric NULL) replaced.
    fn with_scheme(scheme: u16, hash: u16) -> Vec<u8> {
        let ak = gce_ak();
        assert_eq!(
            &ak[8..12],
            &[0, 0, 0, 0x10],
            "empty authPolicy, symmetric NULL"
        );
        let mut out = ak[..12].to_vec();
        out.extend_from_slice(&scheme.to_be_bytes());
        out.extend_from_slice(&hash.to_be_bytes());
        // Skip the original scheme (NULL: 2 bytes, or a scheme with its hash: 4).
        let original = u16::from_be_bytes([ak[12], ak[13]]);
        let rest = if original == 0x0010 { 14 } else { 16 };
        out.extend_from_slice(&ak[rest..]);
        out
    }

    #[test]
    fn an_ak_with_a_sha1_signing_scheme_is_refused() {
        for scheme in [0x0014u16, 0x0016] {
            let sha1 = with_scheme(scheme, 0x0004);
            assert!(
                matches!(attestation_key(&sha1), Err(KeyError::Unsupported(ref why)) if why.contains("SHA-1")),
                "scheme 0x{scheme:04x} with SHA-1"
            );
            assert!(attestation_key(&with_scheme(scheme, 0x000b)).is_ok());
        }
        // ECDSA on an RSA key, or a decryption scheme, is no AK scheme either.
        assert!(attestation_key(&with_scheme(0x0018, 0x000b)).is_err());
        assert!(attestation_key(&with_scheme(0x0017, 0x000b)).is_err());
    }

    #[test]
    fn quote_verification_never_accepts_sha1() {
        use crate::evidence::quote::{QuoteError, VerifyingKey};
        use crate::evidence::tpm::SignatureScheme;
        let ak = Public::parse(&gce_ak()).unwrap();
        for scheme in [SignatureScheme::RsaSsa, SignatureScheme::RsaPss] {
            assert_eq!(
                VerifyingKey::new(ak.clone(), scheme, HashAlgorithm::Sha1).err(),
                Some(QuoteError::Sha1Signature)
            );
        }
        assert!(VerifyingKey::new(ak, SignatureScheme::RsaSsa, HashAlgorithm::Sha256).is_ok());
    }
}
