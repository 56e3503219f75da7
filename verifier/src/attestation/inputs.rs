//! What one appraisal takes and keeps: the challenge the verifier sent, the evidence the agent
//! answered with (converted from the wire once), and the state the last good appraisal
//! established, from which the next one starts.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::nonce::ChallengeNonce;
use crate::evidence::ima::ImaState;
use crate::evidence::quote::PcrValues;
use crate::evidence::tpm::{ClockInfo, PcrSelection};

/// What the verifier asked.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub id: u64,
    pub nonce: ChallengeNonce,
    /// The quote's expected qualifyingData: the nonce bound to the stream's TLS connection
    /// (`ChannelExporter::bind`).
    pub bound: [u8; 32],
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
    /// The allowlist (fingerprint, [`Policy::ima_basis`](super::appraisal::Policy::ima_basis)) this boot's IMA entries were judged
    /// under: when the device's allowlist changes, the verifier asks for the whole list again
    /// and judges every entry anew (`ima_rejudgement`).
    #[serde(default)]
    pub ima_judged_under: String,
    /// When this state was saved by a passing appraisal (Unix seconds): the durable time of
    /// the device's last pass, from which a restarted verifier counts its timeout window.
    #[serde(default)]
    pub passed_at_unix: i64,
}
