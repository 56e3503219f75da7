//! The [`Storage`] trait on [`SledStorage`]: reads straight off the trees (through the device
//! cache), writes through the paths in `store.rs`, and the export.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::codec::{decode, decode_spent, encode};
use super::store::SledStorage;
use super::trees::TREE_NAMES;
use crate::audit::AuditLine;
use crate::device::{DeviceRecord, EventRecord};
use crate::storage::api::{DocumentKind, Documents, ExportEntry, Storage, StorageHealth};
use crate::storage::error::StorageError;

impl Storage for SledStorage {
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StorageError> {
        Ok(self
            .device_shared(device_id)?
            .map(|record| DeviceRecord::clone(&record)))
    }

    fn device_shared(&self, device_id: &str) -> Result<Option<Arc<DeviceRecord>>, StorageError> {
        let trees = self.trees()?;
        if let Some(record) = self
            .shared
            .device_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
        {
            return Ok(Some(record.clone()));
        }
        let record: Option<DeviceRecord> = self
            .run("read device", || trees.devices.get(device_id))?
            .map(|raw| decode("device", &raw))
            .transpose()?;
        Ok(record.map(|record| {
            let record = Arc::new(record);
            self.cache_shared(record.clone());
            record
        }))
    }

    fn devices(&self) -> Result<Vec<DeviceRecord>, StorageError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        // The watchdog lists every device twice a second: decoded records come from the cache.
        for item in trees.devices.iter() {
            let (key, raw) = self.run("list devices", || item)?;
            let cached = std::str::from_utf8(&key).ok().and_then(|id| {
                self.shared
                    .device_cache
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .cloned()
            });
            match cached {
                Some(record) => out.push(DeviceRecord::clone(&record)),
                None => {
                    let record: DeviceRecord = decode("device", &raw)?;
                    self.cache_device(&record);
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    fn device_by_hostname(&self, hostname: &str) -> Result<Option<DeviceRecord>, StorageError> {
        let trees = self.trees()?;
        match self.run("read hostname", || trees.hostnames.get(hostname))? {
            Some(id) => self.device(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    fn put_device(&self, record: &DeviceRecord) -> Result<(), StorageError> {
        self.write_device(record, true)
    }

    fn put_device_deferred(&self, record: &DeviceRecord) -> Result<(), StorageError> {
        self.write_device(record, false)
    }

    fn put_device_with_event(
        &self,
        record: &DeviceRecord,
        event: &EventRecord,
    ) -> Result<u64, StorageError> {
        self.write_device_with_event(record, event, true)
    }

    fn put_device_with_event_deferred(
        &self,
        record: &DeviceRecord,
        event: &EventRecord,
    ) -> Result<u64, StorageError> {
        self.write_device_with_event(record, event, false)
    }

    fn append_event(&self, event: &EventRecord) -> Result<u64, StorageError> {
        let _writing = self.writes();
        let mut head = self.shared.head.lock().unwrap_or_else(|p| p.into_inner());
        let trees = self.trees()?;
        let (sequence, line, hash) = Self::next_audit_line(&head, event)?;
        self.run("write event", || {
            trees.events.insert(sequence.to_be_bytes(), line)
        })?;
        self.flush(&trees)?;
        *head = (sequence, hash);
        Ok(sequence)
    }

    fn audit_head(&self) -> (u64, [u8; 32]) {
        *self.shared.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put_checkpoint(
        &self,
        sequence: u64,
        hash_hex: &str,
        signature_hex: &str,
    ) -> Result<(), StorageError> {
        let value = encode("checkpoint", &(hash_hex, signature_hex))?;
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("write checkpoint", || {
            trees.checkpoints.insert(sequence.to_be_bytes(), value)
        })?;
        self.flush(&trees)
    }

    fn checkpoints(&self, from: u64) -> Result<Vec<(u64, String, String)>, StorageError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for entry in trees.checkpoints.range(from.to_be_bytes()..) {
            let (key, value) = self.run("read checkpoints", || entry)?;
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
        let trees = self.trees()?;
        let mut out = Vec::new();
        for entry in trees.events.range(from.to_be_bytes()..).take(limit) {
            let (_, value) = self.run("read events", || entry)?;
            out.push(decode("audit record", &value)?);
        }
        Ok(out)
    }

    fn consume_nonce(&self, nonce: &[u8], device_id: &str) -> Result<bool, StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        let fresh = self.spend_nonce(&trees, nonce, device_id)?;
        self.flush(&trees)?;
        Ok(fresh)
    }

    fn nonces_spent_by(&self, device_id: &str) -> Result<u64, StorageError> {
        let trees = self.trees()?;
        let stored = self.run("read spent nonces", || {
            trees.spent_nonces.get(device_id.as_bytes())
        })?;
        decode_spent(stored.as_deref()).map(|record| record.count)
    }

    fn appraisal_state(&self, device_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let trees = self.trees()?;
        Ok(self
            .run("read appraisal state", || trees.appraisals.get(device_id))?
            .map(|v| v.to_vec()))
    }

    fn put_appraisal_state(&self, device_id: &str, state: &[u8]) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("write appraisal state", || {
            trees.appraisals.insert(device_id.as_bytes(), state)
        })?;
        self.flush(&trees)
    }

    fn consume_nonce_deferred(&self, nonce: &[u8], device_id: &str) -> Result<bool, StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.spend_nonce(&trees, nonce, device_id)
    }

    fn put_appraisal_state_deferred(
        &self,
        device_id: &str,
        state: &[u8],
    ) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("write appraisal state", || {
            trees.appraisals.insert(device_id.as_bytes(), state)
        })?;
        Ok(())
    }

    fn export_cursor(&self, sink: &str) -> Result<u64, StorageError> {
        self.read_export_cursor(sink)
    }

    fn put_export_cursor(&self, sink: &str, sequence: u64) -> Result<(), StorageError> {
        self.write_export_cursor(sink, sequence)
    }

    fn commit(&self) -> Result<(), StorageError> {
        let trees = self.trees()?;
        self.flush(&trees)
    }

    fn put_document(
        &self,
        kind: DocumentKind,
        key: &[u8],
        document: &[u8],
    ) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("write document", || {
            Self::document_tree(&trees, kind).insert(key, document)
        })?;
        self.flush(&trees)
    }

    fn remove_document(&self, kind: DocumentKind, key: &[u8]) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("remove document", || {
            Self::document_tree(&trees, kind).remove(key).map(|_| ())
        })?;
        self.flush(&trees)
    }

    fn documents(&self, kind: DocumentKind) -> Result<Documents, StorageError> {
        let trees = self.trees()?;
        let mut out = Vec::new();
        for item in Self::document_tree(&trees, kind).iter() {
            let (k, v) = self.run("read documents", || item)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, EventRecord)>, StorageError> {
        self.audit_records(from, limit)?
            .into_iter()
            .filter_map(|line| match line {
                AuditLine::Record {
                    sequence, record, ..
                } => Some(decode("event", record.as_bytes()).map(|e| (sequence, e))),
                AuditLine::Checkpoint { .. } | AuditLine::ExportEnd { .. } => None,
            })
            .collect()
    }

    fn webhook_cursor(&self, webhook: &str) -> Result<Option<u64>, StorageError> {
        self.outbox_cursor(webhook)
    }

    fn put_webhook_cursor(&self, webhook: &str, sequence: u64) -> Result<(), StorageError> {
        self.put_outbox_cursor(webhook, sequence)
    }

    fn health(&self) -> StorageHealth {
        let failure = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StorageHealth {
            writable: failure.is_none(),
            write_failures_total: self.shared.failures_total.load(Ordering::Relaxed),
            detail: failure
                .map(|f| format!("{} failed: {}", f.operation, f.detail))
                .unwrap_or_default(),
        }
    }

    fn export(&self) -> Result<Vec<ExportEntry>, StorageError> {
        // Exclusive for the whole copy: the export is one point in time across every tree (an
        // audit record and the state change it records, a device and its hostname). Writers
        // wait for the copy (milliseconds for a site's database); nothing is streamed to the
        // client under the lock.
        let _quiet = self
            .shared
            .writes
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let trees = self.trees()?;
        let mut out = Vec::new();
        for name in TREE_NAMES {
            let Some(tree) = trees.by_name(name) else {
                continue;
            };
            for item in tree.iter() {
                let (key, value) = self.run("export", || item)?;
                out.push(ExportEntry {
                    tree: name.to_string(),
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        Ok(out)
    }
}
