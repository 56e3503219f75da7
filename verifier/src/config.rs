//! The verifier's configuration file (TOML). `docs/verifier.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// Address of the gRPC listener (TLS).
    pub listen: SocketAddr,
    /// Directory of the sled state database.
    pub state_dir: PathBuf,
    /// Directory of the deployment CA (`trustchain-ca init`): the verifier issues agent and AK
    /// certificates with its issuing key.
    pub ca_dir: PathBuf,
    /// PEM file: the verifier's TLS certificate followed by the issuing CA certificate.
    pub tls_certificate: PathBuf,
    /// PEM file: the verifier's TLS private key (mode 0600).
    pub tls_key: PathBuf,
    /// PEM files of TPM-maker root CAs whose EK certificates are trusted.
    #[serde(default)]
    pub maker_anchors: Vec<PathBuf>,
    /// PEM files of TPM-maker intermediate CAs used to build EK certificate chains.
    #[serde(default)]
    pub maker_intermediates: Vec<PathBuf>,
    /// How long an enrollment attempt waits for the credential-activation answer.
    #[serde(default = "default_activation_timeout")]
    pub activation_timeout_seconds: u64,
    /// Pending enrollment attempts held at once (a flood of unknown devices cannot grow memory
    /// past this).
    #[serde(default = "default_max_pending")]
    pub max_pending_enrollments: usize,
    #[serde(default)]
    pub attestation: AttestationConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// Seconds between challenges when the device's policy tier sets none.
    #[serde(default = "default_interval")]
    pub default_interval_seconds: u64,
    /// Missed intervals after which a device is TIMED OUT.
    #[serde(default = "default_missed")]
    pub timeout_after_missed_intervals: u32,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            default_interval_seconds: default_interval(),
            timeout_after_missed_intervals: default_missed(),
        }
    }
}

fn default_activation_timeout() -> u64 {
    60
}
fn default_max_pending() -> usize {
    10_000
}
fn default_interval() -> u64 {
    10
}
fn default_missed() -> u32 {
    3
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

impl VerifierConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    }

    pub fn activation_timeout(&self) -> Duration {
        Duration::from_secs(self.activation_timeout_seconds)
    }
}
