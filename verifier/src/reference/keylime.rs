//! Imports of what Keylime users already have: runtime policies (IMA allowlists with digests and
//! excludes) and measured-boot reference states, converted into manifests and policies.
//!
//! Facts about the formats (Keylime's `keylime-policy create runtime` and
//! `create measured-boot` output):
//! - a runtime policy is JSON with `meta.version`, `digests` (path to bare hex digests, the
//!   algorithm given by the length), `excludes` (Python regular expressions, applied with
//!   `re.match`, i.e. anchored at the start of the path), `keyrings`, `ima-buf`, `ima`
//!   (`ignored_keyrings`, `log_hash_alg`, `dm_policy`) and `verification-keys`;
//! - a measured-boot reference state has `has_secureboot`, `scrtm_and_bios` (the
//!   EV_S_CRTM_VERSION digest as `scrtm`, firmware blob digests as `platform_firmware`), `pk`,
//!   `kek`, `db`, `dbx` (EFI signature list entries: owner GUID and signature data), `mokdig` and
//!   `mokxdig` (shim's MokList/MokListX EV_IPL digests), and `kernels` (Authenticode digests of
//!   shim, GRUB and the kernel, plain digests of the initrd and kernel image as GRUB measured
//!   them, and the kernel command line as an escaped regular expression). Digests are `0x` hex
//!   keyed by bank name.
//!
//! What cannot be converted exactly is reported in `notes`, never silently dropped; where a
//! conversion must lose something, it loses on the side that checks more.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::evidence::digest::HashAlgorithm;

use super::documents::{BootKind, BootMeasurement, BootReferences, MANIFEST_KIND, Manifest};
use super::learn::{LearnIdentity, Learned};
use super::policy::{
    BootRules, CmdlineRules, Component, EvidenceRequired, ImaRules, Policy, SecureBootRule,
    TierSpec, parse_file_digest,
};

/// Largest Keylime document accepted (a runtime policy for a whole distribution is tens of MiB).
pub const MAX_KEYLIME_DOCUMENT: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeylimeError {
    #[error("document larger than {MAX_KEYLIME_DOCUMENT} bytes")]
    TooLarge,
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{field}: {problem}")]
    Format { field: String, problem: String },
}

fn format_error(field: impl Into<String>, problem: impl Into<String>) -> KeylimeError {
    KeylimeError::Format {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A converted runtime policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedRuntime {
    /// Path to `alg:hex` digests, as a manifest's `runtime` holds them.
    pub runtime: BTreeMap<String, Vec<String>>,
    /// Rust regular expressions for `ima.excludes`, anchored at the start as Keylime matches.
    pub excludes: Vec<String>,
    /// The policy's `ima.log_hash_alg` (the template hash bank), when given.
    pub log_hash_alg: Option<String>,
    pub notes: Vec<String>,
}

/// A converted measured-boot reference state: a manifest's `boot` part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedBoot {
    pub boot: BootReferences,
    pub notes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RuntimePolicy {
    meta: Option<Value>,
    #[serde(default)]
    digests: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    excludes: Vec<String>,
    #[serde(default)]
    keyrings: BTreeMap<String, Value>,
    #[serde(default, rename = "ima-buf")]
    ima_buf: BTreeMap<String, Value>,
    #[serde(default)]
    ima: Option<ImaSection>,
    #[serde(default, rename = "verification-keys")]
    verification_keys: Value,
}

#[derive(Debug, Deserialize)]
struct ImaSection {
    #[serde(default)]
    log_hash_alg: Option<String>,
    #[serde(default)]
    ignored_keyrings: Vec<String>,
    #[serde(default)]
    dm_policy: Value,
}

fn bounded(json: &[u8]) -> Result<&[u8], KeylimeError> {
    if json.len() > MAX_KEYLIME_DOCUMENT {
        return Err(KeylimeError::TooLarge);
    }
    Ok(json)
}

/// Converts a Keylime runtime policy (JSON) into a manifest runtime map and excludes.
pub fn import_runtime_policy(json: &[u8]) -> Result<ImportedRuntime, KeylimeError> {
    let policy: RuntimePolicy =
        serde_json::from_slice(bounded(json)?).map_err(|e| KeylimeError::Json(e.to_string()))?;
    if policy.meta.is_none() {
        return Err(format_error(
            "meta",
            "missing: not a Keylime runtime policy (older allowlists must be converted with \
             keylime-policy first)",
        ));
    }
    let mut out = ImportedRuntime::default();
    for (path, digests) in policy.digests {
        let mut converted = Vec::with_capacity(digests.len().min(16));
        for digest in digests {
            let (alg, bytes) = parse_file_digest(&digest).ok_or_else(|| {
                format_error(
                    format!("digests[{path:?}]"),
                    format!("{digest:?} is not a sha1/sha256/sha384/sha512 hex digest"),
                )
            })?;
            let text = format!("{alg}:{}", hex::encode(bytes));
            if !converted.contains(&text) {
                converted.push(text);
            }
        }
        out.runtime.insert(path, converted);
    }
    if out
        .runtime
        .values()
        .flatten()
        .any(|d| d.starts_with("sha256:"))
    {
        out.notes.push(
            "32-byte digests were taken as sha256 (Keylime gives no algorithm); files measured \
             with sm3 will not match"
                .to_string(),
        );
    }
    for pattern in policy.excludes {
        // Keylime applies excludes with Python's re.match: anchored at the start only.
        let anchored = format!("^(?:{pattern})");
        match regex::Regex::new(&anchored) {
            Ok(_) => out.excludes.push(anchored),
            Err(error) => out.notes.push(format!(
                "exclude {pattern:?} is not a valid Rust regular expression and was dropped \
                 (those paths stay checked): {error}"
            )),
        }
    }
    if let Some(ima) = policy.ima {
        out.log_hash_alg = ima.log_hash_alg;
        if !ima.ignored_keyrings.is_empty() {
            out.notes.push(format!(
                "ima.ignored_keyrings {:?} not imported: keyring (ima-buf) entries are checked \
                 like files, by name",
                ima.ignored_keyrings
            ));
        }
        if !ima.dm_policy.is_null() {
            out.notes
                .push("ima.dm_policy (device-mapper rules) not imported".to_string());
        }
    }
    if !policy.keyrings.is_empty() || !policy.ima_buf.is_empty() {
        out.notes.push(format!(
            "{} keyrings and {} ima-buf entries not imported: add their digests to the allowlist \
             by name, or exclude them",
            policy.keyrings.len(),
            policy.ima_buf.len()
        ));
    }
    let has_keys = match &policy.verification_keys {
        Value::String(text) => !text.is_empty(),
        Value::Null => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(items) => !items.is_empty(),
        _ => true,
    };
    if has_keys {
        out.notes.push(
            "verification-keys not imported: IMA signatures are not checked, only digests"
                .to_string(),
        );
    }
    Ok(out)
}

/// A digest map (`{"sha256": "0x.."}`) into `alg -> hex`, checked for known banks and sizes.
fn digests(value: &Value, field: &str) -> Result<BTreeMap<String, String>, KeylimeError> {
    let Value::Object(map) = value else {
        return Err(format_error(
            field,
            "expected an object of bank name to 0x hex",
        ));
    };
    let mut out = BTreeMap::new();
    for (alg, digest) in map {
        let bank = HashAlgorithm::from_name(alg)
            .ok_or_else(|| format_error(field, format!("unknown bank {alg:?}")))?;
        out.insert(bank.name().to_string(), hex_digest(digest, bank, field)?);
    }
    Ok(out)
}

fn hex_digest(value: &Value, bank: HashAlgorithm, field: &str) -> Result<String, KeylimeError> {
    let Value::String(text) = value else {
        return Err(format_error(field, "expected a 0x hex string"));
    };
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let bytes =
        hex::decode(text).map_err(|_| format_error(field, format!("{text:?} is not hex")))?;
    if bytes.len() != bank.size() {
        return Err(format_error(
            field,
            format!(
                "{} digest of {} bytes, expected {}",
                bank.name(),
                bytes.len(),
                bank.size()
            ),
        ));
    }
    Ok(hex::encode(bytes))
}

fn measurement(
    pcr: u32,
    kind: BootKind,
    description: &str,
    digests: BTreeMap<String, String>,
) -> BootMeasurement {
    BootMeasurement {
        pcr,
        kind,
        description: description.to_string(),
        digests,
    }
}

fn array<'v>(root: &'v Value, field: &str) -> Result<&'v [Value], KeylimeError> {
    match root.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format_error(field, "expected an array")),
    }
}

/// Converts a Keylime measured-boot reference state (`create_mb_refstate` /
/// `keylime-policy create measured-boot` output) into a manifest's boot references:
/// - `scrtm` (the EV_S_CRTM_VERSION digest) becomes an `other` PCR 0 measurement, and
///   `platform_firmware` entries `firmware_blob` PCR 0 measurements;
/// - shim, GRUB and kernel Authenticode digests become `boot_application` PCR 4 measurements;
/// - `initrd_plain_sha256` and `vmlinuz_plain_sha256` become `other` PCR 9 measurements (GRUB's
///   EV_IPL file measurements), `mokdig`/`mokxdig` `other` PCR 14 measurements;
/// - `kernel_cmdline` (a `re.escape`d string) is unescaped into `kernel_cmdlines`; a real pattern
///   cannot be, and is reported;
/// - `has_secureboot` becomes `secure_boot`;
/// - `pk`, `kek`, `db`, `dbx` are not converted (see the notes): Keylime keeps the signature
///   list entries, while TrustChain compares the PCR 7 variable events' digests, which depend on
///   the exact variable bytes the firmware measured. Learn them from a known-good event log.
pub fn import_mb_refstate(json: &[u8]) -> Result<ImportedBoot, KeylimeError> {
    let root: Value =
        serde_json::from_slice(bounded(json)?).map_err(|e| KeylimeError::Json(e.to_string()))?;
    if !root.is_object() {
        return Err(format_error("(document)", "expected a JSON object"));
    }
    if root.get("kernels").is_none() && root.get("scrtm_and_bios").is_none() {
        return Err(format_error(
            "(document)",
            "neither kernels nor scrtm_and_bios: not a Keylime measured-boot reference state",
        ));
    }
    let mut out = ImportedBoot::default();
    let events = &mut out.boot.events;

    for (i, entry) in array(&root, "scrtm_and_bios")?.iter().enumerate() {
        if let Some(scrtm) = entry.get("scrtm") {
            let field = format!("scrtm_and_bios[{i}].scrtm");
            let digests = digests(scrtm, &field)?;
            if !digests.is_empty() {
                events.push(measurement(
                    0,
                    BootKind::Other,
                    "S-CRTM version (Keylime scrtm)",
                    digests,
                ));
            }
        }
        if let Some(firmware) = entry.get("platform_firmware") {
            let Value::Array(blobs) = firmware else {
                return Err(format_error(
                    format!("scrtm_and_bios[{i}].platform_firmware"),
                    "expected an array",
                ));
            };
            for (j, blob) in blobs.iter().enumerate() {
                let field = format!("scrtm_and_bios[{i}].platform_firmware[{j}]");
                let digests = digests(blob, &field)?;
                if digests.is_empty() {
                    out.notes.push(format!("{field}: empty, skipped"));
                    continue;
                }
                events.push(measurement(
                    0,
                    BootKind::FirmwareBlob,
                    "platform firmware blob (Keylime platform_firmware)",
                    digests,
                ));
            }
        }
    }

    for (field, pcr, description) in [("mokdig", 14, "MokList"), ("mokxdig", 14, "MokListX")] {
        for (i, item) in array(&root, field)?.iter().enumerate() {
            let digests = digests(item, &format!("{field}[{i}]"))?;
            if !digests.is_empty() {
                events.push(measurement(pcr, BootKind::Other, description, digests));
            }
        }
    }

    const APPLICATIONS: [(&str, &str); 3] = [
        ("shim_authcode_sha256", "shim (Authenticode)"),
        ("grub_authcode_sha256", "GRUB (Authenticode)"),
        ("kernel_authcode_sha256", "kernel (Authenticode)"),
    ];
    const PLAIN: [(&str, &str); 2] = [
        ("initrd_plain_sha256", "initrd (as GRUB measured it)"),
        ("vmlinuz_plain_sha256", "kernel image (as GRUB measured it)"),
    ];
    for (i, kernel) in array(&root, "kernels")?.iter().enumerate() {
        if !kernel.is_object() {
            return Err(format_error(format!("kernels[{i}]"), "expected an object"));
        }
        for (key, description) in APPLICATIONS {
            if let Some(value) = kernel.get(key) {
                let field = format!("kernels[{i}].{key}");
                let digest = hex_digest(value, HashAlgorithm::Sha256, &field)?;
                events.push(measurement(
                    4,
                    BootKind::BootApplication,
                    description,
                    [("sha256".to_string(), digest)].into(),
                ));
            }
        }
        for (key, description) in PLAIN {
            if let Some(value) = kernel.get(key) {
                let field = format!("kernels[{i}].{key}");
                let digest = hex_digest(value, HashAlgorithm::Sha256, &field)?;
                events.push(measurement(
                    9,
                    BootKind::Other,
                    description,
                    [("sha256".to_string(), digest)].into(),
                ));
            }
        }
        match kernel.get("kernel_cmdline") {
            None => {}
            Some(Value::String(pattern)) => match unescape_python_regex(pattern) {
                Some(text) => {
                    if !out.boot.kernel_cmdlines.contains(&text) {
                        out.boot.kernel_cmdlines.push(text);
                    }
                }
                None => out.notes.push(format!(
                    "kernels[{i}].kernel_cmdline {pattern:?} is a regular expression, not an \
                     escaped text: not imported; a kernel_cmdline rule with match_manifest \
                     will fail until a manifest lists the exact line"
                )),
            },
            Some(_) => {
                return Err(format_error(
                    format!("kernels[{i}].kernel_cmdline"),
                    "expected a string",
                ));
            }
        }
    }

    match root.get("has_secureboot") {
        Some(Value::Bool(on)) => out.boot.secure_boot = Some(*on),
        None | Some(Value::Null) => {}
        Some(_) => return Err(format_error("has_secureboot", "expected true or false")),
    }

    for field in ["pk", "kek", "db", "dbx"] {
        let entries = array(&root, field)?;
        if !entries.is_empty() {
            out.notes.push(format!(
                "{field}: {} signature(s) not converted: TrustChain compares PCR 7 variable \
                 event digests; add SecureBootVariable measurements with `trustchain manifest \
                 create --from-eventlog` from a known-good log",
                entries.len()
            ));
        }
    }
    if out.boot.events.is_empty() {
        out.notes
            .push("the reference state holds no digests".to_string());
    }
    Ok(out)
}

/// A draft manifest (and policy) from imported Keylime documents, for a person to review and
/// sign, like a learned one. The policy admits exactly that manifest, requires Secure Boot when
/// the reference state says it was on, checks firmware blobs when there are some, matches the
/// kernel command line when one was imported, and enforces the allowlist (with the imported
/// excludes) only when a runtime policy was given.
pub fn draft(
    identity: &LearnIdentity,
    runtime: Option<ImportedRuntime>,
    boot: Option<ImportedBoot>,
) -> Result<Learned, KeylimeError> {
    let mut notes = Vec::new();
    let mut manifest = Manifest {
        kind: MANIFEST_KIND.to_string(),
        supplier: identity.supplier.clone(),
        product: identity.product.clone(),
        version: identity.version.clone(),
        issued_at: String::new(),
        description: "Imported from Keylime by `trustchain policy import-keylime`.".to_string(),
        boot: BootReferences::default(),
        runtime: BTreeMap::new(),
    };
    let mut excludes = Vec::new();
    let enforce = runtime.is_some();
    if let Some(runtime) = runtime {
        manifest.runtime = runtime.runtime;
        excludes = runtime.excludes;
        notes.extend(runtime.notes);
    }
    if let Some(boot) = boot {
        manifest.boot = boot.boot;
        notes.extend(boot.notes);
    }
    let has = |kind: BootKind| manifest.boot.events.iter().any(|m| m.kind == kind);
    let policy = Policy {
        name: identity.policy_name.clone(),
        version: 1,
        description: format!(
            "Imported from Keylime for {}; review before use.",
            manifest.id()
        ),
        selector: Default::default(),
        tier: TierSpec {
            evidence: (!enforce).then_some(EvidenceRequired::Boot),
            ..TierSpec::default()
        },
        boot: BootRules {
            // Keylime reference states are SHA-256.
            required_bank: HashAlgorithm::Sha256.name().to_string(),
            secure_boot: if manifest.boot.secure_boot == Some(true) {
                SecureBootRule::Required
            } else {
                SecureBootRule::Optional
            },
            check_boot_applications: true,
            check_firmware_blobs: has(BootKind::FirmwareBlob),
            check_secure_boot_variables: true,
            dbx_must_list: Vec::new(),
            event_checked_pcrs: Vec::new(),
            kernel_cmdline: CmdlineRules {
                require: Vec::new(),
                forbid: Vec::new(),
                match_manifest: !manifest.boot.kernel_cmdlines.is_empty(),
            },
            accept_tpm_restart: false,
        },
        ima: ImaRules {
            enforce_allowlist: enforce,
            excludes,
            allowlist: BTreeMap::new(),
        },
        components: vec![Component {
            supplier: identity.supplier.clone(),
            product: identity.product.clone(),
            version: identity.version.clone(),
            until: None,
        }],
    };
    policy
        .validate()
        .map_err(|e| format_error("(policy)", e.to_string()))?;
    if has(BootKind::FirmwareBlob) {
        notes.push(
            "check_firmware_blobs: every event of PCRs 0 and 2 must match a manifest digest; \
             Keylime reference states list no option ROM or driver digests (PCR 2 \
             EV_EFI_BOOT_SERVICES_DRIVER): add them as boot_application measurements"
                .to_string(),
        );
    }
    if !has(BootKind::BootApplication) {
        notes.push(
            "no boot application digests: check_boot_applications will fail every boot log \
             until a manifest lists them"
                .to_string(),
        );
    }
    Ok(Learned {
        manifest,
        policy,
        notes,
    })
}

/// Undoes Python's `re.escape`: every backslash escapes the next character. `None` when the text
/// holds an unescaped metacharacter, i.e. it is a real pattern and not an escaped line.
fn unescape_python_regex(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                // Escapes that denote characters rather than themselves.
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'v' => out.push('\u{b}'),
                'f' => out.push('\u{c}'),
                other if other.is_ascii_alphanumeric() => return None,
                other => out.push(other),
            },
            '.' | '^' | '$' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' => {
                return None;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_policy_converts() {
        let json = br#"{"meta":{"version":1,"generator":3},"release":0,
            "digests":{"/data":["96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754"],
                       "/bin/sh":["c90333979f56f38bbd41b81806015b0de502f3cc"]},
            "excludes":["/tmp/.*","(unclosed"],"keyrings":{},"ima":{"ignored_keyrings":[],"log_hash_alg":"sha1","dm_policy":null},
            "ima-buf":{},"verification-keys":""}"#;
        let imported = import_runtime_policy(json).unwrap();
        assert_eq!(
            imported.runtime["/bin/sh"],
            vec!["sha1:c90333979f56f38bbd41b81806015b0de502f3cc".to_string()]
        );
        assert!(imported.runtime["/data"][0].starts_with("sha256:96d7"));
        assert_eq!(imported.excludes, vec!["^(?:/tmp/.*)".to_string()]);
        assert!(imported.notes.iter().any(|n| n.contains("(unclosed")));
        assert_eq!(imported.log_hash_alg.as_deref(), Some("sha1"));

        assert!(matches!(
            import_runtime_policy(br#"{"digests":{}}"#),
            Err(KeylimeError::Format { .. })
        ));
        assert!(matches!(
            import_runtime_policy(br#"{"meta":{},"digests":{"/a":["abc"]}}"#),
            Err(KeylimeError::Format { .. })
        ));
        assert!(matches!(
            import_runtime_policy(b"not json"),
            Err(KeylimeError::Json(_))
        ));
    }

    #[test]
    fn python_escapes_undo() {
        assert_eq!(
            unescape_python_regex(r"\(hd0,gpt2\)/vmlinuz\-5\.14\ root=/dev/x\ ro").as_deref(),
            Some("(hd0,gpt2)/vmlinuz-5.14 root=/dev/x ro")
        );
        assert_eq!(unescape_python_regex("root=.*"), None);
        assert_eq!(unescape_python_regex(r"\d+"), None);
        assert_eq!(unescape_python_regex("trailing\\"), None);
    }

    #[test]
    fn mb_refstate_rejects_junk() {
        assert!(import_mb_refstate(b"[]").is_err());
        assert!(import_mb_refstate(br#"{"other":1}"#).is_err());
        assert!(import_mb_refstate(br#"{"kernels":[{"shim_authcode_sha256":"0x12"}]}"#).is_err());
    }
}
