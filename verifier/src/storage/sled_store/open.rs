//! Start-up: the database is checked before sled may touch it, migrated if older, refused if
//! newer or damaged.
//!
//! Why a scratch copy: on a damaged log sled may panic, or "recover" by silently dropping
//! everything after the damage and overwriting the rest of that segment, or open an emptied
//! file as a fresh, empty database (tried on sled 0.34.7: a flipped block mid-file panics after
//! writing; a truncated file opens empty). For a verifier that would mean forgotten nonces and
//! devices, so sled first opens a copy; only if the copy opens, migrates, its audit chain links
//! end to end and it holds at least what the seal says, is the real directory opened (sled then
//! repeats on it the same, checked, recovery, e.g. discarding a write torn by a crash).
//!
//! The seal (`trustchain.seal`, refreshed every second by the running store) records what the
//! database durably held: the audit head, and the device and nonce counts (neither is ever
//! deleted). It is what turns a silent rollback into a refusal; loss of writes newer than the
//! last seal (at most a second) cannot be told from a crash and is not detected.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::trees::Trees;
use crate::audit::{AuditLine, chain_hash};
use crate::device::DeviceRecord;
use crate::storage::api::{ExportEntry, SCHEMA_VERSION};
use crate::storage::error::StorageError;

/// The seal's file name inside the state directory.
pub const SEAL_FILE: &str = "trustchain.seal";

/// What the database durably held when it was last sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub audit_sequence: u64,
    pub audit_hash: String,
    pub devices: u64,
    pub nonces: u64,
}

fn damaged(path: &Path, detail: impl Into<String>) -> StorageError {
    StorageError::Damaged {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Opens the real database at `path` after checking a copy; returns it with its audit head.
pub(super) fn open_checked(
    path: &Path,
    cache_bytes: u64,
) -> Result<(Trees, (u64, [u8; 32])), StorageError> {
    let open_error = |detail: String| StorageError::Open {
        path: path.to_path_buf(),
        detail,
    };
    let existing = std::fs::read_dir(path)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if existing {
        if let Some(pid) = locked_by(path) {
            return Err(open_error(format!(
                "it is in use by another process (pid {pid}); one verifier per state directory"
            )));
        }
        check_on_copy(path)?;
    }
    let trees = Trees::open_with_cache(path, cache_bytes).map_err(|e| open_error(e.to_string()))?;
    let head = prepare(path, &trees)?;
    Ok((trees, head))
}

/// The pid holding sled's lock on `<path>/db`, from /proc/locks (Linux); `None` if free or
/// unknown.
fn locked_by(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(path.join("db")).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:123456 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let file_inode: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
        (file_inode == inode && pid != std::process::id()).then_some(pid)
    })
}

/// Copies the directory aside, opens and checks the copy, and removes it. The real directory
/// is only read.
fn check_on_copy(path: &Path) -> Result<(), StorageError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    remove_stale_scratch(parent, &name);
    let scratch = parent.join(format!(".{name}.check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = copy_dir(path, &scratch)
        .map_err(|e| StorageError::Open {
            path: path.to_path_buf(),
            detail: format!(
                "cannot copy it to {} for the start-up check: {e}",
                scratch.display()
            ),
        })
        .and_then(|()| {
            let seal = read_seal(path)?;
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_copy(path, &scratch, seal.as_ref())
            }));
            match checked {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(damaged(
                        path,
                        format!("the storage engine crashed reading it ({message})"),
                    ))
                }
            }
        });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// sled 0.34's `conf` file is its settings followed by their CRC-32 (IEEE, little-endian). sled
/// itself only warns on a mismatch, and silently rewrites a file of 8 bytes or less; either way
/// the directory is not what sled wrote, so it is refused before sled sees it.
fn check_sled_config(real: &Path, scratch: &Path) -> Result<(), StorageError> {
    let bytes = match std::fs::read(scratch.join("conf")) {
        Ok(bytes) => bytes,
        // A directory without one predates its first open: sled writes it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(damaged(real, format!("reading its sled settings: {e}"))),
    };
    let valid = bytes.len() > 8
        && bytes
            .split_last_chunk::<4>()
            .is_some_and(|(settings, crc)| crc32(settings) == u32::from_le_bytes(*crc));
    if valid {
        Ok(())
    } else {
        Err(damaged(real, "its sled settings file `conf` is corrupt"))
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bit by bit: a few hundred bytes at
/// start-up do not need a table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn check_copy(real: &Path, scratch: &Path, seal: Option<&Seal>) -> Result<(), StorageError> {
    check_sled_config(real, scratch)?;
    let trees = Trees::open(scratch).map_err(|e| damaged(real, e.to_string()))?;
    // Errors on the copy name the real directory: that is what the operator must act on.
    let head = prepare(scratch, &trees).map_err(|error| match error {
        StorageError::NewerSchema {
            found, supported, ..
        } => StorageError::NewerSchema {
            path: real.to_path_buf(),
            found,
            supported,
        },
        StorageError::Damaged { detail, .. } => damaged(real, detail),
        other => damaged(real, other.to_string()),
    })?;
    validate(&trees, head, seal).map_err(|detail| damaged(real, detail))
}

/// Every record decodes, the audit chain links from 1 to the head, and nothing the seal
/// counted is missing.
fn validate(trees: &Trees, head: (u64, [u8; 32]), seal: Option<&Seal>) -> Result<(), String> {
    for item in trees.devices.iter() {
        let (key, value) = item.map_err(|e| e.to_string())?;
        serde_json::from_slice::<DeviceRecord>(&value).map_err(|e| {
            format!(
                "device record {} is corrupt: {e}",
                String::from_utf8_lossy(&key)
            )
        })?;
    }
    let mut previous = [0u8; 32];
    let mut sealed_hash = None;
    for (expected, item) in (1u64..).zip(trees.events.iter()) {
        let (_, value) = item.map_err(|e| e.to_string())?;
        let Ok(AuditLine::Record {
            sequence,
            prev_hash,
            hash,
            record,
        }) = serde_json::from_slice::<AuditLine>(&value)
        else {
            return Err(format!("audit record {expected} is corrupt"));
        };
        if sequence != expected || prev_hash != hex::encode(previous) {
            return Err(format!("the audit chain breaks at record {expected}"));
        }
        let computed = chain_hash(&previous, sequence, record.as_bytes());
        if hex::encode(computed) != hash {
            return Err(format!("audit record {sequence} was altered"));
        }
        if seal.is_some_and(|s| s.audit_sequence == sequence) {
            sealed_hash = Some(hash);
        }
        previous = computed;
    }
    if let Some(seal) = seal {
        let rolled_back = |what: &str, held: u64, now: u64| {
            format!("it held {held} {what} when last sealed and now holds {now}: data was lost")
        };
        if head.0 < seal.audit_sequence {
            return Err(rolled_back("audit records", seal.audit_sequence, head.0));
        }
        if seal.audit_sequence > 0 && sealed_hash.as_deref() != Some(seal.audit_hash.as_str()) {
            return Err(format!(
                "audit record {} differs from the sealed one",
                seal.audit_sequence
            ));
        }
        let devices = trees.devices.len() as u64;
        if devices < seal.devices {
            return Err(rolled_back("devices", seal.devices, devices));
        }
        let nonces = trees.nonces_spent()?;
        if nonces < seal.nonces {
            return Err(rolled_back("used nonces", seal.nonces, nonces));
        }
    }
    Ok(())
}

/// Checks the layout version (creating it on a fresh database, migrating an older one) and
/// reads the audit head.
fn prepare(path: &Path, trees: &Trees) -> Result<(u64, [u8; 32]), StorageError> {
    let meta_error = |e: sled::Error| damaged(path, format!("reading its layout version: {e}"));
    match trees.meta.get("schema_version").map_err(meta_error)? {
        None => {
            let empty = [
                &trees.devices,
                &trees.events,
                &trees.nonces,
                &trees.spent_nonces,
            ]
            .iter()
            .all(|t| t.is_empty());
            if !empty {
                return Err(damaged(path, "it holds data but no layout version"));
            }
            if path.join(SEAL_FILE).exists() {
                return Err(damaged(
                    path,
                    "it was sealed with data before and now reads as empty: truncated or wiped",
                ));
            }
            trees
                .meta
                .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                .map_err(meta_error)?;
            trees.db.flush().map_err(meta_error)?;
        }
        Some(raw) => {
            let bytes: [u8; 4] = raw
                .as_ref()
                .try_into()
                .map_err(|_| damaged(path, "its layout version record is corrupt"))?;
            match u32::from_be_bytes(bytes) {
                found if found > SCHEMA_VERSION => {
                    return Err(StorageError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                1 => {
                    migrate_v1_to_v2(path, trees)?;
                    migrate_v2_to_v3(path, trees)?;
                }
                2 => migrate_v2_to_v3(path, trees)?,
                SCHEMA_VERSION => {}
                other => {
                    return Err(damaged(path, format!("unknown layout version {other}")));
                }
            }
        }
    }
    trees.head().map_err(|detail| damaged(path, detail))
}

/// v1 -> v2: the trust-document trees exist (`Trees::open` created them) and every device
/// record carries `recoverable`. Idempotent, and the new version is written only after the
/// rewritten records are flushed, so a crash mid-way leaves v1 and the next start runs it again.
fn migrate_v1_to_v2(path: &Path, trees: &Trees) -> Result<(), StorageError> {
    let failed = |e: String| StorageError::Open {
        path: path.to_path_buf(),
        detail: format!("migrating from layout v1 to v2: {e}"),
    };
    tracing::warn!(path = %path.display(), "migrating the state database from layout v1 to v2");
    let mut rewritten = 0u64;
    for item in trees.devices.iter() {
        let (key, value) = item.map_err(|e| failed(e.to_string()))?;
        let record: DeviceRecord = serde_json::from_slice(&value).map_err(|e| {
            damaged(
                path,
                format!(
                    "device record {} is corrupt: {e}",
                    String::from_utf8_lossy(&key)
                ),
            )
        })?;
        let value = serde_json::to_vec(&record).map_err(|e| failed(e.to_string()))?;
        trees
            .devices
            .insert(key, value)
            .map_err(|e| failed(e.to_string()))?;
        rewritten += 1;
    }
    trees.db.flush().map_err(|e| failed(e.to_string()))?;
    trees
        .meta
        .insert("schema_version", &2u32.to_be_bytes())
        .map_err(|e| failed(e.to_string()))?;
    trees.db.flush().map_err(|e| failed(e.to_string()))?;
    tracing::warn!(
        path = %path.display(),
        devices = rewritten,
        "state database migrated to layout v2"
    );
    Ok(())
}

/// v2 -> v3: nothing to rewrite (the `nonces` tree stays, counted; `spent_nonces` starts
/// empty); the version is written so that builds that do not read `spent_nonces` refuse it.
fn migrate_v2_to_v3(path: &Path, trees: &Trees) -> Result<(), StorageError> {
    let failed = |e: sled::Error| StorageError::Open {
        path: path.to_path_buf(),
        detail: format!("migrating from layout v2 to v3: {e}"),
    };
    trees
        .meta
        .insert("schema_version", &3u32.to_be_bytes())
        .map_err(failed)?;
    trees.db.flush().map_err(failed)?;
    tracing::warn!(path = %path.display(), "state database migrated to layout v3");
    Ok(())
}

fn read_seal(path: &Path) -> Result<Option<Seal>, StorageError> {
    match std::fs::read(path.join(SEAL_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| damaged(path, format!("its seal {SEAL_FILE} is unreadable: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(damaged(path, format!("reading its seal {SEAL_FILE}: {e}"))),
    }
}

/// Replaces the seal atomically (write, sync, rename).
pub(super) fn write_seal(path: &Path, seal: &Seal) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.join(format!("{SEAL_FILE}.new"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec(seal).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path.join(SEAL_FILE))
}

/// Scratch copies left by a check that was killed (their process is gone).
fn remove_stale_scratch(parent: &Path, name: &str) {
    let prefix = format!(".{name}.check-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Builds a new database at `path` from exported entries; refuses a directory that holds
/// anything. Returns the number of entries written.
pub(super) fn import(
    path: &Path,
    entries: impl IntoIterator<Item = ExportEntry>,
) -> Result<u64, StorageError> {
    let refuse = |detail: String| StorageError::Open {
        path: path.to_path_buf(),
        detail,
    };
    if std::fs::read_dir(path).is_ok_and(|mut e| e.next().is_some()) {
        return Err(refuse(
            "it is not empty; restore only into a new or empty directory".into(),
        ));
    }
    let trees = Trees::open(path).map_err(|e| refuse(e.to_string()))?;
    let mut written = 0u64;
    for entry in entries {
        let tree = trees
            .by_name(&entry.tree)
            .ok_or_else(|| refuse(format!("the backup names an unknown tree {:?}", entry.tree)))?;
        let previous = tree
            .insert(entry.key, entry.value)
            .map_err(|e| refuse(e.to_string()))?;
        if previous.is_some() {
            return Err(refuse("the backup holds a key twice".into()));
        }
        written += 1;
    }
    trees.db.flush().map_err(|e| refuse(e.to_string()))?;
    let head = prepare(path, &trees)?;
    validate(&trees, head, None).map_err(|detail| damaged(path, detail))?;
    write_seal(
        path,
        &Seal {
            audit_sequence: head.0,
            audit_hash: hex::encode(head.1),
            devices: trees.devices.len() as u64,
            nonces: trees
                .nonces_spent()
                .map_err(|detail| damaged(path, detail))?,
        },
    )
    .map_err(|e| refuse(format!("writing the seal: {e}")))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }
}
