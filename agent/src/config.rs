//! The agent's configuration file (TOML). `docs/agent.example.toml` documents every key; command-
//! line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Which EK the agent enrolls with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EkChoice {
    #[default]
    Rsa2048,
    EccP256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The verifier's gRPC address, e.g. `https://verifier.example:8443`.
    pub verifier_url: String,
    /// The name in the verifier's TLS certificate (defaults to the URL's host).
    #[serde(default)]
    pub verifier_name: Option<String>,
    /// PEM file of the deployment root CA that issued the verifier's certificate.
    pub ca_certificate: PathBuf,
    /// Directory for the agent's own state (AK blob, TLS key, certificates), mode 0700.
    pub state_dir: PathBuf,
    /// TPM access: `device:/dev/tpmrm0` (default) or `swtpm:host=127.0.0.1,port=2321`.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// EK used for enrollment: `rsa2048` (default) or `ecc-p256`.
    #[serde(default)]
    pub ek: EkChoice,
    /// The UEFI measured-boot event log.
    #[serde(default = "default_event_log")]
    pub event_log: PathBuf,
    /// The IMA runtime measurement list (ASCII).
    #[serde(default = "default_ima_log")]
    pub ima_log: PathBuf,
    /// Facts reported at enrollment (not trusted by the verifier for any decision).
    #[serde(default)]
    pub facts: FactsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsConfig {
    /// Defaults to the machine's hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub firmware_version: String,
    /// IoT-SSF device class, as the operator's policy names it.
    #[serde(default)]
    pub device_class: String,
}

fn default_tcti() -> String {
    "device:/dev/tpmrm0".into()
}
fn default_event_log() -> PathBuf {
    PathBuf::from("/sys/kernel/security/tpm0/binary_bios_measurements")
}
fn default_ima_log() -> PathBuf {
    PathBuf::from("/sys/kernel/security/ima/ascii_runtime_measurements")
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

impl AgentConfig {
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

    /// The TLS server name to expect.
    pub fn server_name(&self) -> String {
        if let Some(name) = &self.verifier_name {
            return name.clone();
        }
        let without_scheme = self
            .verifier_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.verifier_url);
        let host_port = without_scheme.split('/').next().unwrap_or_default();
        match host_port.rsplit_once(':') {
            Some((host, _port)) => host.trim_matches(['[', ']']).to_string(),
            None => host_port.to_string(),
        }
    }

    pub fn hostname(&self) -> String {
        self.facts.hostname.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config: AgentConfig = toml::from_str(
            r#"
            verifier_url = "https://10.1.2.3:8443"
            ca_certificate = "/etc/trustchain/root.pem"
            state_dir = "/var/lib/trustchain-agent"
            "#,
        )
        .unwrap();
        assert_eq!(config.tcti, "device:/dev/tpmrm0");
        assert_eq!(config.ek, EkChoice::Rsa2048);
        assert_eq!(config.server_name(), "10.1.2.3");
        assert!(toml::from_str::<AgentConfig>("verifier_url = 1").is_err());
    }

    #[test]
    fn the_documented_sample_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/agent.example.toml"
        ));
        let config = AgentConfig::load(path).unwrap();
        assert_eq!(config.server_name(), "verifier.example.net");
        assert_eq!(config.facts.device_class, "gateway");
    }
}
