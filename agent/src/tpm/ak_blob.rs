//! The saved AK: its TPM2B_PRIVATE contents (encrypted by the TPM under the EK, useless
//! outside this TPM) and its marshalled TPMT_PUBLIC, written to a 0600 file in the state
//! directory and reloaded under the EK for each operation.
//!
//! Why a file and not a persistent handle: EvictControl needs owner authorisation, which the
//! agent never takes and which is set on many real machines; a wrapped key blob works on every
//! TPM without NV writes. (A persistent handle is still supported, see `esapi::AkStorage`.)
//!
//! Format: `"TCAK"`, version 1, EK kind, AK algorithm, then the private part and the public
//! area, each preceded by a big-endian u16 length.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{AkAlgorithm, TpmError};
use crate::config::EkChoice;

const MAGIC: &[u8; 4] = b"TCAK";
const VERSION: u8 = 1;
/// Larger than any TPM2B_PRIVATE or TPMT_PUBLIC of the keys the agent creates.
const MAX_PART: usize = 2048;
const MAX_FILE: u64 = 2 * (MAX_PART as u64) + 16;

/// An AK as saved on disk.
#[derive(Clone, PartialEq, Eq)]
pub struct AkBlob {
    /// The EK the AK was created under (it only loads under that EK).
    pub ek: EkChoice,
    pub algorithm: AkAlgorithm,
    /// TPM2B_PRIVATE contents.
    pub private: Vec<u8>,
    /// Marshalled TPMT_PUBLIC.
    pub public: Vec<u8>,
}

impl std::fmt::Debug for AkBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkBlob")
            .field("ek", &self.ek)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn ek_code(ek: EkChoice) -> u8 {
    match ek {
        EkChoice::Rsa2048 => 1,
        EkChoice::EccP256 => 2,
    }
}

fn algorithm_code(algorithm: AkAlgorithm) -> u8 {
    match algorithm {
        AkAlgorithm::Rsa2048 => 1,
        AkAlgorithm::EccP256 => 2,
    }
}

fn take_part<'a>(bytes: &'a [u8], what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (length, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| format!("truncated before the {what} length"))?;
    let length = usize::from(u16::from_be_bytes(*length));
    if length == 0 || length > MAX_PART {
        return Err(format!("{what} length {length} out of range"));
    }
    rest.split_at_checked(length)
        .ok_or_else(|| format!("truncated {what}"))
}

impl AkBlob {
    /// Parses the file contents.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not an AK blob (bad magic)")?;
        let ([version, ek, algorithm], rest) = rest
            .split_first_chunk::<3>()
            .map(|(header, rest)| (*header, rest))
            .ok_or("truncated header")?;
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let ek = match ek {
            1 => EkChoice::Rsa2048,
            2 => EkChoice::EccP256,
            other => return Err(format!("unknown EK kind {other}")),
        };
        let algorithm = match algorithm {
            1 => AkAlgorithm::Rsa2048,
            2 => AkAlgorithm::EccP256,
            other => return Err(format!("unknown AK algorithm {other}")),
        };
        let (private, rest) = take_part(rest, "private part")?;
        let (public, rest) = take_part(rest, "public area")?;
        if !rest.is_empty() {
            return Err(format!("{} trailing bytes", rest.len()));
        }
        Ok(Self {
            ek,
            algorithm,
            private: private.to_vec(),
            public: public.to_vec(),
        })
    }

    /// The file contents.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[VERSION, ek_code(self.ek), algorithm_code(self.algorithm)]);
        for (what, part) in [
            ("private part", &self.private),
            ("public area", &self.public),
        ] {
            let length = u16::try_from(part.len())
                .ok()
                .filter(|l| *l != 0 && usize::from(*l) <= MAX_PART)
                .ok_or_else(|| format!("{what} length {} out of range", part.len()))?;
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(out)
    }

    /// Reads `path`; `None` when there is no saved AK yet.
    pub fn read(path: &Path) -> Result<Option<Self>, TpmError> {
        let io = |operation: &'static str| {
            move |source| TpmError::Io {
                operation,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open")(e)),
        };
        let mut bytes = Vec::new();
        // Bounded read: one byte past the limit tells an oversized file apart.
        file.take(MAX_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io("read"))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(TpmError::BadAkBlob {
                path: path.to_path_buf(),
                detail: "file too large".into(),
            });
        }
        Self::decode(&bytes)
            .map(Some)
            .map_err(|detail| TpmError::BadAkBlob {
                path: path.to_path_buf(),
                detail,
            })
    }

    /// Writes `path` atomically (temporary file, fsync, rename) with mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), TpmError> {
        let io = |operation: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| TpmError::Io {
                operation,
                path: at,
                source,
            }
        };
        let contents = self.encode().map_err(|detail| TpmError::BadAkBlob {
            path: path.to_path_buf(),
            detail,
        })?;
        let directory = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(directory).map_err(io("create", directory))?;
        let temporary = path.with_extension("tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io("create", &temporary))?;
        // The mode above is filtered by the umask; make sure it is exactly 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", &temporary))?;
        file.write_all(&contents).map_err(io("write", &temporary))?;
        file.sync_all().map_err(io("sync", &temporary))?;
        std::fs::rename(&temporary, path).map_err(io("rename", path))?;
        // Make the rename itself durable; failure here only weakens crash safety.
        if let Ok(dir) = std::fs::File::open(directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AkBlob {
        AkBlob {
            ek: EkChoice::EccP256,
            algorithm: AkAlgorithm::Rsa2048,
            private: vec![7; 222],
            public: vec![9; 280],
        }
    }

    #[test]
    fn round_trips_through_a_0600_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("ak.blob");
        assert_eq!(AkBlob::read(&path).unwrap(), None);
        sample().write(&path).unwrap();
        assert_eq!(AkBlob::read(&path).unwrap(), Some(sample()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn damaged_blobs_are_refused_without_panicking() {
        let good = sample().encode().unwrap();
        for cut in 0..good.len() {
            assert!(AkBlob::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(AkBlob::decode(&trailing).is_err());
        let mut version = good.clone();
        version[4] = 9;
        assert!(AkBlob::decode(&version).is_err());
        let mut huge = good.clone();
        huge[7..9].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(AkBlob::decode(&huge).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ak.blob");
        std::fs::write(&path, vec![0u8; 10_000]).unwrap();
        assert!(matches!(
            AkBlob::read(&path),
            Err(TpmError::BadAkBlob { .. })
        ));
    }
}
