//! The sled store against a real database in a temp dir: reopen, the device-and-event
//! transaction, layout versions and their migration, damage and rollback, export and import.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{SEAL_FILE, Seal, SledStorage};
use crate::device::{DeviceRecord, EventRecord};
use crate::device::{DeviceState, EkKind, EventKind, Facts};
use crate::storage::api::SCHEMA_VERSION;
use crate::storage::api::{DocumentKind, Storage};
use crate::storage::error::StorageError;

fn record(id: &str, host: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        ek_kind: EkKind::Rsa2048,
        ek_public: vec![1],
        ek_certificate: vec![2],
        ek_certificate_serial_hex: "01".into(),
        ek_certificate_issuer: "CN=x".into(),
        ak_public: vec![3],
        ak_name: vec![4],
        ak_certificate: vec![],
        client_certificate_serial_hex: "02".into(),
        facts: Facts {
            hostname: host.into(),
            ..Facts::default()
        },
        enrolled_at_unix: 1,
        ak_rotations: 0,
        state: DeviceState::Enrolled,
        state_reason: String::new(),
        state_changed_at_unix: 1,
        recoverable: false,
        fresh_evidence_due_unix: None,
    }
}

fn event(id: &str) -> EventRecord {
    EventRecord {
        at_unix_millis: 5,
        kind: EventKind::Enrolled,
        device_id: id.into(),
        detail: String::new(),
    }
}

#[test]
fn devices_and_events_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    {
        let store = SledStorage::open(&path).unwrap();
        store.put_device(&record("a", "gw-1")).unwrap();
        let first = store.append_event(&event("a")).unwrap();
        let second = store.append_event(&event("a")).unwrap();
        assert!(second > first);
    }
    let store = SledStorage::open(&path).unwrap();
    assert_eq!(store.device("a").unwrap().unwrap(), record("a", "gw-1"));
    assert_eq!(
        store.device_by_hostname("gw-1").unwrap().unwrap().device_id,
        "a"
    );
    assert!(store.device("b").unwrap().is_none());
    assert_eq!(store.events(0, 10).unwrap().len(), 2);
}

#[test]
fn a_state_change_and_its_record_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let store = SledStorage::open(&path).unwrap();
    store.append_event(&event("a")).unwrap();
    let mut device = record("a", "gw-1");
    device.state = DeviceState::Trusted;
    let sequence = store.put_device_with_event(&device, &event("a")).unwrap();
    assert_eq!(sequence, 2);
    assert_eq!(store.audit_head().0, 2);
    drop(store);
    let store = SledStorage::open(&path).unwrap();
    assert_eq!(
        store.device("a").unwrap().unwrap().state,
        DeviceState::Trusted
    );
    assert_eq!(store.events(0, 10).unwrap().len(), 2);
    assert_eq!(store.append_event(&event("a")).unwrap(), 3);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStorage::open(&path).unwrap_err();
    assert!(
        matches!(err, StorageError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("state"));
}

/// A database as an earlier build left it: only the trees it writes here, meta saying
/// `version`.
fn raw_database(path: &Path, version: u32, fill: impl FnOnce(&sled::Db)) {
    let db = sled::open(path).unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert("schema_version", &version.to_be_bytes())
        .unwrap();
    fill(&db);
    db.flush().unwrap();
}

/// A database as version 1 of the layout wrote it: meta says 1, no document trees, a device
/// record without the `recoverable` field.
#[test]
fn a_v1_database_is_migrated_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let mut v1_device = serde_json::to_value(record("tc-old", "gw-old")).unwrap();
    v1_device.as_object_mut().unwrap().remove("recoverable");
    raw_database(&path, 1, |db| {
        db.open_tree("devices")
            .unwrap()
            .insert("tc-old", serde_json::to_vec(&v1_device).unwrap())
            .unwrap();
        db.open_tree("hostnames")
            .unwrap()
            .insert("gw-old", "tc-old")
            .unwrap();
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"manifests"));
    });
    {
        let store = SledStorage::open(&path).unwrap();
        assert_eq!(
            store.device("tc-old").unwrap().unwrap(),
            record("tc-old", "gw-old")
        );
        assert!(store.documents(DocumentKind::Manifest).unwrap().is_empty());
    }
    let db = sled::open(&path).unwrap();
    let version = db
        .open_tree("meta")
        .unwrap()
        .get("schema_version")
        .unwrap()
        .unwrap();
    assert_eq!(version.as_ref(), &SCHEMA_VERSION.to_be_bytes());
    assert_eq!(SCHEMA_VERSION, 3);
    let raw = db
        .open_tree("devices")
        .unwrap()
        .get("tc-old")
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(stored["recoverable"], serde_json::Value::Bool(false));
    assert!(db.tree_names().iter().any(|n| n.as_ref() == b"manifests"));
}

#[test]
fn a_truncated_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    {
        let store = SledStorage::open(&path).unwrap();
        for i in 0..200 {
            store.put_device(&record(&format!("d{i}"), "")).unwrap();
            store.append_event(&event("a")).unwrap();
        }
        // The seal thread runs every second; write it now.
        store.shared.write_seal();
    }
    let db_file = path.join("db");
    let length = std::fs::metadata(&db_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db_file)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    let before = std::fs::read(&db_file).unwrap();
    let err = SledStorage::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&db_file).unwrap(), before);
}

/// A v2 database spent nonces one key each: they stay counted (the seal holds the database
/// to the total), new ones go per device, and a database rolled back to fewer spent nonces
/// than its seal counted is refused.
#[test]
fn a_v2_database_keeps_its_spent_nonces_counted_and_a_rollback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    raw_database(&path, 2, |db| {
        let nonces = db.open_tree("nonces").unwrap();
        for i in 0..3u8 {
            nonces.insert([i; 32], "tc-old").unwrap();
        }
    });
    {
        let store = SledStorage::open(&path).unwrap();
        assert_eq!(store.shared.nonce_count.load(Ordering::SeqCst), 3);
        assert!(store.consume_nonce(&[9; 32], "tc-old").unwrap());
        assert!(!store.consume_nonce(&[9; 32], "tc-old").unwrap());
        assert!(store.consume_nonce(&[9; 32], "tc-other").unwrap());
        assert_eq!(store.nonces_spent_by("tc-old").unwrap(), 1);
        assert_eq!(store.shared.nonce_count.load(Ordering::SeqCst), 5);
        store.shared.write_seal();
    }
    let seal: Seal = serde_json::from_slice(&std::fs::read(path.join(SEAL_FILE)).unwrap()).unwrap();
    assert_eq!(seal.nonces, 5);
    {
        let db = sled::open(&path).unwrap();
        let version = db.open_tree("meta").unwrap().get("schema_version").unwrap();
        assert_eq!(version.unwrap().as_ref(), &3u32.to_be_bytes());
        // Rolled back: one device's spent nonces forgotten.
        db.open_tree("spent_nonces")
            .unwrap()
            .remove("tc-other")
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStorage::open(&path).unwrap_err();
    assert!(err.to_string().contains("nonces"), "{err}");
}

#[test]
fn a_damaged_spent_nonce_record_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(&dir.path().join("state")).unwrap();
    assert!(store.consume_nonce(&[1; 32], "a").unwrap());
    store
        .trees()
        .unwrap()
        .spent_nonces
        .insert("a", &[0u8, 0, 0][..])
        .unwrap();
    assert!(store.consume_nonce_deferred(&[2; 32], "a").is_err());
    assert!(store.consume_nonce(&[], "b").is_err());
    assert!(store.consume_nonce(&[0; 65], "b").is_err());
}

#[test]
fn an_export_imports_into_an_equal_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStorage::open(&dir.path().join("a")).unwrap();
    store.put_device(&record("a", "gw-1")).unwrap();
    store.append_event(&event("a")).unwrap();
    assert!(store.consume_nonce(b"n1", "a").unwrap());
    let entries = store.export().unwrap();
    let copied = SledStorage::import(&dir.path().join("b"), entries).unwrap();
    assert!(copied > 4);
    let restored = SledStorage::open(&dir.path().join("b")).unwrap();
    assert_eq!(restored.device("a").unwrap().unwrap(), record("a", "gw-1"));
    assert_eq!(restored.audit_head(), store.audit_head());
    assert!(!restored.consume_nonce(b"n1", "a").unwrap());
    assert!(SledStorage::import(&dir.path().join("b"), store.export().unwrap()).is_err());
}
