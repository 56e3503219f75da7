//! The events recorded about devices and the verifier: each is one entry of the hash-chained
//! audit log (its JSON is what the chain hashes).

use serde::{Deserialize, Serialize};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enrolled,
    ReEnrolled,
    AkRotated,
    EnrollmentRefused,
    /// Something an operator must look at (e.g. a different EK claiming a known device).
    Alert,
    StateChanged,
    OperatorAction,
    /// A TPM reset with a fresh, valid boot log.
    Rebooted,
    /// The device's boot log was judged again under new trust documents or policy (the detail
    /// names the basis): from then on the verifier stops asking for it.
    BootRejudged,
    /// An appraisal failed; the detail names each failed rule.
    AppraisalFailed,
    /// A verifier process started serving on this database: records after it, up to the next,
    /// were written by that process (how an auditor tells that trust after a restart rests on
    /// appraisals the new process made).
    VerifierStarted,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at_unix_millis: i64,
    pub kind: EventKind,
    /// The device concerned, when known (for a refused unknown device: the derived id).
    pub device_id: String,
    pub detail: String,
}
