//! Webhooks over HTTPS: the receiver's certificate is checked against the webhook's CA file
//! (a receiver with another CA's certificate gets nothing, and the alert stays in the outbox),
//! plain `http://` is refused at start unless allowed explicitly, and alerts written while the
//! receiver is down survive a verifier restart and arrive once each, in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trustchain_ca::Authority;
use trustchain_swtpm::{BootProfile, TestMakers};
use trustchain_tests::TestVerifier;
use trustchain_tests::attest::trusted_then_tampered;
use trustchain_tests::soft_tpm::SoftTpm;
use trustchain_tests::verifier_process::{Behaviour, Deployment, free_port, run_device};
use trustchain_tests::webhook_receiver::{self, server_tls};
use trustchain_verifier::config::WebhookConfig;

async fn listen(port: u16) -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_reaches_the_receiver_the_ca_vouches_for_and_never_an_impostor() {
    let pki = tempfile::tempdir().unwrap();
    let siem = Authority::create(&pki.path().join("siem"), "SIEM").unwrap();
    let impostor = Authority::create(&pki.path().join("impostor"), "Impostor").unwrap();
    let ca_file = pki.path().join("siem-root.pem");
    webhook_receiver::write_root(&siem, &ca_file).unwrap();
    let (client_cert, client_key) =
        webhook_receiver::write_client_identity(&siem, pki.path()).unwrap();
    // The honest receiver also requires the verifier's client certificate.
    let mut honest = webhook_receiver::serve(
        listen(0).await,
        Some(server_tls(&siem, Some(&siem)).unwrap()),
    )
    .unwrap();
    // Same name (127.0.0.1), certificate from a CA the webhook does not name.
    let mut fake =
        webhook_receiver::serve(listen(0).await, Some(server_tls(&impostor, None).unwrap()))
            .unwrap();
    let honest_url = format!("https://{}/alerts", honest.address);
    let fake_url = format!("https://{}/alerts", fake.address);
    let webhook = |url: &str| WebhookConfig {
        ca_file: Some(ca_file.clone()),
        client_certificate: Some(client_cert.clone()),
        client_key: Some(client_key.clone()),
        max_retry_delay_seconds: 1,
        ..WebhookConfig::new(url)
    };

    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2;
        c.webhooks = vec![webhook(&honest_url), webhook(&fake_url)];
    })
    .await
    .unwrap();
    let device = trusted_then_tampered(&verifier, &makers.trusted, "gw-https")
        .await
        .unwrap();

    // Honest path: the alert arrives over HTTPS, with the result JWT.
    let alert = honest.next(Duration::from_secs(30)).await.unwrap();
    let json = alert.json();
    assert_eq!(json["device_id"], device.device_id());
    assert_eq!(json["current"], "untrusted");
    assert!(!json["result_jwt"].as_str().unwrap().is_empty());
    assert!(!alert.signature.is_empty());
    let sequence = json["sequence"].as_u64().unwrap();

    // The impostor: the verifier tried (handshakes refused) and sent it nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.failed_handshakes.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the verifier never tried the impostor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fake.posts.try_recv().is_err(),
        "an alert reached a receiver the CA file does not vouch for"
    );
    // The alert stays in the impostor's outbox; the honest one's cursor moved past it.
    let storage = verifier.service.storage();
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage.webhook_cursor(&honest_url).unwrap() != Some(sequence) {
        assert!(
            Instant::now() < deadline,
            "the acknowledged alert left no cursor"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(storage.webhook_cursor(&fake_url).unwrap().unwrap() < sequence);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_webhook_is_refused_at_start_unless_allowed_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::create(dir.path(), &dir.path().join("state"), 5, 3).unwrap();
    let plain = format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:{}/alerts\"\n",
        free_port().unwrap()
    );
    let log = dir.path().join("verifier.log");
    let refused = deployment.refused_start(&plain, &log).await.unwrap();
    assert!(
        refused.contains("webhooks[0].allow_insecure_http"),
        "{refused}"
    );

    // The same URL with the explicit switch starts.
    deployment
        .starts(&format!("{plain}allow_insecure_http = true\n"), &log)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_written_while_the_receiver_is_down_survive_a_restart_and_arrive_once_in_order() {
    const DEVICES: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let deployment =
        Arc::new(Deployment::create(dir.path(), &dir.path().join("state"), 1, 2).unwrap());
    let siem = Authority::create(&dir.path().join("siem"), "SIEM").unwrap();
    let ca_file = dir.path().join("siem-root.pem");
    webhook_receiver::write_root(&siem, &ca_file).unwrap();
    let port = free_port().unwrap();
    deployment
        .configure(&format!(
            "[[webhooks]]\nurl = \"https://127.0.0.1:{port}/alerts\"\n\
             ca_file = {ca_file:?}\nmax_retry_delay_seconds = 1\n"
        ))
        .unwrap();
    let log = dir.path().join("verifier.log");
    let mut verifier = deployment.start(deployment.command(), &log).await.unwrap();

    // Devices become trusted, then fall silent: each times out (an alert) while the receiver
    // is down.
    let behaviour = Arc::new(Behaviour::default());
    let incarnation = Arc::new(AtomicU64::new(1));
    let mut devices = Vec::new();
    for index in 0..DEVICES {
        let label = format!("hook-{index}");
        let tpm = SoftTpm::new(
            &deployment.makers.trusted,
            &label,
            &BootProfile::default_linux(),
        )
        .unwrap();
        devices.push(tokio::spawn(run_device(
            deployment.clone(),
            tpm,
            label,
            behaviour.clone(),
            incarnation.clone(),
        )));
    }
    wait_for_count(&deployment, "trusted", DEVICES).await;
    behaviour.stop.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for device in devices {
        ids.push(device.await.unwrap().device_id.unwrap());
    }
    wait_for_count(&deployment, "timed_out", DEVICES).await;
    // Let the verifier try (and fail) to deliver before it dies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failed = "trustchain_webhook_attempts_total{outcome=\"failed\"}";
    assert!(
        deployment.metric(failed).await.unwrap_or(0.0) >= 1.0,
        "{}",
        verifier.log_tail()
    );

    verifier.kill();
    let verifier = deployment.start(deployment.command(), &log).await.unwrap();
    let mut receiver =
        webhook_receiver::serve(listen(port).await, Some(server_tls(&siem, None).unwrap()))
            .unwrap();

    let mut sequences = Vec::new();
    let mut alerted = Vec::new();
    for _ in 0..DEVICES {
        let alert = receiver
            .next(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", verifier.log_tail()))
            .json();
        assert_eq!(alert["current"], "timed_out", "{alert}");
        sequences.push(alert["sequence"].as_u64().unwrap());
        alerted.push(alert["device_id"].as_str().unwrap().to_string());
    }
    // In audit order, each once, one per device; and nothing more comes.
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    alerted.sort();
    ids.sort();
    assert_eq!(alerted, ids);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.posts.try_recv().is_err(), "an alert arrived twice");
    let delivered = "trustchain_webhook_attempts_total{outcome=\"delivered\"}";
    assert_eq!(deployment.metric(delivered).await, Some(DEVICES as f64));
    verifier.stop();
}

async fn wait_for_count(deployment: &Deployment, state: &str, count: usize) {
    let metric = format!("trustchain_devices{{state=\"{state}\"}}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if deployment.metric(&metric).await.unwrap_or(0.0) as usize == count {
            return;
        }
        assert!(Instant::now() < deadline, "{count} devices never {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
