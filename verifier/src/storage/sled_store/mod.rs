//! The sled implementation of [`Storage`]. Trees:
//! `meta` (schema version, export cursors), `devices` (id -> JSON), `hostnames` (hostname -> id),
//! `events` (big-endian sequence -> a hash-chained audit record, see `crate::audit`),
//! `spent_nonces` (per device: nonces spent and the last few, see `spent_nonces.rs`), `nonces`
//! (one key per spent nonce, written by layouts v1 and v2; kept, counted, no longer written),
//! `appraisals` (last good appraisal state per device),
//! `trust_lists`, `manifests`, `policies` (every accepted version of each document),
//! `pending_imports` (imports awaiting a second policy-admin, removed once decided).
//! `webhook_outbox` (per webhook URL: the audit sequence its receiver acknowledged up to).
//!
//! Layout of this module:
//! - `trees.rs`: the trees of one open database and what is read straight off them (the
//!   spent-nonce total, the audit head).
//! - `open.rs`: the start-up path (check on a scratch copy, migration, the seal).
//! - `codec.rs`: how values are encoded into and decoded from the trees (JSON records, a
//!   device's spent-nonce record).
//! - `cursors.rs`: export sinks' cursors (last delivered audit sequence, in `meta`).
//! - `group_commit.rs`: one flush shared by concurrent writers.
//! - `shared.rs`: the state every handle shares: the open trees, the write-failure latch and
//!   its recovery, the seal thread.
//! - `store.rs`: [`SledStorage`] and its write paths (nonce, device, device with its audit
//!   line, flush); `storage_impl.rs`: the [`Storage`] trait on it.
//! - `outbox.rs`: the webhook outbox's cursors.
//! - `store_tests.rs`: the store against real databases (reopen, migration, damage, export).
//!
//! Failure model. sled latches its first I/O error (e.g. ENOSPC) and refuses every later write
//! until the database is reopened, while its in-memory tree may still show the write whose flush
//! failed. So the first failed write closes the database here: every call then fails with
//! [`StorageError::Unavailable`] (no verdict can rest on a write that did not reach the disk, and
//! nothing reads the undurable in-memory state), and a background thread reopens it once a probe
//! write succeeds again (e.g. when space returns).
//!
//! [`Storage`]: crate::storage::Storage
//! [`StorageError::Unavailable`]: crate::storage::StorageError::Unavailable

mod codec;
mod cursors;
mod group_commit;
mod open;
mod outbox;
mod shared;
mod storage_impl;
mod store;
mod trees;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

pub use open::{SEAL_FILE, Seal};
pub use store::SledStorage;
pub use trees::DEFAULT_CACHE_BYTES;
