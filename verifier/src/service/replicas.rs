//! Replicas: several verifier processes over one shared database (PostgreSQL) are one verifier.
//! Storage fences every device write by the device's lease (see `storage::api`); this module is
//! the service's side of it:
//!
//! - a stream is attested only by the replica holding its device's lease ([`Service::claim`]):
//!   a replica that receives a device another live replica holds waits for that lease up to
//!   one lease period (the holder lets it go when its stream ends, or it runs out when the
//!   holder died) and otherwise sends the agent to another replica (`UNAVAILABLE`);
//! - leases are renewed in one statement a third of a lease period apart ([`Service::renew`]);
//!   a lease found lost ends its stream at the next round, and nothing it would write lands;
//! - what other replicas did is followed ([`Service::follow`]): state changes are read back from
//!   the shared audit log and published to this replica's watchers in the log's order (the only
//!   way changes reach watchers here, so every watcher sees every replica's changes once, in
//!   order); a change of stored trust documents rebuilds the trust snapshot; a device
//!   quarantined or decommissioned elsewhere refreshes the CRL;
//! - singleton work (webhook and SIEM delivery) runs on the replica holding its lease
//!   ([`Service::leads`]).
//!
//! On sled nothing here waits or polls: the one process holds every lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Service;
use super::notifier::backlog_page;
use crate::device::DeviceState;

/// Records read from the audit log per follow round.
const FOLLOW_PAGE: usize = 1000;
/// How often the audit log is read back for changes other replicas made.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

impl Service {
    /// The lease period of `[cluster]`.
    pub fn lease_period(&self) -> Duration {
        Duration::from_secs(self.cluster.lease_seconds)
    }

    /// Takes the device's lease for a stream, waiting up to one lease period for another
    /// replica to let it go. False: another live replica attests it (or the database is
    /// unreachable), and the stream must not be attested here.
    pub async fn claim(&self, device_id: &str) -> bool {
        let deadline = Instant::now() + self.lease_period() + Duration::from_secs(1);
        loop {
            match self.storage.acquire_lease(device_id) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(device = %device_id, %error, "cannot take the device's lease")
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Lets a device's lease go (its stream here ended), so another replica may take it at once.
    pub fn unclaim(&self, device_id: &str) {
        if let Err(error) = self.storage.release_lease(device_id) {
            tracing::warn!(device = %device_id, %error, "cannot release the device's lease");
        }
    }

    /// Whether this replica may do a singleton task (`task` names its lease): the one replica
    /// holding that lease does it, and another takes over once the holder is gone. Always true
    /// on sled.
    pub fn leads(&self, task: &str) -> bool {
        self.storage.acquire_lease(task).unwrap_or(false)
    }

    /// Runs `action` on a device whatever replica attests it: an operator's action on this
    /// replica takes the device's lease from its holder (which is fenced from then on, and
    /// whose stream ends at its next round), acts, and lets the lease go.
    pub(super) fn seized<T, E: From<crate::storage::StorageError>>(
        &self,
        device_id: &str,
        action: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.storage.is_shared() {
            return action();
        }
        let held = self.storage.holds_lease(device_id);
        if !held {
            self.storage.seize_lease(device_id)?;
        }
        let outcome = action();
        if !held {
            self.unclaim(device_id);
        }
        outcome
    }

    /// Takes a device's lease for a write this replica makes without a stream (a time-out, a
    /// restart's fresh-evidence deadline), if no live replica holds it: `Some(release)` if
    /// held (release: whether to let it go after the write), None if another replica has it.
    pub(super) fn borrow_lease(&self, device_id: &str) -> Option<bool> {
        if !self.storage.is_shared() || self.storage.holds_lease(device_id) {
            return Some(false);
        }
        match self.storage.acquire_lease(device_id) {
            Ok(true) => Some(true),
            _ => None,
        }
    }

    /// Renews this replica's leases until the process ends (shared storage only).
    pub async fn renew(self: Arc<Self>) {
        if !self.storage.is_shared() {
            return;
        }
        let every = self.lease_period() / 3;
        loop {
            tokio::time::sleep(every).await;
            self.enroller.sweep_expired();
            match self.storage.renew_leases() {
                Ok(lost) => {
                    for device_id in lost {
                        tracing::warn!(device = %device_id, "lease lost to another replica");
                        self.metrics.lease_lost();
                    }
                }
                Err(error) => tracing::error!(%error, "cannot renew leases"),
            }
        }
    }

    /// Follows what other replicas write until the process ends (shared storage only): state
    /// changes to this replica's watchers, trust documents into the snapshot, revocations
    /// into the CRL.
    pub async fn follow(self: Arc<Self>) {
        if !self.storage.is_shared() {
            return;
        }
        let mut next = self.storage.audit_head().0 + 1;
        let mut documents = self.storage.documents_generation().unwrap_or(0);
        let refresh = Duration::from_millis(self.cluster.refresh_millis);
        let mut last_refresh = Instant::now();
        loop {
            tokio::time::sleep(FOLLOW_EVERY.min(refresh)).await;
            match backlog_page(self.storage.as_ref(), next, FOLLOW_PAGE) {
                Ok((changes, last)) => {
                    let mut revoke = false;
                    for mut change in changes {
                        revoke |= matches!(
                            change.current,
                            DeviceState::Quarantined | DeviceState::Decommissioned
                        );
                        if self.storage.holds_lease(&change.device_id) {
                            change.result_jwt =
                                self.last_result(&change.device_id).unwrap_or_default();
                        }
                        self.notifier.publish_followed(change);
                    }
                    if let Some(last) = last {
                        next = last + 1;
                    }
                    if revoke && let Err(error) = self.refresh_crl() {
                        tracing::error!(%error, "could not refresh the CRL");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot read the audit log back"),
            }
            if last_refresh.elapsed() < refresh {
                continue;
            }
            last_refresh = Instant::now();
            match self.storage.documents_generation() {
                Ok(generation) if generation != documents => match self.trust.reload() {
                    Ok(changed) => {
                        documents = generation;
                        if changed {
                            tracing::info!("trust documents changed on another replica; reloaded");
                        }
                    }
                    Err(error) => tracing::error!(%error, "cannot reload trust documents"),
                },
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read the documents' generation"),
            }
        }
    }
}
