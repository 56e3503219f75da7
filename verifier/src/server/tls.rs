//! TLS for the verifier's one listener.
//!
//! Client certificates are optional at the TLS layer, because an agent that is enrolling has none
//! yet; every service but enrollment then requires one with the right role (see `auth`). Client
//! certificates must chain to the deployment CA and must not be on its CRL, which is swapped in
//! whenever a device is quarantined or decommissioned, so such a device cannot even connect.

use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("TLS {what}: {detail}")]
    Config { what: &'static str, detail: String },
}

fn config_error(what: &'static str) -> impl FnOnce(String) -> TlsError {
    move |detail| TlsError::Config { what, detail }
}

/// The verifier's TLS identity and client-certificate policy, with a replaceable CRL.
#[derive(Debug)]
pub struct ServerTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Arc<RootCertStore>,
    listener: Listener,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

/// Which listener a configuration serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The gRPC listener: client certificates optional (enrollment has none), HTTP/2.
    Grpc,
    /// The dashboard: a client certificate is required at the handshake, HTTP/1.1.
    Dashboard,
}

impl ServerTls {
    /// `chain_pem`: the server certificate followed by its issuing CA; `key_pem`: its key;
    /// `client_root_der`: the deployment root that issues agent and operator certificates.
    pub fn new(
        chain_pem: &str,
        key_pem: &str,
        client_root_der: &[u8],
        crls: Vec<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        Self::for_listener(Listener::Grpc, chain_pem, key_pem, client_root_der, crls)
    }

    /// As [`ServerTls::new`], for `listener`.
    pub fn for_listener(
        listener: Listener,
        chain_pem: &str,
        key_pem: &str,
        client_root_der: &[u8],
        crls: Vec<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| config_error("server certificate")(e.to_string()))?;
        if chain.is_empty() {
            return Err(config_error("server certificate")(
                "no certificate in PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| config_error("server key")(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(client_root_der.to_vec()))
            .map_err(|e| config_error("client root")(e.to_string()))?;
        let client_roots = Arc::new(roots);
        let config = build(listener, &chain, &key, &client_roots, crls)?;
        Ok(Self {
            chain,
            key,
            client_roots,
            listener,
            current: RwLock::new(config),
        })
    }

    /// The configuration new connections use.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            // A poisoned lock means a writer panicked mid-swap; the old Arc is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the CRLs; connections made afterwards are checked against them.
    pub fn set_crls(&self, crls: Vec<Vec<u8>>) -> Result<(), TlsError> {
        let config = build(
            self.listener,
            &self.chain,
            &self.key,
            &self.client_roots,
            crls,
        )?;
        match self.current.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

impl crate::service::CrlSink for ServerTls {
    fn set_crls(&self, crls: Vec<Vec<u8>>) -> Result<(), String> {
        ServerTls::set_crls(self, crls).map_err(|e| e.to_string())
    }
}

fn build(
    listener: Listener,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    client_roots: &Arc<RootCertStore>,
    crls: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(client_roots.clone(), provider.clone())
            .with_crls(crls.into_iter().map(CertificateRevocationListDer::from))
            // The issuing CA publishes the CRL for the certificates it issued; the CA certificates
            // themselves are pinned by configuration, not revoked by CRL.
            .only_check_end_entity_revocation();
    let verifier = match listener {
        Listener::Grpc => verifier.allow_unauthenticated(),
        Listener::Dashboard => verifier,
    }
    .build()
    .map_err(|e| config_error("client verifier")(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        // TLS 1.3 only: each attestation quote is bound to the connection's exporter (RFC 8446
        // §7.5), which TLS 1.2 makes safe only with the extended master secret.
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error("protocol versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| config_error("server certificate")(e.to_string()))?;
    config.alpn_protocols = match listener {
        Listener::Grpc => vec![b"h2".to_vec()],
        Listener::Dashboard => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}
