//! Appraisal: one challenge's evidence against the device's enrolled AK and its last good state.
//! Every rule of DESIGN.md's list is a separate check that adds its own [`Failure`]; nothing
//! turns an error into a pass, and a verdict passes only when no rule failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::boot_events::check_boot_events;
pub use super::boot_events::event_allowed;
pub use super::inputs::{AppraisalState, Challenge, Evidence};
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::eventlog::{self, ReplayOptions};
use crate::evidence::ima::{self, ImaState};
use crate::evidence::quote::{QuoteError, QuoteExpectations, VerifyingKey, verify_quote};
use crate::evidence::tpm::ClockInfo;
use crate::reference::runtime::AggregateCheck;
use crate::reference::trust::{Governance, Snapshot};
use crate::verdict::{Failure, Rule, Verdict};

/// PCRs measured by firmware and boot loaders (appraised against the boot log).
pub const BOOT_PCRS: std::ops::RangeInclusive<u32> = 0..=9;
/// The PCR IMA extends.
pub const IMA_PCR: u32 = 10;

/// Appraisal settings: the device's policy and the trust documents in force, taken from one
/// snapshot for the whole appraisal.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The bank that must be quoted; SHA-1 never substitutes for it.
    pub required_bank: HashAlgorithm,
    pub vendor_workarounds: ReplayOptions,
    /// The snapshot of trust documents (trust list, policies, manifests).
    pub snapshot: Option<Arc<Snapshot>>,
    /// The policy and manifests governing this device; none: integrity rules only.
    pub governance: Option<Governance>,
    /// The trust list's findings on the device (revoked, not admitted, maker CA revoked).
    pub trust_findings: Vec<Failure>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            required_bank: HashAlgorithm::Sha256,
            vendor_workarounds: ReplayOptions::default(),
            snapshot: None,
            governance: None,
            trust_findings: Vec::new(),
        }
    }
}

impl Policy {
    /// What the boot-log judgement rests on: documents and policy version.
    pub fn boot_basis(&self) -> String {
        match (&self.snapshot, &self.governance) {
            (Some(snapshot), Some(g)) => format!(
                "{}/{}/{}",
                snapshot.fingerprint, g.references.policy.name, g.references.policy.version
            ),
            _ => String::new(),
        }
    }

    /// What the IMA judgement rests on: the fingerprint of the device's allowlist.
    pub fn ima_basis(&self) -> &str {
        self.governance
            .as_ref()
            .map(|g| g.references.allowlist.fingerprint())
            .unwrap_or_default()
    }

    /// Whether the IMA entries accepted so far in this boot were judged under another allowlist
    /// than the device's current one: the whole list must then be asked for and judged again.
    pub fn ima_rejudgement_due(&self, prior: &AppraisalState) -> bool {
        prior.boot_reset_count.is_some() && prior.ima_judged_under != self.ima_basis()
    }
}

/// The outcome of one appraisal.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The state to save when the verdict passed.
    pub next: AppraisalState,
    /// The evidence was not wrong but incomplete (a TPM reset was seen while the challenge asked
    /// for IMA entries after an offset from the previous boot): challenge again at once with the
    /// boot log and IMA from 0. Nothing is saved, and the device's state does not change.
    pub rechallenge: bool,
    /// A TPM reset with a fresh, valid boot log: a reboot, recorded as such.
    pub rebooted: bool,
    /// The boot log of the current boot was judged again (new documents or policy, or a change
    /// window closed): the basis it was judged under, recorded once the verdict passes.
    pub rejudged: Option<String>,
    /// The fingerprint of the enforced allowlist every IMA entry of this boot has now been
    /// judged under; `None` when no allowlist was applied (no policy, allowlist off, no IMA).
    pub allowlist_applied: Option<String>,
}

fn quote_failure(error: &QuoteError) -> Failure {
    let rule = match error {
        QuoteError::Malformed { .. } => Rule::QuoteWellFormed,
        QuoteError::BadMagic(_) | QuoteError::WrongType(_) => Rule::QuoteMagicAndType,
        QuoteError::SchemeMismatch { .. }
        | QuoteError::BadSignature
        | QuoteError::UnsupportedKey
        | QuoteError::Sha1Signature => Rule::QuoteSignature,
        QuoteError::SignerMismatch => Rule::QuoteSigner,
        QuoteError::NonceMismatch => {
            return Failure::new(
                Rule::ChannelBinding,
                "extraData is not SHA-256(nonce || TLS exporter) of this connection: a quote \
                 made for another connection (relayed) or over the bare nonce",
            );
        }
        _ => Rule::PcrDigest,
    };
    Failure::new(rule, error.to_string())
}

/// (resetCount, restartCount, clock) must never go back; `safe` must be set, except within a
/// boot that began with a TPM reset the verifier saw (power loss makes the TPM report safe = NO
/// until it next saves its clock; the reset itself explains it, and resetCount still orders the
/// quotes). Returns the reset an unsafe clock is accepted for.
///
/// A rise in restartCount without a new resetCount is a TPM Restart or a TPM Resume (TPM 2.0
/// Part 1 §12.2.3: both follow Shutdown(STATE); the counts cannot tell them apart). A Restart
/// resets the PCRs, which software can then extend again to the values of the accepted log, so
/// the quote no longer proves this boot's history: it fails `reset_handling` unless the
/// device's policy accepts it (`boot.accept_tpm_restart`, for devices that sleep). The device
/// regains trust at its next TPM Reset (a reboot, with a new boot log).
fn check_clock(
    prior: Option<&ClockInfo>,
    now: &ClockInfo,
    accepted_unsafe: Option<u32>,
    accept_restart: bool,
    verdict: &mut Verdict,
) -> Option<u32> {
    let reset = prior.is_some_and(|p| now.reset_count > p.reset_count);
    let mut unsafe_for = accepted_unsafe.filter(|count| *count == now.reset_count);
    if !now.safe {
        if reset {
            unsafe_for = Some(now.reset_count);
        } else if unsafe_for.is_none() {
            verdict.fail(Failure::new(
                Rule::ClockMonotonic,
                "clockInfo.safe is not set (the TPM clock may have gone back)",
            ));
        }
    }
    if let Some(prior) = prior
        && now.reset_count == prior.reset_count
        && now.restart_count > prior.restart_count
    {
        let counts = format!(
            "restartCount {} -> {} with resetCount {}",
            prior.restart_count, now.restart_count, now.reset_count
        );
        if accept_restart {
            verdict.notes.push(format!(
                "TPM Restart or Resume ({counts}) accepted by the policy (boot.accept_tpm_restart)"
            ));
        } else {
            verdict.fail(
                Failure::new(
                    Rule::ResetHandling,
                    "TPM Restart: PCRs may have been reset (restartCount rose without a TPM \
                     Reset, so software may have extended them again to the accepted values)",
                )
                .subject("clockInfo")
                .values(counts, "a TPM Reset (reboot) or unchanged counts"),
            );
        }
    }
    if let Some(prior) = prior {
        let before = (prior.reset_count, prior.restart_count, prior.clock);
        let after = (now.reset_count, now.restart_count, now.clock);
        let went_back = match (after.0.cmp(&before.0), after.1.cmp(&before.1)) {
            (std::cmp::Ordering::Less, _) => true,
            (std::cmp::Ordering::Greater, _) => false,
            (std::cmp::Ordering::Equal, std::cmp::Ordering::Less) => true,
            (std::cmp::Ordering::Equal, std::cmp::Ordering::Greater) => false,
            (std::cmp::Ordering::Equal, std::cmp::Ordering::Equal) => after.2 < before.2,
        };
        if went_back {
            verdict.fail(
                Failure::new(
                    Rule::ClockMonotonic,
                    "the TPM's clock information went back: a replayed or reset-forged quote",
                )
                .values(format!("{after:?}"), format!(">= {before:?}")),
            );
        }
    }
    unsafe_for
}

/// One failure per IMA entry whose logged template hash is not the hash of its data.
fn fail_template_mismatches(log: &ima::ImaLog, mismatches: &[u64], verdict: &mut Verdict) {
    for index in mismatches {
        let path = log
            .entries
            .iter()
            .find(|e| e.index == *index)
            .map(|e| e.path.clone())
            .unwrap_or_default();
        verdict.fail(
            Failure::new(
                Rule::ImaReplay,
                "template hash does not match the entry's data",
            )
            .subject(format!("IMA entry {index} ({})", path.escape_debug())),
        );
    }
}

/// The full appraisal.
pub fn appraise(
    key: &VerifyingKey,
    policy: &Policy,
    prior: &AppraisalState,
    challenge: &Challenge,
    evidence: &Evidence,
    nonce_fresh: bool,
) -> Outcome {
    let mut verdict = Verdict::new();
    if let Some(snapshot) = &policy.snapshot {
        verdict.basis = snapshot.basis(policy.governance.as_ref());
    }
    let mut next = prior.clone();
    let stop = |verdict: Verdict, next: AppraisalState| Outcome {
        verdict,
        next,
        rechallenge: false,
        rebooted: false,
        rejudged: None,
        allowlist_applied: None,
    };

    // The challenge: this one, in time, never answered before.
    if evidence.challenge_id != challenge.id {
        verdict.fail(Failure::new(
            Rule::ChallengeAnswered,
            "answer is not for the outstanding challenge",
        ));
        return stop(verdict, next);
    }
    if evidence.received > challenge.expires {
        verdict.fail(Failure::new(
            Rule::Nonce,
            "the challenge expired before the answer arrived",
        ));
    }
    if !nonce_fresh {
        verdict.fail(Failure::new(Rule::Nonce, "the nonce was used before"));
    }

    // The quote: signature first, then everything it signs.
    let verified = match verify_quote(
        &evidence.quote,
        &evidence.signature,
        &QuoteExpectations {
            key,
            nonce: &challenge.bound,
            pcr_values: &evidence.pcr_values,
        },
    ) {
        Ok(verified) => verified,
        Err(error) => {
            verdict.fail(quote_failure(&error));
            return stop(verdict, next);
        }
    };
    let attest = verified.attest;
    let Some(quote) = attest.quote.as_ref() else {
        verdict.fail(Failure::new(Rule::QuoteMagicAndType, "not a quote"));
        return stop(verdict, next);
    };
    // The trust list: still admits the device, its maker CAs and its TPM firmware.
    for finding in &policy.trust_findings {
        verdict.fail(finding.clone());
    }
    if let Some(revoked) = policy
        .snapshot
        .as_ref()
        .and_then(|s| s.firmware_revoked(attest.firmware_version))
    {
        verdict.fail(revoked);
    }
    let bank = policy.required_bank;
    let required: Vec<u32> = challenge
        .selection
        .banks
        .iter()
        .filter(|(alg, _)| *alg == bank)
        .flat_map(|(_, pcrs)| pcrs.iter().copied())
        .collect();
    let quoted_required: Vec<u32> = quote
        .selection
        .banks
        .iter()
        .filter(|(alg, _)| *alg == bank)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    if required.iter().any(|pcr| !quoted_required.contains(pcr)) {
        verdict.fail(
            Failure::new(
                Rule::RequiredBank,
                format!("the quote does not cover the required {bank} PCRs"),
            )
            .values(quote.selection.to_string(), challenge.selection.to_string()),
        );
        return stop(verdict, next);
    }
    if quote.selection != challenge.selection {
        verdict.fail(
            Failure::new(
                Rule::PcrDigest,
                "the quote covers other PCRs than the challenge asked for",
            )
            .values(quote.selection.to_string(), challenge.selection.to_string()),
        );
    }

    // The TPM clock.
    next.unsafe_clock_reset = check_clock(
        prior.clock.as_ref(),
        &attest.clock_info,
        prior.unsafe_clock_reset,
        policy
            .governance
            .as_ref()
            .is_some_and(|g| g.references.policy.boot.accept_tpm_restart),
        &mut verdict,
    );
    next.clock = Some(attest.clock_info);
    let reset = prior
        .boot_reset_count
        .is_some_and(|count| attest.clock_info.reset_count != count);

    // After a TPM reset, the evidence must start over: a new boot log and IMA from entry 0.
    let fresh_boot = reset || prior.boot_reset_count.is_none();
    if fresh_boot && (evidence.boot_log.is_none() || evidence.ima_offset != 0) {
        if challenge.want_boot_log && challenge.ima_offset == 0 {
            verdict.fail(Failure::new(
                Rule::ResetHandling,
                "after a TPM reset the answer must carry the new boot log and the IMA list from its start",
            ));
            return stop(verdict, next);
        }
        // The challenge predates our knowledge of the reset: ask again, fully.
        return Outcome {
            verdict,
            next: prior.clone(),
            rechallenge: true,
            rebooted: false,
            rejudged: None,
            allowlist_applied: None,
        };
    }
    let ima_rejudge =
        !fresh_boot && required.contains(&IMA_PCR) && policy.ima_rejudgement_due(prior);
    if ima_rejudge && evidence.ima_offset != 0 {
        verdict.fail(super::runtime_judgement::omitted(challenge, evidence));
        return stop(verdict, next);
    }
    if evidence.ima_offset != challenge.ima_offset {
        verdict.fail(
            Failure::new(
                Rule::ResetHandling,
                "IMA entries do not start where the challenge asked",
            )
            .values(
                evidence.ima_offset.to_string(),
                challenge.ima_offset.to_string(),
            ),
        );
        return stop(verdict, next);
    }

    // Evidence the challenge asked for is in the answer. The boot log is asked for again when the
    // documents or policy it was judged under moved: an answer that leaves it out would keep the
    // old judgement (and PCRs that match the old log) while the result names the new basis.
    if challenge.want_boot_log && evidence.boot_log.is_none() {
        verdict.fail(
            Failure::new(
                Rule::RequestedEvidence,
                "the challenge asked for the boot log and the answer does not carry it",
            )
            .subject("boot log"),
        );
        return stop(verdict, next);
    }

    // Boot: the log replays to the quoted PCRs, and its events obey the rules.
    let quoted = |pcr: u32| evidence.pcr_values.get(bank, pcr);
    let mut rejudged = None;
    if let Some(bytes) = &evidence.boot_log {
        match eventlog::parse(bytes) {
            Err(error) => verdict.fail(Failure::new(
                Rule::BootLogReplay,
                format!("boot log: {error}"),
            )),
            Ok(log) => {
                check_boot_events(&log, &mut verdict);
                let replayed = eventlog::replay(&log, &policy.vendor_workarounds);
                let mut boot_pcrs = BTreeMap::new();
                for pcr in BOOT_PCRS.filter(|p| required.contains(p)) {
                    let expected = replayed
                        .get(bank, pcr)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_else(|| vec![0u8; bank.size()]);
                    match quoted(pcr) {
                        Some(value) if value == expected.as_slice() => {}
                        Some(value) => verdict.fail(
                            Failure::new(
                                Rule::BootLogReplay,
                                "the boot log does not replay to the quoted PCR",
                            )
                            .subject(format!("PCR {pcr} ({bank})"))
                            .values(hex::encode(value), hex::encode(&expected)),
                        ),
                        None => verdict.fail(Failure::new(
                            Rule::BootLogReplay,
                            format!("PCR {pcr} not quoted"),
                        )),
                    }
                    boot_pcrs.insert(pcr, expected);
                }
                if let Some(governance) = &policy.governance {
                    crate::reference::boot::check(&log, bank, &governance.references, &mut verdict);
                    next.boot_judged_until = governance.valid_until;
                }
                let basis = policy.boot_basis();
                // The same boot's log judged anew: under other documents or policy, or after a
                // change window closed. Recorded once it passes; the verifier then stops asking.
                if !fresh_boot
                    && (prior.boot_judged_under != basis
                        || next.boot_judged_until != prior.boot_judged_until)
                {
                    verdict.notes.push(format!(
                        "boot log of the current boot re-judged under {basis} (judged before under {})",
                        if prior.boot_judged_under.is_empty() {
                            "no documents"
                        } else {
                            prior.boot_judged_under.as_str()
                        }
                    ));
                    rejudged = Some(basis.clone());
                }
                next.boot_judged_under = basis;
                next.boot_pcrs = boot_pcrs;
                next.boot_reset_count = Some(attest.clock_info.reset_count);
            }
        }
    } else {
        // No new log: the boot PCRs must still be what the accepted log replayed to.
        for (pcr, expected) in &prior.boot_pcrs {
            if quoted(*pcr) != Some(expected.as_slice()) {
                verdict.fail(
                    Failure::new(
                        Rule::BootLogReplay,
                        "PCR changed since the accepted boot log, with no log event",
                    )
                    .subject(format!("PCR {pcr} ({bank})"))
                    .values(
                        quoted(*pcr).map(hex::encode).unwrap_or_default(),
                        hex::encode(expected),
                    ),
                );
            }
        }
    }

    // IMA: template hashes recomputed, PCR 10 replayed from the last good state.
    let mut allowlist_applied = None;
    if required.contains(&IMA_PCR) {
        let from = if fresh_boot || ima_rejudge {
            ImaState::default()
        } else {
            prior.ima.clone()
        };
        let rule = if reset {
            Rule::ResetHandling
        } else if ima_rejudge {
            // Asked for the whole list, answered with less (or with other entries).
            Rule::ImaRejudgement
        } else {
            Rule::ImaReplay
        };
        match ima::parse_ascii(&evidence.ima_entries, evidence.ima_offset) {
            Err(error) => verdict.fail(Failure::new(Rule::ImaReplay, format!("IMA list: {error}"))),
            Ok(log) => {
                let quoted10 = quoted(IMA_PCR).unwrap_or_default();
                match ima::replay_to_quote(&from, &log, &[bank], bank, IMA_PCR, quoted10) {
                    None => {
                        // Name the entries whose template hash is wrong, if that is why.
                        fail_template_mismatches(
                            &log,
                            &ima::replay(&from, &log, &[bank]).mismatches,
                            &mut verdict,
                        );
                        verdict.fail(
                            Failure::new(rule, "the IMA list does not replay to the quoted PCR 10")
                                .subject(format!(
                                    "entries {}..{}",
                                    evidence.ima_offset,
                                    evidence.ima_offset + log.entries.len() as u64
                                ))
                                .values(hex::encode(quoted10), "a replay of the list"),
                        );
                    }
                    Some(replayed) => {
                        fail_template_mismatches(&log, &replayed.mismatches, &mut verdict);
                        if let Some(governance) = &policy.governance {
                            let allowlist = &governance.references.allowlist;
                            allowlist.check(
                                &log,
                                AggregateCheck::Quoted(&evidence.pcr_values),
                                &mut verdict,
                            );
                            if allowlist.enforced() {
                                allowlist_applied = Some(allowlist.fingerprint().to_string());
                            }
                        }
                        if ima_rejudge {
                            verdict.notes.push(super::runtime_judgement::note(
                                prior,
                                policy.ima_basis(),
                                replayed.state.entries,
                            ));
                        }
                        next.ima_judged_under = policy.ima_basis().to_string();
                        for index in &replayed.violations {
                            verdict.notes.push(format!(
                                "IMA violation at entry {index} (flagged, not matched)"
                            ));
                        }
                        next.ima = replayed.state;
                    }
                }
            }
        }
    }
    let rebooted = reset && verdict.passed();
    if rebooted {
        verdict.notes.push(format!(
            "TPM reset (resetCount {}) with a valid new boot log: reboot",
            attest.clock_info.reset_count
        ));
    }
    Outcome {
        verdict,
        next,
        rechallenge: false,
        rebooted,
        rejudged,
        allowlist_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(reset_count: u32, restart_count: u32, clock: u64) -> ClockInfo {
        ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe: true,
        }
    }

    fn judge(prior: &ClockInfo, now: &ClockInfo, accept_restart: bool) -> Verdict {
        let mut verdict = Verdict::new();
        check_clock(Some(prior), now, None, accept_restart, &mut verdict);
        verdict
    }

    #[test]
    fn a_tpm_restart_within_a_boot_fails_reset_handling_by_default() {
        let verdict = judge(&clock(3, 0, 1_000), &clock(3, 1, 2_000), false);
        assert_eq!(verdict.failed_rules(), vec![Rule::ResetHandling]);
        let failure = &verdict.failures()[0];
        assert!(
            failure
                .detail
                .starts_with("TPM Restart: PCRs may have been reset"),
            "{failure}"
        );
        assert_eq!(failure.measured, "restartCount 0 -> 1 with resetCount 3");
    }

    #[test]
    fn a_policy_for_sleeping_devices_accepts_a_resume_and_says_so() {
        let verdict = judge(&clock(3, 0, 1_000), &clock(3, 2, 2_000), true);
        assert!(verdict.passed(), "{}", verdict.summary());
        assert!(verdict.notes[0].contains("accepted by the policy"));
    }

    #[test]
    fn a_reset_or_unchanged_counts_are_no_restart() {
        // A TPM Reset (reboot) zeroes restartCount: the reset rules judge it, not this one.
        assert!(judge(&clock(3, 2, 1_000), &clock(4, 0, 10), false).passed());
        assert!(judge(&clock(3, 2, 1_000), &clock(3, 2, 2_000), false).passed());
        // Going back is still caught by the monotonic rule.
        assert_eq!(
            judge(&clock(3, 2, 1_000), &clock(3, 1, 2_000), true).failed_rules(),
            vec![Rule::ClockMonotonic]
        );
    }
}
