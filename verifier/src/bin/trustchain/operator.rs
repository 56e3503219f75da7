//! How operator commands reach the verifier: mutual TLS with an operator certificate.

use std::path::PathBuf;

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// The verifier's address.
    #[arg(
        long,
        env = "TRUSTCHAIN_VERIFIER",
        default_value = "https://127.0.0.1:8443"
    )]
    verifier: String,
    /// The name in the verifier's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The deployment root CA (PEM).
    #[arg(long, env = "TRUSTCHAIN_CA")]
    ca: PathBuf,
    /// The operator's certificate chain (PEM: certificate, then the issuing CA).
    #[arg(long, env = "TRUSTCHAIN_OPERATOR_CERT")]
    cert: PathBuf,
    /// The operator's key (PEM).
    #[arg(long, env = "TRUSTCHAIN_OPERATOR_KEY")]
    key: PathBuf,
}

impl OperatorArgs {
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(self.server_name.clone());
        Ok(Endpoint::from_shared(self.verifier.clone())?
            .tls_config(tls)?
            .connect()
            .await?)
    }
}
