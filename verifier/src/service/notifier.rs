//! The notifier: state changes from their write to their publication, in audit order, to the
//! live subscribers (watchers, webhooks), and the backlog of changes read from the audit log.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::{DeviceState, EventKind, EventRecord};
use crate::storage::{Storage, StorageError};

/// A device's state change, as relying parties see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The audit-log sequence of the change: watchers resume from it.
    pub sequence: u64,
    pub device_id: String,
    pub previous: DeviceState,
    pub current: DeviceState,
    pub reason: String,
    /// The signed result (EAR JWT) of the appraisal behind the change, if one was.
    pub result_jwt: String,
    pub at_unix_millis: i64,
}

/// Live state changes and the ones written but not yet published (see [`Notifier::publish`]).
#[derive(Debug)]
pub struct Notifier {
    /// Live state changes for watchers (relying parties); the audit log is the durable copy.
    changes: tokio::sync::broadcast::Sender<StateChange>,
    /// State changes written but not yet published, by audit sequence.
    unpublished: Mutex<InOrder>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            changes: tokio::sync::broadcast::channel(1024).0,
            unpublished: Mutex::new(InOrder::default()),
        }
    }
}

impl Notifier {
    /// Live state changes (subscribe before reading the backlog, then drop duplicates by sequence).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// Publishes a change read back from the shared audit log (replicas: every replica's
    /// changes reach its watchers this way, in the log's order, and only this way).
    pub fn publish_followed(&self, change: StateChange) {
        let _ = self.changes.send(change);
    }

    /// A change was written with this sequence. Call in sequence order (under the lock that
    /// serialises transitions): changes are registered in audit order.
    pub fn written(&self, sequence: u64) {
        self.unpublished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .written(sequence, Instant::now());
    }

    /// Tells watchers of a change that is on disk. Changes reach watchers in audit order:
    /// appraisals commit in any order, and a watcher drops a change older than one it has seen,
    /// so a change waits here until every change written before it is published or abandoned.
    pub fn publish(&self, change: StateChange) {
        let mut unpublished = self.unpublished.lock().unwrap_or_else(|p| p.into_inner());
        for change in unpublished.ready(change, Instant::now()) {
            // No receiver is fine: watchers read the audit log when they connect.
            let _ = self.changes.send(change);
        }
    }

    /// A written change that will not be published (its commit failed: no verdict rests on it).
    pub fn abandon(&self, change: &StateChange) {
        let mut unpublished = self.unpublished.lock().unwrap_or_else(|p| p.into_inner());
        for change in unpublished.abandon(change.sequence, Instant::now()) {
            let _ = self.changes.send(change);
        }
    }
}

/// The detail of a state change's audit record: `backlog` reads it back.
pub fn change_detail(previous: DeviceState, current: DeviceState, reason: &str) -> String {
    format!("{} -> {}: {reason}", previous.name(), current.name())
}

/// State changes recorded in the audit log with sequence >= `from`.
pub fn backlog(storage: &dyn Storage, from: u64) -> Result<Vec<StateChange>, StorageError> {
    Ok(backlog_page(storage, from, usize::MAX)?.0)
}

/// State changes among the next `records` audit records from sequence `from` on, and the last
/// sequence read (None if there was no record): readers that page through the log (the SIEM
/// export) hold at most a page in memory however long their sink was down.
pub fn backlog_page(
    storage: &dyn Storage,
    from: u64,
    records: usize,
) -> Result<(Vec<StateChange>, Option<u64>), StorageError> {
    let mut out = Vec::new();
    let mut last = None;
    for (sequence, event) in storage.events(from.max(1), records)? {
        last = Some(sequence);
        out.extend(change_of(sequence, event));
    }
    Ok((out, last))
}

/// The state change an audit record holds, if it is one (its JWT is not in the audit log).
pub fn change_of(sequence: u64, event: EventRecord) -> Option<StateChange> {
    if event.kind != EventKind::StateChanged {
        return None;
    }
    // The detail is written by `change_detail` as "<from> -> <to>: <reason>".
    let (states, reason) = event.detail.split_once(": ")?;
    let (previous, current) = states.split_once(" -> ")?;
    Some(StateChange {
        sequence,
        device_id: event.device_id,
        previous: DeviceState::from_name(previous)?,
        current: DeviceState::from_name(current)?,
        reason: reason.to_string(),
        result_jwt: String::new(),
        at_unix_millis: event.at_unix_millis,
    })
}

/// A state change between its write and its publication.
#[derive(Debug)]
enum Unpublished {
    /// Written; its commit is pending (since then).
    Committing(Instant),
    /// Durable: to be published once every change before it is.
    Ready(StateChange),
}

/// A change whose commit has not been reported for this long no longer holds back the changes
/// after it (its session must have ended without saying; it stays in the audit log, where a
/// watcher that reconnects reads it). Commits take milliseconds.
const UNPUBLISHED_GIVE_UP: Duration = Duration::from_secs(10);

/// State changes between their write and their publication, released in audit order:
/// appraisals commit in any order, and a watcher drops a change older than one it has seen.
#[derive(Debug, Default)]
struct InOrder {
    pending: BTreeMap<u64, Unpublished>,
}

impl InOrder {
    /// A change was written with this sequence (in sequence order: under the transitions lock).
    fn written(&mut self, sequence: u64, now: Instant) {
        self.pending.insert(sequence, Unpublished::Committing(now));
    }

    /// A change is durable; returns what may be published now, in order.
    fn ready(&mut self, change: StateChange, now: Instant) -> Vec<StateChange> {
        self.pending
            .insert(change.sequence, Unpublished::Ready(change));
        self.release(now)
    }

    /// A written change will not be published (its commit failed).
    fn abandon(&mut self, sequence: u64, now: Instant) -> Vec<StateChange> {
        self.pending.remove(&sequence);
        self.release(now)
    }

    fn release(&mut self, now: Instant) -> Vec<StateChange> {
        let mut out = Vec::new();
        while let Some(first) = self.pending.first_entry() {
            match first.get() {
                Unpublished::Committing(since)
                    if now.saturating_duration_since(*since) < UNPUBLISHED_GIVE_UP =>
                {
                    break;
                }
                Unpublished::Committing(_) => {
                    tracing::error!(
                        sequence = first.key(),
                        "a state change was never reported committed; publishing the ones after it"
                    );
                    first.remove();
                }
                Unpublished::Ready(_) => {
                    if let Unpublished::Ready(change) = first.remove() {
                        out.push(change);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(sequence: u64) -> StateChange {
        StateChange {
            sequence,
            device_id: format!("d{sequence}"),
            previous: DeviceState::Enrolled,
            current: DeviceState::Trusted,
            reason: String::new(),
            result_jwt: String::new(),
            at_unix_millis: 0,
        }
    }

    fn sequences(changes: &[StateChange]) -> Vec<u64> {
        changes.iter().map(|c| c.sequence).collect()
    }

    #[test]
    fn changes_committed_out_of_order_are_published_in_audit_order() {
        let now = Instant::now();
        let mut order = InOrder::default();
        for sequence in [3, 5, 8] {
            order.written(sequence, now);
        }
        assert!(order.ready(change(8), now).is_empty());
        assert!(order.ready(change(5), now).is_empty());
        assert_eq!(sequences(&order.ready(change(3), now)), vec![3, 5, 8]);
    }

    #[test]
    fn an_abandoned_or_forgotten_change_stops_holding_back_the_later_ones() {
        let now = Instant::now();
        let mut order = InOrder::default();
        for sequence in [1, 2, 3] {
            order.written(sequence, now);
        }
        assert!(order.ready(change(2), now).is_empty());
        assert_eq!(sequences(&order.abandon(1, now)), vec![2]);
        // 3 was written and never reported: it holds 4 back until it is given up on.
        assert!(order.ready(change(4), now).is_empty());
        let later = now + UNPUBLISHED_GIVE_UP + Duration::from_secs(1);
        assert_eq!(sequences(&order.release(later)), vec![4]);
    }

    #[test]
    fn the_backlog_is_read_a_page_at_a_time_and_says_how_far_it_read() {
        use crate::device::EventRecord;
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::SledStorage::open(&dir.path().join("db")).unwrap();
        let event = |kind, detail: &str| EventRecord {
            at_unix_millis: 1,
            kind,
            device_id: "d".into(),
            detail: detail.into(),
        };
        let change = change_detail(DeviceState::Enrolled, DeviceState::Trusted, "passed");
        storage
            .append_event(&event(EventKind::StateChanged, &change))
            .unwrap();
        storage
            .append_event(&event(EventKind::VerifierStarted, "pid 1"))
            .unwrap();
        storage
            .append_event(&event(EventKind::StateChanged, &change))
            .unwrap();
        let (first, last) = backlog_page(&storage, 1, 2).unwrap();
        assert_eq!((sequences(&first), last), (vec![1], Some(2)));
        let (rest, last) = backlog_page(&storage, 3, 2).unwrap();
        assert_eq!((sequences(&rest), last), (vec![3], Some(3)));
        assert_eq!(rest[0].reason, "passed");
        assert_eq!(backlog_page(&storage, 4, 2).unwrap(), (vec![], None));
    }
}
