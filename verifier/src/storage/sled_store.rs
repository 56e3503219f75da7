//! The sled implementation of [`Storage`]. Trees:
//! `meta` (schema version), `devices` (id -> JSON), `hostnames` (hostname -> id),
//! `events` (big-endian sequence -> a hash-chained audit record, see `crate::audit`),
//! `spent_nonces` (per device: nonces spent and the last few, see `spent_nonces.rs`), `nonces`
//! (one key per spent nonce, written by layouts v1 and v2; kept, counted, no longer written),
//! `appraisals` (last good appraisal state per device),
//! `trust_lists`, `manifests`, `policies` (every accepted version of each document).
//!
//! Layout of this module: this file holds the running store (reads, writes, the write-failure
//! latch and its recovery); `sled_store/open.rs` the start-up path (check on a scratch copy,
//! migration, the seal).
//!
//! Failure model. sled latches its first I/O error (e.g. ENOSPC) and refuses every later write
//! until the database is reopened, while its in-memory tree may still show the write whose flush
//! failed. So the first failed write closes the database here: every call then fails with
//! [`StorageError::Unavailable`] (no verdict can rest on a write that did not reach the disk, and
//! nothing reads the undurable in-memory state), and a background thread reopens it once a probe
//! write succeeds again (e.g. when space returns).

mod open;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::spent_nonces::{MAX_NONCE, SpentNonces};
use super::{
    DeviceRecord, DocumentKind, EventRecord, ExportEntry, Storage, StorageError, StorageHealth,
};
use crate::audit::{AuditLine, chain_hash};

pub use open::{SEAL_FILE, Seal};

/// How often the recovery thread retries after a write failure.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// How often the seal is refreshed (see `open.rs`).
const SEAL_EVERY: Duration = Duration::from_secs(1);

/// Every tree, from one open of the database.
#[derive(Debug)]
struct Trees {
    db: sled::Db,
    meta: sled::Tree,
    devices: sled::Tree,
    hostnames: sled::Tree,
    events: sled::Tree,
    nonces: sled::Tree,
    spent_nonces: sled::Tree,
    appraisals: sled::Tree,
    checkpoints: sled::Tree,
    trust_lists: sled::Tree,
    manifests: sled::Tree,
    policies: sled::Tree,
}

/// Tree names, in the order exports list them.
const TREE_NAMES: [&str; 12] = [
    "meta",
    "devices",
    "hostnames",
    "events",
    "nonces",
    "spent_nonces",
    "appraisals",
    "checkpoints",
    "trust_lists",
    "manifests",
    "policies",
    // sled's default tree: never written by the verifier, exported for completeness.
    "__sled__default",
];

/// sled's page cache. The hot set is a few records per device (its record, appraisal state,
/// latest kept result, spent nonces); what misses is read back from the file through
/// the kernel's page cache. Load generator, 3,000 appraisals/s: 237 us of verifier CPU per
/// appraisal at 64 MiB, 252 and 337 us in two runs at 16 MiB; at 10,000 devices each 16 MiB is
/// 1.6 KiB per device of resident memory. Those 16 MiB runs paid for spent nonces stored one
/// key each, every insert on a random page; with spent nonces per device (layout v3) the hot set
/// is two small records per device, and 16 MiB measured 159 us per appraisal at 5,000/s against
/// 154 us at 24 MiB (within the run-to-run spread).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Trees {
    fn open(path: &Path) -> Result<Self, sled::Error> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        // Every write that must last is flushed explicitly (per call, or by the group commit
        // before a verdict), so sled's own timer flush only added work. HighThroughput: less
        // compaction per write (the load generator measured 10% less verifier CPU per
        // appraisal). The page cache is bounded: sled's default (1 GiB) let the verifier's
        // memory grow with every appraisal it stored.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self {
            meta: db.open_tree("meta")?,
            devices: db.open_tree("devices")?,
            hostnames: db.open_tree("hostnames")?,
            events: db.open_tree("events")?,
            nonces: db.open_tree("nonces")?,
            spent_nonces: db.open_tree("spent_nonces")?,
            appraisals: db.open_tree("appraisals")?,
            checkpoints: db.open_tree("checkpoints")?,
            trust_lists: db.open_tree("trust_lists")?,
            manifests: db.open_tree("manifests")?,
            policies: db.open_tree("policies")?,
            db,
        })
    }

    fn by_name(&self, name: &str) -> Option<&sled::Tree> {
        Some(match name {
            "meta" => &self.meta,
            "devices" => &self.devices,
            "hostnames" => &self.hostnames,
            "events" => &self.events,
            "nonces" => &self.nonces,
            "spent_nonces" => &self.spent_nonces,
            "appraisals" => &self.appraisals,
            "checkpoints" => &self.checkpoints,
            "trust_lists" => &self.trust_lists,
            "manifests" => &self.manifests,
            "policies" => &self.policies,
            "__sled__default" => &self.db,
            _ => return None,
        })
    }

    /// Nonces spent, ever: one key each in the earlier layouts' `nonces` tree, plus every
    /// device's count. The seal holds the database to it (neither ever goes down).
    fn nonces_spent(&self) -> Result<u64, String> {
        let mut total = self.nonces.len() as u64;
        for item in self.spent_nonces.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let record = SpentNonces::decode(Some(&value)).map_err(|e| {
                format!(
                    "the spent nonces of {} are unreadable: {e}",
                    String::from_utf8_lossy(&key)
                )
            })?;
            total = total.saturating_add(record.count);
        }
        Ok(total)
    }

    /// The chain head as stored: last sequence and its hash.
    fn head(&self) -> Result<(u64, [u8; 32]), String> {
        match self.events.last().map_err(|e| e.to_string())? {
            None => Ok((0, [0u8; 32])),
            Some((_, value)) => match serde_json::from_slice::<AuditLine>(&value) {
                Ok(AuditLine::Record { sequence, hash, .. }) => {
                    let hash = hex::decode(&hash)
                        .ok()
                        .and_then(|h| h.try_into().ok())
                        .ok_or("the last audit record's hash is corrupt")?;
                    Ok((sequence, hash))
                }
                _ => Err("the last audit record is corrupt".into()),
            },
        }
    }
}

/// Why the store is closed, for the operator.
#[derive(Debug, Clone)]
struct Failure {
    operation: &'static str,
    detail: String,
    since: Instant,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    /// sled's page cache, in bytes (see [`DEFAULT_CACHE_BYTES`]).
    cache_bytes: u64,
    /// The open database; `None` while closed after a write failure.
    trees: RwLock<Option<Arc<Trees>>>,
    /// The chain head: last sequence and its hash. Appends hold this lock, so the chain is linear.
    head: Mutex<(u64, [u8; 32])>,
    /// Writers hold it shared from their first insert to the end of their flush; a backup and
    /// the seal take it exclusively, so they see only completed, flushed writes.
    writes: RwLock<()>,
    failure: Mutex<Option<Failure>>,
    failures_total: AtomicU64,
    recovering: AtomicBool,
    /// Durable counts for the seal (devices and nonces are never deleted).
    device_count: AtomicU64,
    nonce_count: AtomicU64,
    /// Concurrent flushes are shared (see [`GroupCommit`]).
    group: GroupCommit,
    /// Decoded device records: every attestation round reads its device, and decoding the JSON
    /// (certificates as number arrays) was the largest single cost in the load generator's
    /// profile. Filled on read, replaced on write, emptied when the store reopens.
    device_cache: RwLock<std::collections::HashMap<String, Arc<DeviceRecord>>>,
}

/// Leader-based group commit. A caller that needs its writes durable takes a ticket; if no
/// flush is running it leads one that covers every ticket taken so far, otherwise it waits for
/// the running flush and then, if that flush began before its ticket, for the next. Under load
/// one fsync serves many appraisals instead of each paying for its own.
#[derive(Debug, Default)]
struct GroupCommit {
    /// (tickets taken, highest ticket made durable, a flush is running)
    state: Mutex<(u64, u64, bool)>,
    done: std::sync::Condvar,
}

impl GroupCommit {
    fn run(&self, flush: impl Fn() -> Result<(), StorageError>) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += 1;
        let ticket = state.0;
        loop {
            if state.1 >= ticket {
                return Ok(());
            }
            if state.2 {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.2 = true;
            let covers = state.0;
            drop(state);
            let result = flush();
            state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.2 = false;
            if result.is_ok() {
                state.1 = state.1.max(covers);
            }
            self.done.notify_all();
            // A failed flush fails its leader (and closes the store); waiters then lead their
            // own attempt, which fails on the closed store.
            result?;
        }
    }
}

#[derive(Debug)]
pub struct SledStorage {
    shared: Arc<Shared>,
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
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

/// A device's spent-nonce record as stored (none: it spent none); unreadable is an error.
fn decode_spent(stored: Option<&[u8]>) -> Result<SpentNonces, StorageError> {
    SpentNonces::decode(stored).map_err(|detail| StorageError::Corrupt {
        what: "spent nonces",
        detail,
    })
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

    fn trees(&self) -> Result<Arc<Trees>, StorageError> {
        self.shared.trees()
    }

    fn writes(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.shared.writes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a sled call; a failure closes the store (see the module comment).
    fn run<T>(
        &self,
        operation: &'static str,
        call: impl FnOnce() -> Result<T, sled::Error>,
    ) -> Result<T, StorageError> {
        call().map_err(|e| self.shared.fail(operation, e.to_string()))
    }

    /// Spends `nonce` for `device_id` (not durable until the next flush): false if the device
    /// spent it before. A record that cannot be read is an error, never a fresh start.
    fn spend_nonce(
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

    fn cache_device(&self, record: &DeviceRecord) {
        self.cache_shared(Arc::new(record.clone()));
    }

    fn cache_shared(&self, record: Arc<DeviceRecord>) {
        self.shared
            .device_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.device_id.clone(), record);
    }

    fn write_device(&self, record: &DeviceRecord, flush: bool) -> Result<(), StorageError> {
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

    fn write_device_with_event(
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

    fn flush(&self, trees: &Trees) -> Result<(), StorageError> {
        self.shared
            .group
            .run(|| self.run("flush", || trees.db.flush().map(|_| ())))
    }

    fn document_tree(trees: &Trees, kind: DocumentKind) -> &sled::Tree {
        match kind {
            DocumentKind::TrustList => &trees.trust_lists,
            DocumentKind::Manifest => &trees.manifests,
            DocumentKind::Policy => &trees.policies,
        }
    }

    /// The record that follows the chain head: its sequence, encoded line and chain hash.
    fn next_audit_line(
        head: &(u64, [u8; 32]),
        event: &EventRecord,
    ) -> Result<(u64, Vec<u8>, [u8; 32]), StorageError> {
        let (last, previous) = *head;
        let sequence = last + 1;
        let (line, hash) = Self::audit_line(event, &previous, sequence)?;
        Ok((sequence, encode("audit record", &line)?, hash))
    }

    fn audit_line(
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

impl Shared {
    fn trees(&self) -> Result<Arc<Trees>, StorageError> {
        let guard = self.trees.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(trees) => Ok(trees.clone()),
            None => Err(self.unavailable()),
        }
    }

    fn unavailable(&self) -> StorageError {
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
    fn fail(self: &Arc<Self>, operation: &'static str, detail: String) -> StorageError {
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
    fn try_reopen(&self) -> Result<(), String> {
        let trees =
            Trees::open_with_cache(&self.path, self.cache_bytes).map_err(|e| e.to_string())?;
        let probe = crate::service::now_unix_millis().to_be_bytes();
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
    fn write_seal(&self) {
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
        if let Err(error) = open::write_seal(&self.path, &seal) {
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

fn seal_loop(shared: Weak<Shared>) {
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

    fn documents(&self, kind: DocumentKind) -> Result<super::Documents, StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DeviceState, EkKind, EventKind, Facts, SCHEMA_VERSION};

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
        let seal: Seal =
            serde_json::from_slice(&std::fs::read(path.join(SEAL_FILE)).unwrap()).unwrap();
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
}
