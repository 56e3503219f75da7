//! The verifier's state, behind a trait so a distributed backend can follow sled.
//!
//! - `api.rs`: [`Storage`], what the rest of the verifier may ask of its state, and the types
//!   it speaks (documents, health, export entries, the layout version).
//! - `error.rs`: [`StorageError`].
//! - The records kept are the device model of [`crate::device`] (devices, events), serialised
//!   as JSON; this module owns where and how they are kept.
//! - `sled_store`: the embedded default. No sled type leaves that module. It checks the
//!   database before opening it, migrates older layouts, and closes itself on a write failure
//!   until the disk takes writes again.
//! - [`backup`]: consistent backups of a running verifier and their restore.
//! - [`commit`]: group commit for async callers (appraisals await one shared flush).
//! - `spent_nonces`: a device's spent-nonce record.
//! - `clock`: the wall clock as storage writes it.
//!
//! This file only declares and re-exports: the modules below it use `api` and `error`, never
//! their parent.
//!
//! Every write that a security decision rests on is durable (flushed) before the call returns:
//! an accepted enrollment is on disk before the agent hears "accepted".

mod api;
pub mod backup;
pub mod commit;
mod error;
mod sled_store;
mod spent_nonces;

pub use api::{DocumentKind, Documents, ExportEntry, SCHEMA_VERSION, Storage, StorageHealth};
pub use error::StorageError;
pub use sled_store::{DEFAULT_CACHE_BYTES, SEAL_FILE, Seal, SledStorage};
