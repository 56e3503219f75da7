//! Revocation: the CRL the verifier's TLS layer consults, so a quarantined or decommissioned
//! device cannot even complete a handshake.

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{Authority, CaError};

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
    use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

    #[test]
    fn crl_lists_revoked_serials_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::create(dir.path(), "Test").unwrap();
        let op = ca.issue_operator("bob").unwrap();
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
