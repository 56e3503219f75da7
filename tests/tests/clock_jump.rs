//! Wall-clock jumps (issue 9, item 5): the `trustchain-verifier` binary runs under libfaketime
//! (LD_PRELOAD, `FAKETIME_TIMESTAMP_FILE` re-read on every call with `FAKETIME_NO_CACHE=1`,
//! the monotonic clock left alone with `FAKETIME_DONT_FAKE_MONOTONIC=1`), and its wall clock
//! is moved +1 h, back, then -1 h while devices attest. Expiries run on the monotonic clock, so:
//! no device times out or expires en masse (every honest device keeps getting "trusted" at its
//! interval), none is trusted without passing (a device answering after its challenge expired
//! gets no verdict and times out, during the -1 h jump), and an enrollment begun before the
//! +1 h jump completes after it. The certificate issued at that enrollment carries the jumped
//! time, which proves the verifier really saw the jump.
//!
//! Needs libfaketime (`scripts/setup.sh` installs the `faketime` package) and the workspace
//! binaries (`cargo build -p trustchain-verifier --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trustchain_proto::v1::TrustState;
use trustchain_swtpm::BootProfile;
use trustchain_tests::soft_tpm::SoftTpm;
use trustchain_tests::verifier_process::{Behaviour, Deployment, Enrollment, run_device};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const HONEST: usize = 5;
const HOUR: i64 = 3600;

fn set_offset(file: &Path, seconds: i64) {
    // Written aside and renamed: the verifier re-reads the file on every clock call.
    let temporary = file.with_extension("new");
    std::fs::write(&temporary, format!("{seconds:+}\n")).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wall_clock_jump_of_an_hour_expires_and_accepts_nothing() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install the faketime package (scripts/setup.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let deployment = Arc::new(Deployment::create(dir.path(), &state_dir, 1, 3).unwrap());
    let offset_file = dir.path().join("faketime.offset");
    set_offset(&offset_file, 0);
    let mut command = deployment.command();
    command
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let log = dir.path().join("verifier.log");
    let verifier = deployment.start(command, &log).await.unwrap();

    let profile = BootProfile::default_linux();
    let incarnation = Arc::new(AtomicU64::new(1));
    let behaviours: Vec<Arc<Behaviour>> = (0..=HONEST)
        .map(|_| Arc::new(Behaviour::default()))
        .collect();
    let mut tasks = Vec::new();
    for (index, behaviour) in behaviours.iter().enumerate() {
        let label = format!("clock-{index}");
        let tpm = SoftTpm::new(&deployment.makers.trusted, &label, &profile).unwrap();
        tasks.push(tokio::spawn(run_device(
            deployment.clone(),
            tpm,
            label,
            behaviour.clone(),
            incarnation.clone(),
        )));
    }
    let late = behaviours.get(HONEST).unwrap().clone();
    let trusted_metric = "trustchain_devices{state=\"trusted\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    while deployment.metric(trusted_metric).await != Some((HONEST + 1) as f64) {
        assert!(
            Instant::now() < deadline,
            "the fleet did not become trusted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An enrollment in progress across the jump.
    let pending_tpm = SoftTpm::new(&deployment.makers.trusted, "clock-pending", &profile).unwrap();
    let pending =
        trustchain_tests::verifier_process::begin(&deployment, &pending_tpm, "clock-pending")
            .await
            .unwrap();

    let mut phases = Vec::new();
    let watch = |seconds: u64| {
        let deployment = deployment.clone();
        async move {
            let mut lowest = f64::MAX;
            let mut timed_out_max: f64 = 0.0;
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                if let Some(trusted) = deployment.metric(trusted_metric).await {
                    lowest = lowest.min(trusted);
                }
                if let Some(timed_out) = deployment
                    .metric("trustchain_devices{state=\"timed_out\"}")
                    .await
                {
                    timed_out_max = timed_out_max.max(timed_out);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (lowest, timed_out_max)
        }
    };

    // +1 h.
    set_offset(&offset_file, HOUR);
    let (lowest, timed_out) = watch(5).await;
    phases.push(format!(
        "+1 h for 5 s: trusted never below {lowest}, timed out at most {timed_out}"
    ));
    assert_eq!(timed_out, 0.0, "devices timed out after a +1 h jump");
    let enrolled =
        trustchain_tests::verifier_process::complete(&deployment, &pending_tpm, &pending)
            .await
            .unwrap();
    let Enrollment::Accepted { certificate, .. } = &enrolled else {
        panic!("the enrollment begun before the +1 h jump was refused: {enrolled:?}");
    };
    // The CA backdates notBefore by 5 minutes.
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).unwrap();
    let shift = parsed.validity().not_before.timestamp() + 300 - unix_now();

    // Back, then -1 h with one device answering only after its challenges expired.
    set_offset(&offset_file, 0);
    let (lowest, timed_out) = watch(3).await;
    phases.push(format!(
        "back to 0 for 3 s: trusted never below {lowest}, timed out at most {timed_out}"
    ));
    assert_eq!(timed_out, 0.0);
    set_offset(&offset_file, -HOUR);
    late.answer_delay_millis.store(2_500, Ordering::SeqCst);
    let late_from = Instant::now();
    let (lowest, timed_out) = watch(8).await;
    phases.push(format!(
        "-1 h for 8 s, one device answering 2.5 s late: honest trusted never below {}, timed \
         out at most {timed_out}",
        lowest.min(HONEST as f64)
    ));
    assert!(
        lowest >= HONEST as f64,
        "honest devices left trusted after a -1 h jump (trusted {lowest})"
    );
    assert!(
        timed_out <= 1.0,
        "more than the late device timed out: {timed_out}"
    );
    set_offset(&offset_file, 0);
    let (lowest, _) = watch(3).await;
    phases.push(format!("back to 0 for 3 s: trusted never below {lowest}"));
    let late_state = deployment
        .metric("trustchain_devices{state=\"timed_out\"}")
        .await;

    for behaviour in &behaviours {
        behaviour.stop.store(true, Ordering::SeqCst);
    }
    let mut logs = Vec::new();
    for task in tasks {
        logs.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let export = dir.path().join("audit.jsonl");
    let verified = deployment.export_and_verify_audit(&export).unwrap();
    verifier.stop();

    let mut per_device = Vec::new();
    for (index, log) in logs.iter().enumerate() {
        let trusted: Vec<_> = log
            .verdicts
            .iter()
            .filter(|v| v.state == TrustState::Trusted as i32)
            .collect();
        if index == HONEST {
            let after_delay = trusted.iter().filter(|v| v.at > late_from).count();
            assert_eq!(
                after_delay, 0,
                "a late answer was accepted while the clock was back an hour"
            );
            continue;
        }
        assert_eq!(
            trusted.len(),
            log.verdicts.len(),
            "{} got a verdict other than trusted",
            log.label
        );
        // Gaps between verdicts show whether the device was ever held up across a jump.
        let longest_gap = trusted
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .max()
            .unwrap_or_default();
        assert!(
            longest_gap < Duration::from_secs(3),
            "{}: {longest_gap:?} between verdicts",
            log.label
        );
        per_device.push(format!("{}ms", longest_gap.as_millis()));
    }
    assert!(
        (HOUR - 120..=HOUR + 60).contains(&shift),
        "the certificate's notBefore is {shift} s from now: the verifier did not see the jump"
    );
    assert_eq!(
        late_state,
        Some(1.0),
        "the late device should have timed out"
    );
    for phase in &phases {
        println!("{phase}");
    }
    println!(
        "honest devices: all verdicts trusted; longest gap between verdicts per device: {}",
        per_device.join(", ")
    );
    println!(
        "enrollment begun before +1 h completed after it; its certificate's notBefore is {shift} s \
         ahead of the real clock (after the CA's 5-minute backdating): the verifier saw the jump"
    );
    println!(
        "late device (answers after expiry, during -1 h): 0 trusted verdicts, timed out ({late_state:?})"
    );
    println!("audit verify: {verified}");
}
