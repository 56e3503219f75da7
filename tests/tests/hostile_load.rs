//! Issue 9, item 4: hostile load, on loopback only. Twenty honest simulated devices (the load
//! generator's software TPM model, honest activation, each on its own mTLS stream from its own
//! loopback address) attest every 2 s to a real verifier process while:
//! - `trustchain-flood` (its own process) makes ~1,000 connection attempts per second for 25 s
//!   from four other loopback addresses, half of them stalling mid-TLS-handshake, the other
//!   half sending bogus, oversized, malformed and compressed enrollment calls and Admin and
//!   Attestation calls without a certificate;
//! - an enrolled but hostile agent sends a gzip bomb (with and without `grpc-encoding`),
//!   oversized evidence and bytes that are not protobuf on its attestation stream;
//! - one more source hammers enrollment to meet the per-source rate limit;
//! - a new honest device enrolls in the middle of it all.
//!
//! Afterwards: no honest device missed an interval or changed state, nothing was added to the
//! audit log or the device table for anyone but enrolled devices, the verifier's memory stayed
//! bounded, and every hostile call was refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use trustchain_proto::v1::enrollment_client::EnrollmentClient;
use trustchain_proto::v1::{
    AgentMessage, EnrollRequest, Evidence, Hello, TrustState, VerifierMessage, agent_message,
    verifier_message,
};
use trustchain_tests::faults::deployment::Deployment;
use trustchain_tests::faults::hostile::{
    RawOutcome, grpc_frame, grpc_messages, gzip_bomb, raw_call,
};
use trustchain_tests::faults::{rss_kib, sim};

const HONEST: u8 = 20;
const INTERVAL: u64 = 2;
const FLOOD_SECONDS: u64 = 25;
const FLOOD_SOURCES: &str = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5";
const ATTEST: &str = "/trustchain.v1.Attestation/Attest";

fn source(third: u8, fourth: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, third, fourth]))
}

/// gRPC status codes (tonic::Code as i32).
const OK: i32 = 0;
const UNIMPLEMENTED: i32 = 12;
const RESOURCE_EXHAUSTED: i32 = 8;
const PERMISSION_DENIED: i32 = 7;

/// What the enrolled hostile agent sends, each on a new attestation stream; every outcome must be
/// a refusal of the expected kind.
async fn hostile_agent_round(
    deployment: &Deployment,
    hostile: &sim::SimDevice,
    pid: u32,
) -> Vec<(&'static str, RawOutcome, u64)> {
    let channel = deployment
        .channel(Some(hostile.identity.clone()), source(2, 1))
        .await
        .unwrap();
    let limit = Duration::from_secs(10);
    // Inflates to 512 MiB; 3.3 MB on the wire, under the 8 MiB evidence limit, so only the
    // compression can be what refuses it.
    let bomb = gzip_bomb(512 * 1024 * 1024);
    let oversized = AgentMessage {
        body: Some(agent_message::Body::Evidence(Evidence {
            challenge_id: 1,
            boot_log: vec![0x42; 9 * 1024 * 1024],
            boot_log_included: true,
            ..Default::default()
        })),
    }
    .encode_to_vec();
    // Each hostile message follows a proper Hello, so it is the message itself that is refused.
    let hello = grpc_frame(
        false,
        &AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                device_id: hostile.device_id.clone(),
                agent_version: "hostile".into(),
            })),
        }
        .encode_to_vec(),
    );
    let after_hello = |frame: Vec<u8>| [hello.clone(), frame].concat();
    let mut outcomes = Vec::new();
    for (name, body, encoding) in [
        (
            "bomb, grpc-encoding gzip",
            after_hello(grpc_frame(true, &bomb)),
            Some("gzip"),
        ),
        (
            "bomb, compressed flag only",
            after_hello(grpc_frame(true, &bomb)),
            None,
        ),
        (
            "oversized evidence (9 MiB)",
            after_hello(grpc_frame(false, &oversized)),
            None,
        ),
        (
            "not protobuf",
            after_hello(grpc_frame(false, &[0xff; 256])),
            None,
        ),
    ] {
        let outcome = raw_call(channel.clone(), ATTEST, body, encoding, limit)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        outcomes.push((name, outcome, rss_kib(pid).unwrap_or(0)));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)]
async fn honest_devices_keep_their_interval_while_unknown_clients_flood_the_verifier() {
    // The bomb is a real one: gzip inflates a small one to the size it claims.
    let small = gzip_bomb(10 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bomb.gz"), &small).unwrap();
    let inflated = Command::new("gzip")
        .arg("-dc")
        .arg(dir.path().join("bomb.gz"))
        .output()
        .expect("gzip");
    assert!(
        inflated.stdout.len() >= 10 * 1024 * 1024 - 258 && inflated.stdout.iter().all(|b| *b == 0),
        "the bomb inflated to {} bytes",
        inflated.stdout.len()
    );

    let mut deployment = Deployment::create(INTERVAL, 3, None).unwrap();
    deployment.start_verifier().await.unwrap();
    let pid = deployment.verifier_pid().unwrap();

    // The fleet, each device from its own address (as real gateways are), and one hostile agent.
    let mut honest = Vec::new();
    for i in 1..=HONEST {
        honest.push(
            sim::enroll(&deployment, &format!("honest-{i:02}"), source(1, i))
                .await
                .unwrap(),
        );
    }
    let hostile = sim::enroll(&deployment, "hostile-01", source(2, 1))
        .await
        .unwrap();
    let honest_ids: BTreeSet<String> = honest.iter().map(|d| d.device_id.clone()).collect();
    let warm_up = Duration::from_secs(3 * INTERVAL);
    let attest_until = Instant::now() + warm_up + Duration::from_secs(FLOOD_SECONDS + 10);
    let mut attesting = Vec::new();
    for (i, device) in honest.into_iter().enumerate() {
        let address = source(1, u8::try_from(i + 1).unwrap());
        let channel = deployment
            .bound_channel(&device.identity, address)
            .await
            .unwrap();
        attesting.push(tokio::spawn(sim::attest(channel, device, attest_until)));
    }
    tokio::time::sleep(warm_up).await;
    let states = deployment.device_states().await.unwrap();
    for id in &honest_ids {
        assert_eq!(
            states.get(id),
            Some(&(TrustState::Trusted as i32)),
            "{id} not trusted before the flood"
        );
    }
    let audit_before = deployment.audit().await.unwrap();
    let devices_before: BTreeSet<String> = states.keys().cloned().collect();
    let rss_before = rss_kib(pid).unwrap();

    // The flood, as its own process.
    let flood_started = Instant::now();
    let flood = Command::new(env!("CARGO_BIN_EXE_trustchain-flood"))
        .args([
            "--target",
            &deployment.address().to_string(),
            "--root-pem",
            &deployment.root_pem_path().to_string_lossy(),
            "--rate",
            "1000",
            "--seconds",
            &FLOOD_SECONDS.to_string(),
            "--sources",
            FLOOD_SOURCES,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("trustchain-flood");
    let flood = tokio::task::spawn_blocking(move || flood.wait_with_output());

    // Memory, sampled through the flood.
    let sampling_until = flood_started + Duration::from_secs(FLOOD_SECONDS + 5);
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while Instant::now() < sampling_until {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        peak
    });

    // The hostile agent, three times through the flood.
    let mut hostile_outcomes = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        hostile_outcomes.extend(hostile_agent_round(&deployment, &hostile, pid).await);
    }

    // One source hammering enrollment with bogus requests: its burst (60), then refusals.
    let probe = deployment.channel(None, source(0, 9)).await.unwrap();
    let mut probe = EnrollmentClient::new(probe);
    let mut probe_codes = Vec::new();
    let probe_started = Instant::now();
    for _ in 0..120 {
        let code = match probe
            .begin(EnrollRequest {
                ek_certificate: vec![0x30; 300],
                ek_public: vec![0, 1, 0, 0x0b],
                ak_public: vec![0, 1],
                ..Default::default()
            })
            .await
        {
            Ok(_) => OK,
            Err(status) => status.code() as i32,
        };
        probe_codes.push(code);
    }

    let probe_took = probe_started.elapsed();

    // A new honest device enrolls in the middle of the flood.
    let enrolled_during = tokio::time::timeout(
        Duration::from_secs(15),
        sim::enroll(&deployment, "honest-new", source(1, 100)),
    )
    .await
    .expect("enrollment during the flood took over 15 s")
    .expect("enrollment during the flood");

    let flood_output = flood.await.unwrap().unwrap();
    let flood_ended = Instant::now();
    assert!(flood_output.status.success(), "the flood failed");
    let summary: serde_json::Value = serde_json::from_slice(&flood_output.stdout).unwrap();
    eprintln!("flood: {summary:#}");
    let peak_rss = sampler.await.unwrap();

    let mut logs = Vec::new();
    for task in attesting {
        logs.push(task.await.unwrap());
    }
    let rss_after = rss_kib(pid).unwrap();

    // The flood was what the issue asks for.
    let rate = summary["attempts_per_second"].as_f64().unwrap();
    assert!(
        rate >= 700.0,
        "only {rate:.0} connection attempts per second"
    );
    assert_eq!(summary["accepted_calls"], 0, "a hostile call was answered");
    assert!(summary["stalls"].as_u64().unwrap() >= FLOOD_SECONDS * 300);

    // Every hostile call of the enrolled agent was refused as it should be, and the bomb was
    // never inflated (512 MiB would show in the verifier's memory).
    for (name, outcome, rss) in &hostile_outcomes {
        let answers: Vec<VerifierMessage> = grpc_messages(&outcome.body)
            .into_iter()
            .map(|m| VerifierMessage::decode(m).unwrap())
            .collect();
        eprintln!(
            "hostile agent: {name}: status {:?} {:?}, {} message(s) back, verifier RSS {rss} KiB",
            outcome.code,
            outcome.message,
            answers.len()
        );
        // Refused before the handler: a status, nothing else.
        // Refused by the decoder inside the stream: the verifier ends the stream after its first
        // challenge, and never sends a verdict on what it could not decode.
        let refused = match *name {
            "bomb, grpc-encoding gzip" => outcome.code == Some(UNIMPLEMENTED) && answers.is_empty(),
            _ => {
                outcome.code.is_some()
                    && answers.len() <= 1
                    && answers
                        .iter()
                        .all(|m| matches!(m.body, Some(verifier_message::Body::Challenge(_))))
            }
        };
        assert!(refused, "{name}: not refused: {outcome:?} {answers:?}");
        assert!(
            *rss < rss_before + 64 * 1024,
            "{name}: verifier RSS {rss} KiB"
        );
    }

    // The per-source rate limit: the burst of 60 calls (and what refilled at 5/s meanwhile)
    // reached the enroller, then RESOURCE_EXHAUSTED; the bogus ones that got through were
    // refused, and (see below) none of them left a trace in storage.
    let refused = probe_codes
        .iter()
        .filter(|c| **c == PERMISSION_DENIED)
        .count();
    let limited = probe_codes
        .iter()
        .filter(|c| **c == RESOURCE_EXHAUSTED)
        .count();
    eprintln!(
        "rate-limit probe: {refused} refused by the enroller, {limited} rate-limited, in \
         {probe_took:?}"
    );
    let allowed = 60 + (5.0 * probe_took.as_secs_f64()).ceil() as usize + 1;
    assert!(
        refused >= 60 && refused <= allowed,
        "{refused} calls reached the enroller in {probe_took:?} (bucket allows {allowed})"
    );
    assert_eq!(refused + limited, 120, "{probe_codes:?}");
    assert!(
        limited >= 20,
        "only {limited} of 120 calls were rate-limited"
    );

    // No honest device missed an interval or changed state.
    let slack = Duration::from_millis(1500);
    let mut longest_gap = Duration::ZERO;
    let mut fewest_verdicts = usize::MAX;
    for log in &logs {
        assert!(
            log.ended_early.is_none(),
            "{}: stream ended: {:?}",
            log.device_id,
            log.ended_early
        );
        let gap = log.longest_gap(attest_until.min(Instant::now()));
        assert!(
            gap <= Duration::from_secs(INTERVAL) + slack,
            "{}: {gap:?} without a challenge",
            log.device_id
        );
        longest_gap = longest_gap.max(gap);
        let during = log.verdicts_between(flood_started, flood_ended);
        fewest_verdicts = fewest_verdicts.min(during.len());
        let expected = (flood_ended - flood_started).as_secs() / INTERVAL;
        assert!(
            during.len() as u64 + 1 >= expected,
            "{}: {} verdicts during the flood, {expected} intervals",
            log.device_id,
            during.len()
        );
        assert!(
            log.verdicts
                .iter()
                .all(|(_, state)| *state == TrustState::Trusted as i32),
            "{}: a verdict other than TRUSTED",
            log.device_id
        );
    }
    eprintln!(
        "honest devices: {} attested through the {:.1}s flood; longest wait between two \
         challenges {longest_gap:?} (interval {INTERVAL}s); fewest TRUSTED verdicts during the \
         flood {fewest_verdicts}; no other verdict",
        logs.len(),
        (flood_ended - flood_started).as_secs_f64()
    );
    let states = deployment.device_states().await.unwrap();
    for id in &honest_ids {
        assert_eq!(states.get(id), Some(&(TrustState::Trusted as i32)), "{id}");
    }

    // Storage: the only new device is the honest one that enrolled; the only new audit records
    // concern enrolled devices, and none of them an honest device that was attesting.
    let devices_after: BTreeSet<String> = states.keys().cloned().collect();
    let added: Vec<&String> = devices_after.difference(&devices_before).collect();
    assert_eq!(added, vec![&enrolled_during.device_id], "devices added");
    let audit_after = deployment.audit().await.unwrap();
    let last_before = audit_before.last().map_or(0, |e| e.sequence);
    let new_records: Vec<_> = audit_after
        .iter()
        .filter(|e| e.sequence > last_before)
        .collect();
    for record in &new_records {
        assert!(
            record.device_id == enrolled_during.device_id || record.device_id == hostile.device_id,
            "audit record for someone not enrolled, or for an honest device: {record:?}"
        );
    }

    eprintln!(
        "verifier RSS: {rss_before} KiB before the flood, peak {peak_rss} KiB, {rss_after} KiB \
         after; {} new audit records, all for the hostile agent or the new device",
        new_records.len()
    );
    assert!(
        peak_rss < rss_before + 64 * 1024,
        "verifier RSS peaked at {peak_rss} KiB (from {rss_before} KiB)"
    );
}
