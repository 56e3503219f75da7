//! The documents of trust creation and trust proof, as they are signed and stored: the trust list
//! (whom we trust) and reference manifests (what a supplier says its component measures as).
//!
//! Both are JSON payloads of a JWS (see [`super::signed`]); the format is documented in
//! `docs/trust.md`. Unknown fields are refused, so a typo never silently drops a rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `kind` of a trust list payload.
pub const TRUST_LIST_KIND: &str = "trustchain.trust-list.v1";
/// The `kind` of a reference manifest payload.
pub const MANIFEST_KIND: &str = "trustchain.reference-manifest.v1";

/// Whom the deployment trusts, signed by the trust-list authority. Versions only go up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustList {
    pub kind: String,
    pub version: u64,
    /// RFC 3339; informative.
    #[serde(default)]
    pub issued_at: String,
    /// TPM makers whose EK certificates are accepted: roots and intermediates, PEM.
    #[serde(default)]
    pub maker_cas: Vec<MakerCa>,
    /// Admitted devices. Empty: every device whose EK chains to a listed maker CA is admitted.
    #[serde(default)]
    pub devices: Vec<DeviceMatch>,
    /// Who may sign reference manifests, and for what.
    #[serde(default)]
    pub manifest_signers: Vec<ManifestSigner>,
    /// Who may sign policies (`trustchain policy sign`); with `require_signed_policies` on, a
    /// policy is imported only signed by one of them.
    #[serde(default)]
    pub policy_signers: Vec<PolicySigner>,
    #[serde(default)]
    pub revoked: Revocations,
}

#[cfg(test)]
impl TrustList {
    /// Version `version` of a trust list that admits and revokes nothing, for unit tests to
    /// fill in.
    pub(crate) fn empty(version: u64) -> Self {
        Self {
            kind: TRUST_LIST_KIND.into(),
            version,
            issued_at: String::new(),
            maker_cas: Vec::new(),
            devices: Vec::new(),
            manifest_signers: Vec::new(),
            policy_signers: Vec::new(),
            revoked: Revocations::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakerCa {
    pub name: String,
    /// One certificate, PEM.
    pub certificate_pem: String,
}

/// A device, by its EK: the canonical EK public hash, or its EK certificate's issuer (and serial).
/// An admission entry must name the EK; `model` only narrows it (see `reference::assignment`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMatch {
    /// SHA-256 of the EK's canonical TPMT_PUBLIC (the bare default-template form), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_public_sha256: Option<String>,
    /// EK certificate issuer (RFC 4514 text as x509-parser prints it) and serial (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_serial_hex: Option<String>,
    /// The device model the agent reports: the agent's word, so it only narrows an entry that
    /// names the EK (an entry with a model alone is refused at import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The class the operator assigns the devices this admission entry names: what policies'
    /// `match.device_classes` and the configuration's `interval_seconds_by_class` select on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSigner {
    pub name: String,
    /// Uncompressed P-256 point, hex (what `trustchain-ca supplier-key` writes to `<name>.pub`).
    pub public_key: String,
    pub scope: Scope,
}

/// A key that may sign policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySigner {
    pub name: String,
    /// Uncompressed P-256 point, hex (what `trustchain-ca supplier-key` writes to `<name>.pub`).
    pub public_key: String,
}

/// What a signer may vouch for: suppliers and products, `*` for any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub suppliers: Vec<String>,
    #[serde(default = "any")]
    pub products: Vec<String>,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

impl Scope {
    pub fn covers(&self, supplier: &str, product: &str) -> bool {
        let matches = |list: &[String], value: &str| list.iter().any(|s| s == "*" || s == value);
        matches(&self.suppliers, supplier) && matches(&self.products, product)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    #[serde(default)]
    pub devices: Vec<DeviceMatch>,
    /// SHA-256 of the revoked CA certificate's DER, hex.
    #[serde(default)]
    pub maker_cas: Vec<String>,
    /// Signer names.
    #[serde(default)]
    pub manifest_signers: Vec<String>,
    /// Manifest ids.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// TPM firmware versions (the quote's signed firmwareVersion, as 16 hex digits).
    #[serde(default)]
    pub firmware_versions: Vec<String>,
}

/// What a supplier says its component measures as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: String,
    pub supplier: String,
    pub product: String,
    pub version: String,
    #[serde(default)]
    pub issued_at: String,
    #[serde(default)]
    pub description: String,
    /// Boot measurements (UEFI event log).
    #[serde(default)]
    pub boot: BootReferences,
    /// Runtime files (IMA): path to the digests it may have, each `alg:hex` (`sha256:ab12..`).
    #[serde(default)]
    pub runtime: BTreeMap<String, Vec<String>>,
}

impl Manifest {
    /// `supplier/product/version`: what revocations and verdicts name.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.supplier, self.product, self.version)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootReferences {
    /// Measured events, each by PCR, kind and digests.
    #[serde(default)]
    pub events: Vec<BootMeasurement>,
    /// Kernel command lines this component boots with (exact text).
    #[serde(default)]
    pub kernel_cmdlines: Vec<String>,
    /// Whether UEFI Secure Boot is on when this component boots (the SecureBoot variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
}

/// One measurement a boot event may carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootMeasurement {
    pub pcr: u32,
    pub kind: BootKind,
    /// For people: "shim 15.7", "PK", "GRUB 2.06".
    #[serde(default)]
    pub description: String,
    /// Bank name (`sha1`, `sha256`, `sha384`, `sha512`, `sm3_256`) to hex digest.
    pub digests: BTreeMap<String, String>,
}

/// What kind of boot event a measurement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootKind {
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB(2), EV_S_CRTM_CONTENTS (PCR 0, 2).
    FirmwareBlob,
    /// EV_EFI_BOOT_SERVICES_APPLICATION (PCR 4: shim, GRUB, kernel), drivers (PCR 2).
    BootApplication,
    /// EV_EFI_VARIABLE_DRIVER_CONFIG / AUTHORITY in PCR 7 (SecureBoot, PK, KEK, db, dbx, ...).
    SecureBootVariable,
    /// Any other extended event, for PCRs the policy checks event by event.
    Other,
}

/// A manifest an appraisal may rely on, with who vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedManifest {
    pub manifest: Manifest,
    /// The trust-list signer name; `unsigned` for offline checks of drafts.
    pub signer: String,
}
