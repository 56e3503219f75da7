//! Continuous attestation end to end: real swtpm devices, the real agent loop, a real verifier
//! over mutual TLS on loopback. Each attack is its own test and must make the device untrusted
//! with that rule named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use trustchain_proto::v1::{
    AgentMessage, Challenge, Evidence, EvidencePart, agent_message, verifier_message,
};
use trustchain_swtpm::boot::{BootEvent, EV_EFI_BOOT_SERVICES_APPLICATION};
use trustchain_swtpm::{Bank, BootProfile, TestMakers};
use trustchain_tests::attest::{
    agent_trusted, answers_again, hand_driven, names_rule, stored_state, trusted_device,
    trusted_on_own_stream, verifier_every,
};
use trustchain_tests::stream::AttestStream;
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::device::{DeviceState, EventKind};

const WAIT: Duration = Duration::from_secs(40);

/// Challenges every 2 s; silent for 3 intervals means timed out.
const INTERVAL: Duration = Duration::from_secs(2);

async fn verifier(makers: &TestMakers) -> TestVerifier {
    verifier_every(&makers.trusted, INTERVAL.as_secs(), 3)
        .await
        .unwrap()
}

/// For hand-driven streams: a longer interval, so a slow CI machine answers in time.
async fn raw_verifier(makers: &TestMakers) -> TestVerifier {
    verifier_every(&makers.trusted, 10, 3).await.unwrap()
}

async fn assert_untrusted_for(
    verifier: &TestVerifier,
    device: &TestDevice,
    rule: &str,
) -> Duration {
    let took = verifier
        .wait_for_state(&device.device_id(), DeviceState::Untrusted, WAIT)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; last failure: {}",
                verifier.failure_summary(&device.device_id())
            )
        });
    names_rule(verifier, device, rule).unwrap();
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn three_devices_stay_trusted_and_only_new_ima_entries_travel() {
    let makers = TestMakers::generate().unwrap();
    let verifier = verifier(&makers).await;
    let mut devices = Vec::new();
    for label in ["gw-a", "gw-b", "gw-c"] {
        devices.push(
            trusted_device(&verifier, &makers.trusted, label)
                .await
                .unwrap(),
        );
    }
    let mut measured = 0u64;
    for round in 0..5 {
        for device in &mut devices {
            device
                .swtpm
                .ima_measure(
                    &format!("/opt/app/round-{round}"),
                    format!("v{round}").as_bytes(),
                )
                .unwrap();
        }
        measured += 1;
        tokio::time::sleep(INTERVAL + Duration::from_millis(300)).await;
        for device in &devices {
            let state = stored_state(&verifier, device).unwrap();
            assert_eq!(
                state,
                DeviceState::Trusted,
                "{} in round {round}: {}",
                device.device_id(),
                verifier.failure_summary(&device.device_id())
            );
        }
    }
    tokio::time::sleep(INTERVAL + Duration::from_millis(500)).await;
    for device in &devices {
        let traffic = verifier.service.traffic(&device.device_id());
        let total_entries = device.swtpm.ima_entries().len() as u64;
        assert!(traffic.answers >= 5, "{traffic:?}");
        // Each entry travels once: boot_aggregate + bash + one per round, however many answers.
        assert_eq!(traffic.ima_entries, total_entries, "{traffic:?}");
        assert_eq!(total_entries, 2 + measured);
        assert_eq!(
            traffic.boot_logs, 1,
            "the boot log travels once per session: {traffic:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pcr_extended_behind_the_logs_back_is_caught_within_an_interval() {
    let (_makers, verifier, device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-pcr")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    device.swtpm.extend_unlisted(4, b"bootkit").unwrap();
    assert_untrusted_for(&verifier, &device, "boot_log_replay").await;
    let detection = start.elapsed();
    println!("tamper-to-untrusted: {detection:?} (interval {INTERVAL:?})");
    // At most one interval plus one second; asserted with slack for a loaded CI machine.
    assert!(
        detection < INTERVAL * 2 + Duration::from_secs(2),
        "{detection:?}"
    );
    // Untrusted is sticky: later passing evidence does not clear it.
    tokio::time::sleep(INTERVAL * 2).await;
    assert_eq!(
        stored_state(&verifier, &device).unwrap(),
        DeviceState::Untrusted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_boot_log_is_caught() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-log")
        .await
        .unwrap();
    device.stop_agent();
    device
        .swtpm
        .rewrite_boot_log(|events: &mut Vec<BootEvent>| {
            let kernel = events
                .iter_mut()
                .rev()
                .find(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
                .unwrap();
            kernel.digests = vec![(Bank::Sha256, Bank::Sha256.hash(b"the approved kernel"))];
        })
        .unwrap();
    device.start_agent();
    assert_untrusted_for(&verifier, &device, "boot_log_replay").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ev_unused_trick_is_caught_by_the_event_rules() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-unused")
        .await
        .unwrap();
    device.stop_agent();
    // Extend something unlisted, then add it to the log under a type that "does not count".
    device.swtpm.extend_unlisted(4, b"implant").unwrap();
    device
        .swtpm
        .rewrite_boot_log(|events: &mut Vec<BootEvent>| {
            events.push(BootEvent {
                pcr: 4,
                event_type: 0x0000_0002, // EV_UNUSED
                digests: vec![(Bank::Sha256, Bank::Sha256.hash(b"implant"))],
                data: b"nothing to see".to_vec(),
            });
        })
        .unwrap();
    device.start_agent();
    assert_untrusted_for(&verifier, &device, "boot_event_rules").await;
    // The replay itself matched: only the event rules caught it.
    assert!(
        !verifier
            .failed_rules(&device.device_id())
            .contains(&"boot_log_replay".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_reset_whose_ima_log_continues_is_caught() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-reset-ima")
        .await
        .unwrap();
    device.swtpm.ima_measure("/usr/bin/sshd", b"sshd").unwrap();
    tokio::time::sleep(INTERVAL + Duration::from_millis(500)).await;
    device.stop_agent();
    let old_log = std::fs::read(device.swtpm.ima_log_path()).unwrap();
    device.swtpm.reboot(&BootProfile::default_linux()).unwrap();
    device
        .swtpm
        .ima_measure("/usr/bin/new", b"after reboot")
        .unwrap();
    // The OS pretends nothing happened: the old list goes on, with the new entry appended.
    let new_lines = std::fs::read_to_string(device.swtpm.ima_log_path()).unwrap();
    let mut continued = old_log.clone();
    continued.extend_from_slice(new_lines.lines().last().unwrap().as_bytes());
    continued.push(b'\n');
    device.swtpm.overwrite_ima_log(&continued).unwrap();
    device.start_agent();
    assert_untrusted_for(&verifier, &device, "reset_handling").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ima_entry_whose_template_hash_does_not_match_is_caught() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-ima-edit")
        .await
        .unwrap();
    device.stop_agent();
    device
        .swtpm
        .ima_measure("/usr/bin/malware", b"evil")
        .unwrap();
    // Rename the entry in the list: the logged template hash no longer matches its data.
    let text = std::fs::read_to_string(device.swtpm.ima_log_path()).unwrap();
    device
        .swtpm
        .overwrite_ima_log(text.replace("/usr/bin/malware", "/usr/bin/ls").as_bytes())
        .unwrap();
    device.start_agent();
    assert_untrusted_for(&verifier, &device, "ima_replay").await;
    assert!(
        verifier
            .failure_summary(&device.device_id())
            .contains("template hash"),
        "{}",
        verifier.failure_summary(&device.device_id())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_device_times_out_and_recovers_on_a_fresh_pass() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-silent")
        .await
        .unwrap();
    device.stop_agent();
    verifier
        .settle(&device.device_id(), DeviceState::TimedOut)
        .await
        .unwrap();
    answers_again(&verifier, &mut device).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_reset_with_a_fresh_boot_log_is_a_reboot() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-reboot")
        .await
        .unwrap();
    device.stop_agent();
    device.swtpm.reboot(&BootProfile::default_linux()).unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    device.start_agent();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = verifier.service.storage().events(0, 10_000).unwrap();
        if events
            .iter()
            .any(|(_, e)| e.kind == EventKind::Rebooted && e.device_id == device.device_id())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reboot recorded; last failure: {}",
            verifier.failure_summary(&device.device_id())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(INTERVAL + Duration::from_millis(500)).await;
    let state = stored_state(&verifier, &device).unwrap();
    assert_eq!(
        state,
        DeviceState::Trusted,
        "{}",
        verifier.failure_summary(&device.device_id())
    );
}

/// Honest evidence for `challenge` from `device`'s TPM, quoting `nonce` over `bank`.
fn evidence(device: &TestDevice, challenge: &Challenge, nonce: &[u8], bank: u16) -> Evidence {
    device.evidence(challenge, nonce, bank).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_old_quote_is_caught() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-replay").await.unwrap();
    let second = stream.challenge().await.unwrap();
    let good = evidence(&device, &second, &stream.bound(&second), 0x000b);
    stream.answer(good.clone()).await.unwrap();
    let third = stream.challenge().await.unwrap();
    let mut replayed = good;
    replayed.challenge_id = third.challenge_id;
    replayed.boot_log_included = false;
    replayed.boot_log.clear();
    stream.answer(replayed).await.unwrap();
    // The old quote is bound to the old nonce: its extraData is not this challenge's.
    assert_untrusted_for(&verifier, &device, "channel_binding").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quote_with_another_devices_nonce_is_caught() {
    let (makers, verifier, device_a, mut stream_a) = hand_driven("gw-nonce-a").await.unwrap();
    let (device_b, mut stream_b) = trusted_on_own_stream(&verifier, &makers.trusted, "gw-nonce-b")
        .await
        .unwrap();
    let challenge_a = stream_a.challenge().await.unwrap();
    let challenge_b = stream_b.challenge().await.unwrap();
    // B answers its own challenge with a quote over A's nonce.
    stream_b
        .answer(evidence(
            &device_b,
            &challenge_b,
            &stream_b.binding.qualifying_data(&challenge_a.nonce),
            0x000b,
        ))
        .await
        .unwrap();
    assert_untrusted_for(&verifier, &device_b, "channel_binding").await;
    drop(device_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quote_signed_by_another_ak_is_caught() {
    let (makers, verifier, device_a, _stream_a) = hand_driven("gw-ak-a").await.unwrap();
    let (device_b, mut stream_b) = trusted_on_own_stream(&verifier, &makers.trusted, "gw-ak-b")
        .await
        .unwrap();
    let challenge = stream_b.challenge().await.unwrap();
    // A genuine TPM (A's) quotes B's nonce: a relay for B.
    let bound = stream_b.bound(&challenge);
    let mut relayed = evidence(&device_a, &challenge, &bound, 0x000b);
    relayed.ima_entries = evidence(&device_b, &challenge, &bound, 0x000b).ima_entries;
    stream_b.answer(relayed).await.unwrap();
    assert_untrusted_for(&verifier, &device_b, "quote_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_signature_bit_is_caught() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-flip").await.unwrap();
    let challenge = stream.challenge().await.unwrap();
    let mut tampered = evidence(&device, &challenge, &stream.bound(&challenge), 0x000b);
    let last = tampered.signature.len() - 1;
    tampered.signature[last] ^= 1;
    stream.answer(tampered).await.unwrap();
    assert_untrusted_for(&verifier, &device, "quote_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sha1_only_answer_is_a_downgrade() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-sha1").await.unwrap();
    let challenge = stream.challenge().await.unwrap();
    stream
        .answer(evidence(
            &device,
            &challenge,
            &stream.bound(&challenge),
            0x0004,
        ))
        .await
        .unwrap();
    assert_untrusted_for(&verifier, &device, "required_bank").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_verifier_restart_trust_rests_on_a_fresh_challenge() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL.as_secs(), 3, "gw-restart")
        .await
        .unwrap();
    device.stop_agent();
    let verifier = verifier.restart().await.unwrap();
    // Trusted before the restart is not trusted after it...
    let state = stored_state(&verifier, &device).unwrap();
    assert_eq!(state, DeviceState::Enrolled);
    // ...until the device passes a fresh challenge from the new process.
    answers_again(&verifier, &mut device).await.unwrap();
}

/// Real boot logs are 15-75 KiB. The agent sends such evidence in parts of a few KiB (so the
/// verifier's per-device stream buffer stays small); the verifier joins and appraises it.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_boot_log_travels_in_parts_and_is_appraised() {
    let makers = TestMakers::generate().unwrap();
    let verifier = verifier(&makers).await;
    let mut profile = BootProfile::default_linux();
    profile.db = vec![0x30; 40 * 1024];
    let mut device = TestDevice::enrolled(&verifier, &makers.trusted, "gw-biglog", &profile)
        .await
        .unwrap();
    let log_bytes = std::fs::metadata(device.swtpm.event_log_path())
        .unwrap()
        .len();
    assert!(
        log_bytes > 10 * trustchain_proto::EVIDENCE_WHOLE_BYTES as u64,
        "boot log of {log_bytes} bytes would not need parts"
    );
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    device.start_agent();
    verifier
        .wait_for_state(&device.device_id(), DeviceState::Trusted, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", verifier.failure_summary(&device.device_id())));
}

/// Parts are joined only up to the evidence size limit, and joined parts that do not decode are
/// refused: either ends the stream with no verdict for the challenge.
#[tokio::test(flavor = "multi_thread")]
async fn evidence_parts_past_the_limit_or_undecodable_end_the_stream_without_a_verdict() {
    let makers = TestMakers::generate().unwrap();
    let verifier = raw_verifier(&makers).await;
    let limit = verifier.service.limits().max_evidence_message;
    let (_too_large, mut stream) =
        trusted_on_own_stream(&verifier, &makers.trusted, "gw-parts-big")
            .await
            .unwrap();
    let challenge = stream.challenge().await.unwrap();
    for _ in 0..=(limit / (1024 * 1024)) {
        let part = AgentMessage {
            body: Some(agent_message::Body::EvidencePart(EvidencePart {
                data: vec![0; 1024 * 1024],
                last: false,
            })),
        };
        if stream.outbound.send(part).await.is_err() {
            break;
        }
    }
    assert_stream_refused(&mut stream, challenge.challenge_id).await;

    let (_garbage, mut stream) = trusted_on_own_stream(&verifier, &makers.trusted, "gw-parts-junk")
        .await
        .unwrap();
    let challenge = stream.challenge().await.unwrap();
    for (data, last) in [(vec![0xff; 4096], false), (vec![0xff; 10], true)] {
        stream
            .outbound
            .send(AgentMessage {
                body: Some(agent_message::Body::EvidencePart(EvidencePart {
                    data,
                    last,
                })),
            })
            .await
            .unwrap();
    }
    assert_stream_refused(&mut stream, challenge.challenge_id).await;
}

async fn assert_stream_refused(stream: &mut AttestStream, challenge_id: u64) {
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match stream.inbound.message().await {
                Ok(Some(message)) => {
                    if let Some(verifier_message::Body::Verdict(v)) = message.body {
                        assert_ne!(v.challenge_id, challenge_id, "a verdict for refused parts");
                    }
                }
                other => return other,
            }
        }
    })
    .await
    .expect("the verifier kept the stream open");
    let status = outcome.expect_err("the stream ended without an error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert_eq!(status.message(), "malformed evidence");
}

/// An answer whose parts straddle its round's deadline is a late answer like any other: its
/// remaining parts, read in the next round, are joined and dropped, and the stream goes on.
#[tokio::test(flavor = "multi_thread")]
async fn parts_of_an_answer_that_missed_its_deadline_are_dropped_as_late() {
    let (_makers, verifier, device, mut stream) = hand_driven("gw-parts-late").await.unwrap();
    let missed = stream.challenge().await.unwrap();
    let mut late = evidence(&device, &missed, &stream.bound(&missed), 0x000b);
    late.boot_log =
        vec![0; trustchain_proto::EVIDENCE_WHOLE_BYTES + 2 * trustchain_proto::EVIDENCE_PART_BYTES];
    late.boot_log_included = true;
    let mut parts = trustchain_proto::evidence_messages(late);
    assert!(parts.len() > 2);
    let last = parts.pop().unwrap();
    for part in parts {
        stream.outbound.send(part).await.unwrap();
    }
    let next = stream.challenge().await.unwrap();
    assert!(next.challenge_id > missed.challenge_id);
    stream.outbound.send(last).await.unwrap();
    stream
        .answer(evidence(&device, &next, &stream.bound(&next), 0x000b))
        .await
        .unwrap();
    let verdict = tokio::time::timeout(WAIT, async {
        loop {
            let message = stream.inbound.message().await.unwrap().unwrap();
            if let Some(verifier_message::Body::Verdict(v)) = message.body {
                assert_ne!(
                    v.challenge_id, missed.challenge_id,
                    "the late answer was appraised"
                );
                if v.challenge_id == next.challenge_id {
                    return v;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        verdict.state,
        trustchain_proto::v1::TrustState::Trusted as i32,
        "{}",
        verifier.failure_summary(&device.device_id())
    );
}
