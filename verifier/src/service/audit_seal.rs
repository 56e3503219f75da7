//! Signing the audit chain: periodic checkpoints over its head and sealed exports.

use crate::audit::{AuditLine, SigningKey};
use crate::clock::now_unix_millis;
use crate::storage::{Storage, StorageError};

/// Signs the audit chain's head, if it moved since the last checkpoint, and stores it.
pub fn checkpoint(storage: &dyn Storage, key: &SigningKey) -> Result<(), StorageError> {
    let (head, hash) = storage.audit_head();
    if head == 0
        || storage
            .checkpoints(head)?
            .iter()
            .any(|(sequence, _, _)| *sequence == head)
    {
        return Ok(());
    }
    let signature = key
        .sign(&crate::audit::checkpoint_message(head, &hash))
        .map_err(|e| StorageError::Backend {
            operation: "sign checkpoint",
            detail: e.to_string(),
        })?;
    storage.put_checkpoint(head, &hex::encode(hash), &hex::encode(signature))?;
    Ok(())
}

/// The audit log from `from` to the head, with the periodic checkpoints in place, ending with
/// a final checkpoint signed now over exactly that range (`audit::seal_export`).
pub fn export(
    storage: &dyn Storage,
    key: &SigningKey,
    from: u64,
) -> Result<Vec<AuditLine>, StorageError> {
    checkpoint(storage, key)?;
    let (head, _) = storage.audit_head();
    let mut records = storage.audit_records(from.max(1), usize::MAX)?;
    records.retain(|l| matches!(l, AuditLine::Record { sequence, .. } if *sequence <= head));
    let checkpoints = storage.checkpoints(from.max(1))?;
    let sealed = crate::audit::seal_export(records, &checkpoints, key, now_unix_millis() / 1000);
    sealed.map_err(|detail| {
        let operation = "seal audit export";
        StorageError::Backend { operation, detail }
    })
}
