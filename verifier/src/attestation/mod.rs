//! Continuous attestation (flow 2 in DESIGN.md).
//!
//! - `state`: the per-device trust state machine.

pub mod state;
