//! How values are encoded into the trees and decoded from them: JSON records, a device's
//! spent-nonce record.

use crate::storage::error::StorageError;
use crate::storage::spent_nonces::SpentNonces;

pub(super) fn encode<T: serde::Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// A device's spent-nonce record as stored (none: it spent none); unreadable is an error.
pub(super) fn decode_spent(stored: Option<&[u8]>) -> Result<SpentNonces, StorageError> {
    SpentNonces::decode(stored).map_err(|detail| StorageError::Corrupt {
        what: "spent nonces",
        detail,
    })
}
