//! The device model: what the verifier knows about an enrolled device (its record, its
//! enrollment facts, its trust state) and the events recorded about devices. Every layer uses
//! these types; how they are kept is the storage module's business.
//!
//! Records are serialised as JSON (readable in an incident, and a field added later with
//! `#[serde(default)]` reads old records); the serde names are the stored form, so renaming a
//! field or variant changes what the database and the audit chain hold.
//!
//! - `record.rs`: [`DeviceRecord`], [`EkKind`], [`Facts`].
//! - `state.rs`: [`DeviceState`], a device's trust state.
//! - `event.rs`: [`EventRecord`] and [`EventKind`], the entries of the audit log.
//! - `stored_bytes.rs`: the serialised form of byte fields (base64).

mod event;
mod record;
mod state;
mod stored_bytes;

pub use event::{EventKind, EventRecord};
pub use record::{DeviceRecord, EkKind, Facts};
pub use state::DeviceState;
