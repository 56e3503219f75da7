//! The relay ("cuckoo") attack, issue 17 item 1: a fake device holding a valid client
//! certificate connects to the verifier, forwards the challenges it receives to a genuine TPM and
//! relays the genuine quotes back. Each quote's qualifyingData is SHA-256(nonce || TLS exporter)
//! of the connection the genuine agent holds, so on the fake's connection it fails
//! `channel_binding`. So does a quote over the bare nonce. The honest paths (the real agent, and a
//! hand-driven device binding to its own connection) pass. The verifier speaks TLS 1.3 only, whose
//! exporter the binding rests on: a TLS 1.2 client cannot connect.
//!
//! Real parts: the verifier in process on a loopback TLS port, swtpm devices, real enrollment;
//! every device connection goes through the agent's own connector
//! (`trustchain_agent::bound_channel`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use trustchain_swtpm::TestMakers;
use trustchain_tests::attest::{SHA256, hand_driven, names_rule, verifier_every};
use trustchain_tests::stream::AttestStream;
use trustchain_tests::{ClientPem, TestDevice, TestVerifier};
use trustchain_verifier::device::DeviceState;

async fn verifier(makers: &TestMakers) -> TestVerifier {
    verifier_every(&makers.trusted, 10, 3).await.unwrap()
}

fn client_pem(device: &TestDevice) -> ClientPem {
    let enrollment = device.enrollment.as_ref().unwrap();
    ClientPem {
        certificate_pem: enrollment.certificate_pem.clone(),
        key_pem: enrollment.key_pem.clone(),
    }
}

async fn assert_failed_with(verifier: &TestVerifier, device: &TestDevice, rule: &str) {
    verifier
        .settle(&device.device_id(), DeviceState::Untrusted)
        .await
        .unwrap();
    names_rule(verifier, device, rule).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_agent_binds_its_quotes_to_its_connection_and_is_trusted() {
    let makers = TestMakers::generate().unwrap();
    let verifier = verifier(&makers).await;
    // `trusted` runs the real agent's attestation loop and waits for Trusted.
    let device = TestDevice::trusted(
        &verifier,
        &makers.trusted,
        "gw-bound-agent",
        &[("/usr/bin/bash", b"bash")],
    )
    .await
    .unwrap();
    assert!(verifier.failed_rules(&device.device_id()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_binding_to_its_own_connection_stays_trusted() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-bound-own").await.unwrap();
    let challenge = stream.challenge().await.unwrap();
    let verdict = stream
        .send(
            device
                .evidence(&challenge, &stream.bound(&challenge), SHA256)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        verdict.state,
        trustchain_proto::v1::TrustState::Trusted as i32,
        "{}",
        verifier.failure_summary(&device.device_id())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fake_device_relaying_a_genuine_tpms_quotes_fails_channel_binding() {
    // The genuine device, attesting honestly over its own connection.
    let (_makers, verifier, genuine, genuine_stream) = hand_driven("gw-relayed").await.unwrap();
    // The fake holds a valid client certificate for the device and opens its own connection.
    let pem = client_pem(&genuine);
    let mut fake = AttestStream::open_as(
        &verifier,
        &genuine.device_id(),
        &pem.certificate_pem,
        &pem.key_pem,
    )
    .await
    .unwrap();
    assert_ne!(
        fake.binding, genuine_stream.binding,
        "two connections, two exporters"
    );
    // The fake forwards its challenge to the genuine device, whose agent binds the nonce to the
    // connection it holds, and relays the genuine quote back.
    let challenge = fake.challenge().await.unwrap();
    let relayed = genuine
        .evidence(
            &challenge,
            &genuine_stream.binding.qualifying_data(&challenge.nonce),
            SHA256,
        )
        .unwrap();
    fake.answer(relayed).await.unwrap();
    assert_failed_with(&verifier, &genuine, "channel_binding").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quote_over_the_bare_nonce_fails_channel_binding() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-bare-nonce").await.unwrap();
    let challenge = stream.challenge().await.unwrap();
    // What an agent without the binding (or a relay that cannot learn the exporter) sends.
    let bare = device
        .evidence(&challenge, &challenge.nonce, SHA256)
        .unwrap();
    stream.answer(bare).await.unwrap();
    assert_failed_with(&verifier, &device, "channel_binding").await;
}

/// Connects to the verifier with rustls limited to `version`, trusting the deployment root.
async fn handshake(
    verifier: &TestVerifier,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::io::Result<()> {
    use rustls_pki_types::pem::PemObject as _;
    let root = std::fs::read(&verifier.root_pem_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(&root) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(verifier.address).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verifier_refuses_tls_1_2_whose_exporter_the_binding_cannot_rest_on() {
    let makers = TestMakers::generate().unwrap();
    let verifier = verifier(&makers).await;
    handshake(&verifier, &rustls::version::TLS13)
        .await
        .expect("a TLS 1.3 handshake");
    let refused = handshake(&verifier, &rustls::version::TLS12).await;
    assert!(refused.is_err(), "a TLS 1.2 client connected");
}
