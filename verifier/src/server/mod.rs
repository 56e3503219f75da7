//! The verifier's network edge: one TLS listener serving the gRPC services.
//!
//! - `tls`: rustls configuration (optional client certificates, CRL swapped on revocation).
//! - `auth`: the caller's role from its client certificate.
//! - `enrollment`: the Enrollment service (no client certificate needed).
//! - `admin`: the Admin service (operator certificates only).
//! - `attestation`: the Attestation stream (agent certificates only).
//!
//! [`serve`] owns the accept loop: each TLS handshake runs in its own task under a timeout and a
//! cap on concurrent handshakes, so a client that stalls mid-handshake costs one slot for a few
//! seconds and never blocks another device.

mod admin;
mod attestation;
pub mod auth;
mod enrollment;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use trustchain_proto::v1::admin_server::AdminServer;
use trustchain_proto::v1::attestation_server::AttestationServer;
use trustchain_proto::v1::enrollment_server::EnrollmentServer;

pub use admin::{operator_event as admin_event, state_to_proto};

use crate::service::Service;

/// How often the audit chain's head is signed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Bounds on the network edge.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the kernel backlog.
    pub max_concurrent_handshakes: usize,
    /// Largest gRPC message accepted on the enrollment service.
    pub max_enrollment_message: usize,
    /// Largest evidence message (boot log and IMA batch included).
    pub max_evidence_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
            max_enrollment_message: 64 * 1024,
            max_evidence_message: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves every gRPC service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let limits = service.limits().clone();
    let (connections, incoming) = mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(64);
    let accept = tokio::spawn(accept_loop(
        listener,
        service.clone(),
        connections,
        limits.clone(),
    ));
    let watchdog = tokio::spawn(service.clone().watchdog());
    let checkpoints = tokio::spawn(service.clone().checkpoints(CHECKPOINT_EVERY));

    let enrollment = EnrollmentServer::new(enrollment::EnrollmentApi::new(service.clone()))
        .max_decoding_message_size(limits.max_enrollment_message);
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(enrollment)
        .add_service(AdminServer::new(admin::AdminApi::new(service.clone())))
        .add_service(
            AttestationServer::new(attestation::AttestationApi::new(service.clone()))
                .max_decoding_message_size(limits.max_evidence_message),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    accept.abort();
    watchdog.abort();
    checkpoints.abort();
    result.map_err(ServeError::from)
}

async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    connections: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    limits: Limits,
) {
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent_handshakes));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE: back off briefly rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(service.tls().config());
        let connections = connections.clone();
        let timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            drop(permit);
            match outcome {
                Ok(Ok(stream)) => {
                    let _ = connections.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
