//! TrustChain's deployment PKI.
//!
//! # Layout
//! - [`authority`]: the deployment CA on disk (a root and an issuing CA; keys 0600) and issuance.
//! - [`role`]: who a certificate speaks for (verifier, agent, operator, and an operator's roles)
//!   and how a peer certificate is read back into them; the verifier's authorisation rests on it.
//! - [`revocation`]: the revocation list and its CRL.
//! - [`files`]: writing secrets with owner-only permissions, atomically.
//! - `main.rs`: the `trustchain-ca` command.
//!
//! The CA signs with ECDSA P-256 (rcgen over aws-lc-rs). Agent TLS keys never reach the CA: agents
//! send a CSR, and the CA decides the subject itself (it never copies one from the request).

pub mod authority;
pub mod files;
pub mod revocation;
pub mod role;
pub mod signing_key;

pub use authority::{Authority, IssuedCertificate};
pub use role::{OperatorRole, Role};

/// Errors from the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed ({operation}): {source}")]
    Generate {
        operation: &'static str,
        source: rcgen::Error,
    },
    #[error("the certificate signing request is not acceptable: {0}")]
    BadRequest(String),
    #[error("{path}: {detail}")]
    Corrupt {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("a CA already exists in {0}; refusing to overwrite it")]
    AlreadyExists(std::path::PathBuf),
    #[error("{0}")]
    Invalid(String),
}
