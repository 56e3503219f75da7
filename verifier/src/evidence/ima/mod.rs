//! Linux IMA measurement lists: parsing (ASCII and binary), template hashes and PCR replay.
//!
//! - `parse`: both list formats into [`ImaEntry`]s carrying the exact bytes the kernel hashed.
//! - `replay`: incremental PCR replay from a saved [`ImaState`], so the verifier never re-reads
//!   an old prefix; template-hash checks and violations.
//!
//! Facts: the template hash is H(template data) for `ima-ng`, `ima-sig` and `ima-buf`, per bank,
//! from the same data; for the legacy `ima` template it is H(SHA-1 file digest || file name
//! zero-padded to 256 bytes). A violation is logged with an all-zero template hash and extended as
//! all-0xFF.

pub mod parse;
pub mod replay;

pub use parse::{ImaEntry, ImaError, ImaLog, Template, parse, parse_ascii, parse_binary};
pub use replay::{ImaReplay, ImaState, replay, replay_to_quote};

/// Largest measurement list accepted in one batch.
pub const MAX_LIST_SIZE: usize = 64 * 1024 * 1024;
/// Most entries in one batch.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest ASCII line.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest template data (a signature or buffer field included).
pub const MAX_TEMPLATE_DATA: usize = 16 * 1024;
/// Longest file path kept (the kernel limits names to 255 in the legacy template).
pub const MAX_PATH: usize = 4096;
