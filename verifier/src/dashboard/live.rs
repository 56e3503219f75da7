//! Live updates: server-sent events from the notifier's watch stream, one event per state
//! change (never the fleet). A viewer too slow for the stream gets `resync` and re-reads the
//! page it shows; the audit log stays the record. The stream ends at the first change after
//! its viewer's certificate is revoked (or the revocations cannot be read): a revoked viewer
//! does not go on watching on a stream opened before.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::Peer;
use crate::service::{Service, StateChange};

fn change_event(change: &StateChange) -> Event {
    let data = json!({
        "sequence": change.sequence,
        "device_id": change.device_id,
        "previous": change.previous.name(),
        "current": change.current.name(),
        "reason": change.reason,
        "at_unix_millis": change.at_unix_millis,
    });
    Event::default()
        .event("change")
        .id(change.sequence.to_string())
        .data(data.to_string())
}

/// `GET /api/events`: `change` events as devices change state, `resync` after a gap.
pub async fn events(
    State(service): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = service.subscribe();
    // The gate admitted this peer, so it has an identity; without one the stream ends at once.
    let serial = peer.identity.map(|id| id.serial_hex.clone());
    let stream = futures::stream::unfold(live, move |mut live| {
        let service = service.clone();
        let serial = serial.clone();
        async move {
            let event = match live.recv().await {
                Ok(change) => change_event(&change),
                Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                Err(RecvError::Closed) => return None,
            };
            let still_admitted = serial
                .as_deref()
                .is_some_and(|serial| matches!(service.ca().operator_revoked(serial), Ok(false)));
            still_admitted.then_some((Ok(event), live))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
