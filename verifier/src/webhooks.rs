//! Alerts to webhooks: every state change that needs a human (untrusted, quarantined, timed out,
//! decommissioned) is POSTed as JSON to each configured URL, signed with the verifier's key
//! (header `X-TrustChain-Signature`: ES256, r||s hex, over the body).
//!
//! - `client`: the HTTPS client of one webhook (reqwest over the workspace's rustls): the
//!   receiver's certificate is checked against the webhook's `ca_file` only, an optional client
//!   certificate, no redirects, no proxy; plain HTTP only where the configuration allows it.
//! - `outbox`: the delivery loop of one webhook, from its durable outbox.
//!
//! Durability. An alert is the state-change record of the audit log, written in the same
//! transaction as the new state, so it exists exactly when the change does. Each webhook keeps a
//! cursor in the state database (`Storage::webhook_cursor`): the audit sequence up to which its
//! receiver answered 2xx. Alerts after the cursor are delivered one at a time, in audit order,
//! retried with doubling delays up to `max_retry_delay_seconds`, and never given up on; the
//! cursor moves only after a 2xx. A restart resumes from the cursor, so no alert is lost while a
//! receiver is down. Delivery is at least once (a crash between the 2xx and the cursor write
//! sends that alert again): receivers drop repeats by `sequence`. The outbox cannot fill the
//! disk: it is one cursor per webhook, over records the audit log keeps anyway.

mod client;
mod outbox;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::config::WebhookConfig;
use crate::device::DeviceState;
use crate::service::{Service, StateChange};

pub use client::WebhookError;

/// Whether a change is an alert.
pub fn is_alert(change: &StateChange) -> bool {
    matches!(
        change.current,
        DeviceState::Untrusted
            | DeviceState::Quarantined
            | DeviceState::TimedOut
            | DeviceState::Decommissioned
    )
}

/// The alert body. `result_jwt` is empty for an alert sent after a restart (the audit log does
/// not hold the JWT; the device's latest result is on the Admin API).
pub fn body(change: &StateChange) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "sequence": change.sequence,
        "device_id": change.device_id,
        "previous": change.previous.name(),
        "current": change.current.name(),
        "reason": change.reason,
        "result_jwt": change.result_jwt,
        "at_unix_millis": change.at_unix_millis,
    }))
    .unwrap_or_default()
}

/// Alerts seen live, with their JWTs, for the delivery loops to send in preference to the audit
/// log's copy. Bounded: past it the oldest go (their loops send the audit log's copy).
const LIVE_KEPT: usize = 1024;

/// The configured webhooks, checked and ready (see [`Webhooks::new`]).
#[derive(Debug)]
pub struct Webhooks {
    hooks: Vec<client::Hook>,
}

impl Webhooks {
    /// Builds each webhook's client: reads its CA, client certificate and key. Any error stops
    /// the verifier's start, naming the webhook.
    pub fn new(configs: &[WebhookConfig]) -> Result<Self, WebhookError> {
        let hooks = configs
            .iter()
            .enumerate()
            .map(|(index, config)| client::Hook::new(index, config))
            .collect::<Result<_, _>>()?;
        Ok(Self { hooks })
    }

    /// Runs until the process ends: one delivery loop per webhook, so one dead receiver never
    /// delays another.
    pub async fn run(self, service: Arc<Service>) {
        if self.hooks.is_empty() {
            return;
        }
        // Subscribe before reading the head: a change is either below the head or seen live.
        let mut changes = service.subscribe();
        let (durable, _) = tokio::sync::watch::channel(service.storage().audit_head().0);
        let live: Arc<Mutex<BTreeMap<u64, StateChange>>> = Arc::default();
        for hook in self.hooks {
            tokio::spawn(outbox::run(
                service.clone(),
                hook,
                durable.subscribe(),
                live.clone(),
            ));
        }
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    // The loops read the audit log: nothing is lost but these alerts' JWTs.
                    tracing::warn!(
                        missed,
                        "webhook feed lagged; alerts follow from the audit log"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let sequence = change.sequence;
            if is_alert(&change) {
                let mut kept = live.lock().unwrap_or_else(|p| p.into_inner());
                kept.insert(sequence, change);
                while kept.len() > LIVE_KEPT {
                    kept.pop_first();
                }
            }
            // Published changes are durable, and every change before them was published or
            // abandoned: the loops may read the audit log up to here.
            durable.send_if_modified(|up_to| {
                let moved = sequence > *up_to;
                *up_to = (*up_to).max(sequence);
                moved
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_stops_the_start_naming_the_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for ca_file in [dir.path().join("absent.pem"), empty] {
            let config = WebhookConfig {
                ca_file: Some(ca_file.clone()),
                ..WebhookConfig::new("https://127.0.0.1:9/alerts")
            };
            let err = Webhooks::new(&[config]).unwrap_err().to_string();
            assert!(err.starts_with("webhooks[0]"), "{err}");
            assert!(err.contains(&ca_file.display().to_string()), "{err}");
        }
    }
}
