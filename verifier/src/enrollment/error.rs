//! Why an enrollment was refused, or failed inside the verifier: the enroller and the standing
//! checks both refuse with it; the gRPC edge decides what the agent hears.

use super::credential::CredentialError;
use super::ek_chain::ChainError;
use super::keys::KeyError;
use crate::storage::StorageError;

/// Why enrollment was refused. Full detail for the verifier's log; the agent gets a generic answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    #[error("request field {0} is too large")]
    TooLarge(&'static str),
    #[error("EK certificate: {0}")]
    Chain(#[from] ChainError),
    #[error("EK public: {0}")]
    EkPublic(KeyError),
    #[error("the EK public key in the TPM differs from the key in the EK certificate")]
    EkMismatch,
    #[error("AK: {0}")]
    Ak(KeyError),
    #[error("device {device_id} is decommissioned; its EK can never enroll again")]
    Decommissioned { device_id: String },
    #[error(
        "hostname {hostname:?} belongs to device {existing}; a different EK ({claimant}) claims it"
    )]
    IdentityConflict {
        hostname: String,
        existing: String,
        claimant: String,
    },
    #[error(
        "EK certificate {serial_hex} of {issuer} is held by device {existing}; device {claimant} presents it"
    )]
    EkCertificateHeld {
        issuer: String,
        serial_hex: String,
        existing: String,
        claimant: String,
    },
    #[error(
        "device {device_id} re-enrolls claiming {field} {claimed:?}, but its record says {recorded:?}"
    )]
    ClaimChanged {
        device_id: String,
        field: &'static str,
        recorded: String,
        claimed: String,
    },
    #[error("too many enrollments in progress")]
    Busy,
    #[error("device {device_id} is enrolling or attested on another replica; try again later")]
    Elsewhere { device_id: String },
    #[error("unknown, already used or abandoned enrollment attempt")]
    UnknownAttempt,
    #[error("enrollment attempt for {device_id} expired")]
    Expired { device_id: String },
    #[error("credential activation failed for {device_id}: wrong secret (AK not in the EK's TPM?)")]
    WrongSecret { device_id: String },
    #[error("client certificate request: {0}")]
    Csr(String),
    #[error("making the credential: {0}")]
    Credential(#[from] CredentialError),
    #[error("issuing certificates: {0}")]
    Issue(#[from] trustchain_ca::CaError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("no randomness")]
    Random,
    #[error("trust list: {0}")]
    TrustList(String),
}

impl EnrollError {
    /// True for failures of the verifier itself rather than a refusal of the device.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Storage(_) | Self::Random | Self::Issue(_) | Self::Credential(_)
        )
    }
}
