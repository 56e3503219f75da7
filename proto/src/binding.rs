//! Channel binding: what a quote's qualifyingData (extraData) must be, computed the same way by
//! the agent and the verifier, each from its own side of one TLS 1.3 connection.
//!
//! `qualifyingData = SHA-256(nonce || exporter)`, where `exporter` is the connection's TLS
//! keying-material exporter (RFC 8446 §7.5, RFC 5705) of [`EXPORTER_LEN`] bytes with label
//! [`EXPORTER_LABEL`] and no context. Both ends of one connection derive the same exporter; no
//! other connection does. So a quote made for a challenge relayed over another connection (a
//! genuine TPM answering for a fake device: the relay, or "cuckoo", attack) carries the wrong
//! value, and so does a quote over the bare nonce. The result is 32 bytes, which fits
//! qualifyingData on a TPM that implements SHA-256 only.

use sha2::{Digest, Sha256};

/// The exporter label (RFC 5705 labels for private use begin with "EXPORTER").
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-trustchain-attestation";
/// Bytes of exporter output bound into each quote.
pub const EXPORTER_LEN: usize = 32;

/// The qualifyingData a quote answering `nonce` on the connection with `exporter` carries.
pub fn qualifying_data(nonce: &[u8], exporter: &[u8; EXPORTER_LEN]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(nonce);
    hash.update(exporter);
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_both_the_nonce_and_the_connection() {
        let base = qualifying_data(&[1; 32], &[2; 32]);
        assert_ne!(base, qualifying_data(&[1; 32], &[3; 32]));
        assert_ne!(base, qualifying_data(&[4; 32], &[2; 32]));
        assert_ne!(base.as_slice(), [1u8; 32].as_slice());
        assert_eq!(base, qualifying_data(&[1; 32], &[2; 32]));
    }
}
