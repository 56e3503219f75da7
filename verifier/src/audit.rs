//! The tamper-evident history: every event (enrollment, appraisal failure, state change, operator
//! action) is a record in a hash chain, and exports end with a checkpoint the verifier signs, so
//! anyone holding the verifier's public key can check an export offline and find the first record
//! that was altered, removed or reordered.
//!
//! `hash(n) = SHA-256("trustchain-audit-v1" || hash(n-1) || n as u64 BE || record bytes)`, with
//! `hash(0)` = 32 zero bytes. The record bytes are the event's JSON exactly as stored.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"trustchain-audit-v1";
const CHECKPOINT_DOMAIN: &[u8] = b"trustchain-audit-checkpoint-v1";

/// The chain hash of record `sequence`.
pub fn chain_hash(previous: &[u8; 32], sequence: u64, record: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    hasher.update(previous);
    hasher.update(sequence.to_be_bytes());
    hasher.update(record);
    hasher.finalize().into()
}

/// What a checkpoint signs.
pub fn checkpoint_message(sequence: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut message = CHECKPOINT_DOMAIN.to_vec();
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(hash);
    message
}

/// One line of an export (JSON Lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLine {
    Record {
        sequence: u64,
        prev_hash: String,
        hash: String,
        record: String,
    },
    Checkpoint {
        sequence: u64,
        hash: String,
        signature: String,
    },
}

/// The verifier's signing key (ECDSA P-256), for checkpoints and signed results.
#[derive(Debug)]
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{0}")]
    Crypto(&'static str),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl SigningKey {
    pub fn generate() -> Result<Self, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::Crypto("key generation"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .map_err(|_| KeyError::Crypto("not a P-256 PKCS#8 key"))?;
        Ok(Self {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// Loads `path` (PKCS#8 DER, mode 0600), creating it on first use; writes the public key
    /// beside it as `<path>.pub` (uncompressed SEC1 point, hex) for offline checks.
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                std::io::Write::write_all(&mut file, &key.pkcs8).map_err(io)?;
                file.sync_all().map_err(io)?;
                key
            }
            Err(e) => return Err(io(e)),
        };
        std::fs::write(path.with_extension("pub"), key.public_hex()).map_err(io)?;
        Ok(key)
    }

    /// The public key: uncompressed SEC1 point, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// ES256 as JWS wants it: r || s, 32 bytes each.
    pub fn sign_fixed(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
        )
        .map_err(|_| KeyError::Crypto("not a P-256 PKCS#8 key"))?;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        pair.sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Crypto("signing"))
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Crypto("signing"))
    }

    pub fn checkpoint(&self, sequence: u64, hash: &[u8; 32]) -> Result<AuditLine, KeyError> {
        let signature = self.sign(&checkpoint_message(sequence, hash))?;
        Ok(AuditLine::Checkpoint {
            sequence,
            hash: hex::encode(hash),
            signature: hex::encode(signature),
        })
    }
}

/// What a verified export contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedExport {
    pub records: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub checkpoints: u64,
}

/// Why an export does not verify: the line and sequence where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: record {sequence}: {problem}")]
pub struct AuditError {
    pub line: usize,
    pub sequence: u64,
    pub problem: String,
}

/// Checks an export with only the verifier's public key (hex SEC1 point).
pub fn verify_export(text: &str, public_key_hex: &str) -> Result<VerifiedExport, AuditError> {
    let fail = |line: usize, sequence: u64, problem: &str| AuditError {
        line,
        sequence,
        problem: problem.into(),
    };
    let public_key =
        hex::decode(public_key_hex.trim()).map_err(|_| fail(0, 0, "the public key is not hex"))?;
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key);
    let mut previous: Option<(u64, [u8; 32])> = None;
    let mut summary = VerifiedExport {
        records: 0,
        first_sequence: 0,
        last_sequence: 0,
        checkpoints: 0,
    };
    let mut verified_to_checkpoint = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: AuditLine = serde_json::from_str(raw)
            .map_err(|e| fail(line, 0, &format!("not an audit line: {e}")))?;
        match parsed {
            AuditLine::Record {
                sequence,
                prev_hash,
                hash,
                record,
            } => {
                let prev: [u8; 32] = hex::decode(&prev_hash)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| fail(line, sequence, "prev_hash is not 32 bytes of hex"))?;
                match previous {
                    None => {
                        if sequence == 1 && prev != [0u8; 32] {
                            return Err(fail(
                                line,
                                sequence,
                                "the first record must chain from zero",
                            ));
                        }
                        summary.first_sequence = sequence;
                    }
                    Some((last, last_hash)) => {
                        if sequence != last + 1 {
                            return Err(fail(
                                line,
                                sequence,
                                &format!(
                                    "expected record {} here: a record was removed or reordered",
                                    last + 1
                                ),
                            ));
                        }
                        if prev != last_hash {
                            return Err(fail(
                                line,
                                sequence,
                                "prev_hash does not match the previous record: the chain was altered",
                            ));
                        }
                    }
                }
                let computed = chain_hash(&prev, sequence, record.as_bytes());
                if hex::encode(computed) != hash {
                    return Err(fail(
                        line,
                        sequence,
                        "the record does not hash to its chain hash: it was altered",
                    ));
                }
                previous = Some((sequence, computed));
                summary.records += 1;
                summary.last_sequence = sequence;
                verified_to_checkpoint = false;
            }
            AuditLine::Checkpoint {
                sequence,
                hash,
                signature,
            } => {
                let Some((last, last_hash)) = previous else {
                    return Err(fail(line, sequence, "checkpoint before any record"));
                };
                if sequence != last || hash != hex::encode(last_hash) {
                    return Err(fail(
                        line,
                        sequence,
                        "checkpoint does not cover the records before it: records were removed or added",
                    ));
                }
                let signature = hex::decode(signature)
                    .map_err(|_| fail(line, sequence, "checkpoint signature is not hex"))?;
                key.verify(&checkpoint_message(sequence, &last_hash), &signature)
                    .map_err(|_| {
                        fail(
                            line,
                            sequence,
                            "checkpoint signature does not verify with the verifier's key",
                        )
                    })?;
                summary.checkpoints += 1;
                verified_to_checkpoint = true;
            }
        }
    }
    if summary.records == 0 {
        return Err(fail(0, 0, "no records"));
    }
    if !verified_to_checkpoint {
        return Err(fail(
            0,
            summary.last_sequence,
            "the export does not end with a signed checkpoint: records after the last one are unproven",
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(key: &SigningKey, records: &[&str]) -> Vec<String> {
        let mut previous = [0u8; 32];
        let mut lines = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let sequence = i as u64 + 1;
            let hash = chain_hash(&previous, sequence, record.as_bytes());
            lines.push(
                serde_json::to_string(&AuditLine::Record {
                    sequence,
                    prev_hash: hex::encode(previous),
                    hash: hex::encode(hash),
                    record: (*record).to_string(),
                })
                .unwrap(),
            );
            previous = hash;
        }
        lines.push(
            serde_json::to_string(&key.checkpoint(records.len() as u64, &previous).unwrap())
                .unwrap(),
        );
        lines
    }

    #[test]
    fn untouched_verifies_and_each_tampering_is_named() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_hex();
        let lines = export(&key, &["{\"a\":1}", "{\"b\":2}", "{\"c\":3}", "{\"d\":4}"]);
        let ok = verify_export(&lines.join("\n"), &public).unwrap();
        assert_eq!((ok.records, ok.checkpoints), (4, 1));

        let mut altered = lines.clone();
        altered[1] = altered[1].replace("\\\"b\\\":2", "\\\"b\\\":3");
        assert_eq!(
            verify_export(&altered.join("\n"), &public)
                .unwrap_err()
                .sequence,
            2
        );

        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(
            verify_export(&removed.join("\n"), &public)
                .unwrap_err()
                .sequence,
            4
        );

        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        assert_eq!(
            verify_export(&reordered.join("\n"), &public)
                .unwrap_err()
                .line,
            2
        );

        let mut truncated = lines.clone();
        truncated.remove(3);
        assert!(verify_export(&truncated.join("\n"), &public).is_err());

        let other = SigningKey::generate().unwrap();
        assert!(verify_export(&lines.join("\n"), &other.public_hex()).is_err());
    }
}
