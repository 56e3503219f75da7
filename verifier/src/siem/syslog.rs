//! State changes as RFC 5424 syslog messages, framed by octet counting (RFC 5425) over TLS.
//!
//! A message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [trustchain@32473 ...] MSG`.
//! MSGID is `state-change` or `alert`; the structured data carries the audit sequence, the
//! device id and both states; MSG is plain UTF-8 text (no BOM). 32473 is the private enterprise
//! number RFC 5612 reserves for documentation. Device-chosen text (device ids, reasons) is first
//! escaped by [`crate::untrusted_text`] (no control or bidi character stays), then, inside
//! SD-PARAM values, `"`, `\` and `]` are backslash-escaped as RFC 5424 section 6.3.3 requires:
//! a device cannot close the element, add a parameter or start a new message.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::{SyslogConfig, is_print_us_ascii};
use super::cursor::Sink;
use crate::device::DeviceState;
use crate::service::StateChange;
use crate::untrusted_text::escape;
use crate::webhooks::is_alert;

/// The SD-ID of TrustChain's structured data (`name@PEN`, RFC 5424 section 7.2.2).
pub const SD_ID: &str = "trustchain@32473";
/// Receivers must take 2048 octets and should take 8192 (RFC 5425 section 4.3.1): longer
/// reasons are cut (the audit log keeps them whole).
pub const MAX_MESSAGE: usize = 8192;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 5424 severity of a change: how urgently a human should look.
pub fn severity(state: DeviceState) -> u8 {
    match state {
        DeviceState::Untrusted | DeviceState::Quarantined => 2, // critical
        DeviceState::TimedOut => 4,                             // warning
        DeviceState::Decommissioned => 5,                       // notice
        DeviceState::Enrolled | DeviceState::Trusted => 6,      // informational
    }
}

/// An SD-PARAM value: device text made safe, then `"`, `\` and `]` escaped.
pub fn sd_value(text: &str) -> String {
    let safe = escape(text);
    let mut out = String::with_capacity(safe.len() + 8);
    for c in safe.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 3339 UTC with milliseconds, as RFC 5424 TIMESTAMP and ECS `@timestamp` want it.
pub fn timestamp(unix_millis: i64) -> String {
    let nanos = i128::from(unix_millis) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// A HOSTNAME or other header field: printable US-ASCII of at most `max`, or the NILVALUE.
pub fn header_field(text: &str, max: usize) -> String {
    if text.is_empty() || text.len() > max || !is_print_us_ascii(text) {
        "-".into()
    } else {
        text.into()
    }
}

/// Where messages come from: the header fields that are the verifier's own.
#[derive(Debug, Clone)]
pub struct Origin {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub proc_id: String,
}

/// One change as an RFC 5424 message (without framing), at most [`MAX_MESSAGE`] octets.
pub fn format_message(origin: &Origin, change: &StateChange) -> String {
    let severity = severity(change.current);
    let pri = u16::from(origin.facility.min(23)) * 8 + u16::from(severity);
    let msgid = if is_alert(change) {
        "alert"
    } else {
        "state-change"
    };
    let mut message = format!(
        "<{pri}>1 {} {} {} {} {msgid} [{SD_ID} sequence=\"{}\" device=\"{}\" previous=\"{}\" current=\"{}\"] ",
        timestamp(change.at_unix_millis),
        header_field(&origin.hostname, 255),
        header_field(&origin.app_name, 48),
        header_field(&origin.proc_id, 128),
        change.sequence,
        sd_value(&change.device_id),
        change.previous.name(),
        change.current.name(),
    );
    let text = format!(
        "device {} {} -> {}: {}",
        escape(&change.device_id),
        change.previous.name(),
        change.current.name(),
        escape(&change.reason)
    );
    for c in text.chars() {
        if message.len() + c.len_utf8() > MAX_MESSAGE {
            break;
        }
        message.push(c);
    }
    message
}

/// RFC 5425 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

#[derive(Debug, thiserror::Error)]
pub enum SyslogSetupError {
    #[error("siem.syslog.{key} {path}: {detail}")]
    File {
        key: &'static str,
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("siem.syslog: {0}")]
    Tls(String),
}

fn read_pem(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, SyslogSetupError> {
    std::fs::read(path).map_err(|e| SyslogSetupError::File {
        key,
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn certificates(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, SyslogSetupError> {
    let pem = read_pem(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(SyslogSetupError::File {
            key,
            path: path.to_path_buf(),
            detail: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

/// The TLS client: the receiver's certificate must chain to `ca_file` and name `server_name`.
pub fn tls_config(config: &SyslogConfig) -> Result<Arc<rustls::ClientConfig>, SyslogSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("ca_file", &config.ca_file)? {
        roots.add(cert).map_err(|e| SyslogSetupError::File {
            key: "ca_file",
            path: config.ca_file.clone(),
            detail: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyslogSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let tls = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client_cert", cert)?;
            let key_pem = read_pem("client_key", key)?;
            let private =
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SyslogSetupError::File {
                    key: "client_key",
                    path: key.clone(),
                    detail: e.to_string(),
                })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| SyslogSetupError::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// The syslog sink: one TLS connection, opened when needed and again after any failure.
pub struct SyslogSink {
    connector: TlsConnector,
    address: String,
    server_name: ServerName<'static>,
    origin: Origin,
    connection: Option<TlsStream<tokio::net::TcpStream>>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    pub fn new(config: &SyslogConfig, hostname: &str) -> Result<Self, SyslogSetupError> {
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|e| SyslogSetupError::Tls(format!("server_name: {e}")))?;
        Ok(Self {
            connector: TlsConnector::from(tls_config(config)?),
            address: config.address.clone(),
            server_name,
            origin: Origin {
                facility: config.facility,
                hostname: hostname.into(),
                app_name: config.app_name.clone(),
                proc_id: std::process::id().to_string(),
            },
            connection: None,
        })
    }

    async fn connect(&self) -> Result<TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::time::timeout(
            IO_TIMEOUT,
            tokio::net::TcpStream::connect(self.address.as_str()),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        tokio::time::timeout(
            IO_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS: {e}"))
    }
}

/// Whether a receiver closed the connection (syslog receivers never send): a message written
/// into a connection the peer has already closed would be reported written and lost.
fn closed_by_peer(stream: &mut TlsStream<tokio::net::TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    match futures::FutureExt::now_or_never(stream.read(&mut byte)) {
        None => false,
        Some(Ok(0)) | Some(Err(_)) => true,
        Some(Ok(_)) => false,
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn deliver(&mut self, change: &StateChange) -> Result<(), String> {
        if let Some(stream) = self.connection.as_mut()
            && closed_by_peer(stream)
        {
            self.connection = None;
        }
        let mut stream = match self.connection.take() {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        let frame = frame(&format_message(&self.origin, change));
        let written = tokio::time::timeout(IO_TIMEOUT, async {
            stream.write_all(&frame).await?;
            stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                self.connection = Some(stream);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write timed out".into()),
        }
    }
}

#[cfg(test)]
#[path = "syslog_tests.rs"]
mod tests;
