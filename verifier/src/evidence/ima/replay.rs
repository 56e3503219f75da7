//! Incremental PCR replay of IMA entries, and the template-hash check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::parse::ImaLog;
use crate::evidence::digest::HashAlgorithm;

/// Where replay stands: PCR values per bank and index, and how many entries were consumed. Saved
/// by the verifier after each good appraisal, and resumed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImaState {
    pub entries: u64,
    /// bank -> PCR index -> value.
    pub pcrs: BTreeMap<HashAlgorithm, BTreeMap<u32, Vec<u8>>>,
}

impl ImaState {
    pub fn pcr(&self, bank: HashAlgorithm, index: u32) -> Option<&[u8]> {
        self.pcrs
            .get(&bank)
            .and_then(|p| p.get(&index))
            .map(Vec::as_slice)
    }
}

/// The outcome of replaying a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaReplay {
    pub state: ImaState,
    /// List positions of violation entries (extended as all-0xFF; never matched against policy).
    pub violations: Vec<u64>,
    /// List positions whose logged template hash is not the hash of their template data.
    pub mismatches: Vec<u64>,
}

/// The algorithm a logged template hash was made with, by its length.
fn logged_algorithm(length: usize) -> Option<HashAlgorithm> {
    match length {
        20 => Some(HashAlgorithm::Sha1),
        32 => Some(HashAlgorithm::Sha256),
        48 => Some(HashAlgorithm::Sha384),
        64 => Some(HashAlgorithm::Sha512),
        _ => None,
    }
}

/// Replays `log` onto `from` for `banks`. Entries must start where `from` ended.
pub fn replay(from: &ImaState, log: &ImaLog, banks: &[HashAlgorithm]) -> ImaReplay {
    let mut state = from.clone();
    let mut violations = Vec::new();
    let mut mismatches = Vec::new();
    for entry in &log.entries {
        let violation = entry.is_violation();
        let logged = logged_algorithm(entry.logged_hash.len());
        // The template-hash check reuses the bank hash of the same algorithm when there is one.
        let mut logged_matches = None;
        for bank in banks {
            let digest = if violation {
                vec![0xff; bank.size()]
            } else {
                bank.hash(&entry.hashed)
            };
            if !violation && logged == Some(*bank) {
                logged_matches = Some(digest == entry.logged_hash);
            }
            let pcrs = state.pcrs.entry(*bank).or_default();
            let current = pcrs
                .entry(entry.pcr)
                .or_insert_with(|| vec![0u8; bank.size()]);
            bank.extend_in_place(current, &digest);
        }
        if violation {
            violations.push(entry.index);
        } else {
            let matches = logged_matches.unwrap_or_else(|| {
                logged.is_some_and(|alg| alg.hash(&entry.hashed) == entry.logged_hash)
            });
            if !matches {
                mismatches.push(entry.index);
            }
        }
        state.entries = entry.index + 1;
    }
    ImaReplay {
        state,
        violations,
        mismatches,
    }
}

/// Replays `log` onto `from` entry by entry and returns the longest prefix (possibly empty) after
/// which PCR `pcr` equals `quoted` in `bank`: entries the kernel logged after the TPM was quoted
/// are left for the next round. `None` if no prefix matches.
pub fn replay_to_quote(
    from: &ImaState,
    log: &ImaLog,
    banks: &[HashAlgorithm],
    bank: HashAlgorithm,
    pcr: u32,
    quoted: &[u8],
) -> Option<ImaReplay> {
    let zero = vec![0u8; bank.size()];
    let matches = |state: &ImaState| state.pcr(bank, pcr).unwrap_or(&zero) == quoted;
    let mut best = matches(from).then(|| ImaReplay {
        state: from.clone(),
        violations: Vec::new(),
        mismatches: Vec::new(),
    });
    let mut running = ImaReplay {
        state: from.clone(),
        violations: Vec::new(),
        mismatches: Vec::new(),
    };
    for entry in &log.entries {
        let single = ImaLog {
            entries: vec![entry.clone()],
            trailing_bytes: 0,
        };
        let step = replay(&running.state, &single, banks);
        running.state = step.state;
        running.violations.extend(step.violations);
        running.mismatches.extend(step.mismatches);
        if matches(&running.state) {
            best = Some(running.clone());
        }
    }
    best
}
