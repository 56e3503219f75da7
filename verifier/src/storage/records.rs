//! Records the verifier keeps. Stored as JSON: readable in an incident, and a field added later
//! with `#[serde(default)]` reads old records.

use serde::{Deserialize, Serialize};

/// Which EK a device enrolled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EkKind {
    Rsa2048,
    EccP256,
}

/// A device's trust state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Enrolled, not yet appraised.
    Enrolled,
    Trusted,
    /// Failed appraisal; sticky until an operator clears it or policy lets it recover.
    Untrusted,
    /// No valid answer for too long; distinct from untrusted.
    TimedOut,
    /// Untrusted and cut off: its certificate is revoked.
    Quarantined,
    /// Out of service for good: its EK can never enroll or attest again.
    Decommissioned,
}

impl DeviceState {
    pub const ALL: [DeviceState; 6] = [
        DeviceState::Enrolled,
        DeviceState::Trusted,
        DeviceState::Untrusted,
        DeviceState::TimedOut,
        DeviceState::Quarantined,
        DeviceState::Decommissioned,
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Enrolled => "enrolled",
            DeviceState::Trusted => "trusted",
            DeviceState::Untrusted => "untrusted",
            DeviceState::TimedOut => "timed_out",
            DeviceState::Quarantined => "quarantined",
            DeviceState::Decommissioned => "decommissioned",
        }
    }
}

/// What the agent reported about the device at enrollment (not trusted for any decision).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    pub model: String,
    pub firmware_version: String,
    pub device_class: String,
    pub agent_version: String,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Derived from the EK public key; never chosen by the agent.
    pub device_id: String,
    pub ek_kind: EkKind,
    /// Marshalled TPMT_PUBLIC of the EK.
    #[serde(with = "super::stored_bytes")]
    pub ek_public: Vec<u8>,
    #[serde(with = "super::stored_bytes")]
    pub ek_certificate: Vec<u8>,
    pub ek_certificate_serial_hex: String,
    pub ek_certificate_issuer: String,
    /// Marshalled TPMT_PUBLIC of the current AK, and its Name.
    #[serde(with = "super::stored_bytes")]
    pub ak_public: Vec<u8>,
    #[serde(with = "super::stored_bytes")]
    pub ak_name: Vec<u8>,
    #[serde(with = "super::stored_bytes")]
    pub ak_certificate: Vec<u8>,
    /// Serial of the mTLS client certificate issued at the last enrollment.
    pub client_certificate_serial_hex: String,
    pub facts: Facts,
    pub enrolled_at_unix: i64,
    pub ak_rotations: u32,
    pub state: DeviceState,
    pub state_reason: String,
    pub state_changed_at_unix: i64,
    /// The device is untrusted only because its evidence, though genuine, was not approved
    /// (reference values, allowlist, trust list): it becomes trusted again by itself once an
    /// appraisal passes (e.g. after a manifest for its new kernel is admitted). Integrity
    /// failures (signature, replay, nonce, clock) clear this, and stay until an operator acts.
    #[serde(default)]
    pub recoverable: bool,
}

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
