//! The two-person rule (`[admin] two_person_imports`): a trust-list or policy import by one
//! policy-admin is held here, durably and by the document's SHA-256, until a different
//! policy-admin approves it by that digest. The document is only checked when submitted
//! (signature and format, to refuse junk early); the import at approval checks it all again
//! against what is active then. Decided imports, accepted or refused, are removed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{DocumentKind, Storage, StorageError};

/// Most imports pending at once (each at most `signed::MAX_DOCUMENT_SIZE`).
pub const MAX_PENDING: usize = 32;

/// What kind of document waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingKind {
    TrustList,
    Policy,
}

impl PendingKind {
    pub fn name(self) -> &'static str {
        match self {
            PendingKind::TrustList => "trust list",
            PendingKind::Policy => "policy",
        }
    }
}

/// An import waiting for its second policy-admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingImport {
    pub kind: PendingKind,
    pub document: String,
    /// The submitting operator's name and certificate serial (hex).
    pub submitted_by: String,
    pub submitter_serial: String,
    pub submitted_at_unix_millis: i64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PendingError {
    #[error("{MAX_PENDING} imports are already waiting for approval")]
    Full,
    #[error("this document is already waiting for approval")]
    AlreadyPending,
    #[error("no import with this digest is waiting for approval")]
    NotFound,
    #[error("pending import {digest} is unreadable: {detail}")]
    Corrupt { digest: String, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The digest an import is approved by: SHA-256 of the document as stored (trimmed), hex.
pub fn digest(document: &str) -> String {
    hex::encode(Sha256::digest(document.trim().as_bytes()))
}

/// Holds `import`; returns its digest.
pub fn submit(storage: &dyn Storage, import: &PendingImport) -> Result<String, PendingError> {
    let digest = digest(&import.document);
    let pending = storage.documents(DocumentKind::PendingImport)?;
    if pending.iter().any(|(key, _)| key == digest.as_bytes()) {
        return Err(PendingError::AlreadyPending);
    }
    if pending.len() >= MAX_PENDING {
        return Err(PendingError::Full);
    }
    let value = serde_json::to_vec(import).map_err(|e| PendingError::Corrupt {
        digest: digest.clone(),
        detail: e.to_string(),
    })?;
    storage.put_document(DocumentKind::PendingImport, digest.as_bytes(), &value)?;
    Ok(digest)
}

/// The import waiting under `digest`.
pub fn pending(storage: &dyn Storage, digest: &str) -> Result<PendingImport, PendingError> {
    let digest = digest.trim().to_ascii_lowercase();
    let (_, value) = storage
        .documents(DocumentKind::PendingImport)?
        .into_iter()
        .find(|(key, _)| key == digest.as_bytes())
        .ok_or(PendingError::NotFound)?;
    let import: PendingImport =
        serde_json::from_slice(&value).map_err(|e| PendingError::Corrupt {
            digest: digest.clone(),
            detail: e.to_string(),
        })?;
    // The key is the digest of what is stored: a record under another digest was not written
    // by `submit`.
    if self::digest(&import.document) != digest {
        return Err(PendingError::Corrupt {
            digest,
            detail: "the document does not match its digest".into(),
        });
    }
    Ok(import)
}

/// Forgets the import under `digest` (once it has been decided).
pub fn remove(storage: &dyn Storage, digest: &str) -> Result<(), PendingError> {
    let digest = digest.trim().to_ascii_lowercase();
    Ok(storage.remove_document(DocumentKind::PendingImport, digest.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    #[test]
    fn held_by_digest_durably_bounded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let import = |n: usize| PendingImport {
            kind: PendingKind::Policy,
            document: format!("name = \"p{n}\"\nversion = 1\n"),
            submitted_by: "alice".into(),
            submitter_serial: "01".into(),
            submitted_at_unix_millis: 0,
        };
        let first = {
            let storage = SledStorage::open(dir.path()).unwrap();
            let first = submit(&storage, &import(0)).unwrap();
            assert!(matches!(
                submit(&storage, &import(0)),
                Err(PendingError::AlreadyPending)
            ));
            first
        };
        let storage = SledStorage::open(dir.path()).unwrap();
        assert_eq!(pending(&storage, &first).unwrap(), import(0));
        assert!(matches!(
            pending(&storage, &digest("other")),
            Err(PendingError::NotFound)
        ));
        for n in 1..MAX_PENDING {
            submit(&storage, &import(n)).unwrap();
        }
        assert!(matches!(
            submit(&storage, &import(MAX_PENDING)),
            Err(PendingError::Full)
        ));
        remove(&storage, &first).unwrap();
        assert!(matches!(
            pending(&storage, &first),
            Err(PendingError::NotFound)
        ));
    }
}
