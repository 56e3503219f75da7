//! Fail-open review (issue 20), enrollment and identity: each test performs an attack an
//! enrolled device's owner could try against a real verifier (TLS on loopback, real sled, real
//! CA) with a real swtpm TPM driven by the agent's own TPM code, and sees it refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use tonic::Code;
use trustchain_agent::config::EkChoice;
use trustchain_agent::identity::StateDir;
use trustchain_agent::tpm::Tpm;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{ActivationResponse, DeviceFacts, DeviceRequest, EnrollRequest};
use trustchain_swtpm::{SwtpmDevice, TestMakers, TpmMaker};
use trustchain_tests::TestVerifier;
use trustchain_verifier::enrollment::enroller::device_id_for;
use trustchain_verifier::storage::{DeviceState, EventKind};

struct Device {
    _swtpm: SwtpmDevice,
    tpm: Arc<Mutex<EsapiTpm>>,
    state: tempfile::TempDir,
}

fn device(maker: &TpmMaker, label: &str) -> Device {
    let swtpm = SwtpmDevice::start(maker, label).unwrap();
    let state = tempfile::tempdir().unwrap();
    let tpm = EsapiTpm::new(
        &swtpm.tcti(),
        state.path(),
        EkChoice::Rsa2048,
        AkAlgorithm::Rsa2048,
    )
    .unwrap();
    Device {
        _swtpm: swtpm,
        tpm: Arc::new(Mutex::new(tpm)),
        state,
    }
}

/// What the real agent sends for this TPM, claiming `facts`.
fn request(device: &Device, facts: DeviceFacts) -> EnrollRequest {
    let mut tpm = device.tpm.lock().unwrap();
    EnrollRequest {
        ek_certificate: tpm.ek_certificate(EkChoice::Rsa2048).unwrap(),
        ek_intermediates: Vec::new(),
        ek_public: tpm.ek_public(EkChoice::Rsa2048).unwrap(),
        ak_public: tpm.ak_public().unwrap(),
        facts: Some(facts),
    }
}

fn facts(hostname: &str) -> DeviceFacts {
    DeviceFacts {
        hostname: hostname.into(),
        ..Default::default()
    }
}

fn csr(device: &Device) -> Vec<u8> {
    StateDir::open(&device.state.path().join("agent"))
        .unwrap()
        .new_tls_key("x")
        .unwrap()
        .1
}

/// Begin, TPM2_ActivateCredential in the device's TPM, Complete: the device id, or the refusal
/// (at Begin or at Complete).
async fn enroll_by_hand(
    verifier: &TestVerifier,
    device: &Device,
    request: EnrollRequest,
) -> Result<String, tonic::Status> {
    let mut client = EnrollmentClient::new(verifier.channel(None).await.unwrap());
    let challenge = client.begin(request).await?.into_inner();
    let secret = device
        .tpm
        .lock()
        .unwrap()
        .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
        .unwrap();
    client
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret,
            client_csr: csr(device),
        })
        .await
        .map(|answer| answer.into_inner().device_id)
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
    let device_id = enroll_by_hand(&verifier, &dev, honest.clone())
        .await
        .unwrap();
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
    let mut prefixed = (honest.ek_public.len() as u16).to_be_bytes().to_vec();
    prefixed.extend_from_slice(&honest.ek_public);
    attack.ek_public = prefixed;
    attack.facts = Some(facts("gw-reborn-2"));
    let status = enroll_by_hand(&verifier, &dev, attack).await.unwrap_err();
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
