//! An enrolled device's record: its keys and certificates, what it reported at enrollment, and
//! its current trust state.

use serde::{Deserialize, Serialize};

use super::state::DeviceState;

/// Which EK a device enrolled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EkKind {
    Rsa2048,
    EccP256,
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
    /// Set when the verifier restarted while the device was trusted: the device is enrolled
    /// (not trusted) until a fresh pass, and timed out if none comes by this time (Unix
    /// seconds: its last pass before the restart plus its timeout window). Durable, so a second
    /// restart cannot restart the window. Cleared by any change of state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_evidence_due_unix: Option<i64>,
}
