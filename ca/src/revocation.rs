//! Revocation: the CRL the verifier's TLS layer consults, so a quarantined or decommissioned
//! device, or a revoked operator, cannot even complete a handshake.
//!
//! Device revocations follow the verifier's device states. Operator certificates are revoked
//! here, by `trustchain-ca revoke-operator`, into `revoked-operators.json` in the CA directory
//! (the directory the verifier issues from): the verifier puts them on its CRL and checks the
//! file again on every admin call, so a revoked operator's open connection is refused too.

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::role::{Role, peer_identity};
use crate::{Authority, CaError};

/// The operator certificates this CA has revoked (JSON, a list of [`RevokedEntry`]).
pub const REVOKED_OPERATORS: &str = "revoked-operators.json";

/// Most operator revocations the file may hold (a bound on what a start or an admin call reads).
const MAX_REVOKED_OPERATORS: usize = 100_000;

/// A serial as the CRL and the TLS layer compare it: lower-case hex, without the sign byte(s).
pub fn normalised_serial(serial_hex: &str) -> String {
    let lower = serial_hex.trim().to_ascii_lowercase();
    let mut digits = lower.as_str();
    while digits.len() > 2 && digits.starts_with("00") {
        digits = &digits[2..];
    }
    digits.to_string()
}

/// Why a certificate was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The device failed appraisal and its policy says quarantine.
    Quarantined,
    /// The device was taken out of service for good.
    Decommissioned,
    /// The key is believed compromised.
    KeyCompromise,
    /// Replaced by a newer certificate (e.g. after an AK rotation).
    Superseded,
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedEntry {
    pub serial_hex: String,
    pub revoked_at_unix: i64,
    pub reason: Reason,
}

impl Authority {
    /// The operator certificates revoked so far. A file that cannot be read or parsed is an
    /// error, never "none revoked".
    pub fn revoked_operators(&self) -> Result<Vec<RevokedEntry>, CaError> {
        let path = self.dir().join(REVOKED_OPERATORS);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CaError::Io {
                    operation: "read",
                    path,
                    source,
                });
            }
        };
        let entries: Vec<RevokedEntry> =
            serde_json::from_slice(&text).map_err(|e| CaError::Corrupt {
                path: path.clone(),
                detail: format!("not a list of revoked operator certificates: {e}"),
            })?;
        if entries.len() > MAX_REVOKED_OPERATORS {
            return Err(CaError::Corrupt {
                path,
                detail: format!("more than {MAX_REVOKED_OPERATORS} revoked operators"),
            });
        }
        for entry in &entries {
            if entry.serial_hex.is_empty() || hex::decode(&entry.serial_hex).is_err() {
                return Err(CaError::Corrupt {
                    path,
                    detail: format!("serial {:?} is not hex", entry.serial_hex),
                });
            }
        }
        Ok(entries)
    }

    /// Whether the operator certificate with this serial is revoked.
    pub fn operator_revoked(&self, serial_hex: &str) -> Result<bool, CaError> {
        let serial = normalised_serial(serial_hex);
        Ok(self
            .revoked_operators()?
            .iter()
            .any(|entry| normalised_serial(&entry.serial_hex) == serial))
    }

    /// Revokes an operator certificate this CA issued (PEM or DER): refuses a certificate that is
    /// not an operator's or that this CA's issuing key did not sign. Returns its serial, and
    /// whether it was newly revoked.
    pub fn revoke_operator_certificate(
        &self,
        certificate: &[u8],
        reason: Reason,
        at_unix: i64,
    ) -> Result<(String, bool), CaError> {
        use rustls_pki_types::pem::PemObject;
        let der = match rustls_pki_types::CertificateDer::from_pem_slice(certificate) {
            Ok(der) => der.to_vec(),
            Err(_) => certificate.to_vec(),
        };
        let identity = peer_identity(&der)
            .ok_or_else(|| CaError::Invalid("not a certificate issued by this CA".into()))?;
        if identity.role != Role::Operator {
            return Err(CaError::Invalid(format!(
                "the certificate is a {} certificate, not an operator's",
                identity.role
            )));
        }
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| CaError::Invalid(format!("not X.509: {e}")))?;
        let (_, issuing) = X509Certificate::from_der(self.issuing_der())
            .map_err(|e| CaError::Invalid(format!("the issuing CA is not X.509: {e}")))?;
        cert.verify_signature(Some(issuing.public_key()))
            .map_err(|_| CaError::Invalid("this CA did not issue the certificate".into()))?;
        let added = self.revoke_operator_serial(&identity.serial_hex, reason, at_unix)?;
        Ok((identity.serial_hex, added))
    }

    /// Adds an operator certificate's serial to the revoked list; false if it was already there.
    pub fn revoke_operator_serial(
        &self,
        serial_hex: &str,
        reason: Reason,
        at_unix: i64,
    ) -> Result<bool, CaError> {
        if serial_hex.is_empty() || hex::decode(serial_hex).is_err() {
            return Err(CaError::Invalid(format!(
                "serial {serial_hex:?} is not hex"
            )));
        }
        let mut entries = self.revoked_operators()?;
        let serial = normalised_serial(serial_hex);
        if entries
            .iter()
            .any(|entry| normalised_serial(&entry.serial_hex) == serial)
        {
            return Ok(false);
        }
        entries.push(RevokedEntry {
            serial_hex: serial,
            revoked_at_unix: at_unix,
            reason,
        });
        let json = serde_json::to_vec_pretty(&entries)
            .map_err(|e| CaError::Invalid(format!("cannot encode the revoked list: {e}")))?;
        crate::files::write_public(&self.dir().join(REVOKED_OPERATORS), &json)?;
        Ok(true)
    }
}

/// How long a CRL stays current; the verifier re-issues it on every change anyway.
const CRL_VALIDITY: Duration = Duration::days(7);

impl Authority {
    /// A CRL over `entries`, signed by the issuing CA. `number` must increase with each CRL.
    pub fn crl(&self, entries: &[RevokedEntry], number: u64) -> Result<Vec<u8>, CaError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(entries.len());
        for entry in entries {
            let serial = hex::decode(&entry.serial_hex).map_err(|_| {
                CaError::BadRequest(format!("serial {:?} is not hex", entry.serial_hex))
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(entry.revoked_at_unix)
                    .unwrap_or(now),
                reason_code: Some(match entry.reason {
                    Reason::Quarantined => RevocationReason::CertificateHold,
                    Reason::Decommissioned => RevocationReason::CessationOfOperation,
                    Reason::KeyCompromise => RevocationReason::KeyCompromise,
                    Reason::Superseded => RevocationReason::Superseded,
                }),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + CRL_VALIDITY,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer()?)
            .map_err(|source| CaError::Generate {
                operation: "CRL",
                source,
            })?;
        Ok(crl.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::CertificateRevocationList;

    #[test]
    fn an_operator_certificate_is_revoked_once_and_lands_on_the_crl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Test").unwrap();
        let alice = ca
            .issue_operator("alice", &[crate::OperatorRole::Viewer])
            .unwrap();
        let bob = ca
            .issue_operator("bob", &[crate::OperatorRole::Viewer])
            .unwrap();
        assert!(!ca.operator_revoked(&alice.serial_hex).unwrap());
        let (serial, added) = ca
            .revoke_operator_certificate(alice.pem.as_bytes(), Reason::KeyCompromise, 1_700_000_000)
            .unwrap();
        assert!(added);
        assert_eq!(
            normalised_serial(&serial),
            normalised_serial(&alice.serial_hex)
        );
        let (_, again) = ca
            .revoke_operator_certificate(&alice.der, Reason::KeyCompromise, 1_700_000_001)
            .unwrap();
        assert!(!again);
        // Read back by another handle on the same directory, as the verifier does.
        let loaded = Authority::load(dir.path()).unwrap();
        assert!(loaded.operator_revoked(&alice.serial_hex).unwrap());
        assert!(
            loaded
                .operator_revoked(&format!("00{}", alice.serial_hex.to_uppercase()))
                .unwrap()
        );
        assert!(!loaded.operator_revoked(&bob.serial_hex).unwrap());
        let entries = loaded.revoked_operators().unwrap();
        assert_eq!(entries.len(), 1);
        let der = loaded.crl(&entries, 1).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| normalised_serial(&hex::encode(r.raw_serial())))
            .collect();
        assert_eq!(serials, vec![normalised_serial(&alice.serial_hex)]);
    }

    #[test]
    fn only_operator_certificates_of_this_ca_are_revoked_and_a_damaged_list_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Test").unwrap();
        let verifier = ca
            .issue_verifier(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(
            ca.revoke_operator_certificate(verifier.pem.as_bytes(), Reason::KeyCompromise, 0)
                .is_err()
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = Authority::create(other_dir.path(), "Other").unwrap();
        let stranger = other
            .issue_operator("mallory", &[crate::OperatorRole::Viewer])
            .unwrap();
        assert!(
            ca.revoke_operator_certificate(stranger.pem.as_bytes(), Reason::KeyCompromise, 0)
                .is_err()
        );
        assert!(
            ca.revoke_operator_serial("zz", Reason::KeyCompromise, 0)
                .is_err()
        );
        std::fs::write(dir.path().join(REVOKED_OPERATORS), b"[{\"serial_hex\":").unwrap();
        assert!(ca.revoked_operators().is_err());
        assert!(ca.operator_revoked("01").is_err());
    }

    #[test]
    fn crl_lists_revoked_serials_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Test").unwrap();
        let op = ca
            .issue_operator("bob", &[crate::OperatorRole::Viewer])
            .unwrap();
        let der = ca
            .crl(
                &[RevokedEntry {
                    serial_hex: op.serial_hex.clone(),
                    revoked_at_unix: 1_700_000_000,
                    reason: Reason::Decommissioned,
                }],
                7,
            )
            .unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        let (_, issuing) = X509Certificate::from_der(ca.issuing_der()).unwrap();
        assert!(crl.verify_signature(issuing.public_key()).is_ok());
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![op.serial_hex]);
    }
}
