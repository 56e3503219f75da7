//! `storage = "sled" | "postgres"`, the `[postgres]` connection and the `[cluster]` section:
//! where the verifier keeps its state and, on PostgreSQL, how replicas share the fleet.

use std::path::PathBuf;

use serde::Deserialize;

/// Which backend keeps the verifier's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// The embedded default: one process, `state_dir` on local disk.
    #[default]
    Sled,
    /// A PostgreSQL database (`[postgres]`), shared by every replica that names it.
    Postgres,
}

/// `[postgres]`: the database of `storage = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq connection string or URL, e.g.
    /// `"host=db.internal port=5432 user=trustchain dbname=trustchain"`. A password belongs
    /// in `password_file`, not here (this file is often world-readable).
    pub url: String,
    /// File holding the database password (first line), mode 0600; none if absent.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) the database server's certificate must chain to: with it the
    /// connection is TLS (rustls) and refused if the server cannot prove its name; without it,
    /// plain TCP (a loopback or a private network only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connections this replica opens at most (1 to 256). Default 8: every replica's
    /// `pool_size`, summed, must stay under the server's `max_connections`.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a call waits for a connection or an answer, seconds (1 to 300). Default 10:
    /// past it the call fails, and no verdict rests on it.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// `[cluster]`: how replicas over one PostgreSQL database share the fleet. Ignored on sled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's name, unique among the replicas of one database (1 to 64 characters of
    /// `[A-Za-z0-9._-]`). Default: the host name.
    #[serde(default)]
    pub replica_id: Option<String>,
    /// How long a device's lease lasts unless renewed, seconds (2 to 600). Default 6. A replica
    /// renews its leases every third of it; a dead replica's devices are taken over once their
    /// leases run out, so keep it under the challenge interval.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// How often a replica looks for trust documents other replicas imported, milliseconds
    /// (100 to 60000). Default 1000.
    #[serde(default = "default_refresh_millis")]
    pub refresh_millis: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica_id: None,
            lease_seconds: default_lease_seconds(),
            refresh_millis: default_refresh_millis(),
        }
    }
}

fn default_pool_size() -> usize {
    8
}
fn default_timeout_seconds() -> u64 {
    10
}
fn default_lease_seconds() -> u64 {
    6
}
fn default_refresh_millis() -> u64 {
    1000
}

impl PostgresConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("postgres.url is empty".into());
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err("postgres.pool_size must be 1 to 256".into());
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err("postgres.timeout_seconds must be 1 to 300".into());
        }
        Ok(())
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=600).contains(&self.lease_seconds) {
            return Err("cluster.lease_seconds must be 2 to 600".into());
        }
        if !(100..=60_000).contains(&self.refresh_millis) {
            return Err("cluster.refresh_millis must be 100 to 60000".into());
        }
        if let Some(id) = &self.replica_id
            && !valid_replica_id(id)
        {
            return Err(format!(
                "cluster.replica_id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(())
    }

    /// The configured replica name, else the host name (made valid), else "verifier".
    pub fn replica_name(&self) -> String {
        if let Some(id) = &self.replica_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(64)
            .collect();
        if host.is_empty() {
            "verifier".into()
        } else {
            host
        }
    }
}

fn valid_replica_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
