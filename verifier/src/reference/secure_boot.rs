//! The Secure Boot signature databases' contents against the policy (rule
//! `boot_reference_values`): when `boot.dbx_must_list` is set, every PK, KEK, db and dbx
//! variable event in PCR 7 is decoded as EFI_SIGNATURE_LISTs (`evidence::eventlog::
//! signature_list`, exactly per UEFI 2.10 §32.4.1), and each listed SHA-256 hash must be an
//! EFI_CERT_SHA256 entry of the dbx.
//!
//! Fail closed, and only on bound data: a database that does not decode, or whose event's
//! digest is not the hash of its data in every bank (the event type alone is not signed,
//! GO-2026-6893), fails, and its contents count for nothing. A header on a known signature
//! type is refused rather than read (GHSA-9r4w-jg96-92mv), so it can neither add a hash nor
//! hide one.

use crate::evidence::eventlog::signature_list;
use crate::evidence::eventlog::{EV_EFI_VARIABLE_DRIVER_CONFIG, Event, EventLog, events};
use crate::verdict::{Failure, Rule, Verdict};

use super::policy::BootRules;

/// EFI_GLOBAL_VARIABLE (PK, KEK), as `reference::boot` names it too (that file calls this one).
const EFI_GLOBAL_VARIABLE: &str = "8BE4DF61-93CA-11D2-AA0D-00E098032B8C";

/// "event 12 (PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG)", as every boot rule names events.
fn event_subject(event: &Event) -> String {
    format!(
        "event {} (PCR {}, {})",
        event.index,
        event.pcr,
        crate::evidence::eventlog::event_type_name(event.event_type)
    )
}

/// EFI_IMAGE_SECURITY_DATABASE_GUID, as the event-log decoder renders GUIDs: db and dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: &str = "D719B2CB-3D3A-4596-A3BC-DAD00E67656F";

const RULE: Rule = Rule::BootReferenceValues;

/// Which signature database a PCR 7 variable event holds, if any.
fn database(event: &Event) -> Option<(&'static str, &[u8])> {
    if event.pcr != 7 || event.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG {
        return None;
    }
    let (guid, name, value) = events::variable(event.data.as_slice())?;
    let name = match (guid.as_str(), name.as_str()) {
        (EFI_GLOBAL_VARIABLE, "PK") => "PK",
        (EFI_GLOBAL_VARIABLE, "KEK") => "KEK",
        (EFI_IMAGE_SECURITY_DATABASE, "db") => "db",
        (EFI_IMAGE_SECURITY_DATABASE, "dbx") => "dbx",
        _ => return None,
    };
    Some((name, value))
}

/// Judges the signature databases of `log` against `rules` (nothing when no dbx hash is asked
/// for: the variables are then bound whole by the manifests' digests).
pub fn check(log: &EventLog, rules: &BootRules, verdict: &mut Verdict) {
    if rules.dbx_must_list.is_empty() {
        return;
    }
    let mut dbx_hashes: Vec<&[u8]> = Vec::new();
    let mut dbx_seen = false;
    for event in &log.events {
        let Some((name, value)) = database(event) else {
            continue;
        };
        let unbound = event
            .digest_check()
            .is_none_or(|check| !check.mismatched.is_empty() || check.quirk.is_some());
        if unbound {
            verdict.fail(
                Failure::new(
                    RULE,
                    format!(
                        "{name} is read only from data its digest covers, and this event's is not"
                    ),
                )
                .subject(event_subject(event)),
            );
            continue;
        }
        match signature_list::parse(value) {
            Ok(lists) if name == "dbx" => {
                dbx_seen = true;
                dbx_hashes.extend(signature_list::sha256_hashes(&lists));
            }
            Ok(_) => {}
            Err(error) => verdict.fail(
                Failure::new(
                    RULE,
                    format!("{name} is not a well-formed EFI_SIGNATURE_LIST sequence: {error}"),
                )
                .subject(event_subject(event)),
            ),
        }
    }
    if !dbx_seen {
        verdict.fail(
            Failure::new(
                RULE,
                "the policy requires dbx entries and no dbx decodes from the log",
            )
            .subject("PCR 7, EV_EFI_VARIABLE_DRIVER_CONFIG dbx")
            .values(
                "(no dbx)",
                format!("{} required hashes", rules.dbx_must_list.len()),
            ),
        );
        return;
    }
    for required in &rules.dbx_must_list {
        let listed = hex::decode(required).is_ok_and(|hash| dbx_hashes.contains(&hash.as_slice()));
        if !listed {
            verdict.fail(
                Failure::new(
                    RULE,
                    "the dbx does not revoke a hash the policy requires it to",
                )
                .subject("dbx")
                .values(
                    format!("{} EFI_CERT_SHA256 entries", dbx_hashes.len()),
                    format!("contains {required}"),
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::evidence::digest::HashAlgorithm;
    use crate::evidence::eventlog::signature_list::{EFI_CERT_SHA256, encode_list};
    use crate::evidence::eventlog::{Digests, LogFormat};

    const BANK: HashAlgorithm = HashAlgorithm::Sha256;
    const OWNER: [u8; 16] = [0xaa; 16];
    const REVOKED: [u8; 32] = [0x5a; 32];
    /// EFI_IMAGE_SECURITY_DATABASE_GUID in wire form.
    const SECURITY_DATABASE: [u8; 16] = [
        0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65,
        0x6f,
    ];

    fn variable(name: &str, value: &[u8]) -> Vec<u8> {
        let mut out = SECURITY_DATABASE.to_vec();
        out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend(name.encode_utf16().flat_map(u16::to_le_bytes));
        out.extend_from_slice(value);
        out
    }

    fn log(name: &str, value: &[u8], measured: Option<&[u8]>) -> EventLog {
        let data = variable(name, value);
        let digest = BANK.hash(measured.unwrap_or(&data));
        EventLog {
            format: LogFormat::CryptoAgile,
            spec_id: None,
            banks: vec![BANK],
            events: vec![Event::new(
                0,
                7,
                EV_EFI_VARIABLE_DRIVER_CONFIG,
                Digests::from_values(&[(BANK, &digest)]).unwrap(),
                &data,
            )],
        }
    }

    fn judged(log: &EventLog) -> Vec<String> {
        let rules = BootRules {
            dbx_must_list: vec![hex::encode(REVOKED)],
            ..BootRules::default()
        };
        let mut verdict = Verdict::default();
        check(log, &rules, &mut verdict);
        verdict.failures().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_dbx_listing_the_hash_passes_and_one_without_it_fails() {
        let dbx = encode_list(
            EFI_CERT_SHA256,
            &[],
            &[(OWNER, &[1; 32]), (OWNER, &REVOKED)],
        );
        assert!(judged(&log("dbx", &dbx, None)).is_empty());
        let dbx = encode_list(EFI_CERT_SHA256, &[], &[(OWNER, &[1; 32])]);
        let failures = judged(&log("dbx", &dbx, None));
        assert!(failures[0].contains("does not revoke"), "{failures:?}");
    }

    /// GHSA-9r4w-jg96-92mv: the required hash hidden in a SignatureHeader.
    #[test]
    fn a_hash_in_a_signature_header_is_never_counted() {
        let mut header = OWNER.to_vec();
        header.extend_from_slice(&REVOKED);
        let dbx = encode_list(EFI_CERT_SHA256, &header, &[(OWNER, &[1; 32])]);
        let failures = judged(&log("dbx", &dbx, None)).join("\n");
        assert!(failures.contains("SignatureHeaderSize"), "{failures}");
        assert!(failures.contains("no dbx decodes"), "{failures}");
    }

    /// GO-2026-6893: a variable event whose digest is not its data's is read for nothing.
    #[test]
    fn a_dbx_its_digest_does_not_cover_is_not_read() {
        let dbx = encode_list(EFI_CERT_SHA256, &[], &[(OWNER, &REVOKED)]);
        let failures = judged(&log("dbx", &dbx, Some(b"something else"))).join("\n");
        assert!(failures.contains("digest covers"), "{failures}");
        assert!(failures.contains("no dbx decodes"), "{failures}");
    }

    #[test]
    fn a_db_whose_sizes_disagree_fails() {
        let mut db = encode_list(EFI_CERT_SHA256, &[], &[(OWNER, &[1; 32])]);
        db[16..20].copy_from_slice(&100u32.to_le_bytes());
        let mut both = log("db", &db, None);
        let dbx = log(
            "dbx",
            &encode_list(EFI_CERT_SHA256, &[], &[(OWNER, &REVOKED)]),
            None,
        );
        both.events.extend(dbx.events);
        let failures = judged(&both).join("\n");
        assert!(failures.contains("db is not a well-formed"), "{failures}");
    }
}
