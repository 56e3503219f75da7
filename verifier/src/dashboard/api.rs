//! The dashboard's JSON endpoints (GET only). Tables are paged and filtered here, so a page
//! carries at most [`MAX_PAGE`] rows whatever the fleet's size; history and alerts are read from
//! the newest [`EVENT_WINDOW`] audit records.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::device::{DeviceRecord, DeviceState, EventKind, EventRecord};
use crate::service::Service;

/// The most rows one page carries.
pub const MAX_PAGE: usize = 200;
const DEFAULT_PAGE: usize = 50;
/// How far back (audit records) device histories and alerts reach.
pub const EVENT_WINDOW: u64 = 20_000;
/// The most history entries a device page shows.
const MAX_HISTORY: usize = 200;

pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/api/fleet", get(fleet))
        .route("/api/devices/{id}", get(device))
        .route("/api/alerts", get(alerts))
        .route("/api/trust", get(trust))
        .route("/api/audit", get(audit))
        .route("/api/audit/export", get(audit_export))
        .route("/api/audit/verify", get(audit_verify))
}

fn unavailable(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "dashboard read failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the verifier's state cannot be read",
    )
        .into_response()
}

/// Runs a storage read off the async threads.
async fn blocking<T: Send + 'static>(
    service: &Arc<Service>,
    read: impl FnOnce(&Service) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let service = service.clone();
    match tokio::task::spawn_blocking(move || read(&service)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(unavailable(error)),
        Err(error) => Err(unavailable(error)),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct FleetQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// A state name (`trusted`, `untrusted`, ...); empty: all.
    #[serde(default)]
    state: String,
    #[serde(default)]
    tier: String,
    /// A substring of the device id, hostname or reason (case-insensitive).
    #[serde(default)]
    q: String,
}

#[derive(Debug, Serialize)]
struct Row {
    device_id: String,
    hostname: String,
    state: &'static str,
    tier: String,
    last_appraisal_unix: i64,
    reason: String,
}

fn row(service: &Service, device: &DeviceRecord) -> Row {
    Row {
        device_id: device.device_id.clone(),
        hostname: device.facts.hostname.clone(),
        state: device.state.name(),
        tier: service.assigned_tier(device),
        last_appraisal_unix: service.last_appraisal_unix(device),
        reason: device.state_reason.clone(),
    }
}

/// The fleet: counts per state and tier over every device, and one page of the matching ones.
async fn fleet(State(service): State<Arc<Service>>, Query(query): Query<FleetQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = blocking(&service, move |service| {
        let devices = service.storage().devices().map_err(|e| e.to_string())?;
        let needle = query.q.to_lowercase();
        let mut by_state: BTreeMap<&'static str, u64> =
            DeviceState::ALL.iter().map(|s| (s.name(), 0)).collect();
        let mut by_tier: BTreeMap<String, u64> = BTreeMap::new();
        let mut matching = 0usize;
        let mut rows = Vec::new();
        for device in &devices {
            let row = row(service, device);
            *by_state.entry(row.state).or_default() += 1;
            *by_tier.entry(row.tier.clone()).or_default() += 1;
            let wanted = (query.state.is_empty() || query.state == row.state)
                && (query.tier.is_empty() || query.tier == row.tier)
                && (needle.is_empty()
                    || [&row.device_id, &row.hostname, &row.reason]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&needle)));
            if wanted {
                if matching >= query.offset && rows.len() < limit {
                    rows.push(row);
                }
                matching += 1;
            }
        }
        Ok(json!({
            "total": devices.len(),
            "matching": matching,
            "offset": query.offset,
            "limit": limit,
            "by_state": by_state,
            "by_tier": by_tier,
            "devices": rows,
        }))
    })
    .await;
    match page {
        Ok(page) => Json(page).into_response(),
        Err(response) => response,
    }
}

fn event_json(sequence: u64, event: &EventRecord) -> Value {
    json!({
        "sequence": sequence,
        "at_unix_millis": event.at_unix_millis,
        "kind": event_kind(event.kind),
        "device_id": event.device_id,
        "detail": event.detail,
    })
}

fn event_kind(kind: EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The newest [`EVENT_WINDOW`] audit events, oldest first.
fn recent_events(service: &Service) -> Result<Vec<(u64, EventRecord)>, String> {
    let (head, _) = service.storage().audit_head();
    let from = head.saturating_sub(EVENT_WINDOW) + 1;
    let window = usize::try_from(EVENT_WINDOW).unwrap_or(usize::MAX);
    service
        .storage()
        .events(from, window)
        .map_err(|e| e.to_string())
}

/// One device: identity, state history, the last failed verdict and what it rested on.
async fn device(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    let detail = blocking(&service, move |service| {
        let Some(device) = service.storage().device(&id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let mut history: Vec<Value> = recent_events(service)?
            .iter()
            .rev()
            .filter(|(_, e)| e.device_id == device.device_id)
            .take(MAX_HISTORY)
            .map(|(sequence, e)| event_json(*sequence, e))
            .collect();
        history.reverse();
        let snapshot = service.trust().current();
        let failed = match device.state {
            DeviceState::Untrusted | DeviceState::Quarantined => {
                service.last_failed_verdict(&device.device_id)
            }
            _ => None,
        };
        // The basis of the failed verdict, or what an appraisal rests on now.
        let basis = match &failed {
            Some(verdict) => verdict.basis.clone(),
            None => {
                let now = crate::clock::now_unix_millis() / 1000;
                snapshot.basis(snapshot.governance(&device, now).as_ref())
            }
        };
        Ok(Some(json!({
            "summary": row(service, &device),
            "identity": {
                "ek_kind": format!("{:?}", device.ek_kind),
                "ek_certificate_issuer": device.ek_certificate_issuer,
                "ek_certificate_serial_hex": device.ek_certificate_serial_hex,
                "ak_name_hex": hex::encode(&device.ak_name),
                "ak_certificate_sha256": sha256_hex(&device.ak_certificate),
                "ak_rotations": device.ak_rotations,
                "client_certificate_serial_hex": device.client_certificate_serial_hex,
                "enrolled_at_unix": device.enrolled_at_unix,
                "model": device.facts.model,
                "firmware_version": device.facts.firmware_version,
                "agent_version": device.facts.agent_version,
            },
            "history": history,
            "failures": failed.as_ref().map(|v| v.failures().to_vec()).unwrap_or_default(),
            "basis": basis,
        })))
    })
    .await;
    match detail {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such device").into_response(),
        Err(response) => response,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// For the audit log: the first sequence (default: the newest page).
    from: Option<u64>,
}

/// Alerts, appraisal failures and refused enrollments, newest first.
async fn alerts(State(service): State<Arc<Service>>, Query(query): Query<PageQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = blocking(&service, move |service| {
        let alerts: Vec<(u64, EventRecord)> = recent_events(service)?
            .into_iter()
            .rev()
            .filter(|(_, e)| {
                matches!(
                    e.kind,
                    EventKind::Alert | EventKind::AppraisalFailed | EventKind::EnrollmentRefused
                )
            })
            .collect();
        let rows: Vec<Value> = alerts
            .iter()
            .skip(query.offset)
            .take(limit)
            .map(|(sequence, e)| event_json(*sequence, e))
            .collect();
        Ok(json!({"matching": alerts.len(), "offset": query.offset, "limit": limit, "alerts": rows}))
    })
    .await;
    match page {
        Ok(page) => Json(page).into_response(),
        Err(response) => response,
    }
}

/// The active trust documents and their signers.
async fn trust(State(service): State<Arc<Service>>) -> Response {
    let snapshot = service.trust().current();
    let list = snapshot.trust_list.as_ref().map(|list| {
        json!({
            "version": list.version,
            "issued_at": list.issued_at,
            "maker_cas": list.maker_cas.len(),
            "admitted_devices": list.devices.len(),
            "manifest_signers": list.manifest_signers.iter().map(|s| json!({
                "name": s.name, "public_key": s.public_key,
            })).collect::<Vec<_>>(),
            "policy_signers": list.policy_signers.iter().map(|s| json!({
                "name": s.name, "public_key": s.public_key,
            })).collect::<Vec<_>>(),
        })
    });
    let manifests: Vec<Value> = snapshot
        .manifest_signers()
        .into_iter()
        .map(|(id, signer)| match signer {
            Ok(signer) => json!({"id": id, "signer": signer, "usable": true, "note": ""}),
            Err(why) => json!({"id": id, "signer": "", "usable": false, "note": why}),
        })
        .collect();
    let policies: Vec<Value> = snapshot
        .policies()
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version, "description": p.description}))
        .collect();
    Json(json!({
        "fingerprint": snapshot.fingerprint,
        "trust_list": list,
        "manifests": manifests,
        "policies": policies,
    }))
    .into_response()
}

/// One page of the audit log (newest page by default) and the chain's head.
async fn audit(State(service): State<Arc<Service>>, Query(query): Query<PageQuery>) -> Response {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = blocking(&service, move |service| {
        let (head, hash) = service.storage().audit_head();
        let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
        let from = query
            .from
            .unwrap_or_else(|| head.saturating_sub(limit_u64) + 1)
            .max(1);
        let events = service
            .storage()
            .events(from, limit)
            .map_err(|e| e.to_string())?;
        let rows: Vec<Value> = events.iter().map(|(s, e)| event_json(*s, e)).collect();
        Ok(json!({
            "head_sequence": head,
            "head_hash": hex::encode(hash),
            "from": from,
            "limit": limit,
            "records": rows,
            "signing_public_key": service.signing_public_hex(),
        }))
    })
    .await;
    match page {
        Ok(page) => Json(page).into_response(),
        Err(response) => response,
    }
}

fn export_text(service: &Service, from: u64) -> Result<String, String> {
    let lines = service.export_audit(from).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(&line).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    Ok(text)
}

/// The signed export from `from` to the head (what `trustchain audit export` writes; verify it
/// offline with `trustchain audit verify`).
async fn audit_export(
    State(service): State<Arc<Service>>,
    Query(query): Query<PageQuery>,
) -> Response {
    let from = query.from.unwrap_or(1).max(1);
    match blocking(&service, move |service| export_text(service, from)).await {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"trustchain-audit-from-{from}.jsonl\""),
                ),
            ],
            text,
        )
            .into_response(),
        Err(response) => response,
    }
}

/// Whether the chain from `from` to the head verifies under the verifier's signing key.
async fn audit_verify(
    State(service): State<Arc<Service>>,
    Query(query): Query<PageQuery>,
) -> Response {
    let from = query.from.unwrap_or(1).max(1);
    let status = blocking(&service, move |service| {
        let text = export_text(service, from)?;
        Ok(
            match crate::audit::verify_export(&text, &service.signing_public_hex()) {
                Ok(v) => json!({
                    "intact": true,
                    "records": v.records,
                    "first_sequence": v.first_sequence,
                    "last_sequence": v.last_sequence,
                    "checkpoints": v.checkpoints,
                    "from_chain_start": v.from_chain_start(),
                    "head": v.head,
                }),
                Err(error) => json!({"intact": false, "error": error.to_string()}),
            },
        )
    })
    .await;
    match status {
        Ok(status) => Json(status).into_response(),
        Err(response) => response,
    }
}
