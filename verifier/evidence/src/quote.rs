//! Quote verification: is this TPMS_ATTEST signed by this AK, for this nonce, over these PCRs?
//!
//! The caller pins the AK and its signature scheme and hash ([`VerifyingKey`]); the signature is
//! checked before any signed field is interpreted, and each way a quote can fail is its own
//! [`QuoteError`] variant, so the appraisal can name the rule that failed.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use subtle::ConstantTimeEq;

use crate::digest::HashAlgorithm;
use crate::reader::ReadError;
use crate::tpm::{
    Attest, AttestType, EccCurve, Public, PublicKey, Signature, SignatureScheme, TPM_GENERATED,
};

/// Why a quote failed. The `Display` text never includes an expected secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    #[error("malformed {what}: {source}")]
    Malformed {
        what: &'static str,
        source: ReadError,
    },
    #[error("the AK's key type, size or curve is not supported for quotes")]
    UnsupportedKey,
    #[error("SHA-1 signatures are never accepted (SHA-1 collisions are practical)")]
    Sha1Signature,
    #[error(
        "signature uses {found_scheme}/{found_hash}, but {pinned_scheme}/{pinned_hash} is pinned"
    )]
    SchemeMismatch {
        found_scheme: SignatureScheme,
        found_hash: HashAlgorithm,
        pinned_scheme: SignatureScheme,
        pinned_hash: HashAlgorithm,
    },
    #[error("signature does not verify with the AK")]
    BadSignature,
    #[error("magic is 0x{0:08x}, not TPM_GENERATED")]
    BadMagic(u32),
    #[error("attestation type is {0:?}, not a quote")]
    WrongType(AttestType),
    #[error("qualifiedSigner is not the AK's qualified name")]
    SignerMismatch,
    #[error("extraData is not the expected nonce")]
    NonceMismatch,
    #[error("no value supplied for signed PCR {bank}:{pcr}")]
    PcrValueMissing { bank: HashAlgorithm, pcr: u32 },
    #[error("value supplied for PCR {bank}:{pcr}, which the quote does not cover")]
    PcrValueExtra { bank: HashAlgorithm, pcr: u32 },
    #[error("PCR {bank}:{pcr} value has {size} bytes, the bank's digests have {expected}")]
    PcrValueSize {
        bank: HashAlgorithm,
        pcr: u32,
        size: usize,
        expected: usize,
    },
    #[error("the supplied PCR values do not hash to the signed pcrDigest")]
    PcrDigestMismatch,
}

/// PCR values by (bank, index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrValues(pub BTreeMap<(HashAlgorithm, u32), Vec<u8>>);

impl PcrValues {
    pub fn insert(&mut self, bank: HashAlgorithm, pcr: u32, value: Vec<u8>) {
        self.0.insert((bank, pcr), value);
    }

    pub fn get(&self, bank: HashAlgorithm, pcr: u32) -> Option<&[u8]> {
        self.0.get(&(bank, pcr)).map(Vec::as_slice)
    }
}

/// An AK, pre-parsed for verification, with its signature scheme and hash pinned.
#[derive(Debug)]
pub struct VerifyingKey {
    public: Public,
    /// What qualifiedSigner must hold: the AK's Qualified Name (or its Name if the caller says so).
    signer: Vec<u8>,
    scheme: SignatureScheme,
    hash: HashAlgorithm,
    key: ParsedPublicKey,
    /// ECDSA coordinate size, for left-padding r and s.
    coordinate: usize,
}

fn algorithm(
    key: &PublicKey,
    scheme: SignatureScheme,
    hash: HashAlgorithm,
) -> Option<(&'static dyn VerificationAlgorithm, usize)> {
    use HashAlgorithm as H;
    use SignatureScheme as S;
    Some(match (key, scheme, hash) {
        (PublicKey::Rsa { .. }, S::RsaSsa, H::Sha256) => {
            (&signature::RSA_PKCS1_2048_8192_SHA256, 0)
        }
        (PublicKey::Rsa { .. }, S::RsaSsa, H::Sha384) => {
            (&signature::RSA_PKCS1_2048_8192_SHA384, 0)
        }
        (PublicKey::Rsa { .. }, S::RsaSsa, H::Sha512) => {
            (&signature::RSA_PKCS1_2048_8192_SHA512, 0)
        }
        (PublicKey::Rsa { .. }, S::RsaPss, H::Sha256) => (&signature::RSA_PSS_2048_8192_SHA256, 0),
        (PublicKey::Rsa { .. }, S::RsaPss, H::Sha384) => (&signature::RSA_PSS_2048_8192_SHA384, 0),
        (PublicKey::Rsa { .. }, S::RsaPss, H::Sha512) => (&signature::RSA_PSS_2048_8192_SHA512, 0),
        (
            PublicKey::Ecc {
                curve: EccCurve::NistP256,
                ..
            },
            S::EcDsa,
            H::Sha256,
        ) => (&signature::ECDSA_P256_SHA256_FIXED, 32),
        (
            PublicKey::Ecc {
                curve: EccCurve::NistP384,
                ..
            },
            S::EcDsa,
            H::Sha384,
        ) => (&signature::ECDSA_P384_SHA384_FIXED, 48),
        (
            PublicKey::Ecc {
                curve: EccCurve::NistP521,
                ..
            },
            S::EcDsa,
            H::Sha512,
        ) => (&signature::ECDSA_P521_SHA512_FIXED, 66),
        _ => return None,
    })
}

impl VerifyingKey {
    /// Pins `public` to `scheme` and `hash`. SHA-1 with any scheme, keys shorter than RSA-2048,
    /// other curves and other combinations are refused.
    pub fn new(
        public: Public,
        scheme: SignatureScheme,
        hash: HashAlgorithm,
    ) -> Result<Self, QuoteError> {
        if hash == HashAlgorithm::Sha1 {
            return Err(QuoteError::Sha1Signature);
        }
        let (alg, coordinate) =
            algorithm(&public.key, scheme, hash).ok_or(QuoteError::UnsupportedKey)?;
        let spki = public.spki_der().ok_or(QuoteError::UnsupportedKey)?;
        let key = ParsedPublicKey::new(alg, &spki).map_err(|_| QuoteError::UnsupportedKey)?;
        let signer = public.name();
        Ok(Self {
            public,
            signer,
            scheme,
            hash,
            key,
            coordinate,
        })
    }

    /// Parses a TPMT_PUBLIC (or TPM2B_PUBLIC) and pins it.
    pub fn from_public_bytes(
        bytes: &[u8],
        scheme: SignatureScheme,
        hash: HashAlgorithm,
    ) -> Result<Self, QuoteError> {
        let public = Public::parse(bytes).map_err(|source| QuoteError::Malformed {
            what: "AK public",
            source,
        })?;
        Self::new(public, scheme, hash)
    }

    /// The scheme a restricted signing key fixes in its own parameters, if any.
    pub fn key_scheme(public: &Public) -> Option<(SignatureScheme, HashAlgorithm)> {
        let scheme = match &public.parameters {
            crate::tpm::KeyParameters::Rsa { scheme, .. }
            | crate::tpm::KeyParameters::Ecc { scheme, .. } => (*scheme)?,
        };
        let hash = HashAlgorithm::from_tpm_alg_id(scheme.1?)?;
        let scheme = match scheme.0 {
            0x0014 => SignatureScheme::RsaSsa,
            0x0016 => SignatureScheme::RsaPss,
            0x0018 => SignatureScheme::EcDsa,
            _ => return None,
        };
        Some((scheme, hash))
    }

    pub fn public(&self) -> &Public {
        &self.public
    }

    /// Sets the expected qualifiedSigner, e.g. `public.qualified_name(&ek_qualified_name)` for
    /// an AK created under the EK. Without it, the bare Name is expected.
    pub fn with_signer(mut self, qualified_name: Vec<u8>) -> Self {
        self.signer = qualified_name;
        self
    }

    /// The expected qualifiedSigner.
    pub fn signer(&self) -> &[u8] {
        &self.signer
    }

    pub fn scheme(&self) -> (SignatureScheme, HashAlgorithm) {
        (self.scheme, self.hash)
    }

    /// Checks the signature over `message` (the TPMS_ATTEST bytes).
    pub fn verify_signature(
        &self,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), QuoteError> {
        if signature.scheme() != self.scheme || signature.hash() != self.hash {
            return Err(QuoteError::SchemeMismatch {
                found_scheme: signature.scheme(),
                found_hash: signature.hash(),
                pinned_scheme: self.scheme,
                pinned_hash: self.hash,
            });
        }
        let ok = match signature {
            Signature::Rsa { signature, .. } => self.key.verify_sig(message, signature).is_ok(),
            Signature::Ecc { r, s, .. } => {
                // r || s, each exactly the coordinate size: TPMs may drop leading zeros (and an
                // encoder may add one), so both are normalised before the fixed-size check.
                let mut fixed = Vec::with_capacity(2 * self.coordinate);
                for part in [r, s] {
                    let first = part.iter().position(|b| *b != 0).unwrap_or(part.len());
                    let digits = part.get(first..).unwrap_or_default();
                    if digits.len() > self.coordinate {
                        return Err(QuoteError::BadSignature);
                    }
                    fixed.resize(fixed.len() + self.coordinate - digits.len(), 0);
                    fixed.extend_from_slice(digits);
                }
                self.key.verify_sig(message, &fixed).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(QuoteError::BadSignature)
        }
    }
}

/// What the verifier expects of a quote.
#[derive(Debug, Clone, Copy)]
pub struct QuoteExpectations<'a> {
    pub key: &'a VerifyingKey,
    /// The outstanding nonce (extraData).
    pub nonce: &'a [u8],
    /// The PCR values the agent sent; they must cover exactly the signed selection.
    pub pcr_values: &'a PcrValues,
}

/// A quote that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub attest: Attest,
}

/// Parses the TPMT_SIGNATURE and TPMS_ATTEST without verifying anything (for display).
pub fn parse(attest: &[u8], signature: &[u8]) -> Result<(Attest, Signature), QuoteError> {
    let signature = Signature::parse(signature).map_err(|source| QuoteError::Malformed {
        what: "signature",
        source,
    })?;
    let attest = Attest::parse(attest).map_err(|source| QuoteError::Malformed {
        what: "quote",
        source,
    })?;
    Ok((attest, signature))
}

/// The signature alone: pinned scheme, then the AK's signature over `attest`.
pub fn check_signature(
    attest: &[u8],
    signature: &[u8],
    key: &VerifyingKey,
) -> Result<(), QuoteError> {
    let signature = Signature::parse(signature).map_err(|source| QuoteError::Malformed {
        what: "signature",
        source,
    })?;
    key.verify_signature(attest, &signature)
}

/// Verifies a quote against `expected`. Order: signature first (nothing unsigned is interpreted),
/// then magic, type, signer, nonce, PCR coverage and digest.
pub fn verify_quote(
    attest: &[u8],
    signature: &[u8],
    expected: &QuoteExpectations<'_>,
) -> Result<VerifiedQuote, QuoteError> {
    check_signature(attest, signature, expected.key)?;
    let parsed = Attest::parse(attest).map_err(|source| QuoteError::Malformed {
        what: "quote",
        source,
    })?;
    check_attest(&parsed, expected)?;
    Ok(VerifiedQuote { attest: parsed })
}

/// The checks on an already signature-verified TPMS_ATTEST.
pub fn check_attest(attest: &Attest, expected: &QuoteExpectations<'_>) -> Result<(), QuoteError> {
    if attest.magic != TPM_GENERATED {
        return Err(QuoteError::BadMagic(attest.magic));
    }
    let quote = match (&attest.attest_type, &attest.quote) {
        (AttestType::Quote, Some(quote)) => quote,
        (other, _) => return Err(QuoteError::WrongType(*other)),
    };
    if !bool::from(
        attest
            .qualified_signer
            .as_slice()
            .ct_eq(expected.key.signer()),
    ) {
        return Err(QuoteError::SignerMismatch);
    }
    if !bool::from(attest.extra_data.as_slice().ct_eq(expected.nonce)) {
        return Err(QuoteError::NonceMismatch);
    }
    check_pcr_digest(quote, expected.key.hash, expected.pcr_values)
}

/// PCR values must cover exactly the signed selection and hash (with the signing hash) to pcrDigest.
pub fn check_pcr_digest(
    quote: &crate::tpm::QuoteInfo,
    digest_alg: HashAlgorithm,
    values: &PcrValues,
) -> Result<(), QuoteError> {
    let mut concatenated = Vec::new();
    let mut covered = 0usize;
    for (bank, pcr) in quote.selection.iter() {
        let value = values
            .get(bank, pcr)
            .ok_or(QuoteError::PcrValueMissing { bank, pcr })?;
        if value.len() != bank.size() {
            return Err(QuoteError::PcrValueSize {
                bank,
                pcr,
                size: value.len(),
                expected: bank.size(),
            });
        }
        concatenated.extend_from_slice(value);
        covered += 1;
    }
    if covered != values.0.len() {
        let extra = values
            .0
            .keys()
            .find(|(bank, pcr)| !quote.selection.iter().any(|(b, p)| b == *bank && p == *pcr));
        if let Some((bank, pcr)) = extra {
            return Err(QuoteError::PcrValueExtra {
                bank: *bank,
                pcr: *pcr,
            });
        }
    }
    if digest_alg.hash(&concatenated) != quote.pcr_digest {
        return Err(QuoteError::PcrDigestMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpm::{PcrSelection, QuoteInfo};

    fn value(bank: HashAlgorithm, pcr: u32) -> Vec<u8> {
        bank.hash(&pcr.to_be_bytes())
    }

    /// A selection of SHA-256 PCRs 1, 3 then SHA-1 PCR 0: banks in selection order (not the
    /// map's order, where sha1 sorts first), indices ascending.
    fn quote_and_values() -> (QuoteInfo, PcrValues) {
        let selection = PcrSelection::new(vec![
            (HashAlgorithm::Sha256, vec![3, 1]),
            (HashAlgorithm::Sha1, vec![0]),
        ]);
        let mut values = PcrValues::default();
        let mut concatenated = Vec::new();
        for (bank, pcr) in [
            (HashAlgorithm::Sha256, 1),
            (HashAlgorithm::Sha256, 3),
            (HashAlgorithm::Sha1, 0),
        ] {
            concatenated.extend(value(bank, pcr));
            values.insert(bank, pcr, value(bank, pcr));
        }
        let quote = QuoteInfo {
            selection,
            pcr_digest: HashAlgorithm::Sha256.hash(&concatenated),
        };
        (quote, values)
    }

    #[test]
    fn pcr_digest_follows_selection_order() {
        let (quote, values) = quote_and_values();
        assert_eq!(
            check_pcr_digest(&quote, HashAlgorithm::Sha256, &values),
            Ok(())
        );
        // The digest is over the signing hash, not the bank's.
        assert_eq!(
            check_pcr_digest(&quote, HashAlgorithm::Sha384, &values),
            Err(QuoteError::PcrDigestMismatch)
        );
    }

    #[test]
    fn pcr_values_must_match_the_selection_exactly() {
        let (quote, values) = quote_and_values();
        let mut short = values.clone();
        short.0.remove(&(HashAlgorithm::Sha1, 0));
        assert_eq!(
            check_pcr_digest(&quote, HashAlgorithm::Sha256, &short),
            Err(QuoteError::PcrValueMissing {
                bank: HashAlgorithm::Sha1,
                pcr: 0
            })
        );
        let mut extra = values.clone();
        extra.insert(HashAlgorithm::Sha256, 2, value(HashAlgorithm::Sha256, 2));
        assert_eq!(
            check_pcr_digest(&quote, HashAlgorithm::Sha256, &extra),
            Err(QuoteError::PcrValueExtra {
                bank: HashAlgorithm::Sha256,
                pcr: 2
            })
        );
        let mut wrong_size = values;
        wrong_size.insert(HashAlgorithm::Sha1, 0, vec![0; 32]);
        assert_eq!(
            check_pcr_digest(&quote, HashAlgorithm::Sha256, &wrong_size),
            Err(QuoteError::PcrValueSize {
                bank: HashAlgorithm::Sha1,
                pcr: 0,
                size: 32,
                expected: 20
            })
        );
    }

    #[test]
    fn nonce_error_does_not_reveal_the_expected_value() {
        assert_eq!(
            QuoteError::NonceMismatch.to_string(),
            "extraData is not the expected nonce"
        );
    }
}
