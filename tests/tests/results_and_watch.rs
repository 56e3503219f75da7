//! Relying parties: signed EAR results checked by an independent JWT library with only the
//! verifier's public key, and the watch stream delivering every state change in order, resumable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use trustchain_proto::v1::admin_client::AdminClient;
use trustchain_proto::v1::{DeviceRequest, TrustState, WatchRequest};
use trustchain_swtpm::TestMakers;
use trustchain_tests::TestVerifier;
use trustchain_tests::attest::good_and_bad;
use trustchain_verifier::device::DeviceState;

const WAIT: Duration = Duration::from_secs(30);

/// Verifies an EAR JWT with jsonwebtoken (not our code) and the verifier's public key alone.
fn independent_check(jwt: &str, public_key_hex: &str) -> serde_json::Value {
    let point = hex::decode(public_key_hex).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key =
        DecodingKey::from_ec_components(&b64.encode(&point[1..33]), &b64.encode(&point[33..65]))
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    decode::<serde_json::Value>(jwt, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_results_verify_independently_and_watchers_miss_nothing() {
    let makers = TestMakers::generate().unwrap();
    let verifier = TestVerifier::start_with(&makers.trusted, |c| {
        c.attestation.default_interval_seconds = 2
    })
    .await
    .unwrap();
    let mut admin = AdminClient::new(verifier.operator_channel().await.unwrap());
    // A relying party watches from the start.
    let mut watch = admin
        .clone()
        .watch(WatchRequest { from_sequence: 1 })
        .await
        .unwrap()
        .into_inner();

    let (good, bad) = good_and_bad(&verifier, &makers.trusted).await.unwrap();
    bad.swtpm.extend_unlisted(4, b"implant").unwrap();
    verifier
        .wait_for_state(&bad.device_id(), DeviceState::Untrusted, WAIT)
        .await
        .unwrap();

    // Signed results, checked with only the public key.
    let public_key = verifier.service.signing_public_hex();
    for (device, status) in [(&good, "affirming"), (&bad, "contraindicated")] {
        let detail = admin
            .get_device(DeviceRequest {
                device_id: device.device_id(),
                comment: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let claims = independent_check(&detail.last_result_jwt, &public_key);
        let submod = &claims["submods"][device.device_id()];
        assert_eq!(submod["ear.status"], status, "{claims:#}");
        assert_eq!(claims["eat_profile"], "tag:github.com,2023:veraison/ear");
        assert_eq!(claims["trustchain.device-id"], device.device_id());
        assert!(
            claims["eat_nonce"].as_str().unwrap().len() >= 43,
            "the nonce of the challenge"
        );
        if status == "contraindicated" {
            assert_eq!(
                claims["trustchain.failed-rules"][0]["rule"],
                "boot_log_replay"
            );
            assert_eq!(submod["ear.trustworthiness-vector"]["executables"], 96);
            assert_eq!(submod["ear.trustworthiness-vector"]["instance-identity"], 2);
        } else {
            assert_eq!(
                claims["trustchain.failed-rules"].as_array().unwrap().len(),
                0
            );
            assert_eq!(submod["ear.trustworthiness-vector"]["hardware"], 2);
        }
    }
    // A forged result does not verify.
    let detail = admin
        .get_device(DeviceRequest {
            device_id: bad.device_id(),
            comment: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut parts: Vec<&str> = detail.last_result_jwt.split('.').collect();
    let forged_claims =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"submods":{}}"#);
    parts[1] = &forged_claims;
    let point = hex::decode(&public_key).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key =
        DecodingKey::from_ec_components(&b64.encode(&point[1..33]), &b64.encode(&point[33..65]))
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    assert!(decode::<serde_json::Value>(&parts.join("."), &key, &validation).is_err());

    // The watcher saw every change, in order: enrolled -> trusted for both, trusted -> untrusted.
    let expected = verifier.service.state_changes_since(1).unwrap();
    assert_eq!(expected.len(), 3, "{expected:?}");
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let change = tokio::time::timeout(WAIT, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(change);
    }
    assert_eq!(
        seen.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        expected.iter().map(|c| c.sequence).collect::<Vec<_>>()
    );
    assert!(seen.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let last = seen.last().unwrap();
    assert_eq!(
        (last.current, last.device_id.clone()),
        (TrustState::Untrusted as i32, bad.device_id())
    );
    assert!(
        !last.result_jwt.is_empty(),
        "the change carries the signed result"
    );
    drop(watch);

    // Disconnected, more changes happen; the watcher resumes from its last sequence and misses nothing.
    good.swtpm.extend_unlisted(7, b"tampered").unwrap();
    verifier
        .wait_for_state(&good.device_id(), DeviceState::Untrusted, WAIT)
        .await
        .unwrap();
    admin
        .clear_device(DeviceRequest {
            device_id: bad.device_id(),
            comment: "reimaged".into(),
        })
        .await
        .unwrap();
    let mut resumed = admin
        .watch(WatchRequest {
            from_sequence: last.sequence + 1,
        })
        .await
        .unwrap()
        .into_inner();
    let expected = verifier
        .service
        .state_changes_since(last.sequence + 1)
        .unwrap();
    assert!(expected.len() >= 2, "{expected:?}");
    for want in &expected {
        let got = tokio::time::timeout(WAIT, resumed.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.sequence, got.device_id.clone()),
            (want.sequence, want.device_id.clone())
        );
    }
}
