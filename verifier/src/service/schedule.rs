//! The schedule of challenges: how often a device is challenged, and the watchdog that times
//! out a trusted device whose answers stopped.

use std::time::{Duration, Instant};

use super::activity::Activity;
use crate::attestation::state::Input;
use crate::config::AttestationConfig;
use crate::device::{DeviceRecord, DeviceState};
use crate::reference::trust::TrustStore;
use crate::storage::Storage;

/// The challenge interval: the governing policy's tier, else the configuration's table by
/// the class the trust list assigns (never the class the agent claims).
pub fn interval_for(
    trust: &TrustStore,
    attestation: &AttestationConfig,
    device: &DeviceRecord,
) -> Duration {
    let snapshot = trust.current();
    match snapshot.policy_for(device).map(|p| p.tier.resolve()) {
        Some(tier) => Duration::from_secs(tier.interval_seconds),
        None => attestation.interval_for(snapshot.assigned_class(device).unwrap_or_default()),
    }
}

/// Times out trusted devices that have not passed an appraisal for the configured number of
/// intervals, whether or not they hold a stream, and devices trusted before the restart that
/// gave no fresh pass by their deadline. Runs until the process ends; `time_out` applies the
/// timeout (`Input::Silent` or `Input::SilentAfterRestart`) to one device.
///
/// Trust does not survive a restart (`Service::start` forgets it), so every trusted
/// device passed in this process and has a last pass in [`Activity`], and every device waiting
/// for a fresh pass has its deadline there: each pass the watchdog looks only at entries that
/// ran out, then checks them against their record and current interval. Listing every device
/// record twice a second instead cost a fifth of a core at 10,000 devices. A full listing every
/// minute is the backstop.
pub async fn watchdog(
    storage: &dyn Storage,
    activity: &Activity,
    missed_intervals: u32,
    interval_for: impl Fn(&DeviceRecord) -> Duration,
    time_out: impl Fn(&str, Input),
) {
    const FULL_LISTING_EVERY: u64 = 120;
    let missed = missed_intervals.max(1);
    let mut round = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        round += 1;
        let due: Vec<String> = if round.is_multiple_of(FULL_LISTING_EVERY) {
            // Devices attested by other live replicas are theirs to time out (sled: all).
            let Ok(devices) = storage.devices_without_live_lease() else {
                continue;
            };
            devices
                .into_iter()
                .filter(|d| d.state == DeviceState::Trusted || awaits_fresh_pass(d))
                .map(|d| d.device_id)
                .collect()
        } else {
            activity.due(Instant::now())
        };
        for device_id in due {
            let Ok(Some(device)) = storage.device(&device_id) else {
                continue;
            };
            if awaits_fresh_pass(&device) {
                // Its deadline in this process, else (never registered) the durable one.
                let ran_out = match activity.fresh_pass_due(&device_id) {
                    Some(deadline) => deadline <= Instant::now(),
                    None => device
                        .fresh_evidence_due_unix
                        .is_some_and(|due| due <= crate::clock::now_unix_millis() / 1000),
                };
                if ran_out {
                    time_out(&device_id, Input::SilentAfterRestart);
                    activity.forget_fresh_pass_due(&device_id);
                }
                continue;
            }
            activity.forget_fresh_pass_due(&device_id);
            let allowance = interval_for(&device) * missed;
            if device.state != DeviceState::Trusted {
                // Nothing to time out until it passes again (which notes it anew).
                activity.forget_pass(&device_id);
                continue;
            }
            let last = activity.last_pass(&device_id, allowance);
            if last.elapsed() > allowance {
                time_out(&device_id, Input::Silent);
            }
        }
    }
}

/// An enrolled device that was trusted before the restart and has not passed since.
pub fn awaits_fresh_pass(device: &DeviceRecord) -> bool {
    device.state == DeviceState::Enrolled && device.fresh_evidence_due_unix.is_some()
}

/// Whether a device has gone silent: timed out, or not heard from within its timeout window
/// (`allowance`) in this process (since the start when never). Quarantined and decommissioned
/// devices are cut off, not silent.
pub fn is_silent(device: &DeviceRecord, activity: &Activity, allowance: Duration) -> bool {
    match device.state {
        DeviceState::TimedOut => true,
        DeviceState::Quarantined | DeviceState::Decommissioned => false,
        _ => activity.last_heard(&device.device_id).elapsed() > allowance,
    }
}
