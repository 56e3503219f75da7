//! The agent's own state on disk: its TLS key (never leaves the device), the certificates the
//! verifier issued at enrollment, and its device id. Directory 0700, keys 0600, written atomically.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

const TLS_KEY: &str = "tls.key.pem";
const TLS_CERT: &str = "tls.pem";
const CA_CHAIN: &str = "ca-chain.pem";
const AK_CERT: &str = "ak.pem";
const DEVICE_ID: &str = "device-id";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS key generation: {0}")]
    Key(#[from] rcgen::Error),
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |source| IdentityError::Io {
        operation,
        path,
        source,
    }
}

/// What enrollment gave the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub device_id: String,
    pub certificate_pem: String,
    pub key_pem: String,
    pub ca_chain_pem: String,
}

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl StateDir {
    pub fn open(path: &Path) -> Result<Self, IdentityError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io("create", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io("chmod", path))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
        let target = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
        file.write_all(contents).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, &target).map_err(io("rename", &target))
    }

    /// A fresh P-256 TLS key for this enrollment, and a CSR over it.
    pub fn new_tls_key(&self, hostname: &str) -> Result<(KeyPair, Vec<u8>), IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            if hostname.is_empty() {
                "trustchain-agent"
            } else {
                hostname
            },
        );
        params.distinguished_name = name;
        let csr = params.serialize_request(&key)?;
        Ok((key, csr.der().to_vec()))
    }

    /// Saves what enrollment returned. The key is written last-but-one and the device id last,
    /// so a crash mid-way leaves no half identity that `load` would accept.
    pub fn save(
        &self,
        device_id: &str,
        key: &KeyPair,
        client_certificate: &[u8],
        ca_chain: &[Vec<u8>],
        ak_certificate: &[u8],
    ) -> Result<Enrollment, IdentityError> {
        let _ = fs::remove_file(self.path.join(DEVICE_ID));
        // The client presents its certificate with the issuing CA(s) above it; the root is the
        // verifier's trust anchor and need not travel.
        let mut certificate_pem = pem("CERTIFICATE", client_certificate);
        if let Some((_root, intermediates)) = ca_chain.split_last() {
            for der in intermediates {
                certificate_pem.push_str(&pem("CERTIFICATE", der));
            }
        }
        let ca_chain_pem: String = ca_chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
        self.write(TLS_CERT, certificate_pem.as_bytes(), 0o644)?;
        self.write(CA_CHAIN, ca_chain_pem.as_bytes(), 0o644)?;
        self.write(
            AK_CERT,
            pem("CERTIFICATE", ak_certificate).as_bytes(),
            0o644,
        )?;
        let key_pem = key.serialize_pem();
        self.write(TLS_KEY, key_pem.as_bytes(), 0o600)?;
        self.write(DEVICE_ID, device_id.as_bytes(), 0o644)?;
        Ok(Enrollment {
            device_id: device_id.into(),
            certificate_pem,
            key_pem,
            ca_chain_pem,
        })
    }

    /// The saved enrollment, if complete.
    pub fn load(&self) -> Option<Enrollment> {
        let read = |name: &str| fs::read_to_string(self.path.join(name)).ok();
        Some(Enrollment {
            device_id: read(DEVICE_ID)?.trim().to_string(),
            certificate_pem: read(TLS_CERT)?,
            key_pem: read(TLS_KEY)?,
            ca_chain_pem: read(CA_CHAIN)?,
        })
    }

    /// Forgets the enrollment (the TPM's AK is kept).
    pub fn forget(&self) -> Result<(), IdentityError> {
        match fs::remove_file(self.path.join(DEVICE_ID)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &self.path.join(DEVICE_ID))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_with_private_key_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("agent")).unwrap();
        assert!(state.load().is_none());
        let (key, csr) = state.new_tls_key("gw-1").unwrap();
        assert!(!csr.is_empty());
        let saved = state
            .save("tc-1", &key, b"cert", &[b"ca".to_vec()], b"ak")
            .unwrap();
        assert_eq!(state.load().unwrap(), saved);
        let mode = fs::metadata(state.path().join(TLS_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        state.forget().unwrap();
        assert!(state.load().is_none());
    }
}
