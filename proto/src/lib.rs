//! TrustChain's gRPC API.
//!
//! # Layout
//! - `proto/trustchain.proto`: the wire contract (enrollment, attestation stream, admin/watch).
//! - `build.rs`: code generation with `protox` + `tonic-prost-build` (no system `protoc`).
//! - [`v1`]: the generated messages, clients and servers.
//! - [`binding`]: the quote's channel binding (qualifyingData), one definition for both sides.
//!
//! Generated types stop at the gRPC edge: each side converts them once into its own domain types
//! that cannot hold invalid states, and appraisal code never sees a prost type.

pub mod binding;
pub mod codec;
mod parts;

pub use parts::{EVIDENCE_PART_BYTES, EVIDENCE_WHOLE_BYTES, evidence_messages};

/// Generated code for package `trustchain.v1`.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("trustchain.v1");
}
