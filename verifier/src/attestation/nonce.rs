//! Challenge nonces.
//!
//! A [`ChallengeNonce`] can only be drawn from the operating system's CSPRNG: its one
//! constructor is [`ChallengeNonce::draw`], and it has no `From`, `Default`, `Deserialize` or
//! public field. A fixed or predictable challenge (Keylime CVE-2026-6420 shipped one that began
//! as a load-test edit) cannot be written without changing this file, and the test
//! `tests/tests/nonce_source.rs` fails when any other file of the verifier makes one.
//! Nonces the verifier reads back (spent-nonce records, results) are plain bytes, never this
//! type: only an issued challenge is one.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

/// Bytes of a challenge nonce.
pub const NONCE_LEN: usize = 32;

/// A single-use challenge nonce, fresh from the OS CSPRNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeNonce([u8; NONCE_LEN]);

/// The CSPRNG failed: no challenge is issued (fail closed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct NonceUnavailable;

impl ChallengeNonce {
    /// Draws 32 bytes from the OS CSPRNG (aws-lc-rs `SystemRandom`: getrandom on Linux).
    pub fn draw() -> Result<Self, NonceUnavailable> {
        let mut bytes = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| NonceUnavailable)?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ten_thousand_drawn_nonces_are_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let nonce = ChallengeNonce::draw().unwrap();
            assert!(seen.insert(*nonce.as_bytes()), "a nonce repeated");
        }
        // Not all-zero, as an unfilled buffer would be.
        assert!(seen.iter().all(|n| n.iter().any(|b| *b != 0)));
    }
}
