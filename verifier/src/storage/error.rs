//! Why a storage call failed: the database could not be opened, is newer or damaged, is closed
//! after a write failure, or a call or a stored record failed.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot open the state database at {path}: {detail}")]
    Open {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(
        "the state database at {path} has layout version {found}, newer than this build's \
         {supported}; refusing to read it (upgrade the verifier)"
    )]
    NewerSchema {
        path: std::path::PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "the state database at {path} is damaged ({detail}); it was left untouched: restore a \
         backup (`trustchain-verifier restore`) or move it aside"
    )]
    Damaged {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(
        "the state database at {path} is not writable ({detail}); no verdicts until it recovers"
    )]
    Unavailable {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("state database {operation} failed: {detail}")]
    Backend {
        operation: &'static str,
        detail: String,
    },
    #[error("this replica does not hold the lease of device {device_id}; nothing was written")]
    Fenced { device_id: String },
    #[error("a stored {what} record is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
}
