//! Driving the verifier's dashboard in tests: HTTPS requests with (or without) an operator
//! certificate, a loopback proxy that presents one on a browser's behalf, and headless Chromium
//! over the DevTools protocol.
//!
//! Why the proxy: headless Chromium has no way to be handed a client certificate from the
//! command line (it asks the platform's certificate store, interactively). The proxy listens on
//! 127.0.0.1, plain HTTP, and opens a real mTLS connection to the dashboard for each browser
//! connection, with the viewer certificate the test chose; the dashboard sees exactly what a
//! browser holding that certificate would present.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

/// TLS to the dashboard as one operator (or with no certificate at all).
#[derive(Clone)]
pub struct DashboardClient {
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for DashboardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The header block, lowercased.
    pub headers: String,
    pub body: String,
}

impl DashboardClient {
    /// `identity`: the operator's (chain PEM, key PEM); `None` presents no certificate.
    pub fn new(
        address: SocketAddr,
        root_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()?;
                builder
                    .with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            address,
            config: Arc::new(config),
        })
    }

    pub async fn connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.address).await?;
        let name = ServerName::try_from("localhost")?;
        Ok(TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await?)
    }

    /// One request (`Connection: close`), the whole answer.
    pub async fn request(&self, method: &str, path: &str) -> anyhow::Result<Reply> {
        let mut stream = self.connect().await?;
        stream.write_all(head(method, path).as_bytes()).await?;
        let mut raw = Vec::new();
        // A peer closing without close_notify after the body is not this test's concern.
        let read = stream.read_to_end(&mut raw).await;
        if raw.is_empty() {
            read?;
        }
        parse(&raw)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request("GET", path).await
    }

    /// Opens `path` as an event stream and reads until the text received contains `needle`.
    pub async fn read_events_until(
        &self,
        path: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut stream = self.connect().await?;
        stream.write_all(head("GET", path).as_bytes()).await?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let mut buffer = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, stream.read(&mut buffer))
                .await
                .map_err(|_| {
                    anyhow!(
                        "no {needle:?} on {path} within {timeout:?}; got {}",
                        String::from_utf8_lossy(&seen)
                    )
                })??;
            if n == 0 {
                bail!("{path} closed; got {}", String::from_utf8_lossy(&seen));
            }
            seen.extend_from_slice(buffer.get(..n).unwrap_or_default());
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }
}

fn head(method: &str, path: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
}

fn parse(raw: &[u8]) -> anyhow::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header block in {text:?}"))?;
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {headers:?}"))?;
    let headers = headers.to_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).unwrap_or_default();
    }
}

/// A plain-HTTP listener on 127.0.0.1 that forwards each connection to the dashboard over mTLS
/// as `client`'s operator (see the module comment). Returns its address.
pub async fn operator_proxy(client: DashboardClient) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = listener.accept().await {
            let client = client.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = client.connect().await {
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                }
            });
        }
    });
    Ok(address)
}

/// Headless Chromium with one page, driven over the DevTools protocol.
pub struct Browser {
    devtools: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    _process: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts `chromium` (Debian's package; `scripts/setup.sh` installs it) on `url`.
    pub async fn open(url: &str, width: u32, height: u32) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let process = tokio::process::Command::new("chromium")
            .arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--no-first-run")
            .arg("--disable-extensions")
            .arg("--hide-scrollbars")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={width},{height}"))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting chromium (install it: scripts/setup.sh, or apt-get install chromium)",
            )?;
        // Chromium writes the port it chose to this file once DevTools listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u16>().ok())
            {
                break port;
            }
            if Instant::now() > deadline {
                bail!("chromium did not open its DevTools port within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let page = loop {
            if let Ok(targets) = devtools_targets(port).await
                && let Some(ws) = targets.as_array().and_then(|all| {
                    all.iter()
                        .find(|t| t.get("type") == Some(&json!("page")))
                        .and_then(|t| t.get("webSocketDebuggerUrl")?.as_str().map(str::to_owned))
                })
            {
                break ws;
            }
            if Instant::now() > deadline {
                bail!("chromium has no page target");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // The URL may name `localhost`, which can resolve to ::1; DevTools listens on 127.0.0.1.
        let path = page
            .strip_prefix("ws://")
            .and_then(|rest| rest.find('/').and_then(|i| rest.get(i..)))
            .ok_or_else(|| anyhow!("unexpected DevTools URL {page}"))?;
        let page = format!("ws://127.0.0.1:{port}{path}");
        let (devtools, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(page.as_str()),
        )
        .await
        .map_err(|_| anyhow!("DevTools WebSocket did not open"))??;
        Ok(Self {
            devtools,
            next_id: 0,
            _process: process,
            _profile: profile,
        })
    }

    /// One DevTools call; its `result`.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.devtools.send(Message::text(message)).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.devtools.next())
                .await
                .map_err(|_| anyhow!("{method}: no answer within 30 s"))?
                .ok_or_else(|| anyhow!("DevTools connection closed"))??;
            let Message::Text(text) = frame else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str())?;
            // Events (no id) and answers to other calls are skipped.
            if answer.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer.get("result").cloned().unwrap_or_default());
        }
    }

    /// Evaluates `expression` in the page; its value.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result.pointer("/result/value").cloned().unwrap_or_default())
    }

    /// Evaluates `expression` until it is `true`; the error shows `context` evaluated last.
    pub async fn wait_for(
        &mut self,
        expression: &str,
        context: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(expression).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen = self.eval(context).await.unwrap_or_default();
                bail!("{expression} not true within {timeout:?}; page: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = shot
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

/// DevTools' list of targets (`GET /json/list` on its port).
async fn devtools_targets(port: u16) -> anyhow::Result<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    // DevTools keeps the connection open: read up to the length it announces.
    let mut raw = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((headers, body)) = text.split_once("\r\n\r\n") {
            let length = headers
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| anyhow!("DevTools answer without a length"))?;
            if body.len() >= length {
                return Ok(serde_json::from_str(body)?);
            }
        }
        let mut buffer = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buffer))
            .await
            .map_err(|_| anyhow!("DevTools /json/list timed out"))??;
        if n == 0 {
            bail!("DevTools closed the connection");
        }
        raw.extend_from_slice(buffer.get(..n).unwrap_or_default());
    }
}
