//! Trust creation and trust proof: the signed trust list, suppliers' signed reference manifests,
//! per-group policies, and how boot logs and IMA lists are judged against them.
//!
//! # Layout
//! - `signed`: JWS (ES256) signing and checking of documents.
//! - `documents`: the trust list and reference manifest formats.
//! - `assignment`: which devices a trust-list entry names (by EK), and the class it assigns.
//! - `policy`: the policy format (TOML), tiers, change windows.
//! - `stored`: reading stored trust lists and policies back, failing closed (never an older
//!   version in place of one that no longer verifies or parses); trust-list content checks.
//! - `trust`: the active trust list, policies and manifests as one consistent snapshot, and what
//!   it says about one device (admission, revocations, the references that apply).
//! - `boot`: boot-log events against reference values (rule `boot_reference_values`).
//! - `coverage`: which boot events those reference values must bind (every extended event of a
//!   PCR the policy constrains, whatever its type).
//! - `runtime`: IMA entries against the allowlist (rule `ima_allowlist`).
//! - `learn`: a draft manifest and policy from a known-good device's logs.
//! - `keylime`: imports of Keylime runtime policies and measured-boot reference states.
//!
//! The formats are documented in `docs/trust.md`.

pub mod assignment;
pub mod boot;
pub mod coverage;
pub mod documents;
pub mod keylime;
pub mod learn;
pub mod policy;
pub mod runtime;
pub mod signed;
pub mod stored;
pub mod trust;

use serde::{Deserialize, Serialize};

pub use documents::{Manifest, TrustList};
pub use policy::Policy;

/// A manifest an appraisal may rely on, with who vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedManifest {
    pub manifest: Manifest,
    /// The trust-list signer name; `unsigned` for offline checks of drafts.
    pub signer: String,
}

/// The reference values in force for one device: its policy and the manifests that apply to it
/// now (admitted by the policy's components, signed by a signer the trust list admits for that
/// scope, not revoked, change windows open).
#[derive(Debug, Clone)]
pub struct References {
    pub policy: Policy,
    pub manifests: Vec<AdmittedManifest>,
    /// Why manifests that might have applied were not used (unknown signer, out of scope,
    /// revoked, window closed): verdicts name these when a measurement then fails.
    pub passed_over: Vec<String>,
    /// The IMA allowlist and excludes, compiled once from the policy and the manifests.
    pub allowlist: runtime::Allowlist,
}

/// What a verdict relied on: one consistent version of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basis {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_list_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub id: String,
    pub signer: String,
}

impl References {
    /// Only the policy, no manifests (e.g. a policy with no components).
    pub fn policy_only(policy: Policy) -> Self {
        Self::new(policy, Vec::new(), Vec::new())
    }

    pub fn new(policy: Policy, manifests: Vec<AdmittedManifest>, passed_over: Vec<String>) -> Self {
        let allowlist = runtime::Allowlist::build(&policy, &manifests);
        Self {
            policy,
            manifests,
            passed_over,
            allowlist,
        }
    }

    /// References for an offline check: `manifests` (unsigned drafts or signed ones already
    /// opened) filtered by the policy's components at `now_unix`.
    pub fn offline(policy: Policy, manifests: Vec<AdmittedManifest>, now_unix: i64) -> Self {
        let mut admitted = Vec::new();
        let mut passed_over = Vec::new();
        for m in manifests {
            let d = &m.manifest;
            if policy
                .components
                .iter()
                .any(|c| c.admits(&d.supplier, &d.product, &d.version, now_unix))
            {
                admitted.push(m);
            } else {
                passed_over.push(format!(
                    "manifest {} is not admitted by policy {} now",
                    d.id(),
                    policy.name
                ));
            }
        }
        Self::new(policy, admitted, passed_over)
    }

    pub fn manifest_refs(&self) -> Vec<ManifestRef> {
        self.manifests
            .iter()
            .map(|m| ManifestRef {
                id: m.manifest.id(),
                signer: m.signer.clone(),
            })
            .collect()
    }
}
