//! The swtpm harness itself, on real swtpm processes: boots replay, EK certificates chain to the
//! right maker, resets behave like a power cycle, IMA extends PCR 10, tamper helpers tamper.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::process::Command;

use trustchain_swtpm::{Bank, BootProfile, EkKind, SwtpmDevice, TestMakers};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// PCR values `tpm2_eventlog` (tpm2-tools, an independent parser) computes for a log file.
fn tpm2_eventlog_pcrs(path: &std::path::Path) -> BTreeMap<String, BTreeMap<u32, Vec<u8>>> {
    let output = Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .expect("tpm2_eventlog (tpm2-tools) must be installed: run scripts/setup.sh");
    assert!(
        output.status.success(),
        "tpm2_eventlog failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut banks = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_pcrs = false;
    for line in text.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        let trimmed = line.trim();
        if let Some(bank) = trimmed.strip_suffix(':') {
            current = Some(bank.to_string());
            banks.insert(bank.to_string(), BTreeMap::new());
        } else if let (Some(bank), Some((index, value))) = (&current, trimmed.split_once(':')) {
            let value = hex::decode(value.trim().trim_start_matches("0x")).unwrap();
            banks
                .get_mut(bank)
                .unwrap()
                .insert(index.trim().parse().unwrap(), value);
        }
    }
    banks
}

fn profiles() -> Vec<BootProfile> {
    let base = BootProfile::default_linux();
    vec![
        base.clone(),
        base.clone().with_banks(&[Bank::Sha256, Bank::Sha1]),
        base.clone().with_kernel(b"vmlinuz-6.6.0-other"),
        base.clone().with_secure_boot(false),
        base.clone()
            .with_kernel_cmdline("/vmlinuz root=/dev/sdb1 ro init=/bin/sh"),
        base.clone()
            .with_firmware(b"firmware volume: vendor build 2"),
        base.clone()
            .with_banks(&[Bank::Sha1, Bank::Sha256])
            .with_kernel(b"k2"),
        base,
    ]
}

#[test]
fn eight_devices_boot_in_parallel_and_their_pcrs_match_tpm2_eventlog() {
    let makers = TestMakers::generate().unwrap();
    let maker = &makers.trusted;
    std::thread::scope(|scope| {
        let handles: Vec<_> = profiles()
            .into_iter()
            .enumerate()
            .map(|(i, profile)| {
                scope.spawn(move || {
                    let mut device = SwtpmDevice::start(maker, &format!("device-{i}")).unwrap();
                    device.boot(&profile).unwrap();
                    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
                    for bank in &profile.banks {
                        let expected = &reference[bank.name()];
                        let indices: Vec<u32> = expected.keys().copied().collect();
                        assert!(
                            indices.contains(&4) && indices.contains(&7),
                            "{bank:?}: {indices:?}"
                        );
                        let actual = device.read_pcrs(*bank, &indices).unwrap();
                        assert_eq!(&actual, expected, "device {i} bank {}", bank.name());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

fn key_material(cert: &X509Certificate<'_>) -> Vec<u8> {
    match cert.public_key().parsed().unwrap() {
        PublicKey::RSA(rsa) => rsa
            .modulus
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect(),
        PublicKey::EC(point) => point.data().to_vec(),
        other => panic!("unexpected key {other:?}"),
    }
}

fn tpm_key_material(public: &tss_esapi::structures::Public) -> Vec<u8> {
    match public {
        tss_esapi::structures::Public::Rsa { unique, .. } => unique.value().to_vec(),
        tss_esapi::structures::Public::Ecc { unique, .. } => {
            let mut point = vec![0x04];
            point.extend_from_slice(unique.x().value());
            point.extend_from_slice(unique.y().value());
            point
        }
        other => panic!("unexpected EK {other:?}"),
    }
}

#[test]
fn ek_certificates_chain_to_the_test_maker_not_the_rogue_and_match_the_tpm_key() {
    let makers = TestMakers::generate().unwrap();
    let device = SwtpmDevice::start(&makers.trusted, "chain").unwrap();
    let (_, root) = X509Certificate::from_der(makers.trusted.root_der()).unwrap();
    let (_, intermediate) = X509Certificate::from_der(makers.trusted.intermediate_der()).unwrap();
    let (_, rogue_root) = X509Certificate::from_der(makers.rogue.root_der()).unwrap();
    let (_, rogue_intermediate) =
        X509Certificate::from_der(makers.rogue.intermediate_der()).unwrap();
    assert!(
        intermediate
            .verify_signature(Some(root.public_key()))
            .is_ok()
    );
    for kind in [EkKind::Rsa2048, EkKind::EccP256] {
        let der = device.ek_certificate_der(kind).unwrap();
        let (_, ek) = X509Certificate::from_der(&der).unwrap();
        assert!(
            ek.verify_signature(Some(intermediate.public_key())).is_ok(),
            "{kind:?}"
        );
        assert!(
            ek.verify_signature(Some(rogue_intermediate.public_key()))
                .is_err(),
            "{kind:?}"
        );
        assert!(
            ek.verify_signature(Some(rogue_root.public_key())).is_err(),
            "{kind:?}"
        );
        assert_eq!(ek.issuer(), intermediate.subject());
        let in_tpm = device.ek_public(kind).unwrap();
        assert_eq!(
            key_material(&ek),
            tpm_key_material(&in_tpm),
            "{kind:?}: EK in TPM == EK in certificate"
        );
    }
}

#[test]
fn reboot_clears_pcrs_advances_reset_count_and_replays_again() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "reboot").unwrap();
    let profile = BootProfile::default_linux();
    device.boot(&profile).unwrap();
    let before = device.reset_count().unwrap();
    let booted = device.read_pcrs(Bank::Sha256, &[0, 4, 7, 10]).unwrap();
    assert!(booted.values().all(|v| v.iter().any(|b| *b != 0)));

    device.reset().unwrap();
    let after_reset = device.reset_count().unwrap();
    assert!(after_reset > before, "resetCount {before} -> {after_reset}");
    let cleared = device.read_pcrs(Bank::Sha256, &[0, 4, 7, 10]).unwrap();
    assert!(
        cleared.values().all(|v| v.iter().all(|b| *b == 0)),
        "PCRs cleared: {cleared:?}"
    );

    device
        .boot(&profile.clone().with_kernel(b"new kernel"))
        .unwrap();
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    let indices: Vec<u32> = reference["sha256"].keys().copied().collect();
    assert_eq!(
        device.read_pcrs(Bank::Sha256, &indices).unwrap(),
        reference["sha256"]
    );
    assert_ne!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        booted[&4]
    );
}

/// Replays the ASCII IMA log in the test itself: PCR 10 = fold of H(template data), where the
/// template data is rebuilt from the line's fields.
fn replay_ima(log: &str, bank: Bank) -> Vec<u8> {
    let mut pcr = vec![0u8; bank.size()];
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[2], "ima-ng");
        let (alg, digest) = fields[3].split_once(':').unwrap();
        let mut d = format!("{alg}:").into_bytes();
        d.push(0);
        d.extend(hex::decode(digest).unwrap());
        let mut n = fields[4].as_bytes().to_vec();
        n.push(0);
        let mut template = Vec::new();
        for field in [d, n] {
            template.extend((field.len() as u32).to_le_bytes());
            template.extend(field);
        }
        assert_eq!(
            hex::encode(Bank::Sha1.hash(&template)),
            fields[1],
            "template hash column"
        );
        pcr = bank.extend(&pcr, &bank.hash(&template));
    }
    pcr
}

#[test]
fn ima_entries_extend_pcr10_to_the_log_replay() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "ima").unwrap();
    device
        .boot(&BootProfile::default_linux().with_banks(&[Bank::Sha256, Bank::Sha1]))
        .unwrap();
    device.ima_measure("/usr/bin/bash", b"bash binary").unwrap();
    device
        .ima_measure_many(&[
            ("/usr/sbin/sshd".into(), b"sshd".to_vec()),
            ("/etc/passwd".into(), b"root:x".to_vec()),
        ])
        .unwrap();
    let log = std::fs::read_to_string(device.ima_log_path()).unwrap();
    assert_eq!(log.lines().count(), 4, "boot_aggregate + 3 files");
    assert!(log.lines().next().unwrap().ends_with("boot_aggregate"));
    for bank in [Bank::Sha256, Bank::Sha1] {
        assert_eq!(
            device.read_pcrs(bank, &[10]).unwrap()[&10],
            replay_ima(&log, bank),
            "{bank:?}"
        );
    }
}

#[test]
fn tamper_helpers_break_the_match_between_log_and_tpm() {
    let makers = TestMakers::generate().unwrap();
    let mut device = SwtpmDevice::start(&makers.trusted, "tamper").unwrap();
    device.boot(&BootProfile::default_linux()).unwrap();
    let replayed = trustchain_swtpm::boot::replay(device.boot_events(), Bank::Sha256);
    assert_eq!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        replayed[&4]
    );

    device.extend_unlisted(4, b"rootkit").unwrap();
    assert_ne!(
        device.read_pcrs(Bank::Sha256, &[4]).unwrap()[&4],
        replayed[&4]
    );

    // Editing the log afterwards: the file now replays to something the TPM never saw.
    device
        .rewrite_boot_log(|events| {
            let kernel = events.iter_mut().rev().find(|e| e.pcr == 4).unwrap();
            kernel.digests = vec![(Bank::Sha256, Bank::Sha256.hash(b"approved kernel"))];
        })
        .unwrap();
    let reference = tpm2_eventlog_pcrs(&device.event_log_path());
    assert_ne!(reference["sha256"][&4], replayed[&4]);
}
