//! Parsers for device evidence. Every input here is hostile: parsers return errors, never panic,
//! and never allocate more than the bytes actually present justify.

pub mod digest;
pub mod eventlog;
pub mod hex_digests;
pub mod ima;
pub mod quote;
pub mod reader;
pub mod tpm;
