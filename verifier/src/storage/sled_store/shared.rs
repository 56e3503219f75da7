//! The state every handle on one database shares: the open trees (or none, while closed after a
//! write failure), the audit head, the durable counts, the device cache; the failure latch, the
//! thread that reopens the database once writes succeed again, and the thread that refreshes
//! the seal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::group_commit::GroupCommit;
use super::open::{Seal, write_seal};
use super::trees::Trees;
use crate::device::DeviceRecord;
use crate::storage::error::StorageError;

/// How often the recovery thread retries after a write failure.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// How often the seal is refreshed (see `open.rs`).
const SEAL_EVERY: Duration = Duration::from_secs(1);

/// Why the store is closed, for the operator.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) operation: &'static str,
    pub(super) detail: String,
    pub(super) since: Instant,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) path: PathBuf,
    /// sled's page cache, in bytes (see [`DEFAULT_CACHE_BYTES`](super::trees::DEFAULT_CACHE_BYTES)).
    pub(super) cache_bytes: u64,
    /// The open database; `None` while closed after a write failure.
    pub(super) trees: RwLock<Option<Arc<Trees>>>,
    /// The chain head: last sequence and its hash. Appends hold this lock, so the chain is linear.
    pub(super) head: Mutex<(u64, [u8; 32])>,
    /// Writers hold it shared from their first insert to the end of their flush; a backup and
    /// the seal take it exclusively, so they see only completed, flushed writes.
    pub(super) writes: RwLock<()>,
    pub(super) failure: Mutex<Option<Failure>>,
    pub(super) failures_total: AtomicU64,
    pub(super) recovering: AtomicBool,
    /// Durable counts for the seal (devices and nonces are never deleted).
    pub(super) device_count: AtomicU64,
    pub(super) nonce_count: AtomicU64,
    /// Concurrent flushes are shared (see [`GroupCommit`]).
    pub(super) group: GroupCommit,
    /// Decoded device records: every attestation round reads its device, and decoding the JSON
    /// (certificates as number arrays) was the largest single cost in the load generator's
    /// profile. Filled on read, replaced on write, emptied when the store reopens.
    pub(super) device_cache: RwLock<std::collections::HashMap<String, Arc<DeviceRecord>>>,
}

impl Shared {
    pub(super) fn trees(&self) -> Result<Arc<Trees>, StorageError> {
        let guard = self.trees.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(trees) => Ok(trees.clone()),
            None => Err(self.unavailable()),
        }
    }

    pub(super) fn unavailable(&self) -> StorageError {
        let failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        StorageError::Unavailable {
            path: self.path.clone(),
            detail: failure
                .as_ref()
                .map(|f| format!("{} failed: {}", f.operation, f.detail))
                .unwrap_or_default(),
        }
    }

    /// Closes the store after a failed sled call and starts the recovery thread.
    pub(super) fn fail(self: &Arc<Self>, operation: &'static str, detail: String) -> StorageError {
        {
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                tracing::error!(
                    path = %self.path.display(),
                    operation,
                    %detail,
                    "state database write failed: verdicts are withheld until it is writable again"
                );
                *failure = Some(Failure {
                    operation,
                    detail: detail.clone(),
                    since: Instant::now(),
                });
                self.failures_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Dropping our handle lets sled close once in-flight calls finish; the reopen waits
        // for that (sled's file lock).
        self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        if !self.recovering.swap(true, Ordering::SeqCst) {
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("trustchain-storage-recovery".into())
                .spawn(move || recovery_loop(weak));
            if spawned.is_err() {
                self.recovering.store(false, Ordering::SeqCst);
            }
        }
        StorageError::Backend { operation, detail }
    }

    /// One reopen attempt: the database must open and take a flushed probe write.
    pub(super) fn try_reopen(&self) -> Result<(), String> {
        let trees =
            Trees::open_with_cache(&self.path, self.cache_bytes).map_err(|e| e.to_string())?;
        let probe = crate::clock::now_unix_millis().to_be_bytes();
        trees
            .meta
            .insert("write_probe", &probe)
            .map_err(|e| e.to_string())?;
        trees.db.flush().map_err(|e| e.to_string())?;
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        // The head and counts are re-read from disk: the failed write may or may not be there.
        *head = trees.head()?;
        self.device_count
            .store(trees.devices.len() as u64, Ordering::SeqCst);
        self.nonce_count
            .store(trees.nonces_spent()?, Ordering::SeqCst);
        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(trees));
        // What the failed write left is read again from disk.
        self.device_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        tracing::warn!(
            path = %self.path.display(),
            after_seconds = failure.map(|f| f.since.elapsed().as_secs()).unwrap_or(0),
            "state database writable again: verdicts resume"
        );
        Ok(())
    }

    /// Records what the database durably holds (see `open.rs`); best effort.
    pub(super) fn write_seal(&self) {
        let Ok(trees) = self.trees() else {
            return;
        };
        let seal = {
            // Exclusive, briefly: every counted write has finished its insert.
            let _quiet = self.writes.write().unwrap_or_else(|p| p.into_inner());
            let (sequence, hash) = *self.head.lock().unwrap_or_else(|p| p.into_inner());
            Seal {
                audit_sequence: sequence,
                audit_hash: hex::encode(hash),
                devices: self.device_count.load(Ordering::SeqCst),
                nonces: self.nonce_count.load(Ordering::SeqCst),
            }
        };
        // Deferred writes (nonces, appraisal state) counted above may not be flushed yet; this
        // flush, after the counting, covers them, so the seal never counts more than the disk
        // holds (a crash would otherwise look like lost data). Flushing under the exclusive
        // lock instead stalled every writer once a second (p99 latency of 0.6 s).
        if self
            .group
            .run(|| {
                trees
                    .db
                    .flush()
                    .map(|_| ())
                    .map_err(|e| StorageError::Backend {
                        operation: "flush for the seal",
                        detail: e.to_string(),
                    })
            })
            .is_err()
        {
            return;
        }
        drop(trees);
        if let Err(error) = write_seal(&self.path, &seal) {
            tracing::debug!(%error, "cannot refresh the seal");
        }
    }
}

fn recovery_loop(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(RECOVERY_RETRY);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.try_reopen() {
            Ok(()) => {
                shared.recovering.store(false, Ordering::SeqCst);
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "state database still not writable");
            }
        }
    }
}

pub(super) fn seal_loop(shared: Weak<Shared>) {
    let mut last: Option<(u64, u64, u64)> = None;
    loop {
        std::thread::sleep(SEAL_EVERY);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = (
            shared.head.lock().unwrap_or_else(|p| p.into_inner()).0,
            shared.device_count.load(Ordering::SeqCst),
            shared.nonce_count.load(Ordering::SeqCst),
        );
        if last != Some(now) {
            shared.write_seal();
            last = Some(now);
        }
    }
}
