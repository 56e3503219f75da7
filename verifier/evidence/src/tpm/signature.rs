//! TPMT_SIGNATURE (TPM 2.0 Part 2, §11.3.4) for RSASSA, RSAPSS and ECDSA.

use crate::digest::HashAlgorithm;
use crate::reader::{ReadError, Reader};

use super::{MAX_ECC_COORDINATE, MAX_RSA_BYTES};

/// A signature scheme as the TPM names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    RsaSsa,
    RsaPss,
    EcDsa,
}

impl SignatureScheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaSsa => "rsassa",
            Self::RsaPss => "rsapss",
            Self::EcDsa => "ecdsa",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "rsassa" => Some(Self::RsaSsa),
            "rsapss" => Some(Self::RsaPss),
            "ecdsa" => Some(Self::EcDsa),
            _ => None,
        }
    }
}

impl std::fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Rsa {
        scheme: SignatureScheme,
        hash: HashAlgorithm,
        signature: Vec<u8>,
    },
    Ecc {
        hash: HashAlgorithm,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

impl Signature {
    pub fn parse(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let alg = r.u16_be("sigAlg")?;
        let hash_id = r.u16_be("signature.hash")?;
        let hash = HashAlgorithm::from_tpm_alg_id(hash_id).ok_or_else(|| {
            r.invalid(
                "signature.hash",
                format!("unsupported hash 0x{hash_id:04x}"),
            )
        })?;
        let signature = match alg {
            0x0014 | 0x0016 => Self::Rsa {
                scheme: if alg == 0x0014 {
                    SignatureScheme::RsaSsa
                } else {
                    SignatureScheme::RsaPss
                },
                hash,
                signature: r.tpm2b("signature.rsa", MAX_RSA_BYTES)?.to_vec(),
            },
            0x0018 => Self::Ecc {
                hash,
                r: r.tpm2b("signature.ecdsa.r", MAX_ECC_COORDINATE)?.to_vec(),
                s: r.tpm2b("signature.ecdsa.s", MAX_ECC_COORDINATE)?.to_vec(),
            },
            other => {
                return Err(r.invalid(
                    "sigAlg",
                    format!("unsupported signature algorithm 0x{other:04x}"),
                ));
            }
        };
        r.finish()?;
        Ok(signature)
    }

    pub fn scheme(&self) -> SignatureScheme {
        match self {
            Self::Rsa { scheme, .. } => *scheme,
            Self::Ecc { .. } => SignatureScheme::EcDsa,
        }
    }

    pub fn hash(&self) -> HashAlgorithm {
        match self {
            Self::Rsa { hash, .. } | Self::Ecc { hash, .. } => *hash,
        }
    }
}
