//! Which devices a trust-list entry names, and the class the operator assigns them.
//!
//! A device's class picks its policy and its challenge interval, so it must never be the
//! device's own word: the agent's `device_class` and `model` are what it claims, kept as reported
//! facts. Membership comes from the signed trust list, by what the device cannot choose: its EK
//! (the canonical EK's SHA-256, or its EK certificate's issuer and serial, or its issuer alone for
//! every TPM of one maker). A `model` on an entry only narrows an entry that names the EK.

use sha2::{Digest, Sha256};

use super::documents::{DeviceMatch, TrustList};
use crate::device::DeviceRecord;

/// SHA-256 of the device's stored (canonical) EK TPMT_PUBLIC, hex: what `ek_public_sha256` names.
pub fn ek_hash(device: &DeviceRecord) -> String {
    hex::encode(Sha256::digest(&device.ek_public))
}

/// Whether the entry names the device by its EK, rather than by the agent's word alone.
fn names_ek(entry: &DeviceMatch) -> bool {
    entry.ek_public_sha256.is_some() || entry.ek_issuer.is_some()
}

/// Whether every field the entry names matches the device; an entry naming nothing matches
/// nothing. This is what revocations use: an entry on the agent's word (a model) can only make
/// the verifier stricter there.
pub fn matches_every_named_field(entry: &DeviceMatch, device: &DeviceRecord) -> bool {
    let mut any = false;
    if let Some(hash) = &entry.ek_public_sha256 {
        any = true;
        if !hash.eq_ignore_ascii_case(&ek_hash(device)) {
            return false;
        }
    }
    if let Some(serial) = &entry.ek_serial_hex {
        any = true;
        if !serial.eq_ignore_ascii_case(&device.ek_certificate_serial_hex) {
            return false;
        }
    }
    if let Some(issuer) = &entry.ek_issuer {
        any = true;
        if *issuer != device.ek_certificate_issuer {
            return false;
        }
    }
    if let Some(model) = &entry.model {
        any = true;
        if *model != device.facts.model {
            return false;
        }
    }
    any
}

/// Whether an admission entry (`devices`) admits the device: it names the device's EK, and every
/// field it names matches. An entry stored before model-only entries were refused at import
/// admits nothing (fail closed).
pub fn admits(entry: &DeviceMatch, device: &DeviceRecord) -> bool {
    names_ek(entry) && matches_every_named_field(entry, device)
}

/// The class the trust list assigns the device: that of the first admission entry that admits
/// it and names one. None: the device has no class (only policies naming its id, or a default
/// policy, govern it).
pub fn assigned_class<'a>(list: &'a TrustList, device: &DeviceRecord) -> Option<&'a str> {
    list.devices
        .iter()
        .filter(|entry| admits(entry, device))
        .find_map(|entry| entry.device_class.as_deref())
}

/// Import-time checks of the entries: every admission entry names the EK (a `model` alone is
/// the agent's word), a serial comes with its issuer (serials are unique per issuer only), and
/// a class is given only on admission entries.
pub fn check_entries(list: &TrustList) -> Result<(), String> {
    for (index, entry) in list.devices.iter().enumerate() {
        if !names_ek(entry) {
            return Err(format!(
                "devices[{index}] names no EK (ek_public_sha256, or ek_issuer with or without \
                 ek_serial_hex): a model alone is the agent's own word and admits nothing"
            ));
        }
        if entry.device_class.as_deref().is_some_and(str::is_empty) {
            return Err(format!("devices[{index}]: device_class is empty"));
        }
    }
    let all = list
        .devices
        .iter()
        .map(|e| ("devices", e))
        .chain(list.revoked.devices.iter().map(|e| ("revoked.devices", e)));
    for (index, (field, entry)) in all.enumerate() {
        if entry.ek_serial_hex.is_some() && entry.ek_issuer.is_none() {
            return Err(format!(
                "{field} entry {index}: ek_serial_hex needs ek_issuer (serials are unique per issuer)"
            ));
        }
    }
    if list
        .revoked
        .devices
        .iter()
        .any(|e| e.device_class.is_some())
    {
        return Err("revoked.devices: a device_class means nothing in a revocation".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceState, EkKind, Facts};

    fn device(model: &str, claimed_class: &str) -> DeviceRecord {
        DeviceRecord {
            device_id: "tc-1".into(),
            ek_kind: EkKind::Rsa2048,
            ek_public: vec![1, 2, 3],
            ek_certificate: Vec::new(),
            ek_certificate_serial_hex: "01".into(),
            ek_certificate_issuer: "CN=x".into(),
            ak_public: Vec::new(),
            ak_name: Vec::new(),
            ak_certificate: Vec::new(),
            client_certificate_serial_hex: String::new(),
            facts: Facts {
                model: model.into(),
                device_class: claimed_class.into(),
                ..Facts::default()
            },
            enrolled_at_unix: 0,
            ak_rotations: 0,
            state: DeviceState::Enrolled,
            state_reason: String::new(),
            state_changed_at_unix: 0,
            recoverable: false,
            fresh_evidence_due_unix: None,
        }
    }

    fn list(devices: Vec<DeviceMatch>) -> TrustList {
        TrustList {
            devices,
            ..TrustList::empty(1)
        }
    }

    #[test]
    fn an_entry_naming_nothing_matches_no_device() {
        let device = device("m", "");
        assert!(!matches_every_named_field(&DeviceMatch::default(), &device));
        let by_serial = DeviceMatch {
            ek_serial_hex: Some("01".into()),
            ..DeviceMatch::default()
        };
        assert!(matches_every_named_field(&by_serial, &device));
        let both = DeviceMatch {
            ek_serial_hex: Some("01".into()),
            ek_issuer: Some("CN=y".into()),
            ..DeviceMatch::default()
        };
        assert!(!matches_every_named_field(&both, &device));
    }

    #[test]
    fn a_model_alone_admits_nothing_and_is_refused_at_import() {
        let by_model = DeviceMatch {
            model: Some("m".into()),
            ..DeviceMatch::default()
        };
        let device = device("m", "plc");
        assert!(!admits(&by_model, &device), "the agent's word alone");
        assert!(check_entries(&list(vec![by_model.clone()])).is_err());
        let with_issuer = DeviceMatch {
            ek_issuer: Some("CN=x".into()),
            ..by_model
        };
        assert!(admits(&with_issuer, &device));
        assert!(check_entries(&list(vec![with_issuer])).is_ok());
        let lone_serial = DeviceMatch {
            ek_public_sha256: Some(ek_hash(&device)),
            ek_serial_hex: Some("01".into()),
            ..DeviceMatch::default()
        };
        assert!(check_entries(&list(vec![lone_serial])).is_err());
    }

    #[test]
    fn the_class_comes_from_the_trust_list_never_from_the_claim() {
        let device = device("m", "gateway");
        let strict = DeviceMatch {
            ek_public_sha256: Some(ek_hash(&device)),
            device_class: Some("plc".into()),
            ..DeviceMatch::default()
        };
        let claimed = DeviceMatch {
            model: Some("m".into()),
            device_class: Some("gateway".into()),
            ..DeviceMatch::default()
        };
        let trust = list(vec![claimed, strict]);
        assert_eq!(assigned_class(&trust, &device), Some("plc"));
        assert_eq!(assigned_class(&list(Vec::new()), &device), None);
    }
}
