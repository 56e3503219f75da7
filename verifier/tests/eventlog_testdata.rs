//! Every real event log in ../shared/testdata/eventlogs replays to exactly the PCRs in its .json;
//! the malformed ones give errors, never panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::eventlog::{
    EV_EFI_BOOT_SERVICES_APPLICATION, EV_SEPARATOR, EventData, ReplayOptions, parse, replay,
};

fn dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/eventlogs"
    ));
    assert!(
        dir.is_dir(),
        "testdata {} is missing: ../shared must sit beside the repository",
        dir.display()
    );
    dir
}

fn logs() -> Vec<(String, Vec<u8>, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&path).unwrap(),
            json,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 35,
        "expected the whole testdata set, found {}",
        out.len()
    );
    out
}

fn expected_pcrs(json: &serde_json::Value) -> BTreeMap<HashAlgorithm, BTreeMap<u32, String>> {
    let mut banks = BTreeMap::new();
    if let Some(object) = json["expected_pcrs"].as_object() {
        for (bank, pcrs) in object {
            let bank = HashAlgorithm::from_name(bank).unwrap();
            let pcrs = pcrs
                .as_object()
                .unwrap()
                .iter()
                .map(|(i, v)| (i.parse().unwrap(), v.as_str().unwrap().to_lowercase()))
                .collect();
            banks.insert(bank, pcrs);
        }
    }
    banks
}

#[test]
fn every_real_log_replays_to_its_expected_pcrs_in_every_bank() {
    let mut checked = 0;
    for (name, bytes, json) in logs() {
        let must_fail = !json["parse_error"].is_null() && json["parse_error"] != "None";
        let parsed = parse(&bytes);
        if must_fail {
            assert!(
                parsed.is_err(),
                "{name}: expected an error ({}), got a log",
                json["parse_error"]
            );
            continue;
        }
        let log = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let events: usize = json["events"]
            .as_str()
            .map(|s| s.parse().unwrap())
            .or(json["events"].as_u64().map(|n| n as usize))
            .unwrap();
        // Windows ends its log with an EV_NO_ACTION to PCR 0xFFFFFFFF that the reference parser
        // stops at; it is parsed here (and never extended).
        let counted = log.events.iter().filter(|e| e.pcr != u32::MAX).count();
        assert_eq!(counted, events, "{name}: event count");
        let replayed = replay(&log, &ReplayOptions::default());
        let expected = expected_pcrs(&json);
        for (bank, pcrs) in &expected {
            let actual: BTreeMap<u32, String> = replayed
                .0
                .get(bank)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|(i, v)| (i, hex::encode(v)))
                .collect();
            assert_eq!(&actual, pcrs, "{name}: bank {bank}");
        }
        assert_eq!(
            replayed.0.iter().filter(|(_, p)| !p.is_empty()).count(),
            expected.len(),
            "{name}: banks"
        );
        checked += 1;
        // Every event decodes without panicking.
        for event in &log.events {
            let _ = event.decoded();
            let _ = event.digest_check();
        }
    }
    assert!(checked >= 32, "checked {checked} logs");
}

#[test]
fn the_hp_workaround_reproduces_the_machines_real_pcr5() {
    let bytes =
        std::fs::read(dir().join("go-attestation__ebs_event_missing_eventlog.bin")).unwrap();
    let published: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir().join("../published/go-attestation__expected_pcr5_from_ebs_workaround_test.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let expected = published["ebs_event_missing_eventlog"]["banks"]["sha1"]["5"]
        .as_str()
        .unwrap();
    let log = parse(&bytes).unwrap();
    let plain = replay(&log, &ReplayOptions::default());
    assert_ne!(
        hex::encode(plain.get(HashAlgorithm::Sha1, 5).unwrap()),
        expected
    );
    let fixed = replay(
        &log,
        &ReplayOptions {
            hp_unlogged_exit_boot_services: true,
        },
    );
    assert_eq!(
        hex::encode(fixed.get(HashAlgorithm::Sha1, 5).unwrap()),
        expected
    );
}

#[test]
fn typed_decoding_of_real_events() {
    let bytes = std::fs::read(dir().join("tpm2-tools__event-arch-linux.bin")).unwrap();
    let log = parse(&bytes).unwrap();
    let separators: Vec<_> = log
        .events
        .iter()
        .filter(|e| e.event_type == EV_SEPARATOR)
        .collect();
    assert!(!separators.is_empty());
    for separator in &separators {
        assert!(
            matches!(separator.decoded(), EventData::Separator { ref value } if value == "00000000")
        );
        assert!(separator.digest_check().unwrap().holds());
    }
    let names: Vec<String> = log
        .events
        .iter()
        .filter_map(|e| match e.decoded() {
            EventData::EfiVariable { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    for wanted in ["SecureBoot", "PK", "KEK", "db", "dbx"] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    let paths: Vec<String> = log
        .events
        .iter()
        .filter(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .filter_map(|e| match e.decoded() {
            EventData::ImageLoad { device_path, .. } => Some(device_path),
            _ => None,
        })
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.to_ascii_uppercase().contains(".EFI")),
        "{paths:?}"
    );

    // A GRUB log carries kernel command lines in EV_IPL events.
    let ubuntu =
        parse(&std::fs::read(dir().join("go-tpm-tools__ubuntu-2104-no-secure-boot.bin")).unwrap())
            .unwrap();
    let ipl: Vec<String> = ubuntu
        .events
        .iter()
        .filter_map(|e| match e.decoded() {
            EventData::Ipl { text } => Some(text),
            _ => None,
        })
        .collect();
    assert!(
        ipl.iter()
            .any(|t| t.contains("kernel_cmdline") || t.contains("grub_cmd")),
        "{:?}",
        &ipl[..ipl.len().min(5)]
    );
}

#[test]
fn truncation_at_every_length_is_an_error_or_a_shorter_log_never_a_panic() {
    for name in [
        "tpm2-tools__event-arch-linux.bin",
        "go-attestation__windows_gcp_shielded_vm.eventlog.bin",
        "keylime__mb_log.bin",
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        for len in 0..bytes.len().min(4096) {
            if let Ok(log) = parse(&bytes[..len]) {
                let _ = replay(&log, &ReplayOptions::default());
            }
        }
    }
}

#[test]
fn declared_sizes_never_drive_allocation() {
    // A header claiming a 4 GiB event: refused by the limit, not allocated.
    let mut bytes = vec![0u8; 28];
    bytes[4] = 3;
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    let error = parse(&bytes).unwrap_err();
    assert!(error.to_string().contains("exceeds the limit"), "{error}");
    assert_eq!(error.offset(), Some(32));
}

#[test]
fn the_cli_prints_pcrs_as_json_and_fails_with_an_offset_on_junk() {
    let bin = env!("CARGO_BIN_EXE_trustchain");
    let log = dir().join("keylime__binary_bios_measurements.bin");
    let output = std::process::Command::new(bin)
        .arg("eventlog")
        .arg(&log)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.with_extension("json")).unwrap()).unwrap();
    assert_eq!(printed["pcrs"], json["expected_pcrs"]);
    assert!(printed["events"].as_array().unwrap().len() > 10);

    let text = std::process::Command::new(bin)
        .arg("eventlog")
        .arg(&log)
        .output()
        .unwrap();
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("EV_SEPARATOR"));

    let junk = dir().join("keylime__binary_bios_measurements-bogus.bin");
    let output = std::process::Command::new(bin)
        .arg("eventlog")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("offset"), "{stderr}");
}
