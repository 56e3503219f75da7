//! Liveness across a restart: trust does not survive one (fail closed across crashes), and a
//! device's timeout window carries over from the durable time of its last pass.

use std::time::Duration;

use super::transitions::Durability;
use super::{Service, StartError, now_unix_millis, schedule};
use crate::attestation::state::Input;
use crate::device::{DeviceRecord, DeviceState};

impl Service {
    /// A trusted state rests on a quote this process checked: after a restart, every trusted
    /// device goes back to enrolled until a fresh challenge passes (fail closed across crashes),
    /// and its liveness carries over from the durable time of its last pass: it times out at
    /// that pass plus its timeout window, at once if that is past, and never later than a full
    /// window from this start (a wall clock set back between processes cannot stretch it). A
    /// device still waiting from an earlier restart keeps its durable deadline.
    pub(super) fn liveness_across_restart(&self) -> Result<(), StartError> {
        let now = now_unix_millis() / 1000;
        let missed = self.attestation.timeout_after_missed_intervals.max(1);
        for device in self.storage.devices_without_live_lease()? {
            if device.state != DeviceState::Trusted && !schedule::awaits_fresh_pass(&device) {
                continue;
            }
            // Replicas: a device another live replica attests is its business; one no live
            // replica holds is taken for the writes below, and let go.
            let Some(release) = self.borrow_lease(&device.device_id) else {
                continue;
            };
            let outcome = self.restart_liveness_of(&device, now, missed);
            if release {
                self.unclaim(&device.device_id);
            }
            outcome?;
        }
        Ok(())
    }

    fn restart_liveness_of(
        &self,
        device: &DeviceRecord,
        now: i64,
        missed: u32,
    ) -> Result<(), StartError> {
        let allowance = self.interval_for(device) * missed;
        let due = match device.state {
            DeviceState::Trusted => {
                let last_pass = self.durable_last_pass_unix(&device.device_id);
                let window = i64::try_from(allowance.as_secs()).unwrap_or(i64::MAX);
                last_pass.saturating_add(window)
            }
            _ if schedule::awaits_fresh_pass(device) => {
                device.fresh_evidence_due_unix.unwrap_or(now)
            }
            _ => return Ok(()),
        };
        if due <= now {
            self.transition(
                &device.device_id,
                Input::SilentAfterRestart,
                "no valid answer within the timeout (its window ran out across a verifier \
                 restart)",
            )?;
            return Ok(());
        }
        if device.state == DeviceState::Trusted {
            let (_, change) = self.apply(
                &device.device_id,
                Input::VerifierRestarted,
                "verifier restarted: awaiting a fresh appraisal",
                false,
                Some(due),
                Durability::Now,
            )?;
            if let Some(change) = change {
                self.publish(change);
            }
        }
        let remaining = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
        self.activity
            .await_fresh_pass(&device.device_id, remaining.min(allowance));
        Ok(())
    }

    /// When the device last passed (Unix seconds), as its saved appraisal state says; 0 (long
    /// ago) when unknown, so a device without one times out at once rather than never.
    fn durable_last_pass_unix(&self, device_id: &str) -> i64 {
        self.storage
            .appraisal_state(device_id)
            .ok()
            .flatten()
            .and_then(|bytes| {
                serde_json::from_slice::<crate::attestation::inputs::AppraisalState>(&bytes).ok()
            })
            .map_or(0, |state| state.passed_at_unix)
    }
}
