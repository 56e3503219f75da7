//! Continuous attestation (flow 2 in DESIGN.md).
//!
//! - `state`: the per-device trust state machine.
//! - `verdict`: named rules, failures and verdicts.
//! - `appraisal`: one answer against the enrolled AK and the last good state.
//! - `runtime_judgement`: IMA entries judged again when the device's allowlist changes.
//! - `session`: the per-agent stream: challenges, timeouts, verdicts, state changes.

pub mod appraisal;
pub mod assembly;
pub mod runtime_judgement;
pub mod session;
pub mod state;
pub mod verdict;
