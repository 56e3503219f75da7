//! Each device's latest appraisal result (EAR), signed lazily, and its last failed verdict:
//! what operators, relying parties and state changes read about an appraisal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::audit::SigningKey;
use crate::clock::now_unix_millis;
use crate::device::{EventKind, EventRecord};
use crate::results::ResultContext;
use crate::storage::Storage;
use crate::verdict::Verdict;

/// A device's latest appraisal result. Every appraisal produces one; it is signed when it first
/// leaves the verifier (an operator's or relying party's request, a state change for watchers)
/// or when it must be kept (a failure, a change of state). Signing and storing every one of
/// thousands of routine passes a second that nobody reads was a tenth of the verifier's CPU and
/// its largest write in the load generator's profile.
#[derive(Debug, Clone)]
enum LatestResult {
    /// The EAR claims as JSON, not yet signed.
    Claims(Arc<[u8]>),
    /// The signed EAR (JWT).
    Signed(Arc<str>),
}

/// The latest results, in memory, over the ones kept on disk.
#[derive(Debug)]
pub struct LatestResults {
    storage: Arc<dyn Storage>,
    signing_key: Arc<SigningKey>,
    entries: Mutex<HashMap<String, LatestResult>>,
}

impl LatestResults {
    pub fn new(storage: Arc<dyn Storage>, signing_key: Arc<SigningKey>) -> Self {
        Self {
            storage,
            signing_key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Records an appraisal's result (EAR claims) as the device's latest. `keep`: sign and store
    /// it with the appraisal's writes (failures, changes of state); else it is signed when first
    /// asked for, and a restart forgets it (the device must pass a fresh appraisal after one).
    pub fn record_result(&self, result: &ResultContext<'_>, verdict: &Verdict, keep: bool) {
        let (device_id, issued_at) = (result.device_id, now_unix_millis() / 1000);
        let claims = crate::results::ear_claims(result, verdict, issued_at);
        let claims = match serde_json::to_vec(&claims) {
            Ok(claims) => claims,
            Err(error) => {
                tracing::error!(%error, "cannot encode the result");
                return;
            }
        };
        let latest = if keep {
            match crate::results::sign_jwt(&self.signing_key, &claims) {
                Ok(jwt) => {
                    if let Err(error) = self.storage.put_appraisal_state_deferred(
                        &format!("result/{device_id}"),
                        jwt.as_bytes(),
                    ) {
                        tracing::error!(%error, "cannot keep the signed result");
                    }
                    LatestResult::Signed(jwt.into())
                }
                Err(error) => {
                    tracing::error!(%error, "cannot sign the result");
                    return;
                }
            }
        } else {
            LatestResult::Claims(claims.into())
        };
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_string(), latest);
    }

    /// The device's latest result, signed (signing it now if it was not yet). Before a
    /// device's first appraisal since this process started: the last one kept on disk.
    pub fn last_result(&self, device_id: &str) -> Option<String> {
        let latest = self
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .cloned();
        match latest {
            Some(LatestResult::Signed(jwt)) => Some(jwt.to_string()),
            Some(LatestResult::Claims(claims)) => {
                let jwt: Arc<str> = match crate::results::sign_jwt(&self.signing_key, &claims) {
                    Ok(jwt) => jwt.into(),
                    Err(error) => {
                        tracing::error!(%error, "cannot sign the result");
                        return None;
                    }
                };
                let mut results = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                // Keep the signature unless a newer result arrived meanwhile.
                if let Some(entry) = results.get_mut(device_id)
                    && matches!(entry, LatestResult::Claims(c) if Arc::ptr_eq(c, &claims))
                {
                    *entry = LatestResult::Signed(jwt.clone());
                }
                Some(jwt.to_string())
            }
            None => {
                let bytes = self
                    .storage
                    .appraisal_state(&format!("result/{device_id}"))
                    .ok()??;
                String::from_utf8(bytes).ok()
            }
        }
    }

    /// Records a failed appraisal with every failed rule, and keeps the verdict for operators.
    pub fn record_failure(&self, device_id: &str, verdict: &Verdict) {
        // Replicas: a replica that lost the device's lease (paused, cut off) records nothing
        // for it; the replica that holds it appraises afresh.
        if !self.storage.holds_lease(device_id) {
            tracing::warn!(device = %device_id, "failed appraisal not recorded: lease lost");
            return;
        }
        let event = EventRecord {
            at_unix_millis: now_unix_millis(),
            kind: EventKind::AppraisalFailed,
            device_id: device_id.to_string(),
            detail: verdict.summary(),
        };
        if let Err(error) = self.storage.append_event(&event) {
            tracing::error!(%error, "cannot record a failed appraisal");
        }
        if let Ok(bytes) = serde_json::to_vec(verdict)
            && let Err(error) = self
                .storage
                .put_appraisal_state_deferred(&format!("verdict/{device_id}"), &bytes)
        {
            tracing::error!(%error, "cannot keep the failed verdict");
        }
    }

    /// The last failed verdict of a device, if any.
    pub fn last_failed_verdict(&self, device_id: &str) -> Option<Verdict> {
        let bytes = self
            .storage
            .appraisal_state(&format!("verdict/{device_id}"))
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }
}
