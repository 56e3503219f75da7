//! One webhook's delivery loop: the alerts after its cursor, in audit order, each until the
//! receiver answers 2xx (see the parent module on durability).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::client::Hook;
use super::{body, is_alert};
use crate::service::notifier::change_of;
use crate::service::{Service, StateChange};
use crate::storage::Storage;

const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Audit records read per step.
const BATCH: usize = 512;
/// The cursor moves past records that are not alerts without a write each time; it is written
/// at most this often for them (a restart rescans at most this much).
const SKIP_WRITE_EVERY: Duration = Duration::from_secs(10);
/// A storage error waits this long before the next try.
const STORAGE_RETRY: Duration = Duration::from_secs(1);

/// The cursor, created at the webhook's first start at the audit head (a new webhook gets the
/// alerts from now on, not the whole history).
async fn cursor(storage: &dyn Storage, url: &str) -> u64 {
    loop {
        let outcome = match storage.webhook_cursor(url) {
            Ok(Some(cursor)) => Ok(cursor),
            Ok(None) => {
                let head = storage.audit_head().0;
                storage.put_webhook_cursor(url, head).map(|()| head)
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(cursor) => return cursor,
            Err(error) => {
                tracing::error!(%url, %error, "webhook outbox unreadable; retrying");
                tokio::time::sleep(STORAGE_RETRY).await;
            }
        }
    }
}

/// The lease (a pseudo-device name no EK hash can take) whose holder delivers webhooks.
pub(crate) const DELIVERY_LEASE: &str = "~webhooks";

/// Runs until the feed of durable sequences closes.
pub(super) async fn run(
    service: Arc<Service>,
    hook: Hook,
    mut durable: watch::Receiver<u64>,
    live: Arc<Mutex<BTreeMap<u64, StateChange>>>,
) {
    let storage = service.storage().clone();
    let url = hook.config.url.clone();
    let mut cursor = cursor(storage.as_ref(), &url).await;
    let mut written = cursor;
    let mut last_write = tokio::time::Instant::now();
    tracing::info!(%url, cursor, "webhook delivery from the outbox");
    loop {
        // Replicas: one replica delivers (the holder of the delivery lease); the others follow
        // the cursor it moves, and one of them takes over if it dies.
        if !service.leads(DELIVERY_LEASE) {
            tokio::time::sleep(service.lease_period() / 3).await;
            if let Ok(Some(stored)) = storage.webhook_cursor(&url) {
                cursor = stored;
                written = stored;
            }
            continue;
        }
        let up_to = *durable.borrow_and_update();
        if cursor >= up_to {
            if durable.changed().await.is_err() {
                return;
            }
            continue;
        }
        let records = match storage.events(cursor.saturating_add(1), BATCH) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%url, %error, "reading the audit log for webhooks failed");
                tokio::time::sleep(STORAGE_RETRY).await;
                continue;
            }
        };
        // Nothing stored up to `up_to` (never expected): jump rather than spin.
        let mut next = up_to;
        for (sequence, record) in records {
            if sequence > up_to {
                break;
            }
            next = sequence;
            let Some(change) = change_of(sequence, record).filter(is_alert) else {
                continue;
            };
            // The live copy carries the result JWT; the audit log's does not.
            let change = live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&sequence)
                .cloned()
                .unwrap_or(change);
            deliver(&service, &hook, &change).await;
            // Acknowledged: only now does the alert leave the outbox.
            while let Err(error) = storage.put_webhook_cursor(&url, sequence) {
                tracing::error!(%url, sequence, %error, "webhook cursor not written; retrying");
                tokio::time::sleep(STORAGE_RETRY).await;
            }
            written = sequence;
            last_write = tokio::time::Instant::now();
        }
        cursor = next;
        if cursor > written && last_write.elapsed() >= SKIP_WRITE_EVERY {
            if storage.put_webhook_cursor(&url, cursor).is_ok() {
                written = cursor;
            }
            last_write = tokio::time::Instant::now();
        }
    }
}

/// Delivers one alert, retrying with doubling delays (capped) until a 2xx answer.
async fn deliver(service: &Service, hook: &Hook, change: &StateChange) {
    let url = &hook.config.url;
    let cap = Duration::from_secs(hook.config.max_retry_delay_seconds);
    let body = body(change);
    let mut delay = FIRST_RETRY;
    let mut attempt = 1u32;
    loop {
        let outcome = match service.sign_detached(&body) {
            Some(signature) => hook.post(body.clone(), &signature).await,
            None => Err(super::client::AttemptError::Transport(
                "the alert could not be signed".into(),
            )),
        };
        service.metrics().webhook_attempt(outcome.is_ok());
        match outcome {
            Ok(()) => {
                tracing::info!(%url, sequence = change.sequence, attempt, "alert delivered");
                return;
            }
            Err(error) => tracing::warn!(
                %url,
                sequence = change.sequence,
                attempt,
                %error,
                "alert not delivered; kept, will retry"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(cap);
        attempt = attempt.saturating_add(1);
    }
}
