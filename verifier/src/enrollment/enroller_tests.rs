//! The enroller without the network: attempts per EK certificate, and what is written before and
//! after the peer proves its TPM. (End-to-end refusals are in `tests/tests/enrollment.rs` and
//! `tests/tests/fail_open_identity.rs`.)

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use super::*;
use crate::enrollment::ek_template::template_with;
use crate::evidence::tpm::{EccCurve, PublicKey};
use crate::reference::trust::TrustStore;
use crate::storage::SledStorage;

struct Setup {
    enroller: Enroller,
    storage: Arc<dyn Storage>,
    request: EnrollmentRequest,
    _dir: tempfile::TempDir,
}

fn gce_ak() -> Vec<u8> {
    let path = format!(
        "{}/../../shared/testdata/quotes/gce-cos-85-no-nonce/ak_pub.tpmt_public.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("testdata {path} missing: {e}"))
}

/// A P-256 EK in the default template and its certificate from a maker root.
fn ek(root: &(CertificateParams, KeyPair)) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw();
    let (_, public) = template_with(&PublicKey::Ecc {
        curve: EccCurve::NistP256,
        x: point[1..33].to_vec(),
        y: point[33..65].to_vec(),
    })
    .unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "EK");
    let certificate = params
        .signed_by(&key, &Issuer::from_params(&root.0, &root.1))
        .unwrap();
    (public, certificate.der().to_vec())
}

fn setup(max_pending: usize) -> (Setup, (CertificateParams, KeyPair)) {
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(SledStorage::open(&dir.path().join("db")).unwrap());
    let ca = Arc::new(Authority::create(&dir.path().join("ca"), "Test").unwrap());
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "Maker Root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root_der = root.self_signed(&root_key).unwrap().der().to_vec();
    let makers = MakerAnchors {
        anchors: vec![root_der],
        intermediates: Vec::new(),
    };
    let trust = Arc::new(TrustStore::open(storage.clone(), None).unwrap());
    let enroller = Enroller::new(
        storage.clone(),
        ca,
        makers,
        trust,
        EnrollerConfig {
            activation_timeout: Duration::from_secs(60),
            max_pending,
        },
    );
    let root = (root, root_key);
    let (ek_public, ek_certificate) = ek(&root);
    let request = EnrollmentRequest {
        ek_certificate,
        ek_intermediates: Vec::new(),
        ek_public,
        ak_public: gce_ak(),
        facts: Facts {
            hostname: "gw-1".into(),
            ..Facts::default()
        },
    };
    (
        Setup {
            enroller,
            storage,
            request,
            _dir: dir,
        },
        root,
    )
}

fn events(storage: &Arc<dyn Storage>) -> Vec<EventRecord> {
    storage
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// The secret the TPM would unwrap (the test stands in for TPM2_ActivateCredential).
fn secret_of(enroller: &Enroller, attempt_id: &[u8; 16]) -> [u8; 32] {
    enroller.pending().get(attempt_id).unwrap().secret
}

#[test]
fn a_new_begin_for_the_same_ek_certificate_replaces_the_older_attempt() {
    let (s, root) = setup(10);
    let first = s.enroller.begin(s.request.clone()).unwrap();
    let second = s.enroller.begin(s.request.clone()).unwrap();
    assert_eq!(
        s.enroller.pending().len(),
        1,
        "one live attempt per EK certificate"
    );
    assert!(matches!(
        s.enroller.complete(&first.attempt_id, &[0; 32], b""),
        Err(EnrollError::UnknownAttempt)
    ));
    assert!(s.enroller.pending().contains_key(&second.attempt_id));
    // A flood of Begins with one published certificate holds one slot; other TPMs still get in.
    let (s, root2) = setup(2);
    for _ in 0..50 {
        s.enroller.begin(s.request.clone()).unwrap();
    }
    let (ek_public, ek_certificate) = ek(&root2);
    let other = EnrollmentRequest {
        ek_public,
        ek_certificate,
        ..s.request.clone()
    };
    s.enroller.begin(other).unwrap();
    assert_eq!(s.enroller.pending().len(), 2);
    drop(root);
}

#[test]
fn refusals_before_activation_write_nothing() {
    let (s, root) = setup(10);
    // Another EK than the certificate's.
    let (other_ek, _) = ek(&root);
    let mismatched = EnrollmentRequest {
        ek_public: other_ek,
        ..s.request.clone()
    };
    assert!(matches!(
        s.enroller.begin(mismatched),
        Err(EnrollError::EkMismatch)
    ));
    // An AK that may decrypt.
    let mut ak = gce_ak();
    ak[5] |= 0x02;
    let bad_ak = EnrollmentRequest {
        ak_public: ak,
        ..s.request.clone()
    };
    assert!(matches!(s.enroller.begin(bad_ak), Err(EnrollError::Ak(_))));
    // A wrong activation answer, and one for an unknown attempt.
    let challenge = s.enroller.begin(s.request.clone()).unwrap();
    assert!(matches!(
        s.enroller.complete(&challenge.attempt_id, &[7; 32], b""),
        Err(EnrollError::WrongSecret { .. })
    ));
    assert!(matches!(
        s.enroller.complete(&[1; 16], &[7; 32], b""),
        Err(EnrollError::UnknownAttempt)
    ));
    assert!(events(&s.storage).is_empty(), "{:?}", events(&s.storage));
    let reasons = s.enroller.recent_refusals();
    assert!(
        reasons.iter().any(|r| r.contains("differs from the key")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("wrong secret")),
        "{reasons:?}"
    );
}

#[test]
fn a_decommissioned_tpm_is_refused_and_alerted_only_once_it_proves_its_tpm() {
    let (s, _root) = setup(10);
    let challenge = s.enroller.begin(s.request.clone()).unwrap();
    let secret = secret_of(&s.enroller, &challenge.attempt_id);
    let key = rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    let enrolled = s
        .enroller
        .complete(&challenge.attempt_id, &secret, &csr)
        .unwrap();
    let mut record = s.storage.device(&enrolled.device_id).unwrap().unwrap();
    record.state = DeviceState::Decommissioned;
    s.storage.put_device(&record).unwrap();
    let before = events(&s.storage).len();

    // Anyone holding the published EK certificate can Begin: it is answered like any other
    // (no oracle), and nothing is written.
    let again = s.enroller.begin(s.request.clone()).unwrap();
    assert_eq!(events(&s.storage).len(), before);
    // The TPM's own answer: refused and alerted.
    let secret = secret_of(&s.enroller, &again.attempt_id);
    assert!(matches!(
        s.enroller.complete(&again.attempt_id, &secret, &csr),
        Err(EnrollError::Decommissioned { .. })
    ));
    let after = events(&s.storage);
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap().kind, EventKind::Alert);
}

#[test]
fn an_ek_certificate_another_record_holds_is_refused_and_alerted() {
    let (s, _root) = setup(10);
    // A record left by an enrollment under another encoding of the same EK (before ids were
    // derived from the canonical form): another id, the same EK certificate.
    let challenge = s.enroller.begin(s.request.clone()).unwrap();
    let validated = s
        .enroller
        .pending()
        .get(&challenge.attempt_id)
        .map(|p| (p.ek_issuer.clone(), p.ek_serial_hex.clone()));
    let (issuer, serial_hex) = validated.unwrap();
    let legacy = DeviceRecord {
        device_id: "tc-00000000000000000000000000000000".into(),
        ek_kind: EkKind::EccP256,
        ek_public: Vec::new(),
        ek_certificate: s.request.ek_certificate.clone(),
        ek_certificate_serial_hex: serial_hex,
        ek_certificate_issuer: issuer,
        ak_public: Vec::new(),
        ak_name: Vec::new(),
        ak_certificate: Vec::new(),
        client_certificate_serial_hex: String::new(),
        facts: Facts::default(),
        enrolled_at_unix: 0,
        ak_rotations: 0,
        state: DeviceState::Decommissioned,
        state_reason: String::new(),
        state_changed_at_unix: 0,
        recoverable: false,
        fresh_evidence_due_unix: None,
    };
    s.storage.put_device(&legacy).unwrap();
    let secret = secret_of(&s.enroller, &challenge.attempt_id);
    assert!(matches!(
        s.enroller.complete(&challenge.attempt_id, &secret, b""),
        Err(EnrollError::EkCertificateHeld { .. })
    ));
    let events = events(&s.storage);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Alert);
    assert!(events[0].detail.contains(&legacy.device_id), "{events:?}");
    assert!(s.storage.device(&challenge.device_id).unwrap().is_none());
}
