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
    DigestQuirk, EV_EFI_BOOT_SERVICES_APPLICATION, EV_NO_ACTION, EV_SEPARATOR, EventData,
    ReplayOptions, event_type_name, parse, replay, replay_detailed,
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
            matches!(separator.decoded(), EventData::Separator { ref value, error: false } if value == "00000000")
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
        paths.iter().any(|p| p.starts_with("PciRoot(0x0)/Pci(")
            && p.contains("/HD(1,GPT,")
            && p.ends_with("/File(\\EFI\\SYSTEMD\\SYSTEMD-BOOTX64.EFI)")),
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
    for (name, every_length) in [
        ("tpm2-tools__event-arch-linux.bin", true),
        ("keylime__mb_log.bin", true),
        (
            "go-attestation__windows_gcp_shielded_vm.eventlog.bin",
            false,
        ),
    ] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let full = parse(&bytes).unwrap();
        let lengths: Vec<usize> = if every_length {
            (0..bytes.len()).collect()
        } else {
            (0..4096).chain(bytes.len() - 4096..bytes.len()).collect()
        };
        let mut whole_events = 0;
        for len in lengths {
            match parse(&bytes[..len]) {
                // Only a cut between events parses, and gives the events before the cut.
                Ok(log) => {
                    let last = log.events.last().unwrap();
                    assert!(last.offset < len, "{name} at {len}");
                    assert_eq!(
                        log.events[..],
                        full.events[..log.events.len()],
                        "{name} at {len}"
                    );
                    let _ = replay(&log, &ReplayOptions::default());
                    whole_events += 1;
                }
                Err(error) => assert!(error.offset().is_none_or(|o| o <= len), "{name}: {error}"),
            }
        }
        assert!(whole_events > 0, "{name}");
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

/// The logs that parse, with their parsed form.
fn parsed_logs() -> Vec<(
    String,
    trustchain_verifier::evidence::eventlog::EventLog,
    serde_json::Value,
)> {
    logs()
        .into_iter()
        .filter_map(|(name, bytes, json)| parse(&bytes).ok().map(|log| (name, log, json)))
        .collect()
}

#[test]
fn the_detailed_replay_names_the_events_behind_every_pcr() {
    let options = ReplayOptions::default();
    let mut checked = 0;
    for (name, log, json) in parsed_logs() {
        let detailed = replay_detailed(&log, &options);
        assert_eq!(detailed.banks(), replay(&log, &options), "{name}");
        let mut listed = 0;
        for ((bank, pcr), replayed) in &detailed.pcrs {
            assert!(replayed.workaround_extends.is_empty());
            assert!(replayed.events.windows(2).all(|w| w[0] < w[1]), "{name}");
            for index in &replayed.events {
                let event = &log.events[*index];
                assert_eq!(event.index, *index);
                assert_eq!(event.pcr, *pcr, "{name}");
                assert_ne!(event.event_type, EV_NO_ACTION, "{name}");
                assert!(event.digest(*bank).is_some());
            }
            listed += replayed.events.len();
        }
        let extends: usize = log
            .events
            .iter()
            .filter(|e| e.event_type != EV_NO_ACTION)
            .map(|e| e.digests.len())
            .sum();
        assert_eq!(listed, extends, "{name}");
        // Real logs give every extended event a digest in every bank (synthetic ones may not).
        if json["kind"].as_str().unwrap().starts_with("real") {
            assert!(detailed.missing_digests.is_empty(), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 32);

    // StartupLocality is reported, and PCR 0 starts from it.
    let log =
        parse(&std::fs::read(dir().join("go-tpm-tools__cos-85-amd-sev.bin")).unwrap()).unwrap();
    let detailed = replay_detailed(&log, &options);
    let pcr0 = detailed.get(HashAlgorithm::Sha256, 0).unwrap();
    match detailed.startup_locality {
        Some(locality) => assert_eq!(pcr0.initial[31], locality),
        None => assert_eq!(pcr0.initial, vec![0u8; 32]),
    }
}

#[test]
fn variables_separators_and_actions_hash_to_their_digests_in_real_logs() {
    let mut checked = 0;
    let mut quirks = BTreeMap::new();
    for (name, log, _) in parsed_logs() {
        for event in &log.events {
            if let Some(check) = event.digest_check() {
                assert!(
                    check.holds(),
                    "{name}: event {} ({}) digest != hash(data) in {:?}",
                    event.index,
                    event_type_name(event.event_type),
                    check.mismatched
                );
                if let Some(quirk) = check.quirk {
                    *quirks.entry(format!("{quirk:?}")).or_insert(0) += 1;
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 500, "{checked}");
    // Shim and Google firmware log one unmeasured trailing byte on some authority events.
    assert!(
        quirks.contains_key(&format!("{:?}", DigestQuirk::LastByteUnmeasured)),
        "{quirks:?}"
    );
}

/// tpm2_eventlog (tpm2-tools) as an independent parser: every event's PCR, type and digests
/// agree. Its `pcrs:` summary is not compared (5.4 mishandles StartupLocality).
#[test]
fn every_event_agrees_with_tpm2_eventlog() {
    let mut compared = 0;
    for (name, log, _) in parsed_logs() {
        let output = std::process::Command::new("tpm2_eventlog")
            .arg(dir().join(&name))
            .output()
            .expect("tpm2_eventlog (tpm2-tools) must be installed for this test");
        let text = String::from_utf8_lossy(&output.stdout);
        // It rejects some logs, and prints legacy SHA-1 logs in another shape: compare the rest.
        if !output.status.success() || !text.contains("- EventNum:") {
            continue;
        }
        let mut theirs: Vec<(u32, String, BTreeMap<String, String>)> = Vec::new();
        let mut algorithm = String::new();
        for line in text.lines() {
            if line.starts_with("- EventNum:") {
                theirs.push((0, String::new(), BTreeMap::new()));
            } else if let Some(event) = theirs.last_mut() {
                if let Some(pcr) = line.strip_prefix("  PCRIndex: ") {
                    event.0 = pcr.trim().parse().unwrap();
                } else if let Some(kind) = line.strip_prefix("  EventType: ") {
                    event.1 = kind.trim().to_string();
                } else if let Some(alg) = line.strip_prefix("  - AlgorithmId: ") {
                    algorithm = alg.trim().to_string();
                } else if let Some(digest) = line.strip_prefix("    Digest: ") {
                    event.2.insert(
                        algorithm.clone(),
                        digest.trim().trim_matches('"').to_string(),
                    );
                }
            }
        }
        assert_eq!(theirs.len(), log.events.len(), "{name}: events");
        for (event, (pcr, kind, digests)) in log.events.iter().zip(&theirs).skip(1) {
            let ours: BTreeMap<String, String> = event
                .digests
                .iter()
                .map(|(alg, d)| (alg.name().to_string(), hex::encode(d)))
                .collect();
            assert_eq!(
                (event.pcr, event_type_name(event.event_type), &ours),
                (*pcr, kind.clone(), digests),
                "{name}: event {}",
                event.index
            );
        }
        compared += 1;
    }
    assert!(compared >= 25, "compared {compared} logs");
}
