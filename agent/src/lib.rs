//! TrustChain agent (being written).

pub mod config;
pub mod identity;
