//! Backups of a running verifier, and their restore.
//!
//! sled admits one process per directory, so the running verifier makes the copy: it listens on
//! a Unix socket beside its state directory (`<state_dir>.control`, mode 0600: whoever may
//! connect may read the state directory anyway) and answers `backup` with an export taken with
//! every write held back ([`Storage::export`]: one point in time across all trees). Nothing
//! travels over the network and nothing is written by the verifier outside its own directory:
//! `trustchain-verifier backup` writes the file itself. With no verifier running, the CLI opens
//! the directory directly.
//!
//! The file (`trustchain-backup.jsonl`): a header line, one line per key (tree, key and value
//! in hex), and a trailer with the count and the SHA-256 of everything before it. It does not
//! depend on sled's on-disk format, so a restore also moves a database across sled versions.
//! `restore` checks the trailer before writing anything, refuses a non-empty target, and builds
//! a new database whose audit chain is verified before it is sealed.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use super::{ExportEntry, SCHEMA_VERSION, SledStorage, Storage, StorageError};

/// The backup's file name inside the backup directory.
pub const BACKUP_FILE: &str = "trustchain-backup.jsonl";
const FORMAT: &str = "trustchain-backup";
/// Largest backup a client accepts over the control socket (a site's database is far smaller).
const MAX_BACKUP_BYTES: u64 = 8 << 30;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the backup is invalid: {0}")]
    Invalid(String),
    #[error("the verifier refused the backup: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    schema_version: u32,
    created_at_unix_millis: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    tree: String,
    key: String,
    value: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    entries: u64,
    sha256: String,
}

/// What a backup holds, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub devices: u64,
    pub audit_records: u64,
}

impl Summary {
    fn of(entries: &[ExportEntry]) -> Self {
        let count = |tree: &str| entries.iter().filter(|e| e.tree == tree).count() as u64;
        Self {
            entries: entries.len() as u64,
            devices: count("devices"),
            audit_records: count("events"),
        }
    }
}

/// The backup file's bytes.
pub fn encode(entries: &[ExportEntry]) -> Result<Vec<u8>, BackupError> {
    let invalid = |e: serde_json::Error| BackupError::Invalid(e.to_string());
    let mut out = serde_json::to_vec(&Header {
        format: FORMAT.into(),
        schema_version: SCHEMA_VERSION,
        created_at_unix_millis: crate::clock::now_unix_millis(),
    })
    .map_err(invalid)?;
    out.push(b'\n');
    for entry in entries {
        out.extend(
            serde_json::to_vec(&Line {
                tree: entry.tree.clone(),
                key: hex::encode(&entry.key),
                value: hex::encode(&entry.value),
            })
            .map_err(invalid)?,
        );
        out.push(b'\n');
    }
    let trailer = Trailer {
        entries: entries.len() as u64,
        sha256: hex::encode(Sha256::digest(&out)),
    };
    out.extend(serde_json::to_vec(&trailer).map_err(invalid)?);
    out.push(b'\n');
    Ok(out)
}

/// Parses and checks a backup file's bytes (trailer digest and count) before anything is used.
pub fn decode(bytes: &[u8]) -> Result<Vec<ExportEntry>, BackupError> {
    let invalid = |detail: &str| BackupError::Invalid(detail.to_string());
    let body = bytes
        .strip_suffix(b"\n")
        .ok_or_else(|| invalid("truncated"))?;
    let split = body
        .iter()
        .rposition(|b| *b == b'\n')
        .ok_or_else(|| invalid("no trailer"))?;
    let (content, trailer) = body.split_at(split + 1);
    let trailer: Trailer =
        serde_json::from_slice(trailer).map_err(|_| invalid("the trailer is unreadable"))?;
    if hex::encode(Sha256::digest(content)) != trailer.sha256 {
        return Err(invalid(
            "its SHA-256 does not match its trailer (altered or truncated)",
        ));
    }
    let mut lines = content
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty());
    let header: Header = lines
        .next()
        .and_then(|l| serde_json::from_slice(l).ok())
        .ok_or_else(|| invalid("the header is unreadable"))?;
    if header.format != FORMAT {
        return Err(invalid("not a TrustChain backup"));
    }
    if header.schema_version > SCHEMA_VERSION {
        return Err(BackupError::Invalid(format!(
            "it was taken with layout version {}, newer than this build's {SCHEMA_VERSION}",
            header.schema_version
        )));
    }
    let mut entries = Vec::new();
    for line in lines {
        let line: Line = serde_json::from_slice(line).map_err(|_| invalid("unreadable entry"))?;
        entries.push(ExportEntry {
            tree: line.tree,
            key: hex::decode(line.key).map_err(|_| invalid("bad key"))?,
            value: hex::decode(line.value).map_err(|_| invalid("bad value"))?,
        });
    }
    if entries.len() as u64 != trailer.entries {
        return Err(invalid("its entry count does not match its trailer"));
    }
    Ok(entries)
}

/// The control socket of the verifier whose state is in `state_dir`.
pub fn control_socket_path(state_dir: &Path) -> PathBuf {
    let mut path = state_dir.as_os_str().to_owned();
    path.push(".control");
    PathBuf::from(path)
}

/// Binds the control socket (replacing one left by a process that died: the caller holds the
/// database, so no other verifier is using it), readable by the owner only.
pub fn bind_control(state_dir: &Path) -> Result<tokio::net::UnixListener, BackupError> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let path = control_socket_path(state_dir);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(io(&path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
    Ok(listener)
}

/// Answers requests on the control socket until the process ends. One request per connection:
/// `backup\n` -> the backup file's bytes, or `error <reason>\n`.
pub async fn serve_control(listener: tokio::net::UnixListener, storage: Arc<dyn Storage>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let storage = storage.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut request = String::new();
            let mut reader = tokio::io::BufReader::new(read).take(64);
            if reader.read_line(&mut request).await.is_err() {
                return;
            }
            let reply = if request.trim() == "backup" {
                let started = std::time::Instant::now();
                let made = tokio::task::spawn_blocking(move || {
                    let entries = storage.export()?;
                    Ok::<_, BackupError>((Summary::of(&entries), encode(&entries)?))
                })
                .await;
                match made {
                    Ok(Ok((summary, bytes))) => {
                        tracing::info!(
                            entries = summary.entries,
                            devices = summary.devices,
                            audit_records = summary.audit_records,
                            millis = started.elapsed().as_millis() as u64,
                            "backup taken"
                        );
                        bytes
                    }
                    Ok(Err(error)) => format!("error {error}\n").into_bytes(),
                    Err(_) => b"error the backup task failed\n".to_vec(),
                }
            } else {
                b"error unknown request\n".to_vec()
            };
            let _ = write.write_all(&reply).await;
            let _ = write.shutdown().await;
        });
    }
}

/// How a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the running verifier, over its control socket.
    Running,
    /// From the directory itself: no verifier was running.
    Offline,
}

/// Takes a backup of the verifier whose state is in `state_dir`: from the running process if
/// one answers on its control socket, else from the directory.
pub fn take(state_dir: &Path) -> Result<(Vec<u8>, Source), BackupError> {
    let socket = control_socket_path(state_dir);
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(mut stream) => {
            stream.write_all(b"backup\n").map_err(io(&socket))?;
            let mut bytes = Vec::new();
            stream
                .take(MAX_BACKUP_BYTES)
                .read_to_end(&mut bytes)
                .map_err(io(&socket))?;
            if let Some(reason) = bytes.strip_prefix(b"error ") {
                return Err(BackupError::Refused(
                    String::from_utf8_lossy(reason).trim().to_string(),
                ));
            }
            decode(&bytes)?;
            Ok((bytes, Source::Running))
        }
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let storage = SledStorage::open(state_dir)?;
            Ok((encode(&storage.export()?)?, Source::Offline))
        }
        Err(error) => Err(io(&socket)(error)),
    }
}

/// Writes a backup into `out` (created if needed) atomically; returns the file's path.
pub fn write(out: &Path, bytes: &[u8]) -> Result<PathBuf, BackupError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let target = out.join(BACKUP_FILE);
    if target.exists() {
        return Err(BackupError::Invalid(format!(
            "{} exists; choose a new directory",
            target.display()
        )));
    }
    let temporary = out.join(format!("{BACKUP_FILE}.new"));
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &target).map_err(io(&target))?;
    Ok(target)
}

/// Restores the backup in `from` (a directory holding [`BACKUP_FILE`], or the file) into a new
/// state directory.
pub fn restore(from: &Path, state_dir: &Path) -> Result<Summary, BackupError> {
    let file = if from.is_dir() {
        from.join(BACKUP_FILE)
    } else {
        from.to_path_buf()
    };
    let bytes = std::fs::read(&file).map_err(io(&file))?;
    let entries = decode(&bytes)?;
    let summary = Summary::of(&entries);
    SledStorage::import(state_dir, entries)?;
    Ok(summary)
}

/// What a backup file holds, after checking it.
pub fn inspect(bytes: &[u8]) -> Result<Summary, BackupError> {
    Ok(Summary::of(&decode(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_round_trips_and_an_altered_one_is_refused() {
        let entries = vec![
            ExportEntry {
                tree: "devices".into(),
                key: b"a".to_vec(),
                value: b"{}".to_vec(),
            },
            ExportEntry {
                tree: "nonces".into(),
                key: vec![0, 1, 2],
                value: b"a".to_vec(),
            },
        ];
        let bytes = encode(&entries).unwrap();
        assert_eq!(decode(&bytes).unwrap(), entries);
        let mut altered = bytes.clone();
        let position = altered.iter().position(|b| *b == b'6').unwrap();
        altered[position] = b'7';
        assert!(decode(&altered).is_err());
        assert!(decode(&bytes[..bytes.len() - 10]).is_err());
    }
}
