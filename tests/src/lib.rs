//! Shared helpers for TrustChain's end-to-end tests.
