//! TrustChain verifier: the SOC service that appraises what devices send.
//!
//! # Layout (follows the data path)
//! - [`evidence`]: pure-Rust parsers for everything a device sends, with explicit bounds.
//!   - `evidence::reader`: the bounded big/little-endian byte reader every parser uses.
//!   - `evidence::digest`: TPM hash algorithms and hashing.
//!   - `evidence::tpm`: TPM 2.0 wire structures (TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE,
//!     TPML_PCR_SELECTION, names).
//!   - `evidence::quote`: quote verification (signature, nonce, PCR digest).
//!   - `evidence::eventlog`: TCG PC Client UEFI event logs: parsing, typed events, replay.
//!   - `evidence::ima`: Linux IMA measurement lists: parsing, template hashes, PCR 10 replay.
//!
//! - [`reference`]: the signed trust list, reference manifests, policies, and the rules that
//!   judge boot logs and IMA lists against them.
//! - [`verdict`]: the verdict vocabulary (rules, failures, verdicts and their basis) that both
//!   [`reference`] and [`attestation`] use.
//! - [`audit`]: the hash-chained history, signed checkpoints and offline verification.
//! - [`untrusted_text`]: escaping of device-chosen text for reasons, reports and logs.
//! - [`device`]: the device model (record, trust state, events), used by every layer.
//! - [`enrollment`], [`attestation`]: the two flows; [`server`]: the gRPC edge (TLS, limits,
//!   the wire encoding); [`storage`]: state.
//! - [`service`]: what the gRPC services share, in parts (`service::notifier` for watchers and
//!   webhooks, `service::transitions` for device states, `service::schedule`,
//!   `service::activity`, `service::latest_results`, `service::revocation`,
//!   `service::audit_seal`).
//! - [`metrics`], [`webhooks`]: the Prometheus listener and alert delivery, fed by the service;
//!   [`siem`]: state changes and alerts to syslog (RFC 5424 over TLS) and ECS JSON lines.
//! - [`dashboard`]: the read-only web dashboard (its own HTTPS listener, an edge beside
//!   [`server`], reading through the service).
//! - [`config`]: the configuration file and the network edge's [`config::Limits`];
//!   [`clock`]: the wall clock for records.
//!
//! Dependencies run one way: `bin -> server -> {enrollment, attestation} -> {reference, results,
//! audit} -> {evidence, storage}`; nothing below `server` imports from it. `dashboard` is an
//! edge beside `server` (it uses `server::tls` and reads through `service`).
//!
//! The verifier never links libtss2 and never shells out to parse evidence.

pub mod attestation;
pub mod audit;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod device;
pub mod enrollment;
/// The pure parsers, a crate of their own (`verifier/evidence`); re-exported so `crate::evidence`
/// paths read as before.
pub use trustchain_evidence as evidence;
pub mod metrics;
pub mod reference;
pub mod results;
pub mod server;
pub mod service;
pub mod siem;
pub mod storage;
pub mod untrusted_text;
pub mod verdict;
pub mod webhooks;
