//! Enrollment: trust creation for one device (flow 1 in DESIGN.md).
//!
//! - `ek_chain`: EK certificate chain validation against the trusted TPM makers.
//! - `ek_template`: the EK's canonical encoding and the pinned TCG default EK template.
//! - `keys`: EK and AK checks on the TPM's own TPMT_PUBLIC structures.
//! - `credential`: TPM2_MakeCredential in software, for RSA and ECC EKs.
//! - `error`: [`EnrollError`](enroller::EnrollError), why an enrollment was refused.
//! - `standing`: the checks that need the device's TPM proved first (decommissioned, trust list,
//!   changed claims, hostname and EK certificate held by another record).
//! - `enroller`: the decision: begin (identity checks, credential) and complete (activation
//!   answer, certificates, durable record).

pub mod credential;
pub mod ek_chain;
pub mod ek_template;
pub mod enroller;
mod error;
pub mod keys;
mod standing;
