//! EK and AK checks on the TPM's own TPMT_PUBLIC structures.

use crate::storage::EkKind;

/// The EK's public key material, for comparison with its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkMaterial {
    pub kind: EkKind,
    /// RSA modulus (no leading zeros) or uncompressed EC point.
    pub material: Vec<u8>,
}

/// A checked attestation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkInfo {
    /// nameAlg || H(TPMT_PUBLIC): what MakeCredential binds to and quotes name as signer.
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

pub fn ek_key_material(_ek_public: &[u8]) -> Result<EkMaterial, KeyError> {
    Err(KeyError::Unsupported(
        "pending the TPM structure parser".into(),
    ))
}

pub fn attestation_key(_ak_public: &[u8]) -> Result<AkInfo, KeyError> {
    Err(KeyError::Unsupported(
        "pending the TPM structure parser".into(),
    ))
}
