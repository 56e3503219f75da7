//! Enrollment end to end: real swtpm devices, the real agent TPM code, a real verifier over gRPC
//! with TLS on loopback, a real CA and sled on disk. Each refusal is its own test, and checks that
//! the agent learns nothing but "refused" while the verifier records the reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use tonic::Code;
use trustchain_agent::config::EkChoice;
use trustchain_agent::enroll::enroll;
use trustchain_agent::identity::StateDir;
use trustchain_agent::tpm::Tpm;
use trustchain_agent::tpm::esapi::{AkAlgorithm, EsapiTpm};
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    ActivationChallenge, ActivationResponse, EnrollRequest, ListDevicesRequest,
};
use trustchain_swtpm::{TestMakers, TpmMaker};
use trustchain_tests::TestVerifier;
use trustchain_tests::hand_enroll::{BareDevice, facts};
use trustchain_verifier::device::{DeviceState, EventKind};

fn device(maker: &TpmMaker, label: &str, ek: EkChoice) -> BareDevice {
    BareDevice::start(maker, label, ek).unwrap()
}

fn request(device: &BareDevice, ek: EkChoice, hostname: &str) -> EnrollRequest {
    device.request(ek, facts(hostname)).unwrap()
}

async fn client(verifier: &TestVerifier) -> EnrollmentClient<tonic::transport::Channel> {
    EnrollmentClient::new(verifier.channel(None).await.unwrap())
}

fn csr(device: &BareDevice) -> Vec<u8> {
    device.csr().unwrap()
}

/// Asserts a refusal that reveals nothing, and that the verifier logged `reason`. Refusals of a
/// peer that has not proved its TPM are logged only (issue 20, item 15); those after a
/// successful activation are also in storage, which the alert tests check.
fn assert_refused(status: &tonic::Status, verifier: &TestVerifier, reason: &str) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "enrollment refused",
        "the agent learns nothing more"
    );
    let reasons = verifier.service.enroller().recent_refusals();
    assert!(
        reasons.iter().any(|r| r.contains(reason)),
        "verifier logged {reason:?}; refusals: {reasons:#?}"
    );
}

/// Asserts that nothing about an unproven peer reached storage.
fn assert_nothing_written(verifier: &TestVerifier, before: usize) {
    assert_eq!(
        verifier.service.storage().events(0, 1000).unwrap().len(),
        before,
        "a refusal of a peer that had not proved its TPM was written to storage"
    );
}

async fn begin(
    verifier: &TestVerifier,
    request: EnrollRequest,
) -> Result<ActivationChallenge, tonic::Status> {
    client(verifier)
        .await
        .begin(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_enrolls_restarts_and_is_recognised_with_the_same_ak() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-restart", EkChoice::Rsa2048);
    let config = verifier.agent_config(&dev.swtpm, dev.state.path(), EkChoice::Rsa2048);
    let state = StateDir::open(dev.state.path()).unwrap();

    let first = enroll(&config, &dev.tpm, &state).await.unwrap();
    assert!(first.device_id.starts_with("tc-"));
    assert_eq!(state.load().unwrap(), first, "certificates and key saved");
    let record = verifier
        .service
        .storage()
        .device(&first.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(record.state, DeviceState::Enrolled);
    assert_eq!(record.facts.hostname, "gw-restart");

    // The agent restarts: a new process, a new TPM connection, the same state directory.
    let tpm = EsapiTpm::new(
        &dev.swtpm.tcti(),
        dev.state.path(),
        EkChoice::Rsa2048,
        AkAlgorithm::Rsa2048,
    )
    .unwrap();
    let again = enroll(&config, &Arc::new(Mutex::new(tpm)), &state)
        .await
        .unwrap();
    assert_eq!(again.device_id, first.device_id, "same device");
    let after = verifier
        .service
        .storage()
        .device(&first.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(after.ak_name, record.ak_name, "same AK");
    assert_eq!(after.ak_rotations, 0);
    let kinds: Vec<EventKind> = verifier
        .service
        .storage()
        .events(0, 100)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert!(
        kinds.contains(&EventKind::Enrolled) && kinds.contains(&EventKind::ReEnrolled),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ak_for_the_same_ek_is_an_ak_rotation_after_a_new_activation() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-rotate", EkChoice::Rsa2048);
    let config = verifier.agent_config(&dev.swtpm, dev.state.path(), EkChoice::Rsa2048);
    let state = StateDir::open(dev.state.path()).unwrap();
    let first = enroll(&config, &dev.tpm, &state).await.unwrap();
    dev.tpm.lock().unwrap().rotate_ak().unwrap();
    let second = enroll(&config, &dev.tpm, &state).await.unwrap();
    assert_eq!(second.device_id, first.device_id);
    let record = verifier
        .service
        .storage()
        .device(&first.device_id)
        .unwrap()
        .unwrap();
    assert_eq!(record.ak_rotations, 1);
    let events = verifier.service.storage().events(0, 100).unwrap();
    assert!(events.iter().any(|(_, e)| e.kind == EventKind::AkRotated));
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_and_p256_eks_both_enroll() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    for (label, ek) in [("gw-rsa", EkChoice::Rsa2048), ("gw-ecc", EkChoice::EccP256)] {
        let dev = device(&makers.trusted, label, ek);
        let config = verifier.agent_config(&dev.swtpm, dev.state.path(), ek);
        let enrolled = enroll(
            &config,
            &dev.tpm,
            &StateDir::open(dev.state.path()).unwrap(),
        )
        .await
        .unwrap();
        let record = verifier
            .service
            .storage()
            .device(&enrolled.device_id)
            .unwrap()
            .unwrap();
        let expected = match ek {
            EkChoice::Rsa2048 => trustchain_verifier::device::EkKind::Rsa2048,
            EkChoice::EccP256 => trustchain_verifier::device::EkKind::EccP256,
        };
        assert_eq!(record.ek_kind, expected);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ek_certificate_from_the_rogue_maker_is_refused() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.rogue, "gw-rogue", EkChoice::Rsa2048);
    let events_before = verifier.service.storage().events(0, 1000).unwrap().len();
    let status = begin(&verifier, request(&dev, EkChoice::Rsa2048, "gw-rogue"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "enrollment refused");
    // An EK that chains to no trusted maker comes from nobody: the refusal is logged and
    // counted, never written to storage (anyone who reaches the port could fill the audit log).
    assert_eq!(
        verifier.service.storage().events(0, 1000).unwrap().len(),
        events_before,
        "a refusal of an unknown maker's EK was written to storage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ek_public_that_differs_from_the_certificate_is_refused() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let a = device(&makers.trusted, "gw-a", EkChoice::Rsa2048);
    let b = device(&makers.trusted, "gw-b", EkChoice::Rsa2048);
    let mut req = request(&a, EkChoice::Rsa2048, "gw-a");
    req.ek_public = b.tpm.lock().unwrap().ek_public(EkChoice::Rsa2048).unwrap();
    let before = verifier.service.storage().events(0, 1000).unwrap().len();
    let status = begin(&verifier, req).await.unwrap_err();
    assert_refused(
        &status,
        &verifier,
        "differs from the key in the EK certificate",
    );
    assert_nothing_written(&verifier, before);
}

fn with_ak_attributes(req: &mut EnrollRequest, change: impl FnOnce(u32) -> u32) {
    let attributes = u32::from_be_bytes(req.ak_public[4..8].try_into().unwrap());
    req.ak_public[4..8].copy_from_slice(&change(attributes).to_be_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn ak_attribute_violations_are_refused() {
    use trustchain_verifier::evidence::tpm::ObjectAttributes as A;
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-attrs", EkChoice::Rsa2048);
    type Case = (&'static str, fn(u32) -> u32, &'static str);
    let cases: [Case; 3] = [
        ("decrypt set", |a| a | A::DECRYPT, "decrypt must not be set"),
        (
            "restricted cleared",
            |a| a & !A::RESTRICTED,
            "restricted must be set",
        ),
        (
            "fixedTPM cleared",
            |a| a & !A::FIXED_TPM,
            "fixedTPM must be set",
        ),
    ];
    for (name, change, reason) in cases {
        let mut req = request(&dev, EkChoice::Rsa2048, "gw-attrs");
        with_ak_attributes(&mut req, change);
        let status = begin(&verifier, req).await.unwrap_err();
        assert_refused(&status, &verifier, reason);
        eprintln!("{name}: refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ak_from_another_tpm_cannot_be_activated() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let a = device(&makers.trusted, "gw-relay", EkChoice::Rsa2048);
    let b = device(&makers.trusted, "gw-fake", EkChoice::Rsa2048);
    // A genuine EK presented with an AK that lives in another TPM (a relay attack).
    let mut req = request(&a, EkChoice::Rsa2048, "gw-relay");
    req.ak_public = b.tpm.lock().unwrap().ak_public().unwrap();
    let challenge = begin(&verifier, req).await.unwrap();
    // Neither TPM can unwrap it: A's TPM has not got that AK, B's TPM has not got that EK.
    assert!(
        a.tpm
            .lock()
            .unwrap()
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
            .is_err()
    );
    assert!(
        b.tpm
            .lock()
            .unwrap()
            .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
            .is_err()
    );
    // Guessing fails and is recorded.
    let status = client(&verifier)
        .await
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret: vec![0; 32],
            client_csr: csr(&a),
        })
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "wrong secret");
    assert!(
        verifier
            .service
            .storage()
            .device(&challenge.device_id)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_ends_the_attempt() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-wrong", EkChoice::Rsa2048);
    let challenge = begin(&verifier, request(&dev, EkChoice::Rsa2048, "gw-wrong"))
        .await
        .unwrap();
    let secret = dev
        .tpm
        .lock()
        .unwrap()
        .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
        .unwrap();
    let mut wrong = secret.clone();
    wrong[0] ^= 1;
    let mut enrollment = client(&verifier).await;
    let status = enrollment
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id.clone(),
            secret: wrong,
            client_csr: csr(&dev),
        })
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "wrong secret");
    // The attempt is gone: even the right secret no longer works.
    let status = enrollment
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret,
            client_csr: csr(&dev),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        verifier
            .service
            .storage()
            .device(&challenge.device_id)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_activation_is_refused() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-replay", EkChoice::Rsa2048);
    let challenge = begin(&verifier, request(&dev, EkChoice::Rsa2048, "gw-replay"))
        .await
        .unwrap();
    let secret = dev
        .tpm
        .lock()
        .unwrap()
        .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
        .unwrap();
    let answer = ActivationResponse {
        attempt_id: challenge.attempt_id.clone(),
        secret: secret.clone(),
        client_csr: csr(&dev),
    };
    let mut enrollment = client(&verifier).await;
    enrollment.complete(answer.clone()).await.unwrap();
    let status = enrollment.complete(answer).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "enrollment refused");
    // Replaying the answer against another, fresh attempt fails too: the secret is per attempt.
    let second = begin(&verifier, request(&dev, EkChoice::Rsa2048, "gw-replay"))
        .await
        .unwrap();
    let status = enrollment
        .complete(ActivationResponse {
            attempt_id: second.attempt_id,
            secret,
            client_csr: csr(&dev),
        })
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "wrong secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_activation_is_refused() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| c.activation_timeout_seconds = 1)
        .await
        .unwrap();
    let dev = device(&makers.trusted, "gw-late", EkChoice::Rsa2048);
    let challenge = begin(&verifier, request(&dev, EkChoice::Rsa2048, "gw-late"))
        .await
        .unwrap();
    assert_eq!(challenge.expires_in_seconds, 1);
    let secret = dev
        .tpm
        .lock()
        .unwrap()
        .activate_credential(&challenge.credential_blob, &challenge.encrypted_secret)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = client(&verifier)
        .await
        .complete(ActivationResponse {
            attempt_id: challenge.attempt_id,
            secret,
            client_csr: csr(&dev),
        })
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_different_ek_claiming_an_existing_device_is_refused_and_alerted() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let genuine = device(&makers.trusted, "gw-17", EkChoice::Rsa2048);
    let config = verifier.agent_config(&genuine.swtpm, genuine.state.path(), EkChoice::Rsa2048);
    enroll(
        &config,
        &genuine.tpm,
        &StateDir::open(genuine.state.path()).unwrap(),
    )
    .await
    .unwrap();

    // The impostor's TPM is genuine: it proves it, and only then is it refused and alerted.
    let impostor = device(&makers.trusted, "gw-17", EkChoice::Rsa2048);
    let status = impostor
        .enroll_by_hand(&verifier, request(&impostor, EkChoice::Rsa2048, "gw-17"))
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "a different EK");
    let events = verifier.service.storage().events(0, 100).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.kind == EventKind::Alert && e.detail.contains("gw-17"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decommissioned_ek_never_enrolls_again_even_with_a_fresh_ak() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let dev = device(&makers.trusted, "gw-old", EkChoice::Rsa2048);
    let config = verifier.agent_config(&dev.swtpm, dev.state.path(), EkChoice::Rsa2048);
    let state = StateDir::open(dev.state.path()).unwrap();
    let enrolled = enroll(&config, &dev.tpm, &state).await.unwrap();
    let agent = verifier
        .channel(Some((&enrolled.certificate_pem, &enrolled.key_pem)))
        .await
        .unwrap();
    let status = AdminClient::new(agent)
        .list_devices(ListDevicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "TLS accepted the certificate before"
    );
    let mut admin = AdminClient::new(verifier.operator_channel().await.unwrap());
    admin
        .decommission_device(trustchain_proto::v1::DeviceRequest {
            device_id: enrolled.device_id.clone(),
            comment: "end of life".into(),
        })
        .await
        .unwrap();
    // Its certificate is on the CRL now: the TLS handshake itself fails.
    let revoked = async {
        let channel = verifier
            .channel(Some((&enrolled.certificate_pem, &enrolled.key_pem)))
            .await?;
        AdminClient::new(channel)
            .list_devices(ListDevicesRequest {})
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    // Before, the same certificate completed TLS and was refused by role (PermissionDenied);
    // now the connection itself is closed.
    let error = revoked.unwrap_err();
    let code = error
        .downcast_ref::<tonic::Status>()
        .map(tonic::Status::code);
    assert_ne!(code, Some(Code::PermissionDenied), "{error:?}");

    dev.tpm.lock().unwrap().rotate_ak().unwrap();
    let status = dev
        .enroll_by_hand(&verifier, request(&dev, EkChoice::Rsa2048, "gw-old"))
        .await
        .unwrap_err();
    assert_refused(&status, &verifier, "decommissioned");
    let events = verifier.service.storage().events(0, 1000).unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.kind == EventKind::Alert && e.detail.contains("decommissioned")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_calls_need_an_operator_certificate() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    // No client certificate at all.
    let status = AdminClient::new(verifier.channel(None).await.unwrap())
        .list_devices(ListDevicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // An enrolled agent's certificate.
    let dev = device(&makers.trusted, "gw-admin", EkChoice::Rsa2048);
    let config = verifier.agent_config(&dev.swtpm, dev.state.path(), EkChoice::Rsa2048);
    let enrolled = enroll(
        &config,
        &dev.tpm,
        &StateDir::open(dev.state.path()).unwrap(),
    )
    .await
    .unwrap();
    let agent = verifier
        .channel(Some((&enrolled.certificate_pem, &enrolled.key_pem)))
        .await
        .unwrap();
    let status = AdminClient::new(agent)
        .list_devices(ListDevicesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The operator.
    let devices = AdminClient::new(verifier.operator_channel().await.unwrap())
        .list_devices(ListDevicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, enrolled.device_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_cannot_connect() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start(&makers.trusted).await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = trustchain_ca::Authority::create(other_dir.path(), "Someone Else").unwrap();
    let operator = other
        .issue_operator("mallory", &trustchain_ca::OperatorRole::ALL)
        .unwrap();
    let result = async {
        let channel = verifier
            .channel(Some((&operator.pem, operator.key_pem.as_deref().unwrap())))
            .await?;
        AdminClient::new(channel)
            .list_devices(ListDevicesRequest {})
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    assert!(
        result.is_err(),
        "a foreign CA's certificate must not get through the TLS handshake"
    );
}
