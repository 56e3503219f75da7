//! Appraisal: one challenge's evidence against the device's enrolled AK and its last good state.
//! Every rule of DESIGN.md's list is a separate check that adds its own [`Failure`]; nothing
//! turns an error into a pass, and a verdict passes only when no rule failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::verdict::{Failure, Rule, Verdict};
use crate::evidence::digest::HashAlgorithm;
use crate::evidence::eventlog::{self, EventLog, ReplayOptions};
use crate::evidence::ima::{self, ImaState};
use crate::evidence::quote::{
    PcrValues, QuoteError, QuoteExpectations, VerifyingKey, verify_quote,
};
use crate::evidence::tpm::{ClockInfo, PcrSelection};
use crate::reference::trust::{Governance, Snapshot};

/// PCRs measured by firmware and boot loaders (appraised against the boot log).
pub const BOOT_PCRS: std::ops::RangeInclusive<u32> = 0..=9;
/// The PCR IMA extends.
pub const IMA_PCR: u32 = 10;

/// What the verifier asked.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub id: u64,
    pub nonce: [u8; 32],
    pub selection: PcrSelection,
    pub want_boot_log: bool,
    pub ima_offset: u64,
    pub expires: Instant,
}

/// What the agent answered, converted from the wire once.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub challenge_id: u64,
    pub quote: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcr_values: PcrValues,
    pub boot_log: Option<Vec<u8>>,
    pub ima_offset: u64,
    pub ima_entries: Vec<u8>,
    pub received: Instant,
}

/// What the last good appraisal established; the next one starts from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppraisalState {
    pub clock: Option<ClockInfo>,
    /// PCR values (required bank) the accepted boot log replays to, for the current boot.
    #[serde(with = "crate::evidence::hex_digests::pcrs")]
    pub boot_pcrs: BTreeMap<u32, Vec<u8>>,
    pub boot_reset_count: Option<u32>,
    /// IMA replay state for the current boot.
    pub ima: ImaState,
    /// A reset after which the TPM reported safe = NO (power loss without an orderly shutdown):
    /// within that boot an unsafe clock is explained, and accepted.
    #[serde(default)]
    pub unsafe_clock_reset: Option<u32>,
    /// The trust documents (snapshot fingerprint and policy) the accepted boot log was judged
    /// under, and until when that judgement holds (a change window closing): when either
    /// moves, the verifier asks for the boot log again.
    #[serde(default)]
    pub boot_judged_under: String,
    #[serde(default)]
    pub boot_judged_until: i64,
}

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
        QuoteError::NonceMismatch => Rule::Nonce,
        _ => Rule::PcrDigest,
    };
    Failure::new(rule, error.to_string())
}

/// (resetCount, restartCount, clock) must never go back; `safe` must be set, except within a
/// boot that began with a TPM reset the verifier saw (power loss makes the TPM report safe = NO
/// until it next saves its clock; the reset itself explains it, and resetCount still orders the
/// quotes). Returns the reset an unsafe clock is accepted for.
fn check_clock(
    prior: Option<&ClockInfo>,
    now: &ClockInfo,
    accepted_unsafe: Option<u32>,
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

/// Whether an event type may be extended into a PCR (PFP Table 9 and §10.4). Default deny.
pub fn event_allowed(pcr: u32, event_type: u32) -> bool {
    use eventlog::*;
    if event_type == EV_NO_ACTION {
        return true;
    }
    let common = matches!(
        event_type,
        EV_SEPARATOR | EV_POST_CODE | EV_EFI_ACTION | EV_ACTION
    );
    common
        || match pcr {
            0 => matches!(
                event_type,
                EV_S_CRTM_VERSION
                    | EV_S_CRTM_CONTENTS
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB2
                    | EV_EFI_HCRTM_EVENT
                    | EV_EFI_SPDM_FIRMWARE_BLOB
                    | EV_NONHOST_CODE
                    | EV_NONHOST_INFO
                    | EV_TABLE_OF_DEVICES
            ),
            1 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                    | EV_EFI_VARIABLE_BOOT
                    | EV_EFI_VARIABLE_BOOT2
                    | EV_EFI_HANDOFF_TABLES
                    | EV_EFI_HANDOFF_TABLES2
                    | EV_PLATFORM_CONFIG_FLAGS
                    | EV_TABLE_OF_DEVICES
                    | EV_CPU_MICROCODE
                    | EV_NONHOST_CONFIG
                    | EV_NONHOST_INFO
                    | EV_EFI_SPDM_FIRMWARE_CONFIG
            ),
            2 => matches!(
                event_type,
                EV_EFI_BOOT_SERVICES_DRIVER
                    | EV_EFI_RUNTIME_SERVICES_DRIVER
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB2
                    | EV_EFI_SPDM_FIRMWARE_BLOB
                    | EV_NONHOST_CODE
                    | EV_NONHOST_INFO
                    | EV_COMPACT_HASH
            ),
            3 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                    | EV_EFI_SPDM_FIRMWARE_CONFIG
                    | EV_NONHOST_CONFIG
                    | EV_NONHOST_INFO
            ),
            4 => matches!(
                event_type,
                EV_EFI_BOOT_SERVICES_APPLICATION | EV_COMPACT_HASH | EV_IPL | EV_EVENT_TAG
            ),
            5 => matches!(
                event_type,
                EV_EFI_GPT_EVENT
                    | EV_EFI_GPT_EVENT2
                    | EV_EFI_VARIABLE_BOOT
                    | EV_EFI_HANDOFF_TABLES
                    | EV_EVENT_TAG
            ),
            6 => matches!(event_type, EV_COMPACT_HASH | EV_EVENT_TAG),
            7 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                    | EV_EFI_VARIABLE_AUTHORITY
                    | EV_EFI_SPDM_FIRMWARE_CONFIG
            ),
            // Boot loaders and the OS (GRUB, shim's MOK, systemd-stub): IPL strings, tags, hashes.
            8..=15 => matches!(
                event_type,
                EV_IPL | EV_EVENT_TAG | EV_COMPACT_HASH | EV_EFI_VARIABLE_AUTHORITY
            ),
            _ => false,
        }
}

fn event_subject(event: &eventlog::Event) -> String {
    format!(
        "event {} (PCR {}, {})",
        event.index,
        event.pcr,
        eventlog::event_type_name(event.event_type)
    )
}

/// Structural rules on the boot log: allowed (PCR, type) pairs, separators, variables after the
/// separator, and events whose digest must be the hash of their data.
fn check_boot_events(log: &EventLog, verdict: &mut Verdict) {
    use eventlog::*;
    let mut separators: BTreeMap<u32, usize> = BTreeMap::new();
    for event in log
        .events
        .iter()
        .skip(if log.spec_id.is_some() { 1 } else { 0 })
    {
        if !event_allowed(event.pcr, event.event_type) {
            verdict.fail(
                Failure::new(Rule::BootEventRules, "event type not allowed in this PCR")
                    .subject(event_subject(event)),
            );
            continue;
        }
        if event.event_type == EV_SEPARATOR && event.pcr <= 7 {
            let count = separators.entry(event.pcr).or_default();
            *count += 1;
            if *count > 1 {
                verdict.fail(
                    Failure::new(Rule::BootEventRules, "duplicate separator")
                        .subject(event_subject(event)),
                );
            }
            let value = event.data.as_slice();
            if value != [0, 0, 0, 0] && value != *b"WBCL" {
                verdict.fail(
                    Failure::new(
                        Rule::BootEventRules,
                        "separator signals a firmware error or is malformed",
                    )
                    .subject(event_subject(event))
                    .values(hex::encode(value), "00000000"),
                );
            }
        }
        if event.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG
            && event.pcr == 7
            && separators.get(&7).copied().unwrap_or(0) > 0
        {
            verdict.fail(
                Failure::new(
                    Rule::BootEventRules,
                    "secure boot configuration variable measured after the separator",
                )
                .subject(event_subject(event)),
            );
        }
        if let Some(check) = event.digest_check()
            && !check.holds()
        {
            let banks: Vec<&str> = check.mismatched.iter().map(|b| b.name()).collect();
            verdict.fail(
                Failure::new(
                    Rule::BootEventRules,
                    format!(
                        "digest is not the hash of the event data ({})",
                        banks.join(", ")
                    ),
                )
                .subject(event_subject(event)),
            );
        }
    }
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
            nonce: &challenge.nonce,
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
        };
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

    // Boot: the log replays to the quoted PCRs, and its events obey the rules.
    let quoted = |pcr: u32| evidence.pcr_values.get(bank, pcr);
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
                next.boot_judged_under = policy.boot_basis();
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
    if required.contains(&IMA_PCR) {
        let from = if fresh_boot {
            ImaState::default()
        } else {
            prior.ima.clone()
        };
        let rule = if reset {
            Rule::ResetHandling
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
                            governance.references.allowlist.check(&log, &mut verdict);
                        }
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
    }
}
