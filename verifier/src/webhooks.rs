//! Alerts to webhooks: every state change that needs a human (untrusted, quarantined, timed out,
//! decommissioned) is POSTed as JSON to each configured URL, signed with the verifier's key
//! (header `X-TrustChain-Signature`: ES256, r||s hex, over the body), and retried with
//! exponential backoff until the receiver takes it or the retry window ends.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;

use crate::config::WebhookConfig;
use crate::device::DeviceState;
use crate::service::{Service, StateChange};

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The alert body.
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

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("bad webhook URL {0:?}")]
    Url(String),
    #[error("{0}")]
    Transport(String),
    #[error("receiver answered {0}")]
    Status(u16),
}

async fn post(url: &str, body: Vec<u8>, signature: &str) -> Result<(), DeliveryError> {
    let uri: hyper::Uri = url.parse().map_err(|_| DeliveryError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(DeliveryError::Url(url.into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| DeliveryError::Url(url.into()))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| DeliveryError::Transport(e.to_string()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
    tokio::spawn(connection);
    let request = hyper::Request::post(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", format!("{host}:{port}"))
        .header("content-type", "application/json")
        .header("x-trustchain-signature", signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| DeliveryError::Transport(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| DeliveryError::Transport(e.to_string()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(response.status().as_u16()))
    }
}

/// Delivers one alert to one webhook, retrying until it is taken or the window ends.
async fn deliver(webhook: WebhookConfig, body: Vec<u8>, signature: String) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(webhook.give_up_after_seconds);
    let mut delay = FIRST_RETRY;
    let mut attempt = 1u32;
    loop {
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            post(&webhook.url, body.clone(), &signature),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(url = %webhook.url, attempt, "alert delivered");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(url = %webhook.url, attempt, %error, "alert not delivered; will retry")
            }
            Err(_) => {
                tracing::warn!(url = %webhook.url, attempt, "alert delivery timed out; will retry")
            }
        }
        if tokio::time::Instant::now() + delay > give_up {
            tracing::error!(url = %webhook.url, attempt, "giving up on an alert");
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
        attempt += 1;
    }
}

/// Runs until the process ends: each alert goes to every webhook, each delivery on its own task
/// so one dead receiver never delays another.
pub async fn run(service: Arc<Service>, webhooks: Vec<WebhookConfig>) {
    if webhooks.is_empty() {
        return;
    }
    let mut changes = service.subscribe();
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(missed, "alert queue overflowed; see the audit log");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !is_alert(&change) {
            continue;
        }
        let body = body(&change);
        let signature = match service.sign_detached(&body) {
            Some(signature) => signature,
            None => continue,
        };
        for webhook in &webhooks {
            tokio::spawn(deliver(webhook.clone(), body.clone(), signature.clone()));
        }
    }
}
