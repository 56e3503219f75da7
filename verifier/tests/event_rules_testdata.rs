//! The boot log's (PCR, event type) table against every real event log in
//! ../shared/testdata/eventlogs: real firmware must pass the table as the PFP writes it, so a
//! tightened table that a real machine breaks shows up here, by log and event, rather than in
//! the field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use trustchain_verifier::attestation::boot_events::event_allowed;
use trustchain_verifier::evidence::eventlog::{event_type_name, parse};

#[test]
fn every_real_log_puts_its_events_where_the_firmware_profile_allows() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs"
    ));
    assert!(dir.is_dir(), "testdata {} is missing", dir.display());
    let mut checked = 0;
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let Ok(log) = parse(&std::fs::read(&path).unwrap()) else {
            continue; // the malformed logs; eventlog_testdata.rs names them
        };
        checked += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for event in log.events.iter().skip(usize::from(log.spec_id.is_some())) {
            if !event_allowed(event.pcr, event.event_type) {
                refused.push(format!(
                    "{name}: event {} (PCR {}, {})",
                    event.index,
                    event.pcr,
                    event_type_name(event.event_type)
                ));
            }
        }
    }
    assert!(
        checked >= 32,
        "expected the whole testdata set, found {checked}"
    );
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

/// The Secure Boot databases (PK, KEK, db, dbx) of every real log decode as EFI_SIGNATURE_LISTs
/// exactly per UEFI 2.10 §32.4.1 (no header on a known type, sizes as the type says), so the
/// strict decoder behind `boot.dbx_must_list` refuses only crafted data.
#[test]
fn every_real_secure_boot_database_decodes_as_signature_lists() {
    use trustchain_verifier::evidence::eventlog::signature_list;
    use trustchain_verifier::evidence::eventlog::{EV_EFI_VARIABLE_DRIVER_CONFIG, events};
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs"
    ));
    let (mut decoded, mut entries, mut refused) = (0, 0, Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(log) = parse(&std::fs::read(&path).unwrap()) else {
            continue;
        };
        for event in &log.events {
            if event.pcr != 7 || event.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG {
                continue;
            }
            let Some((_, name, value)) = events::variable(event.data.as_slice()) else {
                continue;
            };
            if !["PK", "KEK", "db", "dbx"].contains(&name.as_str()) {
                continue;
            }
            match signature_list::parse(value) {
                Ok(lists) => {
                    decoded += 1;
                    entries += lists.iter().map(|l| l.signatures.len()).sum::<usize>();
                }
                Err(error) => refused.push(format!("{}: {name}: {error}", path.display())),
            }
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
    assert!(decoded >= 50, "only {decoded} databases in the testdata");
    println!("{decoded} real signature databases, {entries} entries, all decoded");
}
