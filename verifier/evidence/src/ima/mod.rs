//! Linux IMA measurement lists: parsing (ASCII and binary), template hashes and PCR replay.
//!
//! - `template`: the templates (`ima`, `ima-ng`, `ima-sig`, `ima-buf`) and the typed
//!   [`ImaEntry`], which carries the exact bytes the kernel hashed.
//! - `ascii`, `binary`: the two list formats.
//! - `replay`: incremental PCR replay from a saved [`ImaState`], so the verifier never re-reads
//!   an old prefix; template-hash checks and violations.
//!
//! Facts: the template hash is H(template data) for `ima-ng`, `ima-sig` and `ima-buf`, per bank,
//! from the same data; for the legacy `ima` template it is H(SHA-1 file digest || file name
//! zero-padded to 256 bytes). A violation is logged with an all-zero template hash and extended as
//! all-0xFF.

pub mod ascii;
pub mod binary;
pub mod replay;
pub mod template;

use crate::reader::ReadError;

pub use ascii::parse_ascii;
pub use binary::{parse_binary, parse_binary_with_hash_size};
pub use replay::{ImaReplay, ImaReplayState, ImaState, replay, replay_to_quote};
pub use template::{ImaEntry, ImaLog, Template};

/// Largest measurement list accepted in one batch.
pub const MAX_LIST_SIZE: usize = 64 * 1024 * 1024;
/// Most entries in one batch.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest ASCII line.
pub const MAX_LINE: usize = 16 * 1024;
/// Longest template data (a signature or buffer field included).
pub const MAX_TEMPLATE_DATA: usize = 16 * 1024;
/// Longest file path kept (the legacy template is further limited to 255 bytes).
pub const MAX_PATH: usize = 4096;
/// Longest file digest (SHA-512).
pub const MAX_DIGEST: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImaError {
    /// ASCII list: line numbers count from 1 within the batch.
    #[error("line {line}: {detail}")]
    Line { line: usize, detail: String },
    /// Binary list: `index` is the entry's list position, the offset is within the batch.
    #[error("entry {index}: {source}")]
    Binary { index: u64, source: ReadError },
    #[error("the list is larger than {MAX_LIST_SIZE} bytes")]
    TooLarge,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// The logged template hash is not the hash of the entry's template data.
    #[error("entry {index} ({path:?}): template hash does not match the entry's data")]
    TemplateHash { index: u64, path: String },
}

/// Parses either format from the start of a list: ASCII lists start with a decimal PCR number
/// and a space; a binary list starts with a little-endian u32 PCR index, whose second byte is 0
/// for any real PCR.
pub fn parse(bytes: &[u8]) -> Result<ImaLog, ImaError> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && bytes.get(digits) == Some(&b' ') {
        parse_ascii(bytes, 0)
    } else {
        parse_binary(bytes, 0)
    }
}
