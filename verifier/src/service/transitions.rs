//! The commit path of device states: one transition at a time (read the record, step the state
//! machine, write the record with its audit event), each change registered with the notifier in
//! audit order. The caller publishes a change once its writes are durable.

use std::sync::{Arc, Mutex};

use super::activity::Activity;
use super::latest_results::LatestResults;
use super::notifier::{Notifier, StateChange};
use crate::attestation::state::{self, Input, Recovery};
use crate::clock::now_unix_millis;
use crate::device::{DeviceRecord, DeviceState, EventKind, EventRecord};
use crate::storage::{Storage, StorageError};

/// Why an operator action or state transition failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    #[error("no such device")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// When a transition's writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the transition returns.
    Now,
    /// At the caller's next group commit.
    WithCommit,
}

/// What a transition reads and writes besides the device record.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    pub storage: &'a dyn Storage,
    /// Notes the time of the appraisal.
    pub activity: &'a Activity,
    /// Registers a change as written, in audit order.
    pub notifier: &'a Notifier,
    /// The result a change carries to watchers.
    pub results: &'a LatestResults,
}

/// A transition to apply.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub input: Input,
    pub reason: &'a str,
    /// See `DeviceRecord::recoverable`.
    pub policy_only: bool,
    /// With [`Input::VerifierRestarted`]: when the device must have passed again (Unix
    /// seconds), kept as `DeviceRecord::fresh_evidence_due_unix`.
    pub fresh_evidence_due_unix: Option<i64>,
    pub durability: Durability,
}

/// A transition applied.
#[derive(Debug)]
pub struct Applied {
    pub record: Arc<DeviceRecord>,
    /// The change of state, written and registered, to publish once durable.
    pub change: Option<StateChange>,
    /// Whether the state changed.
    pub changed: bool,
}

/// Serialises read-modify-write of device states, so two transitions never lose one another.
#[derive(Debug, Default)]
pub struct Transitions {
    lock: Mutex<()>,
}

impl Transitions {
    /// Applies the request's input to a device's state; writes the record (and the change's
    /// audit record) when anything changed.
    pub fn apply(
        &self,
        parts: Parts<'_>,
        device_id: &str,
        request: Request<'_>,
    ) -> Result<Applied, ActionError> {
        let Request {
            input,
            reason,
            policy_only,
            fresh_evidence_due_unix,
            durability,
        } = request;
        let changed;
        let mut change = None;
        let record = {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            // Shared, not copied: most appraisals change nothing, and copy nothing.
            let shared = parts
                .storage
                .device_shared(device_id)?
                .ok_or(ActionError::NotFound)?;
            let next = state::step(
                shared.state,
                input,
                Recovery {
                    may_recover: shared.recoverable,
                },
            );
            changed = next != shared.state;
            let recoverable = match input {
                // An integrity failure on top of a policy one makes the whole sticky; a policy
                // failure never softens an earlier integrity one.
                Input::AppraisalFailed => {
                    policy_only && (shared.state != DeviceState::Untrusted || shared.recoverable)
                }
                Input::AppraisalPassed | Input::OperatorCleared => false,
                _ => shared.recoverable,
            };
            let recoverable_changed = shared.recoverable != recoverable;
            // The restart's deadline holds only while the device waits, enrolled, for a fresh
            // pass: any change of state ends the wait.
            let due = match input {
                Input::VerifierRestarted if next == DeviceState::Enrolled => {
                    fresh_evidence_due_unix
                }
                _ if changed => None,
                _ => shared.fresh_evidence_due_unix,
            };
            let due_changed = shared.fresh_evidence_due_unix != due;
            let now = now_unix_millis();
            let previous = shared.state;
            parts.activity.appraised(device_id, now / 1000);
            if !changed && !recoverable_changed && !due_changed {
                // Nothing changed: nothing to write (the time of the appraisal is kept in
                // memory, `last_appraisal_unix`); a write per appraisal was a third of the
                // storage load.
                shared
            } else {
                let mut device = DeviceRecord::clone(&shared);
                device.recoverable = recoverable;
                device.fresh_evidence_due_unix = due;
                if changed {
                    device.state_changed_at_unix = now / 1000;
                    device.state = next;
                    device.state_reason = reason.to_string();
                    // The new state and its audit record are written in one transaction: a crash
                    // or a failed write never leaves one without the other, and watchers hear only
                    // of a change that is on disk (the caller publishes it once it is).
                    let event = EventRecord {
                        at_unix_millis: now,
                        kind: EventKind::StateChanged,
                        device_id: device_id.to_string(),
                        detail: super::notifier::change_detail(previous, next, reason),
                    };
                    let sequence = match durability {
                        Durability::Now => parts.storage.put_device_with_event(&device, &event)?,
                        Durability::WithCommit => parts
                            .storage
                            .put_device_with_event_deferred(&device, &event)?,
                    };
                    tracing::info!(device = %device_id, from = previous.name(), to = next.name(), reason = %crate::untrusted_text::Escaped(reason), "state changed");
                    // Held under the transitions lock: changes are registered in audit order.
                    parts.notifier.written(sequence);
                    change = Some(StateChange {
                        sequence,
                        device_id: device_id.to_string(),
                        previous,
                        current: next,
                        reason: reason.to_string(),
                        result_jwt: parts.results.last_result(device_id).unwrap_or_default(),
                        at_unix_millis: now,
                    });
                } else {
                    match durability {
                        Durability::Now => parts.storage.put_device(&device)?,
                        Durability::WithCommit => parts.storage.put_device_deferred(&device)?,
                    }
                }
                Arc::new(device)
            }
        };
        Ok(Applied {
            record,
            change,
            changed,
        })
    }
}
