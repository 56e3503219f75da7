//! Files holding keys: written with owner-only permissions (0600) and renamed into place, so a
//! crash never leaves a half-written key and no other user can ever read one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::CaError;

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` with mode 0600 via a temporary file and a rename.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a public file (certificates, CRLs) with mode 0644, atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))?;
    // The mode passed to open() is filtered by the umask; set it explicitly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("chmod", &tmp, e))?;
    file.write_all(contents)
        .map_err(|e| io_error("write", &tmp, e))?;
    file.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("rename", path, e))
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_secret(path: &Path) -> Result<String, CaError> {
    let meta = fs::metadata(path).map_err(|e| io_error("stat", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CaError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "key file is readable by others (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            ),
        });
    }
    fs::read_to_string(path).map_err(|e| io_error("read", path, e))
}

pub fn read_public(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|e| io_error("read", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_secret(&path, b"secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&path).unwrap(), "secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_secret(&path), Err(CaError::Corrupt { .. })));
    }
}
