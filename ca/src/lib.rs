//! TrustChain deployment PKI (being written).
