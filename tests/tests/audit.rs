//! The audit log end to end: a real verifier records enrollments, appraisal failures and state
//! changes in its hash chain; `trustchain audit export` fetches it over mTLS and
//! `trustchain audit verify` checks it offline with only the verifier's public key, naming the
//! first record altered, removed or reordered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn verify(export: &str, public_key: &str, dir: &std::path::Path) -> (bool, String) {
    trustchain_tests::audit_verify(export, public_key, dir).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_audit_log_verifies_offline_and_tampering_is_pinpointed() {
    // Enrolled, trusted, a periodic checkpoint, then an appraisal failure.
    let (_makers, verifier, device) = trustchain_tests::audit_history("gw-audit").await.unwrap();

    // Export with the operator CLI, over mTLS, as a SOC analyst would.
    let dir = verifier.dir.path();
    let operator = verifier.operator_files();
    let output = Command::new(trustchain_tests::workspace_binary("trustchain"))
        .args(["audit", "export", "--verifier", &verifier.url(), "--ca"])
        .arg(&verifier.root_pem_path)
        .arg("--cert")
        .arg(&operator.0)
        .arg("--key")
        .arg(&operator.1)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let export = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = export.lines().collect();
    assert!(lines.len() >= 5, "{export}");
    assert!(
        export.contains("appraisal_failed") && export.contains("enrolled"),
        "{export}"
    );
    let public_key = verifier.service.signing_public_hex();

    let (ok, text) = verify(&export, &public_key, dir);
    assert!(ok, "{text}");
    assert!(text.contains("2 signed checkpoint(s)"), "{text}\n{export}");

    // Alter one record: the verifier's reason for the failure, softened.
    let altered_index = lines
        .iter()
        .position(|l| l.contains("appraisal_failed"))
        .unwrap();
    let mut altered: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    altered[altered_index] = altered[altered_index].replace("boot_log_replay", "all rules passed");
    let (ok, text) = verify(&altered.join("\n"), &public_key, dir);
    assert!(
        !ok && text.contains(&format!("line {}", altered_index + 1)),
        "{text}"
    );

    // Delete one record.
    let records: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("{\"record\""))
        .map(|(i, _)| i)
        .collect();
    let mut deleted: Vec<&str> = lines.clone();
    deleted.remove(records[2]);
    let (ok, text) = verify(&deleted.join("\n"), &public_key, dir);
    assert!(
        !ok && text.contains("record 4") && text.contains("removed or reordered"),
        "{text}"
    );

    // Reorder two records.
    let mut reordered: Vec<&str> = lines.clone();
    reordered.swap(records[2], records[3]);
    let (ok, text) = verify(&reordered.join("\n"), &public_key, dir);
    assert!(
        !ok && text.contains(&format!("line {}", records[2] + 1)),
        "{text}"
    );

    // The operator CLI shows why the device is untrusted, and its history.
    let cli = |args: &[&str]| {
        let output = Command::new(trustchain_tests::workspace_binary("trustchain"))
            .arg("device")
            .args(["--verifier", &verifier.url(), "--ca"])
            .arg(&verifier.root_pem_path)
            .arg("--cert")
            .arg(&operator.0)
            .arg("--key")
            .arg(&operator.1)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = cli(&["list"]);
    assert!(
        listed.contains(&device.device_id()) && listed.contains("UNTRUSTED"),
        "{listed}"
    );
    let shown = cli(&["show", &device.device_id()]);
    assert!(
        shown.contains("failed   boot_log_replay [PCR 7 (sha256)]") && shown.contains("measured"),
        "{shown}"
    );
    let history = cli(&["history", &device.device_id()]);
    assert!(
        history.contains("enrolled") && history.contains("trusted -> untrusted"),
        "{history}"
    );

    // curl on the metrics endpoint shows counts that match the devices' states.
    let metrics_address = verifier.start_metrics().await.unwrap();
    let output = Command::new("curl")
        .args(["-sf", &format!("http://{metrics_address}/metrics")])
        .output()
        .expect("curl");
    let metrics = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{metrics}");
    for line in [
        "trustchain_devices{state=\"untrusted\"} 1",
        "trustchain_devices{state=\"trusted\"} 0",
        "trustchain_enrollments_total{outcome=\"accepted\"} 1",
        "trustchain_appraisals_total{outcome=\"fail\"} 1",
        "trustchain_attestation_streams ",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("trustchain_appraisal_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(metrics.contains("trustchain_commit_wait_seconds_bucket{le=\"0.01\"}"));
    assert!(metrics.contains("trustchain_audit_records "));

    // Another key cannot vouch for it.
    let other = trustchain_verifier::audit::SigningKey::generate()
        .unwrap()
        .public_hex();
    let (ok, _) = verify(&export, &other, dir);
    assert!(!ok);
}
