//! The verdict vocabulary, shared by the appraisal (attestation) and the judges of evidence
//! against reference values (reference): what an appraisal concludes, the
//! rules that failed, each with the event or file that failed it, and the [`Basis`] (trust
//! list, policy, manifests) it relied on.
//!
//! A failure's subject, values and detail often quote the device (a kernel command line, an IMA
//! path, event data, a fact): they are escaped here, where every failure is made, and again when
//! one is shown (escaping is idempotent), so no control character, ANSI escape, bidi override or
//! forged line reaches a reason, a report or a log raw ([`crate::untrusted_text`]).

use serde::{Deserialize, Serialize};

use crate::untrusted_text::escape;

/// Every appraisal rule, named. A verdict lists each one that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The answer did not arrive before the challenge expired, or was not for the outstanding one.
    ChallengeAnswered,
    /// The quote or signature could not be parsed.
    QuoteWellFormed,
    /// Magic is TPM_GENERATED and type is ATTEST_QUOTE.
    QuoteMagicAndType,
    /// Signed by the enrolled AK with the pinned scheme and hash.
    QuoteSignature,
    /// qualifiedSigner is the enrolled AK's name.
    QuoteSigner,
    /// The outstanding nonce is unexpired and never used before.
    Nonce,
    /// extraData is SHA-256(nonce || the TLS exporter of the stream's own connection): the quote
    /// was made for this challenge on this connection, not relayed from another (nor over the
    /// bare nonce).
    ChannelBinding,
    /// The PCR values cover exactly the signed selection and hash to pcrDigest.
    PcrDigest,
    /// The required PCR bank (sha256 unless policy says otherwise) is quoted: no SHA-1 downgrade.
    RequiredBank,
    /// clockInfo (resetCount, restartCount, clock) only moves forward, and safe is set.
    ClockMonotonic,
    /// After a TPM reset a new boot log is required, and the IMA log must start again.
    ResetHandling,
    /// Evidence the challenge asked for (the boot log) is in the answer: an answer that leaves
    /// out what was asked is refused, never judged on what it chose to send.
    RequestedEvidence,
    /// The boot log parses and replays to the quoted PCRs.
    BootLogReplay,
    /// (PCR, event type) pairs are allowed; separators, variables and actions are well formed.
    BootEventRules,
    /// Boot measurements match the reference values in the device's policy.
    BootReferenceValues,
    /// IMA entries parse, template hashes recompute, and PCR 10 replays to the quoted value.
    ImaReplay,
    /// Measured files are on the allowlist.
    ImaAllowlist,
    /// After the device's allowlist changed, the answer carries the whole IMA list of the boot
    /// (from entry 0, as the challenge asked), so every entry is judged again.
    ImaRejudgement,
    /// The trust list still admits the device, its maker and every manifest used.
    TrustList,
    /// The verifier could not complete the appraisal (fails closed).
    AppraisalCompleted,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::ChallengeAnswered => "challenge_answered",
            Rule::QuoteWellFormed => "quote_well_formed",
            Rule::QuoteMagicAndType => "quote_magic_and_type",
            Rule::QuoteSignature => "quote_signature",
            Rule::QuoteSigner => "quote_signer",
            Rule::Nonce => "nonce",
            Rule::ChannelBinding => "channel_binding",
            Rule::PcrDigest => "pcr_digest",
            Rule::RequiredBank => "required_bank",
            Rule::ClockMonotonic => "clock_monotonic",
            Rule::ResetHandling => "reset_handling",
            Rule::RequestedEvidence => "requested_evidence",
            Rule::BootLogReplay => "boot_log_replay",
            Rule::BootEventRules => "boot_event_rules",
            Rule::BootReferenceValues => "boot_reference_values",
            Rule::ImaReplay => "ima_replay",
            Rule::ImaAllowlist => "ima_allowlist",
            Rule::ImaRejudgement => "ima_rejudgement",
            Rule::TrustList => "trust_list",
            Rule::AppraisalCompleted => "appraisal_completed",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub rule: Rule,
    /// The event, entry, PCR or field concerned (e.g. "event 41 (EV_EFI_BOOT_SERVICES_APPLICATION)").
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub measured: String,
    #[serde(default)]
    pub expected: String,
    #[serde(default)]
    pub detail: String,
}

impl Failure {
    pub fn new(rule: Rule, detail: impl Into<String>) -> Self {
        Self {
            rule,
            subject: String::new(),
            measured: String::new(),
            expected: String::new(),
            detail: escaped(detail.into()),
        }
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = escaped(subject.into());
        self
    }

    pub fn values(mut self, measured: impl Into<String>, expected: impl Into<String>) -> Self {
        self.measured = escaped(measured.into());
        self.expected = escaped(expected.into());
        self
    }
}

fn escaped(text: String) -> String {
    match escape(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(safe) => safe,
    }
}

impl std::fmt::Display for Failure {
    /// Escapes again: a failure read back from storage or a report was not necessarily made here.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.rule)?;
        if !self.subject.is_empty() {
            write!(f, " [{}]", escape(&self.subject))?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", escape(&self.detail))?;
        }
        if !self.measured.is_empty() || !self.expected.is_empty() {
            write!(
                f,
                " (measured {}, expected {})",
                escape(&self.measured),
                escape(&self.expected)
            )?;
        }
        Ok(())
    }
}

/// The outcome of one appraisal. It passes only if no rule failed: there is no other way to build
/// a passing verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    failures: Vec<Failure>,
    /// Notes that are not failures (e.g. "TPM reset with a fresh boot log: reboot recorded").
    pub notes: Vec<String>,
    /// The trust-list version, policy and manifests (with their signers) the verdict relied on.
    #[serde(default)]
    pub basis: Basis,
}

impl Verdict {
    pub fn new() -> Self {
        Self {
            failures: Vec::new(),
            notes: Vec::new(),
            basis: Basis::default(),
        }
    }

    pub fn fail(&mut self, failure: Failure) {
        self.failures.push(failure);
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// Whether every failure rests on approval (reference values, allowlist, trust list)
    /// rather than on the integrity of the evidence.
    pub fn policy_only(&self) -> bool {
        !self.failures.is_empty()
            && self.failures.iter().all(|f| {
                matches!(
                    f.rule,
                    Rule::BootReferenceValues | Rule::ImaAllowlist | Rule::TrustList
                )
            })
    }

    pub fn failed_rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self.failures.iter().map(|f| f.rule).collect();
        rules.dedup();
        rules
    }

    /// One line for logs and the device's state reason.
    pub fn summary(&self) -> String {
        if self.passed() {
            "all rules passed".into()
        } else {
            self.failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Self::new()
    }
}

/// What a verdict relied on: one consistent version of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_list_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub id: String,
    pub signer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_text_in_a_failure_is_escaped_where_the_failure_is_made() {
        let cmdline = "root=/dev/sda1\nINFO appraisal passed device=tc-1\x1b[0m";
        let failure = Failure::new(
            Rule::BootReferenceValues,
            format!("kernel command line {cmdline}"),
        )
        .subject("event 12 (EV_IPL)\r\u{202e}")
        .values(cmdline, "an approved command line");
        assert_eq!(
            failure.detail,
            "kernel command line root=/dev/sda1\\nINFO appraisal passed device=tc-1\\u{1b}[0m"
        );
        assert_eq!(failure.subject, "event 12 (EV_IPL)\\r\\u{202e}");
        assert!(!failure.measured.contains('\n') && !failure.measured.contains('\x1b'));
        let mut verdict = Verdict::new();
        verdict.fail(failure);
        let summary = verdict.summary();
        assert!(
            !summary.chars().any(|c| c.is_control()) && !summary.contains('\u{202e}'),
            "{summary}"
        );
        assert!(summary.starts_with("boot_reference_values [event 12 (EV_IPL)\\r"));
    }

    #[test]
    fn a_failure_read_back_raw_is_escaped_when_shown() {
        let stored = r#"{"rule":"ima_allowlist","subject":"/tmp/x\n\u001b[1mfile","detail":"not on the allowlist"}"#;
        let failure: Failure = serde_json::from_str(stored).unwrap();
        assert_eq!(
            failure.to_string(),
            "ima_allowlist [/tmp/x\\n\\u{1b}[1mfile]: not on the allowlist"
        );
    }
}
