//! Continuous attestation (flow 2 in DESIGN.md).
//!
//! - `state`: the per-device trust state machine.
//! - The verdict vocabulary (rules, failures, verdicts) is [`crate::verdict`].
//! - `inputs`: what one appraisal takes (challenge, evidence) and keeps (the last good state).
//! - `nonce`: challenge nonces (OS CSPRNG only); `binding`: the channel binding of each quote.
//! - `appraisal`: one answer against the enrolled AK and the last good state.
//! - `boot_events`: the boot log's structural rules (allowed PCR/type pairs, separators).
//! - `runtime_judgement`: IMA entries judged again when the device's allowlist changes.
//! - `session`: the per-agent stream: challenges, timeouts, verdicts, state changes.

pub mod appraisal;
pub mod assembly;
pub mod binding;
pub mod boot_events;
pub mod inputs;
pub mod nonce;
pub mod runtime_judgement;
pub mod session;
pub mod state;
