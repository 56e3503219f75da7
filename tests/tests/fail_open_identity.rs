//! Fail-open review (issue 20), enrollment and identity: each test performs an attack an
//! enrolled device's owner could try against a real verifier (TLS on loopback, real sled, real
//! CA) with a real swtpm TPM driven by the agent's own TPM code, and sees it refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use sha2::{Digest, Sha256};

use tonic::Code;
use trustchain_agent::config::EkChoice;
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{DeviceFacts, DeviceRequest, EnrollRequest};
use trustchain_swtpm::{TestMakers, TpmMaker};
use trustchain_tests::deployment::{Document, signing_key, try_import};
use trustchain_tests::hand_enroll::{BareDevice, facts};
use trustchain_tests::{TestVerifier, maker_issuer};
use trustchain_verifier::audit::SigningKey;
use trustchain_verifier::device::{DeviceState, EventKind};
use trustchain_verifier::enrollment::enroller::device_id_for;
use trustchain_verifier::reference::documents::{
    DeviceMatch, MakerCa, Revocations, TRUST_LIST_KIND, TrustList,
};
use trustchain_verifier::reference::signed::{self, TRUST_LIST_TYPE};

fn device(maker: &TpmMaker, label: &str) -> BareDevice {
    BareDevice::start(maker, label, EkChoice::Rsa2048).unwrap()
}

/// What the real agent sends for this TPM, claiming `facts`.
fn request(device: &BareDevice, facts: DeviceFacts) -> EnrollRequest {
    device.request(EkChoice::Rsa2048, facts).unwrap()
}

/// The same EK sent as a TPM2B_PUBLIC: size-prefixed, the same key in other bytes.
fn size_prefixed(ek_public: &[u8]) -> Vec<u8> {
    let mut prefixed = (ek_public.len() as u16).to_be_bytes().to_vec();
    prefixed.extend_from_slice(ek_public);
    prefixed
}

fn assert_refused(status: &tonic::Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "enrollment refused",
        "the agent learns nothing more"
    );
}

fn alerts(verifier: &TestVerifier) -> Vec<String> {
    verifier
        .service
        .storage()
        .events(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == EventKind::Alert)
        .map(|(_, e)| e.detail)
        .collect()
}

/// Item 1: the same TPM re-enrolling with its EK sent as a TPM2B_PUBLIC (size-prefixed) after
/// it was decommissioned. Before the fix the prefixed bytes hashed to a new device id, and the
/// decommissioned TPM enrolled again as a new device.
#[tokio::test(flavor = "multi_thread")]
async fn a_decommissioned_tpm_resending_its_ek_size_prefixed_is_still_decommissioned() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-reborn");
    let honest = request(&dev, facts("gw-reborn"));
    let device_id = dev.enroll_by_hand(&verifier, honest.clone()).await.unwrap();
    assert_eq!(
        device_id,
        device_id_for(&honest.ek_public),
        "an honest agent's id is unchanged: the bare TPMT_PUBLIC is the canonical form"
    );
    let mut admin = AdminClient::new(verifier.operator_channel().await.unwrap());
    admin
        .decommission_device(DeviceRequest {
            device_id: device_id.clone(),
            comment: "end of life".into(),
        })
        .await
        .unwrap();

    // The attacker wraps the same EK in a TPM2B size prefix: the same key, other bytes.
    let mut attack = honest.clone();
    attack.ek_public = size_prefixed(&honest.ek_public);
    attack.facts = Some(facts("gw-reborn-2"));
    let status = dev.enroll_by_hand(&verifier, attack).await.unwrap_err();
    assert_refused(&status);

    let devices = verifier.service.storage().devices().unwrap();
    assert_eq!(devices.len(), 1, "no second record for the same TPM");
    assert_eq!(devices[0].device_id, device_id);
    assert_eq!(devices[0].state, DeviceState::Decommissioned);
    assert_eq!(
        devices[0].ek_public, honest.ek_public,
        "the stored EK is the canonical form"
    );
    let alerts = alerts(&verifier);
    assert!(
        alerts
            .iter()
            .any(|a| a.contains(&device_id) && a.contains("decommissioned")),
        "{alerts:?}"
    );
}

/// A verifier with a trust-list authority, and the authority's key.
async fn verifier_with_authority(
    makers: &TestMakers,
    keys: &std::path::Path,
) -> (TestVerifier, SigningKey) {
    let authority = signing_key(keys, "trust-list-authority").unwrap();
    let public = keys.join("trust-list-authority.pub");
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.trust_list_authority = Some(public);
    })
    .await
    .unwrap();
    (verifier, authority)
}

/// A trust list admitting the test maker's TPMs through `devices`.
fn trust_list(maker: &TpmMaker, version: u64, devices: Vec<DeviceMatch>) -> TrustList {
    TrustList {
        kind: TRUST_LIST_KIND.into(),
        version,
        issued_at: "2026-12-04T00:00:00Z".into(),
        maker_cas: [maker.root_pem(), maker.intermediate_pem()]
            .iter()
            .enumerate()
            .map(|(i, pem)| MakerCa {
                name: format!("test maker {i}"),
                certificate_pem: pem.to_string(),
            })
            .collect(),
        devices,
        manifest_signers: Vec::new(),
        policy_signers: Vec::new(),
        revoked: Revocations::default(),
    }
}

async fn import_trust_list(
    verifier: &TestVerifier,
    list: &TrustList,
    authority: &SigningKey,
) -> Result<String, tonic::Status> {
    let document = signed::sign(list, TRUST_LIST_TYPE, authority).unwrap();
    try_import(verifier, Document::TrustList, &document).await
}

async fn import_policy(verifier: &TestVerifier, name: &str, class: &str, interval: u64) {
    let text = format!(
        "name = \"{name}\"\nversion = 1\n\n[match]\ndevice_classes = [\"{class}\"]\n\n[tier]\ninterval_seconds = {interval}\n"
    );
    try_import(verifier, Document::Policy, &text).await.unwrap();
}

fn governing_policy(verifier: &TestVerifier, device_id: &str) -> (Option<String>, Duration) {
    let record = verifier
        .service
        .storage()
        .device(device_id)
        .unwrap()
        .unwrap();
    let policy = verifier
        .service
        .trust()
        .current()
        .policy_for(&record)
        .map(|p| p.name.clone());
    (policy, verifier.service.interval_for(&record))
}

/// Item 3: a device in the strict tier re-enrolls claiming a lax class. Before the fix the
/// claim replaced its facts, and the policy and interval followed the claim.
#[tokio::test(flavor = "multi_thread")]
async fn a_strict_device_re_enrolling_with_a_lax_class_claim_is_refused_and_stays_strict() {
    let makers = TestMakers::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (verifier, authority) = verifier_with_authority(&makers, keys.path()).await;
    let plc = device(&makers.trusted, "plc-line-3");
    let other = device(&makers.trusted, "gw-other");
    let plc_request = request(
        &plc,
        DeviceFacts {
            hostname: "plc-line-3".into(),
            device_class: "plc".into(),
            model: "controller".into(),
            ..Default::default()
        },
    );
    // The operator's assignment: this TPM (by its EK) is a PLC; every other TPM of the maker
    // is a gateway.
    let list = trust_list(
        &makers.trusted,
        1,
        vec![
            DeviceMatch {
                ek_public_sha256: Some(hex::encode(Sha256::digest(&plc_request.ek_public))),
                device_class: Some("plc".into()),
                ..DeviceMatch::default()
            },
            DeviceMatch {
                ek_issuer: Some(maker_issuer(&makers.trusted)),
                device_class: Some("gateway".into()),
                ..DeviceMatch::default()
            },
        ],
    );
    import_trust_list(&verifier, &list, &authority)
        .await
        .unwrap();
    import_policy(&verifier, "lax", "gateway", 600).await;
    import_policy(&verifier, "strict", "plc", 5).await;

    let plc_id = plc
        .enroll_by_hand(&verifier, plc_request.clone())
        .await
        .unwrap();
    let strict = (Some("strict".to_string()), Duration::from_secs(5));
    assert_eq!(governing_policy(&verifier, &plc_id), strict);

    // The attack: the same TPM and AK, now claiming to be a gateway.
    let mut attack = plc_request.clone();
    attack.facts = Some(DeviceFacts {
        device_class: "gateway".into(),
        ..plc_request.facts.clone().unwrap()
    });
    let status = plc.enroll_by_hand(&verifier, attack).await.unwrap_err();
    assert_refused(&status);
    let alerts = alerts(&verifier);
    assert!(
        alerts.iter().any(|a| a.contains(&plc_id)
            && a.contains("device_class")
            && a.contains("\"gateway\"")),
        "{alerts:?}"
    );
    let record = verifier.service.storage().device(&plc_id).unwrap().unwrap();
    assert_eq!(
        record.facts.device_class, "plc",
        "the record is kept as it was"
    );
    assert_eq!(governing_policy(&verifier, &plc_id), strict);

    // A changed model is refused the same way.
    let mut remodelled = plc_request.clone();
    remodelled.facts = Some(DeviceFacts {
        model: "lab sample".into(),
        ..plc_request.facts.clone().unwrap()
    });
    assert_refused(&plc.enroll_by_hand(&verifier, remodelled).await.unwrap_err());

    // A claim never picks the policy: a gateway's TPM claiming "plc" is still a gateway.
    let liar = request(
        &other,
        DeviceFacts {
            hostname: "gw-other".into(),
            device_class: "plc".into(),
            ..Default::default()
        },
    );
    let liar_id = other.enroll_by_hand(&verifier, liar).await.unwrap();
    assert_eq!(
        governing_policy(&verifier, &liar_id),
        (Some("lax".to_string()), Duration::from_secs(600))
    );

    // A trust-list entry admitting by model alone (the agent's word) is refused at import.
    let by_model = trust_list(
        &makers.trusted,
        2,
        vec![DeviceMatch {
            model: Some("controller".into()),
            device_class: Some("plc".into()),
            ..DeviceMatch::default()
        }],
    );
    let refused = import_trust_list(&verifier, &by_model, &authority)
        .await
        .unwrap_err();
    assert!(refused.message().contains("names no EK"), "{refused:?}");
}

/// Item 1, the trust-list variant: a TPM revoked by its EK hash re-enrolls with its EK
/// size-prefixed (another hash of the bytes as sent). Before the fix it was a new device the
/// revocation did not name.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_tpm_resending_its_ek_size_prefixed_is_still_revoked() {
    let makers = TestMakers::generate().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (verifier, authority) = verifier_with_authority(&makers, keys.path()).await;
    let dev = device(&makers.trusted, "gw-revoked");
    let honest = request(&dev, facts("gw-revoked"));
    let mut list = trust_list(&makers.trusted, 1, Vec::new());
    list.revoked.devices = vec![DeviceMatch {
        ek_public_sha256: Some(hex::encode(Sha256::digest(&honest.ek_public))),
        ..DeviceMatch::default()
    }];
    import_trust_list(&verifier, &list, &authority)
        .await
        .unwrap();

    let mut attack = honest.clone();
    attack.ek_public = size_prefixed(&honest.ek_public);
    let status = dev.enroll_by_hand(&verifier, attack).await.unwrap_err();
    assert_refused(&status);
    assert!(verifier.service.storage().devices().unwrap().is_empty());
    let events = verifier.service.storage().events(0, 1000).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.kind == EventKind::EnrollmentRefused
                && e.detail.contains("revoked by trust list v1")
                && e.device_id == device_id_for(&honest.ek_public)),
        "{events:#?}"
    );
}
