//! Live updates: server-sent events from the notifier's watch stream, one event per state
//! change (never the fleet). A viewer too slow for the stream gets `resync` and re-reads the
//! page it shows; the audit log stays the record.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

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
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let live = service.subscribe();
    let stream = futures::stream::unfold(live, |mut live| async move {
        let event = match live.recv().await {
            Ok(change) => change_event(&change),
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), live))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
