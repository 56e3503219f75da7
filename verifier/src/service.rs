//! The running verifier: everything the gRPC services share, built once at start-up and passed in
//! (no global state).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trustchain_ca::Authority;

use crate::attestation::state::{self, Input, Recovery};
use crate::audit::{AuditLine, KeyError, SigningKey};
use crate::config::{AttestationConfig, VerifierConfig};
use crate::device::{DeviceRecord, DeviceState, EventKind, EventRecord};
use crate::enrollment::ek_chain::MakerAnchors;
use crate::enrollment::enroller::{Enroller, EnrollerConfig};
use crate::reference::trust::TrustStore;
use crate::results::ResultContext;
use crate::server::Limits;
use crate::server::tls::{ServerTls, TlsError};
use crate::storage::{SledStorage, Storage, StorageError};
use crate::verdict::Verdict;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("deployment CA: {0}")]
    Ca(#[from] trustchain_ca::CaError),
    #[error(transparent)]
    Tls(#[from] TlsError),
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
}

/// Shared state of one verifier process.
#[derive(Debug)]
pub struct Service {
    storage: Arc<dyn Storage>,
    ca: Arc<Authority>,
    tls: ServerTls,
    enroller: Enroller,
    /// The trust list, policies and manifests in force.
    trust: Arc<TrustStore>,
    limits: Limits,
    attestation: AttestationConfig,
    /// Serialises read-modify-write of device states, so two transitions never lose one another.
    transitions: Mutex<()>,
    /// When each device last passed an appraisal, on the monotonic clock (never the wall clock),
    /// and when the watchdog should look at it again (see [`Service::watchdog`]).
    last_passed: Mutex<HashMap<String, Passed>>,
    /// Group commit for the attestation path (one thread flushes for every waiting appraisal).
    committer: crate::storage::commit::Committer,
    /// When each device was last appraised (Unix seconds, for operators' displays only).
    last_appraisal: Mutex<HashMap<String, i64>>,
    /// When this process started: devices get a full timeout from then to reconnect.
    started: Instant,
    /// What each device has sent, for operators and tests (what travels on the wire).
    traffic: Mutex<HashMap<String, Traffic>>,
    /// Signs audit checkpoints (and, later, results).
    signing_key: SigningKey,
    metrics: crate::metrics::Metrics,
    /// Live state changes for watchers (relying parties); the audit log is the durable copy.
    changes: tokio::sync::broadcast::Sender<StateChange>,
    /// Each device's latest appraisal result (see [`LatestResult`]).
    latest_results: Mutex<HashMap<String, LatestResult>>,
    /// State changes written but not yet published, by audit sequence (see [`Service::publish`]).
    unpublished: Mutex<InOrder>,
}

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
    pending: std::collections::BTreeMap<u64, Unpublished>,
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

/// When a transition's writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before the transition returns.
    Now,
    /// At the caller's next group commit.
    WithCommit,
}

/// A device's last pass.
#[derive(Debug, Clone, Copy)]
struct Passed {
    at: Instant,
    /// When the device times out unless it passes again, by the interval in force at the pass.
    look_again: Instant,
}

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

/// Evidence received from one device since the verifier started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub answers: u64,
    pub boot_logs: u64,
    pub ima_entries: u64,
    pub bytes: u64,
}

/// Why an operator action or state transition failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    #[error("no such device")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Milliseconds since the Unix epoch (wall clock: for records, never for expiry decisions).
pub fn now_unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
    /// Opens the state database and the CA, and loads the TLS identity.
    pub fn start(config: &VerifierConfig) -> Result<Arc<Self>, StartError> {
        let storage: Arc<dyn Storage> = Arc::new(SledStorage::open_with_cache(
            &config.state_dir,
            config.storage_cache_bytes(),
        )?);
        let ca = Arc::new(Authority::load(&config.ca_dir)?);
        let tls = ServerTls::new(
            &read(&config.tls_certificate)?,
            &read(&config.tls_key)?,
            ca.root_der(),
            Vec::new(),
        )?;
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
        let signing_key = SigningKey::load_or_create(&signing_path)?;
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
        let trust = Arc::new(TrustStore::open(storage.clone(), authority)?);
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
            storage,
            ca,
            tls,
            enroller,
            trust,
            limits: Limits::default(),
            attestation: config.attestation.clone(),
            transitions: Mutex::new(()),
            last_passed: Mutex::new(HashMap::new()),
            last_appraisal: Mutex::new(HashMap::new()),
            committer,
            started: Instant::now(),
            traffic: Mutex::new(HashMap::new()),
            signing_key,
            metrics: crate::metrics::Metrics::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
            latest_results: Mutex::new(HashMap::new()),
            unpublished: Mutex::new(InOrder::default()),
        };
        service.refresh_crl()?;
        service.forget_trust_across_restart()?;
        Ok(Arc::new(service))
    }

    /// A trusted state rests on a quote this process checked: after a restart, every trusted
    /// device goes back to enrolled until a fresh challenge passes (fail closed across crashes).
    fn forget_trust_across_restart(&self) -> Result<(), StartError> {
        for device in self.storage.devices()? {
            if device.state == DeviceState::Trusted {
                self.transition(
                    &device.device_id,
                    Input::VerifierRestarted,
                    "verifier restarted: awaiting a fresh appraisal",
                )?;
            }
        }
        Ok(())
    }

    pub fn attestation_config(&self) -> &AttestationConfig {
        &self.attestation
    }

    /// The challenge interval: the governing policy's tier, else the configuration's table by
    /// the class the trust list assigns (never the class the agent claims).
    pub fn interval_for(&self, device: &DeviceRecord) -> Duration {
        let snapshot = self.trust.current();
        match snapshot.policy_for(device).map(|p| p.tier.resolve()) {
            Some(tier) => Duration::from_secs(tier.interval_seconds),
            None => self
                .attestation
                .interval_for(snapshot.assigned_class(device).unwrap_or_default()),
        }
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Live state changes (subscribe before reading the backlog, then drop duplicates by sequence).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// State changes recorded in the audit log with sequence >= `from`.
    pub fn state_changes_since(&self, from: u64) -> Result<Vec<StateChange>, StorageError> {
        let mut out = Vec::new();
        for (sequence, event) in self.storage.events(from.max(1), usize::MAX)? {
            if event.kind != EventKind::StateChanged {
                continue;
            }
            // The detail is written by `transition` as "<from> -> <to>: <reason>".
            let Some((states, reason)) = event.detail.split_once(": ") else {
                continue;
            };
            let Some((previous, current)) = states.split_once(" -> ") else {
                continue;
            };
            let (Some(previous), Some(current)) = (
                DeviceState::from_name(previous),
                DeviceState::from_name(current),
            ) else {
                continue;
            };
            out.push(StateChange {
                sequence,
                device_id: event.device_id,
                previous,
                current,
                reason: reason.to_string(),
                result_jwt: String::new(),
                at_unix_millis: event.at_unix_millis,
            });
        }
        Ok(out)
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
        self.latest_results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_string(), latest);
    }

    /// ES256 signature (r||s, hex) over `message` with the verifier's key: how webhook receivers
    /// check an alert came from this verifier.
    pub fn sign_detached(&self, message: &[u8]) -> Option<String> {
        self.signing_key.sign_fixed(message).ok().map(hex::encode)
    }

    /// The device's latest result, signed (signing it now if it was not yet). Before a
    /// device's first appraisal since this process started: the last one kept on disk.
    pub fn last_result(&self, device_id: &str) -> Option<String> {
        let latest = self
            .latest_results
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
                let mut results = self
                    .latest_results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
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

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The verifier's public signing key (hex SEC1 point), for offline checks.
    pub fn signing_public_hex(&self) -> String {
        self.signing_key.public_hex()
    }

    /// Signs the audit chain's head, if it moved since the last checkpoint, and stores it.
    pub fn checkpoint(&self) -> Result<(), ActionError> {
        let (head, hash) = self.storage.audit_head();
        if head == 0
            || self
                .storage
                .checkpoints(head)?
                .iter()
                .any(|(sequence, _, _)| *sequence == head)
        {
            return Ok(());
        }
        let signature = self
            .signing_key
            .sign(&crate::audit::checkpoint_message(head, &hash))
            .map_err(|e| {
                ActionError::Storage(StorageError::Backend {
                    operation: "sign checkpoint",
                    detail: e.to_string(),
                })
            })?;
        self.storage
            .put_checkpoint(head, &hex::encode(hash), &hex::encode(signature))?;
        Ok(())
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
        self.checkpoint()?;
        let (head, _) = self.storage.audit_head();
        let mut records = self.storage.audit_records(from.max(1), usize::MAX)?;
        records.retain(|l| matches!(l, AuditLine::Record { sequence, .. } if *sequence <= head));
        let checkpoints = self.storage.checkpoints(from.max(1))?;
        let sealed = crate::audit::seal_export(
            records,
            &checkpoints,
            &self.signing_key,
            now_unix_millis() / 1000,
        );
        sealed.map_err(|detail| {
            let operation = "seal audit export";
            ActionError::Storage(StorageError::Backend { operation, detail })
        })
    }

    /// Counts one answer from a device.
    pub fn count_answer(&self, device_id: &str, boot_log: bool, ima_entries: u64, bytes: u64) {
        let mut traffic = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let entry = traffic.entry(device_id.to_string()).or_default();
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
            .copied()
            .unwrap_or_default()
    }

    /// Records that a device just passed an appraisal.
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

    /// Records a reboot (TPM reset with a fresh, valid boot log).
    pub fn record_reboot(&self, device_id: &str, detail: &str) -> Result<u64, StorageError> {
        self.storage.append_event(&EventRecord {
            at_unix_millis: now_unix_millis(),
            kind: EventKind::Rebooted,
            device_id: device_id.to_string(),
            detail: detail.to_string(),
        })
    }

    /// Records a failed appraisal with every failed rule, and keeps the verdict for operators.
    pub fn record_failure(&self, device_id: &str, verdict: &Verdict) {
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

    /// Times out trusted devices that have not passed an appraisal for the configured number of
    /// intervals, whether or not they hold a stream. Runs until the process ends.
    ///
    /// Trust does not survive a restart (`forget_trust_across_restart`), so every trusted
    /// device passed in this process and has a `last_passed` entry: each pass the watchdog
    /// looks only at entries whose allowance ran out, then checks them against their record
    /// and current interval. Listing every device record twice a second instead cost a fifth
    /// of a core at 10,000 devices. A full listing every minute is the backstop.
    pub async fn watchdog(self: Arc<Self>) {
        const FULL_LISTING_EVERY: u64 = 120;
        let missed = self.attestation.timeout_after_missed_intervals.max(1);
        let mut round = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            round += 1;
            let due: Vec<String> = if round.is_multiple_of(FULL_LISTING_EVERY) {
                let Ok(devices) = self.storage.devices() else {
                    continue;
                };
                devices
                    .into_iter()
                    .filter(|d| d.state == DeviceState::Trusted)
                    .map(|d| d.device_id)
                    .collect()
            } else {
                let now = Instant::now();
                self.last_passed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(_, passed)| passed.look_again <= now)
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            for device_id in due {
                let Ok(Some(device)) = self.storage.device(&device_id) else {
                    continue;
                };
                let allowance = self.interval_for(&device) * missed;
                let last = {
                    let mut last_passed =
                        self.last_passed.lock().unwrap_or_else(|p| p.into_inner());
                    if device.state != DeviceState::Trusted {
                        // Nothing to time out until it passes again (which notes it anew).
                        last_passed.remove(&device_id);
                        continue;
                    }
                    match last_passed.get_mut(&device_id) {
                        Some(passed) => {
                            // The interval may have grown since the pass.
                            passed.look_again = passed.at + allowance;
                            passed.at
                        }
                        None => self.started,
                    }
                };
                if last.elapsed() > allowance {
                    let _ = self.transition(
                        &device_id,
                        Input::Silent,
                        "no valid answer within the timeout",
                    );
                }
            }
        }
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
            self.apply(device_id, input, reason, policy_only, Durability::Now)?;
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
            Durability::WithCommit,
        )
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

    fn apply(
        &self,
        device_id: &str,
        input: Input,
        reason: &str,
        policy_only: bool,
        durability: Durability,
    ) -> Result<(Arc<DeviceRecord>, Option<StateChange>), ActionError> {
        let changed;
        let mut change = None;
        let record = {
            let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
            // Shared, not copied: most appraisals change nothing, and copy nothing.
            let shared = self
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
            let now = now_unix_millis();
            let previous = shared.state;
            self.last_appraisal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(device_id.to_string(), now / 1000);
            if !changed && !recoverable_changed {
                // Nothing changed: nothing to write (the time of the appraisal is kept in
                // memory, `last_appraisal_unix`); a write per appraisal was a third of the
                // storage load.
                shared
            } else {
                let mut device = DeviceRecord::clone(&shared);
                device.recoverable = recoverable;
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
                        detail: format!("{} -> {}: {reason}", previous.name(), next.name()),
                    };
                    let sequence = match durability {
                        Durability::Now => self.storage.put_device_with_event(&device, &event)?,
                        Durability::WithCommit => self
                            .storage
                            .put_device_with_event_deferred(&device, &event)?,
                    };
                    tracing::info!(device = %device_id, from = previous.name(), to = next.name(), reason = %crate::untrusted_text::Escaped(reason), "state changed");
                    // Held under the transitions lock: changes are registered in audit order.
                    self.unpublished
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .written(sequence, Instant::now());
                    change = Some(StateChange {
                        sequence,
                        device_id: device_id.to_string(),
                        previous,
                        current: next,
                        reason: reason.to_string(),
                        result_jwt: self.last_result(device_id).unwrap_or_default(),
                        at_unix_millis: now,
                    });
                } else {
                    match durability {
                        Durability::Now => self.storage.put_device(&device)?,
                        Durability::WithCommit => self.storage.put_device_deferred(&device)?,
                    }
                }
                Arc::new(device)
            }
        };
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
        self.storage.append_event(&crate::server::admin_event(
            device_id, operator, action, comment,
        ))?;
        self.transition(device_id, input, &format!("{action} by {operator}"))
    }

    /// Rebuilds the CRL from the devices that are decommissioned or quarantined and the revoked
    /// operators, and gives it to the TLS layer: those certificates fail their next handshake.
    pub fn refresh_crl(&self) -> Result<(), StartError> {
        use trustchain_ca::revocation::{Reason, RevokedEntry};
        let entries: Vec<RevokedEntry> = self
            .storage
            .devices()?
            .into_iter()
            .filter_map(|d| {
                let reason = match d.state {
                    DeviceState::Decommissioned => Reason::Decommissioned,
                    DeviceState::Quarantined => Reason::Quarantined,
                    _ => return None,
                };
                Some(RevokedEntry {
                    serial_hex: d.client_certificate_serial_hex,
                    revoked_at_unix: d.state_changed_at_unix,
                    reason,
                })
            })
            .chain(self.ca.revoked_operators()?)
            .collect();
        let crl = self.ca.crl(&entries, now_unix_millis().max(1) as u64)?;
        self.tls.set_crls(vec![crl])?;
        Ok(())
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

    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    pub fn enroller(&self) -> &Enroller {
        &self.enroller
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
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
}
