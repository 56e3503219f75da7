//! [`SledStorage`], a handle on the shared state, and its write paths: spending a nonce,
//! writing a device (with or without its audit record), the flush, the audit line that follows
//! the head. The [`Storage`](crate::storage::Storage) methods built on them are in
//! `storage_impl.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::codec::{decode_spent, encode};
use super::group_commit::GroupCommit;
use super::open;
use super::shared::{Shared, seal_loop};
use super::trees::{DEFAULT_CACHE_BYTES, Trees};
use crate::audit::{AuditLine, chain_hash};
use crate::device::{DeviceRecord, EventRecord};
use crate::storage::api::{DocumentKind, ExportEntry};
use crate::storage::error::StorageError;
use crate::storage::spent_nonces::MAX_NONCE;

#[derive(Debug)]
pub struct SledStorage {
    pub(super) shared: Arc<Shared>,
}

impl SledStorage {
    /// Opens (or creates) the database at `path`. A database sled cannot read cleanly, or that
    /// holds less than its seal says it held, is refused and left byte for byte as it was (the
    /// check runs on a scratch copy first); a newer layout is refused, never read; an older one
    /// is migrated.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStorage::open`] with sled's page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let (trees, head) = open::open_checked(path, cache_bytes)?;
        let storage = Self {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                cache_bytes,
                device_count: AtomicU64::new(trees.devices.len() as u64),
                nonce_count: AtomicU64::new(trees.nonces_spent().map_err(|detail| {
                    StorageError::Damaged {
                        path: path.to_path_buf(),
                        detail,
                    }
                })?),
                trees: RwLock::new(Some(Arc::new(trees))),
                head: Mutex::new(head),
                writes: RwLock::new(()),
                failure: Mutex::new(None),
                failures_total: AtomicU64::new(0),
                recovering: AtomicBool::new(false),
                group: GroupCommit::default(),
                device_cache: RwLock::new(std::collections::HashMap::new()),
            }),
        };
        storage.shared.write_seal();
        let weak = Arc::downgrade(&storage.shared);
        // The seal thread ends when the store is dropped.
        let _ = std::thread::Builder::new()
            .name("trustchain-seal".into())
            .spawn(move || seal_loop(weak));
        Ok(storage)
    }

    /// Creates a new database at `path` (which must not hold one) from a backup's entries.
    pub fn import(
        path: &Path,
        entries: impl IntoIterator<Item = ExportEntry>,
    ) -> Result<u64, StorageError> {
        open::import(path, entries)
    }

    pub(super) fn trees(&self) -> Result<Arc<Trees>, StorageError> {
        self.shared.trees()
    }

    pub(super) fn writes(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.shared.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a sled call; a failure closes the store (see the module comment).
    pub(super) fn run<T>(
        &self,
        operation: &'static str,
        call: impl FnOnce() -> Result<T, sled::Error>,
    ) -> Result<T, StorageError> {
        call().map_err(|e| self.shared.fail(operation, e.to_string()))
    }

    /// Spends `nonce` for `device_id` (not durable until the next flush): false if the device
    /// spent it before. A record that cannot be read is an error, never a fresh start.
    pub(super) fn spend_nonce(
        &self,
        trees: &Trees,
        nonce: &[u8],
        device_id: &str,
    ) -> Result<bool, StorageError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE {
            return Err(StorageError::Corrupt {
                what: "nonce",
                detail: format!("{} bytes long", nonce.len()),
            });
        }
        // Only this device's stream spends its nonces, so the update almost never retries. The
        // outcome of the last attempt, the one sled applied, is the answer.
        let mut outcome = Ok(false);
        self.run("consume nonce", || {
            trees
                .spent_nonces
                .fetch_and_update(device_id.as_bytes(), |stored| match decode_spent(stored) {
                    Ok(record) if !record.contains(nonce) => {
                        outcome = Ok(true);
                        Some(record.spend(nonce).encode())
                    }
                    // Spent before, or unreadable: left as it is, and refused below.
                    other => {
                        outcome = other.map(|_| false);
                        stored.map(<[u8]>::to_vec)
                    }
                })
        })?;
        let fresh = outcome?;
        if fresh {
            self.shared.nonce_count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(fresh)
    }

    pub(super) fn cache_device(&self, record: &DeviceRecord) {
        self.cache_shared(Arc::new(record.clone()));
    }

    pub(super) fn cache_shared(&self, record: Arc<DeviceRecord>) {
        self.shared
            .device_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.device_id.clone(), record);
    }

    pub(super) fn write_device(
        &self,
        record: &DeviceRecord,
        flush: bool,
    ) -> Result<(), StorageError> {
        let value = encode("device", record)?;
        let _writing = self.writes();
        let trees = self.trees()?;
        let previous = self.run("write device", || {
            trees.devices.insert(record.device_id.as_bytes(), value)
        })?;
        self.cache_device(record);
        if !record.facts.hostname.is_empty() {
            self.run("write hostname", || {
                trees.hostnames.insert(
                    record.facts.hostname.as_bytes(),
                    record.device_id.as_bytes(),
                )
            })?;
        }
        if flush {
            self.flush(&trees)?;
        }
        if previous.is_none() {
            self.shared.device_count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    pub(super) fn write_device_with_event(
        &self,
        record: &DeviceRecord,
        event: &EventRecord,
        flush: bool,
    ) -> Result<u64, StorageError> {
        use sled::Transactional as _;
        use sled::transaction::ConflictableTransactionError;
        let value = encode("device", record)?;
        let _writing = self.writes();
        let mut head = self.shared.head.lock().unwrap_or_else(|p| p.into_inner());
        let trees = self.trees()?;
        let (sequence, line, hash) = Self::next_audit_line(&head, event)?;
        let outcome = (&trees.devices, &trees.hostnames, &trees.events).transaction(
            |(devices, hostnames, events)| {
                let existed = devices.insert(record.device_id.as_bytes(), value.as_slice())?;
                if !record.facts.hostname.is_empty() {
                    hostnames.insert(
                        record.facts.hostname.as_bytes(),
                        record.device_id.as_bytes(),
                    )?;
                }
                events.insert(&sequence.to_be_bytes(), line.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(existed.is_none())
            },
        );
        let created = match outcome {
            Ok(created) => created,
            Err(error) => {
                return Err(self
                    .shared
                    .fail("write device and event", format!("{error:?}")));
            }
        };
        self.cache_device(record);
        if flush {
            self.flush(&trees)?;
        }
        if created {
            self.shared.device_count.fetch_add(1, Ordering::SeqCst);
        }
        *head = (sequence, hash);
        Ok(sequence)
    }

    pub(super) fn flush(&self, trees: &Trees) -> Result<(), StorageError> {
        self.shared
            .group
            .run(|| self.run("flush", || trees.db.flush().map(|_| ())))
    }

    pub(super) fn document_tree(trees: &Trees, kind: DocumentKind) -> &sled::Tree {
        match kind {
            DocumentKind::TrustList => &trees.trust_lists,
            DocumentKind::Manifest => &trees.manifests,
            DocumentKind::Policy => &trees.policies,
            DocumentKind::PendingImport => &trees.pending_imports,
        }
    }

    /// The record that follows the chain head: its sequence, encoded line and chain hash.
    pub(super) fn next_audit_line(
        head: &(u64, [u8; 32]),
        event: &EventRecord,
    ) -> Result<(u64, Vec<u8>, [u8; 32]), StorageError> {
        let (last, previous) = *head;
        let sequence = last + 1;
        let (line, hash) = Self::audit_line(event, &previous, sequence)?;
        Ok((sequence, encode("audit record", &line)?, hash))
    }

    pub(super) fn audit_line(
        event: &EventRecord,
        previous: &[u8; 32],
        sequence: u64,
    ) -> Result<(AuditLine, [u8; 32]), StorageError> {
        let record =
            String::from_utf8(encode("event", event)?).map_err(|e| StorageError::Corrupt {
                what: "event",
                detail: e.to_string(),
            })?;
        let hash = chain_hash(previous, sequence, record.as_bytes());
        Ok((
            AuditLine::Record {
                sequence,
                prev_hash: hex::encode(previous),
                hash: hex::encode(hash),
                record,
            },
            hash,
        ))
    }
}
