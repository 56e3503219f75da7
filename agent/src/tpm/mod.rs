//! The TPM behind a seam: the agent talks to [`Tpm`]; [`esapi::EsapiTpm`] implements it on
//! tss-esapi (hardware `/dev/tpmrm0` or swtpm).
//!
//! # Layout
//! - this file: the [`Tpm`] trait, the values it returns and [`TpmError`].
//! - [`tcti`]: [`TctiConfig`], the TPM address from the configuration, parsed strictly.
//! - [`ak_blob`]: the saved AK (TPM-wrapped private part and public area), a 0600 file.
//! - [`esapi`]: [`esapi::EsapiTpm`], one short TPM connection per operation.
//! - `pcr`: PCR selections, PCR reads and the check that read values match a quote's digest.
//!
//! Calls are blocking and take `&mut self`: the agent keeps its `Tpm` in an
//! `Arc<std::sync::Mutex<_>>` (one TPM, one command stream: TPM commands must not interleave,
//! and swtpm serves a single connection) and calls it from async code through
//! `tokio::task::spawn_blocking` (see `retry::with_tpm`).

pub mod ak_blob;
pub mod esapi;
mod pcr;
pub mod tcti;

pub use tcti::{TctiConfig, TctiConfigError};

use sha2::Digest as _;

/// TPM_ALG_ID of a PCR bank (e.g. 0x000b for SHA-256), and the PCRs wanted from it.
pub type BankSelection = (u16, Vec<u32>);

/// TPM_ALG_ID of the SHA-256 PCR bank.
pub const SHA256_BANK: u16 = 0x000b;

/// What TPM2_Quote produced, with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Marshalled TPMS_ATTEST (TPM2B_ATTEST without its size): what the signature covers.
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// (TPM_ALG_ID, PCR index, value), in selection order. Checked by the agent to hash to the
    /// quote's pcrDigest before it is returned.
    pub pcr_values: Vec<(u16, u32, Vec<u8>)>,
    /// resetCount from the quote's clockInfo: the agent sends its boot log after it changes.
    pub reset_count: u32,
}

/// Which AK to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AkAlgorithm {
    /// RSA-2048, RSASSA (PKCS#1 v1.5) with SHA-256.
    Rsa2048,
    /// NIST P-256, ECDSA with SHA-256.
    EccP256,
}

/// The attestation key as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkInfo {
    pub algorithm: AkAlgorithm,
    /// Marshalled TPMT_PUBLIC.
    pub public: Vec<u8>,
    /// TPM Name: nameAlg (0x000b) || SHA-256(public).
    pub name: Vec<u8>,
    /// True when this call created the AK (the verifier must certify it again).
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("TPM {operation}: {source}")]
    Tpm {
        operation: &'static str,
        source: tss_esapi::Error,
    },
    #[error(transparent)]
    TctiConfig(#[from] TctiConfigError),
    #[error("cannot open the TPM at {tcti}: {source}")]
    Connect {
        tcti: String,
        source: tss_esapi::Error,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("saved AK in {path} is unusable: {detail}")]
    BadAkBlob {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(
        "the saved AK is {saved} but {configured} is configured; rotate the AK (enroll --rotate-ak)"
    )]
    AkMismatch { saved: String, configured: String },
    #[error("persistent handle 0x{handle:08x} holds an object that is not a usable AK: {detail}")]
    NotAnAk { handle: u32, detail: String },
    #[error("PCRs kept changing while quoting")]
    PcrsUnstable,
    #[error("PCR selection: {0}")]
    Selection(String),
    #[error("the TPM answered something unexpected: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Invalid(String),
}

/// TPM Name of a marshalled TPMT_PUBLIC: nameAlg || H_nameAlg(public). Only SHA-256 (the
/// nameAlg of every key the agent creates or loads) is supported.
pub fn object_name(public: &[u8]) -> Result<Vec<u8>, TpmError> {
    // TPMT_PUBLIC: type (u16), nameAlg (u16), ...
    let name_alg = public
        .get(2..4)
        .ok_or_else(|| TpmError::Unexpected("TPMT_PUBLIC too short".into()))?;
    if name_alg != SHA256_BANK.to_be_bytes() {
        return Err(TpmError::Unexpected(format!(
            "nameAlg 0x{} is not SHA-256",
            hex::encode(name_alg)
        )));
    }
    let mut name = name_alg.to_vec();
    name.extend_from_slice(&sha2::Sha256::digest(public));
    Ok(name)
}

/// What the agent needs from a TPM. Methods block; see the module doc for how async code calls
/// them.
pub trait Tpm: Send {
    /// True for a software TPM (swtpm, the reference simulator). The agent logs a loud warning.
    fn is_software(&mut self) -> Result<bool, TpmError>;
    /// Flushes transient objects and loaded sessions a crashed process left behind; returns how
    /// many. Never clears the TPM and never touches persistent objects or NV.
    fn flush_leftovers(&mut self) -> Result<usize, TpmError>;
    /// The EK certificate (DER) from its TCG NV index.
    fn ek_certificate(&mut self, ek: crate::config::EkChoice) -> Result<Vec<u8>, TpmError>;
    /// The EK's marshalled TPMT_PUBLIC (created from the TCG default template).
    fn ek_public(&mut self, ek: crate::config::EkChoice) -> Result<Vec<u8>, TpmError>;
    /// The AK's marshalled TPMT_PUBLIC, creating and saving the AK on first use.
    fn ak_public(&mut self) -> Result<Vec<u8>, TpmError>;
    /// Replaces the AK with a new one (AK rotation); returns the new marshalled TPMT_PUBLIC.
    fn rotate_ak(&mut self) -> Result<Vec<u8>, TpmError>;
    /// TPM2_ActivateCredential with the AK and the EK; returns the recovered secret.
    /// `credential_blob` is the TPM2B_ID_OBJECT and `encrypted_secret` the
    /// TPM2B_ENCRYPTED_SECRET contents, both without their size fields.
    fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError>;
    /// TPM2_Quote by the AK over `selection` with `nonce` as qualifyingData, and the PCR values
    /// it covers.
    fn quote(&mut self, nonce: &[u8], selection: &[BankSelection]) -> Result<Quote, TpmError>;

    /// The AK, created on first use. Implementations that know whether they created it override
    /// this; the default reports `created: false` and infers the algorithm from the public area.
    fn ensure_ak(&mut self) -> Result<AkInfo, TpmError> {
        let public = self.ak_public()?;
        let algorithm = match public.get(0..2) {
            Some([0x00, 0x01]) => AkAlgorithm::Rsa2048,
            Some([0x00, 0x23]) => AkAlgorithm::EccP256,
            _ => return Err(TpmError::Unexpected("AK is neither RSA nor ECC".into())),
        };
        Ok(AkInfo {
            algorithm,
            name: object_name(&public)?,
            public,
            created: false,
        })
    }

    /// The AK's TPM Name (what MakeCredential binds the credential to).
    fn ak_name(&mut self) -> Result<Vec<u8>, TpmError> {
        object_name(&self.ak_public()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sha256_of_the_public_area() {
        let public = [0x00, 0x23, 0x00, 0x0b, 1, 2, 3];
        let name = object_name(&public).unwrap();
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(&name[2..], sha2::Sha256::digest(public).as_slice());
        assert!(object_name(&[0x00, 0x23, 0x00, 0x04]).is_err());
        assert!(object_name(&[0x00]).is_err());
    }
}
