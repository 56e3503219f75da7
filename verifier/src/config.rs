//! The verifier's configuration file (TOML). `docs/verifier.example.toml` documents every key.
//!
//! - `limits`: the `[limits]` section and the network edge's [`Limits`].
//! - `storage`: `storage = "sled" | "postgres"`, `[postgres]` and `[cluster]`.
//! - `webhooks`: `[[webhooks]]` entries ([`WebhookConfig`]).

mod limits;
mod storage;
mod webhooks;

pub use limits::{Limits, LimitsConfig};
pub use storage::{ClusterConfig, PostgresConfig, StorageKind};
pub use webhooks::WebhookConfig;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// Address of the gRPC listener (TLS).
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics listener (plain HTTP, GET /metrics); none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the read-only web dashboard (HTTPS with the verifier's certificate; operator
    /// client certificates with the `viewer` role or above); none (the default) if absent.
    #[serde(default)]
    pub dashboard_listen: Option<SocketAddr>,
    /// Directory of the sled state database (with `storage = "sled"`, the default).
    pub state_dir: PathBuf,
    /// Where the state lives: `"sled"` (default, `state_dir`) or `"postgres"` (`[postgres]`,
    /// shared by the replicas of one verifier, see `[cluster]` and docs/scale.md).
    #[serde(default)]
    pub storage: StorageKind,
    /// The database of `storage = "postgres"`.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// Replicas over one PostgreSQL database (`storage = "postgres"` only).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Directory of the deployment CA (`trustchain-ca init`): the verifier issues agent and AK
    /// certificates with its issuing key.
    pub ca_dir: PathBuf,
    /// PEM file: the verifier's TLS certificate followed by the issuing CA certificate.
    pub tls_certificate: PathBuf,
    /// PEM file: the verifier's TLS private key (mode 0600).
    pub tls_key: PathBuf,
    /// The verifier's signing key (PKCS#8, 0600) for audit checkpoints and results; created on
    /// first start, with its public key written beside it as `<path>.pub`.
    /// Default: `<ca_dir>/verifier-signing.pk8`.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// PEM files of TPM-maker root CAs whose EK certificates are trusted.
    #[serde(default)]
    pub maker_anchors: Vec<PathBuf>,
    /// PEM files of TPM-maker intermediate CAs used to build EK certificate chains.
    #[serde(default)]
    pub maker_intermediates: Vec<PathBuf>,
    /// File holding the trust-list authority's public key (uncompressed P-256 point, hex, as
    /// `trustchain-ca trust-list-key` writes it). Without it no trust list is accepted, and
    /// enrollment trusts `maker_anchors`; with an active trust list, its maker CAs replace them.
    #[serde(default)]
    pub trust_list_authority: Option<PathBuf>,
    /// Whether a policy must be signed (`trustchain policy sign`) by a policy signer the active
    /// trust list admits to be imported. Default (also when the key is absent): true. A
    /// deployment that imports unsigned TOML policies sets it to false explicitly.
    #[serde(default = "default_true")]
    pub require_signed_policies: bool,
    /// How long an enrollment attempt waits for the credential-activation answer.
    #[serde(default = "default_activation_timeout")]
    pub activation_timeout_seconds: u64,
    /// Pending enrollment attempts held at once (a flood of unknown devices cannot grow memory
    /// past this).
    #[serde(default = "default_max_pending")]
    pub max_pending_enrollments: usize,
    /// The state database's page cache in MiB (at least 1): its hot set is about 1.3 KiB per
    /// device (appraisal state, spent nonces); what misses is read back from disk.
    #[serde(default = "default_storage_cache_mib")]
    pub storage_cache_mib: u64,
    #[serde(default)]
    pub attestation: AttestationConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where alerts are POSTed (JSON, signed with the verifier's key, over HTTPS), e.g.
    /// `[[webhooks]] url = "https://siem.internal:8443/trustchain" ca_file = "..."`.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The network edge's caps (`[limits]`); every key optional.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// SIEM export of state changes and alerts (`[siem.syslog]`, `[siem.ecs]`); off if absent.
    #[serde(default)]
    pub siem: crate::siem::config::SiemConfig,
}

/// How the admin calls behave (`[admin]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The two-person rule: a trust-list or policy import by one policy-admin waits (stored
    /// durably, by the document's SHA-256) until a different policy-admin approves it
    /// (`trustchain import approve --digest`). Default: false.
    #[serde(default)]
    pub two_person_imports: bool,
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
    /// Interval per device class (the class the trust list assigns by EK, e.g. "plc" = 1, never
    /// the class the agent claims), in seconds; 1 to 3600. Classes not listed, and devices with
    /// no assigned class, use `default_interval_seconds`.
    #[serde(default)]
    pub interval_seconds_by_class: std::collections::BTreeMap<String, u64>,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            default_interval_seconds: default_interval(),
            timeout_after_missed_intervals: default_missed(),
            interval_seconds_by_class: std::collections::BTreeMap::new(),
        }
    }
}

/// Challenge intervals are kept between these bounds whatever the configuration says.
pub const MIN_INTERVAL_SECONDS: u64 = 1;
pub const MAX_INTERVAL_SECONDS: u64 = 3600;

impl AttestationConfig {
    /// The challenge interval for a device of `class`.
    pub fn interval_for(&self, class: &str) -> Duration {
        let seconds = self
            .interval_seconds_by_class
            .get(class)
            .copied()
            .unwrap_or(self.default_interval_seconds);
        Duration::from_secs(seconds.clamp(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS))
    }
}

fn default_true() -> bool {
    true
}
fn default_activation_timeout() -> u64 {
    60
}
fn default_max_pending() -> usize {
    10_000
}
fn default_storage_cache_mib() -> u64 {
    crate::storage::DEFAULT_CACHE_BYTES / (1024 * 1024)
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
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        config.validate().map_err(|detail| ConfigError::Parse {
            path: path.to_path_buf(),
            detail,
        })?;
        config
            .siem
            .validate()
            .map_err(|detail| ConfigError::Parse {
                path: path.to_path_buf(),
                detail,
            })?;
        if let Some(dashboard) = config.dashboard_listen
            && (dashboard == config.listen || Some(dashboard) == config.metrics_listen)
        {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                detail: format!(
                    "dashboard_listen {dashboard} must differ from listen and metrics_listen"
                ),
            });
        }
        Ok(config)
    }

    /// The checks that need no file, with the offending key named (also run by
    /// `Service::start`, for configurations built in code).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024 * 1024).contains(&self.storage_cache_mib) {
            return Err("storage_cache_mib must be 1 to 1048576".into());
        }
        self.limits.to_limits()?;
        match (self.storage, &self.postgres) {
            (StorageKind::Postgres, None) => {
                return Err(
                    "storage = \"postgres\" needs a [postgres] section with its url".into(),
                );
            }
            (StorageKind::Postgres, Some(postgres)) => postgres.validate()?,
            (StorageKind::Sled, _) => {}
        }
        self.cluster.validate()?;
        for (index, webhook) in self.webhooks.iter().enumerate() {
            webhook.validate(index)?;
            // The outbox keeps one cursor per URL.
            if self
                .webhooks
                .iter()
                .take(index)
                .any(|w| w.url == webhook.url)
            {
                return Err(format!(
                    "webhooks[{index}].url {:?} is listed twice",
                    webhook.url
                ));
            }
        }
        Ok(())
    }

    /// sled's page cache in bytes.
    pub fn storage_cache_bytes(&self) -> u64 {
        self.storage_cache_mib.saturating_mul(1024 * 1024)
    }

    pub fn activation_timeout(&self) -> Duration {
        Duration::from_secs(self.activation_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/verifier.example.toml");

    /// The documented sample, to edit.
    fn sample() -> String {
        std::fs::read_to_string(SAMPLE).unwrap()
    }

    /// Loads `text` as a `verifier.toml` of its own.
    fn load(text: &str) -> Result<VerifierConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verifier.toml");
        std::fs::write(&path, text).unwrap();
        VerifierConfig::load(&path)
    }

    #[test]
    fn sled_is_the_default_and_postgres_needs_its_section_and_sane_leases() {
        let config = load(&sample()).unwrap();
        assert_eq!(config.storage, StorageKind::Sled);
        assert_eq!(config.cluster.lease_seconds, 6);
        let postgres = sample().replace("# storage = \"postgres\"", "storage = \"postgres\"");
        let err = load(&postgres).unwrap_err();
        assert!(err.to_string().contains("[postgres]"), "{err}");
        let with_db = postgres
            .replace("# [postgres]", "[postgres]")
            .replace("# url = ", "url = ");
        let config = load(&with_db).unwrap();
        assert_eq!(config.storage, StorageKind::Postgres);
        assert_eq!(config.postgres.unwrap().pool_size, 8);
        let clustered = with_db
            .replace("# [cluster]", "[cluster]")
            .replace("# replica_id = ", "replica_id = ");
        assert_eq!(
            load(&clustered).unwrap().cluster.replica_name(),
            "verifier-1"
        );
        for (from, to, key) in [
            (
                "# lease_seconds = 6",
                "lease_seconds = 1",
                "cluster.lease_seconds",
            ),
            (
                "replica_id = \"verifier-1\"",
                "replica_id = \"a b\"",
                "cluster.replica_id",
            ),
            ("# pool_size = 8", "pool_size = 0", "postgres.pool_size"),
        ] {
            let err = load(&clustered.replace(from, to)).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_page_cache_of_zero_is_refused() {
        let err =
            load(&sample().replace("storage_cache_mib = 16", "storage_cache_mib = 0")).unwrap_err();
        assert!(err.to_string().contains("storage_cache_mib"), "{err}");
    }

    #[test]
    fn the_dashboard_is_off_by_default_and_needs_its_own_address() {
        let sample = sample();
        let without = sample.replace("dashboard_listen = \"127.0.0.1:8444\"", "");
        assert_eq!(load(&without).unwrap().dashboard_listen, None);
        let clash = sample.replace(
            "dashboard_listen = \"127.0.0.1:8444\"",
            "dashboard_listen = \"127.0.0.1:9464\"",
        );
        let err = load(&clash).unwrap_err();
        assert!(err.to_string().contains("dashboard_listen"), "{err}");
    }

    #[test]
    fn without_the_key_policies_must_be_signed() {
        let sample = sample().replace("require_signed_policies = true", "");
        assert!(load(&sample).unwrap().require_signed_policies);
    }

    #[test]
    fn the_documented_sample_parses_and_tiers_pick_intervals() {
        let config = VerifierConfig::load(Path::new(SAMPLE)).unwrap();
        assert!(config.require_signed_policies && !config.admin.two_person_imports);
        assert_eq!(
            config.attestation.interval_for("plc"),
            Duration::from_secs(1)
        );
        assert_eq!(
            config.attestation.interval_for("gateway"),
            Duration::from_secs(5)
        );
        assert_eq!(
            config.attestation.interval_for("unknown"),
            Duration::from_secs(10)
        );
        assert_eq!(config.activation_timeout(), Duration::from_secs(60));
        assert_eq!(config.storage_cache_bytes(), 16 * 1024 * 1024);
        let mut odd = config.attestation.clone();
        odd.interval_seconds_by_class.insert("x".into(), 0);
        assert_eq!(
            odd.interval_for("x"),
            Duration::from_secs(MIN_INTERVAL_SECONDS)
        );
        assert!(toml::from_str::<VerifierConfig>("listen = 1").is_err());
        // The documented [limits] are the defaults, and the sample webhook is HTTPS.
        let documented = config.limits.to_limits().unwrap();
        let defaults = Limits::default();
        assert_eq!(documented.handshake_timeout, defaults.handshake_timeout);
        assert_eq!(
            documented.max_unauthenticated_per_source,
            defaults.max_unauthenticated_per_source
        );
        assert_eq!(documented.enrollment_burst, defaults.enrollment_burst);
        assert!(config.webhooks[0].url.starts_with("https://"));
        assert!(config.webhooks[0].ca_file.is_some());
    }

    #[test]
    fn a_sample_with_a_zero_limit_or_a_plain_http_webhook_is_refused_naming_the_key() {
        let sample = sample();
        for (from, to, key) in [
            (
                "enrollment_burst = 60",
                "enrollment_burst = 0",
                "limits.enrollment_burst",
            ),
            (
                "url = \"https://",
                "url = \"http://",
                "webhooks[0].allow_insecure_http",
            ),
        ] {
            let err = load(&sample.replace(from, to)).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
