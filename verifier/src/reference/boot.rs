//! Boot-log events against reference values (rule `boot_reference_values`): boot applications,
//! firmware blobs, Secure Boot state and variables, kernel command line, and PCRs checked event
//! by event. Each failure names the event, the measured digest and what was expected.
//!
//! This runs on every boot log an agent sends, so the manifests' digests for the one bank compared
//! are gathered into hash sets once per call, and events are walked once. The structural rules
//! (allowed PCR/type pairs, separators, variable events hashing to their data) are checked
//! elsewhere (rule `boot_event_rules`); what is read here from event data (the SecureBoot value,
//! the kernel command line) is only trusted where a digest binds it: variable events by those
//! rules, command lines by [`kernel_cmdlines`] itself.

use std::collections::{HashMap, HashSet};

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::eventlog::{
    EV_EFI_VARIABLE_DRIVER_CONFIG, EV_IPL, EV_SEPARATOR, Event, EventLog, device_path,
    event_type_name, events,
};
use crate::verdict::{Failure, Rule, Verdict};

use super::coverage::{self, constrained_pcrs};
pub use super::coverage::{
    is_boot_application, is_driver, is_extended, is_firmware_blob, is_secure_boot_variable,
};
use super::documents::BootKind;
use super::policy::SecureBootRule;
use super::references::References;

/// EFI_GLOBAL_VARIABLE, as the event-log decoder renders GUIDs: SecureBoot, PK and KEK live under
/// it, so a "SecureBoot" variable under another vendor GUID says nothing about Secure Boot.
pub const EFI_GLOBAL_VARIABLE: &str = "8BE4DF61-93CA-11D2-AA0D-00E098032B8C";

const RULE: Rule = Rule::BootReferenceValues;

/// The subject of a failure about `event`, formatted as every other boot rule formats it
/// ("event 41 (PCR 4, EV_EFI_BOOT_SERVICES_APPLICATION)").
pub fn event_subject(event: &Event) -> String {
    format!(
        "event {} (PCR {}, {})",
        event.index,
        event.pcr,
        event_type_name(event.event_type)
    )
}

/// What the log says about UEFI Secure Boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureBootState {
    /// Every SecureBoot variable event holds 1.
    On,
    /// A SecureBoot variable event holds something else (0, or empty when the variable is absent).
    Off,
    /// No SecureBoot variable event.
    NotMeasured,
}

/// The SecureBoot variable (PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI global variable) as logged,
/// with the event that decided it. More than one event must all say 1: a second, contradicting
/// event is never averaged away.
pub fn secure_boot_state(log: &EventLog) -> (SecureBootState, Option<&Event>) {
    let mut state = (SecureBootState::NotMeasured, None);
    for event in &log.events {
        if event.pcr != 7 || event.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG {
            continue;
        }
        let Some((guid, name, value)) = events::variable(event.data.as_slice()) else {
            continue;
        };
        if name != "SecureBoot" || guid != EFI_GLOBAL_VARIABLE {
            continue;
        }
        if value == [1] {
            if state.0 == SecureBootState::NotMeasured {
                state = (SecureBootState::On, Some(event));
            }
        } else {
            return (SecureBootState::Off, Some(event));
        }
    }
    state
}

/// A kernel command line found in the log.
#[derive(Debug, Clone)]
pub struct KernelCmdline<'a> {
    pub event: &'a Event,
    /// The command line as the kernel receives it (GRUB: with the kernel image path first).
    pub text: String,
    /// Whether the event's digest in the bank asked for is the hash of this text. The log's text
    /// is not otherwise covered by the quote: only a bound text may be judged.
    pub bound: bool,
}

/// Descriptions systemd-stub logs in PCR 12 as EV_IPL that are not command lines.
const SYSTEMD_NON_CMDLINE: [&str; 3] = [
    "Credentials initrd",
    "Global credentials initrd",
    "System extension initrd",
];

/// The kernel command lines in the log, with whether `bank`'s digest binds each:
/// - GRUB logs EV_IPL in PCR 8: `kernel_cmdline: <line>` (older Red Hat builds:
///   `grub_kernel_cmdline <line>`), the digest covering `<line>`. When no such event exists, the
///   `grub_cmd: linux <line>` command is used instead (its digest covers `linux <line>`).
/// - systemd-boot and systemd-stub log the line as UTF-16 EV_IPL in PCR 12 (PCR 8 before
///   systemd 251), the digest covering the UTF-16 text with or without its NUL terminator.
///   Tagged events (EV_EVENT_TAG) in PCR 12 are add-ons, not command lines.
pub fn kernel_cmdlines(log: &EventLog, bank: HashAlgorithm) -> Vec<KernelCmdline<'_>> {
    let mut grub = Vec::new();
    let mut grub_commands = Vec::new();
    let mut systemd = Vec::new();
    for event in &log.events {
        if event.event_type != EV_IPL || !(event.pcr == 8 || event.pcr == 12) {
            continue;
        }
        let data = event.data.as_slice();
        if looks_utf16(data) {
            let text = device_path::utf16(data);
            if text.is_empty() || SYSTEMD_NON_CMDLINE.contains(&text.as_str()) {
                continue;
            }
            let body = trim_trailing_utf16_nul(data);
            systemd.push(KernelCmdline {
                event,
                bound: digest_covers(event, bank, body, &[0, 0]),
                text,
            });
            continue;
        }
        if event.pcr != 8 {
            continue;
        }
        let data = trim_trailing_nul(data);
        if let Some(body) = data
            .strip_prefix(b"kernel_cmdline: ")
            .or_else(|| data.strip_prefix(b"grub_kernel_cmdline "))
        {
            grub.push(KernelCmdline {
                event,
                text: String::from_utf8_lossy(body).into_owned(),
                bound: digest_covers(event, bank, body, &[0]),
            });
        } else if let Some(hashed) = data
            .strip_prefix(b"grub_cmd: ")
            .or_else(|| data.strip_prefix(b"grub_cmd "))
        {
            let line = [&b"linux "[..], b"linuxefi ", b"linux16 "]
                .iter()
                .find_map(|command| hashed.strip_prefix(*command));
            if let Some(line) = line {
                grub_commands.push(KernelCmdline {
                    event,
                    text: String::from_utf8_lossy(line).into_owned(),
                    bound: digest_covers(event, bank, hashed, &[0]),
                });
            }
        }
    }
    if grub.is_empty() {
        grub = grub_commands;
    }
    grub.extend(systemd);
    grub
}

/// UTF-16LE text: an ASCII first character followed by a zero byte.
fn looks_utf16(data: &[u8]) -> bool {
    data.len() >= 2 && data.len().is_multiple_of(2) && data.get(1) == Some(&0)
}

fn trim_trailing_nul(data: &[u8]) -> &[u8] {
    let end = data
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last + 1);
    data.get(..end).unwrap_or_default()
}

fn trim_trailing_utf16_nul(mut data: &[u8]) -> &[u8] {
    while let Some(rest) = data.strip_suffix(&[0, 0]) {
        data = rest;
    }
    data
}

/// Whether the event's digest in `bank` is the hash of `body`, or of `body` followed by
/// `terminator` (firmware and loaders differ on whether the NUL is measured).
fn digest_covers(event: &Event, bank: HashAlgorithm, body: &[u8], terminator: &[u8]) -> bool {
    let Some(digest) = event.digest(bank) else {
        return false;
    };
    bank.hash(body) == digest || bank.hash_parts(&[body, terminator]) == digest
}

/// The manifests' digests in one bank, gathered once per call.
struct Index<'r> {
    bank: HashAlgorithm,
    by_kind: HashMap<BootKind, HashSet<Vec<u8>>>,
    /// Every kind, per PCR: only for PCRs whose every event is checked.
    by_pcr: HashMap<u32, HashSet<Vec<u8>>>,
    /// Which manifests (id, signer) list each kind in this bank, for the verdict's "expected".
    sources: HashMap<BootKind, Vec<(String, &'r str)>>,
}

impl<'r> Index<'r> {
    fn build(refs: &'r References, bank: HashAlgorithm, checked_pcrs: &[u32]) -> Self {
        let mut index = Index {
            bank,
            by_kind: HashMap::new(),
            by_pcr: HashMap::new(),
            sources: HashMap::new(),
        };
        for admitted in &refs.manifests {
            let mut kinds_seen: Vec<BootKind> = Vec::new();
            for measurement in &admitted.manifest.boot.events {
                let Some(digest) = digest_in_bank(&measurement.digests, bank) else {
                    continue;
                };
                if checked_pcrs.contains(&measurement.pcr) {
                    index
                        .by_pcr
                        .entry(measurement.pcr)
                        .or_default()
                        .insert(digest.clone());
                }
                index
                    .by_kind
                    .entry(measurement.kind)
                    .or_default()
                    .insert(digest);
                if !kinds_seen.contains(&measurement.kind) {
                    kinds_seen.push(measurement.kind);
                    index
                        .sources
                        .entry(measurement.kind)
                        .or_default()
                        .push((admitted.manifest.id(), admitted.signer.as_str()));
                }
            }
        }
        index
    }

    fn has_kind(&self, kind: BootKind, digest: &[u8]) -> bool {
        self.by_kind
            .get(&kind)
            .is_some_and(|set| set.contains(digest))
    }

    fn has_pcr(&self, pcr: u32, digest: &[u8]) -> bool {
        self.by_pcr
            .get(&pcr)
            .is_some_and(|set| set.contains(digest))
    }

    /// "a boot application digest from manifests acme/kernel/6.1 (signed by acme)".
    fn expected(&self, kind: BootKind) -> String {
        let what = kind_text(kind);
        match self.sources.get(&kind) {
            Some(sources) if !sources.is_empty() => format!(
                "a {what} digest from manifests {}",
                sources
                    .iter()
                    .map(|(id, signer)| format!("{id} (signed by {signer})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!(
                "no manifest lists {what} digests in bank {}",
                self.bank.name()
            ),
        }
    }
}

fn kind_text(kind: BootKind) -> &'static str {
    match kind {
        BootKind::BootApplication => "boot application",
        BootKind::FirmwareBlob => "firmware blob",
        BootKind::SecureBootVariable => "Secure Boot variable",
        BootKind::Other => "boot event",
    }
}

/// The digest for `bank` from a manifest's `alg -> hex` map; a digest of the wrong size or not
/// hex is ignored (manifests are validated when imported, and ignoring only narrows what passes).
pub fn digest_in_bank(
    digests: &std::collections::BTreeMap<String, String>,
    bank: HashAlgorithm,
) -> Option<Vec<u8>> {
    digests.iter().find_map(|(alg, hex_text)| {
        if HashAlgorithm::from_name(alg) != Some(bank) {
            return None;
        }
        let hex_text = hex_text.trim();
        let hex_text = hex_text.strip_prefix("0x").unwrap_or(hex_text);
        hex::decode(hex_text)
            .ok()
            .filter(|bytes| bytes.len() == bank.size())
    })
}

/// "not in any admitted manifest; passed over: ..." when manifests were passed over.
fn detail(base: &str, refs: &References) -> String {
    if refs.passed_over.is_empty() {
        base.to_string()
    } else {
        format!("{base}; passed over: {}", refs.passed_over.join("; "))
    }
}

/// Judges a parsed (and already replayed) boot log against `refs`, in bank `bank`.
pub fn check(log: &EventLog, bank: HashAlgorithm, refs: &References, verdict: &mut Verdict) {
    let rules = &refs.policy.boot;
    check_secure_boot_state(log, rules.secure_boot, verdict);
    super::secure_boot::check(log, rules, verdict);

    if !log.banks.contains(&bank) && log.events.iter().any(is_extended) {
        // One failure rather than one per event: the whole log is in another bank.
        verdict.fail(
            Failure::new(
                RULE,
                format!(
                    "the boot log carries no {} digests, so no event can be compared",
                    bank.name()
                ),
            )
            .subject("boot log"),
        );
        return;
    }

    // Every extended event of a PCR the policy constrains is checked, whatever its type
    // (`coverage`); the PCRs listed in `event_checked_pcrs` accept no data-bound event but the
    // zero separator. PCR 7 is indexed in case the variable check turns out to be on.
    let index = Index::build(refs, bank, &constrained_pcrs(rules, true));
    let check_variables = rules.check_secure_boot_variables
        && index.by_kind.contains_key(&BootKind::SecureBootVariable);
    let constrained = constrained_pcrs(rules, check_variables);
    let zero_separator = bank.hash(&[0, 0, 0, 0]);

    for event in log.events.iter().filter(|e| is_extended(e)) {
        let event_checked = rules.event_checked_pcrs.contains(&event.pcr);
        let covered = constrained.contains(&event.pcr);
        let kind = if rules.check_boot_applications && is_boot_application(event)
            || covered && is_driver(event)
        {
            Some(BootKind::BootApplication)
        } else if rules.check_firmware_blobs && is_firmware_blob(event) {
            Some(BootKind::FirmwareBlob)
        } else if check_variables && is_secure_boot_variable(event) {
            Some(BootKind::SecureBootVariable)
        } else {
            None
        };
        if kind.is_none() && !covered {
            continue;
        }
        let Some(digest) = event.digest(bank) else {
            verdict.fail(
                Failure::new(
                    RULE,
                    format!("the event has no {} digest to compare", bank.name()),
                )
                .subject(event_subject(event)),
            );
            continue;
        };
        if let Some(kind) = kind {
            if !index.has_kind(kind, digest) {
                verdict.fail(
                    Failure::new(RULE, detail("not in any admitted manifest", refs))
                        .subject(event_subject(event))
                        .values(hex::encode(digest), index.expected(kind)),
                );
            }
            // One failure per event: the kind's check is the more specific one.
            continue;
        }
        let bound_by_data = if event_checked {
            event.event_type == EV_SEPARATOR
                && digest == zero_separator.as_slice()
                && coverage::bound_by_data(event, bank)
        } else {
            coverage::bound_by_data(event, bank)
        };
        if !bound_by_data && !index.has_pcr(event.pcr, digest) {
            let why = if event_checked {
                "is checked event by event and no admitted manifest lists this event"
            } else {
                "holds events the policy checks, and no reference value or data check binds this \
                 event (a measurement logged under another type is not exempt)"
            };
            verdict.fail(
                Failure::new(RULE, detail(&format!("PCR {} {why}", event.pcr), refs))
                    .subject(event_subject(event))
                    .values(
                        hex::encode(digest),
                        format!("a PCR {} measurement from an admitted manifest", event.pcr),
                    ),
            );
        }
    }

    check_kernel_cmdline(log, bank, refs, verdict);
}

fn check_secure_boot_state(log: &EventLog, rule: SecureBootRule, verdict: &mut Verdict) {
    if rule != SecureBootRule::Required {
        return;
    }
    match secure_boot_state(log) {
        (SecureBootState::On, _) => {}
        (SecureBootState::Off, Some(event)) => {
            let value = events::variable(event.data.as_slice())
                .map(|(_, _, value)| hex::encode(value))
                .unwrap_or_default();
            verdict.fail(
                Failure::new(RULE, "Secure Boot is required and the log shows it off")
                    .subject(event_subject(event))
                    .values(
                        if value.is_empty() {
                            "SecureBoot = (empty)".to_string()
                        } else {
                            format!("SecureBoot = {value}")
                        },
                        "SecureBoot = 01",
                    ),
            );
        }
        _ => verdict.fail(
            Failure::new(
                RULE,
                "Secure Boot is required and the log has no SecureBoot variable event",
            )
            .subject("PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot")
            .values("(not measured)", "SecureBoot = 01"),
        ),
    }
}

fn check_kernel_cmdline(
    log: &EventLog,
    bank: HashAlgorithm,
    refs: &References,
    verdict: &mut Verdict,
) {
    let rules = &refs.policy.boot.kernel_cmdline;
    if rules.require.is_empty() && rules.forbid.is_empty() && !rules.match_manifest {
        return;
    }
    let found = kernel_cmdlines(log, bank);
    if found.is_empty() {
        verdict.fail(
            Failure::new(
                RULE,
                "the policy has kernel command line rules and the boot log has no kernel command \
                 line (GRUB kernel_cmdline in PCR 8, systemd in PCR 12)",
            )
            .subject("kernel command line"),
        );
        return;
    }
    let allowed: HashSet<&str> = refs
        .manifests
        .iter()
        .flat_map(|m| m.manifest.boot.kernel_cmdlines.iter().map(String::as_str))
        .collect();
    for cmdline in &found {
        let subject = event_subject(cmdline.event);
        if !cmdline.bound {
            verdict.fail(
                Failure::new(
                    RULE,
                    format!(
                        "the event's {} digest is not the hash of its command line text, so the \
                         text cannot be trusted",
                        bank.name()
                    ),
                )
                .subject(subject)
                .values(cmdline.text.clone(), "a command line its digest covers"),
            );
            continue;
        }
        for required in &rules.require {
            if !cmdline.text.contains(required.as_str()) {
                verdict.fail(
                    Failure::new(RULE, "kernel command line lacks a required option")
                        .subject(subject.clone())
                        .values(cmdline.text.clone(), format!("contains {required:?}")),
                );
            }
        }
        for forbidden in &rules.forbid {
            if cmdline.text.contains(forbidden.as_str()) {
                verdict.fail(
                    Failure::new(RULE, "kernel command line has a forbidden option")
                        .subject(subject.clone())
                        .values(
                            cmdline.text.clone(),
                            format!("does not contain {forbidden:?}"),
                        ),
                );
            }
        }
        if rules.match_manifest && !allowed.contains(cmdline.text.as_str()) {
            let expected = if allowed.is_empty() {
                "no admitted manifest lists kernel command lines".to_string()
            } else {
                format!(
                    "one of {} kernel command line(s) from manifests {}",
                    allowed.len(),
                    refs.manifests
                        .iter()
                        .filter(|m| !m.manifest.boot.kernel_cmdlines.is_empty())
                        .map(|m| format!("{} (signed by {})", m.manifest.id(), m.signer))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            verdict.fail(
                Failure::new(
                    RULE,
                    detail(
                        "kernel command line is not one an admitted manifest lists",
                        refs,
                    ),
                )
                .subject(subject)
                .values(cmdline.text.clone(), expected),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::eventlog::{
        Digests, EV_EFI_BOOT_SERVICES_APPLICATION, EV_S_CRTM_CONTENTS, LogFormat,
    };
    use crate::reference::documents::{BootMeasurement, MANIFEST_KIND, Manifest};
    use crate::reference::{AdmittedManifest, Policy};

    const BANK: HashAlgorithm = HashAlgorithm::Sha256;

    fn event(index: usize, pcr: u32, event_type: u32, data: &[u8], measured: &[u8]) -> Event {
        let digest = BANK.hash(measured);
        Event::new(
            index,
            pcr,
            event_type,
            Digests::from_values(&[(BANK, &digest)]).unwrap(),
            data,
        )
    }

    fn log(events: Vec<Event>) -> EventLog {
        EventLog {
            format: LogFormat::CryptoAgile,
            spec_id: None,
            banks: vec![BANK],
            events,
        }
    }

    fn variable_data(name: &str, value: &[u8]) -> Vec<u8> {
        // EFI_GLOBAL_VARIABLE in its on-disk (mixed-endian) layout.
        let mut data = vec![
            0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03,
            0x2b, 0x8c,
        ];
        let units: Vec<u16> = name.encode_utf16().collect();
        data.extend_from_slice(&(units.len() as u64).to_le_bytes());
        data.extend_from_slice(&(value.len() as u64).to_le_bytes());
        for unit in units {
            data.extend_from_slice(&unit.to_le_bytes());
        }
        data.extend_from_slice(value);
        data
    }

    fn manifest(events: Vec<BootMeasurement>, cmdlines: Vec<String>) -> AdmittedManifest {
        let mut m = Manifest {
            kind: MANIFEST_KIND.into(),
            supplier: "acme".into(),
            product: "kernel".into(),
            version: "6.1".into(),
            issued_at: String::new(),
            description: String::new(),
            boot: Default::default(),
            runtime: Default::default(),
        };
        m.boot.events = events;
        m.boot.kernel_cmdlines = cmdlines;
        AdmittedManifest {
            manifest: m,
            signer: "acme".into(),
        }
    }

    fn measurement(pcr: u32, kind: BootKind, measured: &[u8]) -> BootMeasurement {
        BootMeasurement {
            pcr,
            kind,
            description: String::new(),
            digests: [("sha256".to_string(), hex::encode(BANK.hash(measured)))].into(),
        }
    }

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(&format!("name = \"p\"\nversion = 1\n{toml}")).unwrap()
    }

    fn run(log: &EventLog, refs: &References) -> Verdict {
        let mut verdict = Verdict::new();
        check(log, BANK, refs, &mut verdict);
        verdict
    }

    #[test]
    fn boot_applications_must_be_listed() {
        let log = log(vec![
            event(1, 4, EV_EFI_BOOT_SERVICES_APPLICATION, b"", b"shim"),
            event(2, 4, EV_EFI_BOOT_SERVICES_APPLICATION, b"", b"evil"),
        ]);
        let refs = References::new(
            policy(""),
            vec![manifest(
                vec![measurement(4, BootKind::BootApplication, b"shim")],
                vec![],
            )],
            vec!["manifest x signed by unknown signer".into()],
        );
        let verdict = run(&log, &refs);
        assert_eq!(verdict.failures().len(), 1, "{}", verdict.summary());
        let failure = &verdict.failures()[0];
        assert_eq!(
            failure.subject,
            "event 2 (PCR 4, EV_EFI_BOOT_SERVICES_APPLICATION)"
        );
        assert_eq!(failure.measured, hex::encode(BANK.hash(b"evil")));
        assert!(
            failure
                .expected
                .contains("acme/kernel/6.1 (signed by acme)")
        );
        assert!(failure.detail.contains("passed over: manifest x"));

        let none = References::policy_only(policy(""));
        let verdict = run(&log, &none);
        assert_eq!(verdict.failures().len(), 2);
        assert!(verdict.failures()[0].expected.contains("no manifest lists"));
    }

    #[test]
    fn secure_boot_required() {
        let on = log(vec![event(
            1,
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data("SecureBoot", &[1]),
            b"x",
        )]);
        let off = log(vec![event(
            1,
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data("SecureBoot", &[0]),
            b"x",
        )]);
        let refs = References::policy_only(policy("[boot]\nsecure_boot = \"required\"\n"));
        assert!(run(&on, &refs).passed());
        assert!(!run(&off, &refs).passed());
        assert!(!run(&log(vec![]), &refs).passed());
        // Optional: off passes.
        assert!(run(&off, &References::policy_only(policy(""))).passed());
    }

    #[test]
    fn event_checked_pcrs_accept_zero_separators_only() {
        let events = vec![
            event(1, 0, EV_SEPARATOR, &[0, 0, 0, 0], &[0, 0, 0, 0]),
            event(2, 0, EV_S_CRTM_CONTENTS, b"", b"crtm"),
        ];
        let refs = References::new(
            policy("[boot]\nevent_checked_pcrs = [0]\n"),
            vec![manifest(
                vec![measurement(0, BootKind::Other, b"crtm")],
                vec![],
            )],
            vec![],
        );
        assert!(run(&log(events.clone()), &refs).passed());
        let mut bad = events;
        bad.push(event(3, 0, EV_SEPARATOR, &[1, 0, 0, 0], &[1, 0, 0, 0]));
        let verdict = run(&log(bad), &refs);
        assert_eq!(verdict.failures().len(), 1);
        assert!(verdict.failures()[0].subject.starts_with("event 3 (PCR 0"));
    }

    #[test]
    fn kernel_cmdline_rules() {
        let line = b"/vmlinuz root=/dev/sda1 ro quiet";
        let mut text = b"kernel_cmdline: ".to_vec();
        text.extend_from_slice(line);
        text.push(0);
        let log = log(vec![event(5, 8, EV_IPL, &text, line)]);
        let found = kernel_cmdlines(&log, BANK);
        assert_eq!(found.len(), 1);
        assert!(found[0].bound);
        assert_eq!(found[0].text, "/vmlinuz root=/dev/sda1 ro quiet");

        let forbid =
            References::policy_only(policy("[boot.kernel_cmdline]\nforbid = [\"quiet\"]\n"));
        let verdict = run(&log, &forbid);
        assert_eq!(verdict.failures().len(), 1);
        assert_eq!(verdict.failures()[0].subject, "event 5 (PCR 8, EV_IPL)");
        let require =
            References::policy_only(policy("[boot.kernel_cmdline]\nrequire = [\"ro\"]\n"));
        assert!(run(&log, &require).passed());

        let matching = References::new(
            policy("[boot.kernel_cmdline]\nmatch_manifest = true\n"),
            vec![manifest(
                vec![],
                vec![String::from_utf8(line.to_vec()).unwrap()],
            )],
            vec![],
        );
        assert!(run(&log, &matching).passed());
        let other = References::new(
            policy("[boot.kernel_cmdline]\nmatch_manifest = true\n"),
            vec![manifest(vec![], vec!["/vmlinuz root=/dev/sda2".into()])],
            vec![],
        );
        assert!(!run(&log, &other).passed());

        // A text its digest does not cover is not trusted.
        let forged = self::log(vec![event(5, 8, EV_IPL, &text, b"something else")]);
        let verdict = run(&forged, &require);
        assert!(verdict.failures()[0].detail.contains("cannot be trusted"));

        // Rules and no command line: fail closed.
        assert!(!run(&self::log(vec![]), &require).passed());
    }

    #[test]
    fn systemd_cmdlines_are_utf16() {
        let text = " console=ttyS0 quiet";
        let mut data: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let measured = data.clone();
        data.extend_from_slice(&[0, 0]);
        let log = log(vec![event(3, 12, EV_IPL, &data, &measured)]);
        let found = kernel_cmdlines(&log, BANK);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].text, text);
        assert!(found[0].bound);
    }

    #[test]
    fn another_bank_fails_once() {
        let log = log(vec![event(
            1,
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            b"",
            b"a",
        )]);
        let mut verdict = Verdict::new();
        check(
            &log,
            HashAlgorithm::Sha384,
            &References::policy_only(policy("")),
            &mut verdict,
        );
        assert_eq!(verdict.failures().len(), 1);
        assert_eq!(verdict.failures()[0].subject, "boot log");
    }
}
