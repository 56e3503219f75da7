//! TrustChain agent (being written).

pub mod client;
pub mod config;
pub mod enroll;
pub mod identity;
pub mod tpm;
