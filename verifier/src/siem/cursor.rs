//! Delivery in audit order, exactly once per sink across reconnects and restarts.
//!
//! A sink's cursor (the last audit sequence it delivered) is kept in the store. The export reads
//! the audit log after it, one page at a time, hands each state change to the sink, and moves
//! the cursor once the sink reports the change delivered. Live changes from the notifier only
//! say how far the log may be read (a published change is durable, and every change before it
//! is published or abandoned); the content always comes from the log, so a lagging or restarted
//! export sends exactly what a watcher resuming from the log would see. A sink that fails is
//! retried with capped backoff, from the same change: nothing is skipped.
//!
//! The export holds the service weakly and takes the store only between awaits: it never keeps
//! a stopped verifier's database open.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::service::notifier::backlog_page;
use crate::service::{Service, StateChange};
use crate::storage::Storage;

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Audit records read per page, and state changes held in memory at most.
const PAGE: usize = 512;

/// Where state changes go.
pub trait Sink: Send + 'static {
    /// The cursor's name in the store.
    fn name(&self) -> &'static str;
    /// The last sequence the sink itself shows delivered (the ECS file's last line), if it can
    /// tell: it covers a crash between a delivery and the cursor's write.
    fn delivered_up_to(&self) -> u64 {
        0
    }
    /// Delivers one change; an error means it must be tried again.
    fn deliver(&mut self, change: &StateChange) -> impl Future<Output = Result<(), String>> + Send;
}

fn storage(service: &Weak<Service>) -> Option<Arc<dyn Storage>> {
    service.upgrade().map(|s| s.storage().clone())
}

/// Runs one sink until the service is gone. `changes` was subscribed before the start position
/// was read, so no change falls between the two.
pub async fn run<S: Sink>(
    service: Weak<Service>,
    mut changes: broadcast::Receiver<StateChange>,
    mut sink: S,
) {
    let name = sink.name();
    let mut delay = FIRST_RETRY;
    // Start: the stored cursor (or what the sink shows), and the log as it is now.
    let (mut cursor, mut limit) = loop {
        let Some(store) = storage(&service) else {
            return;
        };
        match store.export_cursor(name) {
            Ok(stored) => break (stored.max(sink.delivered_up_to()), store.audit_head().0),
            Err(error) => {
                drop(store);
                tracing::error!(sink = name, %error, "reading the export cursor; will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
            }
        }
    };
    let mut scanned = cursor;
    let mut queue: VecDeque<StateChange> = VecDeque::new();
    tracing::info!(sink = name, cursor, "SIEM export started");
    loop {
        // Replicas: one replica exports (the holder of the sink's lease); the others follow
        // the cursor it moves, and one of them takes over if it dies.
        let Some(leader) = service.upgrade() else {
            return;
        };
        if !leader.leads(&format!("~siem-{name}")) {
            let wait = leader.lease_period() / 3;
            if let Ok(stored) = leader.storage().export_cursor(name) {
                scanned = scanned.max(stored);
                queue.retain(|c| c.sequence > stored);
                limit = limit.max(leader.storage().audit_head().0);
            }
            drop(leader);
            tokio::time::sleep(wait).await;
            continue;
        }
        drop(leader);
        // Read what the log holds up to `limit`, a page at a time.
        let mut unreadable = false;
        while queue.len() < PAGE && scanned < limit {
            let Some(store) = storage(&service) else {
                return;
            };
            let page = backlog_page(store.as_ref(), scanned + 1, PAGE);
            drop(store);
            match page {
                Ok((found, last)) => {
                    queue.extend(found.into_iter().filter(|c| c.sequence <= limit));
                    scanned = last.map_or(limit, |last| last.min(limit));
                }
                Err(error) => {
                    tracing::error!(sink = name, %error, "reading the audit log; will retry");
                    unreadable = true;
                    break;
                }
            }
        }
        // Deliver in order; a failure retries the same change after a pause.
        let mut failed = false;
        while let Some(change) = queue.front() {
            if let Err(error) = sink.deliver(change).await {
                tracing::warn!(sink = name, sequence = change.sequence, %error,
                    "SIEM delivery failed; will retry");
                failed = true;
                break;
            }
            delay = FIRST_RETRY;
            cursor = change.sequence;
            queue.pop_front();
            let Some(store) = storage(&service) else {
                return;
            };
            // The change is out: a failed cursor write only risks sending it again after a
            // restart, never losing it.
            if let Err(error) = store.put_export_cursor(name, cursor) {
                tracing::error!(sink = name, cursor, %error, "storing the export cursor");
            }
        }
        if failed || unreadable {
            if service.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
            continue;
        }
        if scanned < limit {
            continue;
        }
        match changes.recv().await {
            Ok(change) => limit = limit.max(change.sequence),
            Err(broadcast::error::RecvError::Lagged(_)) => match storage(&service) {
                Some(store) => limit = limit.max(store.audit_head().0),
                None => return,
            },
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
