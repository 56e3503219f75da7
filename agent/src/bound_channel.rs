//! A gRPC channel over exactly one TLS 1.3 connection whose keying-material exporter the caller
//! knows: the attestation stream binds each quote to it (`trustchain_proto::binding`), so a
//! quote answers only challenges read on this connection.
//!
//! Tonic's own TLS does not expose the connection, so this connector does TCP and the
//! tokio-rustls handshake itself and keeps the exporter. It connects once: a channel that
//! reconnected would carry later requests over a connection with another exporter, so a second
//! connection attempt fails instead and the caller starts over with a new channel (the agent's
//! reconnect loop does). The simulated devices of the tests and the load generator use this same
//! module, so they bind exactly as the agent does, from their own connection only.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};
use trustchain_proto::binding::{EXPORTER_LABEL, EXPORTER_LEN, qualifying_data};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    #[error("TLS {what}: {detail}")]
    Tls { what: &'static str, detail: String },
    #[error("verifier address {url:?}: {detail}")]
    Address { url: String, detail: String },
    #[error("connecting to the verifier: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the connection gave no TLS exporter")]
    NoExporter,
}

/// A client certificate chain and its key, both PEM.
#[derive(Clone)]
pub struct ClientPem {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ClientPem").finish_non_exhaustive()
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// `https://host:port`.
    pub url: &'a str,
    /// The name the verifier's certificate must carry.
    pub server_name: &'a str,
    /// The deployment root, PEM: the only trust anchor.
    pub ca_pem: &'a str,
    pub connect_timeout: Duration,
    /// The source address to connect from (the load generator spreads a fleet over loopback
    /// addresses); `None`: the system's choice.
    pub local_address: Option<IpAddr>,
}

/// The exporter of one TLS connection: what binds a quote to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBinding {
    exporter: [u8; EXPORTER_LEN],
}

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBinding").finish_non_exhaustive()
    }
}

impl ChannelBinding {
    /// The qualifyingData for a quote answering `nonce` on this connection.
    pub fn qualifying_data(&self, nonce: &[u8]) -> [u8; 32] {
        qualifying_data(nonce, &self.exporter)
    }
}

/// A channel and the binding of the one connection it runs on.
#[derive(Debug, Clone)]
pub struct BoundChannel {
    pub channel: Channel,
    pub binding: ChannelBinding,
}

fn tls_error(what: &'static str) -> impl FnOnce(String) -> BindError {
    move |detail| BindError::Tls { what, detail }
}

/// TLS 1.3 only: the exporter of TLS 1.2 is safe only with the extended master secret, and the
/// verifier accepts nothing older than 1.3.
fn client_config(
    ca_pem: &str,
    identity: Option<&ClientPem>,
) -> Result<rustls::ClientConfig, BindError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let certificate = certificate.map_err(|e| tls_error("CA certificate")(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| tls_error("CA certificate")(e.to_string()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("protocol versions")(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| tls_error("client certificate")(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
                .map_err(|e| tls_error("client key")(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client certificate")(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connects once, over TLS 1.3, and returns the channel with its connection's binding.
pub async fn connect(
    target: &Target<'_>,
    identity: Option<&ClientPem>,
) -> Result<BoundChannel, BindError> {
    let address = |detail: String| BindError::Address {
        url: target.url.to_string(),
        detail,
    };
    let uri: Uri = target.url.parse().map_err(|e| address(format!("{e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(address("must be https://".into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| address("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(target.server_name.to_string())
        .map_err(|e| tls_error("server name")(e.to_string()))?;
    let connector = BindingConnector {
        tls: TlsConnector::from(Arc::new(client_config(target.ca_pem, identity)?)),
        server_name,
        host,
        port,
        local_address: target.local_address,
        exporter: Arc::default(),
    };
    let exporter = connector.exporter.clone();
    // Tonic sees plain HTTP/2: the TLS is the connector's own.
    let endpoint = Endpoint::from_shared(format!(
        "http://{host_port}",
        host_port = uri_authority(&uri)
    ))
    .map_err(|e| address(e.to_string()))?
    .connect_timeout(target.connect_timeout)
    .tcp_nodelay(true)
    .http2_keep_alive_interval(Duration::from_secs(30))
    .keep_alive_timeout(Duration::from_secs(10));
    let channel = endpoint.connect_with_connector(connector).await?;
    let exporter = match exporter.lock() {
        Ok(slot) => *slot,
        Err(poisoned) => *poisoned.into_inner(),
    };
    let exporter = exporter.ok_or(BindError::NoExporter)?;
    Ok(BoundChannel {
        channel,
        binding: ChannelBinding { exporter },
    })
}

fn uri_authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// Tonic's connector: TCP, then the TLS handshake, then the exporter kept; once only.
#[derive(Clone)]
struct BindingConnector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    local_address: Option<IpAddr>,
    exporter: Arc<Mutex<Option<[u8; EXPORTER_LEN]>>>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

// tonic's re-export of tower's `Service`: no dependency of our own for one trait.
impl tonic::codegen::Service<Uri> for BindingConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let already = match this.exporter.lock() {
                Ok(slot) => slot.is_some(),
                Err(poisoned) => poisoned.into_inner().is_some(),
            };
            if already {
                return Err(std::io::Error::other(
                    "a bound channel does not reconnect: open a new one",
                ));
            }
            let tcp = match this.local_address {
                None => TcpStream::connect((this.host.as_str(), this.port)).await?,
                Some(source) => {
                    let remote = tokio::net::lookup_host((this.host.as_str(), this.port))
                        .await?
                        .find(|a| a.is_ipv4() == source.is_ipv4())
                        .ok_or_else(|| {
                            std::io::Error::other("no address of the source's family")
                        })?;
                    let socket = if source.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(source, 0))?;
                    socket.connect(remote).await?
                }
            };
            tcp.set_nodelay(true)?;
            let stream = this.tls.connect(this.server_name.clone(), tcp).await?;
            let exporter = stream
                .get_ref()
                .1
                .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
                .map_err(std::io::Error::other)?;
            match this.exporter.lock() {
                Ok(mut slot) => *slot = Some(exporter),
                Err(poisoned) => *poisoned.into_inner() = Some(exporter),
            }
            Ok(TokioIo::new(stream))
        })
    }
}

impl std::fmt::Debug for BindingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingConnector")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}
