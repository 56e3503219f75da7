//! The enrollment checks that depend on what the verifier already knows about a device: its
//! record (decommissioned, claims changed), other records (hostname, EK certificate) and the
//! trust list (admitted, revoked).
//!
//! They run in `Enroller::complete`, only after the peer answered the credential challenge and so
//! proved it holds the TPM behind the EK: an EK certificate is public, and if these ran at Begin,
//! anyone holding a copy could make the verifier write refusals and alerts to the audit log (or
//! learn a device's standing from the answer). Their refusals are recorded; identity conflicts are
//! alerts.

use super::error::EnrollError;
use crate::device::{DeviceRecord, DeviceState, EventKind, Facts};
use crate::reference::trust::Snapshot;
use crate::storage::Storage;

/// The event a refusal of a device that proved its TPM is recorded as.
pub(super) fn event_kind(error: &EnrollError) -> EventKind {
    match error {
        EnrollError::IdentityConflict { .. }
        | EnrollError::Decommissioned { .. }
        | EnrollError::EkCertificateHeld { .. }
        | EnrollError::ClaimChanged { .. } => EventKind::Alert,
        _ => EventKind::EnrollmentRefused,
    }
}

/// The first claim a re-enrolling device may not change: (field, recorded, claimed). The class
/// and model a device claims are only reported facts (its class comes from the trust list), but a
/// device that starts claiming another is misconfigured or trying its luck.
fn changed_claim(recorded: &Facts, claimed: &Facts) -> Option<(&'static str, String, String)> {
    [
        (
            "device_class",
            &recorded.device_class,
            &claimed.device_class,
        ),
        ("model", &recorded.model, &claimed.model),
    ]
    .into_iter()
    .find(|(_, recorded, claimed)| recorded != claimed)
    .map(|(field, recorded, claimed)| (field, recorded.clone(), claimed.clone()))
}

/// Checks the record a device that proved its TPM would get (its AK, certificates and state are
/// not looked at) against the latest records and trust list; returns its existing record.
pub(super) fn check(
    storage: &dyn Storage,
    snapshot: &Snapshot,
    record: &DeviceRecord,
) -> Result<Option<DeviceRecord>, EnrollError> {
    let device_id = record.device_id.as_str();
    let existing = storage.device(device_id)?;
    if existing
        .as_ref()
        .is_some_and(|d| d.state == DeviceState::Decommissioned)
    {
        return Err(EnrollError::Decommissioned {
            device_id: device_id.into(),
        });
    }
    if snapshot.trust_list.is_some() {
        snapshot
            .admits_at_enrollment(record)
            .map_err(EnrollError::TrustList)?;
    }
    if let Some(existing) = &existing
        && let Some((field, recorded, claimed)) = changed_claim(&existing.facts, &record.facts)
    {
        return Err(EnrollError::ClaimChanged {
            device_id: device_id.into(),
            field,
            recorded,
            claimed,
        });
    }
    let hostname = &record.facts.hostname;
    if !hostname.is_empty()
        && let Some(holder) = storage.device_by_hostname(hostname)?
        && holder.device_id != device_id
        && holder.state != DeviceState::Decommissioned
    {
        return Err(EnrollError::IdentityConflict {
            hostname: hostname.clone(),
            existing: holder.device_id,
            claimant: device_id.into(),
        });
    }
    // One EK certificate, one device: another record holding it (decommissioned or not) means
    // the same TPM under another id, or a certificate copied onto another key.
    if let Some(holder) = storage.other_device_with_ek_certificate(
        &record.ek_certificate_issuer,
        &record.ek_certificate_serial_hex,
        device_id,
    )? {
        return Err(EnrollError::EkCertificateHeld {
            issuer: record.ek_certificate_issuer.clone(),
            serial_hex: record.ek_certificate_serial_hex.clone(),
            existing: holder.device_id,
            claimant: device_id.into(),
        });
    }
    Ok(existing)
}
