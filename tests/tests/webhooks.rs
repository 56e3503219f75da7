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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustchain_swtpm::{BootProfile, TestMakers};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::config::WebhookConfig;
use trustchain_verifier::device::DeviceState;

/// Accepts one HTTP POST and answers 200; returns (headers, body).
async fn receive_one(listener: tokio::net::TcpListener) -> (String, Vec<u8>) {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, length) = loop {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "connection closed early");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            buffer.drain(..end + 4);
            break (head, length);
        }
    };
    while buffer.len() < length {
        let read = stream.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..read]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    (head, buffer)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_alert_arrives_even_when_the_receiver_was_down_at_first() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
        c.webhooks = vec![WebhookConfig {
            url: format!("http://127.0.0.1:{port}/alerts"),
            give_up_after_seconds: 120,
        }];
    })
    .await
    .unwrap();
    let mut device = TestDevice::enrolled(
        &verifier,
        &makers.trusted,
        "gw-alert",
        &BootProfile::default_linux(),
    )
    .await
    .unwrap();
    device.start_agent();
    verifier
        .wait_for_state(
            &device.device_id(),
            DeviceState::Trusted,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    device.swtpm.extend_unlisted(4, b"implant").unwrap();
    verifier
        .wait_for_state(
            &device.device_id(),
            DeviceState::Untrusted,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    // The receiver is down while the first deliveries are tried...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...and comes up later.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (head, body) = tokio::time::timeout(Duration::from_secs(60), receive_one(listener))
        .await
        .unwrap();

    let alert: serde_json::Value = serde_json::from_slice(&body).unwrap();
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
    assert!(head.starts_with("post /alerts "), "{head}");

    // The receiver checks the signature with the verifier's public key alone.
    let signature = head
        .lines()
        .find_map(|l| l.strip_prefix("x-trustchain-signature:"))
        .unwrap()
        .trim()
        .to_string();
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
