//! Crash consistency (issue 9, item 1): the `trustchain-verifier` process is killed with SIGKILL
//! at random moments, at least 50 times, while 20 simulated devices enroll and attest (some
//! enrolling during the kills, plus devices from an untrusted TPM maker that must be refused),
//! and restarted each time on the same state directory and port. Afterwards:
//! - every enrollment a device saw accepted is in the database, and no refused device is;
//! - no nonce was accepted twice, and every verdict rests on a durably spent nonce (each
//!   device's durable count covers its verdicts; its last verdict's nonce is held);
//! - in the audit log, each process starts (its `verifier_started` record) with no device
//!   trusted, and every "-> trusted" change rests on a passing appraisal ("all rules passed");
//!   replaying the log's state changes gives exactly the states in the database;
//! - the exported audit chain verifies (`trustchain audit verify`);
//! - a quote made for a challenge of an earlier process is refused by the new one.
//!
//! The kill moments come from a seed printed at the start (`CRASH_SEED=<n>` repeats a run).
//! Needs the workspace binaries built: `cargo build -p trustchain-verifier --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trustchain_proto::v1::TrustState;
use trustchain_swtpm::BootProfile;
use trustchain_tests::soft_tpm::{SoftTpm, answer};
use trustchain_tests::verifier_process::{Behaviour, Deployment, DeviceLog, run_device};
use trustchain_verifier::device::{DeviceState, EventKind};
use trustchain_verifier::enrollment::enroller::device_id_for;
use trustchain_verifier::storage::{SledStorage, Storage};

const DEVICES: usize = 20;
/// Devices enrolling from the start; the others start during the kills.
const EARLY_DEVICES: usize = 12;
const ROGUE_DEVICES: usize = 3;
const KILLS: usize = 55;

/// xorshift64*: reproducible kill moments from a printed seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_and_trusts_nothing_stale() {
    let started = Instant::now();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed}");
    let mut random = Random(seed);

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let deployment = Arc::new(Deployment::create(dir.path(), &state_dir, 1, 3).unwrap());
    let log_path = dir.path().join("verifier.log");
    let incarnation = Arc::new(AtomicU64::new(1));
    let mut verifier = deployment
        .start(deployment.command(), &log_path)
        .await
        .unwrap();

    // The fleet: honest devices (12 now, 8 during the kills) and rogue ones (untrusted maker).
    let profile = BootProfile::default_linux();
    let behaviour = Arc::new(Behaviour::default());
    let mut tasks = Vec::new();
    for index in 0..DEVICES + ROGUE_DEVICES {
        let rogue = index >= DEVICES;
        let maker = if rogue {
            &deployment.makers.rogue
        } else {
            &deployment.makers.trusted
        };
        let label = if rogue {
            format!("rogue-{index:02}")
        } else {
            format!("crash-{index:02}")
        };
        let tpm = SoftTpm::new(maker, &label, &profile).unwrap();
        let expected_id = device_id_for(&tpm.ek_public);
        let delay = if index < EARLY_DEVICES {
            Duration::ZERO
        } else {
            random.millis(2_000, 45_000)
        };
        let (deployment, behaviour, incarnation) =
            (deployment.clone(), behaviour.clone(), incarnation.clone());
        tasks.push((
            rogue,
            expected_id,
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                run_device(deployment, tpm, label, behaviour, incarnation).await
            }),
        ));
    }

    // The kills.
    let mut restart_times = Vec::new();
    for _ in 0..KILLS {
        tokio::time::sleep(random.millis(150, 2_200)).await;
        verifier.kill();
        incarnation.fetch_add(1, Ordering::SeqCst);
        let restarting = Instant::now();
        verifier = deployment
            .start(deployment.command(), &log_path)
            .await
            .unwrap();
        restart_times.push(restarting.elapsed());
    }
    let kills_done = Instant::now();
    // Let every device (including late enrollers) reach the last process and pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let trusted = deployment
            .metric("trustchain_devices{state=\"trusted\"}")
            .await
            .unwrap_or(0.0);
        if trusted as usize == DEVICES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {trusted} of {DEVICES} devices trusted 30 s after the last restart:\n{}",
            verifier.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    behaviour.stop.store(true, Ordering::SeqCst);
    let mut logs: Vec<(bool, String, DeviceLog)> = Vec::new();
    for (rogue, expected_id, task) in tasks {
        let log = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a device task did not stop")
            .unwrap();
        logs.push((rogue, expected_id, log));
    }

    // A quote answering a challenge of an earlier process, replayed to the last one: refused.
    let replay = replay_old_quote(&deployment, &mut logs).await;

    let audit_export = dir.path().join("audit.jsonl");
    let verified = deployment.export_and_verify_audit(&audit_export).unwrap();
    verifier.stop();

    // Checks on the final database.
    let storage = SledStorage::open(&state_dir).unwrap();
    let devices: HashMap<String, DeviceState> = storage
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| (d.device_id, d.state))
        .collect();
    let mut accepted_enrollments = 0;
    let mut refused_enrollments = 0;
    let mut trusted_nonces: Vec<Vec<u8>> = Vec::new();
    let mut verdicts = 0;
    for (rogue, expected_id, log) in &logs {
        if *rogue {
            assert!(log.accepted.is_empty(), "{} was accepted", log.label);
            assert!(
                !log.refused.is_empty(),
                "{} never heard a refusal",
                log.label
            );
            assert!(
                !devices.contains_key(expected_id),
                "refused device {} is in the database",
                log.label
            );
            refused_enrollments += log.refused.len();
            continue;
        }
        assert!(log.refused.is_empty(), "{} was refused", log.label);
        assert!(!log.accepted.is_empty(), "{} never enrolled", log.label);
        for id in &log.accepted {
            assert!(
                devices.contains_key(id),
                "accepted enrollment of {id} is lost"
            );
        }
        accepted_enrollments += log.accepted.len();
        for verdict in &log.verdicts {
            verdicts += 1;
            assert_ne!(
                verdict.state,
                TrustState::Untrusted as i32,
                "honest device {} was judged untrusted",
                log.label
            );
            if verdict.state == TrustState::Trusted as i32 {
                trusted_nonces.push(verdict.nonce.clone());
            }
        }
    }
    let distinct: HashSet<&Vec<u8>> = trusted_nonces.iter().collect();
    assert_eq!(
        distinct.len(),
        trusted_nonces.len(),
        "a nonce was accepted twice"
    );
    // Every verdict rests on a nonce spent durably before it left: after the SIGKILLs the
    // database counts at least as many spent nonces for each device as it received verdicts
    // (a verdict whose nonce was lost would leave the count short), and still holds the nonce
    // of the device's last verdict.
    for (rogue, _, log) in &logs {
        if *rogue {
            continue;
        }
        let device_id = log.device_id.as_deref().unwrap();
        let spent = storage.nonces_spent_by(device_id).unwrap();
        assert!(
            spent >= log.verdicts.len() as u64,
            "{}: {} verdicts but {spent} nonces durably spent",
            log.label,
            log.verdicts.len()
        );
        if let Some(last) = log.verdicts.last() {
            assert!(
                !storage.consume_nonce(&last.nonce, device_id).unwrap(),
                "{}: the nonce behind its last verdict was not durably spent",
                log.label
            );
        }
    }

    // The audit log, replayed.
    let events = storage.events(1, usize::MAX).unwrap();
    let mut states: BTreeMap<String, DeviceState> = BTreeMap::new();
    let mut starts = 0;
    let mut trusted_changes = 0;
    for (sequence, event) in &events {
        match event.kind {
            EventKind::VerifierStarted => {
                starts += 1;
                let stale: Vec<&String> = states
                    .iter()
                    .filter(|(_, s)| **s == DeviceState::Trusted)
                    .map(|(id, _)| id)
                    .collect();
                assert!(
                    stale.is_empty(),
                    "record {sequence}: a process started with {stale:?} still trusted"
                );
            }
            EventKind::Enrolled => {
                states
                    .entry(event.device_id.clone())
                    .or_insert(DeviceState::Enrolled);
            }
            EventKind::ReEnrolled | EventKind::AkRotated => {
                // Re-enrollment resets to enrolled except from a sticky state (the enroller's
                // rule), without a state-change record.
                let state = states
                    .entry(event.device_id.clone())
                    .or_insert(DeviceState::Enrolled);
                if !matches!(*state, DeviceState::Untrusted | DeviceState::Quarantined) {
                    *state = DeviceState::Enrolled;
                }
            }
            EventKind::StateChanged => {
                let (change, reason) = event.detail.split_once(": ").unwrap();
                let (from, to) = change.split_once(" -> ").unwrap();
                let from = DeviceState::from_name(from).unwrap();
                let to = DeviceState::from_name(to).unwrap();
                if let Some(known) = states.get(&event.device_id) {
                    assert_eq!(*known, from, "record {sequence}: the log skips a change");
                }
                if to == DeviceState::Trusted {
                    trusted_changes += 1;
                    assert_eq!(
                        reason, "all rules passed",
                        "record {sequence}: trusted without a passing appraisal"
                    );
                }
                states.insert(event.device_id.clone(), to);
            }
            _ => {}
        }
    }
    for (id, state) in &devices {
        // A device whose Enrolled record was lost to a kill between the device write and the
        // event write has no replayed state until its first change; then it must agree.
        if let Some(replayed) = states.get(id) {
            assert_eq!(replayed, state, "{id}: the log and the database disagree");
        }
    }
    assert!(starts >= KILLS, "only {starts} process starts recorded");

    println!(
        "kills {KILLS} (SIGKILL) in {:.0} s; restarts to listening: mean {:.0} ms, max {:.0} ms",
        (kills_done - started).as_secs_f64(),
        restart_times.iter().map(Duration::as_millis).sum::<u128>() as f64
            / restart_times.len() as f64,
        restart_times.iter().max().unwrap().as_millis()
    );
    println!(
        "devices {DEVICES} ({} enrolling during the kills) + {ROGUE_DEVICES} rogue; accepted \
         enrollments seen {accepted_enrollments}, all in the database; refusals seen \
         {refused_enrollments}, none in the database",
        DEVICES - EARLY_DEVICES
    );
    println!(
        "verdicts received {verdicts}; trusted {} with {} distinct nonces, all spent on disk; \
         none untrusted",
        trusted_nonces.len(),
        distinct.len()
    );
    println!(
        "audit: {} records, {starts} process starts, each with no device trusted; {trusted_changes} \
         changes to trusted, each on a passing appraisal; replay == database",
        events.len()
    );
    println!("replayed old quote: {replay}");
    println!("audit verify: {verified}");
    println!("total {:.0} s", started.elapsed().as_secs_f64());
}

/// Answers the last process's first challenge with a quote the device made for an earlier
/// process's challenge; returns what the device heard.
async fn replay_old_quote(
    deployment: &Deployment,
    logs: &mut [(bool, String, DeviceLog)],
) -> String {
    use tokio_stream::wrappers::ReceiverStream;
    use trustchain_proto::v1::attestation_client::AttestationClient;
    use trustchain_proto::v1::{AgentMessage, Hello, agent_message, verifier_message};
    let (_, _, log) = logs.iter_mut().find(|(rogue, _, _)| !rogue).unwrap();
    let device_id = log.device_id.clone().unwrap();
    let tpm = log.tpm.as_mut().unwrap();
    // A quote over an old nonce (one the device answered before).
    let old_nonce = log
        .verdicts
        .iter()
        .find(|v| v.state == TrustState::Trusted as i32)
        .unwrap()
        .nonce
        .clone();
    let bound = deployment
        .bound_channel(log.identity.as_ref().unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(AgentMessage {
        body: Some(agent_message::Body::Hello(Hello {
            device_id: device_id.clone(),
            agent_version: "replayer".into(),
        })),
    })
    .await
    .unwrap();
    let mut inbound = AttestationClient::new(bound.channel)
        .attest(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), inbound.message())
            .await
            .expect("no message from the verifier")
            .unwrap()
            .expect("stream ended");
        match message.body {
            Some(verifier_message::Body::Challenge(challenge)) => {
                assert!(!challenge.pcr_selection.is_empty());
                // The old challenge's nonce, and the boot log whether asked for or not.
                let mut evidence =
                    answer(tpm, &challenge, &bound.binding.qualifying_data(&old_nonce)).unwrap();
                evidence.boot_log = tpm.boot_log.clone();
                tx.send(AgentMessage {
                    body: Some(agent_message::Body::Evidence(evidence)),
                })
                .await
                .unwrap();
            }
            Some(verifier_message::Body::Verdict(verdict)) => {
                assert_eq!(
                    verdict.state,
                    TrustState::Untrusted as i32,
                    "a replayed quote from an earlier process was accepted"
                );
                return format!("{device_id}: untrusted (channel_binding rule)");
            }
            None => {}
        }
    }
}
