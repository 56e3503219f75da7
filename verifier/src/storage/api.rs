//! What the rest of the verifier may ask of its state: the [`Storage`] trait, and the types it
//! speaks (stored documents, health, export entries, the layout version).

use super::error::StorageError;
use crate::device::{DeviceRecord, EventRecord};

/// Stored documents: (key, value) in key order.
pub type Documents = Vec<(Vec<u8>, Vec<u8>)>;

/// The trust documents the verifier keeps, each in its own tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// Key: version (big-endian u64); value: the JWS.
    TrustList,
    /// Key: manifest id, NUL, SHA-256 of the JWS; value: the JWS.
    Manifest,
    /// Key: policy name, NUL, version (big-endian u64); value: the TOML text or the JWS.
    Policy,
    /// Imports waiting for a second policy-admin (`[admin] two_person_imports`). Key: SHA-256
    /// of the document, hex; value: the pending import (JSON). Removed once decided.
    PendingImport,
}

/// The on-disk layout version this build reads and writes.
/// v1: devices, hostnames, events, nonces, appraisals, checkpoints.
/// v2: adds the trust-document trees (`trust_lists`, `manifests`, `policies`) and the device
/// record's `recoverable` field (v1 databases are migrated on start).
/// v3: spent nonces are kept per device (`spent_nonces`: a count and the last few); the
/// `nonces` tree of v1 and v2 is kept and counted but no longer written. Nothing is rewritten
/// on migration; the version keeps older builds, which would not read the new tree, out.
pub const SCHEMA_VERSION: u32 = 3;

/// Whether the store accepts writes, for operators (metrics) and the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageHealth {
    /// False from the first failed write until a probe write succeeds again: meanwhile no
    /// verdict is issued.
    pub writable: bool,
    /// Times the store closed after a failed write since the process started.
    pub write_failures_total: u64,
    /// The failure, while not writable.
    pub detail: String,
}

/// One key of one tree, as a backup carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    pub tree: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The verifier's state.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The device with this id, if enrolled (decommissioned devices stay, marked).
    fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StorageError>;
    /// The same record, shared: an attestation round reads its device every round, and a deep
    /// copy (certificates, facts) per round was about 3 % of the verifier's CPU under load.
    fn device_shared(
        &self,
        device_id: &str,
    ) -> Result<Option<std::sync::Arc<DeviceRecord>>, StorageError> {
        Ok(self.device(device_id)?.map(std::sync::Arc::new))
    }
    /// All devices, ordered by id.
    fn devices(&self) -> Result<Vec<DeviceRecord>, StorageError>;
    /// The device currently holding a hostname, if any.
    fn device_by_hostname(&self, hostname: &str) -> Result<Option<DeviceRecord>, StorageError>;
    /// A device (decommissioned ones included) whose EK certificate has this issuer and serial,
    /// other than `except`. Read only after a successful credential activation, so an
    /// unauthenticated peer cannot make the verifier scan; a scan, because enrollments are rare
    /// next to appraisals and an index would be one more thing to keep consistent.
    fn other_device_with_ek_certificate(
        &self,
        issuer: &str,
        serial_hex: &str,
        except: &str,
    ) -> Result<Option<DeviceRecord>, StorageError> {
        Ok(self.devices()?.into_iter().find(|d| {
            d.device_id != except
                && d.ek_certificate_issuer == issuer
                && d.ek_certificate_serial_hex.eq_ignore_ascii_case(serial_hex)
        }))
    }
    /// Inserts or replaces a device record (and its hostname index), durably.
    fn put_device(&self, record: &DeviceRecord) -> Result<(), StorageError>;
    /// Writes a device record and the audit record of its state change in one transaction,
    /// durably: a crash or a failed write never leaves one without the other. Returns the
    /// record's sequence.
    fn put_device_with_event(
        &self,
        record: &DeviceRecord,
        event: &EventRecord,
    ) -> Result<u64, StorageError>;
    /// [`Storage::put_device_with_event`] made durable by the next [`Storage::commit`] instead
    /// of its own flush (an appraisal's state change, committed with its nonce and state).
    fn put_device_with_event_deferred(
        &self,
        record: &DeviceRecord,
        event: &EventRecord,
    ) -> Result<u64, StorageError>;
    /// [`Storage::put_device`] made durable by the next [`Storage::commit`].
    fn put_device_deferred(&self, record: &DeviceRecord) -> Result<(), StorageError>;
    /// Appends an event (enrollment outcome, alert, state change) to the hash-chained audit log,
    /// durably; returns its sequence (1, 2, 3, ... with no gaps).
    fn append_event(&self, event: &EventRecord) -> Result<u64, StorageError>;
    /// The audit chain's head: last sequence and its chain hash.
    fn audit_head(&self) -> (u64, [u8; 32]);
    /// Stores a signed checkpoint over the audit chain up to `sequence` (its hash and signature, hex).
    fn put_checkpoint(
        &self,
        sequence: u64,
        hash_hex: &str,
        signature_hex: &str,
    ) -> Result<(), StorageError>;
    /// Stored checkpoints with sequence >= `from`, in order, as (sequence, hash hex, signature hex).
    fn checkpoints(&self, from: u64) -> Result<Vec<(u64, String, String)>, StorageError>;
    /// Audit records with sequence >= `from`, at most `limit`, as stored.
    fn audit_records(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::AuditLine>, StorageError>;
    /// Events with sequence >= `from`, at most `limit`.
    fn events(&self, from: u64, limit: usize) -> Result<Vec<(u64, EventRecord)>, StorageError>;
    /// Marks a nonce used by `device_id`, durably. Returns false if the device used it before:
    /// a nonce is accepted once. (Each device's last few nonces are kept, with a count of all:
    /// a nonce is also bound to the one challenge its stream holds in memory, see
    /// `storage/spent_nonces.rs`.)
    fn consume_nonce(&self, nonce: &[u8], device_id: &str) -> Result<bool, StorageError>;
    /// How many nonces `device_id` has spent, durably or not yet flushed.
    fn nonces_spent_by(&self, device_id: &str) -> Result<u64, StorageError>;
    /// The device's last good appraisal state (opaque JSON owned by the attestation module).
    fn appraisal_state(&self, device_id: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Replaces the device's appraisal state, durably.
    fn put_appraisal_state(&self, device_id: &str, state: &[u8]) -> Result<(), StorageError>;
    /// Marks a nonce used at once (a second use is refused from this call on), durable at the
    /// next [`Storage::commit`]: the attestation path commits before it sends any verdict, so
    /// one flush serves the nonce, the state and the result of an appraisal.
    fn consume_nonce_deferred(&self, nonce: &[u8], device_id: &str) -> Result<bool, StorageError> {
        self.consume_nonce(nonce, device_id)
    }
    /// Replaces an appraisal-state entry, durable at the next [`Storage::commit`].
    fn put_appraisal_state_deferred(
        &self,
        device_id: &str,
        state: &[u8],
    ) -> Result<(), StorageError> {
        self.put_appraisal_state(device_id, state)
    }
    /// Makes every write made before the call durable. Concurrent callers share one flush
    /// (group commit).
    fn commit(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Stores a trust document (trust list, manifest, policy) under `key`, durably. Every
    /// accepted version is kept; nothing is overwritten.
    fn put_document(
        &self,
        kind: DocumentKind,
        key: &[u8],
        document: &[u8],
    ) -> Result<(), StorageError>;
    /// Every stored document of `kind`, in key order.
    fn documents(&self, kind: DocumentKind) -> Result<Documents, StorageError>;
    /// Removes a document, durably; only pending imports are ever removed (the others keep
    /// every accepted version).
    fn remove_document(&self, kind: DocumentKind, key: &[u8]) -> Result<(), StorageError>;
    /// The webhook outbox: the audit sequence up to which the receiver at `webhook` (its URL)
    /// acknowledged every alert; `None` before the webhook's first start. The alerts themselves
    /// are the state-change records of the audit log, written in the transaction that changes
    /// the state, so the outbox is one cursor per webhook and cannot grow.
    fn webhook_cursor(&self, webhook: &str) -> Result<Option<u64>, StorageError>;
    /// Moves a webhook's cursor, durably (after a 2xx answer, or at its first start).
    fn put_webhook_cursor(&self, webhook: &str, sequence: u64) -> Result<(), StorageError>;
    /// The last audit sequence the export sink `sink` delivered; 0 if it never delivered.
    fn export_cursor(&self, sink: &str) -> Result<u64, StorageError>;
    /// Moves the sink's cursor to `sequence`, durably (never backwards).
    fn put_export_cursor(&self, sink: &str, sequence: u64) -> Result<(), StorageError>;
    /// Whether writes currently succeed.
    fn health(&self) -> StorageHealth;

    // Replicas. One process on sled owns every device; on PostgreSQL each device is owned by
    // one live replica at a time through a lease (owner, epoch, expiry), and every durable
    // write for a device checks, in its transaction, that this replica still holds that
    // device's lease at the epoch it took (else `StorageError::Fenced`): a replica that lost a
    // lease (paused, partitioned) can never write after another took over.

    /// Whether other processes share this state (replicas over PostgreSQL).
    fn is_shared(&self) -> bool {
        false
    }
    /// This replica's name (sled: "local").
    fn replica_id(&self) -> &str {
        "local"
    }
    /// Takes the device's lease if it is free, expired or already ours (then renewed): true
    /// if this replica holds it after the call. A new epoch on every take, never on renewal.
    fn acquire_lease(&self, _device_id: &str) -> Result<bool, StorageError> {
        Ok(true)
    }
    /// Takes the device's lease even from a live holder (an operator's action on this replica
    /// for a device another replica attests): the holder is fenced from this call on.
    fn seize_lease(&self, _device_id: &str) -> Result<(), StorageError> {
        Ok(())
    }
    /// Whether this replica holds the device's lease, by its own clock (with a margin before
    /// the database's expiry). Writes are fenced by the database regardless.
    fn holds_lease(&self, _device_id: &str) -> bool {
        true
    }
    /// Gives the lease up at once (the device's stream ended here), so another replica may
    /// take it without waiting for its expiry.
    fn release_lease(&self, _device_id: &str) -> Result<(), StorageError> {
        Ok(())
    }
    /// Renews every lease this replica holds, in one statement; returns the devices whose
    /// lease it found lost (taken over, or expired), which it no longer holds.
    fn renew_leases(&self) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }
    /// Leases this replica holds.
    fn leases_held(&self) -> usize {
        0
    }
    /// A number that changes whenever any replica stores or removes a trust document, so a
    /// replica can tell, cheaply, that it must reload them (sled: constant).
    fn documents_generation(&self) -> Result<u64, StorageError> {
        Ok(0)
    }
    /// Devices no live replica holds a lease on (sled: every device, ordered by id): the ones
    /// this replica's watchdog may have to time out.
    fn devices_without_live_lease(&self) -> Result<Vec<DeviceRecord>, StorageError> {
        self.devices()
    }
    /// Every key of every tree at one point in time (writes wait meanwhile), for a backup.
    fn export(&self) -> Result<Vec<ExportEntry>, StorageError>;
}
