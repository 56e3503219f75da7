//! What this process has seen of each device, in memory only: evidence traffic and when it
//! last arrived, the time of the last appraisal, the last pass the watchdog times devices out
//! from, and the deadlines of devices trusted before a restart (monotonic clock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::DeviceRecord;

/// Evidence received from one device since the verifier started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub answers: u64,
    pub boot_logs: u64,
    pub ima_entries: u64,
    pub bytes: u64,
}

/// A device's last pass.
#[derive(Debug, Clone, Copy)]
struct Passed {
    at: Instant,
    /// When the device times out unless it passes again, by the interval in force at the pass.
    look_again: Instant,
}

/// The fleet's activity in this process.
#[derive(Debug)]
pub struct Activity {
    /// When this process started: devices get a full timeout from then to reconnect.
    started: Instant,
    /// When each device last passed an appraisal, on the monotonic clock (never the wall clock),
    /// and when the watchdog should look at it again.
    last_passed: Mutex<HashMap<String, Passed>>,
    /// When each device was last appraised (Unix seconds, for operators' displays only).
    last_appraisal: Mutex<HashMap<String, i64>>,
    /// What each device has sent, for operators and tests (what travels on the wire), and when
    /// its last answer arrived.
    traffic: Mutex<HashMap<String, (Traffic, Instant)>>,
    /// Devices trusted before this process started, waiting for a fresh pass: when each times
    /// out without one (from the durable deadline, never later than a full window from start).
    awaiting: Mutex<HashMap<String, Instant>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_passed: Mutex::new(HashMap::new()),
            last_appraisal: Mutex::new(HashMap::new()),
            traffic: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(HashMap::new()),
        }
    }
}

impl Activity {
    /// Counts one answer from a device.
    pub fn count_answer(&self, device_id: &str, boot_log: bool, ima_entries: u64, bytes: u64) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let (entry, heard) = traffic
            .entry(device_id.to_string())
            .or_insert_with(|| (Traffic::default(), Instant::now()));
        *heard = Instant::now();
        entry.answers += 1;
        entry.boot_logs += u64::from(boot_log);
        entry.ima_entries += ima_entries;
        entry.bytes += bytes;
    }

    pub fn traffic(&self, device_id: &str) -> Traffic {
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .map(|(traffic, _)| *traffic)
            .unwrap_or_default()
    }

    /// When the device's last answer arrived in this process, else when the process started.
    pub fn last_heard(&self, device_id: &str) -> Instant {
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .map_or(self.started, |(_, heard)| *heard)
    }

    /// A device trusted before this process started must pass again within `remaining`.
    pub fn await_fresh_pass(&self, device_id: &str, remaining: Duration) {
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_string(), self.started + remaining);
    }

    /// When a device trusted before the restart times out without a fresh pass, if it waits.
    pub fn fresh_pass_due(&self, device_id: &str) -> Option<Instant> {
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .copied()
    }

    /// Ends a device's wait for a fresh pass (it passed, failed, or timed out).
    pub fn forget_fresh_pass_due(&self, device_id: &str) {
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id);
    }

    /// Notes that a device was just appraised (Unix seconds).
    pub fn appraised(&self, device_id: &str, at_unix: i64) {
        self.last_appraisal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_string(), at_unix);
    }

    /// When the device was last appraised by this process (Unix seconds), else when its state
    /// last changed.
    pub fn last_appraisal_unix(&self, device: &DeviceRecord) -> i64 {
        self.last_appraisal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device.device_id)
            .copied()
            .unwrap_or(device.state_changed_at_unix)
    }

    /// Notes a pass; `allowance` is how long the device may stay silent (its interval times
    /// the missed intervals allowed) before the watchdog looks at it.
    pub fn note_passed(&self, device_id: &str, allowance: Duration) {
        self.forget_fresh_pass_due(device_id);
        let at = Instant::now();
        self.last_passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                device_id.to_string(),
                Passed {
                    at,
                    look_again: at + allowance,
                },
            );
    }

    /// The devices whose allowance, or wait for a fresh pass after the restart, ran out by
    /// `now` (to be checked against their record).
    pub fn due(&self, now: Instant) -> Vec<String> {
        let mut due: Vec<String> = self
            .last_passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, passed)| passed.look_again <= now)
            .map(|(id, _)| id.clone())
            .collect();
        due.extend(
            self.awaiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(id, _)| id.clone()),
        );
        due
    }

    /// Forgets the last pass of a device that is no longer trusted (nothing to time out until
    /// it passes again, which notes it anew).
    pub fn forget_pass(&self, device_id: &str) {
        self.last_passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(device_id);
    }

    /// When a trusted device last passed (else when this process started), looking again at
    /// it after `allowance` from then: the interval may have grown since the pass.
    pub fn last_pass(&self, device_id: &str, allowance: Duration) -> Instant {
        let mut last_passed = self.last_passed.lock().unwrap_or_else(|p| p.into_inner());
        match last_passed.get_mut(device_id) {
            Some(passed) => {
                passed.look_again = passed.at + allowance;
                passed.at
            }
            None => self.started,
        }
    }
}
