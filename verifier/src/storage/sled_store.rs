//! The sled implementation of [`Storage`]. Trees:
//! `meta` (schema version), `devices` (id -> JSON), `hostnames` (hostname -> id),
//! `events` (big-endian sequence -> a hash-chained audit record, see `crate::audit`),
//! `nonces` (used nonces), `appraisals` (last good appraisal state per device),
//! `trust_lists`, `manifests`, `policies` (every accepted version of each document).

use std::path::Path;

use super::{DeviceRecord, DocumentKind, EventRecord, SCHEMA_VERSION, Storage, StorageError};
use crate::audit::{AuditLine, chain_hash};

#[derive(Debug)]
pub struct SledStorage {
    /// The chain head: last sequence and its hash. Appends hold this lock, so the chain is linear.
    head: std::sync::Mutex<(u64, [u8; 32])>,
    db: sled::Db,
    devices: sled::Tree,
    hostnames: sled::Tree,
    events: sled::Tree,
    nonces: sled::Tree,
    appraisals: sled::Tree,
    checkpoints: sled::Tree,
    trust_lists: sled::Tree,
    manifests: sled::Tree,
    policies: sled::Tree,
}

fn backend(operation: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |e| StorageError::Backend {
        operation,
        detail: e.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

impl SledStorage {
    /// Opens (or creates) the database at `path`. A database written by a newer layout is refused,
    /// never read; one sled cannot open is reported with its path and never wiped.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let open_error = |detail: String| StorageError::Open {
            path: path.to_path_buf(),
            detail,
        };
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| open_error(e.to_string()))?;
        let meta = db
            .open_tree("meta")
            .map_err(|e| open_error(e.to_string()))?;
        match meta
            .get("schema_version")
            .map_err(|e| open_error(e.to_string()))?
        {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| open_error(e.to_string()))?;
                db.flush().map_err(|e| open_error(e.to_string()))?;
            }
            Some(raw) => {
                let bytes: [u8; 4] = raw
                    .as_ref()
                    .try_into()
                    .map_err(|_| open_error("schema version record is corrupt".into()))?;
                let found = u32::from_be_bytes(bytes);
                if found > SCHEMA_VERSION {
                    return Err(StorageError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_error(e.to_string()));
        let events = tree("events")?;
        let head = match events.last().map_err(|e| open_error(e.to_string()))? {
            None => (0, [0u8; 32]),
            Some((_, value)) => match serde_json::from_slice::<AuditLine>(&value) {
                Ok(AuditLine::Record { sequence, hash, .. }) => {
                    let hash = hex::decode(&hash)
                        .ok()
                        .and_then(|h| h.try_into().ok())
                        .ok_or_else(|| {
                            open_error("the last audit record's hash is corrupt".into())
                        })?;
                    (sequence, hash)
                }
                _ => return Err(open_error("the last audit record is corrupt".into())),
            },
        };
        Ok(Self {
            head: std::sync::Mutex::new(head),
            devices: tree("devices")?,
            hostnames: tree("hostnames")?,
            events,
            nonces: tree("nonces")?,
            appraisals: tree("appraisals")?,
            checkpoints: tree("checkpoints")?,
            trust_lists: tree("trust_lists")?,
            manifests: tree("manifests")?,
            policies: tree("policies")?,
            db,
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map(|_| ()).map_err(backend("flush"))
    }

    fn document_tree(&self, kind: DocumentKind) -> &sled::Tree {
        match kind {
            DocumentKind::TrustList => &self.trust_lists,
            DocumentKind::Manifest => &self.manifests,
            DocumentKind::Policy => &self.policies,
        }
    }
}

impl Storage for SledStorage {
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StorageError> {
        self.devices
            .get(device_id)
            .map_err(backend("read device"))?
            .map(|raw| decode("device", &raw))
            .transpose()
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StorageError> {
        self.devices
            .iter()
            .values()
            .map(|raw| decode("device", &raw.map_err(backend("list devices"))?))
            .collect()
    }

    fn device_by_hostname(&self, hostname: &str) -> Result<Option<DeviceRecord>, StorageError> {
        match self
            .hostnames
            .get(hostname)
            .map_err(backend("read hostname"))?
        {
            Some(id) => self.device(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn put_device(&self, record: &DeviceRecord) -> Result<(), StorageError> {
        let value = encode("device", record)?;
        self.devices
            .insert(record.device_id.as_bytes(), value)
            .map_err(backend("write device"))?;
        if !record.facts.hostname.is_empty() {
            self.hostnames
                .insert(
                    record.facts.hostname.as_bytes(),
                    record.device_id.as_bytes(),
                )
                .map_err(backend("write hostname"))?;
        }
        self.flush()
    }

    fn append_event(&self, event: &EventRecord) -> Result<u64, StorageError> {
        let record =
            String::from_utf8(encode("event", event)?).map_err(|e| StorageError::Corrupt {
                what: "event",
                detail: e.to_string(),
            })?;
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let (last, previous) = *head;
        let sequence = last + 1;
        let hash = chain_hash(&previous, sequence, record.as_bytes());
        let line = AuditLine::Record {
            sequence,
            prev_hash: hex::encode(previous),
            hash: hex::encode(hash),
            record,
        };
        self.events
            .insert(sequence.to_be_bytes(), encode("audit record", &line)?)
            .map_err(backend("write event"))?;
        self.flush()?;
        *head = (sequence, hash);
        Ok(sequence)
    }

    fn audit_head(&self) -> (u64, [u8; 32]) {
        *self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_checkpoint(
        &self,
        sequence: u64,
        hash_hex: &str,
        signature_hex: &str,
    ) -> Result<(), StorageError> {
        let value = encode("checkpoint", &(hash_hex, signature_hex))?;
        self.checkpoints
            .insert(sequence.to_be_bytes(), value)
            .map_err(backend("write checkpoint"))?;
        self.flush()
    }

    fn checkpoints(&self, from: u64) -> Result<Vec<(u64, String, String)>, StorageError> {
        let mut out = Vec::new();
        for entry in self.checkpoints.range(from.to_be_bytes()..) {
            let (key, value) = entry.map_err(backend("read checkpoints"))?;
            let key: [u8; 8] = key.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                what: "checkpoint key",
                detail: "not 8 bytes".into(),
            })?;
            let (hash, signature): (String, String) = decode("checkpoint", &value)?;
            out.push((u64::from_be_bytes(key), hash, signature));
        }
        Ok(out)
    }

    fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditLine>, StorageError> {
        self.events
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|entry| decode("audit record", &entry.map_err(backend("read events"))?.1))
            .collect()
    }

    fn consume_nonce(&self, nonce: &[u8], device_id: &str) -> Result<bool, StorageError> {
        let swapped = self
            .nonces
            .compare_and_swap(nonce, None as Option<&[u8]>, Some(device_id.as_bytes()))
            .map_err(backend("consume nonce"))?;
        self.flush()?;
        Ok(swapped.is_ok())
    }

    fn appraisal_state(&self, device_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .appraisals
            .get(device_id)
            .map_err(backend("read appraisal state"))?
            .map(|v| v.to_vec()))
    }

    fn put_appraisal_state(&self, device_id: &str, state: &[u8]) -> Result<(), StorageError> {
        self.appraisals
            .insert(device_id.as_bytes(), state)
            .map_err(backend("write appraisal state"))?;
        self.flush()
    }

    fn put_document(
        &self,
        kind: DocumentKind,
        key: &[u8],
        document: &[u8],
    ) -> Result<(), StorageError> {
        self.document_tree(kind)
            .insert(key, document)
            .map_err(backend("write document"))?;
        self.flush()
    }

    fn documents(&self, kind: DocumentKind) -> Result<super::Documents, StorageError> {
        self.document_tree(kind)
            .iter()
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(backend("read documents"))
            })
            .collect()
    }

    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, EventRecord)>, StorageError> {
        self.audit_records(from, limit)?
            .into_iter()
            .filter_map(|line| match line {
                AuditLine::Record {
                    sequence, record, ..
                } => Some(decode("event", record.as_bytes()).map(|e| (sequence, e))),
                AuditLine::Checkpoint { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DeviceState, EkKind, EventKind, Facts};

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
        }
    }

    #[test]
    fn devices_and_events_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let store = SledStorage::open(&path).unwrap();
            store.put_device(&record("a", "gw-1")).unwrap();
            let event = EventRecord {
                at_unix_millis: 5,
                kind: EventKind::Enrolled,
                device_id: "a".into(),
                detail: String::new(),
            };
            let first = store.append_event(&event).unwrap();
            let second = store.append_event(&event).unwrap();
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
}
