//! The running verifier: everything the gRPC services share, built once at start-up and passed in
//! (no global state).

use std::sync::Arc;

use trustchain_ca::Authority;

use crate::config::VerifierConfig;
use crate::enrollment::ek_chain::MakerAnchors;
use crate::enrollment::enroller::{Enroller, EnrollerConfig};
use crate::server::Limits;
use crate::server::tls::{ServerTls, TlsError};
use crate::storage::{SledStorage, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("deployment CA: {0}")]
    Ca(#[from] trustchain_ca::CaError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: std::path::PathBuf },
}

/// Shared state of one verifier process.
#[derive(Debug)]
pub struct Service {
    storage: Arc<dyn Storage>,
    ca: Arc<Authority>,
    tls: ServerTls,
    enroller: Enroller,
    limits: Limits,
}

fn read(path: &std::path::Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|source| StartError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file as DER.
pub fn pem_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, StartError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let text = read(path)?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    if certs.is_empty() {
        return Err(StartError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

impl Service {
    /// Opens the state database and the CA, and loads the TLS identity.
    pub fn start(config: &VerifierConfig) -> Result<Arc<Self>, StartError> {
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(&config.state_dir)?);
        let ca = Arc::new(Authority::load(&config.ca_dir)?);
        let tls = ServerTls::new(
            &read(&config.tls_certificate)?,
            &read(&config.tls_key)?,
            ca.root_der(),
            Vec::new(),
        )?;
        let mut makers = MakerAnchors::default();
        for path in &config.maker_anchors {
            makers.anchors.extend(pem_certificates(path)?);
        }
        for path in &config.maker_intermediates {
            makers.intermediates.extend(pem_certificates(path)?);
        }
        let enroller = Enroller::new(
            storage.clone(),
            ca.clone(),
            makers,
            EnrollerConfig {
                activation_timeout: config.activation_timeout(),
                max_pending: config.max_pending_enrollments,
            },
        );
        Ok(Arc::new(Self {
            storage,
            ca,
            tls,
            enroller,
            limits: Limits::default(),
        }))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn ca(&self) -> &Arc<Authority> {
        &self.ca
    }

    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    pub fn enroller(&self) -> &Enroller {
        &self.enroller
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
