//! Incremental PCR replay of IMA entries, and the template-hash check.
//!
//! Each entry extends H_bank(template data) into its PCR in every bank, computed from the same
//! template data; a violation extends all-0xFF of the bank's size instead. The logged template
//! hash must equal the recomputed one in its own algorithm: a mismatch means the entry's fields
//! are not what was measured (an attack signal), and is reported by entry index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImaError;
use super::template::{ImaEntry, ImaLog};
use crate::digest::HashAlgorithm;

/// Where replay stands: PCR values per bank and index, and how many entries were consumed. Saved
/// by the verifier after each good appraisal and resumed from, so only new entries are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImaState {
    /// Entries consumed: the list offset the next batch starts at.
    pub entries: u64,
    /// bank -> PCR index -> value.
    #[serde(with = "crate::hex_digests::banks")]
    pub pcrs: BTreeMap<HashAlgorithm, BTreeMap<u32, Vec<u8>>>,
}

/// The name the design notes use for [`ImaState`].
pub type ImaReplayState = ImaState;

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

impl ImaReplay {
    /// The first template-hash mismatch as an error naming the entry, if any.
    pub fn check_template_hashes(&self, log: &ImaLog) -> Result<(), ImaError> {
        match self.mismatches.first() {
            None => Ok(()),
            Some(index) => Err(ImaError::TemplateHash {
                index: *index,
                path: log
                    .entries
                    .iter()
                    .find(|e| e.index == *index)
                    .map(|e| e.path.clone())
                    .unwrap_or_default(),
            }),
        }
    }
}

/// What one entry did to the state.
struct Step {
    violation: bool,
    mismatch: bool,
}

/// Extends one entry into `state` for every bank and checks its logged template hash.
fn step(state: &mut ImaState, entry: &ImaEntry, banks: &[HashAlgorithm]) -> Step {
    let violation = entry.is_violation();
    // The check reuses the bank digest of the logged hash's size when there is one.
    let mut matched = false;
    for bank in banks {
        let digest = if violation {
            vec![0xff; bank.size()]
        } else {
            bank.hash(&entry.hashed)
        };
        if !violation && !matched && digest == entry.logged_hash {
            matched = true;
        }
        let current = state
            .pcrs
            .entry(*bank)
            .or_default()
            .entry(entry.pcr)
            .or_insert_with(|| vec![0u8; bank.size()]);
        bank.extend_in_place(current, &digest);
    }
    // Otherwise try each algorithm of that size (32 bytes may be SHA-256 or SM3).
    let mismatch = !violation
        && !matched
        && !HashAlgorithm::ALL.iter().any(|alg| {
            alg.size() == entry.logged_hash.len()
                && !banks.contains(alg)
                && alg.hash(&entry.hashed) == entry.logged_hash
        });
    state.entries = entry.index.saturating_add(1);
    Step {
        violation,
        mismatch,
    }
}

/// Replays `log` onto `from` for `banks`. Entries must start where `from` ended.
pub fn replay(from: &ImaState, log: &ImaLog, banks: &[HashAlgorithm]) -> ImaReplay {
    let mut state = from.clone();
    let mut violations = Vec::new();
    let mut mismatches = Vec::new();
    for entry in &log.entries {
        let done = step(&mut state, entry, banks);
        if done.violation {
            violations.push(entry.index);
        }
        if done.mismatch {
            mismatches.push(entry.index);
        }
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
    let mut running = ImaReplay {
        state: from.clone(),
        violations: Vec::new(),
        mismatches: Vec::new(),
    };
    // The best prefix so far: its state and how many violations/mismatches it had.
    let mut best = matches(from).then(|| (from.clone(), 0, 0));
    for entry in &log.entries {
        let done = step(&mut running.state, entry, banks);
        if done.violation {
            running.violations.push(entry.index);
        }
        if done.mismatch {
            running.mismatches.push(entry.index);
        }
        if matches(&running.state) {
            best = Some((
                running.state.clone(),
                running.violations.len(),
                running.mismatches.len(),
            ));
        }
    }
    let (state, violations, mismatches) = best?;
    running.violations.truncate(violations);
    running.mismatches.truncate(mismatches);
    Some(ImaReplay {
        state,
        violations: running.violations,
        mismatches: running.mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ima::parse_ascii;

    const BANKS: [HashAlgorithm; 2] = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];

    fn list() -> Vec<u8> {
        // Two real-shaped ima-ng lines (template hashes computed by the kernel rules) and a
        // violation.
        let mut text = String::new();
        for path in ["/bin/a", "/bin/b"] {
            let data = crate::ima::template::ng_template_data(
                crate::ima::Template::ImaNg,
                "sha256",
                &[5; 32],
                path,
                None,
            );
            text += &format!(
                "10 {} ima-ng sha256:{} {path}\n",
                hex::encode(HashAlgorithm::Sha1.hash(&data)),
                "05".repeat(32)
            );
        }
        text += &format!(
            "10 {} ima-ng sha256:{} /bin/c\n",
            "00".repeat(20),
            "00".repeat(32)
        );
        text.into_bytes()
    }

    #[test]
    fn a_violation_extends_all_ff() {
        let log = parse_ascii(&list(), 0).unwrap();
        let out = replay(&ImaState::default(), &log, &BANKS);
        assert_eq!(out.violations, vec![2]);
        assert!(out.mismatches.is_empty());
        let mut expected = vec![0u8; 32];
        for entry in &log.entries[..2] {
            HashAlgorithm::Sha256
                .extend_in_place(&mut expected, &HashAlgorithm::Sha256.hash(&entry.hashed));
        }
        HashAlgorithm::Sha256.extend_in_place(&mut expected, &[0xff; 32]);
        assert_eq!(
            out.state.pcr(HashAlgorithm::Sha256, 10),
            Some(&expected[..])
        );
        assert_eq!(out.state.entries, 3);
    }

    #[test]
    fn replay_to_quote_stops_at_the_quoted_prefix() {
        let log = parse_ascii(&list(), 0).unwrap();
        let one = ImaLog {
            entries: log.entries[..1].to_vec(),
            trailing_bytes: 0,
        };
        let after_one = replay(&ImaState::default(), &one, &BANKS).state;
        let quoted = after_one.pcr(HashAlgorithm::Sha256, 10).unwrap().to_vec();
        let got = replay_to_quote(
            &ImaState::default(),
            &log,
            &BANKS,
            HashAlgorithm::Sha256,
            10,
            &quoted,
        )
        .unwrap();
        assert_eq!(got.state, after_one);
        assert!(
            got.violations.is_empty(),
            "the violation came after the quote"
        );
        assert!(
            replay_to_quote(
                &ImaState::default(),
                &log,
                &BANKS,
                HashAlgorithm::Sha256,
                10,
                &[1; 32]
            )
            .is_none()
        );
    }

    #[test]
    fn a_mismatch_is_an_error_naming_the_entry() {
        let mut text = String::from_utf8(list()).unwrap();
        text = text.replacen("/bin/b", "/bin/x", 1);
        let log = parse_ascii(text.as_bytes(), 40).unwrap();
        let out = replay(&ImaState::default(), &log, &BANKS);
        assert_eq!(out.mismatches, vec![41]);
        let err = out.check_template_hashes(&log).unwrap_err();
        assert!(err.to_string().contains("entry 41"), "{err}");
        assert!(err.to_string().contains("/bin/x"), "{err}");
    }
}
