//! Storage faults (issue 9, item 2), each through the real `trustchain-verifier` binary:
//! - a corrupted state directory: the verifier refuses to start, names the path, and leaves
//!   every file byte for byte as it was;
//! - a full disk (the state directory on a small tmpfs this test mounts; it runs as root here
//!   and in CI, and fails if the mount fails): verdicts stop, the operator is told (log line and
//!   `trustchain_storage_writable 0`), every verdict a device saw rests on a durable write, and
//!   the verifier resumes by itself once space returns;
//! - `trustchain-verifier backup` while devices attest, then `restore` into a new directory
//!   and a verifier started on it: devices and a verifying audit chain are there.
//!
//! Needs the workspace binaries built: `cargo build -p trustchain-verifier --bins`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use trustchain_proto::v1::TrustState;
use trustchain_swtpm::BootProfile;
use trustchain_tests::soft_tpm::SoftTpm;
use trustchain_tests::verifier_process::{
    Behaviour, Deployment, DeviceLog, VerifierProcess, attest_stream, hash_tree, run_device,
};
use trustchain_verifier::device::DeviceState;
use trustchain_verifier::storage::{SledStorage, Storage};

struct Fleet {
    behaviour: Arc<Behaviour>,
    tasks: Vec<JoinHandle<DeviceLog>>,
}

fn fleet(deployment: &Arc<Deployment>, count: usize, prefix: &str) -> Fleet {
    let profile = BootProfile::default_linux();
    let behaviour = Arc::new(Behaviour::default());
    let incarnation = Arc::new(AtomicU64::new(1));
    let tasks = (0..count)
        .map(|i| {
            let label = format!("{prefix}-{i}");
            let tpm = SoftTpm::new(&deployment.makers.trusted, &label, &profile).unwrap();
            tokio::spawn(run_device(
                deployment.clone(),
                tpm,
                label,
                behaviour.clone(),
                incarnation.clone(),
            ))
        })
        .collect();
    Fleet { behaviour, tasks }
}

/// A verifier on `state_dir` (its other files and its log in `dir`) and `count` simulated
/// devices, once all of them are trusted.
async fn trusted_fleet(
    dir: &Path,
    state_dir: &Path,
    count: usize,
    prefix: &str,
) -> (Arc<Deployment>, PathBuf, VerifierProcess, Fleet) {
    let deployment = Arc::new(Deployment::create(dir, state_dir, 1, 3).unwrap());
    let log = dir.join("verifier.log");
    let verifier = deployment.start(deployment.command(), &log).await.unwrap();
    let devices = fleet(&deployment, count, prefix);
    wait_for_metric(
        &deployment,
        "trustchain_devices{state=\"trusted\"}",
        |v| v == count as f64,
        Duration::from_secs(60),
    )
    .await;
    (deployment, log, verifier, devices)
}

impl Fleet {
    async fn stop(self) -> Vec<DeviceLog> {
        self.behaviour.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for task in self.tasks {
            logs.push(
                tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .expect("a device did not stop")
                    .unwrap(),
            );
        }
        logs
    }
}

async fn wait_for_metric(
    deployment: &Deployment,
    name: &str,
    wanted: impl Fn(f64) -> bool,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(value) = deployment.metric(name).await
            && wanted(value)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{name} did not reach the wanted value within {timeout:?} (now {:?})",
            deployment.metric(name).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where audit records of state changes sit in sled's log file. sled keeps free space and may
/// hold more than one copy of a record (the log and rewritten pages), so a damage at one place
/// or a cut at a share of the length may remove nothing live; the cases below damage every copy
/// or cut before the first.
fn audit_records(bytes: &[u8]) -> Vec<usize> {
    let needle = b"state_changed";
    let found: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(!found.is_empty(), "no audit record in the log");
    found
}

/// Runs `trustchain-verifier serve` expecting it to refuse to start; returns its stderr.
fn refused_start(name: &str, config: &Path) -> String {
    let mut child = Command::new(trustchain_tests::workspace_binary("trustchain-verifier"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name}: the verifier started on a corrupted state directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_state_directory_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let (deployment, _log, verifier, devices) =
        trusted_fleet(dir.path(), &state_dir, 3, "corrupt").await;
    // Long enough for the seal (refreshed every second) to cover the trusted states.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    devices.stop().await;
    verifier.stop();

    let config = std::fs::read_to_string(&deployment.config_path).unwrap();
    type Corruption = fn(&Path);
    let cases: [(&str, Corruption); 4] = [
        ("truncated log", |state| {
            // Cut the log before its first state-change record.
            let db = state.join("db");
            let at = audit_records(&std::fs::read(&db).unwrap())[0];
            std::fs::OpenOptions::new()
                .write(true)
                .open(&db)
                .unwrap()
                .set_len(at as u64)
                .unwrap();
        }),
        ("flipped block in live data", |state| {
            // Flip bytes inside every copy of the state-change records (live data): a flip in
            // a free or superseded region of sled's log damages nothing, and a verifier that
            // starts on it is right to (flipping the file's middle was flaky for that reason).
            let db = state.join("db");
            let mut bytes = std::fs::read(&db).unwrap();
            for at in audit_records(&bytes) {
                for byte in &mut bytes[at..at + 13] {
                    *byte ^= 0xa5;
                }
            }
            std::fs::write(&db, bytes).unwrap();
        }),
        ("garbage config file", |state| {
            std::fs::write(state.join("conf"), b"\x00garbage").unwrap();
        }),
        ("emptied log", |state| {
            std::fs::write(state.join("db"), b"").unwrap();
        }),
    ];
    for (index, (name, corrupt)) in cases.iter().enumerate() {
        let copy = dir.path().join(format!("state-corrupt-{index}"));
        assert!(
            Command::new("cp")
                .args(["-a"])
                .arg(&state_dir)
                .arg(&copy)
                .status()
                .unwrap()
                .success()
        );
        corrupt(&copy);
        let before = hash_tree(&copy).unwrap();
        let case_config = dir.path().join(format!("corrupt-{index}.toml"));
        std::fs::write(
            &case_config,
            config.replace(&format!("{state_dir:?}"), &format!("{copy:?}")),
        )
        .unwrap();
        let stderr = refused_start(name, &case_config);
        let after = hash_tree(&copy).unwrap();
        let message = stderr
            .lines()
            .find(|l| l.starts_with("trustchain-verifier:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(&copy.display().to_string()),
            "{name}: the refusal does not name the path: {stderr}"
        );
        assert_eq!(before, after, "{name}: the state directory was modified");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".check-"))
            .collect();
        assert!(leftovers.is_empty(), "scratch copies left: {leftovers:?}");
        println!(
            "{name}: refused, {} files unchanged: {message}",
            before.len()
        );
    }
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_withholds_verdicts_and_recovery_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        mounted.status.success(),
        "this test needs to mount a tmpfs (run as root): {}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let _mount = Mount(disk.clone());
    let state_dir = disk.join("state");
    let (deployment, log, verifier, devices) =
        trusted_fleet(dir.path(), &state_dir, 4, "disk").await;

    // Fill the disk.
    let filler = disk.join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
    let detected = wait_for_metric(
        &deployment,
        "trustchain_storage_writable",
        |v| v == 0.0,
        Duration::from_secs(60),
    )
    .await;
    let detected_at = Instant::now();
    // While the disk stays full: no verdicts, and the verifier keeps saying so.
    let mut samples = 0;
    while detected_at.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            deployment.metric("trustchain_storage_writable").await,
            Some(0.0),
            "the verifier claims a writable store on a full disk"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let withheld_until = Instant::now();
    std::fs::remove_file(&filler).unwrap();
    let recovered = wait_for_metric(
        &deployment,
        "trustchain_storage_writable",
        |v| v == 1.0,
        Duration::from_secs(30),
    )
    .await;
    let recovered_at = Instant::now();
    // Every device passes again after the recovery.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let failures = deployment
        .metric("trustchain_storage_write_failures_total")
        .await;
    let logs = devices.stop().await;
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("state database write failed: verdicts are withheld"),
        "no log line says verdicts are withheld"
    );
    assert!(log_text.contains("state database writable again"));
    let export = dir.path().join("audit.jsonl");
    let verified = deployment.export_and_verify_audit(&export).unwrap();
    verifier.stop();

    let storage = SledStorage::open(&state_dir).unwrap();
    let mut during = 0;
    let mut after = 0;
    let mut trusted = 0;
    for log in &logs {
        let mut resumed = false;
        for verdict in &log.verdicts {
            assert_eq!(
                verdict.state,
                TrustState::Trusted as i32,
                "{} got a verdict other than trusted",
                log.label
            );
            trusted += 1;
            // Grace for a verdict already on the wire when the failure was seen.
            if verdict.at > detected_at + Duration::from_millis(500) && verdict.at < withheld_until
            {
                during += 1;
            }
            if verdict.at > recovered_at {
                after += 1;
                resumed = true;
            }
        }
        // Every verdict rests on a nonce on disk: the device's durable count covers them all,
        // and its last verdict's nonce is still held.
        let device_id = log.device_id.as_deref().unwrap();
        assert!(
            storage.nonces_spent_by(device_id).unwrap() >= log.verdicts.len() as u64,
            "{}: a verdict rests on a nonce that is not on disk",
            log.label
        );
        if let Some(last) = log.verdicts.last() {
            assert!(
                !storage.consume_nonce(&last.nonce, device_id).unwrap(),
                "{}: its last verdict's nonce is not on disk",
                log.label
            );
        }
        assert!(resumed, "{} got no verdict after recovery", log.label);
    }
    assert_eq!(during, 0, "verdicts were issued while the disk was full");
    for device in storage.devices().unwrap() {
        assert_ne!(device.state, DeviceState::Untrusted);
    }
    println!(
        "disk full -> store closed and reported in {:.1} s; verdicts withheld for {:.1} s \
         ({samples} metric samples, all writable=0, 0 verdicts); space freed -> writable \
         again in {:.1} s; {after} verdicts after recovery, {trusted} in all, each on a spent \
         nonce on disk; write failures counted: {failures:?}",
        detected.as_secs_f64(),
        (withheld_until - detected_at).as_secs_f64(),
        recovered.as_secs_f64()
    );
    println!("audit verify: {verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_devices_attest_restores_into_a_working_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let (deployment, log, verifier, devices) =
        trusted_fleet(dir.path(), &state_dir, 4, "backup").await;
    let binary = trustchain_tests::workspace_binary("trustchain-verifier");
    // Several backups while the devices attest: each must be a consistent point in time.
    let mut outputs = Vec::new();
    for round in 0..3 {
        let out = dir.path().join(format!("backup-{round}"));
        let started = Instant::now();
        let backup = Command::new(&binary)
            .args(["backup", "--config"])
            .arg(&deployment.config_path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&backup.stdout).into_owned();
        assert!(
            backup.status.success(),
            "backup failed: {text}{}",
            String::from_utf8_lossy(&backup.stderr)
        );
        assert!(text.contains("taken by the running verifier"), "{text}");
        outputs.push(format!(
            "{} ({} ms)",
            text.trim(),
            started.elapsed().as_millis()
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let logs = devices.stop().await;
    let incarnation = logs.len();
    verifier.stop();

    let restored = dir.path().join("restored-state");
    let restore = Command::new(&binary)
        .args(["restore", "--from"])
        .arg(dir.path().join("backup-2"))
        .arg("--state-dir")
        .arg(&restored)
        .output()
        .unwrap();
    let restore_text = String::from_utf8_lossy(&restore.stdout).into_owned();
    assert!(
        restore.status.success(),
        "restore failed: {restore_text}{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let again = Command::new(&binary)
        .args(["restore", "--from"])
        .arg(dir.path().join("backup-1"))
        .arg("--state-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "restore overwrote a state directory"
    );
    let refusal = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(refusal.contains("not empty"), "{refusal}");

    // A verifier on the restored state: the devices are there and attest with the
    // certificates they already hold; the audit chain verifies.
    let config = std::fs::read_to_string(&deployment.config_path).unwrap();
    std::fs::write(
        &deployment.config_path,
        config.replace(&format!("{state_dir:?}"), &format!("{restored:?}")),
    )
    .unwrap();
    let verifier = deployment.start(deployment.command(), &log).await.unwrap();
    let behaviour = Behaviour::default();
    let mut attested = 0;
    for mut device in logs {
        let mut verdicts = Vec::new();
        let mut tpm = device.tpm.take().unwrap();
        let id = device.device_id.clone().unwrap();
        let identity = device.identity.clone().unwrap();
        let stream = attest_stream(
            &deployment,
            identity,
            &mut tpm,
            &id,
            &behaviour,
            incarnation as u64,
            &mut verdicts,
        );
        // One verdict is enough: stop the stream after it.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream).await;
        assert!(
            verdicts
                .iter()
                .any(|v| v.state == TrustState::Trusted as i32),
            "{id} did not pass on the restored verifier"
        );
        attested += 1;
    }
    let export = dir.path().join("audit.jsonl");
    let verified = deployment.export_and_verify_audit(&export).unwrap();
    verifier.stop();
    let storage = SledStorage::open(&restored).unwrap();
    assert_eq!(storage.devices().unwrap().len(), 4);
    for line in &outputs {
        println!("{line}");
    }
    println!("{}", restore_text.trim());
    println!("second restore into it: refused ({})", refusal.trim());
    println!("restored verifier: {attested} devices attested with their existing certificates");
    println!("audit verify: {verified}");
}
