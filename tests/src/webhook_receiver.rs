//! A webhook receiver on loopback for the alert tests: real HTTP/1 (hyper), over TLS with a
//! certificate from a test CA (optionally requiring a client certificate) or plain. It records
//! every POST and answers 200, and counts TLS handshakes that failed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use trustchain_ca::Authority;

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// The `x-trustchain-signature` header.
    pub signature: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    pub address: SocketAddr,
    pub posts: mpsc::UnboundedReceiver<Received>,
    /// TLS handshakes that failed (a client that refused this receiver's certificate).
    pub failed_handshakes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// TLS for a receiver: a server certificate for 127.0.0.1/localhost issued by `ca`; with
/// `client_ca`, a client certificate chaining to it is required.
pub fn server_tls(
    ca: &Authority,
    client_ca: Option<&Authority>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let issued = ca.issue_verifier(&["localhost".into()], &["127.0.0.1".parse()?])?;
    let chain = format!("{}{}", issued.pem, ca.issuing_pem());
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.unwrap_or_default().as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(client_ca.root_der().to_vec()))?;
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(chain, key)?))
}

/// Writes `ca`'s root to `path` (a webhook's `ca_file`).
pub fn write_root(ca: &Authority, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, ca.root_pem())?;
    Ok(())
}

/// Writes a client certificate from `ca` (chain, key) into `dir`; returns their paths.
pub fn write_client_identity(
    ca: &Authority,
    dir: &Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    // Any client certificate of the CA serves; a viewer holds no admin power should it leak.
    let issued = ca.issue_operator("webhook-client", &[trustchain_ca::OperatorRole::Viewer])?;
    let cert = dir.join("webhook-client.pem");
    let key = dir.join("webhook-client.key.pem");
    std::fs::write(&cert, format!("{}{}", issued.pem, ca.issuing_pem()))?;
    trustchain_ca::files::write_secret(&key, issued.key_pem.unwrap_or_default().as_bytes())?;
    Ok((cert, key))
}

/// Serves on `listener` (TLS with `tls`, else plain HTTP) until dropped.
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<Receiver> {
    let address = listener.local_addr()?;
    let (sender, posts) = mpsc::unbounded_channel();
    let failed_handshakes = Arc::new(AtomicU64::new(0));
    let failed = failed_handshakes.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let sender = sender.clone();
            let tls = tls.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                match tls {
                    Some(tls) => match tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await {
                        Ok(stream) => answer(stream, sender).await,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                    None => answer(tcp, sender).await,
                }
            });
        }
    });
    Ok(Receiver {
        address,
        posts,
        failed_handshakes,
        task,
    })
}

async fn answer<S>(stream: S, sender: mpsc::UnboundedSender<Received>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let sender = sender.clone();
            async move {
                let path = request.uri().path().to_string();
                let signature = request
                    .headers()
                    .get("x-trustchain-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = request.into_body().collect().await?.to_bytes().to_vec();
                let _ = sender.send(Received {
                    path,
                    signature,
                    body,
                });
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
            }
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

impl Receiver {
    /// The next POST, within `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> anyhow::Result<Received> {
        tokio::time::timeout(timeout, self.posts.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no alert within {timeout:?}"))?
            .ok_or_else(|| anyhow::anyhow!("receiver stopped"))
    }
}
