//! Durable liveness (issue 17, item 4): Keylime's push mode showed a silent agent as passing
//! after a verifier restart (keylime#1888) and let FAIL -> TIMEOUT -> PASS bypass its
//! no-auto-recovery rule (keylime#1889). Here, with a real verifier restarted on its sled
//! database, real swtpm devices and the real agent:
//! - a device silent across a restart is never trusted by the new process and times out at its
//!   last pass plus its timeout window, however many restarts come in between, or at once when
//!   the window ran out while the verifier was down; the timeout is an alert (a state change
//!   to `timed_out`) and `trustchain_devices_silent` counts it; an honest answer brings it back;
//! - an integrity failure stays untrusted through silence and a restart, and an honest answer
//!   after them does not make the device trusted: only an operator's clear does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use trustchain_proto::v1::DeviceRequest;
use trustchain_swtpm::BootProfile;
use trustchain_tests::attest::{agent_trusted, answers_again, stored_state};
use trustchain_tests::{TestDevice, TestVerifier};
use trustchain_verifier::device::{DeviceState, EventKind};
use trustchain_verifier::metrics::Scrape as _;

/// Challenge interval (s); a device times out after `MISSED` intervals without a pass.
const INTERVAL: u64 = 2;
const MISSED: u32 = 3;
const WINDOW: Duration = Duration::from_secs(INTERVAL * MISSED as u64);
/// Timestamps are whole seconds and the watchdog looks twice a second.
const SLACK: Duration = Duration::from_millis(2500);

fn state(verifier: &TestVerifier, device: &TestDevice) -> DeviceState {
    stored_state(verifier, device).unwrap()
}

/// A value of the verifier's metrics exposition (`name` with its labels, if any).
fn metric(verifier: &TestVerifier, name: &str) -> f64 {
    let text = verifier.service.scrape();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Waits until the device times out, failing if it is ever trusted meanwhile; returns when.
async fn timed_out_never_trusted(verifier: &TestVerifier, device: &TestDevice) -> Instant {
    let deadline = Instant::now() + WINDOW * 3;
    loop {
        match state(verifier, device) {
            DeviceState::TimedOut => return Instant::now(),
            DeviceState::Trusted => panic!("a silent device is trusted after the restart"),
            other => assert!(
                Instant::now() < deadline,
                "the silent device is still {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_silent_across_restarts_times_out_by_its_last_pass_and_is_never_trusted() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL, MISSED, "gw-live-restart")
        .await
        .unwrap();
    device.stop_agent();
    let silenced = Instant::now();

    // The attack: the device stays silent while the verifier restarts, twice within the window.
    let verifier = verifier.restart().await.unwrap();
    assert_eq!(
        state(&verifier, &device),
        DeviceState::Enrolled,
        "trusted before the restart, not after it"
    );
    tokio::time::sleep(WINDOW / 2).await;
    let verifier = verifier.restart().await.unwrap();
    let timed_out = timed_out_never_trusted(&verifier, &device).await;
    // The second restart did not give it a new window: the deadline is the last pass's.
    assert!(
        timed_out - silenced <= WINDOW + SLACK,
        "timed out {:?} after it went silent (window {WINDOW:?})",
        timed_out - silenced
    );
    // The alert (a state change to timed_out, for watchers and webhooks) and the gauge.
    let changes = verifier
        .events_of(&device.device_id(), EventKind::StateChanged)
        .unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("enrolled -> timed_out")),
        "{changes:?}"
    );
    assert_eq!(metric(&verifier, "trustchain_devices_silent"), 1.0);

    // The honest path: the device answers again and passes a fresh challenge.
    answers_again(&verifier, &mut device).await.unwrap();
    assert_eq!(metric(&verifier, "trustchain_devices_silent"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_that_ran_out_while_the_verifier_was_down_times_the_device_out_at_start() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL, MISSED, "gw-live-down")
        .await
        .unwrap();
    device.stop_agent();
    let verifier = verifier
        .restart_after(|_| {
            std::thread::sleep(WINDOW + Duration::from_secs(1));
            Ok(())
        })
        .await
        .unwrap();
    // No grace period from the start: its window ran out before it.
    assert_eq!(state(&verifier, &device), DeviceState::TimedOut);
    assert_eq!(metric(&verifier, "trustchain_devices_silent"), 1.0);
    answers_again(&verifier, &mut device).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_integrity_failure_stays_untrusted_through_silence_and_a_restart_until_cleared() {
    let (_makers, verifier, mut device) = agent_trusted(INTERVAL, MISSED, "gw-live-sticky")
        .await
        .unwrap();
    let id = device.device_id();
    device.swtpm.extend_unlisted(4, b"implant").unwrap();
    verifier.settle(&id, DeviceState::Untrusted).await.unwrap();
    assert!(
        verifier
            .failed_rules(&id)
            .contains(&"boot_log_replay".into()),
        "{}",
        verifier.failure_summary(&id)
    );

    // FAIL -> silence past the timeout: still untrusted (the gauge shows the silence).
    device.stop_agent();
    tokio::time::sleep(WINDOW + SLACK).await;
    assert_eq!(state(&verifier, &device), DeviceState::Untrusted);
    assert_eq!(metric(&verifier, "trustchain_devices_silent"), 1.0);
    // ...and through a restart.
    let verifier = verifier.restart().await.unwrap();
    assert_eq!(state(&verifier, &device), DeviceState::Untrusted);

    // -> PASS: the device reboots clean and answers honestly; its appraisals pass, and it
    // stays untrusted.
    device.swtpm.reboot(&BootProfile::default_linux()).unwrap();
    device.swtpm.ima_measure("/usr/bin/bash", b"bash").unwrap();
    device.start_agent();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&verifier, "trustchain_appraisals_total{outcome=\"pass\"}") < 2.0 {
        assert!(Instant::now() < deadline, "no honest appraisal passed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state(&verifier, &device), DeviceState::Untrusted);

    // Only an operator's clear lets a fresh pass make it trusted.
    let mut admin = verifier.admin().await.unwrap();
    admin
        .clear_device(DeviceRequest {
            device_id: id.clone(),
            comment: "implant removed".into(),
        })
        .await
        .unwrap();
    verifier.settle(&id, DeviceState::Trusted).await.unwrap();
}
