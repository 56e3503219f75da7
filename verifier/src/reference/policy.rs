//! Policies per device group: declarative TOML, one documented format (`docs/trust.md`,
//! `docs/policy.example.toml`). A policy says which manifests apply (with change windows), how
//! the boot log and the IMA list are judged, and the group's tier.
//!
//! Policies are imported by an authenticated operator and versioned: a lower or equal version of
//! a policy with the same name is refused, and an appraisal uses one version throughout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::evidence::digest::HashAlgorithm;

/// Largest policy file accepted.
pub const MAX_POLICY_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy larger than {MAX_POLICY_SIZE} bytes")]
    TooLarge,
    #[error("policy: {0}")]
    Syntax(String),
    #[error("policy: {0}")]
    Invalid(String),
}

/// One policy, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub version: u64,
    #[serde(default)]
    pub description: String,
    /// Which devices the policy governs.
    #[serde(default, rename = "match")]
    pub selector: DeviceSelector,
    #[serde(default)]
    pub tier: TierSpec,
    #[serde(default)]
    pub boot: BootRules,
    #[serde(default)]
    pub ima: ImaRules,
    /// Manifests that apply, by supplier, product and version.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// Which devices a policy governs. A device is governed by the first policy (by name order)
/// whose selector matches; an empty selector matches every device (a default policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSelector {
    /// Device classes, as the trust list assigns them by EK (`devices[].device_class`); the
    /// class an agent claims at enrollment is never used.
    #[serde(default)]
    pub device_classes: Vec<String>,
    /// Device ids (`tc-...`).
    #[serde(default)]
    pub device_ids: Vec<String>,
}

impl DeviceSelector {
    pub fn is_default(&self) -> bool {
        self.device_classes.is_empty() && self.device_ids.is_empty()
    }

    /// `assigned_class`: the class the trust list assigns the device, if any.
    pub fn matches(&self, device_id: &str, assigned_class: Option<&str>) -> bool {
        self.device_ids.iter().any(|d| d == device_id)
            || assigned_class.is_some_and(|class| self.device_classes.iter().any(|c| c == class))
    }
}

/// How hard the harm a compromised device does is to undo, and how large its economic impact:
/// the IoT Security-Safety Framework's two axes, each rated low, medium or high.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    Low,
    #[default]
    Medium,
    High,
}

/// What the tier decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceRequired {
    /// Quote and boot log; IMA is not asked for.
    Boot,
    BootAndIma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Untrusted, alert raised.
    Alert,
    /// Untrusted, alert raised, and the device's mTLS certificate revoked (pushed to relying
    /// parties as QUARANTINED).
    Quarantine,
}

/// The group's tier: from the two ratings by the default mapping, each value overridable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    #[serde(default)]
    pub irreversibility: Rating,
    #[serde(default)]
    pub economic_impact: Rating,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRequired>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailureAction>,
}

/// A resolved tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// 1 (lowest) to 3 (highest).
    pub level: u8,
    pub interval_seconds: u64,
    pub evidence: EvidenceRequired,
    pub on_failure: FailureAction,
}

impl TierSpec {
    /// The default mapping (documented in `docs/trust.md`): the higher of the two ratings picks
    /// the level, and both high is the top level.
    ///
    /// | level | when | interval | evidence | on failure |
    /// |---|---|---|---|---|
    /// | 1 | both low | 300 s | boot | alert |
    /// | 2 | one medium, none high | 60 s | boot and IMA | alert |
    /// | 3 | any high | 10 s | boot and IMA | quarantine |
    pub fn resolve(&self) -> Tier {
        let level = match self.irreversibility.max(self.economic_impact) {
            Rating::Low => 1,
            Rating::Medium => 2,
            Rating::High => 3,
        };
        let (interval, evidence, action) = match level {
            1 => (300, EvidenceRequired::Boot, FailureAction::Alert),
            2 => (60, EvidenceRequired::BootAndIma, FailureAction::Alert),
            _ => (10, EvidenceRequired::BootAndIma, FailureAction::Quarantine),
        };
        Tier {
            level,
            interval_seconds: self.interval_seconds.unwrap_or(interval).clamp(1, 3600),
            evidence: self.evidence.unwrap_or(evidence),
            on_failure: self.on_failure.unwrap_or(action),
        }
    }
}

/// Whether Secure Boot must be on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureBootRule {
    Required,
    #[default]
    Optional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootRules {
    /// The bank quoted, replayed and compared (`sha256` unless the devices only have `sha1`).
    #[serde(default = "default_bank")]
    pub required_bank: String,
    #[serde(default)]
    pub secure_boot: SecureBootRule,
    /// Every EV_EFI_BOOT_SERVICES_APPLICATION must match a manifest.
    #[serde(default = "yes")]
    pub check_boot_applications: bool,
    /// Every firmware blob (PCR 0/2) must match a manifest.
    #[serde(default)]
    pub check_firmware_blobs: bool,
    /// Secure Boot variables (PCR 7) must match a manifest where one names them.
    #[serde(default = "yes")]
    pub check_secure_boot_variables: bool,
    /// SHA-256 image hashes (hex) the dbx must list; when set, the PCR 7 signature databases are
    /// decoded and judged (`reference::secure_boot`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dbx_must_list: Vec<String>,
    /// PCRs in which every extended event must match a manifest measurement.
    #[serde(default)]
    pub event_checked_pcrs: Vec<u32>,
    #[serde(default)]
    pub kernel_cmdline: CmdlineRules,
    /// Accept a TPM Restart or Resume (restartCount rising without a reset) within a boot, for
    /// devices that sleep. Off: a Restart may have reset the PCRs, so it fails `reset_handling`.
    #[serde(default)]
    pub accept_tpm_restart: bool,
}

impl Default for BootRules {
    fn default() -> Self {
        Self {
            required_bank: default_bank(),
            secure_boot: SecureBootRule::default(),
            check_boot_applications: true,
            check_firmware_blobs: false,
            check_secure_boot_variables: true,
            dbx_must_list: Vec::new(),
            event_checked_pcrs: Vec::new(),
            kernel_cmdline: CmdlineRules::default(),
            accept_tpm_restart: false,
        }
    }
}

impl BootRules {
    pub fn bank(&self) -> Result<HashAlgorithm, PolicyError> {
        HashAlgorithm::from_name(&self.required_bank)
            .ok_or_else(|| PolicyError::Invalid(format!("unknown bank {:?}", self.required_bank)))
    }
}

fn default_bank() -> String {
    "sha256".into()
}

fn yes() -> bool {
    true
}

/// Kernel command line rules: each `require` text must appear, no `forbid` text may; when
/// `match_manifest` is set, the line must equal one a manifest names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmdlineRules {
    #[serde(default)]
    pub require: Vec<String>,
    #[serde(default)]
    pub forbid: Vec<String>,
    #[serde(default)]
    pub match_manifest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImaRules {
    /// Every measured file must be on the allowlist (manifests' runtime files plus `allowlist`),
    /// unless excluded.
    #[serde(default = "yes")]
    pub enforce_allowlist: bool,
    /// Regular expressions (Rust `regex` syntax, anchored by the writer) for paths not checked.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Inline allowlist (e.g. imported from a Keylime runtime policy): path to `alg:hex` digests.
    #[serde(default)]
    pub allowlist: BTreeMap<String, Vec<String>>,
}

impl Default for ImaRules {
    fn default() -> Self {
        Self {
            enforce_allowlist: true,
            excludes: Vec::new(),
            allowlist: BTreeMap::new(),
        }
    }
}

/// A component the policy admits: manifests whose supplier and product match, at `version`
/// (`*` for any version a trusted signer vouches for). `until` (RFC 3339) ends a change window:
/// after it, this entry admits nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub supplier: String,
    pub product: String,
    #[serde(default = "star")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

fn star() -> String {
    "*".into()
}

impl Component {
    /// Whether this entry admits `manifest`'s (supplier, product, version) at `now_unix`.
    pub fn admits(&self, supplier: &str, product: &str, version: &str, now_unix: i64) -> bool {
        self.supplier == supplier
            && self.product == product
            && (self.version == "*" || self.version == version)
            && self.until_unix().is_none_or(|end| now_unix < end)
    }

    /// The end of the change window; an unreadable date admits nothing (refused at import).
    pub fn until_unix(&self) -> Option<i64> {
        self.until
            .as_ref()
            .map(|text| parse_rfc3339(text).unwrap_or(i64::MIN))
    }
}

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl Policy {
    /// Parses and validates a policy file.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_SIZE {
            return Err(PolicyError::TooLarge);
        }
        let policy: Policy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    pub fn to_toml(&self) -> Result<String, PolicyError> {
        toml::to_string_pretty(self).map_err(|e| PolicyError::Syntax(e.to_string()))
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid = |m: String| Err(PolicyError::Invalid(m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(format!(
                "name {:?}: letters, digits, '-', '_' and '.' only",
                self.name
            ));
        }
        self.boot.bank()?;
        if let Some(hash) = self
            .boot
            .dbx_must_list
            .iter()
            .find(|h| h.len() != 64 || hex::decode(h).is_err())
        {
            return invalid(format!(
                "boot.dbx_must_list: {hash:?} is not a SHA-256 hash (64 hex digits)"
            ));
        }
        if let Some(pcr) = self.boot.event_checked_pcrs.iter().find(|p| **p > 23) {
            return invalid(format!("event_checked_pcrs: no PCR {pcr}"));
        }
        for component in &self.components {
            if let Some(text) = &component.until
                && parse_rfc3339(text).is_none()
            {
                return invalid(format!(
                    "component {}/{}: until {text:?} is not an RFC 3339 time",
                    component.supplier, component.product
                ));
            }
        }
        for pattern in &self.ima.excludes {
            if let Err(error) = regex::Regex::new(pattern) {
                return invalid(format!("ima.excludes {pattern:?}: {error}"));
            }
        }
        for (path, digests) in &self.ima.allowlist {
            for digest in digests {
                if parse_file_digest(digest).is_none() {
                    return invalid(format!("ima.allowlist {path:?}: {digest:?} is not alg:hex"));
                }
            }
        }
        Ok(())
    }
}

/// `sha256:ab12..` into (algorithm name, bytes). A bare hex digest is taken by its length
/// (20 bytes sha1, 32 sha256, 48 sha384, 64 sha512), as Keylime writes them.
pub fn parse_file_digest(text: &str) -> Option<(String, Vec<u8>)> {
    let (alg, hex_text) = match text.split_once(':') {
        Some((alg, rest)) => (Some(alg.to_ascii_lowercase()), rest),
        None => (None, text),
    };
    let bytes = hex::decode(hex_text.trim()).ok()?;
    let alg = match alg {
        Some(alg) => alg,
        None => match bytes.len() {
            20 => "sha1".into(),
            32 => "sha256".into(),
            48 => "sha384".into(),
            64 => "sha512".into(),
            _ => return None,
        },
    };
    Some((alg, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_two_ratings() {
        let tier = |i, e| {
            TierSpec {
                irreversibility: i,
                economic_impact: e,
                ..TierSpec::default()
            }
            .resolve()
        };
        assert_eq!(tier(Rating::Low, Rating::Low).level, 1);
        assert_eq!(tier(Rating::Low, Rating::Medium).level, 2);
        assert_eq!(tier(Rating::High, Rating::Low).level, 3);
        assert_eq!(
            tier(Rating::High, Rating::High).on_failure,
            FailureAction::Quarantine
        );
        assert_eq!(
            tier(Rating::Low, Rating::Low).evidence,
            EvidenceRequired::Boot
        );
    }

    #[test]
    fn change_windows_end() {
        let c = Component {
            supplier: "Acme".into(),
            product: "kernel".into(),
            version: "6.1".into(),
            until: Some("2026-12-01T00:00:00Z".into()),
        };
        let end = parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        assert!(c.admits("Acme", "kernel", "6.1", end - 1));
        assert!(!c.admits("Acme", "kernel", "6.1", end));
        assert!(!c.admits("Acme", "kernel", "6.2", end - 1));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Policy::from_toml("name = \"a\"\nversion = 1\nbogus = 2\n").is_err());
        assert!(Policy::from_toml("name = \"a b\"\nversion = 1\n").is_err());
        assert!(
            Policy::from_toml("name = \"a\"\nversion = 1\n[ima]\nexcludes = [\"(\"]\n").is_err()
        );
        let p = Policy::from_toml("name = \"a\"\nversion = 1\n").unwrap();
        assert_eq!(p.boot.required_bank, "sha256");
        assert!(p.ima.enforce_allowlist);
    }
}
