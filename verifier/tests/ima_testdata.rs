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
            number(&json["tdigest_mismatch_count"]),
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
        let state = replay(
            &ImaState::default(),
            &parse_ascii(&first, 0).unwrap(),
            &BANKS,
        )
        .state;
        assert_eq!(state.entries, split as u64);
        let resumed = replay(&state, &parse_ascii(&second, split as u64).unwrap(), &BANKS);
        assert_eq!(resumed.state, full.state, "split at {split}");
        let violations: Vec<u64> = resumed.violations.clone();
        assert!(violations.iter().all(|v| *v >= split as u64));
    }
}

#[test]
fn truncation_and_garbage_never_panic() {
    for (_, bytes, _) in lists() {
        for len in 0..bytes.len().min(3000) {
            if let Ok(log) = parse(&bytes[..len]) {
                let _ = replay(&ImaState::default(), &log, &BANKS);
            }
        }
    }
    assert!(parse(b"10 zz ima-ng sha256:00 /x\n").is_err());
    assert!(parse(b"10 0000000000000000000000000000000000000000 weird sha256:00 /x\n").is_err());
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
}
