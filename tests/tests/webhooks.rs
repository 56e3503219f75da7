//! Alerts reach a webhook receiver on loopback, signed so it can check them, even when the
//! receiver was down for the first attempts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use trustchain_swtpm::TestMakers;
use trustchain_tests::TestVerifier;
use trustchain_tests::attest::trusted_then_tampered;
use trustchain_tests::verifier_process::free_port;
use trustchain_tests::webhook_receiver;
use trustchain_verifier::config::WebhookConfig;

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_alert_arrives_even_when_the_receiver_was_down_at_first() {
    let port = free_port().unwrap();
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
        // Plain HTTP, allowed explicitly (webhooks_https.rs covers HTTPS and the refusal).
        c.webhooks = vec![WebhookConfig {
            allow_insecure_http: true,
            ..WebhookConfig::new(format!("http://127.0.0.1:{port}/alerts"))
        }];
    })
    .await
    .unwrap();
    let device = trusted_then_tampered(&verifier, &makers.trusted, "gw-alert")
        .await
        .unwrap();
    // The receiver is down while the first deliveries are tried...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...and comes up later.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let mut receiver = webhook_receiver::serve(listener, None).unwrap();
    let received = receiver.next(Duration::from_secs(60)).await.unwrap();
    let body = received.body.clone();

    let alert = received.json();
    assert_eq!(alert["device_id"], device.device_id());
    assert_eq!(alert["current"], "untrusted");
    assert!(
        alert["reason"]
            .as_str()
            .unwrap()
            .contains("boot_log_replay"),
        "{alert}"
    );
    assert!(!alert["result_jwt"].as_str().unwrap().is_empty());
    assert_eq!(received.path, "/alerts");

    // The receiver checks the signature with the verifier's public key alone.
    let signature = received.signature.clone();
    let public_key = hex::decode(verifier.service.signing_public_hex()).unwrap();
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key);
    key.verify(&body, &hex::decode(&signature).unwrap())
        .unwrap();
    let mut forged = body.clone();
    forged[5] ^= 1;
    assert!(
        key.verify(&forged, &hex::decode(&signature).unwrap())
            .is_err()
    );
}
