//! The agent's gRPC channel to the verifier: TLS always, with the deployment root as the only trust
//! anchor, and with the agent's client certificate once it has one.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::bound_channel::{BindError, BoundChannel, ClientPem, Target};
use crate::config::AgentConfig;
use crate::identity::Enrollment;
use crate::replicas::Replica;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("reading the CA certificate {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("verifier address {url:?}: {detail}")]
    Address { url: String, detail: String },
    #[error("connecting to the verifier: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Bound(#[from] BindError),
}

/// Opens the attestation channel to `replica`: mutual TLS 1.3 over one connection whose exporter
/// binds the quotes (see [`crate::bound_channel`]).
pub async fn connect_bound(
    config: &AgentConfig,
    replica: &Replica,
    identity: &Enrollment,
) -> Result<BoundChannel, ClientError> {
    let ca = std::fs::read_to_string(&config.ca_certificate).map_err(|source| ClientError::Ca {
        path: config.ca_certificate.clone(),
        source,
    })?;
    let target = Target {
        url: replica.url(),
        server_name: replica.server_name(),
        ca_pem: &ca,
        connect_timeout: Duration::from_secs(10),
        local_address: None,
    };
    let pem = ClientPem {
        certificate_pem: identity.certificate_pem.clone(),
        key_pem: identity.key_pem.clone(),
    };
    Ok(crate::bound_channel::connect(&target, Some(&pem)).await?)
}

/// Opens a channel to `replica`. With `identity`, the connection is mutual TLS.
pub async fn connect(
    config: &AgentConfig,
    replica: &Replica,
    identity: Option<&Enrollment>,
) -> Result<Channel, ClientError> {
    let ca = std::fs::read_to_string(&config.ca_certificate).map_err(|source| ClientError::Ca {
        path: config.ca_certificate.clone(),
        source,
    })?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(replica.server_name());
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.key_pem,
        ));
    }
    let endpoint = Endpoint::from_shared(replica.url().to_string())
        .map_err(|e| ClientError::Address {
            url: replica.url().to_string(),
            detail: e.to_string(),
        })?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect().await?)
}
