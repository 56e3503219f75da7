//! One webhook's HTTP client. HTTPS is verified against the webhook's own `ca_file` (never the
//! system's roots), with the workspace's rustls and aws-lc-rs; redirects are not followed (a
//! redirect would send alerts somewhere the configuration does not name).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::WebhookConfig;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("webhooks[{index}] ({url}): {detail}")]
    Config {
        index: usize,
        url: String,
        detail: String,
    },
}

/// Why one attempt failed (logged; the alert stays in the outbox).
#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptError {
    #[error("{0}")]
    Transport(String),
    #[error("receiver answered {0}")]
    Status(u16),
}

/// A configured webhook and its client.
#[derive(Debug)]
pub(super) struct Hook {
    pub(super) config: WebhookConfig,
    client: reqwest::Client,
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn tls_config(config: &WebhookConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    // Plain HTTP (allowed explicitly) has no CA: an empty store refuses any TLS peer.
    if let Some(ca_file) = &config.ca_file {
        for cert in certificates(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&config.client_certificate, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl Hook {
    pub(super) fn new(index: usize, config: &WebhookConfig) -> Result<Self, WebhookError> {
        let error = |detail: String| WebhookError::Config {
            index,
            url: config.url.clone(),
            detail,
        };
        config.validate(index).map_err(error)?;
        let tls = tls_config(config).map_err(error)?;
        let timeout = Duration::from_secs(config.timeout_seconds);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(!config.allow_insecure_http)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            client,
        })
    }

    /// One POST; Ok on a 2xx answer.
    pub(super) async fn post(&self, body: Vec<u8>, signature: &str) -> Result<(), AttemptError> {
        let response = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("x-trustchain-signature", signature)
            .body(body)
            .send()
            .await
            // The chain of sources says why (e.g. an unknown issuer); reqwest's top line does not.
            .map_err(|e| AttemptError::Transport(error_chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status(status.as_u16()))
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
