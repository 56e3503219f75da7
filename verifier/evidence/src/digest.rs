//! TPM hash algorithms (TPM_ALG_ID) and hashing with RustCrypto.

use std::fmt;

use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use sm3::Sm3;

/// A hash algorithm a PCR bank, an event log or an IMA entry may use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sm3_256,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 5] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
        HashAlgorithm::Sm3_256,
    ];

    /// The TPM_ALG_ID, or `None` for an algorithm we do not support.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000b => Some(Self::Sha256),
            0x000c => Some(Self::Sha384),
            0x000d => Some(Self::Sha512),
            0x0012 => Some(Self::Sm3_256),
            _ => None,
        }
    }

    pub fn tpm_alg_id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000b,
            Self::Sha384 => 0x000c,
            Self::Sha512 => 0x000d,
            Self::Sm3_256 => 0x0012,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3_256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// Lowercase name as used in JSON output, tpm2-tools and IMA ("sha256", "sm3_256"; IMA calls
    /// the latter "sm3").
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Sm3_256 => "sm3_256",
        }
    }

    /// Parses a name as written in IMA logs, JSON and policies.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            "sm3" | "sm3_256" | "sm3-256" => Some(Self::Sm3_256),
            _ => None,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            Self::Sha1 => run::<Sha1>(parts),
            Self::Sha256 => run::<Sha256>(parts),
            Self::Sha384 => run::<Sha384>(parts),
            Self::Sha512 => run::<Sha512>(parts),
            Self::Sm3_256 => run::<Sm3>(parts),
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        self.hash_parts(&[data])
    }

    /// PCR extend: `H(old || digest)`.
    pub fn extend(self, pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        self.hash_parts(&[pcr, digest])
    }

    /// PCR extend in place, without allocating: `pcr = H(pcr || digest)`. `pcr` must be this
    /// algorithm's size (replay keeps it so); a wrong size is left unchanged.
    ///
    /// The SHA families go through aws-lc: on these 40-128-byte inputs its assembly is about a
    /// quarter faster than RustCrypto, and extends are most of an event log replay's time.
    pub fn extend_in_place(self, pcr: &mut [u8], digest: &[u8]) {
        use aws_lc_rs::digest as lc;
        use sha2::Digest as _;
        let algorithm = match self {
            Self::Sha1 => &lc::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &lc::SHA256,
            Self::Sha384 => &lc::SHA384,
            Self::Sha512 => &lc::SHA512,
            Self::Sm3_256 => {
                let out = Sm3::new()
                    .chain_update(&*pcr)
                    .chain_update(digest)
                    .finalize();
                if out.len() == pcr.len() {
                    pcr.copy_from_slice(&out);
                }
                return;
            }
        };
        // One contiguous input on the stack: a one-shot digest is cheaper than a context.
        let mut input = [0u8; 128];
        let length = pcr.len() + digest.len();
        let out = match input.get_mut(..length) {
            Some(joined) => {
                let (left, right) = joined.split_at_mut(pcr.len());
                left.copy_from_slice(pcr);
                right.copy_from_slice(digest);
                lc::digest(algorithm, joined)
            }
            None => {
                let mut context = lc::Context::new(algorithm);
                context.update(pcr);
                context.update(digest);
                context.finish()
            }
        };
        if out.as_ref().len() == pcr.len() {
            pcr.copy_from_slice(out.as_ref());
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_output() {
        for alg in HashAlgorithm::ALL {
            assert_eq!(HashAlgorithm::from_tpm_alg_id(alg.tpm_alg_id()), Some(alg));
            assert_eq!(alg.hash(b"abc").len(), alg.size());
            assert_eq!(HashAlgorithm::from_name(alg.name()), Some(alg));
            for extra in [&b"digest"[..], &[7u8; 64], &[9u8; 200]] {
                let mut pcr = vec![3u8; alg.size()];
                let expected = alg.extend(&pcr, extra);
                alg.extend_in_place(&mut pcr, extra);
                assert_eq!(pcr, expected);
            }
        }
        assert_eq!(HashAlgorithm::from_tpm_alg_id(0x0010), None);
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            hex::encode(HashAlgorithm::Sha256.hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
