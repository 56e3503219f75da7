//! Export cursors: for each export sink (SIEM syslog, ECS file), the last audit sequence it
//! delivered, kept in the `meta` tree under `export_cursor/<sink>` as a big-endian u64.
//! A cursor is small, is rewritten in place, and never moves back.

use super::store::SledStorage;
use crate::storage::error::StorageError;

fn key(sink: &str) -> Vec<u8> {
    format!("export_cursor/{sink}").into_bytes()
}

impl SledStorage {
    pub(super) fn read_export_cursor(&self, sink: &str) -> Result<u64, StorageError> {
        let trees = self.trees()?;
        let Some(raw) = self.run("read export cursor", || trees.meta.get(key(sink)))? else {
            return Ok(0);
        };
        let bytes: [u8; 8] = raw.as_ref().try_into().map_err(|_| StorageError::Corrupt {
            what: "export cursor",
            detail: format!("{} bytes, not 8", raw.len()),
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    pub(super) fn write_export_cursor(
        &self,
        sink: &str,
        sequence: u64,
    ) -> Result<(), StorageError> {
        let _writing = self.writes();
        let trees = self.trees()?;
        // Never backwards: a late write of an older position must not re-deliver.
        self.run("write export cursor", || {
            trees
                .meta
                .fetch_and_update(key(sink), |old| {
                    let old = old
                        .and_then(|o| <[u8; 8]>::try_from(o).ok())
                        .map_or(0, u64::from_be_bytes);
                    Some(old.max(sequence).to_be_bytes().to_vec())
                })
                .map(|_| ())
        })?;
        self.flush(&trees)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::api::Storage;

    #[test]
    fn a_cursor_starts_at_zero_survives_a_reopen_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStorage::open(&path).unwrap();
            assert_eq!(store.export_cursor("syslog").unwrap(), 0);
            store.put_export_cursor("syslog", 7).unwrap();
            store.put_export_cursor("syslog", 3).unwrap();
            store.put_export_cursor("ecs", 2).unwrap();
        }
        let store = SledStorage::open(&path).unwrap();
        assert_eq!(store.export_cursor("syslog").unwrap(), 7);
        assert_eq!(store.export_cursor("ecs").unwrap(), 2);
    }
}
