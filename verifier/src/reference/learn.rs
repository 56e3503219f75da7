//! A draft reference manifest and policy from a known-good device's logs, for a person to read,
//! edit and sign (`trustchain policy learn`).
//!
//! What is learned, and why:
//! - the bank: sha256 when the log has it, else the strongest bank present (legacy logs: sha1);
//! - every extended event in PCRs 0-9 becomes a manifest measurement with all its banks' digests,
//!   typed as boot application (applications and drivers), firmware blob, Secure Boot variable
//!   (PCR 7) or other, so that the policy can check PCRs 0, 2, 4 and 7 event by event;
//! - the kernel command lines and the Secure Boot state the log shows;
//! - with an IMA list, every measured file with its digest.
//!
//! The result passes the log it was learned from, by construction; `notes` say what a person
//! should review before signing (a learned policy trusts whatever that device ran).

use std::collections::BTreeMap;

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::eventlog::{self, Event, EventData, EventLog, event_type_name};
use crate::evidence::ima::{self, ImaLog};

use super::boot::{
    SecureBootState, is_boot_application, is_driver, is_extended, is_firmware_blob,
    is_secure_boot_variable, kernel_cmdlines, secure_boot_state,
};
use super::documents::{BootKind, BootMeasurement, MANIFEST_KIND, Manifest};
use super::policy::{
    BootRules, CmdlineRules, Component, ImaRules, Policy, SecureBootRule, TierSpec,
};
use super::runtime::BOOT_AGGREGATE;

/// PCRs a learned policy checks event by event, when the log has events in them: firmware (0),
/// option ROMs (2), boot applications (4) and Secure Boot (7). PCRs 1, 3, 5 and 6 hold
/// configuration that changes with settings and boot order, so they are left to replay.
pub const LEARNED_EVENT_CHECKED_PCRS: [u32; 4] = [0, 2, 4, 7];

/// Highest PCR whose events are learned (the firmware and boot loader's PCRs).
const LAST_LEARNED_PCR: u32 = 9;

/// Longest description kept for a measurement.
const DESCRIPTION_MAX: usize = 160;

/// Who the learned manifest is from, and the learned policy's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnIdentity {
    pub supplier: String,
    pub product: String,
    pub version: String,
    pub policy_name: String,
}

/// A draft manifest and policy, and what a person should review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub manifest: Manifest,
    pub policy: Policy,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    #[error("event log: {0}")]
    EventLog(#[from] eventlog::EventLogError),
    #[error("IMA list: {0}")]
    Ima(#[from] ima::ImaError),
    #[error("the learned policy is not valid: {0}")]
    Policy(#[from] super::policy::PolicyError),
}

/// The bank a policy for this log should require: sha256 if present, else the strongest.
pub fn preferred_bank(log: &EventLog) -> Option<HashAlgorithm> {
    if log.banks.contains(&HashAlgorithm::Sha256) {
        return Some(HashAlgorithm::Sha256);
    }
    [
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sm3_256,
        HashAlgorithm::Sha1,
    ]
    .into_iter()
    .find(|bank| log.banks.contains(bank))
}

/// Learns a draft manifest and policy from a boot log and, optionally, an IMA list.
pub fn learn(
    eventlog: &[u8],
    ima: Option<&[u8]>,
    identity: &LearnIdentity,
) -> Result<Learned, LearnError> {
    let log = eventlog::parse(eventlog)?;
    let ima_log = ima.map(ima::parse).transpose()?;
    let mut notes = Vec::new();

    let bank = match preferred_bank(&log) {
        Some(bank) => bank,
        None => {
            notes.push(
                "the log carries no digests in a known bank: the policy requires sha256 and \
                 nothing was learned from events"
                    .to_string(),
            );
            HashAlgorithm::Sha256
        }
    };
    match bank {
        HashAlgorithm::Sha256 => {}
        HashAlgorithm::Sha1 => notes.push(
            "log is SHA-1 only: the policy requires the sha1 bank; prefer devices with a SHA-256 \
             bank (SHA-1 collisions are practical)"
                .to_string(),
        ),
        other => notes.push(format!(
            "log has no sha256 bank: the policy requires {}",
            other.name()
        )),
    }

    let events = learn_events(&log);
    let has = |kind: BootKind| events.iter().any(|m| m.kind == kind);
    if !has(BootKind::BootApplication) {
        notes.push("no boot applications in the log".to_string());
    }

    let (secure_boot, _) = secure_boot_state(&log);
    let secure_boot_on = match secure_boot {
        SecureBootState::On => Some(true),
        SecureBootState::Off => {
            notes.push(
                "Secure Boot is off in this log: the policy does not require it; review"
                    .to_string(),
            );
            Some(false)
        }
        SecureBootState::NotMeasured => {
            notes.push("the log has no SecureBoot variable event".to_string());
            None
        }
    };

    let cmdlines = kernel_cmdlines(&log, bank);
    let mut learned_cmdlines: Vec<String> = Vec::new();
    for cmdline in &cmdlines {
        if !cmdline.bound {
            notes.push(format!(
                "event {}: kernel command line not covered by its {} digest, not learned",
                cmdline.event.index,
                bank.name()
            ));
            continue;
        }
        if !learned_cmdlines.contains(&cmdline.text) {
            learned_cmdlines.push(cmdline.text.clone());
        }
    }
    if learned_cmdlines.is_empty() {
        notes.push(
            "no kernel command line found: no kernel_cmdline rule (GRUB logs it in PCR 8, \
             systemd in PCR 12)"
                .to_string(),
        );
    }

    let event_checked_pcrs: Vec<u32> = LEARNED_EVENT_CHECKED_PCRS
        .into_iter()
        .filter(|pcr| {
            log.events
                .iter()
                .any(|e| e.pcr == *pcr && is_extended(e) && e.digest(bank).is_some())
        })
        .collect();

    let runtime = match &ima_log {
        Some(list) => learn_runtime(list, &mut notes),
        None => BTreeMap::new(),
    };

    let manifest = Manifest {
        kind: MANIFEST_KIND.to_string(),
        supplier: identity.supplier.clone(),
        product: identity.product.clone(),
        version: identity.version.clone(),
        issued_at: now_rfc3339(),
        description: format!(
            "Learned by `trustchain policy learn` from one device's logs ({} boot measurements{}).",
            events.len(),
            if ima_log.is_some() {
                format!(", {} runtime files", runtime.len())
            } else {
                String::new()
            }
        ),
        boot: super::documents::BootReferences {
            events,
            kernel_cmdlines: learned_cmdlines.clone(),
            secure_boot: secure_boot_on,
        },
        runtime,
    };

    if ima_log.is_none() {
        notes.push(
            "no IMA list given: ima.enforce_allowlist = false and tier.evidence = \"boot\"; give \
             --ima to learn an allowlist"
                .to_string(),
        );
    }
    let has_blobs = manifest
        .boot
        .events
        .iter()
        .any(|m| m.kind == BootKind::FirmwareBlob);
    let policy = Policy {
        name: identity.policy_name.clone(),
        version: 1,
        description: format!(
            "Learned from one known-good {}/{} device; review before use.",
            identity.supplier, identity.product
        ),
        selector: Default::default(),
        tier: TierSpec {
            evidence: ima_log
                .is_none()
                .then_some(super::policy::EvidenceRequired::Boot),
            ..TierSpec::default()
        },
        boot: BootRules {
            required_bank: bank.name().to_string(),
            secure_boot: if secure_boot_on == Some(true) {
                SecureBootRule::Required
            } else {
                SecureBootRule::Optional
            },
            check_boot_applications: true,
            check_firmware_blobs: has_blobs,
            check_secure_boot_variables: true,
            dbx_must_list: Vec::new(),
            event_checked_pcrs,
            kernel_cmdline: CmdlineRules {
                require: Vec::new(),
                forbid: Vec::new(),
                match_manifest: !learned_cmdlines.is_empty(),
            },
            accept_tpm_restart: false,
        },
        ima: ImaRules {
            enforce_allowlist: ima_log.is_some(),
            excludes: Vec::new(),
            allowlist: BTreeMap::new(),
        },
        components: vec![Component {
            supplier: identity.supplier.clone(),
            product: identity.product.clone(),
            version: identity.version.clone(),
            until: None,
        }],
    };
    policy.validate()?;
    Ok(Learned {
        manifest,
        policy,
        notes,
    })
}

/// One measurement per distinct (PCR, kind, digests) extended event in PCRs 0-9.
fn learn_events(log: &EventLog) -> Vec<BootMeasurement> {
    let mut out: Vec<BootMeasurement> = Vec::new();
    for event in log.events.iter().filter(|e| is_extended(e)) {
        if event.pcr > LAST_LEARNED_PCR || event.digests.is_empty() {
            continue;
        }
        let kind = if is_boot_application(event) || is_driver(event) {
            BootKind::BootApplication
        } else if is_firmware_blob(event) {
            BootKind::FirmwareBlob
        } else if is_secure_boot_variable(event) {
            BootKind::SecureBootVariable
        } else {
            BootKind::Other
        };
        let digests: BTreeMap<String, String> = event
            .digests
            .iter()
            .map(|(alg, digest)| (alg.name().to_string(), hex::encode(digest)))
            .collect();
        if out
            .iter()
            .any(|m| m.pcr == event.pcr && m.kind == kind && m.digests == digests)
        {
            continue;
        }
        out.push(BootMeasurement {
            pcr: event.pcr,
            kind,
            description: describe(event),
            digests,
        });
    }
    out
}

/// A short description for people: the image path, variable name, blob or event text.
fn describe(event: &Event) -> String {
    let kind = event_type_name(event.event_type);
    let detail = match event.decoded() {
        EventData::EfiVariable { name, .. } => name,
        EventData::ImageLoad { device_path, .. } => device_path,
        EventData::Action { text } | EventData::Ipl { text } | EventData::PostCode { text } => text,
        EventData::FirmwareBlob2 { description, .. } => description,
        EventData::CrtmVersion { version } => version,
        EventData::Separator { value, .. } => value,
        _ => String::new(),
    };
    let text = if detail.is_empty() {
        kind
    } else {
        format!("{kind}: {detail}")
    };
    // Descriptions are for people; a 4 KiB GRUB script is not.
    let mut short: String = text.chars().take(DESCRIPTION_MAX).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// Every measured file (not a violation, not the boot aggregate) with its `alg:hex`.
fn learn_runtime(list: &ImaLog, notes: &mut Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut runtime: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut violations = 0usize;
    for entry in &list.entries {
        if entry.is_violation() {
            violations += 1;
            continue;
        }
        if entry.path == BOOT_AGGREGATE {
            continue;
        }
        let digest = format!(
            "{}:{}",
            entry.digest_algorithm.to_ascii_lowercase(),
            hex::encode(&entry.file_digest)
        );
        let digests = runtime.entry(entry.path.clone()).or_default();
        if !digests.contains(&digest) {
            digests.push(digest);
        }
    }
    if violations > 0 {
        notes.push(format!(
            "{violations} IMA violation entries (open-writers/ToMToU) were not learned: find out \
             why this device has them"
        ));
    }
    if runtime.is_empty() {
        notes.push("the IMA list has no measured files".to_string());
    }
    runtime
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{AdmittedManifest, References};
    use crate::verdict::Verdict;

    fn identity() -> LearnIdentity {
        LearnIdentity {
            supplier: "acme".into(),
            product: "gateway".into(),
            version: "1.0".into(),
            policy_name: "gateways".into(),
        }
    }

    fn testdata(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../shared/testdata/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_learned_policy_passes_its_own_log() {
        let log_bytes = testdata("eventlogs/keylime__mb_log.bin");
        let learned = learn(&log_bytes, None, &identity()).unwrap();
        assert_eq!(learned.policy.boot.required_bank, "sha256");
        assert_eq!(learned.policy.boot.secure_boot, SecureBootRule::Required);
        assert!(learned.policy.boot.kernel_cmdline.match_manifest);
        assert_eq!(learned.manifest.boot.kernel_cmdlines.len(), 1);
        // Round trip through the file formats.
        let policy = Policy::from_toml(&learned.policy.to_toml().unwrap()).unwrap();
        let manifest: Manifest =
            serde_json::from_str(&serde_json::to_string(&learned.manifest).unwrap()).unwrap();
        let refs = References::offline(
            policy,
            vec![AdmittedManifest {
                manifest,
                signer: "unsigned".into(),
            }],
            0,
        );
        assert!(refs.passed_over.is_empty());
        let log = eventlog::parse(&log_bytes).unwrap();
        let mut verdict = Verdict::new();
        super::super::boot::check(&log, HashAlgorithm::Sha256, &refs, &mut verdict);
        assert!(verdict.passed(), "{}", verdict.summary());
    }

    #[test]
    fn ima_files_are_learned() {
        let learned = learn(
            &testdata("eventlogs/keylime__mb_log.bin"),
            Some(&testdata(
                "ima/keylime__create-runtime-policy__ima-log-sha256",
            )),
            &identity(),
        )
        .unwrap();
        assert_eq!(
            learned.manifest.runtime.get("/data").unwrap(),
            &vec![
                "sha256:96d7fae8adb7286a419a88f78c13d35fb782d63df654b7db56f154765698b754"
                    .to_string()
            ]
        );
        assert!(!learned.manifest.runtime.contains_key(BOOT_AGGREGATE));
        assert!(learned.policy.ima.enforce_allowlist);
    }

    #[test]
    fn sha1_logs_say_so() {
        let learned = learn(
            &testdata("eventlogs/tpm2-tools__event-uefi-sha1-log.bin"),
            None,
            &identity(),
        )
        .unwrap();
        assert_eq!(learned.policy.boot.required_bank, "sha1");
        assert!(learned.notes.iter().any(|n| n.contains("SHA-1 only")));
    }
}
