//! The webhook outbox's cursors (`webhook_outbox` tree): webhook URL -> the audit sequence
//! (big-endian u64) up to which its receiver acknowledged every alert.

use super::store::SledStorage;
use crate::storage::error::StorageError;

impl SledStorage {
    pub(super) fn outbox_cursor(&self, webhook: &str) -> Result<Option<u64>, StorageError> {
        let trees = self.trees()?;
        let Some(raw) = self.run("read webhook cursor", || {
            trees.webhook_outbox.get(webhook.as_bytes())
        })?
        else {
            return Ok(None);
        };
        let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| StorageError::Corrupt {
            what: "webhook cursor",
            detail: format!("{} bytes, not 8", raw.len()),
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    pub(super) fn put_outbox_cursor(
        &self,
        webhook: &str,
        sequence: u64,
    ) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        self.run("write webhook cursor", || {
            trees
                .webhook_outbox
                .insert(webhook.as_bytes(), &sequence.to_be_bytes())
        })?;
        self.flush(&trees)
    }
}
