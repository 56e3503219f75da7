//! A device's trust state.

use serde::{Deserialize, Serialize};

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
