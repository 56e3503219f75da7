//! The read-only web dashboard (`dashboard_listen`, off by default): the fleet, one device,
//! alerts, the trust documents and the audit log, with live updates, for SOC staff.
//!
//! - `api`: the JSON endpoints (paged, filtered and searched on the server).
//! - `live`: the server-sent event stream of state changes (one event per change).
//! - `assets/`: the page, its script and style, embedded in the binary (no build step, no
//!   external fetch).
//!
//! Who may look: HTTPS with the verifier's own certificate, and a client certificate is
//! required at the handshake, chained to the deployment CA and not on its CRL (the same CRL the
//! gRPC listener swaps in). Every request then needs an operator certificate whose roles grant
//! `viewer` (every role does), not revoked; anything else is 403 and sees no data. There is no
//! other login. The router has only GET routes and the page has no form: nothing here writes,
//! whatever the role (changes stay on the admin gRPC API, which checks its own roles).
//!
//! Device-chosen text (ids are derived, but hostnames, reasons and IMA file paths are not)
//! leaves as JSON and is put on the page with `textContent` only; the Content-Security-Policy
//! forbids inline script as a second line.
//!
//! Bounds: a TLS handshake runs under a timeout and a cap on concurrent handshakes; pages are
//! at most [`api::MAX_PAGE`] rows; the live stream carries single changes, never the fleet.

mod api;
mod live;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use trustchain_ca::role::{PeerIdentity, peer_identity};
use trustchain_ca::{OperatorRole, Role};

use crate::server::tls::{Listener, ServerTls, TlsError};
use crate::service::Service;
use crate::untrusted_text::Escaped;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HANDSHAKES: usize = 32;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Only our own files, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("revocation list: {0}")]
    Revocation(#[from] crate::service::RevocationError),
    #[error("dashboard server: {0}")]
    Io(#[from] std::io::Error),
}

/// A connection's peer: its address and the identity read once from its client certificate
/// (`None`: the certificate names no role this CA issues).
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    pub identity: Option<Arc<PeerIdentity>>,
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, service: Arc<Service>) -> Result<(), DashboardError> {
    let identity = service.tls_identity();
    let tls = Arc::new(ServerTls::for_listener(
        Listener::Dashboard,
        &identity.chain_pem,
        &identity.key_pem,
        service.ca().root_der(),
        service.revocations().current(),
    )?);
    service.revocations().register(tls.clone())?;
    let local = listener.local_addr()?;
    let (connections, incoming) = mpsc::channel(64);
    let accept = tokio::spawn(accept_loop(listener, tls, connections));
    let served = axum::serve(
        Incoming { incoming, local },
        router(service).into_make_service_with_connect_info::<Peer>(),
    )
    .await;
    accept.abort();
    Ok(served?)
}

/// The routes: GET only.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/style.css",
            get(|| asset(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .merge(api::routes())
        .route("/api/events", get(live::events))
        .layer(middleware::from_fn_with_state(service.clone(), gate))
        .with_state(service)
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// What a peer may see: operators whose roles grant `viewer`, not revoked.
fn admit(service: &Service, peer: Option<&Peer>) -> Result<(), (StatusCode, &'static str)> {
    const FORBIDDEN: (StatusCode, &str) = (
        StatusCode::FORBIDDEN,
        "an operator certificate with the viewer role is required",
    );
    let identity = peer.and_then(|p| p.identity.as_deref()).ok_or(FORBIDDEN)?;
    let viewer = identity.role == Role::Operator
        && identity
            .operator_roles
            .iter()
            .any(|held| held.grants(OperatorRole::Viewer));
    if !viewer {
        tracing::warn!(caller = %Escaped(&identity.name), "dashboard refused: no viewer role");
        return Err(FORBIDDEN);
    }
    match service.ca().operator_revoked(&identity.serial_hex) {
        Ok(false) => Ok(()),
        Ok(true) => {
            tracing::warn!(caller = %Escaped(&identity.name), "dashboard refused: revoked");
            // Its next handshake fails too, on this listener and the gRPC one.
            if let Err(error) = service.refresh_crl() {
                tracing::error!(%error, "could not refresh the CRL");
            }
            Err((
                StatusCode::FORBIDDEN,
                "this operator certificate is revoked",
            ))
        }
        Err(error) => {
            tracing::error!(%error, "dashboard refused: revoked operators unreadable");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "operator revocations cannot be read",
            ))
        }
    }
}

/// Every request, before any handler: the role check, then the security headers.
async fn gate(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| &info.0);
    let mut response = match admit(&service, peer) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Incoming>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Handshaken connections, for `axum::serve`.
struct Incoming {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Incoming {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accept loop ended: serve what is open, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            address: self.local,
            identity: None,
        })
    }
}

/// Accepts TCP connections and runs each handshake in its own task (a stalled client holds a
/// slot for at most the timeout, never the accept loop).
async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    connections: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, address) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "dashboard accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.config());
        let connections = connections.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(permit);
            let Ok(Ok(stream)) = outcome else {
                tracing::debug!(%address, "dashboard TLS handshake failed or timed out");
                return;
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| peer_identity(leaf))
                .map(Arc::new);
            let _ = connections.send((stream, Peer { address, identity })).await;
        });
    }
}
