//! TrustChain agent (being written).
