//! trustchain-evidence: the pure-Rust parsers for what a device sends. Every input here is
//! hostile: parsers return errors, never panic, and never allocate more than the bytes actually
//! present justify. The bottom layer of the verifier (it depends on no other TrustChain crate);
//! the verifier re-exports it as `trustchain_verifier::evidence`, and the swtpm harness and the
//! fuzz targets depend on it alone.
//!
//! - [`reader`]: the bounded big/little-endian byte reader every parser uses.
//! - [`digest`]: TPM hash algorithms and hashing; [`hex_digests`]: digests as hex in JSON.
//! - [`tpm`]: TPM 2.0 wire structures (TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE, PCR selection).
//! - [`quote`]: quote verification (signature, nonce, PCR digest).
//! - [`eventlog`]: TCG PC Client UEFI event logs: parsing, typed events, replay.
//! - [`ima`]: Linux IMA measurement lists: parsing, template hashes, PCR 10 replay.

pub mod digest;
pub mod eventlog;
pub mod hex_digests;
pub mod ima;
pub mod quote;
pub mod reader;
pub mod tpm;
