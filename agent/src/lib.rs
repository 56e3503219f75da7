//! TrustChain agent: proves a gateway's or server's state to the verifier with its TPM.
//!
//! # Layout
//! - [`config`]: the TOML configuration (every key in `docs/agent.example.toml`).
//! - [`tpm`]: the TPM behind the [`tpm::Tpm`] trait: `tpm::tcti` (where the TPM is),
//!   `tpm::esapi` (the tss-esapi implementation, one short connection per operation),
//!   `tpm::ak_blob` (the saved AK, a 0600 file).
//! - [`replicas`]: the verifier replicas (`verifier_url` or `verifier_urls`), checked, and the
//!   round-robin order the agent tries them in.
//! - [`identity`]: the agent's state directory (TLS key 0600, certificates, device id).
//! - [`client`]: the TLS channel to the verifier.
//! - [`bound_channel`]: the attestation channel: one TLS 1.3 connection whose exporter binds
//!   each quote to it (shared with the test devices and the load generator).
//! - [`enroll`]: enrollment (EK certificate, credential activation, certificates from a CSR).
//! - [`retry`]: the shared reconnection backoff, the wait for a TPM that stopped answering, and
//!   TPM work off the reactor (below `attest` and `enroll`).
//! - [`attest`]: the attestation stream (challenges in, quotes and logs out).
//! - [`status`]: the agent's lifecycle state, logged and kept in `status.json` for operators.
//! - [`service_manager`]: systemd readiness, status and watchdog notifications (no-ops
//!   without `NOTIFY_SOCKET`).
//! - `main.rs`: the `trustchain-agent` command.
//!
//! The agent never clears the TPM, never takes ownership and never changes hierarchy
//! authorisation; it only creates an AK under the EK and asks for quotes.

pub mod attest;
pub mod bound_channel;
pub mod client;
pub mod config;
pub mod enroll;
pub mod identity;
pub mod replicas;
pub mod retry;
pub mod service_manager;
pub mod status;
pub mod tpm;
