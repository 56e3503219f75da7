//! The `[limits]` section: the network edge's caps, from the configuration file, and the
//! [`Limits`] the server enforces. Defaults are the built-in values of earlier versions; a site
//! whose agents share one NAT address raises the per-source caps and the enrollment rate.

use std::time::Duration;

use serde::Deserialize;

/// `[limits]` as written in the file; every key optional (see `docs/verifier.example.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub handshake_timeout_seconds: u64,
    pub max_concurrent_handshakes: usize,
    pub max_handshakes_per_source: usize,
    pub max_unauthenticated_connections: usize,
    pub max_unauthenticated_per_source: usize,
    pub unauthenticated_lifetime_seconds: u64,
    pub max_streams_per_connection: u32,
    pub enrollment_burst: u32,
    pub enrollment_per_second: f64,
    pub enrollment_tracked_sources: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            handshake_timeout_seconds: limits.handshake_timeout.as_secs(),
            max_concurrent_handshakes: limits.max_concurrent_handshakes,
            max_handshakes_per_source: limits.max_handshakes_per_source,
            max_unauthenticated_connections: limits.max_unauthenticated_connections,
            max_unauthenticated_per_source: limits.max_unauthenticated_per_source,
            unauthenticated_lifetime_seconds: limits.unauthenticated_lifetime.as_secs(),
            max_streams_per_connection: limits.max_streams_per_connection,
            enrollment_burst: limits.enrollment_burst,
            enrollment_per_second: limits.enrollment_per_second,
            enrollment_tracked_sources: limits.enrollment_tracked_sources,
        }
    }
}

/// Checks one integer key against its bounds (inclusive).
fn within(key: &str, value: u64, low: u64, high: u64) -> Result<(), String> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(format!("limits.{key} must be {low} to {high}, not {value}"))
    }
}

impl LimitsConfig {
    /// The limits the server enforces, or the first key out of bounds (named). The upper
    /// bounds keep a typo from turning a cap off (each slot costs memory or a task).
    pub fn to_limits(&self) -> Result<Limits, String> {
        let size = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        within(
            "handshake_timeout_seconds",
            self.handshake_timeout_seconds,
            1,
            300,
        )?;
        within(
            "max_concurrent_handshakes",
            size(self.max_concurrent_handshakes),
            1,
            65_536,
        )?;
        within(
            "max_handshakes_per_source",
            size(self.max_handshakes_per_source),
            1,
            size(self.max_concurrent_handshakes),
        )?;
        within(
            "max_unauthenticated_connections",
            size(self.max_unauthenticated_connections),
            1,
            1_048_576,
        )?;
        within(
            "max_unauthenticated_per_source",
            size(self.max_unauthenticated_per_source),
            1,
            size(self.max_unauthenticated_connections),
        )?;
        within(
            "unauthenticated_lifetime_seconds",
            self.unauthenticated_lifetime_seconds,
            1,
            3600,
        )?;
        within(
            "max_streams_per_connection",
            u64::from(self.max_streams_per_connection),
            1,
            1024,
        )?;
        within(
            "enrollment_burst",
            u64::from(self.enrollment_burst),
            1,
            1_000_000,
        )?;
        if !(self.enrollment_per_second.is_finite()
            && (0.001..=100_000.0).contains(&self.enrollment_per_second))
        {
            return Err(format!(
                "limits.enrollment_per_second must be 0.001 to 100000, not {}",
                self.enrollment_per_second
            ));
        }
        within(
            "enrollment_tracked_sources",
            size(self.enrollment_tracked_sources),
            1,
            16_777_216,
        )?;
        Ok(Limits {
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            max_concurrent_handshakes: self.max_concurrent_handshakes,
            max_handshakes_per_source: self.max_handshakes_per_source,
            max_unauthenticated_connections: self.max_unauthenticated_connections,
            max_unauthenticated_per_source: self.max_unauthenticated_per_source,
            unauthenticated_lifetime: Duration::from_secs(self.unauthenticated_lifetime_seconds),
            max_streams_per_connection: self.max_streams_per_connection,
            enrollment_burst: self.enrollment_burst,
            enrollment_per_second: self.enrollment_per_second,
            enrollment_tracked_sources: self.enrollment_tracked_sources,
            ..Limits::default()
        })
    }
}

/// Bounds on the network edge (enforced by `server`; the session reads the evidence size).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the kernel backlog.
    pub max_concurrent_handshakes: usize,
    /// Handshakes in progress at once from one source address (IPv6: one /64); a connection
    /// beyond it is closed at once. Keeps a single flooding host to a few handshake slots.
    pub max_handshakes_per_source: usize,
    /// Connections without a client certificate (enrolling agents) open at once.
    pub max_unauthenticated_connections: usize,
    /// The same, from one source address.
    pub max_unauthenticated_per_source: usize,
    /// How long a connection without a client certificate may stay open: long enough to enroll
    /// (begin, TPM activation, complete), short enough that idle unknown clients go away.
    pub unauthenticated_lifetime: Duration,
    /// Largest gRPC message accepted on the enrollment service (built in: sized to the
    /// enrollment parsers' own bounds).
    pub max_enrollment_message: usize,
    /// Largest evidence message (boot log and IMA batch included; built in).
    pub max_evidence_message: usize,
    /// Largest Admin message (trust lists, manifests and Keylime policies are imported through
    /// it; built in).
    pub max_admin_message: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_connection: u32,
    /// Enrollment calls one source address may make in a burst (an enrollment is two calls)...
    pub enrollment_burst: u32,
    /// ...and per second after it. A whole site behind one NAT re-enrolling after a power cut
    /// gets through at this pace (agents retry with backoff); a flooding host cannot do more.
    pub enrollment_per_second: f64,
    /// Source addresses the enrollment rate limit remembers at once.
    pub enrollment_tracked_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 512,
            max_handshakes_per_source: 64,
            max_unauthenticated_connections: 1024,
            max_unauthenticated_per_source: 64,
            unauthenticated_lifetime: Duration::from_secs(120),
            max_enrollment_message: 64 * 1024,
            max_evidence_message: 8 * 1024 * 1024,
            max_admin_message: 16 * 1024 * 1024,
            max_streams_per_connection: 16,
            enrollment_burst: 60,
            enrollment_per_second: 5.0,
            enrollment_tracked_sources: 65_536,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_equal_the_built_in_limits() {
        let limits = LimitsConfig::default().to_limits().unwrap();
        let built_in = Limits::default();
        assert_eq!(limits.handshake_timeout, built_in.handshake_timeout);
        assert_eq!(
            limits.max_handshakes_per_source,
            built_in.max_handshakes_per_source
        );
        assert_eq!(limits.enrollment_burst, built_in.enrollment_burst);
    }

    #[test]
    fn a_zero_or_inverted_cap_is_refused_naming_its_key() {
        let zero = LimitsConfig {
            max_unauthenticated_per_source: 0,
            ..LimitsConfig::default()
        };
        let err = zero.to_limits().unwrap_err();
        assert!(
            err.contains("limits.max_unauthenticated_per_source"),
            "{err}"
        );
        let above_total = LimitsConfig {
            max_concurrent_handshakes: 8,
            max_handshakes_per_source: 9,
            ..LimitsConfig::default()
        };
        let err = above_total.to_limits().unwrap_err();
        assert!(err.contains("limits.max_handshakes_per_source"), "{err}");
        let nan = LimitsConfig {
            enrollment_per_second: f64::NAN,
            ..LimitsConfig::default()
        };
        assert!(
            nan.to_limits()
                .unwrap_err()
                .contains("enrollment_per_second")
        );
    }
}
