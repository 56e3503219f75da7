//! Trust creation and trust proof: the signed trust list, suppliers' signed reference manifests,
//! per-group policies, and how boot logs and IMA lists are judged against them.
//!
//! # Layout
//! - `signed`: JWS (ES256) signing and checking of documents.
//! - `documents`: the trust list and reference manifest formats, and a manifest as admitted.
//! - `assignment`: which devices a trust-list entry names (by EK), and the class it assigns.
//! - `policy`: the policy format (TOML), tiers, change windows.
//! - `signed_policy`: policies as JWS, signed by a policy signer the trust list admits.
//! - `stored`: reading stored trust lists and policies back, failing closed (never an older
//!   version in place of one that no longer verifies or parses); trust-list content checks.
//! - `references`: the reference values in force for one device (policy, manifests, the
//!   compiled allowlist).
//! - `trust`: the active trust list, policies and manifests as one consistent snapshot, and what
//!   it says about one device (admission, revocations, the references that apply).
//! - `boot`: boot-log events against reference values (rule `boot_reference_values`).
//! - `secure_boot`: the Secure Boot signature databases (PK, KEK, db, dbx) decoded and judged.
//! - `coverage`: which boot events those reference values must bind (every extended event of a
//!   PCR the policy constrains, whatever its type).
//! - `runtime`: IMA entries against the allowlist (rule `ima_allowlist`).
//! - `learn`: a draft manifest and policy from a known-good device's logs.
//! - `pending`: imports waiting for a second policy-admin (the two-person rule).
//! - `keylime`: imports of Keylime runtime policies and measured-boot reference states.
//!
//! What a verdict relied on ([`crate::verdict::Basis`]) is named in the verdict vocabulary.
//!
//! The formats are documented in `docs/trust.md`.

pub mod assignment;
pub mod boot;
pub mod coverage;
pub mod documents;
pub mod keylime;
pub mod learn;
pub mod pending;
pub mod policy;
pub mod references;
pub mod runtime;
pub mod secure_boot;
pub mod signed;
pub mod signed_policy;
pub mod stored;
pub mod trust;

pub use documents::{AdmittedManifest, Manifest, TrustList};
pub use policy::Policy;
pub use references::References;
