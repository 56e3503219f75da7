//! The running verifier: everything the gRPC services share, built once at start-up and passed in
//! (no global state).
//!
//! # Parts
//! `Service` ties together parts that each own one thing, with a narrow interface:
//! - `notifier`: state changes from their write to their publication, in audit order, for
//!   watchers and webhooks, and the backlog read from the audit log;
//! - `activity`: what this process has seen of each device (traffic, last appraisal, last pass,
//!   deadlines of devices trusted before the restart);
//! - `latest_results`: each device's latest signed result and last failed verdict;
//! - `revocation`: the CRL, rebuilt on revocation and handed to the TLS layer's [`CrlSink`];
//! - `schedule`: the challenge interval and the watchdog that times out silent devices;
//! - `transitions`: the commit path of device states, one at a time, with their audit records;
//! - `audit_seal`: signed checkpoints over the audit chain and sealed exports;
//!
//! What stays here: start-up and the group commit the attestation path waits on.

pub mod activity;
pub mod audit_seal;
pub mod latest_results;
pub mod notifier;
mod replicas;
mod restart;
pub mod revocation;
pub mod schedule;
pub mod transitions;

use std::sync::Arc;
use std::time::Duration;

use trustchain_ca::Authority;

/// Re-exported from [`crate::clock`], where it now lives.
pub use crate::clock::now_unix_millis;
pub use activity::{Activity, Traffic};
use latest_results::LatestResults;
pub use notifier::{Notifier, StateChange};
pub use revocation::{CrlSink, RevocationError, Revocations};
pub use transitions::ActionError;
use transitions::{Durability, Transitions};

use crate::attestation::state::Input;
use crate::audit::{AuditLine, KeyError, SigningKey};
use crate::config::{AttestationConfig, Limits, VerifierConfig};
use crate::device::{DeviceRecord, DeviceState, EventKind, EventRecord};
use crate::enrollment::ek_chain::MakerAnchors;
use crate::enrollment::enroller::{Enroller, EnrollerConfig};
use crate::reference::trust::TrustStore;
use crate::results::ResultContext;
use crate::storage::{SledStorage, Storage, StorageError};
use crate::verdict::Verdict;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("deployment CA: {0}")]
    Ca(#[from] trustchain_ca::CaError),
    #[error("revocation list: {0}")]
    Revocation(#[from] RevocationError),
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("state: {0}")]
    Action(#[from] ActionError),
    #[error("signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: std::path::PathBuf },
    #[error("trust-list authority key {path}: {detail}")]
    TrustListAuthority {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("configuration: {0}")]
    Config(String),
}

/// The verifier's TLS identity as configured (PEM): `server::tls` checks it and serves it.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The server certificate followed by its issuing CA.
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Shared state of one verifier process.
#[derive(Debug)]
pub struct Service {
    storage: Arc<dyn Storage>,
    ca: Arc<Authority>,
    tls_identity: TlsIdentity,
    /// The CRL and the TLS layers that enforce it.
    revocations: Revocations,
    enroller: Enroller,
    /// The trust list, policies and manifests in force.
    trust: Arc<TrustStore>,
    limits: Limits,
    attestation: AttestationConfig,
    admin: crate::config::AdminConfig,
    /// The commit path of device states (one transition at a time).
    transitions: Transitions,
    /// What this process has seen of each device (see [`Service::watchdog`]).
    activity: Activity,
    /// Group commit for the attestation path (one thread flushes for every waiting appraisal).
    committer: crate::storage::commit::Committer,
    /// Signs audit checkpoints, results and webhook alerts.
    signing_key: Arc<SigningKey>,
    /// Each device's latest appraisal result.
    results: LatestResults,
    metrics: crate::metrics::Metrics,
    /// State changes for watchers, in audit order.
    notifier: Notifier,
    /// How replicas share the fleet (`[cluster]`; see `service/replicas.rs`).
    cluster: crate::config::ClusterConfig,
}

/// An event for an operator action (every admin path records the same way).
pub fn operator_event(device_id: &str, operator: &str, action: &str, comment: &str) -> EventRecord {
    EventRecord {
        at_unix_millis: now_unix_millis(),
        kind: EventKind::OperatorAction,
        device_id: device_id.to_string(),
        detail: format!("{action} by operator {operator:?}: {comment:?}"),
    }
}

fn read(path: &std::path::Path) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|source| StartError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file as DER.
pub fn pem_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>, StartError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let text = read(path)?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    if certs.is_empty() {
        return Err(StartError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

impl Service {
    /// Opens the state database and the CA, and reads the TLS identity (which `server` checks
    /// and serves).
    pub fn start(config: &VerifierConfig) -> Result<Arc<Self>, StartError> {
        // `VerifierConfig::load` checked these already; a configuration built in code has not.
        config.validate().map_err(StartError::Config)?;
        let limits = config.limits.to_limits().map_err(StartError::Config)?;
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open_with_cache(
            &config.state_dir,
            config.storage_cache_bytes(),
        )?);
        let ca = Arc::new(Authority::load(&config.ca_dir)?);
        let tls_identity = TlsIdentity {
            chain_pem: read(&config.tls_certificate)?,
            key_pem: read(&config.tls_key)?,
        };
        let mut makers = MakerAnchors::default();
        for path in &config.maker_anchors {
            makers.anchors.extend(pem_certificates(path)?);
        }
        for path in &config.maker_intermediates {
            makers.intermediates.extend(pem_certificates(path)?);
        }
        let signing_path = config
            .signing_key
            .clone()
            .unwrap_or_else(|| config.ca_dir.join("verifier-signing.pk8"));
        let signing_key = Arc::new(SigningKey::load_or_create(&signing_path)?);
        let authority = match &config.trust_list_authority {
            None => None,
            Some(path) => Some(
                crate::reference::signed::public_key_from_hex(&read(path)?).map_err(|e| {
                    StartError::TrustListAuthority {
                        path: path.clone(),
                        detail: e.to_string(),
                    }
                })?,
            ),
        };
        let trust = Arc::new(
            TrustStore::open(storage.clone(), authority)?
                .requiring_signed_policies(config.require_signed_policies),
        );
        let committer = crate::storage::commit::Committer::start(&storage).map_err(|source| {
            StartError::Read {
                path: config.state_dir.clone(),
                source,
            }
        })?;
        let enroller = Enroller::new(
            storage.clone(),
            ca.clone(),
            makers,
            trust.clone(),
            EnrollerConfig {
                activation_timeout: config.activation_timeout(),
                max_pending: config.max_pending_enrollments,
            },
        );
        let service = Self {
            results: LatestResults::new(storage.clone(), signing_key.clone()),
            storage,
            ca,
            tls_identity,
            revocations: Revocations::default(),
            enroller,
            trust,
            limits,
            attestation: config.attestation.clone(),
            admin: config.admin.clone(),
            transitions: Transitions::default(),
            activity: Activity::default(),
            committer,
            signing_key,
            metrics: crate::metrics::Metrics::default(),
            notifier: Notifier::default(),
            cluster: config.cluster.clone(),
        };
        service.refresh_crl()?;
        service.liveness_across_restart()?;
        Ok(Arc::new(service))
    }

    /// Whether a device has gone silent (see [`schedule::is_silent`]).
    pub fn is_silent(&self, device: &DeviceRecord) -> bool {
        let missed = self.attestation.timeout_after_missed_intervals.max(1);
        schedule::is_silent(device, &self.activity, self.interval_for(device) * missed)
    }

    pub fn attestation_config(&self) -> &AttestationConfig {
        &self.attestation
    }

    pub fn admin_config(&self) -> &crate::config::AdminConfig {
        &self.admin
    }

    /// The challenge interval: the governing policy's tier, else the configuration's table by
    /// the class the trust list assigns (never the class the agent claims).
    pub fn interval_for(&self, device: &DeviceRecord) -> Duration {
        schedule::interval_for(&self.trust, &self.attestation, device)
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Live state changes (subscribe before reading the backlog, then drop duplicates by sequence).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
        self.notifier.subscribe()
    }

    /// State changes recorded in the audit log with sequence >= `from`.
    pub fn state_changes_since(&self, from: u64) -> Result<Vec<StateChange>, StorageError> {
        notifier::backlog(self.storage.as_ref(), from)
    }

    /// Records an appraisal's result (EAR claims) as the device's latest. `keep`: sign and store
    /// it with the appraisal's writes (failures, changes of state); else it is signed when first
    /// asked for, and a restart forgets it (the device must pass a fresh appraisal after one).
    pub fn record_result(&self, result: &ResultContext<'_>, verdict: &Verdict, keep: bool) {
        self.results.record_result(result, verdict, keep);
    }

    /// ES256 signature (r||s, hex) over `message` with the verifier's key: how webhook receivers
    /// check an alert came from this verifier.
    pub fn sign_detached(&self, message: &[u8]) -> Option<String> {
        self.signing_key.sign_fixed(message).ok().map(hex::encode)
    }

    /// The device's latest result, signed (signing it now if it was not yet). Before a
    /// device's first appraisal since this process started: the last one kept on disk.
    pub fn last_result(&self, device_id: &str) -> Option<String> {
        self.results.last_result(device_id)
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The verifier's public signing key (hex SEC1 point), for offline checks.
    pub fn signing_public_hex(&self) -> String {
        self.signing_key.public_hex()
    }

    /// Signs the audit chain's head, if it moved since the last checkpoint, and stores it.
    pub fn checkpoint(&self) -> Result<(), ActionError> {
        Ok(audit_seal::checkpoint(
            self.storage.as_ref(),
            &self.signing_key,
        )?)
    }

    /// Signs a checkpoint every `every` while the process runs (the audit chain's periodic,
    /// signed tree heads).
    pub async fn checkpoints(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = self.checkpoint() {
                tracing::error!(%error, "cannot sign an audit checkpoint");
            }
        }
    }

    /// The audit log from `from` to the head, with the periodic checkpoints in place, ending with
    /// a final checkpoint signed now over exactly that range (`audit::seal_export`).
    pub fn export_audit(&self, from: u64) -> Result<Vec<AuditLine>, ActionError> {
        Ok(audit_seal::export(
            self.storage.as_ref(),
            &self.signing_key,
            from,
        )?)
    }

    /// What this process has seen of each device.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Counts one answer from a device.
    pub fn count_answer(&self, device_id: &str, boot_log: bool, ima_entries: u64, bytes: u64) {
        self.activity
            .count_answer(device_id, boot_log, ima_entries, bytes);
    }

    pub fn traffic(&self, device_id: &str) -> Traffic {
        self.activity.traffic(device_id)
    }

    /// When the device was last appraised by this process (Unix seconds), else when its state
    /// last changed.
    pub fn last_appraisal_unix(&self, device: &DeviceRecord) -> i64 {
        self.activity.last_appraisal_unix(device)
    }

    /// The class the current trust list assigns the device (empty if none), never the agent's
    /// claim (which is a reported fact): what the fleet views show as its tier.
    pub fn assigned_tier(&self, device: &DeviceRecord) -> String {
        self.trust()
            .current()
            .assigned_class(device)
            .unwrap_or_default()
            .to_string()
    }

    /// Notes a pass; `allowance` is how long the device may stay silent (its interval times
    /// the missed intervals allowed) before the watchdog looks at it.
    pub fn note_passed(&self, device_id: &str, allowance: Duration) {
        self.activity.note_passed(device_id, allowance);
    }

    /// Records a reboot (TPM reset with a fresh, valid boot log).
    pub fn record_reboot(&self, device_id: &str, detail: &str) -> Result<u64, StorageError> {
        if !self.storage.holds_lease(device_id) {
            return Err(StorageError::Fenced {
                device_id: device_id.to_string(),
            });
        }
        self.storage.append_event(&EventRecord {
            at_unix_millis: now_unix_millis(),
            kind: EventKind::Rebooted,
            device_id: device_id.to_string(),
            detail: detail.to_string(),
        })
    }

    /// Records a failed appraisal with every failed rule, and keeps the verdict for operators.
    pub fn record_failure(&self, device_id: &str, verdict: &Verdict) {
        self.results.record_failure(device_id, verdict);
    }

    /// The last failed verdict of a device, if any.
    pub fn last_failed_verdict(&self, device_id: &str) -> Option<Verdict> {
        self.results.last_failed_verdict(device_id)
    }

    /// Times out trusted devices that have not passed an appraisal for the configured number of
    /// intervals, whether or not they hold a stream (see [`schedule::watchdog`]). Runs until the
    /// process ends.
    pub async fn watchdog(self: Arc<Self>) {
        schedule::watchdog(
            self.storage.as_ref(),
            &self.activity,
            self.attestation.timeout_after_missed_intervals,
            |device| self.interval_for(device),
            |device_id, input| {
                // Another live replica attests it: its own watchdog times it out.
                let Some(release) = self.borrow_lease(device_id) else {
                    return;
                };
                let _ = self.transition(device_id, input, "no valid answer within the timeout");
                if release {
                    self.unclaim(device_id);
                }
            },
        )
        .await;
    }

    /// Applies `input` to a device's state; records the transition when the state changes.
    pub fn transition(
        &self,
        device_id: &str,
        input: Input,
        reason: &str,
    ) -> Result<DeviceRecord, ActionError> {
        self.transition_recoverable(device_id, input, reason, false)
    }

    /// A transition after an appraisal. `policy_only`: the failure rests only on reference
    /// values, the allowlist or the trust list, so a later pass may make the device trusted
    /// again without an operator (see `DeviceRecord::recoverable`).
    pub fn transition_recoverable(
        &self,
        device_id: &str,
        input: Input,
        reason: &str,
        policy_only: bool,
    ) -> Result<DeviceRecord, ActionError> {
        let (record, change) =
            self.apply(device_id, input, reason, policy_only, None, Durability::Now)?;
        if let Some(change) = change {
            self.publish(change);
        }
        Ok(Arc::unwrap_or_clone(record))
    }

    /// The transition after an appraisal, written with the appraisal's other writes: durable at
    /// the session's next [`Service::durable`], after which the session publishes the change
    /// (if any) with [`Service::publish`]. Under an enrollment burst or after a restart, when
    /// every device changes state at its first appraisal, a flush per change (under the
    /// transitions lock) left thousands of first appraisals queued for seconds.
    pub fn transition_after_appraisal(
        &self,
        device_id: &str,
        input: Input,
        reason: &str,
        policy_only: bool,
    ) -> Result<(Arc<DeviceRecord>, Option<StateChange>), ActionError> {
        self.apply(
            device_id,
            input,
            reason,
            policy_only,
            None,
            Durability::WithCommit,
        )
    }

    /// Tells watchers of a change that is on disk, in audit order (see [`Notifier::publish`]).
    pub fn publish(&self, change: StateChange) {
        // Replicas: every change, this replica's included, reaches watchers through the shared
        // audit log (`Service::follow`), so all of them in one order.
        if !self.storage.is_shared() {
            self.notifier.publish(change);
        }
    }

    /// A written change that will not be published (its commit failed: no verdict rests on it).
    pub fn abandon(&self, change: &StateChange) {
        if !self.storage.is_shared() {
            self.notifier.abandon(change);
        }
    }

    fn apply(
        &self,
        device_id: &str,
        input: Input,
        reason: &str,
        policy_only: bool,
        fresh_evidence_due_unix: Option<i64>,
        durability: Durability,
    ) -> Result<(Arc<DeviceRecord>, Option<StateChange>), ActionError> {
        let parts = transitions::Parts {
            storage: self.storage.as_ref(),
            activity: &self.activity,
            notifier: &self.notifier,
            results: &self.results,
        };
        let transitions::Applied {
            record,
            change,
            changed,
        } = self.transitions.apply(
            parts,
            device_id,
            transitions::Request {
                input,
                reason,
                policy_only,
                fresh_evidence_due_unix,
                durability,
            },
        )?;
        if changed
            && matches!(
                record.state,
                DeviceState::Decommissioned | DeviceState::Quarantined
            )
            && let Err(error) = self.refresh_crl()
        {
            tracing::error!(%error, "could not refresh the CRL");
        }
        Ok((record, change))
    }

    /// An operator's action on a device, recorded with the operator's identity.
    pub fn operator_action(
        &self,
        device_id: &str,
        input: Input,
        operator: &str,
        comment: &str,
    ) -> Result<DeviceRecord, ActionError> {
        let action = match input {
            Input::OperatorCleared => "clear",
            Input::Decommission => "decommission",
            _ => "action",
        };
        if self.storage.device(device_id)?.is_none() {
            return Err(ActionError::NotFound);
        }
        self.seized(device_id, || {
            self.storage
                .append_event(&operator_event(device_id, operator, action, comment))?;
            self.transition(device_id, input, &format!("{action} by {operator}"))
        })
    }

    /// Rebuilds the CRL from the devices that are decommissioned or quarantined and the revoked
    /// operators, and gives it to the TLS layer: those certificates fail their next handshake.
    pub fn refresh_crl(&self) -> Result<(), RevocationError> {
        self.revocations.refresh(self.storage.as_ref(), &self.ca)
    }

    /// The CRL in force and where it goes (the TLS layer registers itself here).
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Waits until this task's writes are durable (group commit).
    pub async fn durable(&self) -> Result<(), crate::storage::commit::CommitFailed> {
        self.committer.durable().await
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn ca(&self) -> &Arc<Authority> {
        &self.ca
    }

    /// The configured TLS identity (PEM), for the network edge.
    pub fn tls_identity(&self) -> &TlsIdentity {
        &self.tls_identity
    }

    pub fn enroller(&self) -> &Enroller {
        &self.enroller
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl crate::metrics::Scrape for Service {
    fn scrape(&self) -> String {
        self.metrics
            .render(self.storage.as_ref(), &|device| self.is_silent(device))
    }
}
