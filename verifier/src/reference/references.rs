//! The reference values in force for one device: its policy, the manifests that apply to it and
//! the IMA allowlist compiled from both.

use super::documents::AdmittedManifest;
use super::policy::Policy;
use super::runtime::Allowlist;
use crate::verdict::ManifestRef;

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
    pub allowlist: Allowlist,
}

impl References {
    /// Only the policy, no manifests (e.g. a policy with no components).
    pub fn policy_only(policy: Policy) -> Self {
        Self::new(policy, Vec::new(), Vec::new())
    }

    pub fn new(policy: Policy, manifests: Vec<AdmittedManifest>, passed_over: Vec<String>) -> Self {
        let allowlist = Allowlist::build(&policy, &manifests);
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
