//! The agent's configuration file (TOML). `docs/agent.example.toml` documents every key; command-
//! line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::replicas::{ReplicaError, Replicas};

/// Which EK the agent enrolls with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EkChoice {
    #[default]
    Rsa2048,
    EccP256,
}

/// The configuration, checked: [`AgentConfig::load`] (or any `Deserialize`) gives one only from a
/// file whose verifier addresses are valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ConfigFile")]
pub struct AgentConfig {
    /// The verifier replicas, in the order the agent tries them.
    pub verifiers: Replicas,
    /// `verifier_name` as configured (kept to check a `--verifier-url` given on the command line).
    pub verifier_name: Option<String>,
    pub ca_certificate: PathBuf,
    pub state_dir: PathBuf,
    pub tcti: String,
    pub ek: EkChoice,
    pub event_log: PathBuf,
    pub ima_log: PathBuf,
    pub facts: FactsConfig,
}

/// The file as written (every key is documented in `docs/agent.example.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The verifier's gRPC address, e.g. `https://verifier.example:8443`.
    #[serde(default)]
    verifier_url: Option<String>,
    /// Several verifier replicas instead (exactly one of the two keys): tried in turn.
    #[serde(default)]
    verifier_urls: Option<Vec<String>>,
    /// The name in the verifiers' TLS certificates (defaults to each URL's host).
    #[serde(default)]
    verifier_name: Option<String>,
    /// PEM file of the deployment root CA that issued the verifier's certificate.
    ca_certificate: PathBuf,
    /// Directory for the agent's own state (AK blob, TLS key, certificates), mode 0700.
    state_dir: PathBuf,
    /// TPM access: `device:/dev/tpmrm0` (default) or `swtpm:host=127.0.0.1,port=2321`.
    #[serde(default = "default_tcti")]
    tcti: String,
    /// EK used for enrollment: `rsa2048` (default) or `ecc-p256`.
    #[serde(default)]
    ek: EkChoice,
    /// The UEFI measured-boot event log.
    #[serde(default = "default_event_log")]
    event_log: PathBuf,
    /// The IMA runtime measurement list (ASCII).
    #[serde(default = "default_ima_log")]
    ima_log: PathBuf,
    /// Facts reported at enrollment (not trusted by the verifier for any decision).
    #[serde(default)]
    facts: FactsConfig,
}

impl TryFrom<ConfigFile> for AgentConfig {
    type Error = String;

    fn try_from(file: ConfigFile) -> Result<Self, String> {
        let urls = match (file.verifier_url, file.verifier_urls) {
            (Some(url), None) => vec![url],
            (None, Some(urls)) => urls,
            (Some(_), Some(_)) => {
                return Err("set verifier_url or verifier_urls, not both".into());
            }
            (None, None) => return Err("missing verifier_url (or verifier_urls)".into()),
        };
        let verifiers =
            Replicas::parse(&urls, file.verifier_name.as_deref()).map_err(|e| e.to_string())?;
        Ok(Self {
            verifiers,
            verifier_name: file.verifier_name,
            ca_certificate: file.ca_certificate,
            state_dir: file.state_dir,
            tcti: file.tcti,
            ek: file.ek,
            event_log: file.event_log,
            ima_log: file.ima_log,
            facts: file.facts,
        })
    }
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

    /// Replaces the configured replicas with one address (`--verifier-url`), named as the file
    /// names them.
    pub fn use_verifier_url(&mut self, url: &str) -> Result<(), ReplicaError> {
        self.verifiers = Replicas::parse(&[url.to_string()], self.verifier_name.as_deref())?;
        Ok(())
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

    const REST: &str = r#"
        ca_certificate = "/etc/trustchain/root.pem"
        state_dir = "/var/lib/trustchain-agent"
        "#;

    fn parse(verifier_keys: &str) -> Result<AgentConfig, String> {
        toml::from_str(&format!("{verifier_keys}\n{REST}")).map_err(|e| e.to_string())
    }

    fn targets(config: &AgentConfig) -> Vec<(&str, &str)> {
        config
            .verifiers
            .iter()
            .map(|r| (r.url(), r.server_name()))
            .collect()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(r#"verifier_url = "https://10.1.2.3:8443""#).unwrap();
        assert_eq!(config.tcti, "device:/dev/tpmrm0");
        assert_eq!(config.ek, EkChoice::Rsa2048);
        assert_eq!(targets(&config), [("https://10.1.2.3:8443", "10.1.2.3")]);
        assert!(toml::from_str::<AgentConfig>("verifier_url = 1").is_err());
    }

    #[test]
    fn several_replicas_share_one_name_rule() {
        let config = parse(r#"verifier_urls = ["https://a:8443", "https://b:8443"]"#).unwrap();
        assert_eq!(
            targets(&config),
            [("https://a:8443", "a"), ("https://b:8443", "b")]
        );
        let config = parse(
            r#"verifier_urls = ["https://10.0.0.1:8443", "https://10.0.0.2:8443"]
            verifier_name = "verifier.example""#,
        )
        .unwrap();
        assert_eq!(
            targets(&config),
            [
                ("https://10.0.0.1:8443", "verifier.example"),
                ("https://10.0.0.2:8443", "verifier.example")
            ]
        );
    }

    #[test]
    fn verifier_addresses_are_checked_when_read() {
        for (keys, expected) in [
            ("", "missing verifier_url"),
            (
                r#"verifier_url = "https://a:8443"
                verifier_urls = ["https://b:8443"]"#,
                "not both",
            ),
            ("verifier_urls = []", "empty"),
            (r#"verifier_url = "http://a:8443""#, "must be https://"),
            (
                r#"verifier_urls = ["https://a:8443", "ftp://b"]"#,
                "must be https://",
            ),
            (
                r#"verifier_urls = ["https://a:8443", "https://A:8443"]"#,
                "listed twice",
            ),
        ] {
            let error = parse(keys).unwrap_err();
            assert!(error.contains(expected), "{keys}: {error}");
        }
        let seventeen: Vec<String> = (0..17).map(|i| format!("\"https://v{i}:8443\"")).collect();
        let error = parse(&format!("verifier_urls = [{}]", seventeen.join(", "))).unwrap_err();
        assert!(error.contains("at most 16"), "{error}");
    }

    #[test]
    fn a_command_line_url_replaces_the_list() {
        let mut config = parse(
            r#"verifier_urls = ["https://a:8443", "https://b:8443"]
            verifier_name = "verifier.example""#,
        )
        .unwrap();
        config.use_verifier_url("https://c:9443").unwrap();
        assert_eq!(targets(&config), [("https://c:9443", "verifier.example")]);
        assert!(config.use_verifier_url("c:9443").is_err());
    }

    #[test]
    fn the_documented_sample_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/agent.example.toml"
        ));
        let config = AgentConfig::load(path).unwrap();
        assert_eq!(
            targets(&config),
            [("https://verifier.example.net:8443", "verifier.example.net")]
        );
        assert_eq!(config.facts.device_class, "gateway");
        // The commented-out alternative parses too, in place of verifier_url.
        let text = std::fs::read_to_string(path).unwrap();
        let replicas = text
            .lines()
            .find_map(|line| line.strip_prefix("# verifier_urls = "))
            .unwrap();
        let text = text.replace(
            "verifier_url = \"https://verifier.example.net:8443\"",
            &format!("verifier_urls = {replicas}"),
        );
        let config: AgentConfig = toml::from_str(&text).unwrap();
        assert_eq!(config.verifiers.count(), 2);
    }
}
