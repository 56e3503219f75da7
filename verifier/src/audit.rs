//! The tamper-evident history: every event (enrollment, appraisal failure, state change, operator
//! action) is a record in a hash chain, and exports end with a checkpoint the verifier signs, so
//! anyone holding the verifier's public key can check an export offline and find the first record
//! that was altered, removed or reordered.
//!
//! Periodic checkpoints (every minute) sign the chain's head as it was then. An export ends with
//! one more line, its final checkpoint ([`AuditLine::ExportEnd`]), signed for that export over its
//! range: the first and last sequence, the hash before the first record (the anchor: zero when
//! the export starts at the chain's start), the head hash, the time and a final mark. Without it
//! an export cut after an earlier periodic checkpoint, or with its first records cut, would still
//! verify; with it, an export proves exactly the range it states, or nothing.
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
const EXPORT_DOMAIN: &[u8] = b"trustchain-audit-export-v1";
/// The final mark in an export's signed range: this checkpoint ends the export.
const FINAL_MARK: &[u8] = b"final";

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

/// What an export's final checkpoint signs: the range it covers and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRange {
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The chain hash before the first record (zero when the first record is record 1).
    pub anchor: [u8; 32],
    /// The chain hash of the last record.
    pub head: [u8; 32],
    pub exported_at_unix: i64,
}

/// What an export's final checkpoint signs (the final mark included, so no periodic checkpoint
/// can stand in for it).
pub fn export_message(range: &ExportRange) -> Vec<u8> {
    let mut message = EXPORT_DOMAIN.to_vec();
    message.extend_from_slice(&range.first_sequence.to_be_bytes());
    message.extend_from_slice(&range.last_sequence.to_be_bytes());
    message.extend_from_slice(&range.anchor);
    message.extend_from_slice(&range.head);
    message.extend_from_slice(&range.exported_at_unix.to_be_bytes());
    message.extend_from_slice(FINAL_MARK);
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
    /// The last line of an export: a checkpoint made for it, over its whole range.
    ExportEnd {
        first_sequence: u64,
        last_sequence: u64,
        anchor: String,
        head: String,
        exported_at_unix: i64,
        /// Always true: the mark that this checkpoint ends an export.
        #[serde(rename = "final")]
        final_mark: bool,
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

    /// An export's final checkpoint over `range`.
    pub fn export_end(&self, range: &ExportRange) -> Result<AuditLine, KeyError> {
        let signature = self.sign(&export_message(range))?;
        Ok(AuditLine::ExportEnd {
            first_sequence: range.first_sequence,
            last_sequence: range.last_sequence,
            anchor: hex::encode(range.anchor),
            head: hex::encode(range.head),
            exported_at_unix: range.exported_at_unix,
            final_mark: true,
            signature: hex::encode(signature),
        })
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

/// What a verified export proves: records `first_sequence..=last_sequence`, contiguous, chained
/// from `anchor` to `head`, signed as one export at `exported_at_unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedExport {
    pub records: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// Periodic checkpoints found inside the export (each verified).
    pub checkpoints: u64,
    /// The hash before the first record, hex (all zeros: the export starts at the chain's start).
    pub anchor: String,
    pub head: String,
    pub exported_at_unix: i64,
}

impl VerifiedExport {
    /// Whether the export starts at the chain's first record (otherwise it proves only its range).
    pub fn from_chain_start(&self) -> bool {
        self.first_sequence == 1 && self.anchor == hex::encode([0u8; 32])
    }
}

/// Why an export does not verify: the line and sequence where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: record {sequence}: {problem}")]
pub struct AuditError {
    pub line: usize,
    pub sequence: u64,
    pub problem: String,
}

fn hash_from_hex(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok().and_then(|b| b.try_into().ok())
}

/// The export of `records` (in sequence order, from storage) with the periodic `checkpoints`
/// (sequence, hash hex, signature hex) in place, ending with a final checkpoint signed now for
/// exactly this range. The chain is checked before it is signed: the verifier never vouches for
/// a range with a gap or a record that does not hash to its chain hash.
pub fn seal_export(
    records: Vec<AuditLine>,
    checkpoints: &[(u64, String, String)],
    key: &SigningKey,
    exported_at_unix: i64,
) -> Result<Vec<AuditLine>, String> {
    let mut lines = Vec::with_capacity(records.len().saturating_add(checkpoints.len() + 1));
    let mut range: Option<ExportRange> = None;
    for line in records {
        let AuditLine::Record {
            sequence,
            prev_hash,
            hash,
            record,
        } = &line
        else {
            continue;
        };
        let sequence = *sequence;
        let prev = hash_from_hex(prev_hash)
            .ok_or_else(|| format!("stored record {sequence}: prev_hash is not a hash"))?;
        let computed = chain_hash(&prev, sequence, record.as_bytes());
        if hex::encode(computed) != *hash {
            return Err(format!(
                "stored record {sequence} does not hash to its chain hash"
            ));
        }
        match &mut range {
            None => {
                range = Some(ExportRange {
                    first_sequence: sequence,
                    last_sequence: sequence,
                    anchor: prev,
                    head: computed,
                    exported_at_unix,
                });
            }
            Some(range) => {
                if range.last_sequence.checked_add(1) != Some(sequence) || range.head != prev {
                    return Err(format!(
                        "stored record {sequence} does not follow record {}",
                        range.last_sequence
                    ));
                }
                range.last_sequence = sequence;
                range.head = computed;
            }
        }
        lines.push(line);
        if let Some((_, hash, signature)) = checkpoints.iter().find(|(s, _, _)| *s == sequence) {
            lines.push(AuditLine::Checkpoint {
                sequence,
                hash: hash.clone(),
                signature: signature.clone(),
            });
        }
    }
    if let Some(range) = range {
        lines.push(key.export_end(&range).map_err(|e| e.to_string())?);
    }
    Ok(lines)
}

/// Checks an export with only the verifier's public key (hex SEC1 point): every record chains to
/// the one before, every periodic checkpoint verifies, and the export ends with its final
/// checkpoint, whose signed range is exactly the records it holds.
pub fn verify_export(text: &str, public_key_hex: &str) -> Result<VerifiedExport, AuditError> {
    let fail = |line: usize, sequence: u64, problem: &str| AuditError {
        line,
        sequence,
        problem: problem.into(),
    };
    let public_key =
        hex::decode(public_key_hex.trim()).map_err(|_| fail(0, 0, "the public key is not hex"))?;
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key);
    // (first sequence, the hash before it), then (last sequence, its hash).
    let mut first: Option<(u64, [u8; 32])> = None;
    let mut previous: Option<(u64, [u8; 32])> = None;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut sealed: Option<(usize, VerifiedExport)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let parsed: AuditLine = serde_json::from_str(raw)
            .map_err(|e| fail(line, 0, &format!("not an audit line: {e}")))?;
        if let Some((end_line, _)) = &sealed {
            return Err(fail(
                line,
                previous.map(|(s, _)| s).unwrap_or(0),
                &format!(
                    "a line follows the export's final checkpoint (line {end_line}): it is not covered"
                ),
            ));
        }
        match parsed {
            AuditLine::Record {
                sequence,
                prev_hash,
                hash,
                record,
            } => {
                let prev = hash_from_hex(&prev_hash)
                    .ok_or_else(|| fail(line, sequence, "prev_hash is not 32 bytes of hex"))?;
                match previous {
                    None => {
                        if sequence == 0 {
                            return Err(fail(line, sequence, "record 0 does not exist"));
                        }
                        if sequence == 1 && prev != [0u8; 32] {
                            return Err(fail(
                                line,
                                sequence,
                                "the first record must chain from zero",
                            ));
                        }
                        first = Some((sequence, prev));
                    }
                    Some((last, last_hash)) => {
                        if last.checked_add(1) != Some(sequence) {
                            return Err(fail(
                                line,
                                sequence,
                                &format!(
                                    "expected record {} here: a record was removed or reordered",
                                    last.saturating_add(1)
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
                records += 1;
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
                checkpoints += 1;
            }
            AuditLine::ExportEnd {
                first_sequence,
                last_sequence,
                anchor,
                head,
                exported_at_unix,
                final_mark,
                signature,
            } => {
                let (Some((first, anchor_seen)), Some((last, head_seen))) = (first, previous)
                else {
                    return Err(fail(line, 0, "final checkpoint before any record"));
                };
                if !final_mark {
                    return Err(fail(
                        line,
                        last,
                        "the final checkpoint lacks its final mark",
                    ));
                }
                if first_sequence != first || hash_from_hex(&anchor) != Some(anchor_seen) {
                    return Err(fail(
                        line,
                        first,
                        &format!(
                            "the export states it starts at record {first_sequence} but its \
                             records start at {first}: records were cut from its start"
                        ),
                    ));
                }
                if last_sequence != last || hash_from_hex(&head) != Some(head_seen) {
                    return Err(fail(
                        line,
                        last,
                        &format!(
                            "the export states it ends at record {last_sequence} but its records \
                             end at {last}: records were removed or added"
                        ),
                    ));
                }
                let range = ExportRange {
                    first_sequence,
                    last_sequence,
                    anchor: anchor_seen,
                    head: head_seen,
                    exported_at_unix,
                };
                let signature = hex::decode(signature)
                    .map_err(|_| fail(line, last, "final checkpoint signature is not hex"))?;
                key.verify(&export_message(&range), &signature)
                    .map_err(|_| {
                        fail(
                            line,
                            last,
                            "final checkpoint signature does not verify with the verifier's key",
                        )
                    })?;
                sealed = Some((
                    line,
                    VerifiedExport {
                        records,
                        first_sequence,
                        last_sequence,
                        checkpoints,
                        anchor: hex::encode(anchor_seen),
                        head: hex::encode(head_seen),
                        exported_at_unix,
                    },
                ));
            }
        }
    }
    if records == 0 {
        return Err(fail(0, 0, "no records"));
    }
    match sealed {
        Some((_, summary)) => Ok(summary),
        None => Err(fail(
            0,
            previous.map(|(s, _)| s).unwrap_or(0),
            "the export does not end with its final checkpoint (final mark missing): it may \
             have been cut, and records after its last periodic checkpoint are unproven",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records 1..=n of a chain, as storage holds them.
    fn chain(records: &[&str]) -> Vec<AuditLine> {
        let mut previous = [0u8; 32];
        let mut lines = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let sequence = i as u64 + 1;
            let hash = chain_hash(&previous, sequence, record.as_bytes());
            lines.push(AuditLine::Record {
                sequence,
                prev_hash: hex::encode(previous),
                hash: hex::encode(hash),
                record: (*record).to_string(),
            });
            previous = hash;
        }
        lines
    }

    /// Periodic checkpoints at `at`, signed by `key`.
    fn periodic(key: &SigningKey, chain: &[AuditLine], at: &[u64]) -> Vec<(u64, String, String)> {
        chain
            .iter()
            .filter_map(|line| match line {
                AuditLine::Record { sequence, hash, .. } if at.contains(sequence) => {
                    let bytes = hash_from_hex(hash).unwrap();
                    let signature = key.sign(&checkpoint_message(*sequence, &bytes)).unwrap();
                    Some((*sequence, hash.clone(), hex::encode(signature)))
                }
                _ => None,
            })
            .collect()
    }

    fn to_text(lines: &[AuditLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap())
            .collect()
    }

    fn export(key: &SigningKey, records: &[&str]) -> Vec<String> {
        let chain = chain(records);
        let checkpoints = periodic(key, &chain, &[records.len() as u64]);
        to_text(&seal_export(chain, &checkpoints, key, 1_700_000_000).unwrap())
    }

    const RECORDS: [&str; 4] = ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}", "{\"d\":4}"];

    #[test]
    fn an_export_cut_after_an_earlier_checkpoint_is_refused() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_hex();
        let chain = chain(&RECORDS);
        let checkpoints = periodic(&key, &chain, &[2, 4]);
        let lines = to_text(&seal_export(chain, &checkpoints, &key, 1_700_000_000).unwrap());
        // r1 r2 cp2 r3 r4 cp4 end
        assert_eq!(lines.len(), 7);
        let ok = verify_export(&lines.join("\n"), &public).unwrap();
        assert_eq!((ok.first_sequence, ok.last_sequence), (1, 4));
        assert_eq!((ok.records, ok.checkpoints), (4, 2));
        assert!(ok.from_chain_start());
        assert_eq!(ok.exported_at_unix, 1_700_000_000);

        // Cut after the periodic checkpoint over record 2: it verifies as a chain, but the
        // export's own final checkpoint is gone.
        let cut = lines[..3].join("\n");
        let error = verify_export(&cut, &public).unwrap_err();
        assert!(error.problem.contains("final mark missing"), "{error}");

        // Cut, keeping the final checkpoint: it states record 4 as the end.
        let mut kept_end = lines[..3].to_vec();
        kept_end.push(lines[6].clone());
        let error = verify_export(&kept_end.join("\n"), &public).unwrap_err();
        assert!(error.problem.contains("ends at record 4"), "{error}");
    }

    #[test]
    fn an_export_whose_first_records_were_cut_is_refused_and_a_partial_one_proves_its_range() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_hex();
        let lines = export(&key, &RECORDS);
        let error = verify_export(&lines[1..].join("\n"), &public).unwrap_err();
        assert!(error.problem.contains("starts at record 1"), "{error}");

        // An export from record 3 on proves 3..4 and says it does not start at the chain's start.
        let from_three: Vec<AuditLine> = chain(&RECORDS).into_iter().skip(2).collect();
        let lines = to_text(&seal_export(from_three, &[], &key, 1_700_000_000).unwrap());
        let ok = verify_export(&lines.join("\n"), &public).unwrap();
        assert_eq!((ok.first_sequence, ok.last_sequence, ok.records), (3, 4, 2));
        assert!(!ok.from_chain_start());
        // ...and only as a whole: cutting record 3 from it is refused.
        assert!(verify_export(&lines[1..].join("\n"), &public).is_err());
    }

    #[test]
    fn a_final_checkpoint_without_its_mark_or_followed_by_lines_is_refused() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_hex();
        let lines = export(&key, &RECORDS);
        let end = lines.len() - 1;
        let mut unmarked = lines.clone();
        unmarked[end] = unmarked[end].replace("\"final\":true", "\"final\":false");
        assert_ne!(unmarked[end], lines[end]);
        let error = verify_export(&unmarked.join("\n"), &public).unwrap_err();
        assert!(error.problem.contains("final mark"), "{error}");

        // A periodic checkpoint's signature cannot pass for a final one.
        let mut swapped = lines.clone();
        let AuditLine::Checkpoint { signature, .. } =
            serde_json::from_str::<AuditLine>(&lines[end - 1]).unwrap()
        else {
            panic!("a checkpoint before the end");
        };
        let Ok(AuditLine::ExportEnd {
            signature: final_signature,
            ..
        }) = serde_json::from_str::<AuditLine>(&lines[end])
        else {
            panic!("the final checkpoint");
        };
        swapped[end] = swapped[end].replace(&final_signature, &signature);
        assert!(verify_export(&swapped.join("\n"), &public).is_err());

        let mut followed = lines.clone();
        followed.push(lines[0].clone());
        let error = verify_export(&followed.join("\n"), &public).unwrap_err();
        assert!(
            error.problem.contains("follows the export's final"),
            "{error}"
        );
    }

    #[test]
    fn the_verifier_does_not_seal_a_stored_chain_with_a_gap() {
        let key = SigningKey::generate().unwrap();
        let mut chain = chain(&RECORDS);
        chain.remove(1);
        assert!(seal_export(chain, &[], &key, 0).is_err());
        assert!(seal_export(Vec::new(), &[], &key, 0).unwrap().is_empty());
    }

    #[test]
    fn untouched_verifies_and_each_tampering_is_named() {
        let key = SigningKey::generate().unwrap();
        let public = key.public_hex();
        let lines = export(&key, &RECORDS);
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
