//! Enrollment: trust creation for one device (flow 1 in DESIGN.md).
//!
//! - `credential`: TPM2_MakeCredential in software, for RSA and ECC EKs.
//! - `ek_chain`: EK certificate chain validation against the trusted TPM makers.

pub mod credential;
pub mod ek_chain;
