//! SIEM export: every state change (alerts included: untrusted, quarantined, timed out,
//! decommissioned) to a syslog receiver over TLS (RFC 5424 messages, RFC 5425 framing) and to
//! an Elastic Common Schema JSON-lines file, each in audit order, exactly once, resumed from a
//! durable cursor after reconnects and restarts. See `docs/siem.md`.
//!
//! - `config.rs`: the `[siem.syslog]` and `[siem.ecs]` tables.
//! - `cursor.rs`: the delivery loop every sink shares (cursor, audit-log pages, retries).
//! - `syslog.rs`: message formatting, escaping, framing and the TLS sink.
//! - `ecs.rs`: the ECS line and the file sink.

pub mod config;
pub mod cursor;
pub mod ecs;
pub mod syslog;

use std::sync::Arc;

use crate::service::Service;
pub use config::{EcsConfig, SiemConfig, SyslogConfig};

#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    #[error(transparent)]
    Syslog(#[from] syslog::SyslogSetupError),
    #[error(transparent)]
    Ecs(#[from] ecs::EcsSetupError),
}

/// This machine's host name for the messages' HOSTNAME and `observer.hostname`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Checks the configured sinks (certificates, key, file) and starts one export task each.
/// Must run inside the runtime; the tasks end when the service is dropped.
pub fn start(service: &Arc<Service>, config: &SiemConfig) -> Result<(), SiemError> {
    let host = hostname();
    if let Some(syslog) = &config.syslog {
        let sink = syslog::SyslogSink::new(syslog, &host)?;
        tokio::spawn(cursor::run(
            Arc::downgrade(service),
            service.subscribe(),
            sink,
        ));
    }
    if let Some(ecs) = &config.ecs {
        let sink = ecs::EcsSink::open(&ecs.path, &host)?;
        tokio::spawn(cursor::run(
            Arc::downgrade(service),
            service.subscribe(),
            sink,
        ));
    }
    Ok(())
}
