//! Every IMA list in ../shared/testdata/ima gives its expected PCR 10 per bank and violation count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use trustchain_verifier::evidence::digest::HashAlgorithm;
use trustchain_verifier::evidence::ima::{ImaState, parse, parse_ascii, replay};

const BANKS: [HashAlgorithm; 2] = [HashAlgorithm::Sha1, HashAlgorithm::Sha256];

fn dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/ima"
    ));
    assert!(
        dir.is_dir(),
        "testdata {} is missing: ../shared must sit beside the repository",
        dir.display()
    );
    dir
}

fn lists() -> Vec<(String, Vec<u8>, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            continue;
        }
        let json_path = PathBuf::from(format!("{}.json", path.display()));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read(&path).unwrap(),
            json,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 14, "found {}", out.len());
    out
}

fn number(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap()
}

/// The .json counts template-hash mismatches trying SHA-1 and SHA-256 only. One sample comes from
/// an SM3 per-bank list: its second entry's 32-byte template hash is SM3-256 of the template data
/// (checked independently with Python's hashlib), which replay accepts, so it has no mismatch.
fn expected_mismatches(name: &str, json: &serde_json::Value) -> u64 {
    if name == "keylime__create-runtime-policy__ima-log-sm3_256" {
        assert_eq!(
            number(&json["tdigest_mismatch_count"]),
            1,
            "{name}: .json changed"
        );
        return 0;
    }
    number(&json["tdigest_mismatch_count"])
}

#[test]
fn an_sm3_template_hash_is_recognised() {
    let bytes =
        std::fs::read(dir().join("keylime__create-runtime-policy__ima-log-sm3_256")).unwrap();
    let log = parse(&bytes).unwrap();
    let entry = &log.entries[1];
    assert_eq!(entry.file_digest_hash(), Some(HashAlgorithm::Sm3_256));
    assert_eq!(
        HashAlgorithm::Sm3_256.hash(&entry.hashed),
        entry.logged_hash
    );
    assert!(
        replay(&ImaState::default(), &log, &BANKS)
            .mismatches
            .is_empty()
    );
}

#[test]
fn every_list_gives_its_expected_pcr10_violations_and_mismatches() {
    for (name, bytes, json) in lists() {
        let log = parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            log.entries.len() as u64,
            number(&json["entries"]),
            "{name}: entries"
        );
        if let Some(tail) = json.get("truncated_tail_bytes") {
            assert_eq!(
                log.trailing_bytes as u64,
                number(tail),
                "{name}: trailing bytes"
            );
        }
        let replayed = replay(&ImaState::default(), &log, &BANKS);
        assert_eq!(
            replayed.violations.len() as u64,
            number(&json["violations"]),
            "{name}: violations"
        );
        assert_eq!(
            replayed.mismatches.len() as u64,
            expected_mismatches(&name, &json),
            "{name}: mismatches"
        );
        let expected: serde_json::Value = match &json["replay_pcrs"] {
            serde_json::Value::String(s) => serde_json::from_str(&s.replace('\'', "\"")).unwrap(),
            other => other.clone(),
        };
        for bank in BANKS {
            let want = expected[bank.name()]["10"].as_str();
            let got = replayed.state.pcr(bank, 10).map(hex::encode);
            assert_eq!(got.as_deref(), want, "{name}: {bank} PCR 10");
        }
    }
}

#[test]
fn an_edited_entry_is_named_by_its_template_hash() {
    let text =
        std::fs::read_to_string(dir().join("keylime__archive_ima__ascii_runtime_measurements"))
            .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Swap the path of entry 5 for another: the logged template hash no longer matches.
    let fields: Vec<&str> = lines[5].splitn(5, ' ').collect();
    lines[5] = format!(
        "{} {} {} {} /usr/bin/evil",
        fields[0], fields[1], fields[2], fields[3]
    );
    let edited = lines.join("\n") + "\n";
    let log = parse(edited.as_bytes()).unwrap();
    let replayed = replay(&ImaState::default(), &log, &BANKS);
    assert_eq!(replayed.mismatches, vec![5]);
    // And a changed digest likewise.
    let fields: Vec<&str> = lines[7].splitn(5, ' ').collect();
    lines[7] = format!(
        "{} {} {} sha256:{} {}",
        fields[0],
        fields[1],
        fields[2],
        "00".repeat(32),
        fields[4]
    );
    let log = parse((lines.join("\n") + "\n").as_bytes()).unwrap();
    assert_eq!(
        replay(&ImaState::default(), &log, &BANKS).mismatches,
        vec![5, 7]
    );
}

#[test]
fn incremental_replay_equals_full_replay_at_every_split() {
    let text =
        std::fs::read(dir().join("keylime__archive_ima__ascii_runtime_measurements_ima")).unwrap();
    let full = replay(&ImaState::default(), &parse(&text).unwrap(), &BANKS);
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    for split in [0usize, 1, 2, 100, 433, lines.len() - 1, lines.len()] {
        let first: Vec<u8> = lines[..split].concat();
        let second: Vec<u8> = lines[split..].concat();
        let head = replay(
            &ImaState::default(),
            &parse_ascii(&first, 0).unwrap(),
            &BANKS,
        );
        let state = head.state;
        assert_eq!(state.entries, split as u64);
        // The verifier saves the state between rounds.
        let state: ImaState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let resumed = replay(&state, &parse_ascii(&second, split as u64).unwrap(), &BANKS);
        assert_eq!(resumed.state, full.state, "split at {split}");
        assert_eq!(
            [head.violations, resumed.violations].concat(),
            full.violations,
            "split at {split}"
        );
    }
}

#[test]
fn every_truncation_parses_to_a_prefix_of_the_entries() {
    for (name, bytes, _) in lists() {
        let full = parse(&bytes).unwrap();
        // Every length of the binary and small lists; the big ASCII lists up to 3000 bytes (a cut
        // inside a line is the same case wherever it falls).
        for len in 0..bytes.len().min(3000) {
            let log = parse(&bytes[..len]).unwrap_or_else(|e| panic!("{name} cut at {len}: {e}"));
            assert_eq!(
                log.entries[..],
                full.entries[..log.entries.len()],
                "{name} cut at {len}"
            );
            let _ = replay(&ImaState::default(), &log, &BANKS);
        }
    }
    assert!(parse(b"10 zz ima-ng sha256:00 /x\n").is_err());
    assert!(parse(b"10 0000000000000000000000000000000000000000 weird sha256:00 /x\n").is_err());
}

#[test]
fn an_edited_binary_entry_is_named_and_check_reports_it() {
    let bytes = std::fs::read(dir().join("tpm2-tss__sml-ima-ng-sha1.bin")).unwrap();
    let full = parse(&bytes).unwrap();
    let target = &full.entries[2];
    // Flip one byte of entry 2's path inside the list.
    let needle = target.path.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut edited = bytes.clone();
    edited[at + needle.len() - 1] ^= 0x01;
    let log = parse(&edited).unwrap();
    let replayed = replay(&ImaState::default(), &log, &BANKS);
    let first_with_path = full
        .entries
        .iter()
        .position(|e| e.path == target.path)
        .unwrap() as u64;
    assert_eq!(replayed.mismatches, vec![first_with_path]);
    let error = replayed.check_template_hashes(&log).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("entry {first_with_path}")),
        "{error}"
    );
    assert!(
        replay(&ImaState::default(), &full, &BANKS)
            .check_template_hashes(&full)
            .is_ok()
    );
}

#[test]
fn the_cli_prints_pcr10_as_json() {
    let bin = env!("CARGO_BIN_EXE_trustchain");
    let path = dir().join("keylime__archive_ima__ascii_runtime_measurements");
    let output = std::process::Command::new(bin)
        .arg("ima")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed["pcrs"]["sha256"]["10"],
        "c4a065637fc6a7c55f2811dd06cb45dd037133be2b3dc5c3e6fbe6bf061db724"
    );
    assert_eq!(printed["violations"], 0);
    let bad = std::process::Command::new(bin)
        .arg("ima")
        .arg(dir().join("../eventlogs/keylime__binary_bios_measurements-bogus.bin"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("offset") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
}
