//! The network edge's limits come from `[limits]`: a low per-source cap closes the connection
//! above it (the default lets it through), the enrollment rate is the configured one, and an
//! invalid value stops the start naming its key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::error::Error as _;

use trustchain_proto::v1::EnrollRequest;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_swtpm::TestMakers;
use trustchain_tests::TestVerifier;
use trustchain_tests::verifier_process::Deployment;
use trustchain_verifier::config::LimitsConfig;

/// Opens `count` connections without a client certificate, each held open, and makes one
/// enrollment call on each: the status codes, or "refused" where the connection was closed.
async fn calls_on_separate_connections(verifier: &TestVerifier, count: usize) -> Vec<String> {
    let mut held = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..count {
        let outcome = match verifier.channel(None).await {
            Err(_) => "refused".to_string(),
            Ok(channel) => {
                let mut client = EnrollmentClient::new(channel.clone());
                held.push(channel);
                let call = client.begin(EnrollRequest::default());
                match tokio::time::timeout(std::time::Duration::from_secs(15), call).await {
                    Err(_) => "no answer".into(),
                    Ok(Ok(_)) => "answered".into(),
                    // The connection was closed under the call: no answer from the verifier
                    // (hyper reports it as a reset, an EOF or the call cancelled).
                    Ok(Err(status))
                        if status.source().is_some()
                            || matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ) =>
                    {
                        "refused".into()
                    }
                    Ok(Err(status)) => format!("{:?}", status.code()),
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_low_per_source_cap_closes_the_connection_above_it_and_the_default_allows_it() {
    let makers = TestMakers::generate().unwrap();
    let site = TestVerifier::start_with(&makers.trusted, |c| {
        c.limits = LimitsConfig {
            max_unauthenticated_per_source: 2,
            ..LimitsConfig::default()
        };
    })
    .await
    .unwrap();
    let outcomes = calls_on_separate_connections(&site, 3).await;
    assert!(
        outcomes[..2]
            .iter()
            .all(|o| o != "refused" && o != "no answer"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], "refused", "{outcomes:?}");

    let default = TestVerifier::start(&makers.trusted).await.unwrap();
    let outcomes = calls_on_separate_connections(&default, 3).await;
    assert!(
        outcomes.iter().all(|o| o != "refused" && o != "no answer"),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_enrollment_rate_limit_is_the_configured_one() {
    let makers = TestMakers::generate().unwrap();
    let strict = TestVerifier::start_with(&makers.trusted, |c| {
        c.limits.enrollment_burst = 3;
        c.limits.enrollment_per_second = 0.01;
    })
    .await
    .unwrap();
    let codes = calls_on_one_connection(&strict, 5).await;
    assert!(
        codes[..3]
            .iter()
            .all(|c| *c != tonic::Code::ResourceExhausted),
        "{codes:?}"
    );
    assert!(
        codes[3..]
            .iter()
            .all(|c| *c == tonic::Code::ResourceExhausted),
        "{codes:?}"
    );

    let default = TestVerifier::start(&makers.trusted).await.unwrap();
    let codes = calls_on_one_connection(&default, 5).await;
    assert!(
        codes.iter().all(|c| *c != tonic::Code::ResourceExhausted),
        "{codes:?}"
    );
}

async fn calls_on_one_connection(verifier: &TestVerifier, count: usize) -> Vec<tonic::Code> {
    let mut client = EnrollmentClient::new(verifier.channel(None).await.unwrap());
    let mut codes = Vec::new();
    for _ in 0..count {
        codes.push(match client.begin(EnrollRequest::default()).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        });
    }
    codes
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_limit_stops_the_start_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = Deployment::create(dir.path(), &dir.path().join("state"), 5, 3).unwrap();
    let log = dir.path().join("verifier.log");
    let refused = deployment
        .refused_start("[limits]\nmax_unauthenticated_per_source = 0\n", &log)
        .await
        .unwrap();
    assert!(
        refused.contains("limits.max_unauthenticated_per_source"),
        "{refused}"
    );
    // A valid value (a site behind one NAT address) starts.
    deployment
        .starts(
            "[limits]\nmax_unauthenticated_per_source = 512\n\
             enrollment_per_second = 50.0\n",
            &log,
        )
        .await
        .unwrap();
}
