//! The TPM behind a seam: the agent talks to [`Tpm`]; [`esapi::EsapiTpm`] implements it on
//! tss-esapi (hardware `/dev/tpmrm0` or swtpm). Calls are blocking: async code wraps them in
//! `spawn_blocking`.

pub mod esapi;

use crate::config::EkChoice;

/// TPM_ALG_ID of a PCR bank, and the PCRs wanted from it.
pub type BankSelection = (u16, Vec<u32>);

/// What TPM2_Quote produced, with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled TPMS_ATTEST.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// (TPM_ALG_ID, PCR index, value), in selection order.
    pub pcr_values: Vec<(u16, u32, Vec<u8>)>,
    /// resetCount from the quote's clockInfo: the agent sends its boot log after it changes.
    pub reset_count: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("TPM {operation}: {source}")]
    Tpm {
        operation: &'static str,
        source: tss_esapi::Error,
    },
    #[error("TPM access {tcti:?}: {detail}")]
    Tcti { tcti: String, detail: String },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("saved AK in {path} is unreadable: {detail}")]
    BadAkBlob {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("PCRs kept changing while quoting")]
    PcrsUnstable,
    #[error("{0}")]
    Invalid(String),
}

/// What the agent needs from a TPM.
pub trait Tpm: Send {
    /// True for a software TPM (swtpm, the reference simulator).
    fn is_software(&mut self) -> Result<bool, TpmError>;
    /// Flushes transient objects and sessions a crashed process left behind; returns how many.
    fn flush_leftovers(&mut self) -> Result<usize, TpmError>;
    /// The EK certificate (DER) from its TCG NV index.
    fn ek_certificate(&mut self, ek: EkChoice) -> Result<Vec<u8>, TpmError>;
    /// The EK's marshalled TPMT_PUBLIC (created from the TCG default template).
    fn ek_public(&mut self, ek: EkChoice) -> Result<Vec<u8>, TpmError>;
    /// The AK's marshalled TPMT_PUBLIC, creating and saving the AK on first use.
    fn ak_public(&mut self) -> Result<Vec<u8>, TpmError>;
    /// Replaces the AK with a new one (AK rotation).
    fn rotate_ak(&mut self) -> Result<Vec<u8>, TpmError>;
    /// TPM2_ActivateCredential with the AK and the EK; returns the recovered secret.
    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError>;
    /// TPM2_Quote by the AK over `selection` with `nonce`, and the PCR values it covers.
    fn quote(&mut self, nonce: &[u8], selection: &[BankSelection]) -> Result<Quote, TpmError>;
}
