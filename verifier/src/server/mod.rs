//! The verifier's network edge: one TLS listener serving the gRPC services.
//!
//! - `tls`: rustls configuration (optional client certificates, CRL swapped on revocation).
//! - `auth`: the caller's role from its client certificate.
//! - `enrollment`: the Enrollment service (no client certificate needed), with its per-source
//!   rate limit.
//! - `admin`: the Admin service (operator certificates only).
//! - `imports`: trust-document imports, and the two-person rule's pending imports and approvals.
//! - `operators`: the Admin gate: an operator certificate, not revoked (checked on every call).
//! - `permissions`: the table of admin call to the operator role it needs (viewer, operator,
//!   policy-admin), checked by each admin call.
//! - `attestation`: the Attestation stream (agent certificates only).
//! - `status`: the one mapping of domain errors to gRPC statuses (what detail leaves).
//! - `connection`: the accepted connection as the gRPC server sees it (a lifetime for peers
//!   without a client certificate).
//!
//! [`serve`] owns the accept loop. What an unknown client can cost the verifier is bounded here,
//! before any of it reaches a service:
//! - each TLS handshake runs in its own task under a timeout and a cap on concurrent handshakes,
//!   and one source address holds at most a few of those slots, so clients that stall
//!   mid-handshake cost a few slots for a few seconds and never block another device;
//! - a connection without a client certificate can only enroll: it gets a bounded lifetime, and
//!   there is a cap on such connections overall and per source;
//! - the role a service needs is checked from the headers, before the request body is read, so
//!   a peer without the right certificate never gets a message decoded;
//! - every service has a decode limit, checked against the length prefix before the message is
//!   buffered; compressed messages are refused undecompressed (the server enables no
//!   compression codec, so a compression bomb is never inflated);
//! - enrollment calls are rate-limited per source address (token bucket) and refused with
//!   RESOURCE_EXHAUSTED before anything is decoded or written.
//!
//! Nothing on these paths writes to storage. The caps are the configuration's `[limits]`
//! (`config/limits.rs`: defaults, bounds checked at start), read through `Service::limits`.

mod admin;
mod attestation;
pub mod auth;
mod connection;
mod enrollment;
mod imports;
mod operators;
pub mod permissions;
mod status;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use trustchain_ca::Role;
use trustchain_proto::v1::admin_server::AdminServer;
use trustchain_proto::v1::attestation_server::AttestationServer;
use trustchain_proto::v1::enrollment_server::EnrollmentServer;

pub use crate::config::Limits;
pub use crate::service::operator_event as admin_event;
pub use admin::state_to_proto;
pub use enrollment::SourceRateLimit;

use connection::{EdgeConnection, SourceSlots};

use crate::service::Service;

/// How often the audit chain's head is signed.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("revocation list: {0}")]
    Revocation(#[from] crate::service::RevocationError),
}

/// Serves every gRPC service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let limits = service.limits().clone();
    let identity = service.tls_identity();
    let tls = Arc::new(tls::ServerTls::new(
        &identity.chain_pem,
        &identity.key_pem,
        service.ca().root_der(),
        service.revocations().current(),
    )?);
    // From now on every new CRL reaches this listener before the revocation returns.
    service.revocations().register(tls.clone())?;
    let (connections, incoming) = mpsc::channel::<Result<EdgeConnection, std::io::Error>>(64);
    let accept = tokio::spawn(accept_loop(listener, tls, connections, limits.clone()));
    let watchdog = tokio::spawn(service.clone().watchdog());
    let checkpoints = tokio::spawn(service.clone().checkpoints(CHECKPOINT_EVERY));
    // Replicas only (both return at once on sled): lease renewal, and what other replicas wrote.
    let renew = tokio::spawn(service.clone().renew());
    let follow = tokio::spawn(service.clone().follow());

    let rate_limit = Arc::new(SourceRateLimit::new(
        limits.enrollment_burst,
        limits.enrollment_per_second,
        limits.enrollment_tracked_sources,
    ));
    let enrollment = InterceptedService::new(
        EnrollmentServer::new(enrollment::EnrollmentApi::new(service.clone()))
            .max_decoding_message_size(limits.max_enrollment_message),
        move |request| rate_limit.admit(request),
    );
    let admin = InterceptedService::new(
        AdminServer::new(admin::AdminApi::new(service.clone()))
            .max_decoding_message_size(limits.max_admin_message),
        {
            let service = service.clone();
            move |request| operators::admit(request, &service)
        },
    );
    let attestation = InterceptedService::new(
        AttestationServer::new(attestation::AttestationApi::new(service.clone()))
            .max_decoding_message_size(limits.max_evidence_message),
        |request| require_before_decoding(request, Role::Agent),
    );
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .http2_max_header_list_size(Some(16 * 1024))
        .add_service(enrollment)
        .add_service(admin)
        .add_service(attestation)
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
        .await;
    accept.abort();
    watchdog.abort();
    checkpoints.abort();
    renew.abort();
    follow.abort();
    result.map_err(ServeError::from)
}

/// The role check, run on the request's headers before its body is decoded. The services check
/// again (they need the caller's identity); this one only spares the verifier decoding messages
/// from peers who may not send them.
fn require_before_decoding(
    request: tonic::Request<()>,
    role: Role,
) -> Result<tonic::Request<()>, tonic::Status> {
    auth::require(&request, role)?;
    Ok(request)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<tls::ServerTls>,
    connections: mpsc::Sender<Result<EdgeConnection, std::io::Error>>,
    limits: Limits,
) {
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent_handshakes));
    let handshakes_per_source = SourceSlots::new(limits.max_handshakes_per_source);
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated_connections));
    let unauthenticated_per_source = SourceSlots::new(limits.max_unauthenticated_per_source);
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
        let Some(source_slot) = handshakes_per_source.claim(peer.ip()) else {
            // Closing at once is the cheapest answer; an honest agent retries with backoff.
            tracing::debug!(%peer, "too many handshakes from this source; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.config());
        let connections = connections.clone();
        let timeout = limits.handshake_timeout;
        let lifetime = limits.unauthenticated_lifetime;
        let unauthenticated = unauthenticated.clone();
        let unauthenticated_per_source = unauthenticated_per_source.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            drop(permit);
            drop(source_slot);
            let stream = match outcome {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let has_certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty());
            let connection = if has_certificate {
                EdgeConnection::authenticated(stream)
            } else {
                let (Ok(global), Some(slot)) = (
                    unauthenticated.try_acquire_owned(),
                    unauthenticated_per_source.claim(peer.ip()),
                ) else {
                    tracing::debug!(%peer, "too many connections without a certificate; closed");
                    return;
                };
                EdgeConnection::unauthenticated(stream, lifetime, global, slot)
            };
            let _ = connections.send(Ok(connection)).await;
        });
    }
}
