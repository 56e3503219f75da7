//! The enrollment decision (flow 1 in DESIGN.md), independent of gRPC.
//!
//! `begin` checks what the request alone can show (the EK chains to a trusted maker and is the
//! key in its certificate, the AK is an attestation key) and answers with a credential only the
//! TPM can unwrap; one attempt per EK certificate is kept. `complete` checks the unwrapped secret
//! and, only then, the device's standing (`standing`: decommissioned, trust list, changed claims,
//! identities held by other records), admits it and issues its certificates. Every refusal is
//! logged here with its full reason; only refusals of a peer that proved its TPM are written to
//! storage (an EK certificate is public: anyone may replay one at Begin). What the agent hears is
//! decided at the gRPC edge and says nothing about expected values.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trustchain_ca::Authority;

use super::credential::{MadeCredential, make_credential};
use super::ek_chain::{self, MakerAnchors};
pub use super::error::EnrollError;
use super::keys;
use super::standing;
use crate::device::{DeviceRecord, DeviceState, EkKind, EventKind, EventRecord, Facts};
use crate::storage::Storage;

/// Largest TPMT_PUBLIC accepted (an RSA-2048 key with a policy is ~350 bytes).
pub const MAX_PUBLIC_SIZE: usize = 1024;
/// Refusal reasons kept in memory for diagnosis.
pub const RECENT_REFUSALS: usize = 64;
/// Longest device fact string kept.
const MAX_FACT_LENGTH: usize = 256;

/// What an agent presents to enroll.
#[derive(Debug, Clone)]
pub struct EnrollmentRequest {
    pub ek_certificate: Vec<u8>,
    pub ek_intermediates: Vec<Vec<u8>>,
    pub ek_public: Vec<u8>,
    pub ak_public: Vec<u8>,
    pub facts: Facts,
}

/// The credential challenge for one attempt.
#[derive(Debug, Clone)]
pub struct ActivationChallenge {
    pub attempt_id: [u8; 16],
    pub device_id: String,
    pub credential_blob: Vec<u8>,
    pub encrypted_secret: Vec<u8>,
    pub expires_in: Duration,
}

/// A completed enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub device_id: String,
    pub ak_certificate: Vec<u8>,
    pub client_certificate: Vec<u8>,
    pub ca_chain: Vec<Vec<u8>>,
    pub ak_rotated: bool,
}

#[derive(Debug)]
struct Pending {
    device_id: String,
    expires: Instant,
    secret: [u8; 32],
    request: EnrollmentRequest,
    ak_name: Vec<u8>,
    ak_spki: Vec<u8>,
    ek_kind: EkKind,
    ek_serial_hex: String,
    ek_issuer: String,
    /// The device's lease, taken for this attempt (replicas); let go when the attempt ends,
    /// whichever way (completed, refused, expired, replaced).
    _lease: Option<AttemptLease>,
}

/// A device lease an enrollment attempt took (replicas: two replicas enrolling one EK at once
/// end with one enrollment and one refusal), released when dropped.
#[derive(Debug)]
struct AttemptLease {
    storage: Arc<dyn Storage>,
    device_id: String,
}

impl Drop for AttemptLease {
    fn drop(&mut self) {
        if let Err(error) = self.storage.release_lease(&self.device_id) {
            tracing::warn!(device = %self.device_id, %error, "cannot release an enrollment's lease");
        }
    }
}

/// Enrollment configuration.
#[derive(Debug, Clone)]
pub struct EnrollerConfig {
    pub activation_timeout: Duration,
    pub max_pending: usize,
}

/// Runs enrollments. Pending attempts live in memory only: a verifier restart voids them, and the
/// agent simply starts again (fail closed).
#[derive(Debug)]
pub struct Enroller {
    storage: Arc<dyn Storage>,
    ca: Arc<Authority>,
    /// Maker CAs from the configuration: used until a trust list is active.
    makers: MakerAnchors,
    trust: Arc<crate::reference::trust::TrustStore>,
    config: EnrollerConfig,
    pending: Mutex<HashMap<[u8; 16], Pending>>,
    /// The reasons of the latest refusals, for diagnosis (see [`Enroller::recent_refusals`]).
    recent_refusals: Mutex<VecDeque<String>>,
    rng: SystemRandom,
}

fn now_unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The device id: derived from the EK public key, so an agent cannot choose it. Give it the
/// canonical encoding ([`keys::EkMaterial::canonical`]): the same key in another encoding would
/// hash to another id.
pub fn device_id_for(ek_public: &[u8]) -> String {
    let digest = Sha256::digest(ek_public);
    format!("tc-{}", hex::encode(digest.get(..16).unwrap_or_default()))
}

fn clean_fact(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FACT_LENGTH)
        .collect()
}

impl Enroller {
    pub fn new(
        storage: Arc<dyn Storage>,
        ca: Arc<Authority>,
        makers: MakerAnchors,
        trust: Arc<crate::reference::trust::TrustStore>,
        config: EnrollerConfig,
    ) -> Self {
        Self {
            storage,
            ca,
            makers,
            trust,
            config,
            pending: Mutex::new(HashMap::new()),
            recent_refusals: Mutex::new(VecDeque::new()),
            rng: SystemRandom::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Pending>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, kind: EventKind, device_id: &str, detail: String) {
        let event = EventRecord {
            at_unix_millis: now_unix_millis(),
            kind,
            device_id: device_id.into(),
            detail,
        };
        if let Err(error) = self.storage.append_event(&event) {
            tracing::error!(%error, "could not record enrollment event");
        }
    }

    /// Refuses a peer that has not proved it holds the TPM behind the EK: anyone with a copy of a
    /// published EK certificate can send these, so they are logged (at the rate the edge's
    /// per-source limit allows) and kept in memory for diagnosis, never written to storage.
    fn refuse_unproven(&self, device_id: &str, error: EnrollError) -> EnrollError {
        if error.is_internal() {
            return error;
        }
        tracing::warn!(device = %crate::untrusted_text::Escaped(device_id), reason = %crate::untrusted_text::Escaped(&error), "enrollment refused (no proof of the TPM yet)");
        self.remember(&error);
        error
    }

    /// Refuses and records a device that proved its TPM by answering the credential challenge:
    /// every such refusal is an event, identity conflicts are alerts.
    fn refuse_proven(&self, device_id: &str, error: EnrollError) -> EnrollError {
        if error.is_internal() {
            return error;
        }
        tracing::warn!(device = %crate::untrusted_text::Escaped(device_id), reason = %crate::untrusted_text::Escaped(&error), "enrollment refused");
        self.remember(&error);
        self.record(standing::event_kind(&error), device_id, error.to_string());
        error
    }

    fn remember(&self, error: &EnrollError) {
        let mut recent = self
            .recent_refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if recent.len() >= RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(error.to_string());
    }

    /// The reasons of the latest refusals (at most [`RECENT_REFUSALS`], oldest first), proven or
    /// not: for diagnosis and tests. Storage holds only those of devices that proved their TPM.
    pub fn recent_refusals(&self) -> Vec<String> {
        self.recent_refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Drops the attempts whose activation time ran out (and lets their leases go).
    pub fn sweep_expired(&self) {
        let now = Instant::now();
        self.pending().retain(|_, p| p.expires > now);
    }

    /// Step 1: check the TPM's identity and make the credential.
    pub fn begin(
        &self,
        mut request: EnrollmentRequest,
    ) -> Result<ActivationChallenge, EnrollError> {
        if request.ek_public.len() > MAX_PUBLIC_SIZE {
            return Err(EnrollError::TooLarge("ek_public"));
        }
        if request.ak_public.len() > MAX_PUBLIC_SIZE {
            return Err(EnrollError::TooLarge("ak_public"));
        }
        // Every identity comes from the EK's one canonical encoding, whatever form it arrived in:
        // the device id, the trust list's EK hash and the stored record.
        let ek = match keys::ek_key_material(&request.ek_public) {
            Ok(ek) => ek,
            Err(error) => {
                let device_id = device_id_for(&request.ek_public);
                return Err(self.refuse_unproven(&device_id, EnrollError::EkPublic(error)));
            }
        };
        request.ek_public = ek.canonical.clone();
        let device_id = device_id_for(&request.ek_public);
        let result = self.check_evidence(&ek, &mut request);
        let (validated, ak) = match result {
            Ok(ok) => ok,
            Err(error) => return Err(self.refuse_unproven(&device_id, error)),
        };
        let MadeCredential {
            credential_blob,
            encrypted_secret,
            secret,
        } = make_credential(&validated.key, &ak.name)?;
        let mut attempt_id = [0u8; 16];
        self.rng
            .fill(&mut attempt_id)
            .map_err(|_| EnrollError::Random)?;

        let now = Instant::now();
        let mut pending = self.pending();
        // One live attempt per EK certificate: a new Begin replaces the older attempt, so a peer
        // replaying a published EK certificate holds one slot at most (and the genuine agent's
        // retry takes it back).
        pending.retain(|_, p| {
            p.expires > now
                && p.device_id != device_id
                && !(p.ek_issuer == validated.issuer && p.ek_serial_hex == validated.serial_hex)
        });
        if pending.len() >= self.config.max_pending {
            return Err(EnrollError::Busy);
        }
        // Replicas: the attempt holds the device's lease (taken after the older attempts and
        // their leases are gone; none if this replica holds it already, for the device's
        // stream); a device another replica enrolls or attests is refused.
        let lease = if self.storage.holds_lease(&device_id) {
            None
        } else if self.storage.acquire_lease(&device_id).unwrap_or(false) {
            Some(AttemptLease {
                storage: self.storage.clone(),
                device_id: device_id.clone(),
            })
        } else {
            return Err(self.refuse_unproven(
                &device_id,
                EnrollError::Elsewhere {
                    device_id: device_id.clone(),
                },
            ));
        };
        pending.insert(
            attempt_id,
            Pending {
                device_id: device_id.clone(),
                expires: now + self.config.activation_timeout,
                secret,
                request,
                ak_name: ak.name,
                ak_spki: ak.spki_der,
                ek_kind: validated.kind,
                ek_serial_hex: validated.serial_hex,
                ek_issuer: validated.issuer,
                _lease: lease,
            },
        );
        tracing::info!(device = %device_id, "enrollment: credential issued, awaiting activation");
        Ok(ActivationChallenge {
            attempt_id,
            device_id,
            credential_blob,
            encrypted_secret,
            expires_in: self.config.activation_timeout,
        })
    }

    /// The checks that need nothing but the request: the EK certificate chains to a trusted
    /// maker and holds this EK, and the AK is an attestation key. Cleans the facts.
    fn check_evidence(
        &self,
        ek: &keys::EkMaterial,
        request: &mut EnrollmentRequest,
    ) -> Result<(ek_chain::ValidatedEk, keys::AkInfo), EnrollError> {
        // The active trust list's maker CAs, once there is one; the configured ones before.
        let snapshot = self.trust.current();
        let revoked_cas: Vec<String> = snapshot
            .trust_list
            .as_ref()
            .map(|l| l.revoked.maker_cas.clone())
            .unwrap_or_default();
        // A revoked CA supplied by the device is not used to build the path.
        let supplied: Vec<Vec<u8>> = request
            .ek_intermediates
            .iter()
            .filter(|der| {
                let digest = hex::encode(Sha256::digest(der));
                !revoked_cas.iter().any(|r| r.eq_ignore_ascii_case(&digest))
            })
            .cloned()
            .collect();
        let validated = ek_chain::validate(
            &request.ek_certificate,
            &supplied,
            snapshot.maker_anchors().unwrap_or(&self.makers),
        )?;
        if ek.material != validated.public_material || ek.kind != validated.kind {
            return Err(EnrollError::EkMismatch);
        }
        let ak = keys::attestation_key(&request.ak_public).map_err(EnrollError::Ak)?;
        request.facts = Facts {
            hostname: clean_fact(&request.facts.hostname),
            model: clean_fact(&request.facts.model),
            firmware_version: clean_fact(&request.facts.firmware_version),
            device_class: clean_fact(&request.facts.device_class),
            agent_version: clean_fact(&request.facts.agent_version),
        };
        Ok((validated, ak))
    }

    /// Step 2: check the activation answer; admit the device and issue its certificates.
    pub fn complete(
        &self,
        attempt_id: &[u8],
        secret: &[u8],
        client_csr: &[u8],
    ) -> Result<Enrolled, EnrollError> {
        let key: [u8; 16] = attempt_id
            .try_into()
            .map_err(|_| EnrollError::UnknownAttempt)?;
        // Single use: the attempt is gone whatever happens next.
        let pending = self
            .pending()
            .remove(&key)
            .ok_or(EnrollError::UnknownAttempt)?;
        let device_id = pending.device_id.clone();
        if Instant::now() > pending.expires {
            return Err(self.refuse_unproven(
                &device_id,
                EnrollError::Expired {
                    device_id: device_id.clone(),
                },
            ));
        }
        if !bool::from(pending.secret.as_slice().ct_eq(secret)) {
            return Err(self.refuse_unproven(
                &device_id,
                EnrollError::WrongSecret {
                    device_id: device_id.clone(),
                },
            ));
        }
        // The peer holds the TPM. Now its standing, against the latest records and trust list
        // (a decommission or a new trust list may have come meanwhile).
        let now = now_unix_millis();
        let mut record = DeviceRecord {
            device_id: device_id.clone(),
            ek_kind: pending.ek_kind,
            ek_public: pending.request.ek_public,
            ek_certificate: pending.request.ek_certificate,
            ek_certificate_serial_hex: pending.ek_serial_hex,
            ek_certificate_issuer: pending.ek_issuer,
            ak_public: pending.request.ak_public,
            ak_name: pending.ak_name,
            ak_certificate: Vec::new(),
            client_certificate_serial_hex: String::new(),
            facts: pending.request.facts,
            enrolled_at_unix: now / 1000,
            ak_rotations: 0,
            state: DeviceState::Enrolled,
            state_reason: String::new(),
            state_changed_at_unix: now / 1000,
            recoverable: false,
            fresh_evidence_due_unix: None,
        };
        let existing = match standing::check(self.storage.as_ref(), &self.trust.current(), &record)
        {
            Ok(existing) => existing,
            Err(error) => return Err(self.refuse_proven(&device_id, error)),
        };

        let client = self
            .ca
            .issue_agent(client_csr, &device_id)
            .map_err(|e| match e {
                trustchain_ca::CaError::BadRequest(detail) => EnrollError::Csr(detail),
                other => EnrollError::Issue(other),
            })?;
        let ak_certificate = self.ca.issue_ak(
            &pending.ak_spki,
            &device_id,
            &record.ek_certificate_serial_hex,
        )?;

        let ak_rotated = existing
            .as_ref()
            .is_some_and(|d| d.ak_name != record.ak_name);
        record.ak_certificate = ak_certificate.der.clone();
        record.client_certificate_serial_hex = client.serial_hex.clone();
        if let Some(existing) = &existing {
            record.enrolled_at_unix = existing.enrolled_at_unix;
            record.ak_rotations = existing.ak_rotations + u32::from(ak_rotated);
            // Re-enrolling does not restart the window a restart gave a once-trusted device.
            record.fresh_evidence_due_unix = existing.fresh_evidence_due_unix;
            // A (re-)enrolled device must pass a fresh appraisal before it is trusted again,
            // except that a sticky untrusted state survives re-enrollment.
            record.state = match existing.state {
                DeviceState::Untrusted => DeviceState::Untrusted,
                DeviceState::Quarantined => DeviceState::Quarantined,
                _ => DeviceState::Enrolled,
            };
            record.state_reason = existing.state_reason.clone();
            record.recoverable = existing.recoverable;
        }
        // Durable before the agent hears "accepted".
        self.storage.put_device(&record)?;
        let kind = match (&existing, ak_rotated) {
            (None, _) => EventKind::Enrolled,
            (Some(_), true) => EventKind::AkRotated,
            (Some(_), false) => EventKind::ReEnrolled,
        };
        self.record(
            kind,
            &device_id,
            format!("client certificate {}", client.serial_hex),
        );
        tracing::info!(device = %device_id, ?kind, "enrollment accepted");
        Ok(Enrolled {
            device_id,
            ak_certificate: ak_certificate.der,
            client_certificate: client.der,
            ca_chain: self.ca.chain_der(),
            ak_rotated,
        })
    }
}

#[cfg(test)]
#[path = "enroller_tests.rs"]
mod tests;
