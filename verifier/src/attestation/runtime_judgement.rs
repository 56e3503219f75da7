//! Re-judging a boot's IMA entries when the device's allowlist changes (rule `ima_rejudgement`).
//!
//! IMA entries travel once per boot and are judged as they arrive. Each accepted appraisal
//! records the allowlist it judged them under (its fingerprint, `AppraisalState::ima_judged_under`);
//! when the device's allowlist is no longer that one (a policy or manifest import, a revocation,
//! a change window closing), the next challenge asks for the whole list from entry 0, the answer
//! is replayed from the start to the quoted PCR 10, and every entry is judged against the new
//! allowlist: a binary measured before a revocation fails `ima_allowlist` at the next appraisal.
//! Nothing is kept per device beyond the fingerprint. An answer that does not start at entry 0
//! fails `ima_rejudgement`.

use super::inputs::{AppraisalState, Challenge, Evidence};
use crate::verdict::{Failure, Rule};

/// How much of a fingerprint a note shows.
const SHOWN: usize = 16;

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..SHOWN).unwrap_or(fingerprint)
}

/// The failure of an answer that leaves out the entries a re-judgement needs.
pub fn omitted(challenge: &Challenge, evidence: &Evidence) -> Failure {
    let detail = if challenge.ima_offset == 0 {
        "the allowlist changed: the challenge asked for the whole IMA list from entry 0, and the answer left out its start"
    } else {
        // The verifier did not ask (it always should): fail closed rather than keep entries
        // judged under another allowlist.
        "the allowlist changed and the IMA entries before the offset were not asked for again: they cannot be re-judged"
    };
    Failure::new(Rule::ImaRejudgement, detail)
        .subject("IMA list")
        .values(
            format!("entries from {}", evidence.ima_offset),
            "entries from 0",
        )
}

/// The note a re-judgement leaves in the verdict, and so in its signed result
/// (`trustchain.notes`).
pub fn note(prior: &AppraisalState, basis: &str, entries: u64) -> String {
    let before = if prior.ima_judged_under.is_empty() {
        "none recorded"
    } else {
        short(&prior.ima_judged_under)
    };
    format!(
        "IMA entries 0..{entries} re-judged from the start under allowlist {} (before: {before})",
        short(basis)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::quote::PcrValues;
    use crate::evidence::tpm::PcrSelection;
    use std::time::Instant;

    #[test]
    fn an_answer_that_skips_the_start_names_the_rule() {
        let challenge = Challenge {
            id: 1,
            nonce: crate::attestation::nonce::ChallengeNonce::draw().unwrap(),
            bound: [0; 32],
            selection: PcrSelection::new(Vec::new()),
            want_boot_log: false,
            ima_offset: 0,
            expires: Instant::now(),
        };
        let evidence = Evidence {
            challenge_id: 1,
            quote: Vec::new(),
            signature: Vec::new(),
            pcr_values: PcrValues::default(),
            boot_log: None,
            ima_offset: 7,
            ima_entries: Vec::new(),
            received: Instant::now(),
        };
        let failure = omitted(&challenge, &evidence);
        assert_eq!(failure.rule, Rule::ImaRejudgement);
        assert_eq!(failure.measured, "entries from 7");
        let prior = AppraisalState {
            ima_judged_under: "ab".repeat(32),
            ..AppraisalState::default()
        };
        let note = note(&prior, &"cd".repeat(32), 12);
        assert!(note.contains("0..12"), "{note}");
        assert!(note.contains(&"cd".repeat(8)), "{note}");
        assert!(note.contains(&"ab".repeat(8)), "{note}");
    }
}
