//! EK certificate chains: is this TPM made by a maker we trust?
//!
//! Parsing is tolerant (x509-parser accepts the odd encodings real TPM makers ship, and unknown
//! extensions such as the TPM manufacturer SAN); the chain check is strict: every link's signature
//! verifies, every issuer is a CA allowed to sign certificates, every certificate is within its
//! validity period, and the path ends at a configured trust anchor within a bounded depth.

use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::credential::EkKey;
use crate::device::EkKind;

/// Longest chain accepted: leaf, up to three intermediates, root.
const MAX_DEPTH: usize = 5;
/// Largest certificate accepted (real EK certificates are 1-2 KiB).
pub const MAX_CERTIFICATE_SIZE: usize = 16 * 1024;
/// Most intermediates a device may supply.
pub const MAX_SUPPLIED_INTERMEDIATES: usize = 4;

/// The TPM-maker CAs this verifier trusts, as DER certificates.
#[derive(Debug, Clone, Default)]
pub struct MakerAnchors {
    /// Trust anchors: a chain ending at one of these is trusted.
    pub anchors: Vec<Vec<u8>>,
    /// Known intermediates, used to build paths but not trusted on their own.
    pub intermediates: Vec<Vec<u8>>,
}

/// Why a chain was refused. Logged at the verifier; never sent to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("EK certificate is not valid DER X.509: {0}")]
    Malformed(String),
    #[error(
        "EK certificate or a supplied intermediate is larger than {MAX_CERTIFICATE_SIZE} bytes"
    )]
    TooLarge,
    #[error("too many intermediates supplied")]
    TooManyIntermediates,
    #[error("EK key is neither RSA-2048 nor ECC NIST P-256")]
    UnsupportedKey,
    #[error("{subject}: outside its validity period")]
    Expired { subject: String },
    #[error("no trusted TPM-maker CA issued this EK certificate (issuer: {issuer})")]
    UntrustedIssuer { issuer: String },
    #[error("{subject}: issuer is not a CA allowed to sign certificates")]
    IssuerNotCa { subject: String },
}

/// What a validated EK certificate tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedEk {
    pub key: EkKey,
    pub kind: EkKind,
    /// RSA modulus (no leading zero) or the uncompressed EC point, for comparison with the TPM's
    /// TPMT_PUBLIC.
    pub public_material: Vec<u8>,
    pub serial_hex: String,
    pub issuer: String,
    /// Subject of the anchor the chain ended at.
    pub anchor: String,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ChainError> {
    if der.len() > MAX_CERTIFICATE_SIZE {
        return Err(ChainError::TooLarge);
    }
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| ChainError::Malformed(e.to_string()))
}

fn check_validity(cert: &X509Certificate<'_>, now: ASN1Time) -> Result<(), ChainError> {
    if cert.validity().is_valid_at(now) {
        Ok(())
    } else {
        Err(ChainError::Expired {
            subject: cert.subject().to_string(),
        })
    }
}

fn may_sign_certificates(issuer: &X509Certificate<'_>) -> bool {
    let is_ca = matches!(issuer.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let key_usage_ok = match issuer.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    is_ca && key_usage_ok
}

fn signed_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer() == issuer.subject() && child.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Extracts the EK's key from the leaf certificate.
fn leaf_key(leaf: &X509Certificate<'_>) -> Result<(EkKey, EkKind, Vec<u8>), ChainError> {
    let spki = leaf.public_key();
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let modulus: Vec<u8> = rsa
                    .modulus
                    .iter()
                    .copied()
                    .skip_while(|b| *b == 0)
                    .collect();
                if modulus.len() != 256 {
                    return Err(ChainError::UnsupportedKey);
                }
                Ok((
                    EkKey::Rsa {
                        spki_der: spki.raw.to_vec(),
                    },
                    EkKind::Rsa2048,
                    modulus,
                ))
            }
            _ => Err(ChainError::UnsupportedKey),
        }
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve.as_ref() != Some(&OID_EC_P256) {
            return Err(ChainError::UnsupportedKey);
        }
        let point = spki.subject_public_key.data.to_vec();
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(ChainError::UnsupportedKey);
        }
        Ok((
            EkKey::EccP256 {
                point: point.clone(),
            },
            EkKind::EccP256,
            point,
        ))
    } else {
        Err(ChainError::UnsupportedKey)
    }
}

/// Validates `ek_der` (with device-supplied `supplied` intermediates) against `anchors`.
pub fn validate(
    ek_der: &[u8],
    supplied: &[Vec<u8>],
    anchors: &MakerAnchors,
) -> Result<ValidatedEk, ChainError> {
    if supplied.len() > MAX_SUPPLIED_INTERMEDIATES {
        return Err(ChainError::TooManyIntermediates);
    }
    let now = ASN1Time::now();
    let leaf = parse(ek_der)?;
    let (key, kind, public_material) = leaf_key(&leaf)?;
    check_validity(&leaf, now)?;

    let roots: Vec<X509Certificate<'_>> = anchors
        .anchors
        .iter()
        .filter_map(|der| parse(der).ok())
        .collect();
    let mut pool: Vec<X509Certificate<'_>> = Vec::new();
    for der in supplied {
        pool.push(parse(der)?);
    }
    pool.extend(
        anchors
            .intermediates
            .iter()
            .filter_map(|der| parse(der).ok()),
    );

    // Walk up from the leaf. At each step prefer a trust anchor; otherwise take an intermediate
    // that signed the current certificate. Bounded by MAX_DEPTH, so a loop in the pool ends.
    let mut current = leaf.clone();
    for _ in 0..MAX_DEPTH {
        if let Some(root) = roots.iter().find(|root| signed_by(&current, root)) {
            if !may_sign_certificates(root) {
                return Err(ChainError::IssuerNotCa {
                    subject: current.subject().to_string(),
                });
            }
            check_validity(root, now)?;
            return Ok(ValidatedEk {
                key,
                kind,
                public_material,
                serial_hex: hex::encode(leaf.raw_serial()),
                issuer: leaf.issuer().to_string(),
                anchor: root.subject().to_string(),
            });
        }
        let Some(next) = pool.iter().find(|candidate| signed_by(&current, candidate)) else {
            break;
        };
        if !may_sign_certificates(next) {
            return Err(ChainError::IssuerNotCa {
                subject: current.subject().to_string(),
            });
        }
        check_validity(next, now)?;
        current = next.clone();
    }
    Err(ChainError::UntrustedIssuer {
        issuer: leaf.issuer().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256,
    };

    struct Ca {
        der: Vec<u8>,
        params: CertificateParams,
        key: KeyPair,
    }

    fn ca(name: &str, parent: Option<&Ca>, is_ca: bool) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        }
        let cert = match parent {
            None => params.self_signed(&key).unwrap(),
            Some(p) => params
                .signed_by(&key, &Issuer::from_params(&p.params, &p.key))
                .unwrap(),
        };
        Ca {
            der: cert.der().to_vec(),
            params,
            key,
        }
    }

    #[test]
    fn chain_through_intermediate_to_anchor() {
        let root = ca("Maker Root", None, true);
        let intermediate = ca("Maker Intermediate", Some(&root), true);
        let ek = ca("EK", Some(&intermediate), false);
        let anchors = MakerAnchors {
            anchors: vec![root.der.clone()],
            intermediates: vec![],
        };

        let ok = validate(&ek.der, std::slice::from_ref(&intermediate.der), &anchors).unwrap();
        assert_eq!(ok.kind, EkKind::EccP256);
        assert!(ok.anchor.contains("Maker Root"));
        // Known intermediates may also come from the verifier's own configuration.
        let configured = MakerAnchors {
            anchors: vec![root.der.clone()],
            intermediates: vec![intermediate.der.clone()],
        };
        assert!(validate(&ek.der, &[], &configured).is_ok());

        assert!(matches!(
            validate(&ek.der, &[], &anchors),
            Err(ChainError::UntrustedIssuer { .. })
        ));
        let rogue = ca("Rogue Root", None, true);
        let rogue_anchors = MakerAnchors {
            anchors: vec![rogue.der],
            intermediates: vec![],
        };
        assert!(matches!(
            validate(
                &ek.der,
                std::slice::from_ref(&intermediate.der),
                &rogue_anchors
            ),
            Err(ChainError::UntrustedIssuer { .. })
        ));
    }

    #[test]
    fn non_ca_issuer_and_garbage_are_refused() {
        let root = ca("Root", None, true);
        let not_ca = ca("Leafy", Some(&root), false);
        let ek = ca("EK", Some(&not_ca), false);
        let anchors = MakerAnchors {
            anchors: vec![root.der.clone()],
            intermediates: vec![],
        };
        assert!(matches!(
            validate(&ek.der, std::slice::from_ref(&not_ca.der), &anchors),
            Err(ChainError::IssuerNotCa { .. })
        ));
        assert!(matches!(
            validate(b"\x30\x03junk", &[], &anchors),
            Err(ChainError::Malformed(_))
        ));
        assert!(matches!(
            validate(&vec![0x30; MAX_CERTIFICATE_SIZE + 1], &[], &anchors),
            Err(ChainError::TooLarge)
        ));
    }
}
